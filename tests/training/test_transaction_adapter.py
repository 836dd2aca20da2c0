"""The transaction mapping and adapter on tiny exports written in tmp_path (real files, real polars)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli.main import main
from engine.data.loading import DataValidationError, load_shop
from training.transaction_adapter import REJECTED_ROWS_FILE, REPORT_FILE, adapt_transactions
from training.transaction_mapping import MappingError, load_mapping, parse_mapping

BASIC_COLUMNS = {
    "invoice": "Order",
    "product_code": "SKU",
    "description": "Name",
    "quantity": "Qty",
    "unit_price": "Price",
    "timestamp": "SoldAt",
    "customer": "Card",
}

HEADER = "Order,SKU,Name,Qty,Price,SoldAt,Card,Brand,Own,Coupon,Country,Age\n"
LINES = [
    "1001,A1,Organic Apple Juice,2,1.50,2024-03-01 10:00:00,77,Sunny,no,,UK,25-34",
    "1001,B2,Store Oats,1,0.80,2024-03-01 10:00:00,77,Shopwise,yes,SPRING,UK,25-34",
    "1002,C3,Chocolate Bar,3,0.60,2024-03-02 11:30:00,,Choco,no,,UK,",  # guest: dropped
    "C1003,A1,Organic Apple Juice,-2,1.50,2024-03-03 09:00:00,77,Sunny,no,,UK,25-34",  # cancellation
    "1004,A1,Organic Apple Juice,-1,1.50,2024-03-03 09:00:00,88,Sunny,no,,FR,45-54",  # return
    "1005,POST,Postage,1,15.00,2024-03-04 12:00:00,88,,no,,FR,45-54",  # not a product
    "1006,D4,Free Sample Tea,1,0.00,2024-03-04 12:00:00,88,Leafy,no,,FR,45-54",  # free
    "1007,D4,Green Tea,4,3.20,2024-03-05 08:15:00,88,Leafy,no,,FR,45-54",
    "1007,D4,Green Tea,4,3.20,2024-03-05 08:15:00,88,Leafy,no,,FR,45-54",  # exact repeat
    "1008,B2,Store Oats,1,1.00,2024-03-06 18:00:00,99,Shopwise,yes,,DE,18-24",
]

MAPPING = """
[source]
name = "tiny shop"
timestamp_format = "%Y-%m-%d %H:%M:%S"

[columns]
invoice = "Order"
product_code = "SKU"
description = "Name"
quantity = "Qty"
unit_price = "Price"
timestamp = "SoldAt"
customer = "Card"
brand = "Brand"
private_label = "Own"
coupon = "Coupon"
country = "Country"
age_band = "Age"

[discount]
coupon_fraction = 0.15

[drop]
cancellation_invoice_prefix = "C"
product_codes = ["POST"]
duplicate_rows = true

[category]
default = "pantry"

[[category.rules]]
category = "drinks"
pattern = "(?i)juice|tea\\\\b"

[[tags.rules]]
tag = "organic"
pattern = "(?i)organic"

[price_bands]
edges = [1.0, 3.0]
tags = ["budget", "standard", "premium"]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def export(tmp_path: Path) -> Path:
    return write(tmp_path, "export.csv", HEADER + "\n".join(LINES) + "\n")


@pytest.fixture
def mapping_file(tmp_path: Path) -> Path:
    return write(tmp_path, "shop.toml", MAPPING)


