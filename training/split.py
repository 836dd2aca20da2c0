"""Train/test splits with a cold-start hold-out: a time split, or a predefined one shipped with the data.

Recommendation quality must be judged on the future, never on a random shuffle of the past: by default
the last ``test_days`` of events are the test period. Public benchmarks instead come with a fixed split
(MovieLens ua.base/ua.test: 10 ratings per user), and figures are only comparable with published ones
on that very split, so a data folder may name its test events in a file (``split_predefined``).
A seeded share of customers is also held out of model training entirely: the models never see their
ids, but persona inference still reads their history, the way a brand-new customer's first session
or signup survey gives a mix before any model retrain.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from numpy.typing import NDArray

from engine.data.csv_text import CsvFormatError, read_csv_text
from engine.data.loading import DataIssue, DataValidationError
from engine.errors import PersonaEngineError

ALL_EVENTS = "all_events"  # the split method of ``all_events_split``: nothing held out


class SplitError(PersonaEngineError, ValueError):
    """The events cannot be split into a training and a test period that can be evaluated."""


@dataclass(frozen=True)
class TimeSplit:
    test_start: dt.datetime
    train_events: pl.DataFrame
    test_events: pl.DataFrame
    warm_customers: tuple[str, ...]  # have training events and are not held out: the models' users
    cold_customers: tuple[str, ...]  # held out of model training, have training events (for their mix)
    # "time", "predefined" (test_start is then the earliest test event), or ALL_EVENTS
    method: str = "time"
    # the training period's customer ids in order of first appearance, when the split read them anyway
    # (every split here does; one built elsewhere may leave it None): ``prepare``'s id map starts with them
    train_customers: pl.Series | None = None

    @property
    def holds_out(self) -> bool:
        """Whether anything is held out: False for the all-events data the served models are refit on."""
        return self.method != ALL_EVENTS


class LoadedEvents:
    """The loaded events table, handed over to a split that releases it while it splits.

    Filtering the two periods out of a table that stays alive holds the events twice at the peak (4.3 GB
    at 10M events, 20 GB at 50M). Handed over in this wrapper, which gives the table away once, the
    split copies it one column at a time and lets each loaded column go as soon as both periods have
    their part: the peak is the table plus one column. The caller must hold no other reference.
    """

    def __init__(self, frame: pl.DataFrame) -> None:
        self._frame: pl.DataFrame | None = frame

    def peek(self) -> pl.DataFrame:
        """The table, for reading before the split takes it (do not keep the reference)."""
        if self._frame is None:
            raise RuntimeError("the loaded events were handed over already")
        return self._frame

    def take(self) -> pl.DataFrame:
        frame, self._frame = self.peek(), None
        return frame


def _readable(events: pl.DataFrame | LoadedEvents) -> pl.DataFrame:
    """The table to read columns from before the split (not to keep)."""
    return events if isinstance(events, pl.DataFrame) else events.peek()


def _partition(events: pl.DataFrame | LoadedEvents, in_first: pl.Series) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rows where ``in_first`` holds and the others, in their order (see ``LoadedEvents``)."""
    if isinstance(events, pl.DataFrame):
        return events.filter(in_first), events.filter(~in_first)
    # the loaded columns, held by this queue alone: each is freed once both periods have their part
    # (a frame's ``drop`` would do it too, but runs a query that copies a table whose columns are not
    # chunked alike into one chunk first)
    pending = deque(events.take().get_columns())
    in_second = ~in_first
    first: list[pl.Series] = []
    second: list[pl.Series] = []
    # the two filters of a column run side by side (polars releases the GIL); columns one at a time
    with ThreadPoolExecutor(2) as pool:
        while pending:
            column = pending.popleft()
            kept = list(pool.map(column.filter, (in_first, in_second)))
            first.append(kept[0])
            second.append(kept[1])
            del column, kept
    return pl.DataFrame(first), pl.DataFrame(second)


def _held_out(customer_ids: list[str], seed: int, share: float) -> NDArray[np.bool_]:
    """Per customer, whether the stable hash of ``seed:customer_id`` (BLAKE2b, 64 bits) falls under ``share``.

    The digests are joined and read as one array of big-endian integers: a million customers hash in
    a second, where one Python comparison per customer took four.
    """
    digests = b"".join(
        [hashlib.blake2b(f"{seed}:{c}".encode(), digest_size=8).digest() for c in customer_ids]
    )
    # a 64-bit integer to float64 and a division by 2^64 round exactly as Python's int / 2**64 does
    return np.asarray(np.frombuffer(digests, dtype=">u8").astype(np.float64) / 2.0**64 < share)


def split_events(
    events: pl.DataFrame | LoadedEvents, *, test_days: int, cold_start_share: float, seed: int
) -> TimeSplit:
    """Split on the last ``test_days`` days; hold out ``cold_start_share`` of customers by a stable hash.

    The hash makes the hold-out independent of row order and stable across re-runs and data growth.
    """
    timestamps = _readable(events)["timestamp"]
    if timestamps.len() == 0:
        raise ValueError("cannot split an empty events table")
    last = timestamps.max()
    assert isinstance(last, dt.datetime)
    test_start = last - dt.timedelta(days=test_days)
    in_train = timestamps < test_start
    del timestamps
    train, test, customers, (warm, cold) = _partition_and_hold_out(events, in_train, cold_start_share, seed)
    period = f"the test period ([split] test_days = {test_days}: from {test_start.isoformat()} on)"
    if train.height == 0:
        raise SplitError(f"no events before {period}; lower [split] test_days")
    if not test["customer_id"].is_in(customers.implode()).any():  # customers with training events
        raise SplitError(
            f"no event in {period} is by a customer seen before it, so there is nothing to evaluate "
            f"({test.height} event(s) in it). Is the latest timestamp, {last.isoformat()}, right? "
            "Otherwise raise [split] test_days"
        )
    return TimeSplit(
        test_start=test_start,
        train_events=train,
        test_events=test,
        warm_customers=warm,
        cold_customers=cold,
        train_customers=customers,
    )


