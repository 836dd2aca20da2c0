"""The model-quality benchmark's README table: rendered from results, written between the markers only."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.model_quality import END_MARKER, START_MARKER, merge_results, render_table, rewrite_readme


def _result(name: str, file: str, trials: int = 5) -> dict[str, object]:
    return {
        "generated": "2026-12-03 09:00 UTC",
        "file": file,
        "trials_per_model": trials,
        "data_sets": [
            {
                "data_set": name,
                "engine_best": {"model": "engine:als", "ndcg_at_10": 0.3121},
                "library_best_tuned": {"model": "implicit_als_tuned", "ndcg_at_10": 0.3050},
                "difference_ci95": [0.0012, 0.0130],
                "persona_lift_ci95": [-0.0020, 0.0041],
                "cold_start": {
                    "ndcg_at_10": 0.21,
                    "popularity_ndcg_at_10": 0.14,
                    "ratio_to_popularity": 1.5,
                    "best_persona_conditioned": "engine:lightfm_hybrid",
                },
            }
        ],
    }


def test_table_rows_show_each_data_sets_verdict_and_skips_say_why() -> None:
    merged = merge_results(
        [_result("online-retail", "b.json"), _result("ml-100k", "a.json"), {**_result("demo", "c.json")}]
    )
    assert [row["data_set"] for row in merged["data_sets"]] == ["ml-100k", "demo", "online-retail"]
    merged["data_sets"].append({"data_set": "elsewhere", "skipped": "../shared/data/x is absent"})
    table = render_table(merged)
    assert (
        "| ml-100k | bundled | 5 | engine:als 0.3121 | implicit_als_tuned 0.3050 | [+0.0012, +0.0130] "
        "| [-0.0020, +0.0041] |" in table
    )
    assert "0.2100 vs 0.1400 (x1.50, engine:lightfm_hybrid)" in table
    assert "| elsewhere | | | skipped: ../shared/data/x is absent | | | | | |" in table


def test_each_row_shows_the_search_budget_it_ran_with() -> None:
    merged = merge_results([_result("demo", "a.json", trials=2), _result("ml-100k", "b.json", trials=3)])
    table = render_table(merged)
    assert "| ml-100k | bundled | 3 |" in table and "| demo | bundled | 2 |" in table


def test_a_discovered_catalog_row_follows_its_bundled_row_and_says_what_was_tried() -> None:
    bundled = _result("ml-100k", "a.json")
    bundled["data_sets"][0].update(catalog="movielens", personas=7, catalog_source="bundled")  # type: ignore[index]
    discovered = _result("ml-100k", "a.json")
    discovered["data_sets"][0].update(  # type: ignore[index]
        catalog="results/x-personas.toml",
        personas=40,
        catalog_source="discovered",
        discovery={"candidates": [{"requested_personas": n} for n in (10, 20, 40)]},
    )
    merged = merge_results([discovered, _result("demo", "b.json"), bundled])
    assert [(r["data_set"], r.get("catalog_source")) for r in merged["data_sets"]] == [
        ("ml-100k", "bundled"),
        ("ml-100k", "discovered"),
        ("demo", None),
    ]
    table = render_table(merged)
    assert "| ml-100k | movielens (7) | 5 |" in table
    assert "| ml-100k | discovered: 40 (of 10, 20, 40) | 5 |" in table


def test_readme_is_rewritten_between_the_markers_only(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# head\n{START_MARKER}\nold table\n{END_MARKER}\ntail\n", encoding="utf-8")
    rewrite_readme(readme, "new table")
    assert readme.read_text(encoding="utf-8") == f"# head\n{START_MARKER}\nnew table\n{END_MARKER}\ntail\n"
    readme.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="markers"):
        rewrite_readme(readme, "new table")


def test_the_personas_on_the_library_tuning_column_shows_both_scores_and_the_interval() -> None:
    at_tuning = _result("ml-100k", "a.json")
    row = at_tuning["data_sets"][0]  # type: ignore[index]
    row["models"] = {
        "engine:als at implicit_als_tuned": {"family": "engine at library tuning", "ndcg_at_10": 0.3191},
        "implicit_als_tuned": {"family": "library tuned", "ndcg_at_10": 0.3168},
    }
    row["differences"] = [
        {"name": "engine best - library best tuned", "a": "engine:als", "b": "implicit_als_tuned",
         "segment": "all", "mean": 0.0071, "ci95": [0.0012, 0.0130]},
        {"name": "personas on the library's tuning (engine:als at implicit_als_tuned)",
         "a": "engine:als at implicit_als_tuned", "b": "implicit_als_tuned", "segment": "all",
         "mean": 0.0023, "ci95": [-0.0004, 0.0051]},
    ]  # fmt: skip
    table = render_table(merge_results([at_tuning, _result("demo", "b.json")]))
    header = table.splitlines()[2]
    assert header.split(" | ")[6:8] == ["persona lift", "personas on the library's tuning"]
    ml100k, demo = (line for line in table.splitlines() if line.startswith(("| ml-100k ", "| demo ")))
    assert ml100k.endswith("| [-0.0020, +0.0041] | 0.3191 vs 0.3168 [-0.0004, +0.0051] | 0.2100 vs 0.1400 "
                           "(x1.50, engine:lightfm_hybrid) |")  # fmt: skip
    # a set whose compare stated no such difference (an older results file) shows "-"
    assert demo.endswith("| [-0.0020, +0.0041] | - | 0.2100 vs 0.1400 (x1.50, engine:lightfm_hybrid) |")
    # several engine models at library tunings: each cell names its row
    row["models"]["engine:bpr at implicit_bpr_tuned"] = {"ndcg_at_10": 0.2010}
    row["models"]["implicit_bpr_tuned"] = {"ndcg_at_10": 0.2050}
    row["differences"].append(
        {"name": "personas on the library's tuning (engine:bpr at implicit_bpr_tuned)",
         "a": "engine:bpr at implicit_bpr_tuned", "b": "implicit_bpr_tuned", "segment": "all",
         "mean": -0.004, "ci95": [-0.0090, 0.0010]}
    )  # fmt: skip
    table = render_table(merge_results([at_tuning]))
    assert (
        "| engine:als at implicit_als_tuned: 0.3191 vs 0.3168 [-0.0004, +0.0051]; "
        "engine:bpr at implicit_bpr_tuned: 0.2010 vs 0.2050 [-0.0090, +0.0010] |" in table
    )
