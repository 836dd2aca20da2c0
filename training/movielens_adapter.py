"""``persona-engine adapt movielens``: MovieLens 100K as a shop folder that ``load_shop`` reads.

MovieLens is the field's common yardstick, so the engine's models can be compared with published and
library figures on it. It is not a shop, and the mapping says so wherever it has to invent something:

- ratings -> events. Each rating at or above ``positive_threshold`` becomes one ``purchase`` event
  (the user chose and watched the film); lower ratings are dropped, because every event counts as a
  positive downstream. Threshold 1 keeps every rating, LightFM's documented ua.base/ua.test protocol;
  4 keeps "liked" films only. event_id is ``<user>-<item>`` (a user rates a film once).
- items. ``category`` is the primary genre: the first genre flag set, in MovieLens' own genre order
  (u.genre), because the contract needs exactly one category and the data gives no ranking of genres.
  Every genre is also a tag, so no genre is lost. ``price`` is the constant ``PLACEHOLDER_PRICE``:
  MovieLens has no prices, and a constant makes every film the same price band, so no model and no
  persona signal can learn from an invented price. ``brand`` stays empty for the same reason.
  Two behavioural tag families describe how people watch, not what: the release era (``classic``
  before 1970, ``recent`` from 1995, the last years of the data) and the audience size counted on the
  *training* ratings only (``blockbuster`` for the 10% most rated films, ``niche`` for films at or
  below the median), so the test ratings never shape a feature.
- customers. ``age_band`` from the age, ``region`` the US zip code's first digit (the national area;
  ``outside-us`` for Canadian and other codes), ``gender`` and ``occupation`` as given.
- split. ua.base/ua.test (exactly 10 test ratings per user) are kept as a predefined split: the ids of
  the test events go to ``test_events.csv`` for ``[split] method = "predefined"``.

The source files are only read (never copied into the output): the data's terms forbid redistribution.
Malformed source rows raise ``MovieLensSourceError`` naming the file, line and field.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from engine.errors import PersonaEngineError

PLACEHOLDER_PRICE = 1.0
TEST_EVENTS_FILE = "test_events.csv"
ADAPTER_REPORT_FILE = "adapter.json"
SOURCE_FILES = ("u.user", "u.item", "u.genre", "ua.base", "ua.test")
CLASSIC_BEFORE = 1970
RECENT_FROM = 1995
BLOCKBUSTER_SHARE = 0.10
AGE_BANDS: tuple[tuple[int, str], ...] = (
    (18, "under-18"),
    (25, "18-24"),
    (35, "25-34"),
    (45, "35-44"),
    (55, "45-54"),
    (65, "55-64"),
)


class MovieLensSourceError(PersonaEngineError, ValueError):
    """A MovieLens source file that cannot be read as documented; names the file, line and field."""


@dataclass(frozen=True)
class Rating:
    user: str
    item: str
    rating: int
    timestamp: int


@dataclass(frozen=True)
class AdaptSummary:
    out_dir: Path
    counts: dict[str, int]
    positive_threshold: int


def _fields(path: Path, line_no: int, line: str, separator: str, expected: int) -> list[str]:
    parts = line.split(separator)
    if len(parts) != expected:
        raise MovieLensSourceError(
            f"{path.name}, line {line_no}: expected {expected} {separator!r}-separated fields, "
            f"found {len(parts)}: {line[:80]!r}"
        )
    return parts


def _integer(path: Path, line_no: int, field: str, value: str, low: int, high: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise MovieLensSourceError(
            f"{path.name}, line {line_no}, field {field!r}: not an integer: {value!r}"
        ) from None
    if number < low or (high is not None and number > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise MovieLensSourceError(
            f"{path.name}, line {line_no}, field {field!r}: {number} is outside {bound}"
        )
    return number


def _lines(path: Path, encoding: str = "utf-8") -> list[tuple[int, str]]:
    if not path.is_file():
        raise MovieLensSourceError(f"{path}: MovieLens file not found (expected the ml-100k folder)")
    try:
        text = path.read_bytes().decode(encoding)
    except UnicodeDecodeError as error:
        raise MovieLensSourceError(f"{path.name}: not {encoding} text ({error})") from None
    return [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_genres(path: Path) -> list[str]:
    """Genre names in index order (u.genre: ``name|index``)."""
    genres: dict[int, str] = {}
    for line_no, line in _lines(path, "latin-1"):
        name, index = _fields(path, line_no, line, "|", 2)
        position = _integer(path, line_no, "index", index, 0)
        if not name:
            raise MovieLensSourceError(f"{path.name}, line {line_no}, field 'name': empty genre name")
        genres[position] = name
    if sorted(genres) != list(range(len(genres))) or not genres:
        raise MovieLensSourceError(f"{path.name}: genre indices must be 0..n-1, got {sorted(genres)}")
    return [genres[i] for i in range(len(genres))]


def genre_tag(name: str) -> str:
    """``Children's`` -> ``childrens``, ``Sci-Fi`` -> ``sci-fi``: tags are lower-case words."""
    return name.lower().replace("'", "").replace(" ", "-")


