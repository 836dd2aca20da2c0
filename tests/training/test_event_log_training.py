"""Training reads the server's event log: live events change what the next model learns from."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import polars as pl
import pytest

from cli.main import main
from engine.live.event_log import EventLog
from engine.live.events import BehaviorEvent
from training.config import parse_config
from training.prepared_data import prepare
from training.synthetic_shop import ShopConfig, generate_shop


@pytest.fixture(scope="module")
def shop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shop")
    generate_shop(out, ShopConfig(customers=300, items=120, events=6_000, seed=3, days=90))
    return out


def _config(shop_dir: Path, event_log: Path | None, output: Path) -> dict[str, object]:
    data: dict[str, object] = {"path": str(shop_dir)}
    if event_log is not None:
        data["event_log"] = str(event_log)
    return {
        "data": data,
        "split": {"test_days": 14, "cold_start_share": 0.0},
        "models": {"popularity": {}},
        "output": {"root": str(output)},
    }


def test_logged_events_join_the_training_data_once_and_only_for_known_items(
    shop_dir: Path, tmp_path: Path
) -> None:
    baseline = prepare(parse_config(_config(shop_dir, None, tmp_path)))
    shop_events = baseline.shop.events
    first: dt.datetime = shop_events["timestamp"].min()  # type: ignore[assignment]
    early = first + dt.timedelta(days=2)
    known_item = str(baseline.items.ids[0])
    existing = shop_events.row(0, named=True)
    newcomer = [
        BehaviorEvent(f"live-{n}", "live-customer", known_item, "purchase", early, price_paid=5.0)
        for n in range(3)
    ]
    log_path = tmp_path / "events.db"
    with EventLog.open(log_path) as log:
        log.append(
            [
                *newcomer,
                BehaviorEvent(
                    existing["event_id"], "someone-else", known_item, "view", early
                ),  # the shop's row wins
                BehaviorEvent("live-new-item", "live-customer", "item-not-in-the-shop", "view", early),
                # ids the data contract refuses: left out and counted, not a traceback in the id map
                BehaviorEvent("live-nul", "live\x00customer", known_item, "view", early),
                BehaviorEvent("live-padded", " live-customer", known_item, "view", early),
            ]
        )

    prepared = prepare(parse_config(_config(shop_dir, log_path, tmp_path)))

    merge = prepared.logged_events
    assert merge is not None
    assert merge.to_dict() == {
        "read": 7,
        "added": 3,
        "already_in_shop": 1,
        "unknown_items": 1,
        "malformed_ids": 2,
    }
    assert prepared.shop.events.height == shop_events.height + 3
    assert (
        prepared.shop.events.filter(pl.col("event_id") == existing["event_id"]).row(0, named=True) == existing
    )
    assert "live-customer" not in baseline.customers.ids.tolist()
    row = prepared.customers.to_internal(["live-customer"])[0]
    item = prepared.items.to_internal([known_item])[0]
    assert prepared.history[row].nnz == 1 and prepared.history[row, item] > 0  # the three purchases
    assert prepared.shop.report.rows_read["event_log"] == 7


def test_train_reports_the_log_and_a_missing_log_is_a_usage_error(
    shop_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log_path = tmp_path / "events.db"
    with EventLog.open(log_path) as log:
        log.append(
            [BehaviorEvent("live-1", "c-live", "item-not-in-the-shop", "view", dt.datetime.now(dt.UTC))]
        )
    config_path = tmp_path / "train.toml"
    config_path.write_text(
        f'[data]\npath = "{shop_dir}"\nevent_log = "events.db"\n'
        "[split]\ntest_days = 14\ncold_start_share = 0.0\n[models.popularity]\n"
        f'[output]\nroot = "{tmp_path}"\n',
        encoding="utf-8",
    )
    assert tomllib.loads(config_path.read_text())["data"]["event_log"] == "events.db"
    monkeypatch.chdir(tmp_path)  # relative paths in a config resolve against the working directory
    assert main(["train", "--config", str(config_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "0 of 1 events added" in out and "1 for items the shop does not list" in out
    log_path.unlink()
    assert main(["train", "--config", str(config_path), "--no-progress"]) == 2
    assert "events.db: no such file" in capsys.readouterr().err
