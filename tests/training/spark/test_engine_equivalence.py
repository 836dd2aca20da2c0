"""Both engines on the same shop: the same persona mixes, ALS of the same quality, and an artifact
that the gRPC server serves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.artifact import open_artifact
from engine.artifact.layout import LAYOUT
from serving.server_process import running_server
from tests.training.spark.conftest import BothEngines


def _mixes(artifact: Path) -> tuple[list[str], np.ndarray]:
    folder = open_artifact(artifact)
    ids = [str(c) for c in folder.load_array(LAYOUT.customer_ids.path)]
    return ids, folder.load_array(LAYOUT.mix_overall.path)


def _ndcg(results: list, model: str) -> float:
    return next(r.to_dict()["ndcg"] for r in results if r.model == model and r.segment == "all")


def test_persona_mixes_match_the_local_engine(both_engines: BothEngines) -> None:
    local_ids, local = _mixes(both_engines.local.artifact_path)
    spark_ids, spark = _mixes(both_engines.spark.artifact_path)
    assert local_ids == spark_ids
    distance = 0.5 * np.abs(local - spark).sum(axis=1)
    assert distance.mean() <= 0.05, f"mean total-variation distance {distance.mean():.4f}"


def test_mllib_als_ndcg_is_within_five_percent_of_local_als(both_engines: BothEngines) -> None:
    """The default ``penalty = "per_interaction"`` is MLlib's objective, fitted locally by the engine's
    solver and on Spark with ``regParam = regularization``: only the solvers differ (conjugate-gradient
    steps against MLlib's exact solves, and their random starts)."""
    for result in (both_engines.local, both_engines.spark):
        saved = json.loads((result.artifact_path / "models" / "als" / "model.json").read_text())
        assert saved["config"]["penalty"] == "per_interaction", saved
    local, spark = _ndcg(both_engines.local.results, "als"), _ndcg(both_engines.spark.results, "als")
    assert abs(spark - local) <= 0.05 * local, f"NDCG@10 local {local:.4f}, Spark {spark:.4f}"
    # each engine says how long its solver ran, inside the model's whole fit
    for result in (both_engines.local, both_engines.spark):
        assert 0 < result.summary["library_fit_seconds"]["als"] < result.fit_seconds["als"]


def test_spark_popularity_models_score_as_the_local_ones(both_engines: BothEngines) -> None:
    for model in ("popularity", "persona_popularity"):
        local, spark = _ndcg(both_engines.local.results, model), _ndcg(both_engines.spark.results, model)
        assert abs(spark - local) <= 0.01 * local, f"{model}: NDCG@10 local {local:.4f}, Spark {spark:.4f}"


def test_manifest_says_where_the_artifact_was_trained(both_engines: BothEngines) -> None:
    manifest = json.loads((both_engines.spark.artifact_path / "manifest.json").read_text())
    engine = manifest["engine"]
    assert engine["name"] == "spark"
    assert engine["master"] == "local[2]"
    assert engine["partitions"] == 2
    assert "regParam" in engine["als_parameter_map"]["regularization"]
    assert "engine" not in json.loads((both_engines.local.artifact_path / "manifest.json").read_text())


def test_the_server_answers_personalize_from_a_spark_trained_artifact(
    both_engines: BothEngines, tmp_path: Path
) -> None:
    ids, _ = _mixes(both_engines.spark.artifact_path)
    with running_server(both_engines.spark.artifact_path, tmp_path) as server, server.client() as client:
        page = client.personalize(ids[0], k=5)
    assert len(page.items) == 5
    assert page.decision.model_version == both_engines.spark.artifact_path.name
