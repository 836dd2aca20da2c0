"""One small shop per test package (Parquet and CSV): built once, read by every generator test."""

import dataclasses

import pytest

from tests.training.synthetic_shop.small_shop import SMALL
from training.synthetic_shop import GenerationSummary, generate_shop


@pytest.fixture(scope="package")
def shop(tmp_path_factory: pytest.TempPathFactory) -> GenerationSummary:
    return generate_shop(tmp_path_factory.mktemp("shop"), SMALL)


@pytest.fixture(scope="package")
def csv_shop(tmp_path_factory: pytest.TempPathFactory) -> GenerationSummary:
    return generate_shop(tmp_path_factory.mktemp("csv_shop"), dataclasses.replace(SMALL, file_format="csv"))
