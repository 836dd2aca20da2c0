"""Writing a whole synthetic shop: the static tables, every chunk of customers, and the truth files.

This is the generator's entry point (``persona-engine generate``); the simulation itself lives in the
modules it calls, each of which owns one concern of the shop.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import Progress

from engine.data.contract import TABLES
from engine.personas.catalog import load_catalog
from training.synthetic_shop.config import FILE_FORMATS, ShopConfig
from training.synthetic_shop.customer_chunk import simulate_chunk
from training.synthetic_shop.shop_model import ShopModel
from training.synthetic_shop.table_files import TableFile, arrow_schema
from training.synthetic_shop.truth import (
    EVENT_PERSONAS_FILE,
    TRUTH_DIR,
    event_personas_schema,
    generator_json,
    response_rates_json,
    truth_schema,
)


@dataclass(frozen=True)
class GenerationSummary:
    """What generate_shop wrote: row counts per table, wall time and every file it created."""

    out_dir: Path
    counts: dict[str, int]
    seconds: float
    files: list[Path] = field(default_factory=list)


def generate_shop(out_dir: Path, config: ShopConfig, *, show_progress: bool = False) -> GenerationSummary:
    """Write the synthetic shop described by ``config`` to ``out_dir`` (tables + ``truth/``).

    Existing files of the same names are overwritten, and a table file of the other format (say
    ``events.csv`` when writing Parquet) is removed, since a loader could not tell which one is current.
    The same config always yields byte-identical files.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    (out_dir / TRUTH_DIR).mkdir(parents=True, exist_ok=True)
    model = ShopModel.build(config, load_catalog())
    ext = config.file_format
    paths = {name: out_dir / f"{name}.{ext}" for name in TABLES}
    for name in TABLES:
        for other in FILE_FORMATS:
            if other != ext:
                (out_dir / f"{name}.{other}").unlink(missing_ok=True)
    truth_mix_path = out_dir / TRUTH_DIR / "customer_mixes.parquet"
    event_personas_path = out_dir / TRUTH_DIR / EVENT_PERSONAS_FILE
    counts = dict.fromkeys(TABLES, 0)

    for name, table in (
        ("items", model.items_table()),
        ("offers", model.offers_table()),
        ("layouts", model.layouts_table()),
    ):
        with TableFile(paths[name], arrow_schema(name), ext) as writer:
            writer.write(table)
        counts[name] = table.num_rows

    chunk_starts = list(range(0, config.customers, config.chunk_customers))
    with ExitStack() as stack:
        writers = {
            name: stack.enter_context(TableFile(paths[name], arrow_schema(name), ext))
            for name in ("customers", "events", "decisions")
        }
        truth_writer = stack.enter_context(
            TableFile(truth_mix_path, truth_schema(model.personas.ids), "parquet")
        )
        event_personas_writer = stack.enter_context(
            TableFile(event_personas_path, event_personas_schema(), "parquet")
        )
        progress = stack.enter_context(Progress(disable=not show_progress, transient=True))
        task = progress.add_task("generating customers", total=config.customers)
        for chunk_index, first in enumerate(chunk_starts):
            n = min(config.chunk_customers, config.customers - first)
            chunk = simulate_chunk(model, chunk_index, first, n, counts["events"], counts["decisions"])
            for name, table in (
                ("customers", chunk.customers),
                ("events", chunk.events),
                ("decisions", chunk.decisions),
            ):
                writers[name].write(table)
                counts[name] += table.num_rows
            truth_writer.write(chunk.truth)
            event_personas_writer.write(chunk.event_personas)
            progress.advance(task, n)

    rates_path = out_dir / TRUTH_DIR / "response_rates.json"
    rates_path.write_text(json.dumps(response_rates_json(model), indent=2) + "\n", encoding="utf-8")
    generator_path = out_dir / TRUTH_DIR / "generator.json"
    generator_path.write_text(json.dumps(generator_json(model), indent=2) + "\n", encoding="utf-8")
    files = [paths[name] for name in TABLES] + [
        truth_mix_path,
        event_personas_path,
        rates_path,
        generator_path,
    ]
    return GenerationSummary(
        out_dir=out_dir, counts=counts, seconds=time.perf_counter() - started, files=files
    )
