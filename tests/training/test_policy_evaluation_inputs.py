"""``evaluate-policy`` on decisions logs with absurd numbers: refused naming the row and column, where an
outcome of 1e308 printed Infinity (--json) or a traceback, and a propensity of 1e-300 a traceback."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from cli.main import main

ROWS = 40


def _log(tmp_path: Path, *, propensity: float = 0.25, outcome: float = 1.0) -> Path:
    """Offer decisions over four arms at propensity 0.25; row 3 gets ``propensity`` and ``outcome``."""
    start = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    frame = pl.DataFrame(
        {
            "decision_id": [f"d{i}" for i in range(ROWS)],
            "customer_id": [f"c{i % 7}" for i in range(ROWS)],
            "timestamp": [start + dt.timedelta(hours=i) for i in range(ROWS)],
            "context": ["weekday"] * ROWS,
            "decision_type": ["offer"] * ROWS,
            "arm_id": [f"a{i % 4}" for i in range(ROWS)],
            "propensity": [propensity if i == 2 else 0.25 for i in range(ROWS)],
            "outcome": [outcome if i == 2 else float(i % 3 == 0) for i in range(ROWS)],
        }
    )
    path = tmp_path / "decisions.parquet"
    frame.write_parquet(path)
    return path


def _run(path: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str, str]:
    code = main(["evaluate-policy", "--decisions", str(path), "--policy", "uniform", *flags])
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


def test_a_sane_log_gives_finite_estimates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(_log(tmp_path), capsys, "--json")
    assert code == 0
    report = json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))
    assert all(abs(e["value"]) < 10 for p in report["policies"] for e in p["estimates"])


def test_an_outcome_near_the_float_maximum_is_refused_by_the_data_contract(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for flags in ((), ("--json",)):
        code, out, err = _run(_log(tmp_path, outcome=1e308), capsys, *flags)
        assert (code, out) == (2, "")
        assert (
            "decisions.parquet, row 3, column 'outcome': 1e+308 is out of range: must be between 0 and 1e+15"
            in err
        )


@pytest.mark.parametrize(
    ("propensity", "why"),
    [
        (1e-300, "1e-300 is below 1e-09, so this one decision would outweigh a billion others"),
        (0.0, "0 means the logging policy could not have chosen this arm"),
    ],
)
def test_a_propensity_of_zero_or_below_the_floor_is_refused_naming_row_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], propensity: float, why: str
) -> None:
    path = _log(tmp_path, propensity=propensity)
    code, _, err = _run(path, capsys)
    assert code == 2 and "Traceback" not in err
    assert (
        f"error: {path}: row 3, column 'propensity': {why}; off-policy evaluation needs the probability"
        in err
    )
