"""Long or lossy commands say what they do: skipped rows on the console, stage lines while working."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import polars as pl
import pytest

from cli.main import main
from tests.engine.small_artifact import train_small_artifact
from tests.training.synthetic_shop.small_shop import SMALL
from training.synthetic_shop import generate_shop


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_artifact(tmp_path_factory.mktemp("quiet"), refit=True)


def test_skipped_rows_are_counted_per_reason_on_the_console(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shop = generate_shop(tmp_path / "shop", dataclasses.replace(SMALL, file_format="csv")).out_dir
    events = pl.read_csv(shop / "events.csv", infer_schema=False)
    broken = events.with_row_index().with_columns(
        pl.when(pl.col("index") < 3)
        .then(pl.lit("not a time"))
        .otherwise(pl.col("timestamp"))
        .alias("timestamp")
    )
    broken.drop("index").write_csv(shop / "events.csv")
    config = tmp_path / "skip.toml"
    config.write_text(
        f'[data]\npath = "{shop}"\nskip_invalid = true\n[models.popularity]\n'
        f'[output]\nroot = "{tmp_path / "artifacts"}"\nrefit_on_all_events = false\n',
        encoding="utf-8",
    )
    assert main(["train", "--config", str(config), "--no-progress"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "rows skipped ([data] skip_invalid = true): 3" in out
    assert "table reason rows" in out and "events bad_timestamp 3" in out


def test_evaluate_and_report_say_what_they_are_doing(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "--artifact", str(artifact)]) == 0
    err = capsys.readouterr().err
    for stage in (
        "verifying the artifact",
        "inferring persona mixes",
        "fitting the split's models",
        "scoring",
    ):
        assert f"evaluate: {stage}" in err or (stage in err and "evaluate: " in err), err
    assert main(["report", "--artifact", str(artifact), "--out", str(tmp_path / "r.html")]) == 0
    err = capsys.readouterr().err
    assert "report: verifying the artifact and loading its data" in err and "report: model_quality" in err
    assert main(["report", "--artifact", str(artifact), "--out", str(tmp_path / "r.html"), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) and "report:" not in captured.err