def read_ratings(path: Path) -> list[Rating]:
    """u.data-style rows: ``user \\t item \\t rating \\t unix seconds``."""
    ratings = []
    for line_no, line in _lines(path):
        user, item, rating, stamp = _fields(path, line_no, line, "\t", 4)
        _integer(path, line_no, "user id", user, 1)
        _integer(path, line_no, "item id", item, 1)
        ratings.append(
            Rating(
                user=user.strip(),
                item=item.strip(),
                rating=_integer(path, line_no, "rating", rating, 1, 5),
                timestamp=_integer(path, line_no, "timestamp", stamp, 0),
            )
        )
    return ratings


def _age_band(age: int) -> str:
    for upper, band in AGE_BANDS:
        if age < upper:
            return band
    return "65+"


def read_users(path: Path) -> pl.DataFrame:
    """u.user: ``id|age|gender|occupation|zip`` -> the contract's customers table (+ gender, occupation)."""
    rows: dict[str, list[Any]] = {
        k: [] for k in ("customer_id", "age_band", "region", "gender", "occupation")
    }
    for line_no, line in _lines(path, "latin-1"):
        user, age, gender, occupation, zip_code = _fields(path, line_no, line, "|", 5)
        _integer(path, line_no, "user id", user, 1)
        if gender not in ("M", "F"):
            raise MovieLensSourceError(
                f"{path.name}, line {line_no}, field 'gender': expected M or F, got {gender!r}"
            )
        if not occupation:
            raise MovieLensSourceError(f"{path.name}, line {line_no}, field 'occupation': empty")
        rows["customer_id"].append(user)
        rows["age_band"].append(_age_band(_integer(path, line_no, "age", age, 1, 120)))
        rows["region"].append(f"zip{zip_code[0]}" if zip_code[:1].isdigit() else "outside-us")
        rows["gender"].append(gender)
        rows["occupation"].append(occupation)
    frame = pl.DataFrame(rows, schema=dict.fromkeys(rows, pl.Utf8))
    duplicated = frame.filter(pl.col("customer_id").is_duplicated())["customer_id"].to_list()
    if duplicated:
        raise MovieLensSourceError(f"{path.name}: user id {duplicated[0]!r} appears more than once")
    return frame


def _release_year(path: Path, line_no: int, value: str) -> int | None:
    if not value:
        return None  # one film in ml-100k has no release date
    try:
        return dt.datetime.strptime(value, "%d-%b-%Y").year
    except ValueError:
        raise MovieLensSourceError(
            f"{path.name}, line {line_no}, field 'release date': expected DD-Mon-YYYY, got {value!r}"
        ) from None


