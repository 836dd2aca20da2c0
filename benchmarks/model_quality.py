"""Model quality on three data sets: does the engine beat the tuned libraries, and do personas lift it?

For each data set this runs ``persona-engine compare --json`` (the engine's models and the raw
implicit/LightFM models, tuned with the same trial budget on the same validation split, each engine
model's persona-free ablation, each engine model at a tuned library model's hyperparameters against
that library model, paired bootstrap intervals over customers) and collects its verdict:

- ``ml-100k``: MovieLens 100K, the ua split (ua.test held out), every rating a positive, all 943
  users (10% of them held out as cold start), adapted from ``../shared/data/ml-100k``;
- ``demo``: the synthetic demo shop (``persona-engine generate``, default size), time split;
- ``online-retail``: the UCI Online Retail export through the bundled mapping, time split, from
  ``../shared/data/online-retail``.

Each data set is compared twice: with the bundled catalog its config names, and with a catalog
``persona-engine discover`` proposes from the training events alone (``--training-split``, so the
test events stay unseen): every size of ``--discover-personas`` is proposed, and the one whose
personas best rank each customer's latest 20% of training events (held-out NDCG@10) is compared.
The proposed catalog is kept next to the results, so its figures can be reproduced.

The real sets are skipped, with the reason printed, when ``../shared`` is absent. The figures go to
``benchmarks/results/model_quality-<timestamp>.json`` and into the README table between the
``model-quality`` marker comments, so ``make model-quality`` regenerates the table in one command.

    python -m benchmarks.model_quality [--trials 20] [--sets ml-100k,demo,online-retail] [--no-readme]
    python -m benchmarks.model_quality --discover-personas none   # bundled catalogs only
    python -m benchmarks.model_quality --render RESULTS.json   # rewrite the README table only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
SHARED_DATA = ROOT.parent / "shared" / "data"
START_MARKER = "<!-- model-quality:start -->"
END_MARKER = "<!-- model-quality:end -->"
# The README table's budget (every table since 2026-12-05 was made with 20), so that `make model-quality`
# alone regenerates it.
DEFAULT_TRIALS = 20
# Catalog sizes discover proposes, and the share of each customer's latest training events it holds
# out to choose among them (a share, not days: MovieLens users rate in bursts, and its last weeks of
# training events hold 80 of 943 users, too few to tell catalogs apart).
DEFAULT_DISCOVER_PERSONAS = "10,20,40,80"
DISCOVER_HELD_OUT_SHARE = 0.2


@dataclass(frozen=True)
class DataSet:
    name: str
    config: str  # training config, relative to the repository root
    needs: str  # folder under ../shared/data, or "" for a generated set
    description: str

    def prepare_command(self, out: Path) -> list[str]:
        if self.name == "ml-100k":
            return ["adapt", "movielens", "--source", str(SHARED_DATA / "ml-100k"), "--out", str(out)]
        if self.name == "online-retail":
            return [
                "adapt",
                "transactions",
                "--mapping",
                str(ROOT / "training" / "mappings" / "online_retail.toml"),
                "--source",
                str(SHARED_DATA / "online-retail" / "online_retail.parquet"),
                "--out",
                str(out),
            ]
        return ["generate", "--out", str(out)]


DATA_SETS: tuple[DataSet, ...] = (
    DataSet(
        "ml-100k", "benchmarks/configs/model_quality-ml100k.toml", "ml-100k", "MovieLens 100K ua, 943 users"
    ),
    DataSet("demo", "benchmarks/configs/model_quality-demo.toml", "", "synthetic demo shop, time split"),
    DataSet(
        "online-retail",
        "benchmarks/configs/model_quality-online_retail.toml",
        "online-retail",
        "UCI Online Retail",
    ),
)


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("persona-engine")
    return (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())"]
    )


def _run(arguments: list[str], *, capture: bool = False) -> str:
    completed = subprocess.run([*_cli(), *arguments], cwd=ROOT, check=False, text=True, capture_output=True)
    if completed.returncode != 0:
        raise SystemExit(
            f"persona-engine {' '.join(arguments[:2])} failed with status {completed.returncode}:\n"
            f"{completed.stderr[-2000:]}"
        )
    return completed.stdout if capture else ""


def prepare_data_set(data_set: DataSet, work: Path) -> Path:
    """The data set's folder in ``work``, adapted or generated."""
    folder = work / data_set.name
    _run(data_set.prepare_command(folder))
    return folder


