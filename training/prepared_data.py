"""Everything the training and evaluation jobs derive from raw data before any model is fitted.

Both jobs must see exactly the same split, id maps, features and persona mixes, or an evaluation
would silently score a model on rows it was trained on. Building them in one place, from the config
alone, makes ``persona-engine evaluate`` reproduce what ``train`` measured.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp
from numpy.typing import NDArray

from engine.data.feature_space import (
    DEMOGRAPHIC_COLUMNS,
    ITEM_FEATURE_COLUMNS,
    FeatureSpace,
    demographic_columns,
    with_price_band,
)
from engine.data.id_map import IdMap
from engine.data.interactions import (
    empty_csr_matrix,
    event_indices,
    interaction_ages,
    interaction_matrix,
    relevant_matrix,
)
from engine.data.shop_data import ShopData
from engine.models.base import TrainingSet, UserBatch
from engine.personas.catalog import PersonaCatalog, load_catalog
from engine.personas.explanations import MixExplanations
from engine.personas.inference.config import PersonaInferenceConfig
from engine.personas.inference.demographic_prior import DemographicMixPrior
from engine.personas.inference.inferred_mixes import InferredMixes
from engine.personas.inference.model import PersonaInferenceModel
from engine.personas.mix_resolution import demographic_frame
from engine.personas.shopping_context import CONTEXTS, context_expr
from training.config import TrainConfig
from training.config_references import check_references, naming_the_key
from training.logged_events import LoggedEventsMerge, merge_logged_events, read_logged_events
from training.split import (
    LoadedEvents,
    SplitError,
    TimeSplit,
    all_events_split,
    read_test_event_ids,
    split_events,
    split_predefined,
)
from training.stage_timings import StageTimings
from training.training_engine import LOCAL_ENGINE, TrainingEngine


@dataclass(frozen=True)
class EvaluationSegment:
    """A group of customers scored the same way: who they are to the model and what they went on to do."""

    name: str
    customer_ids: NDArray[np.str_]
    users: UserBatch
    exclude: sp.csr_matrix  # items each customer already engaged with (filtered from their lists)
    relevant: sp.csr_matrix  # held-out positives


@dataclass(frozen=True)
class ContextSegments:
    """Warm customers' held-out events of one shopping context, scored two ways.

    ``with_context_mix`` scores them as serving does in that context (the context's mix, their own
    history learned under the overall mix, so ``base_mix`` is the overall mix); ``with_overall_mix``
    as the rest of offline evaluation does. Same customers, same exclusions, same held-out positives
    (only the context's events), so the two can be compared customer by customer.
    """

    context: str
    with_context_mix: EvaluationSegment
    with_overall_mix: EvaluationSegment
    distinct_mix: NDArray[np.bool_]  # per customer: the context's mix differs from the overall one


@dataclass(frozen=True)
class PreparedData:
    shop: ShopData
    catalog: PersonaCatalog
    split: TimeSplit
    items: IdMap
    item_frame: pl.DataFrame  # items in IdMap order, with price_band
    item_space: FeatureSpace
    item_features: sp.csr_matrix
    customers: IdMap  # every customer the artifact knows: training events or in the customers table
    demographic_space: FeatureSpace
    customer_demographics: sp.csr_matrix  # rows follow ``customers``
    inference: PersonaInferenceModel
    mixes: InferredMixes  # rows follow ``customers``
    demographic_prior: DemographicMixPrior
    model_customers: IdMap  # the warm customers the models are trained on
    training_set: TrainingSet
    history: sp.csr_matrix  # (customers x items) training-period interactions of every known customer
    logged_events: LoggedEventsMerge | None = None  # what [data] event_log added, when configured
    # Every customer's mix explanations, when ``prepare`` was asked for them (``explain``); the mixes
    # then carry no encoded events (``mixes.evidence`` is None).
    explanations: MixExplanations | None = None

    def customer_rows(self, ids: NDArray[np.str_] | list[str]) -> NDArray[np.int64]:
        return self.customers.to_internal(list(ids))


def prepare(
    config: TrainConfig,
    *,
    data_path: Path | None = None,
    engine: TrainingEngine = LOCAL_ENGINE,
    timings: StageTimings | None = None,
    explain: bool = False,
) -> PreparedData:
    """Load, split, map ids, build features and infer persona mixes from the training period only.

    ``engine`` reads the data and fits the persona EM (locally by default, or on Spark); each step is
    recorded in ``timings`` when given (``load``, ``split``, then those of ``prepare_split``).
    ``explain``: see ``prepare_split``."""
    check_references(config, data_path=data_path)
    timings = timings or StageTimings()
    with timings.stage("load"):
        shop, logged_events = load_training_shop(config, data_path=data_path, engine=engine)
    with timings.stage("split"):
        # The loaded table is handed over to the split, which releases it column by column as it
        # copies the two periods out (peak: the events once plus one column, not twice). The shop then
        # keeps the two periods, joined without copying: rows are ordered training period first, each
        # period in loaded order.
        loaded = LoadedEvents(shop.events)
        shop = dataclasses.replace(shop, events=shop.events.clear())
        split = split_for(config, shop, Path(data_path or config.data.path), events=loaded)
        shop = dataclasses.replace(
            shop, events=pl.concat([split.train_events, split.test_events], rechunk=False)
        )
    return prepare_split(
        config, shop, split, logged_events=logged_events, engine=engine, timings=timings, explain=explain
    )


def load_training_shop(
    config: TrainConfig, *, data_path: Path | None = None, engine: TrainingEngine = LOCAL_ENGINE
) -> tuple[ShopData, LoggedEventsMerge | None]:
    """The shop as training reads it: the data folder, with the served event log merged in when
    ``[data] event_log`` names one (and the record of that merge)."""
    shop = engine.load_shop(Path(data_path or config.data.path), config.data.skip_invalid)
    if not config.data.event_log:
        return shop, None
    with naming_the_key(config, "[data] event_log", config.data.event_log):
        logged = read_logged_events(config.data.event_log)
    logged_events = merge_logged_events(shop, logged)
    return logged_events.shop, logged_events


def prepare_split(
    config: TrainConfig,
    shop: ShopData,
    split: TimeSplit,
    *,
    logged_events: LoggedEventsMerge | None = None,
    engine: TrainingEngine = LOCAL_ENGINE,
    timings: StageTimings | None = None,
    explain: bool = False,
) -> PreparedData:
    """``prepare`` on a given split; hyperparameter search passes a validation split carved from training.

    Steps are recorded in ``timings`` when given: ``item_features``, ``customer_features``,
    ``event_indices``, ``persona_inference``, ``explanations`` (with ``explain``), ``demographic_prior`` and
    ``interaction_matrices``.

    With ``explain`` every customer's mix is explained right after persona inference and the encoded
    events behind the mixes (about 150 bytes an event) are let go before anything else is built: jobs
    that only need the explanations from them (train, the serving build) then never hold the encoded
    events together with the interaction matrices, which set the peak memory of a million-customer
    build. Jobs that read the encoded events later (persona discovery) leave it off."""
    timings = timings or StageTimings()
    catalog = load_catalog(config.personas.catalog)
    with timings.stage("item_features"):
        item_frame = with_price_band(shop.items)
        items = IdMap(item_frame["item_id"].to_list(), kind="item")
        item_space = FeatureSpace.from_frame(item_frame, ITEM_FEATURE_COLUMNS)
        item_features = item_space.encode(item_frame, ITEM_FEATURE_COLUMNS)

    with timings.stage("customer_features"):
        # deduplicated before the customers table joins it (first appearances keep their order): the
        # concatenation then copies a million ids, not every training event's; the splits hand them over
        known = split.train_customers
        if known is None:
            known = split.train_events["customer_id"].cast(pl.Utf8).unique(maintain_order=True)
        if shop.customers is not None:
            known = pl.concat([known, shop.customers["customer_id"].cast(pl.Utf8)])
        customers = IdMap.from_values(known, kind="customer")
        customer_frame = _customer_frame(shop, customers)
        columns = demographic_columns(customer_frame)
        demographic_space = FeatureSpace.from_frame(customer_frame, columns)
        customer_demographics = demographic_space.encode(customer_frame, columns)

    with timings.stage("event_indices"):
        # every training event's customer row and item column, looked up once for the persona
        # features and the interaction matrix (ten million events take about a second)
        indices = event_indices(split.train_events, customers, items)

    # The interaction matrix and the model customers' rows need only the ids: they are built on a
    # thread while persona inference runs (its compiled and polars parts leave the GIL, and the
    # matrix's sorting would otherwise wait for them); ``interaction_matrices`` records what is left.
    with ThreadPoolExecutor(1, thread_name_prefix="interactions") as background:
        matrices = background.submit(
            _history_and_model_rows, split, customers, items, config.interactions, indices
        )
        with timings.stage("persona_inference"):
            inference = PersonaInferenceModel(PersonaInferenceConfig(**config.personas.inference))
            train_shop = dataclasses.replace(shop, events=split.train_events)
            mixes = inference.fit(
                train_shop,
                catalog,
                customer_ids=customers,
                behaviour_fit=engine.behaviour_fit,
                event_indices=indices,
            )
        del indices
        explanations = None
        if explain:
            with timings.stage("explanations"):
                explanations = MixExplanations.build(inference, mixes)
                mixes = dataclasses.replace(mixes, evidence=None)
        with timings.stage("demographic_prior"):
            # fitted on the encoded demographics, decoded (numeric features standardized), exactly as
            # serving decodes an eventless customer's stored row
            demographic_prior = DemographicMixPrior.fit(
                mixes,
                demographic_frame(customer_demographics, demographic_space).with_columns(
                    customer_frame["customer_id"]
                ),
            )

        with timings.stage("interaction_matrices"):
            history, ages, model_customers, warm_rows = matrices.result()
            training_set = TrainingSet(
                interactions=history[warm_rows],
                interaction_age_days=ages[warm_rows],
                user_mix=mixes.overall[warm_rows],
                user_demographics=customer_demographics[warm_rows],
                item_features=item_features,
                persona_names=catalog.ids,
                demographic_feature_names=demographic_space.names,
                item_feature_names=item_space.names,
                seed=config.split.seed,
            )
    return PreparedData(
        shop=shop,
        catalog=catalog,
        split=split,
        items=items,
        item_frame=item_frame,
        item_space=item_space,
        item_features=item_features,
        customers=customers,
        demographic_space=demographic_space,
        customer_demographics=customer_demographics,
        inference=inference,
        mixes=mixes,
        demographic_prior=demographic_prior,
        model_customers=model_customers,
        training_set=training_set,
        history=history,
        logged_events=logged_events,
        explanations=explanations,
    )


def _history_and_model_rows(
    split: TimeSplit,
    customers: IdMap,
    items: IdMap,
    event_weights: Mapping[str, float],
    indices: tuple[NDArray[np.int64], NDArray[np.int64]],
) -> tuple[sp.csr_matrix, sp.csr_matrix, IdMap, NDArray[np.int64]]:
    """Every known customer's training interactions and their ages, the model customers and their rows."""
    history = interaction_matrix(
        split.train_events, customers, items, event_weights=event_weights, indices=indices
    )
    ages = interaction_ages(split.train_events, history, indices)
    model_customers = IdMap(list(split.warm_customers), kind="customer")
    warm_rows = customers.to_internal(pl.Series(split.warm_customers, dtype=pl.Utf8))
    return history, ages, model_customers, warm_rows


def prepare_all_events(
    config: TrainConfig,
    shop: ShopData,
    *,
    logged_events: LoggedEventsMerge | None = None,
    engine: TrainingEngine = LOCAL_ENGINE,
    timings: StageTimings | None = None,
    explain: bool = False,
) -> PreparedData:
    """``prepare_split`` on every event with no customer held out: the data the served models learn from.

    Persona inference, id maps, demographics, history and the models' training set are all rebuilt,
    so a customer seen only in the test period or held out as cold start becomes a known customer
    with a mix, a history and a row in every model. The config's settings are the split's, so the
    served models are the evaluated ones fitted on more data, not different models.
    """
    timings = timings or StageTimings()
    with timings.stage("split"):
        split = all_events_split(shop.events)
    return prepare_split(
        config, shop, split, logged_events=logged_events, engine=engine, timings=timings, explain=explain
    )


def split_for(
    config: TrainConfig, shop: ShopData, data_dir: Path, events: LoadedEvents | None = None
) -> TimeSplit:
    """The configured split: time-based, or the data folder's predefined test events.

    Of ``shop.events``, or of ``events`` when given: a loaded table handed over to be released while
    it is split (``training.split.LoadedEvents``).
    """
    source: pl.DataFrame | LoadedEvents = shop.events if events is None else events
    if config.split.method == "predefined":
        known = shop.events if events is None else events.peek()
        test_ids = read_test_event_ids(data_dir / config.split.test_events, known)
        del known
        split = split_predefined(
            source, test_ids, cold_start_share=config.split.cold_start_share, seed=config.split.seed
        )
    else:
        split = split_events(
            source,
            test_days=config.split.test_days,
            cold_start_share=config.split.cold_start_share,
            seed=config.split.seed,
        )
    _require_customers_to_fit(split, config.split.cold_start_share)
    return split


# Fewer customers than this leave the models nothing to learn a taste from (a 64-factor model of two
# customers is all regularisation): the fits then end in NaN or a division by zero (a data scientist's
# walkthrough on the first 2, 5 and 50 customers of an export, the last with cold_start_share 0.95).
MIN_MODEL_CUSTOMERS = 10


def _require_customers_to_fit(split: TimeSplit, cold_start_share: float) -> None:
    fitted = len(split.warm_customers)
    if fitted >= MIN_MODEL_CUSTOMERS:
        return
    held = len(split.cold_customers)
    raise SplitError(
        f"the split leaves {fitted} customer(s) to fit the models on, of {fitted + held} with events before "
        f"the test period ([split] cold_start_share = {cold_start_share:g} holds {held} out as cold-start "
        f"customers); the models need at least {MIN_MODEL_CUSTOMERS}: "
        + (
            "lower [split] cold_start_share"
            if fitted + held >= MIN_MODEL_CUSTOMERS
            else "use a data set with more customers"
        )
    )


def _customer_frame(shop: ShopData, customers: IdMap) -> pl.DataFrame:
    """Demographic columns for every known customer in IdMap order (nulls where unknown)."""
    base = customers.id_series.alias("customer_id").to_frame()
    if shop.customers is None:
        return base.with_columns([pl.lit(None, dtype=pl.Utf8).alias(c) for c in DEMOGRAPHIC_COLUMNS])
    attributes = shop.customers.select(
        ["customer_id", *[c for c in demographic_columns(shop.customers) if c in shop.customers.columns]]
    )
    return base.join(attributes, on="customer_id", how="left", maintain_order="left")


def require_something_to_evaluate(prepared: PreparedData, segments: Sequence[EvaluationSegment]) -> None:
    """Refuse a split whose known customers hold nothing new in the test period: the evaluation would
    be empty, train would pick no best model and evaluate would "reproduce" nothing. One far-future
    timestamp (a typo: 2062) does it: the test period is then that one event, a customer's repeat view
    (found by a fuzz pass of the CLI, twice: the split's own check only sees a test period of strangers)."""
    if any(segment.name == "all" for segment in segments):
        return
    split = prepared.split
    latest = split.test_events["timestamp"].max() if split.test_events.height else None
    latest_text = latest.isoformat() if isinstance(latest, dt.datetime) else "none"
    raise SplitError(
        "nothing to evaluate: no customer known before the test period "
        f"(from {split.test_start.isoformat()}) engaged with an item new to them in it "
        f"({split.test_events.height} event(s) in it). Is the latest timestamp, {latest_text}, right? "
        "Otherwise raise [split] test_days"
    )


def evaluation_segments(prepared: PreparedData) -> list[EvaluationSegment]:
    """Warm customers (overall and by dominant persona), held-out cold-start customers, new customers.

    Warm customers are scored as known users under their inferred mix; cold-start customers with
    index -1 under the mix inferred from their (unseen-by-the-model) history plus demographics, and
    with that history as the batch's ``events`` (models that can fold a stranger in from their events
    do, as serving does for customers the artifact holds but the model does not); new
    customers, who first appear in the test period, from the demographic prior mix alone.
    """
    split = prepared.split
    test = split.test_events
    segments: list[EvaluationSegment] = []

    def build(
        name: str,
        ids: list[str],
        model_index: NDArray[np.int64],
        mix: NDArray[np.float64],
        demographics: sp.csr_matrix,
        exclude: sp.csr_matrix,
        events: sp.csr_matrix | None = None,
    ) -> None:
        if not ids:
            return
        local = IdMap(ids, kind="customer")
        relevant = relevant_matrix(test, local, prepared.items, exclude=exclude)
        has_target = np.asarray(relevant.getnnz(axis=1) > 0)
        if not has_target.any():
            return
        keep = np.flatnonzero(has_target)
        segments.append(
            EvaluationSegment(
                name=name,
                customer_ids=local.ids[keep],
                users=UserBatch(
                    user_index=model_index[keep],
                    mix=mix[keep],
                    demographics=demographics[keep],
                    events=sp.csr_matrix(events[keep]) if events is not None else None,
                ),
                exclude=exclude[keep],
                relevant=relevant[keep],
            )
        )

    warm_ids = list(split.warm_customers)
    warm_rows = prepared.customer_rows(warm_ids)
    build(
        "all",
        warm_ids,
        prepared.model_customers.to_internal(warm_ids),
        prepared.mixes.overall[warm_rows],
        prepared.customer_demographics[warm_rows],
        prepared.history[warm_rows],
    )
    if segments:
        everyone = segments[0]
        dominant = np.argmax(everyone.users.mix, axis=1)
        for k, persona in enumerate(prepared.catalog.ids):
            rows = np.flatnonzero(dominant == k)
            if rows.size:
                segments.append(
                    EvaluationSegment(
                        name=f"persona:{persona}",
                        customer_ids=everyone.customer_ids[rows],
                        users=UserBatch(
                            user_index=everyone.users.user_index[rows],
                            mix=everyone.users.mix[rows],
                            demographics=everyone.users.demographics[rows],
                        ),
                        exclude=everyone.exclude[rows],
                        relevant=everyone.relevant[rows],
                    )
                )
    cold_ids = list(split.cold_customers)
    if cold_ids:
        cold_rows = prepared.customer_rows(cold_ids)
        build(
            "cold_start",
            cold_ids,
            np.full(len(cold_ids), -1, dtype=np.int64),
            prepared.mixes.overall[cold_rows],
            prepared.customer_demographics[cold_rows],
            prepared.history[cold_rows],
            events=prepared.history[cold_rows],
        )
    seen = set(prepared.split.train_events["customer_id"].unique().to_list())
    new_ids = [c for c in test["customer_id"].unique(maintain_order=True).to_list() if c not in seen]
    if new_ids:
        frame = _customer_frame(prepared.shop, IdMap(new_ids, kind="customer"))
        demographics = prepared.demographic_space.encode(frame, demographic_columns(frame))
        mix = prepared.demographic_prior.mix_for_frame(
            demographic_frame(demographics, prepared.demographic_space)
        )
        build(
            "new_customers",
            new_ids,
            np.full(len(new_ids), -1, dtype=np.int64),
            mix,
            demographics,
            empty_csr_matrix(len(new_ids), len(prepared.items)),
        )
    return segments


def context_segments(prepared: PreparedData) -> list[ContextSegments]:
    """Per shopping context, the warm customers with held-out positives in it (see ``ContextSegments``).

    A held-out event's context follows from its timestamp with the holidays persona inference used,
    exactly as serving derives a request's context; contexts without such customers are left out.
    """
    split = prepared.split
    holidays = prepared.inference.config.holidays
    test = split.test_events.with_columns(context_expr("timestamp", holidays).alias("_context"))
    warm_ids = list(split.warm_customers)
    if not warm_ids:
        return []
    local = IdMap(warm_ids, kind="customer")
    rows = prepared.customer_rows(warm_ids)
    model_index = prepared.model_customers.to_internal(warm_ids)
    overall = prepared.mixes.overall[rows]
    exclude = prepared.history[rows]
    demographics = prepared.customer_demographics[rows]
    out: list[ContextSegments] = []
    for c, context in enumerate(CONTEXTS):
        events = test.filter(pl.col("_context") == context).drop("_context")
        relevant = relevant_matrix(events, local, prepared.items, exclude=exclude)
        keep = np.flatnonzero(np.asarray(relevant.getnnz(axis=1) > 0))
        if keep.size == 0:
            continue
        context_mix = prepared.mixes.by_context[rows[keep], c]
        users = UserBatch(user_index=model_index[keep], mix=context_mix, demographics=demographics[keep])
        scored = EvaluationSegment(
            f"context:{context}:context_mix", local.ids[keep], users, exclude[keep], relevant[keep]
        )
        out.append(
            ContextSegments(
                context=context,
                with_context_mix=dataclasses.replace(
                    scored, users=dataclasses.replace(users, base_mix=overall[keep])
                ),
                with_overall_mix=dataclasses.replace(
                    scored,
                    name=f"context:{context}:overall_mix",
                    users=dataclasses.replace(users, mix=overall[keep]),
                ),
                distinct_mix=np.asarray(np.abs(context_mix - overall[keep]).sum(axis=1) > 1e-12),
            )
        )
    return out
