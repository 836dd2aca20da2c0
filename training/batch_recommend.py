"""``persona-engine batch-recommend``: the top-k products of every customer, for campaigns, to Parquet.

Campaign tools (e-mail, direct mail, app push) want one file with each customer's list, computed
offline from the same artifact the server answers from, so an e-mail and the website never disagree.
The job goes through ``Personalizer.recommend_products``, the serving path's batched scoring, so the
lists are exactly what the API would return for the same customer, mix and filters. ``customer_lists``
is also what ``persona-engine recommend`` shows for one customer, so the two commands never disagree:
both leave out what the customer bought (the API's default) unless asked to leave out everything they
saw (``exclude="seen"``, the offline evaluation's protocol), and both say which rule they applied.

Memory stays bounded whatever the number of customers and the list length: customers are processed in
chunks of at most ``MAX_ROWS_PER_STEP`` rows, and each chunk's rows are appended to the Parquet file as a
row group before the next chunk is scored. A ``k`` above the catalog's size is cut to it
(``list_length``): no list can hold more, and the report then says how long the lists really are.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine.data.csv_text import CsvFormatError, csv_header, read_csv_text
from engine.errors import PersonaEngineError
from engine.personalization_request import CustomerTarget, ProductRequest, SessionContext
from engine.personalizer import Personalizer, ProductList
from engine.personas.mix import PersonaMix
from engine.ranking.product_lists import row_indices

# What each exclusion rule leaves out of a customer's list; "purchased" is the API's default.
EXCLUSION_RULES: dict[str, str] = {
    "purchased": "items the customer bought",
    "seen": "items the customer viewed, carted or bought",
}
DEFAULT_EXCLUSION = "purchased"

MAX_ROWS_PER_STEP = 1_000_000
"""Rows one chunk of ``batch_recommend`` may hold: its customers are fewer when ``k`` is long. The default
4,096 customers at -k 100000 on a 2,000-item catalog (every item listed) held 8 million rows at once and
peaked at 3.7 GB; a 100,000-item catalog would have needed fifty times that."""

OUTPUT_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("rank", pa.int32()),
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("category", pa.string()),
        ("price", pa.float64()),
        ("score", pa.float64()),
        ("reason", pa.string()),
        ("cold_start", pa.bool_()),
        ("mix_source", pa.string()),
    ]
)


def list_length(personalizer: Personalizer, k: int) -> int:
    """``k``, or the catalog's size when ``k`` is larger: no list can hold more items than the catalog."""
    return min(k, len(personalizer.items))


class CustomerListError(PersonaEngineError, ValueError):
    """A customer list that cannot be read; names the file (and column) at fault."""


@dataclass(frozen=True)
class BatchRecommendReport:
    out: str
    model: str
    model_version: str
    k: int  # the lists' length: the requested one, or the catalog's size when that is smaller
    customers: int
    unknown_customers: int  # ids the artifact never saw: served the population's mix (cold start)
    rows: int
    seconds: float
    excluded: str = DEFAULT_EXCLUSION  # a key of EXCLUSION_RULES
    requested_k: int | None = None  # the k asked for, when more than the catalog holds

    @property
    def customers_per_second(self) -> float:
        return self.customers / self.seconds if self.seconds > 0 else float("nan")


class CustomerIds(list[str]):
    """Distinct customer ids in the order given, and where each was first given: ``places[id]`` is
    "row 3" of a file (data rows counted from 1) or "item 2" of a comma list, for messages."""

    def __init__(self, ids: Sequence[str | None], unit: str) -> None:
        places: dict[str, str] = {}
        for position, customer in enumerate(ids, start=1):
            if customer and customer not in places:
                places[customer] = f"{unit} {position}"
        super().__init__(places)
        self.places = places


def _some_ids(path: Path, ids: Sequence[str | None]) -> CustomerIds:
    """The distinct non-empty ids, in order; a file without any is refused (no ids is not "everyone")."""
    distinct = CustomerIds(ids, "row")
    if not distinct:
        raise CustomerListError(f"{path}: the customer list holds no customer id")
    return distinct


def known_spelling(personalizer: Personalizer, customer: str) -> str | None:
    """The id the artifact knows that ``customer`` spells another way, if any: the same text trimmed,
    or a whole number written as a float (an export's 17850.0 for the customer 17850, as pandas and
    spreadsheets write a numeric id column). None when ``customer`` is known, or unknown either way."""
    if personalizer.mixes.row_of(customer) >= 0:
        return None
    candidates = [customer.strip()]
    try:
        number = float(customer)
    except ValueError:
        pass
    else:
        if number.is_integer() and abs(number) < 2**63:
            candidates.append(str(int(number)))
    return next((c for c in candidates if c != customer and personalizer.mixes.row_of(c) >= 0), None)


def refuse_respelled_ids(personalizer: Personalizer, ids: CustomerIds, source: str) -> None:
    """Refuse a list whose unknown ids are known customers written another way (``known_spelling``):
    served as strangers, every one of them would get a persona-only list, with exit status 0."""
    respelled = [(given, known) for given in ids if (known := known_spelling(personalizer, given))]
    if respelled:
        given, known = respelled[0]
        raise CustomerListError(
            f"{source}, {ids.places[given]}: {given!r} is not a customer the artifact knows, but {known!r} "
            f"is; {len(respelled):,} of the {len(ids):,} ids are like it (a numeric column read as float, "
            "or padded text?): write the ids as the shop's tables have them"
        )