def bundled_catalog(data_set: DataSet) -> str:
    """The catalog the data set's config names (``default`` when it names none)."""
    document = tomllib.loads((ROOT / data_set.config).read_text(encoding="utf-8"))
    return str(document.get("personas", {}).get("catalog", "default"))


def discover_catalog(data_set: DataSet, folder: Path, sizes: str, out: Path) -> dict[str, Any]:
    """Propose catalogs of ``sizes`` personas from the training events of the data set's split and
    write the best (held-out NDCG@10 on each customer's latest training events) to ``out``."""
    started = time.perf_counter()
    report = json.loads(
        _run(
            [
                "discover",
                "--data",
                str(folder),
                "--catalog",
                bundled_catalog(data_set),
                "--training-split",
                data_set.config,
                "--write-catalog",
                str(out),
                "--personas",
                sizes,
                "--held-out-share",
                str(DISCOVER_HELD_OUT_SHARE),
                "--json",
            ],
            capture=True,
        )
    )
    return {
        "file": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out),
        "personas": report["fit"]["proposed"]["personas"],
        "given": report["fit"]["given"],
        "candidates": report["candidates"],
        "held_out_share": report["held_out_share"],
        "seconds": time.perf_counter() - started,
    }


def run_data_set(
    data_set: DataSet, folder: Path, trials: int, seed: int, catalog: str | None = None
) -> dict[str, Any]:
    """``compare --json`` on the prepared data set (with ``catalog`` instead of the config's, when
    given); its verdict and timings."""
    started = time.perf_counter()
    arguments = [
        "compare",
        "--config",
        data_set.config,
        "--data",
        str(folder),
        "--trials",
        str(trials),
        "--search-seed",
        str(seed),
        "--json",
    ]
    document = json.loads(_run([*arguments, *(["--catalog", catalog] if catalog else [])], capture=True))
    verdict = document["verdict"]
    return {
        "data_set": data_set.name,
        "description": data_set.description,
        "config": data_set.config,
        "catalog": catalog or bundled_catalog(data_set),
        "personas": len(document["personas"]["ids"]),
        "users": document["users"],
        "engine_best": document["engine_best"],
        "library_best_tuned": document["library_best_tuned"],
        "difference_ci95": document["difference_ci95"],
        "persona_lift_ci95": document["persona_lift_ci95"],
        "library_best_default": verdict.get("library_best_default"),
        "cold_start": verdict.get("cold_start"),
        "differences": verdict.get("differences"),
        "models": {
            m["name"]: {
                "family": m["family"],
                "ndcg_at_10": m["segments"].get("all", {}).get("ndcg"),
                "cold_start_ndcg_at_10": m["segments"].get("cold_start", {}).get("ndcg"),
                "search": m["search"],
            }
            for m in document["models"]
        },
        "seconds": time.perf_counter() - started,
    }


def _interval(values: list[float] | None) -> str:
    return f"[{values[0]:+.4f}, {values[1]:+.4f}]" if values else "-"


def _named(entry: dict[str, Any] | None) -> str:
    return f"{entry['model']} {entry['ndcg_at_10']:.4f}" if entry else "-"


AT_LIBRARY_TUNING_PREFIX = "personas on the library's tuning ("


