"""MovieLens 100K: the adapter on the real files, the predefined split, and malformed source files."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from cli.main import main
from engine.data.loading import DataValidationError, load_shop
from engine.personas.catalog import load_catalog
from training.config import ConfigError, parse_config
from training.movielens_adapter import (
    TEST_EVENTS_FILE,
    MovieLensSourceError,
    adapt_movielens,
)
from training.split import read_test_event_ids, split_predefined

RATING_COUNTS = {1: 6110, 2: 11370, 3: 27145, 4: 34174, 5: 21201}  # ml-100k README


@pytest.fixture(scope="module")
def ml100k(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ml-100k adapted once, through the command line as a user would."""
    out = tmp_path_factory.mktemp("ml100k")
    code = main(["adapt", "movielens", "--source", str(shared_data / "ml-100k"), "--out", str(out), "--json"])
    assert code == 0
    return out


def test_every_rating_becomes_an_event_and_the_shop_loads(ml100k: Path) -> None:
    shop = load_shop(ml100k)
    assert shop.events.height == 100_000
    assert shop.items.height == 1682
    assert shop.customers is not None and shop.customers.height == 943
    assert set(shop.events["event_type"].unique()) == {"purchase"}
    assert shop.events["event_id"].n_unique() == 100_000
    # Gender and occupation survive loading as customer attributes; prices are the documented constant.
    assert set(shop.customers["gender"].unique()) == {"M", "F"}
    assert shop.customers["occupation"].n_unique() == 21
    assert shop.items["price"].unique().to_list() == [1.0]
    toy_story = shop.items.filter(pl.col("item_id") == "1").row(0, named=True)
    assert toy_story["category"] == "animation"  # first genre flag in u.genre order
    assert {"animation", "childrens", "comedy", "recent"} <= set(toy_story["tags"])


def test_ua_test_is_the_predefined_split_with_ten_ratings_per_user(ml100k: Path) -> None:
    shop = load_shop(ml100k)
    ids = read_test_event_ids(ml100k / TEST_EVENTS_FILE, shop.events)
    split = split_predefined(shop.events, ids, cold_start_share=0.1, seed=13)
    assert (split.train_events.height, split.test_events.height) == (90_570, 9_430)
    assert set(split.test_events.group_by("customer_id").len()["len"].to_list()) == {10}
    assert split.method == "predefined"
    assert 60 <= len(split.cold_customers) <= 130  # ~10% of 943, by seeded hash
    assert not set(split.cold_customers) & set(split.warm_customers)


def test_positive_threshold_keeps_liked_ratings_only(shared_data: Path, tmp_path: Path) -> None:
    summary = adapt_movielens(shared_data / "ml-100k", tmp_path, positive_threshold=4)
    assert summary.counts["events"] == RATING_COUNTS[4] + RATING_COUNTS[5]
    assert summary.counts["train_events"] + summary.counts["test_events"] == summary.counts["events"]
    test_ids = pl.read_csv(tmp_path / TEST_EVENTS_FILE)["event_id"]
    assert test_ids.len() == summary.counts["test_events"]


def test_movielens_catalog_signals_name_real_genres_and_tags(ml100k: Path) -> None:
    catalog = load_catalog("movielens")
    items = pl.read_parquet(ml100k / "items.parquet")
    tags = set(items["tags"].explode().to_list())
    categories = set(items["category"].to_list())
    for persona in catalog.personas:
        assert set(persona.signals.tags) <= tags, persona.id
        assert set(persona.signals.categories) <= categories, persona.id


def test_adapter_writes_only_its_own_files(ml100k: Path) -> None:
    names = {p.name for p in ml100k.iterdir()}
    assert names == {"events.parquet", "items.parquet", "customers.parquet", TEST_EVENTS_FILE, "adapter.json"}


# ------------------------------------------------------------------------------ malformed sources

GENRES = "unknown|0\nAction|1\nComedy|2\n"
USERS = "1|24|M|technician|85711\n2|53|F|other|T8H1N\n"
ITEMS = "1|Film A (1995)|01-Jan-1995||http://x|0|1|0\n2|Film B (1950)|01-Jan-1950||http://y|0|0|1\n"
BASE = "1\t1\t5\t874965758\n2\t2\t3\t874965759\n1\t2\t1\t874965760\n"
TEST = "2\t1\t4\t874965761\n"


def _write(folder: Path, **overrides: str) -> Path:
    files = {"u.genre": GENRES, "u.user": USERS, "u.item": ITEMS, "ua.base": BASE, "ua.test": TEST}
    for name, text in files.items():
        (folder / name).write_text(overrides.get(name.replace(".", "_"), text), encoding="latin-1")
    return folder


