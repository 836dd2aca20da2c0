"""Drift knobs of the generator: how far the mix moves, how fast, and how active customers are after it."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.personas.catalog import load_catalog
from tests.training.synthetic_shop.small_shop import SMALL, weights
from training.synthetic_shop import GenerationSummary, ShopConfig, generate_shop
from training.synthetic_shop.planted_mixes import draw_planted_mixes
from training.synthetic_shop.sessions import draw_interactions
from training.synthetic_shop.shop_model import ShopModel


def _truth(shop: GenerationSummary) -> pl.DataFrame:
    return pl.read_parquet(shop.out_dir / "truth" / "customer_mixes.parquet")


def _generate(tmp_path: Path, **knobs: object) -> GenerationSummary:
    return generate_shop(tmp_path, dataclasses.replace(SMALL, **knobs))  # type: ignore[arg-type]


def test_default_knobs_record_complete_abrupt_drift(shop: GenerationSummary) -> None:
    mixes = _truth(shop)
    drifted = mixes["drift_date"].is_not_null()
    assert mixes.filter(drifted)["drift_strength"].to_list() == [1.0] * int(drifted.sum())
    assert set(mixes.filter(drifted)["drift_ramp_days"].to_list()) == {0}
    assert mixes.filter(~drifted)["drift_strength"].null_count() == int((~drifted).sum())


def test_strength_moves_the_mix_that_share_of_the_way(tmp_path: Path) -> None:
    complete = _truth(_generate(tmp_path / "full"))
    partial = _truth(_generate(tmp_path / "part", drift_strength=(0.2, 0.6)))
    drifted = partial["drift_date"].is_not_null().to_numpy()
    strength = partial["drift_strength"].to_numpy()[drifted]
    assert ((strength >= 0.2) & (strength <= 0.6)).all() and strength.std() > 0.05
    # Same main random stream: the same customers drift on the same days, from the same mixes ...
    assert partial["drift_date"].to_list() == complete["drift_date"].to_list()
    pre = weights(partial, "weekday")[drifted]
    np.testing.assert_array_equal(pre, weights(complete, "weekday")[drifted])
    # ... and the post-drift mix lies that share of the way to the complete drift's.
    target = weights(complete, "post_drift_weekday")[drifted]
    np.testing.assert_allclose(
        weights(partial, "post_drift_weekday")[drifted], pre + strength[:, None] * (target - pre), atol=1e-12
    )


def _post_drift_share(shop: GenerationSummary, near_days: int) -> tuple[float, float]:
    """Share of drifters' events in the ``near_days`` after their drift, and share after it at all."""
    mixes = _truth(shop).filter(pl.col("drift_date").is_not_null())
    events = pl.read_parquet(shop.out_dir / "events.parquet").join(
        mixes.select("customer_id", "drift_date"), on="customer_id"
    )
    offset = (pl.col("timestamp").dt.date() - pl.col("drift_date")).dt.total_days()
    after = events.select(near=((offset >= 0) & (offset < near_days)).mean(), after=(offset >= 0).mean()).row(
        0
    )
    return float(after[0]), float(after[1])


def test_post_drift_activity_moves_events_after_the_drift(tmp_path: Path) -> None:
    _, usual = _post_drift_share(_generate(tmp_path / "usual"), 14)
    busy = _generate(tmp_path / "busy", post_drift_activity=4.0)
    _, busier = _post_drift_share(busy, 14)
    assert busier > usual + 0.2
    # The number of events per customer does not change, only when they happen.
    plain = pl.read_parquet(tmp_path / "usual" / "events.parquet").height
    assert abs(pl.read_parquet(busy.out_dir / "events.parquet").height - plain) < 0.05 * plain


def test_gradual_drift_moves_sessions_to_the_new_mix_along_the_ramp() -> None:
    config = dataclasses.replace(SMALL, drift_ramp_days=(40, 40), drift_share=0.5, hidden_segment_share=0.0)
    model = ShopModel.build(config, load_catalog())
    rng, drift_rng = np.random.default_rng(1), np.random.default_rng(2)
    planted = draw_planted_mixes(model, rng, 400, drift_rng)
    sessions = draw_interactions(model, rng, planted, drift_rng)
    offset = sessions.day - planted.drift_day[sessions.customer]
    post = sessions.phase == 1
    assert not post[offset < 0].any() and post[offset >= 40].all()
    for low, high in ((0, 10), (15, 25), (30, 40)):
        during = (offset >= low) & (offset < high)
        expected = ((offset[during] + 1) / 41).mean()  # the planted progress of these sessions' days
        assert abs(post[during].mean() - expected) < 0.08, (low, high)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"drift_strength": (0.0, 0.5)}, "drift_strength"),
        ({"drift_strength": (0.6, 0.5)}, "drift_strength"),
        ({"drift_strength": (0.5, 1.5)}, "drift_strength"),
        ({"drift_strength": 0.5}, "drift_strength"),
        ({"drift_ramp_days": (-1, 3)}, "drift_ramp_days"),
        ({"drift_ramp_days": (0, 500)}, "drift_ramp_days"),
        ({"drift_ramp_days": (1.5, 3)}, "drift_ramp_days"),
        ({"post_drift_activity": 0.0}, "post_drift_activity"),
        ({"post_drift_activity": True}, "post_drift_activity"),
    ],
)
def test_invalid_drift_knobs_name_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"ShopConfig.{field}"):
        ShopConfig(**change)  # type: ignore[arg-type]


def test_generator_json_records_the_knobs(tmp_path: Path) -> None:
    shop = _generate(tmp_path, drift_strength=(0.5, 0.9), drift_ramp_days=(0, 7), post_drift_activity=2.0)
    config = json.loads((shop.out_dir / "truth" / "generator.json").read_text())["config"]
    assert config["drift_strength"] == [0.5, 0.9] and config["drift_ramp_days"] == [0, 7]
    assert config["post_drift_activity"] == 2.0
