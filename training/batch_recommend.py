"""``persona-engine batch-recommend``: the top-k products of every customer, for campaigns, to Parquet.

Campaign tools (e-mail, direct mail, app push) want one file with each customer's list, computed
offline from the same artifact the server answers from, so an e-mail and the website never disagree.
The job goes through ``Personalizer.recommend_products``, the serving path's batched scoring, so the
lists are exactly what the API would return for the same customer, mix and filters.

Memory stays bounded whatever the number of customers: customers are processed in chunks, and each
chunk's rows are appended to the Parquet file as a row group before the next chunk is scored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import PersonaEngineError
from engine.personalization_request import CustomerTarget, ProductRequest, SessionContext
from engine.personalizer import Personalizer, ProductList
from engine.personas.mix import PersonaMix

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


class CustomerListError(PersonaEngineError, ValueError):
    """A customer list that cannot be read; names the file (and column) at fault."""


@dataclass(frozen=True)
class BatchRecommendReport:
    out: str
    model: str
    model_version: str
    k: int
    customers: int
    unknown_customers: int  # ids the artifact never saw: served the population's mix (cold start)
    rows: int
    seconds: float

    @property
    def customers_per_second(self) -> float:
        return self.customers / self.seconds if self.seconds > 0 else float("nan")


def read_customer_ids(spec: str) -> list[str]:
    """Ids from a file (.csv/.parquet with a customer_id column, or .txt one per line) or a comma list."""
    path = Path(spec)
    if path.suffix.lower() in (".csv", ".parquet", ".txt") or path.is_file():
        if not path.is_file():
            raise CustomerListError(f"{path}: customer list not found")
        if path.suffix.lower() == ".txt":
            ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            return list(dict.fromkeys(i for i in ids if i))
        try:
            lazy = (
                pl.scan_parquet(path)
                if path.suffix.lower() == ".parquet"
                else pl.scan_csv(path, infer_schema=False)
            )
            columns = lazy.collect_schema().names()
        except (OSError, pl.exceptions.PolarsError) as problem:
            first_line = (str(problem).strip().splitlines() or [type(problem).__name__])[0]
            raise CustomerListError(f"{path}: cannot read the customer list: {first_line}") from None
        if "customer_id" not in columns:
            raise CustomerListError(
                f"{path}: needs a customer_id column (columns found: {', '.join(columns) or 'none'})"
            )
        column = lazy.select(pl.col("customer_id").cast(pl.String).str.strip_chars()).collect().to_series()
        return list(dict.fromkeys(i for i in column.drop_nulls().to_list() if i))
    ids = [part.strip() for part in spec.split(",")]
    if not any(ids):
        raise CustomerListError(f"--customers {spec!r} names no customer id")
    return list(dict.fromkeys(i for i in ids if i))


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


def _campaign_mix(personalizer: Personalizer, customer_id: str, context: str | None) -> PersonaMix | None:
    """The overall stored mix of a known customer when no context is asked; else the usual resolution."""
    if context is not None or customer_id not in personalizer.customers:
        return None
    return personalizer.mix_for(customer_id)[0]


def batch_recommend(
    personalizer: Personalizer,
    out: Path,
    *,
    customer_ids: Sequence[str] | None = None,
    k: int = 10,
    context: str | None = None,
    chunk: int = 4096,
    on_progress: Callable[[int], None] | None = None,
) -> BatchRecommendReport:
    """Write every customer's (or the given customers') top ``k`` to ``out`` as Parquet.

    Without ``context`` each known customer is served their overall mix (a campaign is not sent at a
    moment of the week); with one, their mix for that context. Already-purchased items are left out,
    as the API does by default. ``on_progress`` is called with the number of customers done per chunk.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    started = time.perf_counter()
    ids = list(personalizer.customers.ids.tolist()) if customer_ids is None else list(customer_ids)
    unknown = sum(1 for i in ids if i not in personalizer.customers)
    request = ProductRequest(k=k)
    session = SessionContext(shopping_context=context)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with pq.ParquetWriter(out, OUTPUT_SCHEMA) as writer:
        for part in _chunks(ids, chunk):
            targets = [
                CustomerTarget(customer_id, _campaign_mix(personalizer, customer_id, context))
                for customer_id in part
            ]
            lists = personalizer.recommend_products(
                targets, request, session, decision_ids=[""] * len(targets)
            )
            table = _rows(lists)
            writer.write_table(table)
            rows += table.num_rows
            if on_progress is not None:
                on_progress(len(part))
    return BatchRecommendReport(
        out=str(out),
        model=personalizer.model_name,
        model_version=personalizer.version,
        k=k,
        customers=len(ids),
        unknown_customers=unknown,
        rows=rows,
        seconds=time.perf_counter() - started,
    )
