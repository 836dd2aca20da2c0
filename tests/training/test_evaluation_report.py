"""``persona-engine report`` on a small real artifact: the page renders, and its numbers are the JSON's
and the manifest's."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cli.main import main
from engine.artifact import open_artifact
from engine.artifact.contents import load_artifact
from tests.engine.small_artifact import train_small_artifact
from training.report import context_mixes, mix_drift, planted_mixes
from training.report.evaluation_report import SECTION_IDS, build_document
from training.report.html_document import format_cell
from training.report.mix_distribution import normalised_entropy
from training.report.popularity_bias import concentration_curve, top_items
from training.report.report_inputs import load_inputs
from training.report.report_plots import month_labels
from training.report.report_section import Format

_VOID = {"meta", "img", "br", "hr", "link", "input"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """Checks nesting and collects sections, images and tables (caption, headers, cells)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.sections: list[str] = []
        self.images: list[str] = []
        self.resources: list[str] = []
        self.tags: set[str] = set()
        self.tables: list[dict[str, Any]] = []
        self._text: list[str] | None = None
        self._cell_value: str | None = None
        self._in_head = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.add(tag)
        if tag not in _VOID:
            self.stack.append(tag)
        if tag == "section":
            self.sections.append(attributes["id"] or "")
        if tag == "img":
            self.images.append(attributes["src"] or "")
        for name in ("src", "href"):
            value = attributes.get(name)
            if value and not value.startswith(("data:", "#")):
                self.resources.append(value)
        if tag == "table":
            self.tables.append({"caption": "", "columns": [], "rows": []})
        if tag == "thead":
            self._in_head = True
        if tag == "tr" and not self._in_head:
            self.tables[-1]["rows"].append([])
        if tag in ("caption", "th", "td"):
            self._text = []
            self._cell_value = attributes.get("data-value")

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        if tag == "thead":
            self._in_head = False
        if tag in ("caption", "th", "td") and self._text is not None:
            text = "".join(self._text).strip()
            table = self.tables[-1]
            if tag == "caption":
                table["caption"] = text
            elif tag == "th":
                table["columns"].append(text)
            else:
                table["rows"][-1].append((text, self._cell_value))
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_artifact(tmp_path_factory.mktemp("report"), refit=True)


