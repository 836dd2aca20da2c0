"""Exports in several tables (lines, products, customers), line totals and extra customer features."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.data.loading import DataValidationError, load_shop
from training.transaction_adapter import adapt_transactions
from training.transaction_mapping import Field, MappingError, load_mapping, parse_mapping

LINES = (
    "BASKET,PRODUCT,QTY,SALES_VALUE,DAY,HH\n"
    "1,p1,2,3.00,2024-03-01,h1\n"  # 1.50 each
    "1,p2,1,0.80,2024-03-01,h1\n"
    "2,p1,0,0.00,2024-03-02,h2\n"  # a zero-quantity correction: a return, not a division by zero
    "3,p3,4,10.00,2024-03-03,h2\n"  # 2.50 each
    "4,p2,3,2.70,2024-03-04,h3\n"  # h3 is not in the households table
)
PRODUCTS = (
    "PRODUCT_ID,COMMODITY,BRAND,DEPT\n"
    "p1,Apple juice,Sunny,drinks\n"
    "p2,Oats,Shopwise,pantry\n"
    "p3,Tea,Leafy,drinks\n"
)
HOUSEHOLDS = (
    "hh_key,AGE_DESC,INCOME_DESC,HH_SIZE,KIDS,HOMEOWNER\n"
    "h1,25-34,35-49K,4,2,Homeowner\n"
    "h2,65+,Under 15K,1,None/Unknown,Renter\n"
)
MAPPING = """
[columns]
invoice = "BASKET"
product_code = "PRODUCT"
quantity = "QTY"
line_total = "SALES_VALUE"
timestamp = "DAY"
customer = "HH"

[tables.products]
file = "products.csv"
key = "PRODUCT_ID"
columns = { description = "COMMODITY", brand = "BRAND", category = "DEPT" }

[tables.customers]
file = "households.csv"
key = "hh_key"
columns = { age_band = "AGE_DESC", income_band = "INCOME_DESC" }

[customer_features]
household_size = { column = "HH_SIZE", kind = "numeric" }
children = { column = "KIDS" }
home_ownership = { column = "HOMEOWNER", kind = "categorical" }
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def export(tmp_path: Path) -> Path:
    write(tmp_path, "products.csv", PRODUCTS)
    write(tmp_path, "households.csv", HOUSEHOLDS)
    write(tmp_path, "mapping.toml", MAPPING)
    return write(tmp_path, "lines.csv", LINES)


def test_lines_products_and_households_join_into_one_shop(tmp_path: Path, export: Path) -> None:
    report = adapt_transactions(load_mapping(tmp_path / "mapping.toml"), export, tmp_path / "out")
    assert {r.reason: r.dropped for r in report.reasons}["return"] == 1
    shop = load_shop(tmp_path / "out")
    events = shop.events.sort("event_id")
    assert events["price_paid"].to_list() == pytest.approx([1.5, 0.8, 2.5, 0.9])  # total / quantity
    items = {row["item_id"]: row for row in shop.items.iter_rows(named=True)}
    assert items["p1"]["title"] == "Apple juice" and items["p1"]["category"] == "drinks"
    assert items["p2"]["brand"] == "Shopwise"
    assert shop.customers is not None
    customers = {row["customer_id"]: row for row in shop.customers.iter_rows(named=True)}
    assert customers["h1"]["age_band"] == "25-34" and customers["h2"]["income_band"] == "Under 15K"
    assert customers["h1"]["feature__household_size"] == 4.0
    assert customers["h2"]["feature__children"] == "None/Unknown"
    assert customers["h1"]["feature__home_ownership"] == "Homeowner"
    assert customers["h3"]["age_band"] is None and customers["h3"]["feature__household_size"] is None
    assert shop.customers["feature__household_size"].dtype.is_numeric()


def test_a_bad_cell_in_a_joined_table_names_that_file_row_and_column(tmp_path: Path, export: Path) -> None:
    write(tmp_path, "households.csv", HOUSEHOLDS.replace("h2,65+,Under 15K,1,", "h2,65+,Under 15K,one,"))
    with pytest.raises(DataValidationError) as error:
        adapt_transactions(load_mapping(tmp_path / "mapping.toml"), export, tmp_path / "out")
    assert "households.csv, row 2, column 'HH_SIZE': cannot parse 'one' as a number" in str(error.value)
    skipping = adapt_transactions(
        load_mapping(tmp_path / "mapping.toml"), export, tmp_path / "out", skip_invalid=True
    )
    assert skipping.joined_rows_skipped == {"customers": 1} and skipping.rows_kept == 4  # lines stay


