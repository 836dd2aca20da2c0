"""Served models learn from everything: ``train`` evaluates on the split, then refits on all events.

One small shop with a customer who appears only in the test period, trained twice: with the default
refit and with ``[output] refit_on_all_events = false`` (the artifact as it was before the refit).
The models are the deterministic kinds, so the two runs' split figures and evaluate's must agree to
the last digit.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from cli.main import main
from engine.artifact import ArtifactError
from engine.artifact.contents import LoadedArtifact, load_artifact
from engine.personalizer import Personalizer
from training.batch_recommend import batch_recommend
from training.config import parse_config
from training.evaluate_job import ARTIFACT_MODELS, SPLIT_REFIT, run_evaluation
from training.policy_evaluation_job import SPLIT_SOURCE
from training.policy_evaluation_job import run as evaluate_policies
from training.prepared_data import prepare
from training.split import SplitError, split_events
from training.synthetic_shop import ShopConfig, generate_shop
from training.train_job import fit_models, run_training

MODELS = {"popularity": {}, "persona_popularity": {}, "als": {"factors": 16, "iterations": 5}}
SPLIT: dict[str, Any] = {"test_days": 28, "cold_start_share": 0.15}
FRESH = "fresh-tech-shopper"  # first seen 10 days before the end: only in the test period
TECH = ("computers", "phones")  # what FRESH engaged with
TECH_LIKE = (*TECH, "electronics", "smart_home")  # what a tech-savvy shopper's list should be made of
STAGES = ("prepare", "fit_models", "evaluation", "persona_accuracy", "refit", "decisions")


@pytest.fixture(scope="module")
def shop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small synthetic shop plus FRESH: views of computers and phones, three of them bought."""
    out = tmp_path_factory.mktemp("refit-shop")
    generate_shop(out, ShopConfig(customers=600, items=300, events=24_000, seed=5))
    events = pl.read_parquet(out / "events.parquet")
    items = pl.read_parquet(out / "items.parquet")
    tech = items.filter(pl.col("category").is_in(TECH))["item_id"].to_list()[:12]
    last = events["timestamp"].max()
    assert isinstance(last, dt.datetime)
    fresh = pl.DataFrame(
        {
            "event_id": [f"fresh-{i}" for i in range(len(tech))],
            "customer_id": [FRESH] * len(tech),
            "item_id": tech,
            "event_type": ["purchase" if i < 3 else "view" for i in range(len(tech))],
            "timestamp": [last - dt.timedelta(days=10, hours=i) for i in range(len(tech))],
        }
    ).with_columns(pl.col("timestamp").dt.cast_time_unit("us"))
    pl.concat([events, fresh], how="diagonal_relaxed").write_parquet(out / "events.parquet")
    return out


def _train(shop_dir: Path, root: Path, *, refit: bool | None) -> Path:
    output: dict[str, Any] = {"root": str(root)}
    if refit is not None:
        output["refit_on_all_events"] = refit
    document = {"data": {"path": str(shop_dir)}, "split": SPLIT, "models": MODELS, "output": output}
    config = parse_config(document)
    return run_training(config, show_progress=False).artifact_path


