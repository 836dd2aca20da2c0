"""``persona-engine train``: data -> persona mixes -> models -> evaluation -> refit -> a versioned artifact.

Models are evaluated on the split (fitted on the training part, scored on the held-out period and
the cold-start hold-out). Then, unless ``[output] refit_on_all_events = false``, persona inference,
id maps, history, decision estimates and every model are refitted with the same settings on all
events and all customers: what the split held back (the freshest weeks, a tenth of the customers)
is exactly what production recommendations need most. The manifest keeps the split's figures, the
honest estimate of the served models' quality, and records in ``served_models`` what they were
fitted on.

The artifact is the only thing serving reads, so it carries everything serving needs (id maps, item
attributes for filters, mixes, persona inference parameters, offer and layout estimates, the catalog)
as plain arrays and JSON, each file checksummed in the manifest. ``latest`` moves only after the
artifact is complete, so a crash mid-training can never be served.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl
import scipy.sparse as sp
from numpy.typing import NDArray
from rich.progress import Progress, TaskID

from engine.artifact import ArtifactSigner, ArtifactWriter, library_versions, new_version
from engine.artifact.contents import ArtifactContents, write_contents
from engine.data.chunk_layout import chunk_lengths, chunked_as
from engine.data.id_map import MISSING
from engine.data.interactions import interaction_matrix
from engine.data.item_catalog import ItemCatalog
from engine.data.shop_data import ShopData
from engine.decisions.arm_estimates import ArmEstimates
from engine.models.base import Recommender
from engine.personas.change_detection import ChangeDetectorConfig
from engine.personas.drift import DEFAULT_THRESHOLD, population_mean_mix
from engine.personas.drift_calibration import (
    MIN_TESTED_CUSTOMERS,
    DriftCalibration,
    calibrate_drift_threshold,
)
from engine.personas.explanations import MixExplanations
from engine.personas.shopping_context import CONTEXTS
from training.config import TrainConfig
from training.config_references import check_artifact_root
from training.console_output import progress_bar
from training.data_match import folder_fingerprint
from training.drift_evaluation import DRIFT_EVALUATION, drift_evaluation
from training.evaluation import (
    CONTEXT_EVALUATION,
    ContextMixResult,
    ScoredLists,
    SegmentResult,
    best_model,
    evaluate_context_mixes,
    evaluate_models,
    ratio_to_baseline,
)
from training.held_out_period import held_out_warnings
from training.logged_events import LoggedEventsMerge
from training.persona_report import persona_accuracy
from training.prepared_data import (
    PreparedData,
    context_segments,
    evaluation_segments,
    prepare,
    prepare_all_events,
    require_something_to_evaluate,
)
from training.served_models import MANIFEST_KEY as SERVED_MODELS
from training.session_evaluation import SESSION_EVALUATION, session_evaluation
from training.stage_timings import StageTimings
from training.steering_evaluation import STEERING_EVALUATION, steering_results
from training.training_engine import LOCAL_ENGINE, TrainingEngine

ARTIFACT_FORMAT = "persona-engine-artifact"


@dataclass
class TrainResult:
    artifact_path: Path
    version: str
    results: list[SegmentResult]
    fit_seconds: dict[str, float]  # of the evaluated (split) models
    persona_accuracy: dict[str, Any] | None  # of the split's mixes
    decision_quality: dict[str, Any]  # of the artifact's estimates
    summary: dict[str, Any] = field(default_factory=dict)
    served_models: dict[str, Any] = field(default_factory=dict)  # the manifest record: served_models_record
    context_results: list[ContextMixResult] = field(default_factory=list)  # context mix vs overall mix
    drift_evaluation: dict[str, Any] | None = None  # flagged customers: recent mix vs overall mix
    session_evaluation: dict[str, Any] | None = None  # first held-out day folded in vs fitted vector


class WrittenArtifact(NamedTuple):
    path: Path
    version: str
    drift_calibration: DriftCalibration | None  # what it stores for live drift (None: not calibrated)


def live_drift_record(calibration: DriftCalibration | None) -> dict[str, Any]:
    """The train summary's account of the live drift threshold (printed by ``train``)."""
    if calibration is None:
        return {
            "threshold": None,
            "reason": (
                f"fewer than {MIN_TESTED_CUSTOMERS} customers have events older than the test's "
                f"baseline lag to calibrate on; the server uses the default {DEFAULT_THRESHOLD} nats"
            ),
        }
    return calibration.to_json()


