"""A test period too thin to judge models by is said with the figures: no best model from a tie of zeros."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import polars as pl
import pytest

from cli.main import main
from training.config import parse_config
from training.evaluation import SegmentResult, best_model
from training.held_out_period import MIN_TEST_CUSTOMERS, held_out_warnings
from training.prepared_data import evaluation_segments, prepare
from training.synthetic_shop import ShopConfig, generate_shop

MODELS = {
    "popularity": {},
    "persona_popularity": {},
    "als": {"factors": 8, "iterations": 3, "num_threads": 1},
}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shop")
    generate_shop(out, ShopConfig(customers=600, items=300, events=24_000, seed=5))
    return out


@pytest.fixture(scope="module")
def shop_with_late_events(shop: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shop plus five views dated 150 days after its history, by known customers, of items they never
    engaged with: what training on a server's event log adds when the export ends months earlier."""
    out = tmp_path_factory.mktemp("late")
    for table in shop.glob("*.parquet"):
        (out / table.name).write_bytes(table.read_bytes())
    events = pl.read_parquet(shop / "events.parquet")
    late = events["timestamp"].max() + dt.timedelta(days=150)  # type: ignore[operator]
    seen = events.group_by("customer_id").agg(pl.col("item_id").unique())
    items = pl.read_parquet(shop / "items.parquet")["item_id"].to_list()
    rows = []
    for n, (customer, engaged) in enumerate(seen.head(5).iter_rows()):
        new_item = next(i for i in reversed(items) if i not in set(engaged))
        rows.append({"event_id": f"late-{n}", "customer_id": customer, "item_id": new_item})
    added = pl.DataFrame(rows).with_columns(
        event_type=pl.lit("view"), timestamp=pl.lit(late).cast(events.schema["timestamp"])
    )
    pl.concat([events, added], how="diagonal_relaxed").write_parquet(out / "events.parquet")
    return out


def test_a_test_period_of_a_few_late_events_is_warned_about_twice(shop_with_late_events: Path) -> None:
    config = parse_config({"data": {"path": str(shop_with_late_events)}, "models": MODELS})
    prepared = prepare(config, data_path=shop_with_late_events)
    warnings = held_out_warnings(prepared, evaluation_segments(prepared))
    assert len(warnings) == 2
    # of the five, those outside the 10% cold-start hold-out
    assert re.match(r"the test period holds [1-5] known customer\(s\) with something new", warnings[0])
    assert f"fewer than {MIN_TEST_CUSTOMERS} customers cannot rank models" in warnings[0]
    assert "the held-out events begin 15" in warnings[1] and "days after the previous event" in warnings[1]


def test_an_ordinary_time_split_gets_no_warning(shop: Path) -> None:
    config = parse_config({"data": {"path": str(shop)}, "models": MODELS})
    prepared = prepare(config, data_path=shop)
    assert held_out_warnings(prepared, evaluation_segments(prepared)) == []


def test_train_picks_no_best_model_from_a_tie_of_zeros_and_says_so(
    shop_with_late_events: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Walkthrough: every model scored 0 on six customers and persona_popularity became the served model."""
    config = tmp_path / "train.toml"
    config.write_text(
        f'[data]\npath = "{shop_with_late_events}"\n[output]\nroot = "{tmp_path / "artifacts"}"\n'
        "[models.popularity]\n[models.persona_popularity]\n"
        "[models.als]\nfactors = 8\niterations = 3\nnum_threads = 1\n"
    )
    assert main(["train", "--config", str(config), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert summary["best_model"] is None
    assert len(summary["warnings"]) == 2
    assert main(["train", "--config", str(config), "--no-progress"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert re.search(r"warning: the test period holds [1-5] known customer\(s\)", out)
    assert "raise [split] test_days" in out  # not eaten as console markup
    assert "best model: none: no model placed a held-out item in its top 10" in out
    assert "the server serves 'als' (the first by name)" in out


def _result(model: str, ndcg: float) -> SegmentResult:
    return SegmentResult(model=model, segment="all", users=10, metrics={"ndcg": ndcg}, coverage=0.1)


def test_best_model_is_the_highest_and_none_for_a_tie_of_zeros() -> None:
    results = [_result("popularity", 0.2), _result("als", 0.1), _result("bpr", 0.15)]
    assert best_model(results) == "bpr"  # the popularity baseline is not a candidate
    assert best_model([_result("popularity", 0.0), _result("als", 0.0), _result("bpr", 0.0)]) is None