def test_a_repeated_key_in_a_joined_table_is_an_error(tmp_path: Path, export: Path) -> None:
    write(tmp_path, "products.csv", PRODUCTS + "p1,Orange juice,Sunny,drinks\n")
    with pytest.raises(DataValidationError) as error:
        adapt_transactions(load_mapping(tmp_path / "mapping.toml"), export, tmp_path / "out")
    assert "products.csv, row 4, column 'PRODUCT_ID'" in str(error.value) and "row 1" in str(error.value)


REQUIRED = {"product_code": "P", "timestamp": "T", "customer": "C"}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"columns": {**REQUIRED, "unit_price": "U", "line_total": "L", "quantity": "Q"}}, "both unit_price"),
        ({"columns": REQUIRED}, "unit_price or line_total"),
        ({"columns": {**REQUIRED, "line_total": "L"}}, "line_total needs [columns] quantity"),
        (
            {"columns": {**REQUIRED, "unit_price": "U"}, "tables": {"stores": {"file": "s.csv", "key": "S"}}},
            "[tables] has unknown key(s) ['stores']",
        ),
        (
            {
                "columns": {**REQUIRED, "unit_price": "U"},
                "tables": {"products": {"file": "p.csv", "key": "K", "columns": {"age_band": "A"}}},
            },
            "[tables.products.columns] age_band",
        ),
        (
            {
                "columns": {**REQUIRED, "unit_price": "U", "brand": "B"},
                "tables": {"products": {"file": "p.csv", "key": "K", "columns": {"brand": "B"}}},
            },
            "brand is mapped twice",
        ),
        (
            {"columns": {**REQUIRED, "unit_price": "U"}, "customer_features": {"Size!": {"column": "S"}}},
            "[customer_features] Size!",
        ),
        (
            {
                "columns": {**REQUIRED, "unit_price": "U"},
                "customer_features": {"size": {"column": "S", "kind": "ordinal"}},
            },
            "kind must be numeric or categorical",
        ),
    ],
)
def test_bad_table_and_feature_mappings_name_the_key(document: dict[str, object], message: str) -> None:
    with pytest.raises(MappingError) as error:
        parse_mapping(document, "shops/acme.toml")
    assert str(error.value).startswith("shops/acme.toml: ") and message in str(error.value)


def test_a_missing_table_file_or_column_is_named(tmp_path: Path, export: Path) -> None:
    (tmp_path / "households.csv").unlink()
    with pytest.raises(MappingError, match=r"\[tables.customers\] file .*households.csv.* not found"):
        adapt_transactions(load_mapping(tmp_path / "mapping.toml"), export, tmp_path / "out")
    write(tmp_path, "households.csv", HOUSEHOLDS.replace("HH_SIZE", "SIZE"))
    with pytest.raises(MappingError, match=r"\[customer_features\] household_size .*'HH_SIZE'"):
        adapt_transactions(load_mapping(tmp_path / "mapping.toml"), export, tmp_path / "out")


MAPPINGS = Path(__file__).resolve().parents[2] / "training" / "mappings"


@pytest.mark.parametrize("path", sorted(MAPPINGS.glob("*.toml")), ids=lambda p: p.stem)
def test_the_example_mappings_are_valid(path: Path) -> None:
    mapping = load_mapping(path)
    assert mapping.has(Field.PRODUCT_CODE)


def test_the_household_panel_example_adapts_its_three_tables(tmp_path: Path) -> None:
    write(
        tmp_path,
        "transaction_data.csv",
        "household_key,BASKET_ID,DAY,PRODUCT_ID,QUANTITY,SALES_VALUE,STORE_ID,RETAIL_DISC\n"
        "7,b1,2024-01-02,10,2,5.00,s1,1.00\n"
        "8,b2,2024-01-03,11,0,0.00,s1,0.50\n",
    )
    write(
        tmp_path,
        "product.csv",
        "PRODUCT_ID,COMMODITY_DESC,BRAND,DEPARTMENT\n10,COFFEE,National,GROCERY\n11,TEA,Private,GROCERY\n",
    )
    write(
        tmp_path,
        "hh_demographic.csv",
        "household_key,AGE_DESC,INCOME_DESC,HOUSEHOLD_SIZE_DESC,KID_CATEGORY_DESC,HOMEOWNER_DESC,"
        "MARITAL_STATUS_CODE\n7,35-44,50-74K,5+,3+,Homeowner,A\n",
    )
    mapping = load_mapping(MAPPINGS / "household_panel.toml")
    report = adapt_transactions(mapping, tmp_path / "transaction_data.csv", tmp_path / "out")
    assert report.rows_kept == 1
    shop = load_shop(tmp_path / "out")
    assert shop.customers is not None and shop.customers["feature__household_size"].to_list() == ["5+"]
    assert shop.events["discount"].to_list() == pytest.approx([1.0 / (2.5 * 2 + 1.0)])
