"""``persona-engine evaluate-policy``: what candidate offer or layout policies would have earned on a log.

The input is any file in the ``decisions`` table format (engine/data/contract.py: decision_id,
customer_id, timestamp, context, decision_type, arm_id, propensity, outcome), optionally with the
candidate policies' inputs as extra columns:

- ``mix__<persona_id>`` (one float column per persona, each row on the simplex): the persona mix the
  candidate policy sees for that decision. Without them, ``--artifact`` supplies each customer's stored
  mix for the decision's context (customers the artifact never saw get its population mix).

The server's event log (engine/live/event_log.py) is read directly too (``--event-log``): there every
served decision carries the mix it was made for, and the first-ranked arm of each decision is used.

The arm set (what "uniform" is uniform over, and what every candidate chooses among) is declared:
``--arm-table`` (the offers or layouts table) or ``--arms``, else the artifact's arms; only without
either is it inferred from the log, with a warning. Decisions with a ``position`` column choose an arm
in a slot: the arms are then every declared arm in every declared position (``--positions``, else the
positions in the log, with a warning), written ``ARM@POSITION``, never just the pairs the log happens to
show. Arm estimates (which know no positions) count equally for an arm in every position.

Greedy, epsilon-greedy and Thompson candidates use the artifact's per persona x arm estimates
(``decisions/<type>/`` of the artifact); without an artifact they are fitted on the log itself, which
the output flags. A policy fitted on the decisions it is evaluated on looks better than it is: it
picked the arms that were lucky in that very sample (on a 600-customer shop, in-sample greedy was
over-estimated by 0.09 against a true value of 0.11, and no interval covered it). So with an artifact
only the decisions from its test period on (``summary.test_start`` of the manifest, which its
estimates never saw) are evaluated unless ``since`` says otherwise.

An artifact whose estimates were refit on every logged decision (``served_models`` in the manifest,
``training.served_models``) has seen its test period too. By default only the decisions after its
data (``served_models.data_until``) are then evaluated with it, a later log such as the server's;
when the log has none (it is the training data's own log), the test period is evaluated with the
split's mixes and estimates, fitted again from the artifact's config and data (``split_decision_inputs``),
as they were before the refit.

Estimators (engine/evaluation/off_policy_evaluation.py): IPS, SNIPS, and DR with a reward model of per
persona x arm rates fitted by EM (engine/decisions/arm_estimates.py) and cross-fitted: decisions are split
into folds by a stable hash of the customer id, and each fold's predictions come from the model fitted on
the others.
Without mixes the reward model is per (context, arm) rates, cross-fitted the same way. Either way the
rates are shrunk towards the overall rate by an empirical-Bayes prior (engine/evaluation/rate_shrinkage.py),
which keeps DR's interval no wider than IPS's when conversions are rare.

``--truth DIR`` (the ``truth/`` folder of training/synthetic_shop/) adds each policy's true value on
the logged contexts, mean_i sum_a pi(a | x_i) * true_mix_i @ rho_true[:, a], with the error of every
estimate and whether its interval covers the truth.
"""

from __future__ import annotations

import datetime as dt
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl
from numpy.typing import NDArray

from engine.artifact import ArtifactError
from engine.artifact.contents import LoadedArtifact, load_artifact
from engine.data.contract import DECISION_TYPES, DECISIONS, LAYOUTS, OFFERS
from engine.data.id_map import IdMap
from engine.data.loading import DataValidationError, load_table
from engine.decisions.arm_estimates import ArmEstimateError, ArmEstimates
from engine.decisions.arm_set import ArmSet, ArmSetError
from engine.decisions.candidate_policy import CandidatePolicy, CandidatePolicyError
from engine.errors import PersonaEngineError
from engine.evaluation.off_policy_evaluation import (
    DEFAULT_LEVEL,
    OffPolicyEvaluationError,
    PolicyEvaluation,
    evaluate_policy,
)
from engine.evaluation.rate_shrinkage import fit_beta_prior
from engine.live.event_archive import archive_folder, read_outcomes, read_served_decisions
from engine.live.event_log import EventLog, EventLogError
from engine.live.events import ServedDecision
from engine.personas.catalog import PersonaCatalog
from engine.personas.shopping_context import CONTEXTS, context_index, context_of
from training.console_output import moment_text
from training.flag_error import FlagError
from training.served_models import ServedModels