def read_items(path: Path, genres: list[str], training: list[Rating]) -> pl.DataFrame:
    """u.item (latin-1): ``id|title|release|video release|url|<one 0/1 flag per genre>``."""
    counts = Counter(r.item for r in training)
    ordered = sorted(counts.values(), reverse=True)
    blockbuster_min = ordered[max(0, int(len(ordered) * BLOCKBUSTER_SHARE) - 1)] if ordered else 1
    rows: dict[str, list[Any]] = {
        k: [] for k in ("item_id", "title", "category", "price", "tags", "in_stock")
    }
    seen_counts: list[int] = []
    parsed: list[tuple[str, str, str, list[str], int | None]] = []
    for line_no, line in _lines(path, "latin-1"):
        parts = _fields(path, line_no, line, "|", 5 + len(genres))
        item = parts[0]
        _integer(path, line_no, "item id", item, 1)
        flags = [_integer(path, line_no, f"genre {genres[g]!r}", v, 0, 1) for g, v in enumerate(parts[5:])]
        names = [genres[g] for g, flag in enumerate(flags) if flag]
        if not names:
            raise MovieLensSourceError(f"{path.name}, line {line_no}: no genre flag is set")
        parsed.append(
            (
                item,
                parts[1],
                genre_tag(names[0]),
                [genre_tag(n) for n in names],
                _release_year(path, line_no, parts[2]),
            )
        )
        seen_counts.append(counts.get(item, 0))
    median = sorted(seen_counts)[len(seen_counts) // 2] if seen_counts else 0
    for (item, title, category, tags, year), n in zip(parsed, seen_counts, strict=True):
        behaviour = []
        if year is not None and year < CLASSIC_BEFORE:
            behaviour.append("classic")
        if year is not None and year >= RECENT_FROM:
            behaviour.append("recent")
        if n >= blockbuster_min:
            behaviour.append("blockbuster")
        elif n <= median:
            behaviour.append("niche")
        rows["item_id"].append(item)
        rows["title"].append(title)
        rows["category"].append(category)
        rows["price"].append(PLACEHOLDER_PRICE)
        rows["tags"].append(tags + behaviour)
        rows["in_stock"].append(True)
    frame = pl.DataFrame(
        rows,
        schema={
            "item_id": pl.Utf8,
            "title": pl.Utf8,
            "category": pl.Utf8,
            "price": pl.Float64,
            "tags": pl.List(pl.Utf8),
            "in_stock": pl.Boolean,
        },
    )
    duplicated = frame.filter(pl.col("item_id").is_duplicated())["item_id"].to_list()
    if duplicated:
        raise MovieLensSourceError(f"{path.name}: item id {duplicated[0]!r} appears more than once")
    return frame


def _events(ratings: list[Rating], threshold: int) -> pl.DataFrame:
    kept = [r for r in ratings if r.rating >= threshold]
    return pl.DataFrame(
        {
            "event_id": [f"{r.user}-{r.item}" for r in kept],
            "customer_id": [r.user for r in kept],
            "item_id": [r.item for r in kept],
            "event_type": ["purchase"] * len(kept),
            "timestamp": [r.timestamp for r in kept],
        },
        schema={
            "event_id": pl.Utf8,
            "customer_id": pl.Utf8,
            "item_id": pl.Utf8,
            "event_type": pl.Utf8,
            "timestamp": pl.Int64,
        },
    ).with_columns(
        pl.from_epoch("timestamp", time_unit="s").dt.replace_time_zone("UTC").dt.cast_time_unit("us")
    )


def _check_references(
    base: list[Rating], test: list[Rating], users: pl.DataFrame, items: pl.DataFrame
) -> None:
    known_users = set(users["customer_id"].to_list())
    known_items = set(items["item_id"].to_list())
    seen: set[tuple[str, str]] = set()
    for name, ratings in (("ua.base", base), ("ua.test", test)):
        for row, r in enumerate(ratings, 1):
            if r.user not in known_users:
                raise MovieLensSourceError(f"{name}, row {row}, field 'user id': {r.user!r} is not in u.user")
            if r.item not in known_items:
                raise MovieLensSourceError(f"{name}, row {row}, field 'item id': {r.item!r} is not in u.item")
            if (r.user, r.item) in seen:
                raise MovieLensSourceError(
                    f"{name}, row {row}: user {r.user} rated item {r.item} twice (in ua.base and ua.test "
                    "together); the split must partition the ratings"
                )
            seen.add((r.user, r.item))


def adapt_movielens(source: Path, out_dir: Path, *, positive_threshold: int = 1) -> AdaptSummary:
    """Read ml-100k from ``source`` and write events, items, customers and the ua test ids to ``out_dir``."""
    if not 1 <= positive_threshold <= 5:
        raise MovieLensSourceError(f"--positive-threshold must be a rating in 1..5, got {positive_threshold}")
    source = Path(source)
    genres = read_genres(source / "u.genre")
    base = read_ratings(source / "ua.base")
    test = read_ratings(source / "ua.test")
    users = read_users(source / "u.user")
    items = read_items(source / "u.item", genres, base)
    _check_references(base, test, users, items)
    train_events = _events(base, positive_threshold)
    test_events = _events(test, positive_threshold)
    events = pl.concat([train_events, test_events]).sort("timestamp", "event_id")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    events.write_parquet(out_dir / "events.parquet")
    items.write_parquet(out_dir / "items.parquet")
    users.write_parquet(out_dir / "customers.parquet")
    test_events.select("event_id").write_csv(out_dir / TEST_EVENTS_FILE)
    counts = {
        "events": events.height,
        "train_events": train_events.height,
        "test_events": test_events.height,
        "ratings_dropped_below_threshold": len(base) + len(test) - events.height,
        "items": items.height,
        "customers": users.height,
    }
    report = {
        "source": "MovieLens 100K (GroupLens), ua.base/ua.test",
        "source_folder": str(source.resolve()),
        "positive_threshold": positive_threshold,
        "placeholder_price": PLACEHOLDER_PRICE,
        "counts": counts,
    }
    (out_dir / ADAPTER_REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return AdaptSummary(out_dir=out_dir, counts=counts, positive_threshold=positive_threshold)
