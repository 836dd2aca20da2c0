"""Shared fixtures: the real data sets beside the checkout, and one small synthetic shop per session."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy/implicit load: see implicit's BLAS warning

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a skip that says why: the real data sets are never copied into the project."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real data not available: {SHARED_DATA} is absent (CI and developer machines have ../shared)"
        )
    return SHARED_DATA