def fit_models(
    prepared: PreparedData,
    config: TrainConfig,
    *,
    show_progress: bool,
    label: str = "training",
    engine: TrainingEngine = LOCAL_ENGINE,
) -> tuple[dict[str, Recommender], dict[str, float]]:
    """Every configured model fitted on ``prepared.training_set``, with its fit time in seconds."""
    with progress_bar(show_progress) as progress:
        task = progress.add_task(f"{label} models", total=len(config.models))
        return _fit_each(prepared, config, progress, task, label, engine)


def _fit_each(
    prepared: PreparedData,
    config: TrainConfig,
    progress: Progress,
    task: TaskID,
    label: str,
    engine: TrainingEngine = LOCAL_ENGINE,
) -> tuple[dict[str, Recommender], dict[str, float]]:
    models: dict[str, Recommender] = {}
    seconds: dict[str, float] = {}
    for kind in config.models:
        progress.update(task, description=f"{label} {kind}")
        model = engine.create_model(kind, config.model_settings(kind))
        started = time.perf_counter()
        model.fit(prepared.training_set, show_progress=False)
        seconds[kind] = time.perf_counter() - started
        models[kind] = model
        progress.advance(task)
    return models, seconds


def library_fit_seconds(models: dict[str, Recommender]) -> dict[str, float]:
    """Per model that wraps a factorization library, the seconds its last fit spent inside it
    (``Recommender.library_fit_seconds``): the part of ``fit_seconds`` that is not the engine's."""
    return {kind: m.library_fit_seconds for kind, m in models.items() if m.library_fit_seconds is not None}


def refit_on_all_events(
    shop: ShopData,
    config: TrainConfig,
    *,
    logged_events: LoggedEventsMerge | None = None,
    show_progress: bool,
    engine: TrainingEngine = LOCAL_ENGINE,
    timings: StageTimings | None = None,
) -> tuple[PreparedData, dict[str, Recommender], dict[str, float]]:
    """Persona inference, id maps, history and every model again, on all of ``shop``'s events.

    Same config, same hyperparameters, no cold-start hold-out: the served models are the evaluated
    ones given the data the evaluation had to hold back. Steps go to ``timings`` when given.
    """
    timings = timings or StageTimings()
    with progress_bar(show_progress) as progress:
        task = progress.add_task("refit on all events: personas", total=1 + len(config.models))
        prepared = prepare_all_events(
            config, shop, logged_events=logged_events, engine=engine, timings=timings, explain=True
        )
        progress.advance(task)
        with timings.stage("fit_models"):
            models, seconds = _fit_each(prepared, config, progress, task, "refit on all events:", engine)
    return prepared, models, seconds


CUSTOMER_ROW = "customer_row"  # the column ``logged_decisions`` adds: the decision's row in ``customers``


def logged_decisions(prepared: PreparedData) -> pl.DataFrame | None:
    """The logged decisions the estimates learn from: known customers' decisions before the test
    period, or every known customer's decision when nothing is held out (the refit on all events),
    with each decision's customer row (``CUSTOMER_ROW``)."""
    decisions = prepared.shop.decisions
    if decisions is None or decisions.height == 0:
        return None
    # Each decision's customer row is looked up once, in one pass with the filter (the log has millions
    # of rows on a large shop): it says who is known and is the row the estimates read mixes from.
    # Only the id column is joined into one chunk for the look-up, not the whole log.
    # The rows are cut into the log's chunks: a column chunked otherwise would have the log copied
    # into one chunk by its first filter (engine.data.chunk_layout).
    rows = chunked_as(
        pl.Series(CUSTOMER_ROW, prepared.customers.to_internal(decisions["customer_id"], strict=False)),
        chunk_lengths(decisions),
    )
    keep = rows != MISSING
    if prepared.split.holds_out:
        keep = keep & (decisions["timestamp"] < prepared.split.test_start)
    return decisions.with_columns(rows).filter(keep)


