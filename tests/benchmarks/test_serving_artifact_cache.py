"""The serving benchmark serves what ``persona-engine train`` writes: a build refits on all events and
customers by default, and keeps the split's cold-start hold-out out of the model only when the config
turns the refit off. A build that drifted from train would time pages no production server serves
(in 2026-12-05's builds a tenth of the customers were outside the model and folded in per page)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from benchmarks.serving_artifact_cache import build_serving_artifact
from training.synthetic_shop import ShopConfig, generate_shop

CONFIG = """
[split]
test_days = 28
cold_start_share = 0.15
seed = 13

[models.popularity]
[models.als]
factors = 8
iterations = 2
penalty = "constant"
"""


@pytest.fixture(scope="module")
def shop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serving-build-shop")
    generate_shop(out, ShopConfig(customers=400, items=200, events=12_000, seed=3))
    return out


def _build(tmp_path: Path, shop_dir: Path, extra: str = "") -> tuple[dict[str, object], Path]:
    config = tmp_path / "serving.toml"
    config.write_text(CONFIG + extra, encoding="utf-8")
    build_serving_artifact(config, shop_dir, tmp_path / "artifacts", "als")
    artifact = tmp_path / "artifacts" / "latest"
    return json.loads((artifact / "manifest.json").read_text(encoding="utf-8")), artifact


def _customers_with_history_outside_the_model(artifact: Path) -> int:
    customers = np.load(artifact / "ids" / "customers.npy")
    modelled = np.isin(customers, np.load(artifact / "ids" / "model_customers.npy"))
    with_history = np.diff(np.load(artifact / "customers" / "history.indptr.npy")) > 0
    return int((with_history & ~modelled).sum())


def test_a_build_serves_models_refit_on_all_events_and_customers(tmp_path: Path, shop_dir: Path) -> None:
    manifest, artifact = _build(tmp_path, shop_dir)
    served = manifest["served_models"]
    assert isinstance(served, dict)
    assert served["refit_on_all_events"] is True
    assert served["events"] == pl.read_parquet(shop_dir / "events.parquet").height  # every event
    assert _customers_with_history_outside_the_model(artifact) == 0


def test_a_build_without_the_refit_keeps_the_cold_start_hold_out_outside_the_model(
    tmp_path: Path, shop_dir: Path
) -> None:
    manifest, artifact = _build(tmp_path, shop_dir, "\n[output]\nrefit_on_all_events = false\n")
    served = manifest["served_models"]
    assert isinstance(served, dict)
    assert served["refit_on_all_events"] is False
    assert served["events"] < pl.read_parquet(shop_dir / "events.parquet").height  # the training period
    held_out = _customers_with_history_outside_the_model(artifact)
    assert 0.10 * 400 <= held_out <= 0.20 * 400  # the seeded 15% hold-out, with their histories