def _at_library_tuning(row: dict[str, Any]) -> str:
    """The "personas on the library's tuning" column: for each engine model at a tuned library model's
    hyperparameters and seed (compare's "engine at library tuning" rows), its NDCG@10 against its
    ablation's (the tuned library model, or the same model with a recency prior over the whole
    population) and the paired interval of the difference; "-" when compare stated none."""
    stated = [d for d in row.get("differences") or [] if d["name"].startswith(AT_LIBRARY_TUNING_PREFIX)]
    models = row.get("models") or {}
    cells = []
    for d in stated:
        a, b = (models.get(name, {}).get("ndcg_at_10") for name in (d["a"], d["b"]))
        values = f"{a:.4f} vs {b:.4f} " if a is not None and b is not None else ""
        # one such row per engine model with a library twin; name them only when there are several
        named = f"{d['a']}: " if len(stated) > 1 else ""
        cells.append(f"{named}{values}{_interval(d['ci95'])}")
    return "; ".join(cells) or "-"


def render_table(results: dict[str, Any]) -> str:
    """The README's Markdown table of one results document."""
    lines = [
        f"Generated by `make model-quality` on {results['generated']} (search trials per model as "
        "listed, every searched model the same number, on a validation split carved from the training "
        "events; 95% paired bootstrap intervals over customers, NDCG@10; personas on the library's "
        "tuning: the engine's model at the tuned library model's hyperparameters and seed, persona "
        "weights fitted on validation, against its ablation: that library model, or, when its prior is "
        "weighted by recency, the same model with that prior over the whole population; raw results: "
        + ", ".join(f"`benchmarks/results/{name}`" for name in results["file"].split(", "))
        + ").",
        "",
        "| data set | catalog | trials | engine best | library best tuned | engine - library tuned "
        "| persona lift | personas on the library's tuning | cold start vs popularity |",
        "| --- | --- | ---: | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["data_sets"]:
        if "skipped" in row:
            lines.append(f"| {row['data_set']} | | | skipped: {row['skipped']} | | | | | |")
            continue
        cold = row.get("cold_start") or {}
        cold_text = (
            f"{cold['ndcg_at_10']:.4f} vs {cold['popularity_ndcg_at_10']:.4f} "
            f"(x{cold['ratio_to_popularity']:.2f}, {cold['best_persona_conditioned']})"
            if cold
            else "-"
        )
        trials = row.get("trials_per_model", results["trials_per_model"])
        lines.append(
            f"| {row['data_set']} | {_catalog_text(row)} | {trials} | {_named(row['engine_best'])} "
            f"| {_named(row['library_best_tuned'])} | {_interval(row['difference_ci95'])} "
            f"| {_interval(row['persona_lift_ci95'])} | {_at_library_tuning(row)} | {cold_text} |"
        )
    return "\n".join(lines)


def _catalog_text(row: dict[str, Any]) -> str:
    """The catalog column: the bundled catalog's name, or the proposed one's size and the sizes tried."""
    if row.get("catalog_source") != "discovered":
        return f"{row.get('catalog', 'bundled')} ({row['personas']})" if "personas" in row else "bundled"
    tried = ", ".join(str(c["requested_personas"]) for c in row["discovery"]["candidates"])
    return f"discovered: {row['personas']} (of {tried})"


def merge_results(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """One results document from runs of single data sets (e.g. run in parallel), in DATA_SETS order,
    each data set's bundled catalog before its discovered one."""
    if not documents:
        raise SystemExit("no results to merge")
    rows = {
        (row["data_set"], row.get("catalog_source", "bundled")): {
            "trials_per_model": d["trials_per_model"],
            **row,
        }
        for d in documents
        for row in d["data_sets"]
    }
    order = [d.name for d in DATA_SETS]
    merged = dict(documents[-1])
    merged["data_sets"] = [
        rows[key] for key in sorted(rows, key=lambda key: (order.index(key[0]), key[0], key[1] != "bundled"))
    ]
    merged["file"] = ", ".join(d["file"] for d in documents)
    merged["generated"] = " / ".join(dict.fromkeys(d["generated"] for d in documents))
    merged["trials_per_model"] = "/".join(sorted({str(d["trials_per_model"]) for d in documents}))
    return merged


def rewrite_readme(readme: Path, table: str) -> None:
    """Replace the text between the model-quality markers (which must both be there) with ``table``."""
    text = readme.read_text(encoding="utf-8")
    if START_MARKER not in text or END_MARKER not in text:
        raise SystemExit(f"{readme}: no {START_MARKER} ... {END_MARKER} markers to put the table between")
    head, rest = text.split(START_MARKER, 1)
    _, tail = rest.split(END_MARKER, 1)
    readme.write_text(f"{head}{START_MARKER}\n{table}\n{END_MARKER}{tail}", encoding="utf-8")


def _print_row(row: dict[str, Any]) -> None:
    cold = row.get("cold_start") or {}
    print(
        f"{row['data_set']} ({_catalog_text(row)}): engine best {_named(row['engine_best'])}, library best "
        f"tuned {_named(row['library_best_tuned'])}, difference {_interval(row['difference_ci95'])}, "
        f"persona lift {_interval(row['persona_lift_ci95'])}, personas on the library's tuning "
        f"{_at_library_tuning(row)}, cold start "
        f"x{cold.get('ratio_to_popularity', float('nan')):.2f} ({row['seconds']:.0f} s)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS, help="search trials per model")
    parser.add_argument("--seed", type=int, default=0, help="seed of the hyperparameter search")
    parser.add_argument(
        "--sets", default=",".join(d.name for d in DATA_SETS), help="comma-separated data sets to run"
    )
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README table")
    parser.add_argument(
        "--discover-personas",
        default=DEFAULT_DISCOVER_PERSONAS,
        help="catalog sizes discover proposes from each set's training events, compared as a second row "
        "('none': bundled catalogs only)",
    )
    parser.add_argument(
        "--render",
        type=Path,
        nargs="+",
        help="only rewrite the README table from these results files (data sets of several runs merged)",
    )
    args = parser.parse_args(argv)
    if args.render:
        table = render_table(merge_results([json.loads(p.read_text(encoding="utf-8")) for p in args.render]))
        rewrite_readme(README, table)
        print(table)
        print(f"README table rewritten from {', '.join(map(str, args.render))}")
        return 0
    wanted = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = sorted(set(wanted) - {d.name for d in DATA_SETS})
    if unknown:
        parser.error(
            f"--sets: unknown data set(s) {', '.join(unknown)}; known: {', '.join(d.name for d in DATA_SETS)}"
        )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    # A run of some of the sets names them, so runs started in the same second never share a file.
    subset = "" if set(wanted) == {d.name for d in DATA_SETS} else "-" + "-".join(wanted)
    file = f"model_quality-{stamp}{subset}.json"
    results: dict[str, Any] = {
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "file": file,
        "trials_per_model": args.trials,
        "search_seed": args.seed,
        "data_sets": [],
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="model-quality-") as work:
        for data_set in (d for d in DATA_SETS if d.name in wanted):
            if data_set.needs and not (SHARED_DATA / data_set.needs).is_dir():
                reason = f"{SHARED_DATA / data_set.needs} is absent (real data is never in the repo)"
                print(f"{data_set.name}: skipped: {reason}", flush=True)
                results["data_sets"].append({"data_set": data_set.name, "skipped": reason})
                continue
            folder = prepare_data_set(data_set, Path(work))
            print(f"{data_set.name}: compare with {args.trials} trials per model ...", flush=True)
            rows = [{**run_data_set(data_set, folder, args.trials, args.seed), "catalog_source": "bundled"}]
            _print_row(rows[-1])
            if args.discover_personas != "none":
                out = RESULTS_DIR / f"{file.removesuffix('.json')}-{data_set.name}-personas.toml"
                print(f"{data_set.name}: discover --personas {args.discover_personas} ...", flush=True)
                discovery = discover_catalog(data_set, folder, args.discover_personas, out)
                print(f"{data_set.name}: compare with the proposed catalog ({out.name}) ...", flush=True)
                compared = run_data_set(data_set, folder, args.trials, args.seed, catalog=str(out))
                rows.append({**compared, "catalog_source": "discovered", "discovery": discovery})
                _print_row(rows[-1])
            results["data_sets"].extend(rows)
    out = RESULTS_DIR / file
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"results written to {out}")
    table = render_table(results)
    print(table)
    if not args.no_readme:
        rewrite_readme(README, table)
        print(f"README table rewritten ({README})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