MIX_PREFIX = "mix__"
DEFAULT_FOLDS = 5
# A decision logged with propensity p counts as 1/p decisions: below 1e-9 one of them outweighs a billion
# others, so no estimate is left to read (an effective sample size of 1), and at 1e-300 the variance
# overflowed and the table stopped with a traceback. Real logging policies explore far above it.
MIN_PROPENSITY = 1e-9
_MIX_TOLERANCE = 1e-4


class PolicyEvaluationInputError(PersonaEngineError, ValueError):
    """A decisions file, artifact or truth folder that cannot be used; names the file, row and column."""


@dataclass(frozen=True)
class LoggedDecisions:
    """The decisions of one type, with the mix each candidate policy sees."""

    frame: pl.DataFrame
    arm_ids: tuple[str, ...]
    arm_index: NDArray[np.int64]
    mixes: NDArray[np.float64] | None  # (n, K) or None without mix columns and artifact
    persona_ids: tuple[str, ...]
    mix_source: str  # "columns", "artifact", SPLIT_SOURCE or ""
    estimates: ArmEstimates | None  # for greedy / epsilon-greedy / Thompson
    estimates_source: str  # "artifact", SPLIT_SOURCE, "log (in-sample)" or ""
    arm_set: ArmSet | None = None  # where arm_ids come from; None only for hand-built instances
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeclaredArms:
    """The arm set as the user declares it: arm ids (from a flag or the offers/layouts table), positions."""

    arm_ids: tuple[str, ...] | None = None
    source: str = ""
    positions: tuple[str, ...] | None = None


def declared_arms(
    decision_type: str,
    *,
    arms: Sequence[str] | None = None,
    arm_table: Path | None = None,
    positions: Sequence[str] | None = None,
) -> DeclaredArms:
    """The declared arms: ``arms`` (``--arms``) or the ids of the offers or layouts table ``arm_table``."""
    if arms and arm_table is not None:
        raise PolicyEvaluationInputError("give the arms either as a list (--arms) or a table (--arm-table)")
    ids: tuple[str, ...] | None = None
    source = ""
    if arms:
        ids, source = tuple(a.strip() for a in arms if a.strip()), "--arms"
    elif arm_table is not None:
        schema = OFFERS if decision_type == "offer" else LAYOUTS
        try:
            table, _ = load_table(arm_table, schema)
        except DataValidationError as error:
            raise PolicyEvaluationInputError(
                f"{arm_table}: not a {schema.name} table for {decision_type} decisions: {error}"
            ) from None
        key = schema.key
        assert key is not None  # offers and layouts have one
        ids, source = tuple(table[key.name].to_list()), str(arm_table)
    cleaned = tuple(p.strip() for p in positions if p.strip()) if positions else None
    return DeclaredArms(ids, source, cleaned or None)


SPLIT_SOURCE = "the split (fitted again)"


class DecisionInputs(Protocol):
    """What candidate policies take from an artifact: mixes per customer and context, arm estimates."""

    @property
    def catalog(self) -> PersonaCatalog: ...

    @property
    def customers(self) -> IdMap: ...

    @property
    def mix_overall(self) -> NDArray[np.float64]: ...

    @property
    def mix_by_context(self) -> NDArray[np.float64]: ...

    @property
    def n_events(self) -> NDArray[np.int64]: ...

    @property
    def arm_estimates(self) -> Mapping[str, ArmEstimates]: ...


@dataclass(frozen=True)
class SplitDecisionInputs:
    """The split's mixes and estimates of a refit artifact, as train fitted them before the refit."""

    catalog: PersonaCatalog
    customers: IdMap
    mix_overall: NDArray[np.float64]
    mix_by_context: NDArray[np.float64]
    n_events: NDArray[np.int64]
    arm_estimates: Mapping[str, ArmEstimates]