def fit_decisions(prepared: PreparedData) -> dict[str, ArmEstimates]:
    """Per persona x arm response estimates from the logged decisions (``logged_decisions``).

    Each decision is attributed to the customer's mix *for the decision's context*, because the same
    customer responds to a weekend offer as the persona they are on weekends.
    """
    decisions = logged_decisions(prepared)
    if decisions is None:
        return {}
    context_mixes = np.transpose(prepared.mixes.by_context, (1, 0, 2))  # (contexts, customers, personas)
    estimates: dict[str, ArmEstimates] = {}
    arm_tables = {
        "offer": (prepared.shop.offers, "offer_id"),
        "layout": (prepared.shop.layouts, "variant_id"),
    }
    for decision_type, (table, id_column) in arm_tables.items():
        rows = decisions.filter(pl.col("decision_type") == decision_type)
        if rows.height == 0:
            continue
        arm_ids = (
            table[id_column].to_list() if table is not None else sorted(rows["arm_id"].unique().to_list())
        )
        estimates[decision_type] = ArmEstimates.fit_decisions(
            rows,
            decision_type=decision_type,
            arm_ids=arm_ids,
            customers=prepared.customers,
            customer_rows=rows[CUSTOMER_ROW].to_numpy(),
            mixes=context_mixes,
            persona_ids=prepared.catalog.ids,
        )
    return estimates


def decision_quality(estimates: dict[str, ArmEstimates], truth_dir: Path) -> dict[str, Any]:
    """Mean absolute error of the per-persona response estimates against planted rates, when known."""
    path = truth_dir / "response_rates.json"
    out: dict[str, Any] = {}
    if not path.is_file():
        return out
    truth = json.loads(path.read_text(encoding="utf-8"))
    for decision_type, estimate in estimates.items():
        planted = truth.get(decision_type, {})
        errors = []
        means = estimate.mean()
        for k, persona in enumerate(estimate.persona_ids):
            for a, arm in enumerate(estimate.arm_ids):
                if persona in planted and arm in planted[persona]:
                    errors.append(abs(float(means[k, a]) - float(planted[persona][arm])))
        if errors:
            out[decision_type] = {"mean_abs_error": float(np.mean(errors)), "pairs": len(errors)}
    return out


def purchases_matrix(prepared: PreparedData) -> sp.csr_matrix:
    """(customers x items) 1 where the customer bought the item, over *all* loaded events.

    Serving leaves purchased items out of recommendations by default, and an item bought in the
    evaluation period is just as bought; views and carts do not count (see ``engine.ranking.filters``).
    """
    bought = prepared.shop.events.filter(pl.col("event_type") == "purchase")
    matrix = interaction_matrix(bought, prepared.customers, prepared.items, event_weights={"purchase": 1.0})
    matrix.data[:] = 1.0
    return matrix


def calibrate_live_drift(prepared: PreparedData, config: TrainConfig) -> DriftCalibration | None:
    """The live drift threshold for this artifact (``engine.personas.drift_calibration``): calibrated
    with its persona model on the events that model was fitted on, for the change test the server
    runs by default; None when too few customers have a history long enough to test."""
    return calibrate_drift_threshold(
        prepared.inference,
        prepared.split.train_events,
        prepared.shop.items,
        population_mean_mix(prepared.mixes.overall),
        ChangeDetectorConfig(false_alarm_rate=config.drift.target_false_alarm),
        max_customers=config.drift.calibration_customers,
        seed=config.split.seed,
        customers=prepared.customers.ids[prepared.mixes.n_events > 0],
    )


