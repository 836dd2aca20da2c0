"""The worked example: the real UCI Online Retail export through the bundled mapping and catalog.

The expected counts are the ones ../shared/data/online-retail/README.md gives for the file; the test is
skipped (with the reason) where ../shared is absent.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from engine.data.loading import load_shop
from engine.personas.catalog import load_catalog
from engine.personas.traits import BULK_QUANTITY
from training.config import load_config
from training.transaction_adapter import AdaptationReport, adapt_transactions
from training.transaction_mapping import load_mapping

ROOT = Path(__file__).resolve().parents[2]
MAPPING = ROOT / "training" / "mappings" / "online_retail.toml"


@pytest.fixture(scope="module")
def adapted(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[AdaptationReport, Path]:
    out = tmp_path_factory.mktemp("online-retail")
    source = shared_data / "online-retail" / "online_retail.parquet"
    return adapt_transactions(load_mapping(MAPPING), source, out), out


def test_drop_counts_match_the_publishers_figures(adapted: tuple[AdaptationReport, Path]) -> None:
    report, _ = adapted
    assert report.rows_read == 541_909
    matching = {r.reason: r.matching for r in report.reasons}
    assert matching["missing_customer"] == 135_080
    assert matching["cancellation"] == 9_288
    assert matching["return"] == 10_624
    assert matching["non_positive_price"] == 2_517
    assert matching["missing_description"] == 1_454
    assert matching["duplicate_row"] == 5_268
    left = {r.reason: r.rows_left for r in report.reasons}
    # customer, quantity > 0, price > 0 and no "C" invoice leave 397,884 rows (README)
    assert left["non_positive_price"] == 397_884
    assert report.rows_kept == left["duplicate_row"] < 397_884  # then postage, fees and repeats go


def test_adapted_folder_loads_with_the_readmes_entities(adapted: tuple[AdaptationReport, Path]) -> None:
    report, out = adapted
    shop = load_shop(out)
    assert shop.events.height == report.rows_kept
    assert shop.customers is not None
    assert shop.events["customer_id"].n_unique() == shop.customers.height
    # README: 4,338 customers and 3,665 items before removing non-products, fees and postage-only buyers
    assert 4_300 <= shop.events["customer_id"].n_unique() <= 4_338
    assert 3_600 <= shop.items.height <= 3_665
    assert not shop.items["item_id"].is_in(["POST", "DOT", "M", "BANK CHARGES"]).any()
    assert shop.events["customer_id"].str.contains(r"\.").sum() == 0  # 17850.0 became "17850"
    assert shop.customers["region"].n_unique() >= 30


def test_catalog_signals_exist_in_the_adapted_data(adapted: tuple[AdaptationReport, Path]) -> None:
    """A persona signalling a category or tag the mapping never produces would have no anchor."""
    _, out = adapted
    items = pl.read_parquet(out / "items.parquet")
    categories = set(items["category"].to_list())
    tags = set(items.select(pl.col("tags").explode()).to_series().drop_nulls().to_list())
    catalog = load_catalog("online_retail")
    for persona in catalog.personas:
        assert set(persona.signals.categories) <= categories, persona.id
        assert set(persona.signals.tags) <= tags, persona.id
        assert not persona.signals.channels and not persona.signals.devices  # the data has neither
        shelf = items.filter(pl.col("category").is_in(list(persona.signals.categories)))
        tagged = items.filter(pl.col("tags").list.set_intersection(list(persona.signals.tags)).list.len() > 0)
        assert shelf.height + tagged.height >= 50 or persona.signals.price_level is not None, persona.id
    events = pl.read_parquet(out / "events.parquet")
    bulk = (events["quantity"] >= BULK_QUANTITY).sum() / events.height
    assert 0.1 < bulk < 0.9  # wholesale lines exist, but not everywhere: bulk_share can tell personas apart
    assert any(p.signals.bulk_share == "high" for p in catalog.personas)
    other = items.filter(pl.col("category") == "other").height
    assert other < 0.25 * items.height  # the keyword rules shelve most products


def test_training_config_points_at_the_catalog_and_purchases() -> None:
    config = load_config(ROOT / "training" / "configs" / "online_retail.toml")
    assert config.personas.catalog == "online_retail"
    assert config.interactions == {"purchase": 5.0}
    assert "popularity" in config.models