def test_tiny_export_becomes_a_shop_that_loads(tmp_path: Path, export: Path, mapping_file: Path) -> None:
    report = adapt_transactions(load_mapping(mapping_file), export, tmp_path / "out")
    reasons = {r.reason: (r.matching, r.dropped) for r in report.reasons}
    assert reasons["missing_customer"] == (1, 1)
    assert reasons["cancellation"] == (1, 1)
    assert reasons["return"] == (2, 1)  # the cancellation line has a negative quantity too
    assert reasons["not_a_product"] == (1, 1)
    assert reasons["non_positive_price"] == (1, 1)
    assert reasons["duplicate_row"] == (1, 1)
    assert report.rows_read == 10 and report.rows_kept == 4
    assert [r.rows_left for r in report.reasons][-1] == 4

    shop = load_shop(tmp_path / "out")
    events = shop.events.sort("event_id")
    assert events["event_id"].to_list() == ["1001/1", "1001/2", "1007/8", "1008/10"]
    assert events["customer_id"].to_list() == ["77", "77", "88", "99"]
    assert events["discount"].to_list() == [0.0, 0.15, 0.0, 0.0]  # the coupon line
    assert events["timestamp"][0] == dt.datetime(2024, 3, 1, 10, tzinfo=dt.UTC)

    items = {row["item_id"]: row for row in shop.items.iter_rows(named=True)}
    assert set(items) == {"A1", "B2", "D4"}
    assert items["A1"]["category"] == "drinks" and items["D4"]["category"] == "drinks"
    assert items["B2"]["category"] == "pantry"
    assert items["B2"]["price"] == pytest.approx(0.9)  # median of the kept unit prices
    assert sorted(items["A1"]["tags"]) == ["national_brand", "organic", "standard"]
    assert sorted(items["B2"]["tags"]) == ["budget", "private_label"]
    assert sorted(items["D4"]["tags"]) == ["national_brand", "premium"]
    assert items["D4"]["title"] == "Green Tea"  # the latest description, not the free sample's

    assert shop.customers is not None
    customers = {row["customer_id"]: row for row in shop.customers.iter_rows(named=True)}
    assert customers["88"]["region"] == "FR" and customers["99"]["age_band"] == "18-24"

    rejected = pl.read_parquet(tmp_path / "out" / REJECTED_ROWS_FILE).sort("row")
    assert rejected["row"].to_list() == [3, 4, 5, 6, 7, 9]
    assert rejected["reason"].to_list()[:2] == ["missing_customer", "cancellation"]
    document = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert document["rows_kept"] == 4 and document["rows_dropped"] == 6