def _string_array(values: list[Any]) -> NDArray[np.str_]:
    return np.asarray(["" if v is None else str(v) for v in values], dtype=np.str_)


def write_artifact(
    prepared: PreparedData,
    config: TrainConfig,
    models: dict[str, Recommender],
    estimates: dict[str, ArmEstimates],
    manifest_fields: dict[str, Any],
    *,
    signer: ArtifactSigner | None = None,
    timings: StageTimings | None = None,
) -> WrittenArtifact:
    """Write the artifact; the mixes' explanations are ``prepared.explanations``, built here when
    ``prepare`` was not asked for them (serving needs them).

    With ``signer`` the manifest is signed, so servers given its key accept the artifact. Steps go to
    ``timings`` when given (``drift_calibration``, ``purchases_matrix``, ``write_contents``, ``commit``)."""
    timings = timings or StageTimings()
    root = Path(config.output.root)
    root.mkdir(parents=True, exist_ok=True)
    version = new_version(root)
    # Serving cannot explain mixes without the events, so every customer is explained now.
    explanations = prepared.explanations
    if explanations is None:
        with timings.stage("explanations"):
            explanations = MixExplanations.build(prepared.inference, prepared.mixes)
    with timings.stage("drift_calibration"):
        drift_calibration = calibrate_live_drift(prepared, config)
    with timings.stage("purchases_matrix"):
        purchases = purchases_matrix(prepared)
    items = prepared.item_frame
    shop = prepared.shop
    contents = ArtifactContents(
        catalog=prepared.catalog,
        item_catalog=ItemCatalog(
            prepared.items,
            titles=_string_array(items["title"].to_list()),
            categories=_string_array(items["category"].to_list()),
            brands=_string_array(items["brand"].to_list()),
            prices=items["price"].to_numpy().astype(np.float64),
            in_stock=items["in_stock"].fill_null(True).to_numpy().astype(bool),
        ),
        customers=prepared.customers,
        model_customers=prepared.model_customers,
        item_space=prepared.item_space,
        item_features=prepared.item_features,
        demographic_space=prepared.demographic_space,
        demographics=prepared.customer_demographics,
        history=prepared.history,
        purchases=purchases,
        mix_overall=prepared.mixes.overall,
        mix_by_context=prepared.mixes.by_context,
        n_events=prepared.mixes.n_events,
        contexts=CONTEXTS,
        holidays=prepared.inference.config.holidays,
        inference=prepared.inference,
        demographic_prior=prepared.demographic_prior,
        explanations=explanations,
        drift_calibration=drift_calibration,
        models=models,
        arm_estimates=estimates,
        offers=shop.offers.to_dicts() if shop.offers is not None else None,
        layouts=shop.layouts.to_dicts() if shop.layouts is not None else None,
    )
    with ArtifactWriter(root, version, signer=signer) as writer:
        with timings.stage("write_contents"):
            write_contents(writer, contents)
        with timings.stage("commit"):
            path = writer.commit({"format": ARTIFACT_FORMAT, **manifest_fields})
    return WrittenArtifact(path, version, drift_calibration)