def test_tiny_valid_source_adapts(tmp_path: Path) -> None:
    summary = adapt_movielens(_write(tmp_path), tmp_path / "out", positive_threshold=1)
    assert summary.counts == {
        "events": 4,
        "train_events": 3,
        "test_events": 1,
        "ratings_dropped_below_threshold": 0,
        "items": 2,
        "customers": 2,
    }
    shop = load_shop(tmp_path / "out")
    assert shop.customers is not None
    assert shop.customers["region"].to_list() == ["zip8", "outside-us"]
    assert "classic" in shop.items.filter(pl.col("item_id") == "2")["tags"].to_list()[0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ua_base": "1\t1\t7\t874965758\n"}, "ua.base, line 1, field 'rating': 7 is outside 1..5"),
        ({"ua_base": "1\t1\t5\n"}, "ua.base, line 1: expected 4 '\\t'-separated fields, found 3"),
        (
            {"ua_test": "2\t1\t4\t874965761\nx\t1\t4\t874965761\n"},
            "ua.test, line 2, field 'user id': not an integer",
        ),
        ({"ua_test": "2\t9\t4\t874965761\n"}, "ua.test, row 1, field 'item id': '9' is not in u.item"),
        ({"ua_test": "1\t1\t4\t874965761\n"}, "ua.test, row 1: user 1 rated item 1 twice"),
        (
            {"u_item": "1|Film A|01-Jan-1995||u|0|1\n"},
            "u.item, line 1: expected 8 '|'-separated fields, found 7",
        ),
        (
            {"u_item": "1|Film A|1995||u|0|1|0\n"},
            "u.item, line 1, field 'release date': expected DD-Mon-YYYY",
        ),
        (
            {"u_item": "1|Film A|01-Jan-1995||u|0|2|0\n"},
            "u.item, line 1, field \"genre 'Action'\": 2 is outside 0..1",
        ),
        ({"u_user": "1|24|X|technician|85711\n"}, "u.user, line 1, field 'gender': expected M or F"),
        ({"u_genre": "Action|1\n"}, "u.genre: genre indices must be 0..n-1"),
    ],
)
def test_malformed_sources_name_file_line_and_field(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(MovieLensSourceError, match=re.escape(message)):
        adapt_movielens(_write(tmp_path, **overrides), tmp_path / "out")


def test_cli_reports_a_bad_source_with_exit_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write(tmp_path, ua_base="1\t1\tfive\t874965758\n")
    code = main(["adapt", "movielens", "--source", str(source), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "ua.base, line 1, field 'rating': not an integer: 'five'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as missing:
        main(["adapt", "movielens", "--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert missing.value.code == 2


def test_bad_test_event_files_name_file_row_and_column(tmp_path: Path) -> None:
    adapt_movielens(_write(tmp_path), tmp_path / "out")
    events = load_shop(tmp_path / "out").events
    bad = tmp_path / "bad.csv"
    bad.write_text("event_id\n2-1\nno-such-event\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"bad.csv, row 2 \(line 3\), column 'event_id': event id "):
        read_test_event_ids(bad, events)
    bad.write_text("id\n2-1\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match="missing column 'event_id'"):
        read_test_event_ids(bad, events)
    with pytest.raises(DataValidationError, match="no test events file"):
        read_test_event_ids(tmp_path / "absent.csv", events)


def test_split_method_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"\[split\] method must be one of time, predefined"):
        parse_config({"split": {"method": "random"}})
    config = parse_config({"split": {"method": "predefined", "test_events": "ua.csv"}})
    assert config.split.test_events == "ua.csv"


def test_adapt_refuses_a_folder_that_holds_files_unless_told_to_replace_its_data_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Adapting over another data set's folder kept its adaptation report and rejected rows beside the
    new tables (a data scientist's walkthrough); the folder is refused, or its data files replaced."""
    source, out = _write(tmp_path), tmp_path / "out"
    argv = ["adapt", "movielens", "--source", str(source), "--out", str(out)]
    assert main(argv) == 0
    (out / "rejected_rows.parquet").write_bytes(b"from an earlier Online Retail adapt")
    capsys.readouterr()
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"argument --out: {out} already holds adapter.json, customers.parquet, events.parquet" in err
    assert "pass --overwrite" in err
    assert main([*argv, "--overwrite"]) == 0
    assert not (out / "rejected_rows.parquet").exists() and load_shop(out).events.height == 4
    (out / "notes.txt").write_text("mine\n", encoding="utf-8")
    assert main([*argv, "--overwrite"]) == 2
    assert "holds files adapt does not write (notes.txt)" in " ".join(capsys.readouterr().err.split())
    assert (out / "notes.txt").exists() and (out / "events.parquet").exists()  # nothing removed
