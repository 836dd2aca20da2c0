"""``discover --write-catalog``: the proposed file loads as a catalog and trains as it is."""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from pathlib import Path

import polars as pl
import pytest

from cli.main import main
from engine.artifact import open_artifact
from engine.personas.catalog import load_catalog
from training.config import parse_config
from training.discovery_job import latest_events_held_out
from training.synthetic_shop import ShopConfig, generate_shop
from training.train_job import run_training


@pytest.fixture(scope="module")
def shop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shop")
    generate_shop(out, ShopConfig(customers=500, items=250, events=20_000, seed=9))
    return out


@pytest.fixture(scope="module")
def proposed(shop_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("catalog") / "proposed.toml"
    args = ["discover", "--data", str(shop_dir), "--write-catalog", str(out), "--personas", "4", "--json"]
    assert main(args) == 0
    return out, {}


def test_the_proposed_catalog_loads_and_trains_as_it_is(
    proposed: tuple[Path, dict], shop_dir: Path, tmp_path: Path
) -> None:
    path, _ = proposed
    catalog = load_catalog(path)
    assert 2 <= len(catalog) <= 4
    config = parse_config(
        {
            "data": {"path": str(shop_dir)},
            "personas": {"catalog": str(path)},
            "models": {"persona_popularity": {}, "als": {"factors": 8, "iterations": 3, "num_threads": 1}},
            "output": {"root": str(tmp_path), "refit_on_all_events": False},
        }
    )
    result = run_training(config, show_progress=False)
    artifact = open_artifact(result.artifact_path)
    assert artifact.manifest["personas"] == list(catalog.ids)
    assert {r.model for r in result.results} == {"persona_popularity", "als"}


def test_the_report_compares_given_and_proposed_fits(
    shop_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.toml"
    args = ["discover", "--data", str(shop_dir), "--write-catalog", str(out), "--held-out-days", "14"]
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for name in ("given", "proposed"):
        fit = report["fit"][name]
        assert 0 <= fit["dominated_share"] <= 1 and fit["held_out_events"] > 0
    assert report["fit"]["given"]["held_out_events"] == report["fit"]["proposed"]["held_out_events"]
    assert report["loads_as_catalog"] and len(report["personas"]) == 5  # as many as the given catalog
    assert report["held_out_log_likelihood_difference"] == pytest.approx(
        report["fit"]["proposed"]["held_out_log_likelihood"]
        - report["fit"]["given"]["held_out_log_likelihood"]
    )


def test_several_sizes_are_measured_and_the_best_held_out_ranking_is_written(
    shop_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.toml"
    args = ["discover", "--data", str(shop_dir), "--write-catalog", str(out), "--personas", "2,6,2", "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    candidates = report["candidates"]
    assert [c["requested_personas"] for c in candidates] == [2, 6]  # the repeat tried once
    assert all(0 < c["held_out_ndcg_at_10"] < 1 and c["held_out_customers"] > 0 for c in candidates)
    (chosen,) = [c for c in candidates if c["chosen"]]
    assert chosen["held_out_ndcg_at_10"] == max(c["held_out_ndcg_at_10"] for c in candidates)
    assert {k: v for k, v in chosen.items() if k not in ("requested_personas", "chosen")} == report["fit"][
        "proposed"
    ]
    assert len(load_catalog(out)) == chosen["personas"] == len(report["personas"])


def test_the_table_lists_every_size_tried(
    shop_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.toml"
    assert main(["discover", "--data", str(shop_dir), "--write-catalog", str(out), "--personas", "2,3"]) == 0
    printed = capsys.readouterr().out
    assert "proposed (2)" in printed and "proposed (3)" in printed and "NDCG@10" in printed
    written = [line for line in printed.splitlines() if "proposed (" in line and " yes " in line]
    assert len(written) == 1
    # the persona ids a user passes to --mix are printed whole, each at the start of its row
    ids = [persona["id"] for persona in tomllib.loads(out.read_text(encoding="utf-8"))["personas"]]
    assert ids and all(any(line.startswith(f" {i} ") for line in printed.splitlines()) for i in ids)
    assert "\u2026" not in printed


def test_a_training_split_keeps_the_test_events_from_the_proposal(
    shop_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "split.toml"
    config.write_text(f'[data]\npath = "{shop_dir}"\n[split]\ntest_days = 28\n', encoding="utf-8")
    out = tmp_path / "p.toml"
    common = [
        "discover",
        "--data",
        str(shop_dir),
        "--write-catalog",
        str(out),
        "--held-out-days",
        "14",
        "--json",
        "--overwrite",  # the same file, written once per run
    ]
    assert main(common) == 0
    everything = json.loads(capsys.readouterr().out)
    assert main([*common, "--training-split", str(config)]) == 0
    training_only = json.loads(capsys.readouterr().out)
    assert everything["events_read"]["scope"] == "all"
    assert training_only["events_read"]["scope"] == f"training split of {config}"
    last = dt.datetime.fromisoformat(everything["events_read"]["last"])
    assert dt.datetime.fromisoformat(training_only["events_read"]["last"]) < last - dt.timedelta(days=28)
    assert 0 < training_only["events_read"]["events"] < everything["events_read"]["events"]
    assert training_only["fit"]["given"]["held_out_events"] > 0
    with pytest.raises(SystemExit) as refused:
        main([*common, "--training-split", str(tmp_path / "missing.toml")])
    assert refused.value.code == 2


def test_latest_events_held_out_are_each_customers_newest_share() -> None:
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    events = pl.DataFrame(
        {
            "customer_id": ["a"] * 10 + ["b"] * 4 + ["c"],
            "timestamp": [base + dt.timedelta(days=d) for d in (*range(9, -1, -1), 3, 1, 2, 0, 5)],
        }
    )
    earlier, later = latest_events_held_out(events, 0.25)
    assert earlier.height + later.height == events.height
    # a: floor(2.5) = 2 latest (days 8, 9); b: floor(1.0) = 1 (day 3); c: floor(0.25) = 0
    latest = {(c, t.day - 1) for c, t in later.select("customer_id", "timestamp").iter_rows()}
    assert latest == {("a", 8), ("a", 9), ("b", 3)}
    for customer in ("a", "b"):
        newest_earlier = earlier.filter(pl.col("customer_id") == customer)["timestamp"].max()
        assert newest_earlier < later.filter(pl.col("customer_id") == customer)["timestamp"].min()


def test_a_held_out_share_scores_every_customer_with_enough_events(
    shop_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.toml"
    common = ["discover", "--data", str(shop_dir), "--write-catalog", str(out), "--json", "--overwrite"]
    assert main([*common, "--held-out-share", "0.2"]) == 0
    by_share = json.loads(capsys.readouterr().out)
    assert main(common) == 0
    by_days = json.loads(capsys.readouterr().out)
    assert by_share["held_out_share"] == 0.2 and by_share["held_out_days"] is None
    assert by_days["held_out_share"] is None and by_days["held_out_days"] == 28
    ranked = [d["fit"]["given"]["held_out_customers"] for d in (by_share, by_days)]
    assert ranked[0] > ranked[1] > 0  # everyone with 5+ events against those active in the last 28 days
    with pytest.raises(SystemExit):
        main([*common, "--held-out-share", "1"])


@pytest.mark.parametrize("personas", ["1", "4,1", "4,x", "4,,5"])
def test_bad_persona_counts_are_refused_naming_the_flag(
    shop_dir: Path, tmp_path: Path, personas: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "p.toml")
    with pytest.raises(SystemExit) as exited:
        main(["discover", "--data", str(shop_dir), "--write-catalog", out, "--personas", personas])
    assert exited.value.code == 2
    assert "--personas" in capsys.readouterr().err
    assert not Path(out).exists()


def test_bad_flags_are_user_errors(shop_dir: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "p.toml")
    with pytest.raises(SystemExit) as refused:
        main(["discover", "--data", str(shop_dir), "--write-catalog", out, "--held-out-days", "0"])
    assert refused.value.code == 2