def run_training(
    config: TrainConfig,
    *,
    show_progress: bool = True,
    data_path: Path | None = None,
    signer: ArtifactSigner | None = None,
    engine: TrainingEngine = LOCAL_ENGINE,
) -> TrainResult:
    """The whole training run; ``engine`` says where loading, the persona EM and model fits run."""
    started = time.perf_counter()
    check_artifact_root(config)  # not after the whole run, when the artifact is written
    timings = StageTimings()
    data_dir = Path(data_path or config.data.path)
    # Served explanations come from the data the served models are fitted on: the split's prepare
    # explains the mixes only when no refit will replace them.
    refit = config.output.refit_on_all_events
    with timings.stage("prepare"):  # load, split, features, persona inference, interaction matrices
        prepared = prepare(config, data_path=data_dir, engine=engine, timings=timings, explain=not refit)
    with timings.stage("fit_models"):
        models, fit_seconds = fit_models(prepared, config, show_progress=show_progress, engine=engine)
    with timings.stage("evaluation"):
        with timings.stage("segments"):
            segments = evaluation_segments(prepared)
            require_something_to_evaluate(prepared, segments)
        scored: dict[str, ScoredLists] = {}  # each model's lists, reused by the context evaluation
        with timings.stage("models"):
            results = evaluate_models(models, segments, config.evaluation.k, scored_lists=scored)
        with timings.stage("context_mixes"):
            by_context = evaluate_context_mixes(
                models, context_segments(prepared), config.evaluation.k, scored_lists=scored
            )
        with timings.stage("drift_mixes"):
            drift = drift_evaluation(prepared, models, segments, config, scored_lists=scored)
        del scored
        with timings.stage("session_fold_in"):
            session = session_evaluation(prepared, models, segments, config)
        with timings.stage("steering"):
            steering = steering_results(prepared, models, config.evaluation.k, segments=segments)
    with timings.stage("persona_accuracy"):
        accuracy = persona_accuracy(prepared, data_dir / "truth")
    summary = _summary(prepared, results, models)  # the split's figures, before it may be dropped
    summary["warnings"] = held_out_warnings(prepared, segments)
    served_fit_seconds, refit_seconds, served_accuracy = fit_seconds, None, accuracy
    if refit:
        shop, logged_events = prepared.shop, prepared.logged_events
        del prepared, models  # the split's matrices and models: freed before the refit builds its own
        with timings.stage("refit"):
            prepared, models, served_fit_seconds = refit_on_all_events(
                shop,
                config,
                logged_events=logged_events,
                show_progress=show_progress,
                engine=engine,
                timings=timings,
            )
            with timings.stage("persona_accuracy"):
                served_accuracy = persona_accuracy(prepared, data_dir / "truth")
        refit_seconds = timings.stages[-1]["seconds"]
    served = served_models_record(
        prepared,
        refit=refit,
        fit_seconds=served_fit_seconds,
        seconds=refit_seconds,
        persona_accuracy=served_accuracy,
        library_fit_seconds=library_fit_seconds(models),
    )
    with timings.stage("decisions"):
        estimates = fit_decisions(prepared)
        quality = decision_quality(estimates, data_dir / "truth")
    if prepared.logged_events is not None:
        summary["event_log"] = {"path": config.data.event_log, **prepared.logged_events.to_dict()}
    manifest_fields = {
        "created_by": "persona-engine train",
        "config": config.to_dict(),
        "data_fingerprint": folder_fingerprint(data_dir),
        "library_versions": library_versions(),
        # Figures of the models fitted on the split, whatever the artifact serves (see served_models).
        "metrics": [r.to_dict() for r in results],
        # Per shopping context of the held-out events: NDCG with the context's mix (as served) and
        # with the overall mix (as "metrics" scores), with a paired bootstrap interval of the gain.
        CONTEXT_EVALUATION: [r.to_dict() for r in by_context],
        # Requested pure personas for known customers: share of the top k on that persona's shelves
        # and NDCG, per steering setting ([personas] steering is the served one).
        STEERING_EVALUATION: [r.to_dict() for r in steering],
        "persona_accuracy": accuracy,
        "decision_quality": quality,
        "fit_seconds": fit_seconds,
        SERVED_MODELS: served,
        # Every stage but writing the artifact itself (which ends with this manifest).
        "stages": timings.to_json(),
        "summary": summary,
        "models": sorted(models),
        "personas": list(prepared.catalog.ids),
    }
    if drift is not None:
        # Customers the change test flags at the end of training: NDCG with the recent mix the
        # server gives a drifting customer and with the overall mix (training.drift_evaluation).
        manifest_fields[DRIFT_EVALUATION] = drift
    if session is not None:
        # Known customers' first held-out day as a live session: NDCG with it folded into their
        # vector, as served, and from their fitted vector (training.session_evaluation).
        manifest_fields[SESSION_EVALUATION] = session
    if engine.name != LOCAL_ENGINE.name:
        manifest_fields["engine"] = {"name": engine.name, **engine.record}
    with timings.stage("write_artifact"):
        path, version, drift_calibration = write_artifact(
            prepared, config, models, estimates, manifest_fields, signer=signer, timings=timings
        )
    summary["live_drift_threshold"] = live_drift_record(drift_calibration)
    summary["seconds"] = time.perf_counter() - started
    summary["stages"] = timings.to_json()
    return TrainResult(
        artifact_path=path,
        version=version,
        results=results,
        fit_seconds=fit_seconds,
        persona_accuracy=accuracy,
        decision_quality=quality,
        summary=summary,
        served_models=served,
        context_results=by_context,
        drift_evaluation=drift,
        session_evaluation=session,
    )


