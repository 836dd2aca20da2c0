"""End to end: generate a small shop, train every model kind, write the artifact, read it back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cli.main import main
from engine.artifact import ArtifactError, open_artifact
from engine.artifact.contents import load_artifact
from engine.models.registry import create_model
from engine.personalizer import Personalizer
from engine.personas.steering import DEFAULT_STEERING
from tests.engine.models.checkerboard import SMALL_CONFIGS, make_checkerboard
from training.config import parse_config
from training.evaluate_job import run_evaluation
from training.synthetic_shop import ShopConfig, generate_shop
from training.train_job import TrainResult, library_fit_seconds, run_training

FAST_MODELS = {
    "popularity": {},
    "persona_popularity": {},
    "als": {"factors": 16, "iterations": 5},
    "bpr": {"factors": 16, "iterations": 20},
    "lightfm_hybrid": {"no_components": 8, "epochs": 3},
}
# What the manifest records the cost of (the artifact write itself is reported by ``--json`` only).
STAGES = ("prepare", "fit_models", "evaluation", "persona_accuracy", "refit", "decisions")
PREPARE_PARTS = (
    "item_features",
    "customer_features",
    "event_indices",
    "persona_inference",
    "demographic_prior",
    "interaction_matrices",
)
DETERMINISTIC = ("popularity", "persona_popularity", "als")  # BPR and LightFM train Hogwild


@pytest.fixture(scope="module")
def shop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shop")
    generate_shop(out, ShopConfig(customers=600, items=300, events=24_000, seed=5))
    return out


@pytest.fixture(scope="module")
def trained(shop_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    root = tmp_path_factory.mktemp("artifacts")
    config = parse_config(
        {
            "data": {"path": str(shop_dir)},
            "split": {"test_days": 28, "cold_start_share": 0.15},
            "models": FAST_MODELS,
            "output": {"root": str(root)},
        }
    )
    return run_training(config, show_progress=False)


def test_artifact_is_complete_verified_and_pickle_free(trained: TrainResult) -> None:
    artifact = open_artifact(trained.artifact_path.parent / "latest")
    assert artifact.version == trained.version
    manifest = artifact.manifest
    assert set(manifest["models"]) == set(FAST_MODELS)
    for key in ("data_fingerprint", "config", "metrics", "library_versions", "persona_accuracy"):
        assert manifest[key], key
    assert [stage["stage"] for stage in manifest["stages"]] == list(STAGES)
    for npy in artifact.path.rglob("*.npy"):
        np.load(npy, allow_pickle=False)
    assert not [p for p in artifact.path.rglob("*") if p.suffix in {".pkl", ".pickle", ".joblib"}]


def test_tampered_artifact_is_refused_naming_the_file(trained: TrainResult, tmp_path: Path) -> None:
    copy = tmp_path / trained.version
    shutil.copytree(trained.artifact_path, copy)
    target = copy / "customers" / "mix_overall.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"mix_overall\.npy"):
        open_artifact(copy)


def test_evaluation_covers_segments_and_reproduces_the_manifest(trained: TrainResult) -> None:
    segments = {r.segment for r in trained.results}
    assert {"all", "cold_start"} <= segments
    assert any(s.startswith("persona:") for s in segments)
    report = run_evaluation(trained.artifact_path)  # refit artifact: the split's models, fitted again
    assert report.data_matches_artifact and not any("is not the data artifact" in w for w in report.warnings)
    stored = {
        (m["model"], m["segment"]): m["ndcg"]
        for m in open_artifact(trained.artifact_path).manifest["metrics"]
    }
    assert {(r.model, r.segment) for r in report.results} == set(stored)
    for result in report.results:
        expected = stored[(result.model, result.segment)]
        if result.model in DETERMINISTIC:
            assert result.metrics["ndcg"] == pytest.approx(expected, rel=1e-9)
            assert report.matches_manifest[result.model]
        else:
            assert result.metrics["ndcg"] == pytest.approx(expected, abs=0.05)
    manifest = open_artifact(trained.artifact_path).manifest
    document = report.to_dict()
    for key in ("context_evaluation", "steering_evaluation"):  # deterministic models reproduce train's
        again = sorted(
            (r for r in document[key] if r["model"] in DETERMINISTIC),
            key=lambda r: json.dumps(r, sort_keys=True),
        )
        assert again and again == sorted(
            (r for r in manifest[key] if r["model"] in DETERMINISTIC), key=json.dumps
        )


def test_a_requested_mix_steers_a_known_customer_by_the_setting(trained: TrainResult) -> None:
    personalizer = Personalizer.from_path(trained.artifact_path, "als")
    assert personalizer.steering == DEFAULT_STEERING  # the artifact's [personas] steering
    customer = str(personalizer.model_customers.ids[0])
    own = personalizer.mixes.stored(personalizer.mixes.row_of(customer))
    other = int(np.argmin(own.weights))
    pure = {persona: float(i == other) for i, persona in enumerate(personalizer.catalog.ids)}

    def listed(**kwargs: object) -> list[str]:
        return [item.item_id for item in personalizer.recommend(customer, 10, **kwargs).items]  # type: ignore[arg-type]

    assert listed(mix=own) == listed()  # the customer's own mix, requested: their own list
    assert listed(mix=pure, steering=0.0) != listed(mix=pure, steering=1.0)
    unsteered = Personalizer.from_path(trained.artifact_path, "als")
    unsteered_zero = Personalizer(unsteered.artifact, "als", steering=0.0)
    assert [i.item_id for i in unsteered_zero.recommend(customer, 10, mix=pure).items] == listed(
        mix=pure, steering=0.0
    )
    with pytest.raises(ValueError, match="steering"):
        personalizer.recommend(customer, 10, mix=pure, steering=1.5)


def test_persona_accuracy_and_decision_quality_are_reported(trained: TrainResult) -> None:
    assert trained.persona_accuracy is not None
    assert 0.0 <= trained.persona_accuracy["mean_tv"] < 0.5
    assert set(trained.decision_quality) == {"offer", "layout"}


def test_personalizer_serves_known_unknown_and_given_mix(trained: TrainResult) -> None:
    personalizer = Personalizer.from_path(trained.artifact_path)
    customer = str(personalizer.model_customers.ids[0])
    known = personalizer.recommend(customer, 10)
    assert not known.cold_start and len(known.items) == 10
    seen = set(
        personalizer.items.to_external(personalizer.history[personalizer.customers.index(customer)].indices)
    )
    assert not seen & {item.item_id for item in known.items}
    unknown = personalizer.recommend("nobody-knows-me", 10)
    assert unknown.cold_start and len(unknown.items) == 10
    bargain = personalizer.recommend("nobody-knows-me", 10, mix={"bargain_hunter": 1.0})
    luxury = personalizer.recommend("nobody-knows-me", 10, mix={"luxury_enthusiast": 1.0})
    assert np.mean([i.price for i in bargain.items]) < np.mean([i.price for i in luxury.items])


def test_summary_shows_each_customer_what_recommend_shows_and_says_what_it_left_out(
    trained: TrainResult, capsys: pytest.CaptureFixture[str]
) -> None:
    artifact = str(trained.artifact_path)

    def summary_lists(*flags: str) -> dict[str, list[str]]:
        assert main(["summary", "--artifact", artifact, "--customers", "3", "--json", *flags]) == 0
        document = json.loads(capsys.readouterr().out)
        assert document["excluded"] == (flags[-1] if flags else "purchased")
        return {c["customer_id"]: [i["item_id"] for i in c["items"]] for c in document["customers"]}

    def recommended(customer: str, exclude: str) -> list[str]:
        argv = ["recommend", "--artifact", artifact, "--customer", customer, "-k", "5", "--exclude", exclude]
        assert main([*argv, "--json"]) == 0
        return [i["item_id"] for i in json.loads(capsys.readouterr().out)["items"]]

    bought, seen = summary_lists(), summary_lists("--exclude", "seen")
    known = [c for c in bought if c.startswith("c")]
    assert len(known) == 3 and "visitor-never-seen" in bought
    for customer in [*known, "visitor-never-seen"]:
        assert bought[customer] == recommended(customer, "purchased")
        assert seen[customer] == recommended(customer, "seen")
    assert any(bought[c] != seen[c] for c in known)  # the rule matters for these customers
    assert main(["summary", "--artifact", artifact, "--customers", "1"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "left out: items the customer bought (--exclude purchased)" in out


def test_cli_train_json_and_summary(
    shop_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[data]\npath = "{shop_dir}"\n[models.popularity]\n[models.persona_popularity]\n'
        f'[output]\nroot = "{tmp_path / "artifacts"}"\n',
        encoding="utf-8",
    )
    assert main(["train", "--config", str(config), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert {m["model"] for m in document["metrics"]} == {"popularity", "persona_popularity"}
    served = document["served_models"]
    assert served["refit_on_all_events"]
    assert served["events"] == pl.read_parquet(shop_dir / "events.parquet").height
    # counting models wrap no library: none of their fit time is a library's
    assert document["summary"]["library_fit_seconds"] == {} and served["library_fit_seconds"] == {}
    stages = document["summary"]["stages"]
    assert 0 < document["summary"]["persona_inference_seconds"] < stages[0]["seconds"]
    assert [s["stage"] for s in stages] == [*STAGES, "write_artifact"]
    assert all(s["seconds"] >= 0 and s["cpu_seconds"] >= 0 and s["peak_rss_mb"] > 0 for s in stages)
    parts = {s["stage"]: [p["stage"] for p in s.get("parts", [])] for s in stages}
    assert parts["prepare"] == ["load", "split", *PREPARE_PARTS]
    # Explained once, from the data the served models see: the refit's prepare, not the split's.
    refit_parts = [*PREPARE_PARTS[:4], "explanations", *PREPARE_PARTS[4:]]
    assert parts["refit"] == ["split", *refit_parts, "fit_models", "persona_accuracy"]
    assert parts["evaluation"] == [
        "segments",
        "models",
        "context_mixes",
        "drift_mixes",
        "session_fold_in",
        "steering",
    ]
    assert parts["write_artifact"] == ["drift_calibration", "purchases_matrix", "write_contents", "commit"]
    prepare = stages[0]
    assert sum(p["seconds"] for p in prepare["parts"]) <= prepare["seconds"]
    assert main(["summary", "--artifact", str(tmp_path / "artifacts" / "latest"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    requests = [c["request"] for c in summary["customers"]]
    assert "unknown visitor" in requests and any(r.startswith("given mix") for r in requests)
    assert (
        main(
            [
                "recommend",
                "--artifact",
                str(tmp_path / "artifacts" / "latest"),
                "--customer",
                "x",
                "--mix",
                "Bargain Hunter=2,tech_savvy=2",
                "--json",
            ]
        )
        == 0
    )
    rec = json.loads(capsys.readouterr().out)
    assert rec["persona_mix"]["bargain_hunter"] == pytest.approx(0.5) and rec["cold_start"]


def test_cli_train_says_what_the_served_models_learned_from(
    shop_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = pl.read_parquet(shop_dir / "events.parquet").height
    config = tmp_path / "config.toml"
    models = "[models.popularity]\n[models.persona_popularity]\n"
    config.write_text(f'[data]\npath = "{shop_dir}"\n{models}', encoding="utf-8")
    assert main(["train", "--config", str(config), "--output", str(tmp_path / "a"), "--no-progress"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"served models: refit on all {events:,} events and 600 customers" in text
    assert "(the evaluation above is of the same models fitted on the split)" in text
    assert "time by stage (seconds)" in text and " refit " in text
    calibrated = load_artifact(tmp_path / "a" / "latest").drift_calibration
    assert calibrated is not None and calibrated.customers == 600
    assert (
        f"live drift threshold: {calibrated.threshold:.2f} nats, calibrated to 5% false alarms on "
        f"{calibrated.tested_customers:,} customers' shuffled histories" in text
    )
    # Switched off in the config; --output must not switch it back on.
    config.write_text(
        f'[data]\npath = "{shop_dir}"\n{models}[output]\nrefit_on_all_events = false\n', encoding="utf-8"
    )
    assert main(["train", "--config", str(config), "--output", str(tmp_path / "b"), "--no-progress"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "served models: fitted on the split's" in text and "refit_on_all_events = false" in text
    # too few customers with a history longer than the test's baseline lag: none calibrated, and said
    config.write_text(
        f'[data]\npath = "{shop_dir}"\n{models}[drift]\ncalibration_customers = 150\n', encoding="utf-8"
    )
    assert main(["train", "--config", str(config), "--output", str(tmp_path / "c"), "--no-progress"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "live drift threshold: not calibrated: fewer than 200 customers" in text
    assert load_artifact(tmp_path / "c" / "latest").drift_calibration is None
    assert not open_artifact(tmp_path / "b" / "latest").manifest["served_models"]["refit_on_all_events"]


def test_cli_reports_bad_data_with_file_row_and_column(
    shop_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(shop_dir / "items.parquet", bad / "items.parquet")
    events = (
        pl.read_parquet(shop_dir / "events.parquet").head(50).with_columns(pl.col("timestamp").cast(pl.Utf8))
    )
    events = events.with_columns(
        pl.when(pl.int_range(pl.len()) == 6)
        .then(pl.lit("2026-13-01T00:00:00"))
        .otherwise(pl.col("timestamp"))
        .alias("timestamp")
    )
    events.write_csv(bad / "events.csv")
    config = tmp_path / "config.toml"
    config.write_text(f'[data]\npath = "{bad}"\n[models.popularity]\n', encoding="utf-8")
    assert main(["train", "--config", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "events.csv" in err and "row 7" in err and "timestamp" in err and "2026-13-01" in err


def test_cli_rejects_bad_mix_and_unknown_config_key(
    trained: TrainResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["recommend", "--artifact", str(trained.artifact_path), "--customer", "x", "--mix", "wizard=1"]
    )
    assert code == 2 and "unknown persona 'wizard'" in capsys.readouterr().err
    config = tmp_path / "c.toml"
    config.write_text("[split]\ntest_dayz = 3\n", encoding="utf-8")
    assert main(["train", "--config", str(config)]) == 2
    assert "test_dayz" in capsys.readouterr().err


def test_library_fit_seconds_names_the_models_that_wrap_a_library() -> None:
    data = make_checkerboard().data
    models = {kind: create_model(kind, **SMALL_CONFIGS[kind]) for kind in ("popularity", "bpr")}
    for model in models.values():
        model.fit(data)
    seconds = library_fit_seconds(models)
    assert list(seconds) == ["bpr"] and seconds["bpr"] == models["bpr"].library_fit_seconds > 0