@pytest.fixture(scope="module")
def refit(shop_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedArtifact:
    return load_artifact(_train(shop_dir, tmp_path_factory.mktemp("refit"), refit=None))  # the default


@pytest.fixture(scope="module")
def split_only(shop_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedArtifact:
    return load_artifact(_train(shop_dir, tmp_path_factory.mktemp("split-only"), refit=False))


def _fresh_items(shop_dir: Path, event_type: str | None = None) -> set[str]:
    events = pl.read_parquet(shop_dir / "events.parquet").filter(pl.col("customer_id") == FRESH)
    if event_type is not None:
        events = events.filter(pl.col("event_type") == event_type)
    return set(events["item_id"].to_list())


def test_the_served_model_knows_a_customer_seen_only_in_the_test_period(
    refit: LoadedArtifact, split_only: LoadedArtifact, shop_dir: Path
) -> None:
    served = Personalizer(refit, "als")
    known = served.recommend(FRESH, 10)
    assert not known.cold_start and FRESH in served.model_customers
    assert known.mix.dominant == "tech_savvy"  # their mix comes from their test-period events
    assert int(refit.n_events[refit.customers.index(FRESH)]) == len(_fresh_items(shop_dir))
    categories = [item.category for item in known.items]
    assert not {item.item_id for item in known.items} & _fresh_items(shop_dir)  # their history is left out
    assert sum(c in TECH_LIKE for c in categories) >= 6, categories
    # Before the refit the served artifact had never heard of them.
    stranger = Personalizer(split_only, "als").recommend(FRESH, 10)
    assert stranger.cold_start and FRESH not in split_only.customers
    assert sum(item.category in TECH_LIKE for item in stranger.items) <= 3


def test_batch_recommend_still_leaves_out_what_they_bought(refit: LoadedArtifact, shop_dir: Path) -> None:
    out = shop_dir.parent / "fresh-top20.parquet"
    batch_recommend(Personalizer(refit, "als"), out, customer_ids=[FRESH], k=20)
    listed = set(pl.read_parquet(out)["item_id"].to_list())
    assert len(listed) == 20
    assert not listed & _fresh_items(shop_dir, "purchase")


def test_the_cold_start_hold_out_is_known_to_the_served_models(
    refit: LoadedArtifact, split_only: LoadedArtifact, shop_dir: Path
) -> None:
    events = pl.read_parquet(shop_dir / "events.parquet")
    split = split_events(events, test_days=28, cold_start_share=0.15, seed=13)  # the config's
    cold = set(split.cold_customers)
    assert len(cold) > 50
    assert cold <= set(refit.model_customers.ids.tolist())
    assert not cold & set(split_only.model_customers.ids.tolist())
    assert len(refit.model_customers) == len(refit.customers) == 601


def test_switched_off_the_artifact_serves_the_models_fitted_on_the_split(
    split_only: LoadedArtifact, refit: LoadedArtifact
) -> None:
    config = parse_config(split_only.manifest["config"])
    assert not config.output.refit_on_all_events
    prepared = prepare(config)
    assert split_only.model_customers.ids.tolist() == list(prepared.split.warm_customers)
    assert abs(split_only.history - prepared.history).nnz == 0
    models, _ = fit_models(prepared, config, show_progress=False)
    stored, fitted = split_only.models["als"].item_vectors(), models["als"].item_vectors()
    assert stored is not None and fitted is not None and np.array_equal(stored, fitted)
    served = split_only.manifest["served_models"]
    assert served["refit_on_all_events"] is False
    assert served["events"] == prepared.split.train_events.height
    assert served["model_customers"] == len(prepared.model_customers)
    assert "refit" not in [stage["stage"] for stage in split_only.manifest["stages"]]
    # The refit's history is every event: more rows and more engagement than the split's.
    assert refit.history.nnz > split_only.history.nnz


def test_manifest_records_the_refit_and_keeps_the_split_figures(
    refit: LoadedArtifact, split_only: LoadedArtifact, shop_dir: Path
) -> None:
    manifest = refit.manifest
    served = manifest["served_models"]
    events = pl.read_parquet(shop_dir / "events.parquet")
    decisions = pl.read_parquet(shop_dir / "decisions.parquet")
    assert served["refit_on_all_events"] is True
    assert served["events"] == events.height
    assert served["customers"] == len(refit.customers)
    assert served["model_customers"] == len(refit.model_customers)
    assert served["decisions"] == decisions.height > split_only.manifest["served_models"]["decisions"]
    assert set(served["fit_seconds"]) == set(MODELS) and served["seconds"] > 0
    newest = max(events["timestamp"].max(), decisions["timestamp"].max())  # type: ignore[type-var]
    assert dt.datetime.fromisoformat(served["data_until"]) == newest
    assert 0 <= served["persona_accuracy"]["mean_tv"] < 0.5
    assert [stage["stage"] for stage in manifest["stages"]] == list(STAGES)
    # The evaluation is the split's, whatever is served: the same figures as the switched-off run.
    assert manifest["metrics"] == split_only.manifest["metrics"]
    assert manifest["persona_accuracy"] == pytest.approx(split_only.manifest["persona_accuracy"], rel=1e-9)
    assert manifest["summary"]["train_events"] == split_only.manifest["served_models"]["events"]


def test_evaluate_scores_the_split_models_never_the_refit_ones(
    refit: LoadedArtifact, split_only: LoadedArtifact
) -> None:
    report = run_evaluation(refit.path)
    assert report.models_scored == SPLIT_REFIT and report.served_models.refit_on_all_events
    assert report.matches_manifest == dict.fromkeys(MODELS, True)
    stored = {(m["model"], m["segment"]): m for m in refit.manifest["metrics"]}
    assert {(r.model, r.segment) for r in report.results} == set(stored)
    for result in report.results:
        assert result.to_dict() == stored[(result.model, result.segment)]
    document = report.to_dict()  # what --json prints
    assert document["models_scored"] == SPLIT_REFIT and document["served_models_refit_on_all_events"]
    own = run_evaluation(split_only.path)
    assert own.models_scored == ARTIFACT_MODELS and all(own.matches_manifest.values())


def test_evaluate_refuses_to_score_the_artifacts_models_on_data_that_splits_into_other_customers(
    split_only: LoadedArtifact, shop_dir: Path, tmp_path: Path
) -> None:
    """One customer's events under another id made the artifact's ALS fail inside the model ("user_index
    274 ... is outside the 274 customers it was fitted on"; fuzz pass): refused, naming the difference."""
    other = tmp_path / "other-shop"
    shutil.copytree(shop_dir, other, ignore=shutil.ignore_patterns("truth"))
    events = pl.read_parquet(other / "events.parquet")
    renamed = split_only.model_customers.ids.tolist()[0]
    events.with_columns(pl.col("customer_id").replace(renamed, "c_nope")).write_parquet(
        other / "events.parquet"
    )
    with pytest.raises(ArtifactError, match="its models were fitted on other customers than the split of"):
        run_evaluation(split_only.path, data_path=other)


def _with_customers(shop_dir: Path, tmp_path: Path, customers: pl.DataFrame | None) -> Path:
    """A copy of the shop whose customers table is ``customers`` as CSV (None: no customers table)."""
    other = tmp_path / "other-customers"
    shutil.copytree(shop_dir, other, ignore=shutil.ignore_patterns("truth", "customers.parquet"))
    if customers is not None:
        customers.write_csv(other / "customers.csv")
    return other


def test_a_customers_table_with_a_header_but_no_rows_means_no_demographics(
    refit: LoadedArtifact, split_only: LoadedArtifact, shop_dir: Path, tmp_path: Path
) -> None:
    """The customers table is optional: a header without rows is read as no demographics, like no file.
    Evaluate's refit of the split's models then works; the artifact's own models, fitted on demographics,
    failed inside the model ("als model: demographics has 0 columns, the model knows 15") and are
    refused, naming the customers file."""
    header_only = pl.read_parquet(shop_dir / "customers.parquet").head(0)
    emptied = _with_customers(shop_dir, tmp_path, header_only)
    assert (emptied / "customers.csv").read_text(encoding="utf-8").count("\n") == 1
    prepared = prepare(parse_config(refit.manifest["config"]), data_path=emptied)
    assert len(prepared.demographic_space) == 0 and len(refit.demographic_space) > 0
    assert run_evaluation(refit.path, data_path=emptied).models_scored == SPLIT_REFIT
    with pytest.raises(ArtifactError) as refused:
        run_evaluation(split_only.path, data_path=emptied)
    assert (
        f"its models were fitted on {len(split_only.demographic_space)} demographic features from the "
        f"customers table, while {emptied / 'customers.csv'} has a header but no data rows (no demographics)"
    ) in str(refused.value)


def test_evaluate_refuses_the_artifacts_models_on_customers_whose_demographic_values_changed(
    split_only: LoadedArtifact, shop_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A region renamed keeps the number of demographic features but shifts what each column means;
    the artifact's models were scored on it without a word. Refused through the CLI (exit 2)."""
    customers = pl.read_parquet(shop_dir / "customers.parquet")
    first = sorted(customers["region"].drop_nulls().unique().to_list())[0]
    renamed = customers.with_columns(pl.col("region").replace(first, "zz-renamed"))
    other = _with_customers(shop_dir, tmp_path, renamed)
    args = ["evaluate", "--artifact", str(split_only.path), "--data", str(other), "--no-progress"]
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"while {other / 'customers.csv'} gives" in err
    assert f"(new: 'region=zz-renamed'; missing: 'region={first}')" in err
    assert "Traceback" not in err


def test_a_far_future_timestamp_on_a_repeat_view_leaves_nothing_to_evaluate_and_is_refused(
    split_only: LoadedArtifact, shop_dir: Path, tmp_path: Path
) -> None:
    """A typo (2062) on a customer's repeat view made that one event the test period: train wrote an
    artifact with no evaluation and evaluate said every figure reproduced (fuzz pass of the CLI)."""
    typo = tmp_path / "typo-shop"
    shutil.copytree(shop_dir, typo, ignore=shutil.ignore_patterns("truth"))
    events = pl.read_parquet(typo / "events.parquet").with_row_index("row")
    repeat = events.filter(pl.struct("customer_id", "item_id").is_duplicated())["row"].max()
    far = dt.datetime(2062, 3, 1, tzinfo=dt.UTC)
    events = events.with_columns(
        pl.when(pl.col("row") == repeat).then(pl.lit(far)).otherwise(pl.col("timestamp")).alias("timestamp")
    )
    events.drop("row").write_parquet(typo / "events.parquet")
    config = parse_config(
        {
            "data": {"path": str(typo)},
            "split": SPLIT,
            "models": MODELS,
            "output": {"root": str(tmp_path / "a")},
        }
    )
    with pytest.raises(
        SplitError, match=r"nothing to evaluate.*Is the latest timestamp, 2062-03-01T00:00:00\+00:00"
    ):
        run_training(config, show_progress=False)
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
    with pytest.raises(SplitError, match="nothing to evaluate"):
        run_evaluation(split_only.path, data_path=typo)


def test_evaluate_cli_says_which_models_it_scored(
    refit: LoadedArtifact, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "--artifact", str(refit.path), "--no-progress"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "refit on all 24,516 events and 601 customers" in text
    assert "split models fitted again" in text and "every figure reproduces train's" in text


def test_evaluate_cli_names_the_config_key_when_a_model_does_not_reproduce(
    refit: LoadedArtifact, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    import training.evaluate_job

    scored = run_evaluation(refit.path, show_progress=False)
    first = next(iter(scored.matches_manifest))
    differing = dataclasses.replace(scored, matches_manifest={**scored.matches_manifest, first: False})
    monkeypatch.setattr(training.evaluate_job, "run_evaluation", lambda *args, **kwargs: differing)
    assert main(["evaluate", "--artifact", str(refit.path), "--no-progress"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"differs from them: {first} (train ran without [training] deterministic = true:" in text


def test_evaluate_policy_uses_the_split_estimates_on_the_training_log(
    refit: LoadedArtifact, split_only: LoadedArtifact, shop_dir: Path, tmp_path: Path
) -> None:
    log = shop_dir / "decisions.parquet"
    policies = ["greedy", "uniform"]
    rebuilt = evaluate_policies(log, policies, artifact=refit.path)
    assert rebuilt["estimates_source"] == rebuilt["mix_source"] == SPLIT_SOURCE
    as_trained = evaluate_policies(log, policies, artifact=split_only.path)
    assert as_trained["estimates_source"] == "artifact"
    assert rebuilt["since"] == as_trained["since"] == refit.manifest["summary"]["test_start"]
    assert rebuilt["policies"] == as_trained["policies"]  # the split's estimates, fitted again exactly
    # Asked for explicitly, the refit estimates score decisions they were fitted on, and say so.
    explicit = evaluate_policies(
        log, policies, artifact=refit.path, since=dt.datetime.fromisoformat(rebuilt["since"])
    )
    assert explicit["estimates_source"].startswith("artifact (in-sample: refit on every decision up to")
    # A log of later decisions (the server's, after training) is evaluated with the served estimates.
    later = pl.read_parquet(log).with_columns(pl.col("timestamp") + dt.timedelta(days=60))
    later.write_parquet(tmp_path / "later.parquet")
    after = evaluate_policies(tmp_path / "later.parquet", policies, artifact=refit.path)
    assert after["estimates_source"] == "artifact"
    assert dt.datetime.fromisoformat(after["since"]) > dt.datetime.fromisoformat(
        refit.manifest["served_models"]["data_until"]
    )


def test_evaluate_policy_without_the_training_data_says_what_to_do(
    refit: LoadedArtifact, shop_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / refit.path.name  # an artifact is served under its own version name
    shutil.copytree(refit.path, copy)
    manifest_path = copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["config"]["data"]["path"] = str(tmp_path / "gone")
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    (copy / "manifest.sha256").unlink()  # as an artifact written before manifest digests
    args = ["evaluate-policy", "--decisions", str(shop_dir / "decisions.parquet"), "--artifact", str(copy)]
    assert main([*args, "--policy", "greedy"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "refit on every decision" in err and "gone" in err and "--since" in err
