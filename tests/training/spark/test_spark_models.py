"""Which models the Spark engine trains, its refusal of the others, and the [engine] config section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from cli.main import main
from engine.models.base import TrainingSet
from engine.models.implicit_factors import ImplicitALSModel
from training.config import ConfigError, parse_config
from training.spark.als import mllib_settings
from training.spark.models import SPARK_MODELS, check_spark_models


def test_single_machine_models_are_refused_by_name_with_the_alternatives() -> None:
    config = parse_config(
        {"models": {"als": {}, "lightfm_hybrid": {}, "bpr": {}}, "engine": {"name": "spark"}}
    )
    with pytest.raises(ConfigError) as caught:
        check_spark_models(config)
    message = str(caught.value)
    assert "lightfm_hybrid (LightFM), bpr (implicit's BPR) train on one machine only" in message
    assert f"the Spark engine trains {', '.join(SPARK_MODELS)}" in message
    assert "Remove [models.lightfm_hybrid], [models.bpr] from the config" in message
    assert "--engine local" in message


def test_the_command_line_refuses_before_starting_spark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "train.toml"
    config.write_text('[models.lightfm_hybrid]\n[data]\npath = "nowhere"\n', encoding="utf-8")
    assert main(["train", "--config", str(config), "--engine", "spark", "--master", "local[2]"]) == 2
    error = capsys.readouterr().err
    assert "lightfm_hybrid (LightFM)" in error and "Traceback" not in error


def test_engine_section_is_checked() -> None:
    assert parse_config({"engine": {"name": "spark", "master": "yarn"}}).engine.master == "yarn"
    with pytest.raises(ConfigError, match=r"\[engine\] name must be one of local, spark; got 'flink'"):
        parse_config({"engine": {"name": "flink"}})
    with pytest.raises(ConfigError, match=r"\[engine\] mastr: unknown key \(did you mean 'master'\?\)"):
        parse_config({"engine": {"mastr": "yarn"}})


def test_uri_data_paths_are_kept_as_written() -> None:
    config = parse_config({"data": {"path": "s3a://shop/exports"}}, base_dir=Path("/work"))
    assert config.data.path == "s3a://shop/exports"


def test_regularization_maps_to_the_same_total_penalty() -> None:
    # 3 customers and 2 items with interactions, 4 interactions: MLlib's penalty weighs 2 x 4 vectors.
    matrix = sp.csr_matrix(np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    data = TrainingSet(
        interactions=matrix,
        user_mix=np.full((4, 2), 0.5),
        user_demographics=sp.csr_matrix((4, 0)),
        item_features=sp.csr_matrix((2, 0)),
        persona_names=("a", "b"),
        demographic_feature_names=(),
        item_feature_names=(),
        seed=1,
    )
    settings = mllib_settings(
        ImplicitALSModel(factors=4, regularization=8.0, alpha=2.0, iterations=3, penalty="constant"), data
    )
    assert settings["regParam"] == pytest.approx(8.0 * (3 + 2) / (2 * 4))
    assert (settings["rank"], settings["maxIter"], settings["alpha"]) == (4, 3, 2.0)
    assert settings["implicitPrefs"] is True
    # MLlib's own penalty form: the same objective, the same number
    same = ImplicitALSModel(factors=4, regularization=0.3, alpha=2.0, iterations=3, penalty="per_interaction")
    assert mllib_settings(same, data)["regParam"] == 0.3
