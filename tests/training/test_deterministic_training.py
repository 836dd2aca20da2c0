"""``[training] deterministic = true``: two runs with the same config on the same data, same figures.

BPR and LightFM fit with several Hogwild threads by default, and their figures then move in the third
decimal from run to run; in deterministic mode every model fits single-threaded with a fixed seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.config import parse_config
from training.synthetic_shop import ShopConfig, generate_shop
from training.train_job import run_training

MODELS = {
    "popularity": {},
    "bpr": {"factors": 8, "iterations": 20},
    "lightfm_hybrid": {"no_components": 8, "epochs": 5},
    "blend": {"members": [{"kind": "als", "factors": 8}, {"kind": "bpr", "factors": 8, "iterations": 20}]},
}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("deterministic") / "shop"
    return generate_shop(folder, ShopConfig(customers=500, items=250, events=20_000, seed=4)).out_dir


def _metrics(shop: Path, root: Path, deterministic: bool) -> dict[str, object]:
    config = parse_config(
        {
            "data": {"path": str(shop)},
            "models": MODELS,
            "training": {"deterministic": deterministic},
            "output": {"root": str(root), "refit_on_all_events": False},
        }
    )
    artifact = run_training(config, show_progress=False).artifact_path
    manifest = json.loads((artifact / "manifest.json").read_text(encoding="utf-8"))
    return {"metrics": manifest["metrics"], "config": manifest["config"]}


def test_two_deterministic_runs_give_identical_figures(shop: Path, tmp_path: Path) -> None:
    first = _metrics(shop, tmp_path / "first", deterministic=True)
    second = _metrics(shop, tmp_path / "second", deterministic=True)
    assert first["metrics"] == second["metrics"]
    assert first["config"]["training"] == {"deterministic": True}  # type: ignore[index]


def test_deterministic_mode_fits_every_threaded_model_on_one_thread() -> None:
    config = parse_config({"models": MODELS, "training": {"deterministic": True}})
    assert config.model_settings("bpr")["num_threads"] == 1
    assert config.model_settings("lightfm_hybrid")["num_threads"] == 1
    assert config.model_settings("popularity") == {}
    assert config.model_settings("blend")["members"] == [
        {"kind": "als", "factors": 8, "num_threads": 1},
        {"kind": "bpr", "factors": 8, "iterations": 20, "num_threads": 1},
    ], "a blend's members fit on one thread too"
    assert parse_config({"models": MODELS}).model_settings("bpr") == MODELS["bpr"]