def split_decision_inputs(artifact: LoadedArtifact, reason: str) -> SplitDecisionInputs:
    """Rebuild the artifact's split from its config and data and fit the decision estimates on it."""
    # Imported here: the training stack (models, inference) is only needed on this path.
    from training.config import parse_config
    from training.prepared_data import prepare
    from training.train_job import fit_decisions

    config = parse_config(artifact.manifest["config"], source=f"{artifact.path}/manifest.json")
    data_dir = Path(config.data.path)
    if not data_dir.is_dir():
        raise PolicyEvaluationInputError(
            f"{reason}; evaluating its test period needs the split's estimates fitted again from the "
            f"training data, and {data_dir} is not found (or give --since to evaluate later decisions)"
        )
    prepared = prepare(config, data_path=data_dir)
    mixes = prepared.mixes
    return SplitDecisionInputs(
        catalog=prepared.catalog,
        customers=prepared.customers,
        mix_overall=mixes.overall,
        mix_by_context=mixes.by_context,
        n_events=mixes.n_events,
        arm_estimates=fit_decisions(prepared),
    )


def _mix_columns(path: Path) -> list[str]:
    if path.suffix.lower() == ".csv":
        header = pl.scan_csv(path, infer_schema=False).collect_schema().names()
    else:
        header = list(pl.read_parquet_schema(path))
    return [name for name in header if name.startswith(MIX_PREFIX)]


def _read_mix_columns(path: Path, columns: list[str], keep: NDArray[np.bool_]) -> NDArray[np.float64]:
    if path.suffix.lower() == ".csv":
        frame = pl.read_csv(path, columns=columns, infer_schema=False)
    else:
        frame = pl.read_parquet(path, columns=columns)
    values = np.empty((frame.height, len(columns)))
    for j, name in enumerate(columns):
        try:
            values[:, j] = frame[name].cast(pl.Float64, strict=True).fill_null(np.nan).to_numpy()
        except pl.exceptions.PolarsError:
            raise PolicyEvaluationInputError(f"{path}: column {name!r} must hold numbers") from None
    bad = ~np.all(np.isfinite(values) & (values >= 0), axis=1) | (
        np.abs(values.sum(axis=1) - 1.0) > _MIX_TOLERANCE
    )
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise PolicyEvaluationInputError(
            f"{path}: row {row + 1}: the {MIX_PREFIX}* columns must be finite weights >= 0 summing to 1, "
            f"got {values[row].tolist()}"
        )
    return values[keep]


def _artifact_mixes(
    artifact: DecisionInputs, frame: pl.DataFrame
) -> tuple[NDArray[np.float64], tuple[str, ...]]:
    """Each decision's customer's stored mix for its context; unknown customers get the population mix."""
    catalog, customers = artifact.catalog, artifact.customers
    by_context, overall, n_events = artifact.mix_by_context, artifact.mix_overall, artifact.n_events
    with_events = overall[n_events > 0]
    population = (
        with_events.mean(axis=0) if len(with_events) else np.full(overall.shape[1], 1 / overall.shape[1])
    )
    rows = customers.to_internal(frame["customer_id"].to_list(), strict=False)
    contexts = context_index(frame["context"].to_list())
    mixes = np.tile(population, (len(rows), 1))
    known = rows >= 0
    mixes[known] = by_context[rows[known], contexts[known]]
    return mixes.astype(np.float64), catalog.ids


def artifact_test_start(artifact: LoadedArtifact) -> dt.datetime | None:
    """When the artifact's held-out period starts (its estimates saw only decisions before it)."""
    start = artifact.manifest.get("summary", {}).get("test_start")
    return dt.datetime.fromisoformat(start) if start else None


@dataclass(frozen=True)
class DecisionLog:
    """A decisions table as read, before filtering: every row, with the mix columns if it had them."""

    frame: pl.DataFrame
    mixes: NDArray[np.float64] | None  # (rows, K) from mix__* columns or the event log
    persona_ids: tuple[str, ...]
    source: str
    mix_source: str = "columns"


def read_decisions_file(path: Path) -> DecisionLog:
    """A file in the decisions table format, with optional ``mix__<persona_id>`` columns."""
    frame, _ = load_table(path, DECISIONS)
    names = _mix_columns(path)
    mixes = _read_mix_columns(path, names, np.ones(frame.height, dtype=bool)) if names else None
    return DecisionLog(frame, mixes, tuple(n.removeprefix(MIX_PREFIX) for n in names), str(path))