def _summary(
    prepared: PreparedData, results: list[SegmentResult], models: dict[str, Recommender]
) -> dict[str, Any]:
    """The manifest's summary: headline figures of the evaluation and the split they were measured on."""
    # Ratios are NaN without a popularity baseline; the manifest is strict JSON, so those become null.
    ratios = {key: value for key, value in ratio_to_baseline(results).items() if math.isfinite(value)}
    best = (
        best_model(results) if any(r.segment == "all" and r.model != "popularity" for r in results) else None
    )
    cold_ratios = [
        ratios[(m, "cold_start")] for m in models if (m, "cold_start") in ratios and m != "popularity"
    ]
    return {
        "best_model": best,
        "best_ndcg_ratio_to_popularity": ratios.get((best, "all")) if best else None,
        "cold_start_ndcg_ratio_to_popularity": max(cold_ratios, default=None),
        "persona_inference_seconds": (
            prepared.inference.fit_summary.seconds if prepared.inference.fit_summary else None
        ),  # part of the prepare stage
        # of the split's models, inside their libraries: the rest of fit_seconds is the engine's work
        "library_fit_seconds": library_fit_seconds(models),
        "customers": len(prepared.customers),
        "model_customers": len(prepared.model_customers),
        "items": len(prepared.items),
        "train_events": prepared.split.train_events.height,
        "test_events": prepared.split.test_events.height,
        "test_start": prepared.split.test_start.isoformat(),
        "skipped_rows": prepared.shop.report.rows_skipped,
    }


def served_models_record(
    prepared: PreparedData,
    *,
    refit: bool,
    fit_seconds: dict[str, float],
    seconds: float | None,
    persona_accuracy: dict[str, Any] | None,
    library_fit_seconds: dict[str, float],
) -> dict[str, Any]:
    """The manifest's ``served_models``: what the artifact's models, mixes and estimates were fitted on.

    Any job that scores held-out events reads it (``training.served_models``): models refit on all
    events have seen the test period and must not be scored on it.
    """
    decisions = logged_decisions(prepared)
    moments = [prepared.split.train_events["timestamp"].max()]
    if decisions is not None and decisions.height:
        moments.append(decisions["timestamp"].max())
    return {
        "refit_on_all_events": refit,
        # The newest event or decision behind the models, mixes and estimates: they saw nothing later.
        "data_until": max(m for m in moments if isinstance(m, dt.datetime)).isoformat(),
        "events": prepared.split.train_events.height,
        "customers": len(prepared.customers),
        "model_customers": len(prepared.model_customers),
        "decisions": 0 if decisions is None else decisions.height,
        "fit_seconds": fit_seconds,
        "library_fit_seconds": library_fit_seconds,  # the part of fit_seconds inside the libraries
        "persona_inference_seconds": (
            prepared.inference.fit_summary.seconds if prepared.inference.fit_summary else None
        ),
        "seconds": seconds,  # the refit stage's wall time; None when the split's models are served
        "persona_accuracy": persona_accuracy,  # of the served mixes against planted truth, when known
    }