def test_parquet_export_with_typed_columns(tmp_path: Path) -> None:
    """Float customer ids (pandas' NaN-able ids) become integer text; native timestamps are kept."""
    frame = pl.DataFrame(
        {
            "sku": ["x", "y", "x"],
            "price": [2.0, 5.0, 2.5],
            "at": [dt.datetime(2024, 1, 1, 12), dt.datetime(2024, 1, 2), dt.datetime(2024, 1, 3)],
            "who": [17850.0, float("nan"), 12.0],  # pandas' missing id
            "pct": [10.0, 0.0, 0.0],
        }
    )
    source = tmp_path / "sales.parquet"
    frame.write_parquet(source)
    mapping = parse_mapping(
        {
            "source": {"timezone": "Europe/Paris"},
            "columns": {
                "product_code": "sku",
                "unit_price": "price",
                "timestamp": "at",
                "customer": "who",
                "discount": "pct",
            },
            "discount": {"kind": "percent"},
        },
        "inline.toml",
    )
    report = adapt_transactions(mapping, source, tmp_path / "out")
    assert report.rows_kept == 2 and report.reasons[0].reason == "missing_customer"
    assert report.reasons[0].dropped == 1
    shop = load_shop(tmp_path / "out")
    assert shop.events["customer_id"].to_list() == ["17850", "12"]
    assert shop.events["discount"].to_list() == [0.1, 0.0]
    assert shop.events["timestamp"][0] == dt.datetime(2024, 1, 1, 11, tzinfo=dt.UTC)  # Paris is UTC+1
    assert shop.items["category"].unique().to_list() == ["uncategorised"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"columns": BASIC_COLUMNS, "colums": {}}, "unknown section(s) ['colums']"),
        ({"columns": {**BASIC_COLUMNS, "sku": "SKU"}}, "[columns] has unknown key(s) ['sku']"),
        (
            {"columns": {k: v for k, v in BASIC_COLUMNS.items() if k != "customer"}},
            "lacks required mapping(s) ['customer']",
        ),
        (
            {"columns": BASIC_COLUMNS, "drop": {"duplicates": True}},
            "[drop] has unknown key(s) ['duplicates']",
        ),
        ({"columns": BASIC_COLUMNS, "drop": {"duplicate_rows": "yes"}}, "[drop] duplicate_rows must be"),
        (
            {"columns": BASIC_COLUMNS, "category": {"rules": [{"category": "x", "pattern": "(?P<a"}]}},
            "[[category.rules]] #1 pattern is not a valid regular expression",
        ),
        (
            {"columns": BASIC_COLUMNS, "tags": {"rules": [{"tag": "x", "pattern": "a", "on": "brand"}]}},
            "[[tags.rules]] #1 has unknown key(s) ['on']",
        ),
        (
            {"columns": BASIC_COLUMNS, "tags": {"rules": [{"tag": "x", "pattern": "a", "field": "brand"}]}},
            "[[tags.rules]] #1 field is 'brand', which neither [columns] nor [tables] maps",
        ),
        ({"columns": {**BASIC_COLUMNS, "coupon": "C"}}, "[discount] coupon_fraction is required"),
        ({"columns": BASIC_COLUMNS, "price_bands": {"edges": [3, 1], "tags": []}}, "increasing prices"),
        ({"columns": BASIC_COLUMNS, "price_bands": {"edges": [1], "tags": ["a"]}}, "must name 2 bands"),
        ({"columns": BASIC_COLUMNS, "source": {"timezone": "Mars/Olympus"}}, "not a known time zone"),
        ({"columns": BASIC_COLUMNS, "brand": {"private_labels": ["Own"]}}, "needs [columns] brand"),
    ],
)
def test_bad_mappings_name_the_file_and_key(document: dict[str, object], message: str) -> None:
    with pytest.raises(MappingError) as error:
        parse_mapping(document, "shops/acme.toml")
    assert str(error.value).startswith("shops/acme.toml: ")
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {
                "columns": {
                    **{k: v for k, v in BASIC_COLUMNS.items() if k != "product_code"},
                    "product_cod": "P",
                }
            },
            "[columns] has unknown key(s) ['product_cod'] (did you mean 'product_code'?)",
        ),
        ({"columns": BASIC_COLUMNS, "colums": {}}, "unknown section(s) ['colums'] (did you mean 'columns'?)"),
        (
            {"columns": BASIC_COLUMNS, "drop": {"duplicate_row": True}},
            "[drop] has unknown key(s) ['duplicate_row'] (did you mean 'duplicate_rows'?)",
        ),
        (
            {"columns": {**BASIC_COLUMNS, "quantiy": "Q", "sku": "S"}},
            "['quantiy', 'sku'] (did you mean 'quantity' for 'quantiy'?); allowed: age_band, brand,",
        ),
        (
            {
                "columns": BASIC_COLUMNS,
                "tables": {"products": {"file": "p.csv", "key": "SKU", "columns": {"brnd": "B"}}},
            },
            "[tables.products.columns] brnd is not a field of the products table (did you mean 'brand'?)",
        ),
    ],
)
def test_a_misspelt_mapping_key_gets_a_did_you_mean(document: dict[str, object], message: str) -> None:
    with pytest.raises(MappingError) as error:
        parse_mapping(document, "shops/acme.toml")
    assert str(error.value).startswith("shops/acme.toml: ") and message in str(error.value)
    if "allowed" not in message:
        assert "allowed" not in str(error.value)  # the suggestion says it; the list would bury it


def test_a_mapped_column_missing_from_the_export_names_mapping_key_and_file(
    tmp_path: Path, export: Path
) -> None:
    mapping_file = write(
        tmp_path, "typo.toml", MAPPING.replace('unit_price = "Price"', 'unit_price = "Prcie"')
    )
    with pytest.raises(MappingError) as error:
        adapt_transactions(load_mapping(mapping_file), export, tmp_path / "out")
    text = str(error.value)
    assert str(mapping_file) in text and "[columns] unit_price = 'Prcie'" in text
    assert str(export) in text and "Price" in text  # lists the export's real columns


def test_unparseable_cells_name_file_row_and_column(tmp_path: Path, mapping_file: Path) -> None:
    lines = list(LINES)
    lines[1] = "1001,B2,Store Oats,1,zero,2024-03-01 10:00:00,77,Shopwise,yes,,UK,25-34"
    lines[7] = lines[7].replace("2024-03-05 08:15:00", "05/03/2024")
    export = write(tmp_path, "bad.csv", HEADER + "\n".join(lines) + "\n")
    with pytest.raises(DataValidationError) as error:
        adapt_transactions(load_mapping(mapping_file), export, tmp_path / "out")
    issues = error.value.issues
    assert [(i.file, i.row, i.column) for i in issues] == [("bad.csv", 2, "Price"), ("bad.csv", 8, "SoldAt")]
    assert "cannot parse 'zero' as a number" in str(error.value)
    assert "bad.csv, row 8, column 'SoldAt'" in str(error.value)
    assert not (tmp_path / "out").exists()  # nothing half-written

    report = adapt_transactions(load_mapping(mapping_file), export, tmp_path / "out", skip_invalid=True)
    assert report.reasons[0].reason == "unparseable" and report.reasons[0].dropped == 2