@pytest.fixture(scope="module")
def report(artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any], _Page]:
    out = tmp_path_factory.mktemp("out") / "report.html"
    assert main(["report", str(artifact), "--out", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    page = _Page()
    page.feed(html)
    page.close()
    return html, json.loads((out.parent / "report.json").read_text(encoding="utf-8")), page


def test_page_is_well_formed_self_contained_html(report: tuple[str, dict[str, Any], _Page]) -> None:
    html, _, page = report
    assert html.startswith("<!DOCTYPE html>")
    assert page.errors == [] and page.stack == []
    assert page.resources == []  # nothing fetched from anywhere when the page is opened
    assert "script" not in page.tags and "link" not in page.tags


def test_every_section_is_present_and_computed_for_a_generated_shop(
    report: tuple[str, dict[str, Any], _Page],
) -> None:
    html, document, page = report
    assert page.sections == list(SECTION_IDS)
    assert list(document["sections"]) == list(SECTION_IDS)
    for section_id, section in document["sections"].items():
        assert section["available"], (section_id, section["notes"])
        assert section["lead"] and section["tables"] and section["finding"], section_id
        assert escape(section["finding"]) in html  # listed under the key findings at the top
    for persona_name in document["personas"].values():
        assert persona_name in html


def test_every_chart_is_a_decodable_png(report: tuple[str, dict[str, Any], _Page]) -> None:
    _, document, page = report
    assert len(page.images) == sum(len(s["charts"]) for s in document["sections"].values()) >= 6
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.removeprefix("data:image/png;base64,"), validate=True)
        assert data.startswith(_PNG_SIGNATURE)
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            assert image.format == "PNG" and image.width > 300 and image.height > 150


def test_tables_on_the_page_show_exactly_the_json_numbers(report: tuple[str, dict[str, Any], _Page]) -> None:
    _, document, page = report
    expected = [t for s in document["sections"].values() for t in s["tables"]]
    assert [t["caption"] for t in page.tables] == [t["title"] for t in expected]
    for shown, table in zip(page.tables, expected, strict=True):
        assert shown["columns"] == table["columns"]
        assert len(shown["rows"]) == len(table["rows"])
        for shown_row, row in zip(shown["rows"], table["rows"], strict=True):
            for (text, raw), value, fmt in zip(shown_row, row, table["formats"], strict=True):
                assert text == format_cell(value, Format(fmt))
                if fmt != "text":
                    assert json.loads(raw or "null") == value


def test_model_numbers_are_the_manifest_numbers(
    artifact: Path, report: tuple[str, dict[str, Any], _Page]
) -> None:
    _, document, _ = report
    manifest = open_artifact(artifact).manifest
    section = document["sections"]["model_quality"]
    assert section["values"]["metrics"] == manifest["metrics"]
    assert document["artifact_version"] == manifest["artifact_version"]
    overall = section["tables"][0]
    stored = {m["model"]: m for m in manifest["metrics"] if m["segment"] == "all"}
    assert {row[0] for row in overall["rows"]} == set(stored)
    for row in overall["rows"]:
        metrics = stored[row[0]]
        assert row[1:7] == [metrics[k] for k in ("users", "precision", "recall", "ndcg", "map", "hit_rate")]
        assert row[7] == metrics["coverage"]


def test_context_table_shows_the_manifests_context_evaluation(
    artifact: Path, report: tuple[str, dict[str, Any], _Page]
) -> None:
    _, document, _ = report
    stored = open_artifact(artifact).manifest["context_evaluation"]
    assert {r["context"] for r in stored} == {"weekday", "weekend_holiday"}
    section = document["sections"]["model_quality"]
    assert section["values"]["context_evaluation"] == stored
    table = next(t for t in section["tables"] if "shopping context" in t["title"])
    assert [row[1:5] for row in table["rows"]] == [
        [r["model"], r["users"], r["ndcg_context_mix"], r["ndcg_overall_mix"]] for r in stored
    ]
    assert [row[5:] for row in table["rows"]] == [
        [r["difference"]["mean"], r["difference"]["low"], r["difference"]["high"]] for r in stored
    ]


def test_planted_comparison_reproduces_the_manifest_accuracy(
    artifact: Path, report: tuple[str, dict[str, Any], _Page]
) -> None:
    _, document, _ = report
    manifest = open_artifact(artifact).manifest
    # The artifact's mixes were refit on all events: the figure is the served mixes', not the split's.
    assert manifest["served_models"]["refit_on_all_events"]
    stored = manifest["served_models"]["persona_accuracy"]
    values = document["sections"]["planted_mixes"]["values"]
    assert values["n_compared"] == stored["n_compared"]
    for key in ("mean_tv", "median_tv", "dominant_accuracy", "realized_noise_floor_tv"):
        assert values[key] == pytest.approx(stored[key], abs=1e-12), key


def test_mix_and_context_numbers_are_consistent_with_the_stored_mixes(
    artifact: Path, report: tuple[str, dict[str, Any], _Page]
) -> None:
    _, document, _ = report
    stored = load_artifact(artifact)
    overall = stored.mix_overall[stored.n_events > 0]
    mix = document["sections"]["persona_mix"]["values"]
    personas = list(document["personas"])
    counts = np.bincount(overall.argmax(axis=1), minlength=len(personas))
    assert [mix["dominant_counts"][p] for p in personas] == counts.tolist()
    assert sum(mix["dominant_shares"].values()) == pytest.approx(1.0)
    assert [mix["mean_mix"][p] for p in personas] == pytest.approx(overall.mean(axis=0).tolist())
    context = document["sections"]["context_mixes"]["values"]
    for weights in context["mean_mix"].values():
        assert sum(weights.values()) == pytest.approx(1.0)


def test_drift_and_popularity_sections_hold_sane_shares(report: tuple[str, dict[str, Any], _Page]) -> None:
    _, document, _ = report
    drift = document["sections"]["drift"]["values"]
    assert drift["months"] == sorted(drift["months"]) and len(drift["months_drawn"]) >= 2
    for by_month in (drift["inferred_mean_mix_by_month"], drift["planted_mean_mix_by_month"]):
        for weights in by_month.values():
            assert sum(weights.values()) == pytest.approx(1.0)
    # The generated shop has planted drift: individual detection is scored, curve and all.
    detection = drift["detection"]
    assert detection["n_planted"] > 0 and 0 <= detection["recall"] <= 1
    targets = [point["target_false_alarm"] for point in detection["curve"]]
    assert targets == sorted(targets, reverse=True)  # thresholds ascend as the target falls
    # ... and set beside what a detector told each event's persona reaches at its false-alarm rate.
    bound = drift["detection_bound"]
    matched = [p for p in bound["points"] if p["target_false_alarm"] == detection["false_alarm_rate"]]
    assert len(matched) == 1 and matched[0]["recall"] >= detection["recall"]
    popularity = document["sections"]["popularity_bias"]["values"]
    assert (
        0 < popularity["interaction_shares"]["top_1pct"] <= popularity["interaction_shares"]["top_10pct"] <= 1
    )
    for model in popularity["models"].values():
        assert 0 < model["coverage"] <= 1
        assert 0 <= model["top_1pct_share"] <= model["top_10pct_share"] <= 1


def test_without_the_data_the_event_sections_say_why(artifact: Path, tmp_path: Path) -> None:
    inputs = load_inputs(artifact, tmp_path / "no-such-data")
    sections = [builder(inputs) for builder in (mix_drift.build, planted_mixes.build, context_mixes.build)]
    html, document = build_document(inputs, sections)
    drift, planted, context = (document["sections"][s.id] for s in sections)
    assert not drift["available"] and not planted["available"]
    assert "--data" in drift["notes"][0] and "no-such-data" in html
    assert context["available"]  # from the artifact alone, with a note on what that costs
    assert "per-context event counts are unknown" in " ".join(context["notes"])


def test_two_reports_in_one_folder_keep_their_own_numbers_and_the_output_names_both_files(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    retail, other = tmp_path / "retail.html", tmp_path / "other.html"
    assert main(["report", "--artifact", str(artifact), "--out", str(retail), "--no-progress"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"report written to {retail}" in out and f"its numbers: {tmp_path / 'retail.json'}" in out
    numbers = (tmp_path / "retail.json").read_text(encoding="utf-8")
    assert main(["report", "--artifact", str(artifact), "--out", str(other), "--no-progress"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "other.html",
        "other.json",
        "retail.html",
        "retail.json",
    ]
    assert (tmp_path / "retail.json").read_text(encoding="utf-8") == numbers  # the second kept off it
    assert json.loads(numbers)["sections"]["drift"]["available"]
    assert "retail.json beside it" in retail.read_text(encoding="utf-8")
    assert "other.json beside it" in other.read_text(encoding="utf-8")


def test_cli_refuses_an_output_that_is_not_html(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(artifact), "--out", str(tmp_path / "report.pdf")]) == 2
    assert "report.pdf" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_helpers_on_hand_computed_cases() -> None:
    assert normalised_entropy(np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])) == pytest.approx([0.0, 1.0])
    popularity = np.array([5.0, 1.0, 3.0, 1.0])
    assert top_items(popularity, 0.01).tolist() == [0]  # never less than one item
    assert top_items(popularity, 0.5).tolist() == [0, 2]
    x, y = concentration_curve(np.array([0.0, 2.0, 2.0, 0.0]), np.array([0, 2, 1, 3]))
    assert x.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0] and y.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert format_cell(0.1234, Format.PERCENT) == "12.3%"
    assert format_cell(-0.0004, Format.POINTS) == "0.0 pp" and format_cell(0.012, Format.POINTS) == "+1.2 pp"
    assert format_cell(float("nan"), Format.NUMBER) == format_cell(None, Format.RATIO) == "\u2013"
    assert format_cell(12345, Format.INTEGER) == "12,345" and format_cell(2.139, Format.RATIO) == "2.14\u00d7"
    assert not re.search(r"\d", format_cell(math.inf, Format.NUMBER))


def test_month_ticks_name_the_year_only_where_it_changes() -> None:
    assert month_labels(["2010-12", "2011-01", "2011-02"]) == ["Dec\n2010", "Jan\n2011", "Feb"]


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=40).filter(
        lambda c: sum(c) > 0
    ),
    share=st.floats(min_value=0.001, max_value=1.0),
)
def test_concentration_curves_and_top_items_hold_for_any_counts(counts: list[int], share: float) -> None:
    values = np.asarray(counts, dtype=np.float64)
    order = np.argsort(-values, kind="stable").astype(np.int64)
    x, y = concentration_curve(values, order)
    assert x[0] == y[0] == 0.0 and x[-1] == pytest.approx(1.0) and y[-1] == pytest.approx(1.0)
    assert np.all(np.diff(y) >= -1e-12)
    assert np.all(y >= x - 1e-12)  # most popular first: never below an even spread
    top = top_items(values, share)
    assert len(top) == max(1, math.ceil(share * len(values)))
    assert values[top].min() >= np.delete(values, top).max(initial=0.0)


def test_data_other_than_the_training_data_is_flagged(artifact: Path, tmp_path: Path) -> None:
    shop = Path(open_artifact(artifact).manifest["config"]["data"]["path"])
    copy = tmp_path / "shop"
    shutil.copytree(shop, copy)
    assert load_inputs(artifact, copy).data_note == ""  # an identical copy elsewhere is the same data
    items = pl.read_parquet(copy / "items.parquet")
    items.with_columns(pl.col("price") * 2).write_parquet(copy / "items.parquet")
    inputs = load_inputs(artifact, copy)
    assert inputs.shop is not None and not inputs.shop.matches_artifact
    assert "not the data this artifact was trained on" in inputs.data_note