def all_events_split(events: pl.DataFrame) -> TimeSplit:
    """Every event for training and no customer held out: the data the served models are refit on.

    Once the split has measured what the models are worth, holding the freshest weeks and a tenth of
    the customers back from the models that are served would only make production worse. Nothing is
    left to test: ``test_events`` is empty and ``test_start`` lies just after the last event.
    """
    if events.height == 0:
        raise ValueError("cannot train on an empty events table")
    last = events["timestamp"].max()
    assert isinstance(last, dt.datetime)
    customers = events["customer_id"].cast(pl.Utf8).unique(maintain_order=True)
    return TimeSplit(
        test_start=last + dt.timedelta(microseconds=1),
        train_events=events,
        test_events=events.clear(),
        warm_customers=tuple(customers.to_list()),
        cold_customers=(),
        method=ALL_EVENTS,
        train_customers=customers,
    )


def _partition_and_hold_out(
    events: pl.DataFrame | LoadedEvents, in_train: pl.Series, cold_start_share: float, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame, pl.Series, tuple[tuple[str, ...], tuple[str, ...]]]:
    """``_partition``, the training customers in order, and their hold-out, hashed on a thread meanwhile.

    The hashing is a Python loop (a second per million customers) and the partition polars filters
    that release the GIL, so the two overlap; the customers are read before the partition consumes
    the loaded table, in the order the training rows keep.
    """
    customers = _readable(events)["customer_id"].filter(in_train).cast(pl.Utf8).unique(maintain_order=True)
    with ThreadPoolExecutor(1) as pool:
        held_out = pool.submit(_hold_out_customers, customers.to_list(), cold_start_share, seed)
        train, test = _partition(events, in_train)
        return train, test, customers, held_out.result()


def _hold_out_customers(
    train_customers: list[str], cold_start_share: float, seed: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    held_out = _held_out(train_customers, seed, cold_start_share).tolist()
    cold = tuple(c for c, out in zip(train_customers, held_out, strict=True) if out)
    warm = tuple(c for c, out in zip(train_customers, held_out, strict=True) if not out)
    return warm, cold


def read_test_event_ids(path: Path, events: pl.DataFrame) -> pl.Series:
    """The ``event_id`` column of a predefined split's test file; every id must be a loaded event.

    Errors name the file, row and column, like every data error: a test file that silently matched
    nothing would evaluate on an empty test set.
    """
    if not path.is_file():
        raise DataValidationError(
            [DataIssue(str(path), None, None, "predefined split: no test events file", "missing_table")]
        )
    try:
        frame = read_csv_text(path)
    except CsvFormatError as fault:
        issue = DataIssue(path.name, fault.row, fault.column, fault.message, "malformed_csv", fault.line)
        raise DataValidationError([issue]) from None
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as error:
        raise DataValidationError(
            [DataIssue(path.name, None, None, f"not a readable CSV file: {error}", "unreadable_file")]
        ) from None
    if "event_id" not in frame.columns:
        raise DataValidationError(
            [DataIssue(path.name, None, "event_id", "missing column 'event_id'", "missing_column")]
        )
    ids = frame["event_id"]
    known = events["event_id"].cast(pl.Utf8)
    problems = (ids.is_null() | ~ids.is_in(known.implode()) | ids.is_duplicated()).to_numpy()
    issues = []
    for row in problems.nonzero()[0][:20].tolist():
        value = ids[row]
        if value is None:
            message = "empty event id"
        elif ids.is_duplicated()[row]:
            message = f"event id {value!r} is listed more than once"
        else:
            message = f"event id {value!r} is not in the events table"
        issues.append(DataIssue(path.name, row + 1, "event_id", message, "unknown_event", line=row + 2))
    if issues:
        raise DataValidationError(issues, total=int(problems.sum()))
    if ids.len() == 0:
        raise DataValidationError(
            [DataIssue(path.name, None, "event_id", "lists no test events", "empty_file")]
        )
    return ids


def split_predefined(
    events: pl.DataFrame | LoadedEvents, test_event_ids: pl.Series, *, cold_start_share: float, seed: int
) -> TimeSplit:
    """Test events are the listed ones, the rest is training; cold-start hold-out as in the time split."""
    in_train = ~_readable(events)["event_id"].cast(pl.Utf8).is_in(test_event_ids.implode())
    train, test, customers, (warm, cold) = _partition_and_hold_out(events, in_train, cold_start_share, seed)
    if train.height == 0 or test.height == 0:
        raise ValueError(f"predefined split leaves {train.height} training and {test.height} test events")
    first_test = test["timestamp"].min()
    assert isinstance(first_test, dt.datetime)
    return TimeSplit(
        test_start=first_test,
        train_events=train,
        test_events=test,
        warm_customers=warm,
        cold_customers=cold,
        method="predefined",
        train_customers=customers,
    )