def test_cli_adapt_prints_reason_table_and_json(
    tmp_path: Path, export: Path, mapping_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["adapt", "transactions", "--mapping", str(mapping_file), "--source", str(export)]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    table = capsys.readouterr().out
    assert "cancellation" in table and "rows left" in table and "events" in table
    assert main([*args, "--out", str(tmp_path / "b"), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["rows_kept"] == 4 and document["tables"]["items"] == 3


def test_cli_errors_exit_2_with_the_mapping_file(
    tmp_path: Path, export: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping_file = write(tmp_path, "bad.toml", MAPPING.replace("[drop]", "[drop]\nreturns = true"))
    code = main(
        [
            "adapt",
            "transactions",
            "--mapping",
            str(mapping_file),
            "--source",
            str(export),
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "bad.toml: [drop] has unknown key(s) ['returns']" in capsys.readouterr().err.replace("\n", "")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["1", "C2", "3"]),
            st.sampled_from(["A", "B", "POST"]),
            st.integers(-2, 3),
            st.sampled_from([-1.0, 0.0, 0.5, 2.0]),
            st.sampled_from(["", "7", "8"]),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_every_row_is_kept_or_counted_once(tmp_path_factory: pytest.TempPathFactory, rows: list) -> None:
    folder = tmp_path_factory.mktemp("prop")
    body = "".join(
        f"{i},{p},x,{q},{u},2024-01-0{1 + n % 9} 10:00:00,{c}\n" for n, (i, p, q, u, c) in enumerate(rows)
    )
    export = write(folder, "e.csv", "Order,SKU,Name,Qty,Price,SoldAt,Card\n" + body)
    mapping = parse_mapping(
        {"columns": BASIC_COLUMNS, "drop": {"cancellation_invoice_prefix": "C", "product_codes": ["POST"]}},
        "p.toml",
    )
    keepable = [
        r for r in rows if r[4] and not r[0].startswith("C") and r[2] > 0 and r[3] > 0 and r[1] != "POST"
    ]
    if not keepable:
        with pytest.raises(DataValidationError, match="no row is left"):
            adapt_transactions(mapping, export, folder / "out")
        return
    report = adapt_transactions(mapping, export, folder / "out")
    assert report.rows_kept == len(keepable)
    assert report.rows_kept + sum(r.dropped for r in report.reasons) == len(rows)
    lefts = [r.rows_left for r in report.reasons]
    assert lefts == sorted(lefts, reverse=True) and lefts[-1] == report.rows_kept
    assert all(r.dropped <= r.matching for r in report.reasons)
    assert load_shop(folder / "out").events.height == len(keepable)


def test_timestamp_format_is_sniffed_when_the_mapping_gives_none(tmp_path: Path) -> None:
    export = write(
        tmp_path, "s.csv", "SKU,Price,SoldAt,Card\nA,1.0,31/01/2024 14:05,1\nB,2.0,01/02/2024 09:00,2\n"
    )
    mapping = parse_mapping(
        {
            "columns": {
                k: v
                for k, v in BASIC_COLUMNS.items()
                if k in ("product_code", "unit_price", "timestamp", "customer")
            }
        },
        "m.toml",
    )
    adapt_transactions(mapping, export, tmp_path / "out")
    stamps = load_shop(tmp_path / "out").events.sort("event_id")["timestamp"].to_list()
    assert stamps == [
        dt.datetime(2024, 1, 31, 14, 5, tzinfo=dt.UTC),
        dt.datetime(2024, 2, 1, 9, tzinfo=dt.UTC),
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [("absent.csv", "transaction file not found"), ("book.xlsx", "unsupported file type '.xlsx'")],
)
def test_unusable_sources_are_named(tmp_path: Path, mapping_file: Path, name: str, message: str) -> None:
    if name.endswith(".xlsx"):
        write(tmp_path, name, "not a spreadsheet")
    with pytest.raises(MappingError, match=message):
        adapt_transactions(load_mapping(mapping_file), tmp_path / name, tmp_path / "out")


def test_a_malformed_or_semicolon_export_is_named_where_it_breaks(tmp_path: Path, mapping_file: Path) -> None:
    lines = list(LINES)
    lines[4] = lines[4].replace("Sunny,", "Sunny, Ltd,", 1)  # an unquoted comma: one cell too many
    export = write(tmp_path, "commas.csv", HEADER + "\n".join(lines) + "\n")
    with pytest.raises(MappingError, match=r"commas.csv, row 5 \(line 6\): 13 cells where the header has 12"):
        adapt_transactions(load_mapping(mapping_file), export, tmp_path / "out")
    export = write(tmp_path, "semi.csv", (HEADER + "\n".join(LINES) + "\n").replace(",", ";"))
    with pytest.raises(MappingError, match="the file looks ';'-separated"):
        adapt_transactions(load_mapping(mapping_file), export, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_output_folder_holding_csv_tables_is_refused_before_writing(
    tmp_path: Path, export: Path, mapping_file: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    write(out, "items.csv", "item_id,category,price\nx,y,1\n")
    with pytest.raises(MappingError, match=r"already holds items\.csv"):
        adapt_transactions(load_mapping(mapping_file), export, out)
    assert sorted(p.name for p in out.iterdir()) == ["items.csv"]


RETURNS_WITH_DISCOUNT = (
    "Order,SKU,Qty,Price,SoldAt,Card,Off\n"
    "1,A,2,1.50,2024-03-01 10:00:00,7,0.60\n"  # 0.30 off each of 2 units at 1.50: 1/6 off
    "2,A,0,0.00,2024-03-02 10:00:00,7,2.0\n"  # a return with the refunded discount: 0 units
    "3,B,1,4.00,2024-03-03 10:00:00,8,0\n"
    "4,B,0,4.00,2024-03-04 10:00:00,8,1.0\n"  # another zero-quantity line
)


def _amount_per_line_mapping() -> object:
    return parse_mapping(
        {
            "columns": {
                "invoice": "Order",
                "product_code": "SKU",
                "quantity": "Qty",
                "unit_price": "Price",
                "timestamp": "SoldAt",
                "customer": "Card",
                "discount": "Off",
            },
            "discount": {"kind": "amount_per_line"},
        },
        "lines.toml",
    )


def test_zero_quantity_returns_with_a_discount_are_dropped_as_returns_before_the_discount_is_derived(
    tmp_path: Path,
) -> None:
    export = write(tmp_path, "lines.csv", RETURNS_WITH_DISCOUNT)
    report = adapt_transactions(_amount_per_line_mapping(), export, tmp_path / "out")  # type: ignore[arg-type]
    reasons = {r.reason: r.dropped for r in report.reasons}
    assert reasons["return"] == 2 and report.rows_kept == 2
    events = load_shop(tmp_path / "out").events.sort("event_id")
    assert events["discount"].to_list() == pytest.approx([0.6 / (1.5 * 2 + 0.6), 0.0])


def test_a_bad_derived_discount_says_what_was_computed_from_what(tmp_path: Path) -> None:
    export = write(
        tmp_path,
        "lines.csv",
        RETURNS_WITH_DISCOUNT + "5,B,2,1.00,2024-03-05 10:00:00,8,-3.0\n",  # a negative amount off
    )
    with pytest.raises(DataValidationError) as error:
        adapt_transactions(_amount_per_line_mapping(), export, tmp_path / "out")  # type: ignore[arg-type]
    issues = error.value.issues
    assert [(i.file, i.row, i.column) for i in issues] == [("lines.csv", 5, "Off")]
    assert "discount fraction = amount -3.0 / (unit price 1.0 × quantity 2 + amount -3.0)" in str(error.value)
    report = adapt_transactions(
        _amount_per_line_mapping(),  # type: ignore[arg-type]
        export,
        tmp_path / "out",
        skip_invalid=True,
    )
    assert {r.reason: r.dropped for r in report.reasons}["invalid_derived_value"] == 1
    assert report.rows_kept == 2
