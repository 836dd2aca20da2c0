"""The generator's personal-taste knob: how much of a customer's choice is their own favourite niches."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from engine.personas.catalog import load_catalog
from tests.training.synthetic_shop.small_shop import SMALL
from training.synthetic_shop import GenerationSummary, ShopConfig, generate_shop
from training.synthetic_shop.shop_model import ShopModel


def _top_cluster_share(shop: GenerationSummary, config: ShopConfig) -> float:
    """Mean over customers of the share of their views in their three most viewed taste niches."""
    model = ShopModel.build(config, load_catalog())
    cluster_of = dict(zip(model.item_ids.to_pylist(), model.items.cluster.tolist(), strict=True))
    views = pl.read_parquet(shop.out_dir / "events.parquet").filter(pl.col("event_type") == "view")
    counts = (
        views.with_columns(pl.col("item_id").replace_strict(cluster_of).alias("cluster"))
        .group_by("customer_id", "cluster")
        .len()
        .sort("len", descending=True)
    )
    per_customer = counts.group_by("customer_id").agg(
        (pl.col("len").head(3).sum() / pl.col("len").sum()).alias("top")
    )
    return float(per_customer["top"].mean())  # type: ignore[arg-type]


def test_less_personal_taste_spreads_customers_over_their_personas_niches(tmp_path: Path) -> None:
    own = dataclasses.replace(SMALL, personal_taste=1.0)
    led = dataclasses.replace(SMALL, personal_taste=0.25)
    as_planted = _top_cluster_share(generate_shop(tmp_path / "own", own), own)
    persona_led = _top_cluster_share(generate_shop(tmp_path / "led", led), led)
    assert persona_led < as_planted - 0.1


def test_the_default_is_the_shop_as_planted_before_the_knob(tmp_path: Path) -> None:
    before = generate_shop(tmp_path / "default", SMALL)
    explicit = generate_shop(tmp_path / "one", dataclasses.replace(SMALL, personal_taste=1.0))
    for table in ("events", "customers", "decisions"):
        assert (before.out_dir / f"{table}.parquet").read_bytes() == (
            explicit.out_dir / f"{table}.parquet"
        ).read_bytes()
    halved = generate_shop(tmp_path / "half", dataclasses.replace(SMALL, personal_taste=0.5))
    config = json.loads((halved.out_dir / "truth" / "generator.json").read_text())["config"]
    assert config["personal_taste"] == 0.5
    assert not np.array_equal(
        pl.read_parquet(halved.out_dir / "events.parquet")["item_id"].to_numpy(),
        pl.read_parquet(before.out_dir / "events.parquet")["item_id"].to_numpy(),
    )


@pytest.mark.parametrize("value", [-0.1, 1.5, True, "half"])
def test_a_personal_taste_outside_zero_to_one_is_refused_by_name(value: object) -> None:
    with pytest.raises(ValueError, match=r"ShopConfig\.personal_taste"):
        ShopConfig(personal_taste=value)  # type: ignore[arg-type]