def read_customer_ids(spec: str) -> CustomerIds:
    """Ids from a file (.csv/.parquet with a customer_id column, or .txt one per line) or a comma list."""
    path = Path(spec)
    if path.suffix.lower() in (".csv", ".parquet", ".txt") or path.is_file():
        if not path.is_file():
            raise CustomerListError(f"{path}: no such file")
        # Every way a file can fail to be a list of ids (not UTF-8, corrupt, a column of lists) is one
        # message naming the file: a traceback here was a fuzz finding.
        try:
            if path.suffix.lower() == ".txt":
                lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
                return _some_ids(path, lines)
            parquet = path.suffix.lower() == ".parquet"
            columns = list(pl.read_parquet_schema(path)) if parquet else csv_header(path)
            if "customer_id" not in columns:
                raise CustomerListError(
                    f"{path}: needs a customer_id column (columns found: {', '.join(columns) or 'none'})"
                )
            frame = (
                pl.read_parquet(path, columns=["customer_id"])
                if parquet
                else read_csv_text(path, ["customer_id"], header=columns)
            )
            column = frame.to_series().cast(pl.String).str.strip_chars()
        except CsvFormatError as fault:
            raise CustomerListError(fault.located(f"{path}: cannot read the customer list")) from None
        except (OSError, UnicodeDecodeError, pl.exceptions.PolarsError) as problem:
            first_line = (str(problem).strip().splitlines() or [type(problem).__name__])[0]
            raise CustomerListError(f"{path}: cannot read the customer list: {first_line}") from None
        return _some_ids(path, column.to_list())
    ids = CustomerIds([part.strip() for part in spec.split(",")], "item")
    if not ids:
        raise CustomerListError(f"{spec!r} names no customer id")
    return ids


def _chunks(values: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _rows(lists: Sequence[ProductList]) -> pa.Table:
    columns: dict[str, list[object]] = {name: [] for name in OUTPUT_SCHEMA.names}
    for product_list in lists:
        for item in product_list.items:
            columns["customer_id"].append(product_list.customer_id)
            columns["rank"].append(item.rank)
            columns["item_id"].append(item.item_id)
            columns["title"].append(item.title)
            columns["category"].append(item.category)
            columns["price"].append(item.price)
            columns["score"].append(item.score)
            columns["reason"].append(item.reason.value)
            columns["cold_start"].append(product_list.cold_start)
            columns["mix_source"].append(product_list.decision.mix_source.value)
    return pa.table(columns, schema=OUTPUT_SCHEMA)


def _target(personalizer: Personalizer, customer_id: str, exclude: str) -> CustomerTarget:
    """The customer's target, with what they have seen excluded when ``exclude`` says so."""
    row = personalizer.mixes.row_of(customer_id)
    excluded: tuple[str, ...] = ()
    if exclude == "seen" and row >= 0:
        excluded = tuple(personalizer.items.ids[row_indices(personalizer.history, row)].tolist())
    return CustomerTarget(customer_id, None, excluded)


def customer_lists(
    personalizer: Personalizer,
    customer_ids: Sequence[str],
    *,
    k: int = 10,
    context: str | None = None,
    mix: PersonaMix | None = None,
    exclude: str = DEFAULT_EXCLUSION,
) -> list[ProductList]:
    """The top ``k`` of each customer, as ``recommend`` and ``batch-recommend`` show them.

    Without ``context`` each known customer is served their overall mix (a campaign is not sent at a
    moment of the week; ``Personalizer.recommend_products_many``'s ``overall_mix``); with one, their
    mix for that context; ``mix`` replaces either, and steers a known customer by how far it is from
    that mix (``engine.personas.steering``). ``exclude`` names a rule of ``EXCLUSION_RULES``. Each
    list's ``mix_source`` says where its mix came from.
    """
    if exclude not in EXCLUSION_RULES:
        raise ValueError(f"exclude must be one of {', '.join(EXCLUSION_RULES)}, got {exclude!r}")
    targets = [
        dataclasses.replace(_target(personalizer, customer_id, exclude), mix=mix)
        for customer_id in customer_ids
    ]
    return personalizer.recommend_products(
        targets,
        ProductRequest(k=list_length(personalizer, k)),
        SessionContext(shopping_context=context),
        decision_ids=[""] * len(targets),
        overall_mix=context is None,
    )


def batch_recommend(
    personalizer: Personalizer,
    out: Path,
    *,
    customer_ids: Sequence[str] | None = None,
    k: int = 10,
    context: str | None = None,
    exclude: str = DEFAULT_EXCLUSION,
    chunk: int = 4096,
    on_progress: Callable[[int], None] | None = None,
) -> BatchRecommendReport:
    """Write every customer's (or the given customers') top ``k`` to ``out`` as Parquet.

    Each list is ``customer_lists``'s (so ``recommend`` shows the same one); ``k`` is cut to the
    catalog's size (``list_length``) and ``chunk`` customers a step to ``MAX_ROWS_PER_STEP`` rows.
    ``on_progress`` is called with the number of customers done per chunk.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    started = time.perf_counter()
    length = list_length(personalizer, k)
    chunk = min(chunk, max(1, MAX_ROWS_PER_STEP // length))
    ids = list(personalizer.customers.ids.tolist()) if customer_ids is None else list(customer_ids)
    unknown = sum(1 for i in ids if i not in personalizer.customers)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with pq.ParquetWriter(out, OUTPUT_SCHEMA) as writer:
        for part in _chunks(ids, chunk):
            lists = customer_lists(personalizer, part, k=length, context=context, exclude=exclude)
            table = _rows(lists)
            writer.write_table(table)
            rows += table.num_rows
            if on_progress is not None:
                on_progress(len(part))
    return BatchRecommendReport(
        out=str(out),
        model=personalizer.model_name,
        model_version=personalizer.version,
        k=length,
        customers=len(ids),
        unknown_customers=unknown,
        rows=rows,
        seconds=time.perf_counter() - started,
        excluded=exclude,
        requested_k=k if k > length else None,
    )