def read_event_log(path: Path) -> DecisionLog:
    """The served decisions of a server's event log, one row per decision id and type.

    An offer decision ranks several offers; only the first (logged first, in rank order) is kept,
    because only its propensity is unconditional. Its outcome is 1 when a reward was reported for
    that arm (or for the decision without naming an arm). The mix each decision was made for is in
    the log, so candidate policies see exactly what the serving policy saw.
    """
    if not path.is_file():
        raise PolicyEvaluationInputError(f"{path}: no such event log")
    try:
        with EventLog.open(path) as log:  # and its archive: retention moves old decisions there
            served = read_served_decisions(log, archive_folder(path))
            outcomes = read_outcomes(log, archive_folder(path))
    except EventLogError as error:
        raise PolicyEvaluationInputError(str(error)) from None
    rewarded: set[tuple[str, str, str | None]] = {
        (o.decision_id, o.kind.decision_type, o.arm_id) for o in outcomes if o.kind.is_reward
    }
    first: dict[tuple[str, str], ServedDecision] = {}
    for decision in served:
        first.setdefault((decision.decision_id, decision.decision_type), decision)
    rows = list(first.values())
    if not rows:
        raise PolicyEvaluationInputError(f"{path}: the event log has no served decisions")
    persona_ids = tuple(p for p, _ in rows[0].persona_mix)
    mixes = np.zeros((len(rows), len(persona_ids)))
    position = {p: k for k, p in enumerate(persona_ids)}
    for i, decision in enumerate(rows):
        for persona, weight in decision.persona_mix:
            if persona not in position:
                raise PolicyEvaluationInputError(
                    f"{path}: decision {decision.decision_id!r} has a mix over persona {persona!r}, "
                    f"the first decision's over {', '.join(persona_ids)}"
                )
            mixes[i, position[persona]] = weight
    frame = pl.DataFrame(
        {
            "decision_id": [d.decision_id for d in rows],
            "customer_id": [d.customer_id for d in rows],
            "timestamp": [d.timestamp for d in rows],
            "context": [d.context or context_of(d.timestamp) for d in rows],
            "decision_type": [d.decision_type for d in rows],
            "arm_id": [d.arm_id for d in rows],
            "propensity": [d.propensity for d in rows],
            "outcome": [
                float(
                    (d.decision_id, d.decision_type, d.arm_id) in rewarded
                    or (d.decision_id, d.decision_type, None) in rewarded
                )
                for d in rows
            ],
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    )
    return DecisionLog(frame, mixes, persona_ids, str(path), mix_source="event log")


def load_decisions(
    log: DecisionLog | Path,
    decision_type: str,
    artifact: DecisionInputs | None,
    since: dt.datetime | None = None,
    *,
    source: str = "artifact",
    declared: DeclaredArms | None = None,
) -> LoggedDecisions:
    """The decisions of one type (from ``since`` on) with the mixes and estimates the candidates use;
    ``source`` names where ``artifact``'s come from in the report, ``declared`` the arm set (else the
    artifact's arms, else the log's, with a warning)."""
    if decision_type not in DECISION_TYPES:
        raise PolicyEvaluationInputError(
            f"decision type must be one of {', '.join(DECISION_TYPES)}, got {decision_type!r}"
        )
    if isinstance(log, Path):
        log = read_decisions_file(log)
    frame, path = log.frame, log.source
    bad_context = ~frame["context"].is_in(list(CONTEXTS))
    if bad_context.any():
        row = int(np.flatnonzero(bad_context.to_numpy())[0])
        raise PolicyEvaluationInputError(
            f"{path}: row {row + 1}, column 'context': unknown context {frame['context'][row]!r}; "
            f"expected one of {', '.join(CONTEXTS)}"
        )
    keep = (frame["decision_type"] == decision_type).to_numpy()
    if since is not None:
        keep &= (frame["timestamp"] >= since).to_numpy()
    propensity = frame["propensity"].to_numpy()
    tiny = keep & (propensity < MIN_PROPENSITY)
    if tiny.any():
        row = int(np.flatnonzero(tiny)[0])
        value = float(propensity[row])
        why = "0 means the logging policy could not have chosen this arm"
        if value > 0:
            why = (
                f"{value:g} is below {MIN_PROPENSITY:g}, so this one decision would outweigh a billion others"
            )
        raise PolicyEvaluationInputError(
            f"{path}: row {row + 1}, column 'propensity': {why}; off-policy evaluation needs the "
            "probability it actually had"
        )
    rows = frame.filter(pl.Series(keep))
    if rows.height == 0:
        after = f" from {moment_text(since)} on" if since is not None else ""
        raise PolicyEvaluationInputError(f"{path}: no decisions of type {decision_type!r}{after}")

    estimates: ArmEstimates | None = None
    estimates_source = ""
    if artifact is not None:
        try:
            estimates = artifact.arm_estimates.get(decision_type)
        except ArmEstimateError as error:
            raise PolicyEvaluationInputError(str(error)) from None
        if estimates is not None:
            estimates_source = source

    mixes: NDArray[np.float64] | None = None
    persona_ids: tuple[str, ...] = ()
    mix_source = ""
    if log.mixes is not None:
        mixes = log.mixes[keep]
        persona_ids = log.persona_ids
        mix_source = log.mix_source
    elif artifact is not None:
        mixes, persona_ids = _artifact_mixes(artifact, rows)
        mix_source = source
    if estimates is not None and persona_ids and estimates.persona_ids != persona_ids:
        raise PolicyEvaluationInputError(
            f"the mixes are over personas {', '.join(persona_ids)}, the artifact's estimates over "
            f"{', '.join(estimates.persona_ids)}"
        )

    arm_set, warnings = _arm_set(rows, keep, path, decision_type, declared or DeclaredArms(), estimates)
    arm_ids = arm_set.ids
    positions = rows["position"].to_list() if arm_set.positions else None
    try:
        arm_index = arm_set.index(rows["arm_id"].to_list(), positions, (np.flatnonzero(keep) + 1).tolist())
        if estimates is not None and arm_set.positions:
            estimates = arm_set.expand(estimates)
    except ArmSetError as error:
        raise PolicyEvaluationInputError(f"{path}: {error}") from None
    unlogged = [arm_ids[a] for a in np.flatnonzero(np.bincount(arm_index, minlength=len(arm_ids)) == 0)]
    if unlogged:
        shown = ", ".join(unlogged[:5]) + (f" and {len(unlogged) - 5} more" if len(unlogged) > 5 else "")
        warnings.append(
            f"{len(unlogged)} of the {len(arm_ids)} arms never appear in the log ({shown}): no estimate "
            "sees their outcomes; IPS counts a policy's share of them as 0, SNIPS and DR extrapolate"
        )

    if estimates is None and mixes is not None:
        estimates = ArmEstimates.fit(
            mixes,
            arm_index,
            rows["outcome"].clip(0.0, 1.0).to_numpy(),
            len(arm_ids),
            arm_ids=arm_ids,
            persona_ids=persona_ids,
        )
        estimates_source = "log (in-sample)"
    return LoggedDecisions(
        rows,
        arm_ids,
        arm_index,
        mixes,
        persona_ids,
        mix_source,
        estimates,
        estimates_source,
        arm_set,
        tuple(warnings),
    )


def _arm_set(
    rows: pl.DataFrame,
    keep: NDArray[np.bool_],
    path: str,
    decision_type: str,
    declared: DeclaredArms,
    estimates: ArmEstimates | None,
) -> tuple[ArmSet, list[str]]:
    """The declared arm set (flag or table, else the artifact's arms), or the log's with a warning."""
    warnings: list[str] = []
    positions = rows["position"] if "position" in rows.columns else None
    has_positions = positions is not None and positions.is_not_null().any()
    if has_positions:
        assert positions is not None
        empty = positions.is_null().to_numpy()
        if empty.any():
            row = int(np.flatnonzero(keep)[np.flatnonzero(empty)[0]]) + 1
            raise PolicyEvaluationInputError(
                f"{path}: row {row}, column 'position': empty, while other {decision_type} decisions "
                "have a position; the arm is the pair arm_id x position, so every decision needs one"
            )
    elif declared.positions:
        raise FlagError("--positions", f"the {decision_type} decisions of {path} have no position column")
    logged_arms = rows["arm_id"].to_list()
    logged_positions = positions.to_list() if has_positions and positions is not None else None
    inferred = ArmSet.from_log(logged_arms, logged_positions)
    if declared.arm_ids is not None:
        arm_ids, source, arms_inferred = declared.arm_ids, declared.source, False
    elif estimates is not None:
        arm_ids, source, arms_inferred = estimates.arm_ids, f"the artifact's {decision_type} arms", False
    else:
        arm_ids, source, arms_inferred = inferred.arm_ids, inferred.source, True
        warnings.append(
            f"the {decision_type} arm set is inferred from the log ({len(arm_ids)} arms seen): uniform "
            "and epsilon-greedy spread over these only; declare the arms with --arm-table (the "
            f"{'offers' if decision_type == 'offer' else 'layouts'} table) or --arms"
        )
    if not has_positions:
        return ArmSet(arm_ids, (), source, inferred=arms_inferred), warnings
    if declared.positions is not None:
        slots, slots_inferred = declared.positions, False
    else:
        slots, slots_inferred = inferred.positions, True
        warnings.append(
            f"the positions are inferred from the log ({len(slots)} seen: {', '.join(slots)}); the arms "
            "are every arm in every position; declare the positions with --positions"
        )
    try:
        arm_set = ArmSet(arm_ids, slots, source, inferred=arms_inferred, positions_inferred=slots_inferred)
    except ArmSetError as error:
        raise PolicyEvaluationInputError(str(error)) from None
    return arm_set, warnings


def customer_folds(customer_ids: Sequence[str], n_folds: int) -> NDArray[np.int64]:
    """A stable fold per customer (CRC32 of the id), so a customer's decisions never straddle folds."""
    return np.array([zlib.crc32(c.encode("utf-8")) % n_folds for c in customer_ids], dtype=np.int64)


def cross_fitted_rewards(decisions: LoggedDecisions, n_folds: int = DEFAULT_FOLDS) -> NDArray[np.float64]:
    """(n, A) predicted reward of every arm for every decision, from a model that never saw its fold.

    With mixes: per persona x arm EM rates (outcomes clipped to [0, 1] for the fit, so revenue-like
    outcomes are modelled as conversion). Without: per (context, arm) rates. Either way each cell is
    shrunk towards the overall rate by an empirical-Bayes Beta prior fitted to the training folds'
    cells (engine/evaluation/rate_shrinkage.py): with rare outcomes a fixed Beta(1, 1) would predict
    1/(trials + 2) for every empty cell, an order of magnitude above a 0.4% conversion rate, and DR's
    interval would come out several times wider than IPS's.
    """
    rows = decisions.frame
    n, n_arms = rows.height, len(decisions.arm_ids)
    rewards = rows["outcome"].clip(0.0, 1.0).to_numpy()
    folds = customer_folds(rows["customer_id"].to_list(), n_folds)
    contexts = context_index(rows["context"].to_list())
    predictions = np.empty((n, n_arms))
    for fold in range(n_folds):
        test, train = folds == fold, folds != fold
        if not test.any():
            continue
        arms, outcomes = decisions.arm_index[train], rewards[train]
        if decisions.mixes is not None:
            mixes = decisions.mixes[train]
            # the prior is fitted on the soft persona x arm counts: each decision counts for its mix
            successes = np.zeros((mixes.shape[1], n_arms))
            trials = np.zeros((mixes.shape[1], n_arms))
            np.add.at(successes.T, arms, mixes * outcomes[:, None])
            np.add.at(trials.T, arms, mixes)
            prior = fit_beta_prior(successes, trials)
            model = ArmEstimates.fit(mixes, arms, outcomes, n_arms, prior=(prior.alpha, prior.beta))
            predictions[test] = decisions.mixes[test] @ model.mean()
        else:
            successes = np.zeros((len(CONTEXTS), n_arms))
            trials = np.zeros((len(CONTEXTS), n_arms))
            np.add.at(successes, (contexts[train], arms), outcomes)
            np.add.at(trials, (contexts[train], arms), 1.0)
            predictions[test] = fit_beta_prior(successes, trials).rates(successes, trials)[contexts[test]]
    return predictions


def reward_model_description(decisions: LoggedDecisions, n_folds: int) -> str:
    """What DR's reward model is, for the report: the cells, the shrinkage and the cross-fitting."""
    cells = "persona x arm (EM on the mixes)" if decisions.mixes is not None else "context x arm"
    return f"{cells} rates shrunk towards the overall rate (empirical Bayes), {n_folds}-fold cross-fitted"


def true_arm_rewards(truth: Path, decisions: LoggedDecisions, decision_type: str) -> NDArray[np.float64]:
    """(n, A) true expected reward: the planted mix in force at each decision @ the planted rates."""
    rates_path, mixes_path = truth / "response_rates.json", truth / "customer_mixes.parquet"
    for required in (rates_path, mixes_path):
        if not required.is_file():
            raise PolicyEvaluationInputError(f"{truth}: no {required.name}; not a synthetic shop's truth/")
    planted: dict[str, dict[str, float]] = json.loads(rates_path.read_text(encoding="utf-8"))[decision_type]
    personas = list(planted)
    try:
        base = decisions.arm_set.base_arm if decisions.arm_set is not None else str
        rho = np.array([[planted[p][base(arm)] for arm in decisions.arm_ids] for p in personas])
    except KeyError as error:
        raise PolicyEvaluationInputError(f"{rates_path}: no planted rate for arm {error}") from None
    truth_frame = pl.read_parquet(mixes_path)
    rows = decisions.frame.join(
        truth_frame.with_columns(pl.col("drift_date").cast(pl.Datetime("us", "UTC"))),
        on="customer_id",
        how="left",
    )
    if rows["hidden_segment"].null_count():
        missing = rows.filter(pl.col("hidden_segment").is_null())["customer_id"][0]
        raise PolicyEvaluationInputError(f"{mixes_path}: no planted mix for customer {missing!r}")
    drifted = (rows["drift_date"].is_not_null() & (rows["timestamp"] >= rows["drift_date"])).to_numpy()
    contexts = rows["context"].to_numpy()
    mix = np.empty((rows.height, len(personas)))
    for phase, prefix in ((False, ""), (True, "post_drift_")):
        for context in CONTEXTS:
            select = (drifted == phase) & (contexts == context)
            if select.any():
                columns = [f"{prefix}{context}__{p}" for p in personas]
                mix[select] = rows.select(columns).to_numpy()[select]
    return mix @ rho


@dataclass(frozen=True)
class PolicyResult:
    policy: CandidatePolicy
    evaluation: PolicyEvaluation
    true_value: float | None


def evaluate_policies(
    decisions: LoggedDecisions,
    policies: Sequence[CandidatePolicy],
    *,
    level: float = DEFAULT_LEVEL,
    n_folds: int = DEFAULT_FOLDS,
    truth: Path | None = None,
    decision_type: str = "offer",
    seed: int = 0,
) -> list[PolicyResult]:
    rows = decisions.frame
    rewards = rows["outcome"].to_numpy().astype(np.float64)
    propensity = rows["propensity"].to_numpy().astype(np.float64)
    reward_model = cross_fitted_rewards(decisions, n_folds)
    true_rewards = true_arm_rewards(truth, decisions, decision_type) if truth is not None else None
    results = []
    for policy in policies:
        probabilities = policy.probabilities(
            decisions.arm_ids,
            decisions.mixes,
            decisions.estimates,
            np.random.default_rng(seed),
            n=rows.height,
        )
        evaluation = evaluate_policy(
            rewards, propensity, probabilities, decisions.arm_index, reward_model, level=level
        )
        true_value = (
            float(np.mean(np.sum(probabilities * true_rewards, axis=1))) if true_rewards is not None else None
        )
        results.append(PolicyResult(policy, evaluation, true_value))
    return results


def results_json(
    results: Sequence[PolicyResult], decisions: LoggedDecisions, decision_type: str
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "decision_type": decision_type,
        "decisions": decisions.frame.height,
        "arms": list(decisions.arm_ids),
        "arm_set_source": decisions.arm_set.source if decisions.arm_set is not None else None,
        "positions": list(decisions.arm_set.positions) if decisions.arm_set is not None else [],
        "warnings": list(decisions.warnings),
        "mix_source": decisions.mix_source or None,
        "estimates_source": decisions.estimates_source or None,
        "policies": [],
    }
    covered = total = 0
    for result in results:
        entry: dict[str, Any] = {
            "policy": result.policy.spec,
            "effective_sample_size": result.evaluation.effective_sample_size,
            "mean_weight": result.evaluation.mean_weight,
            "true_value": result.true_value,
            "estimates": [],
        }
        for estimate in result.evaluation.estimates:
            item: dict[str, Any] = estimate.as_json()
            if result.true_value is not None and np.isfinite(estimate.value):
                item["error"] = estimate.value - result.true_value
                item["covers_truth"] = estimate.covers(result.true_value)
                covered += int(item["covers_truth"])
                total += 1
            entry["estimates"].append(item)
        out["policies"].append(entry)
    if total:
        out["coverage"] = {"covered": covered, "intervals": total, "share": covered / total}
    return out


def run(
    decisions_path: Path | None,
    policy_specs: Sequence[str],
    *,
    decision_type: str = "offer",
    artifact: Path | None = None,
    truth: Path | None = None,
    level: float = DEFAULT_LEVEL,
    n_folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    since: dt.datetime | None = None,
    all_decisions: bool = False,
    event_log: Path | None = None,
    arms: Sequence[str] | None = None,
    arm_table: Path | None = None,
    positions: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Parse the policies, load the log and evaluate; every input problem is a PolicyEvaluationInputError.

    The evaluated decisions start at ``since``, else (with an artifact, unless ``all_decisions``) at
    the artifact's test period.
    """
    try:
        policies = [CandidatePolicy.parse(spec) for spec in policy_specs]
        loaded = load_artifact(artifact) if artifact is not None else None
        if (decisions_path is None) == (event_log is None):
            raise PolicyEvaluationInputError("give exactly one of a decisions file and an event log")
        log = read_event_log(event_log) if event_log is not None else read_decisions_file(decisions_path)  # type: ignore[arg-type]
        inputs: DecisionInputs | None = loaded
        source = "artifact"
        served = ServedModels.of(loaded.manifest) if loaded is not None else None
        if since is None and loaded is not None and not all_decisions:
            since = artifact_test_start(loaded)
            if served is not None and served.refit_on_all_events:
                since, inputs, source = _unseen_by_refit(loaded, served, log, decision_type)
        elif _in_sample(served, since):  # asked for explicitly: say what it means
            assert served is not None and served.data_until is not None
            source = f"artifact (in-sample: refit on every decision up to {served.data_until:%Y-%m-%d})"
        declared = declared_arms(decision_type, arms=arms, arm_table=arm_table, positions=positions)
        decisions = load_decisions(log, decision_type, inputs, since, source=source, declared=declared)
        results = evaluate_policies(
            decisions,
            policies,
            level=level,
            n_folds=n_folds,
            truth=truth,
            decision_type=decision_type,
            seed=seed,
        )
    except (
        CandidatePolicyError,
        OffPolicyEvaluationError,
        ArmEstimateError,
        ArmSetError,
        ArtifactError,
    ) as error:
        raise PolicyEvaluationInputError(str(error)) from None
    report = results_json(results, decisions, decision_type)
    report["since"] = since.isoformat() if since is not None else None
    report["reward_model"] = reward_model_description(decisions, n_folds)
    return report


def _in_sample(served: ServedModels | None, since: dt.datetime | None) -> bool:
    """Whether decisions from ``since`` on include some the artifact's refit estimates were fitted on."""
    if served is None or not served.refit_on_all_events or served.data_until is None:
        return False
    return since is None or since <= served.data_until


def _unseen_by_refit(
    artifact: LoadedArtifact, served: ServedModels, log: DecisionLog, decision_type: str
) -> tuple[dt.datetime | None, DecisionInputs, str]:
    """Where to start, and with what, for an artifact refit on every decision: see the module docstring."""
    until = served.data_until
    frame = log.frame
    if until is not None:
        after = until + dt.timedelta(microseconds=1)
        later = (frame["decision_type"] == decision_type) & (frame["timestamp"] >= after)
        if later.any():
            return after, artifact, "artifact"
    seen = moment_text(until) if until else "its end"
    reason = (
        f"the artifact's estimates were refit on every decision up to {seen} and {log.source} has no "
        f"{decision_type} decision after that"
    )
    return artifact_test_start(artifact), split_decision_inputs(artifact, reason), SPLIT_SOURCE
