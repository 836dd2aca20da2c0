"""The comparison and tuning jobs on a small synthetic shop: every row scored by the same rules."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from cli.main import main
from engine.models.base import UserBatch
from engine.models.registry import create_model, model_class
from engine.personas.catalog import load_catalog
from training.blend_weights import simplex_grid
from training.compare_job import ComparisonReport, library_search_start, run_comparison
from training.config import load_config, parse_config
from training.evaluation import evaluate_models
from training.library_baselines import ImplicitALS, LightFMWarp
from training.prepared_data import PreparedData, evaluation_segments, prepare
from training.split import TimeSplit
from training.synthetic_shop import ShopConfig, generate_shop
from training.tune_job import (
    LIBRARY_SEARCH_SPACES,
    SEARCH_SPACES,
    SearchSpec,
    run_tuning,
    search_space,
    to_toml,
    trial_parameters,
    validation_split,
)

FAST_ENGINE = {
    "popularity": {},
    "persona_popularity": {},
    "als": {"factors": 16, "iterations": 5},
    "lightfm_hybrid": {"no_components": 8, "epochs": 3},
}


SEARCH_TRIALS = 3


@pytest.fixture(scope="module")
def shop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shop")
    generate_shop(out, ShopConfig(customers=300, items=150, events=8_000, seed=3))
    return out


@pytest.fixture(scope="module")
def config_file(shop_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    lines = [
        "[data]",
        f'path = "{shop_dir}"',
        "[split]",
        "test_days = 28",
        "cold_start_share = 0.15",
        *(
            f"[models.{kind}]\n" + "\n".join(f"{k} = {v}" for k, v in p.items())
            for kind, p in FAST_ENGINE.items()
        ),
    ]
    path = tmp_path_factory.mktemp("config") / "small.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def prepared(config_file: Path) -> PreparedData:
    return prepare(load_config(config_file))


@pytest.fixture(scope="module")
def report(config_file: Path, prepared: PreparedData) -> ComparisonReport:
    return run_comparison(config_file, show_progress=False, prepared=prepared, trials=SEARCH_TRIALS)


def test_every_model_family_is_compared_on_the_same_customers(report: ComparisonReport) -> None:
    names = [m.name for m in report.models]
    rows = {m.name: m for m in report.models}
    at_tuning = rows["engine:als at implicit_als_tuned"]
    # a recency prior outlives persona conditioning, so that ablation is a row of its own
    keeps_prior = model_class("als").without_personas(at_tuning.parameters).get("prior_weights")
    twin = ["engine:als at implicit_als_tuned without personas"] if keeps_prior else []
    assert names == [
        "popularity",
        "persona_popularity",
        "implicit_als_defaults",
        "implicit_bpr_defaults",
        "lightfm_warp_defaults",
        "engine:als",
        "engine:als without personas",
        "engine:lightfm_hybrid",
        "engine:lightfm_hybrid without personas",
        "implicit_als_tuned",
        "engine:als at implicit_als_tuned",
        *twin,
        "implicit_bpr_tuned",
        "lightfm_warp_tuned",
    ]
    warm_users = {m.results["all"].users for m in report.models}
    assert warm_users == {report.users["all"]}
    for model in report.models:
        for metric in ("precision", "recall", "ndcg", "map"):
            assert 0.0 <= model.results["all"].metrics[metric] <= 1.0
        assert model.fit_seconds >= 0.0


def test_library_defaults_are_the_documented_ones_and_skip_cold_start(report: ComparisonReport) -> None:
    rows = {m.name: m for m in report.models}
    assert rows["implicit_als_defaults"].parameters == {
        "factors": 100,
        "regularization": 0.01,
        "alpha": 1.0,
        "iterations": 15,
        "num_threads": 1,
        "seed": 13,
    }
    assert rows["lightfm_warp_defaults"].parameters["no_components"] == 10
    assert rows["lightfm_warp_defaults"].parameters["epochs"] == 30
    for name in ("implicit_als_defaults", "implicit_bpr_defaults", "lightfm_warp_defaults"):
        assert "cold_start" not in rows[name].results
    for name in ("popularity", "persona_popularity", "engine:als"):
        assert rows[name].results["cold_start"].users == report.users["cold_start"] > 0


def test_verdict_follows_the_numbers(report: ComparisonReport) -> None:
    v = report.verdict
    rows = {m.name: m for m in report.models}
    engine = max((m for m in report.models if m.family == "engine"), key=lambda m: m.metric("all") or 0)
    tuned = max((m for m in report.models if m.family == "library tuned"), key=lambda m: m.metric("all") or 0)
    assert v["engine_best"] == {"model": engine.name, "ndcg_at_10": engine.metric("all")}
    assert v["library_best_tuned"] == {"model": tuned.name, "ndcg_at_10": tuned.metric("all")}
    stated = {d["name"]: d for d in v["differences"]}
    headline = stated["engine best - library best tuned"]
    assert headline["mean"] == pytest.approx((engine.metric("all") or 0) - (tuned.metric("all") or 0))
    assert headline["ci95"] == v["difference_ci95"]
    low, high = v["difference_ci95"]
    assert low <= headline["mean"] <= high
    lift = stated["persona lift (engine best - its ablation)"]
    assert lift["b"] == f"{engine.name} without personas" and lift["ci95"] == v["persona_lift_ci95"]
    assert v["engine_beats_library_tuned"] == (low > 0)
    assert v["cold_start"]["popularity_ndcg_at_10"] == rows["popularity"].metric("cold_start")
    assert v["cold_start"]["meets_target"] == (v["cold_start"]["difference_to_target_ci95"][0] > 0)
    cold_warned = any("the cold-start figures rest on" in w for w in report.warnings)
    assert (
        cold_warned == (report.users["cold_start"] < 100) and report.to_dict()["warnings"] == report.warnings
    )
    assert not v["cold_start"]["meets_target"] or v["cold_start"]["ratio_to_popularity"] >= 1.5
    document = report.to_dict()
    for key in ("engine_best", "library_best_tuned", "difference_ci95", "persona_lift_ci95"):
        assert document[key] == v[key]  # the headline figures sit at the top of compare --json


def test_tuned_libraries_search_the_same_budget_as_the_engine(report: ComparisonReport) -> None:
    searched = [m for m in report.models if m.search is not None]
    assert {m.name for m in searched} == {
        "engine:als",
        "engine:lightfm_hybrid",
        "implicit_als_tuned",
        "implicit_bpr_tuned",
        "lightfm_warp_tuned",
    }
    assert {m.search["trials"] for m in searched} == {SEARCH_TRIALS}
    for model in searched:  # the winner is never worse on validation than where the search started
        assert model.search["best_validation_ndcg"] >= model.search["start_validation_ndcg"]
    rows = {m.name: m for m in report.models}
    # the raw ALS search starts from the engine's configured values of the hyperparameters they share
    assert rows["engine:als without personas"].parameters["persona_blend"] == 0.0
    engine, ablation = rows["engine:als"].parameters, rows["engine:als without personas"].parameters
    if engine["prior_half_life_days"] is None:  # an all-time prior goes with the personas
        assert ablation["prior_weights"] is None
    else:  # a recency prior stays, with the population in place of the personas
        assert (ablation["prior_weights"], ablation["prior_scope"]) == (engine["prior_weights"], "population")
    assert rows["engine:als without personas"].parameters["blend_weights"] is None
    assert len(rows["engine:als"].parameters["prior_weights"]) == 4  # fitted: cold start + 3 levels
    assert all(m.parameters.get("num_threads", 1) == 1 for m in report.models)


def test_personas_are_measured_on_top_of_the_tuned_librarys_hyperparameters(
    report: ComparisonReport, prepared: PreparedData
) -> None:
    rows = {m.name: m for m in report.models}
    library, at_tuning = rows["implicit_als_tuned"], rows["engine:als at implicit_als_tuned"]
    assert at_tuning.family == "engine at library tuning" and at_tuning.search is None
    for name in ("factors", "regularization", "alpha", "iterations", "random_state", "num_threads"):
        assert at_tuning.parameters[name] == library.parameters[name]
    assert at_tuning.parameters["penalty"] == "constant"  # implicit's form: the ablation is the library
    assert len(at_tuning.parameters["prior_weights"]) == 4  # fitted on validation, as the engine's own
    assert "cold_start" not in at_tuning.results  # compared with the library on known customers only
    # never the engine's best: that one comes from the engine's own search
    assert report.verdict["engine_best"]["model"] != at_tuning.name
    stated = {d["name"]: d for d in report.verdict["differences"]}
    gain = stated["personas on the library's tuning (engine:als at implicit_als_tuned)"]
    ablation = rows.get("engine:als at implicit_als_tuned without personas", library)
    assert (gain["a"], gain["b"]) == (at_tuning.name, ablation.name)
    assert gain["mean"] == pytest.approx((at_tuning.metric("all") or 0) - (ablation.metric("all") or 0))
    # with persona conditioning and any prior off it scores every known customer as the tuned library
    plain = {**(model_class("als").without_personas(at_tuning.parameters) or {}), "prior_weights": None}
    ablated = create_model("als", **plain)
    ablated.fit(prepared.training_set)
    warm = [s for s in evaluation_segments(prepared) if s.name == "all"]
    (result,) = evaluate_models({"ablated": ablated}, warm, 10)
    np.testing.assert_allclose(result.per_user["ndcg"], library.per_user("all"), atol=1e-9)


def test_als_regularization_is_searched_on_the_scale_of_its_penalty_form() -> None:
    draws = np.linspace(0.0, 1.0, 300, endpoint=False)
    per_interaction = [search_space("als", {})["regularization"](u) for u in draws]
    constant = [search_space("als", {"penalty": "constant"})["regularization"](u) for u in draws]
    assert min(per_interaction) >= 0.001 and max(per_interaction) <= 10.0
    assert min(constant) >= 0.01 and max(constant) <= 100.0 and max(constant) > 10.0
    assert search_space("lightfm_hybrid", {}) == SEARCH_SPACES["lightfm_hybrid"]


def test_implicits_als_starts_from_the_constant_penalty_it_fits() -> None:
    # the engine's default per-interaction 0.2 would be a near-zero penalty for implicit's ALS
    default = library_search_start("implicit_als", parse_config({"models": {"als": {"alpha": 3.0}}}))
    assert (default["regularization"], default["alpha"]) == (20.0, 3.0)
    constant = parse_config({"models": {"als": {"penalty": "constant", "regularization": 7.0}}})
    assert library_search_start("implicit_als", constant)["regularization"] == 7.0


def _without_timings(document: object) -> object:
    if isinstance(document, dict):
        return {k: _without_timings(v) for k, v in document.items() if "seconds" not in k}
    if isinstance(document, list):
        return [_without_timings(v) for v in document]
    return document


def test_a_seeded_compare_reproduces_its_figures(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = []
    for _ in range(2):
        assert (
            main(["compare", "--config", str(config_file), "--json", "--trials", "2", "--search-seed", "4"])
            == 0
        )
        runs.append(_without_timings(json.loads(capsys.readouterr().out)))
    assert runs[0] == runs[1]


def test_catalog_flag_replaces_the_configs_catalog(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compare", "--config", str(config_file), "--json", "--trials", "0"]
    assert main([*argv, "--catalog", "online_retail"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["personas"] == {
        "catalog": "online_retail",
        "ids": list(load_catalog("online_retail").ids),
    }
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["personas"]["ids"] == list(load_catalog("default").ids)


def test_library_default_models_refuse_unknown_customers_and_save_without_pickle(
    prepared: PreparedData, tmp_path: Path
) -> None:
    data = prepared.training_set
    model = LightFMWarp(random_state=1)
    model.fit(data)
    unknown = UserBatch.for_personas(len(data.persona_names), len(data.demographic_feature_names))
    with pytest.raises(ValueError, match="scores known customers only"):
        model.score(unknown)
    als = ImplicitALS(random_state=1)
    als.fit(data)
    als.save(tmp_path / "als")
    twin = ImplicitALS.load(tmp_path / "als")
    known = UserBatch(
        user_index=np.arange(3, dtype=np.int64),
        mix=data.user_mix[:3],
        demographics=data.user_demographics[:3],
    )
    np.testing.assert_array_equal(twin.score(known), als.score(known))


def test_validation_split_of_a_predefined_split_never_touches_test_events() -> None:
    import datetime as dt

    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = [(f"c{c}", f"e{c}-{i}", start + dt.timedelta(hours=i)) for c in range(30) for i in range(30)]
    events = pl.DataFrame(rows, schema=["customer_id", "event_id", "timestamp"], orient="row")
    is_test = pl.col("event_id").str.ends_with("-0") | pl.col("event_id").str.ends_with("-1")
    split = TimeSplit(
        test_start=start,
        train_events=events.filter(~is_test),
        test_events=events.filter(is_test),
        warm_customers=tuple(f"c{c}" for c in range(27)),
        cold_customers=("c27", "c28", "c29"),
        method="predefined",
    )
    carved = validation_split(split, test_days=28, cold_start_share=0.1, seed=5)
    assert not set(carved.test_events["event_id"]) & set(split.test_events["event_id"])
    assert set(carved.test_events["event_id"]) | set(carved.train_events["event_id"]) == set(
        split.train_events["event_id"]
    )
    assert set(carved.test_events.group_by("customer_id").len()["len"].to_list()) == {2}  # as in test
    assert carved.cold_customers == split.cold_customers
    again = validation_split(split, test_days=28, cold_start_share=0.1, seed=5)
    assert again.test_events["event_id"].sort().to_list() == carved.test_events["event_id"].sort().to_list()


def test_tune_starts_from_the_config_and_writes_a_loadable_config(config_file: Path, tmp_path: Path) -> None:
    written = tmp_path / "tuned.toml"
    result = run_tuning(
        config_file, budget_seconds=3.0, models=["als", "persona_popularity"], seed=1, write_config=written
    )
    assert {t.kind for t in result.trials if t.started_from_config} == {"als", "persona_popularity"}
    for kind, best in result.best.items():
        start = next(t for t in result.trials if t.kind == kind and t.started_from_config)
        assert best.ndcg >= start.ndcg and math.isfinite(best.ndcg)
    config = load_config(written)
    assert config.models["als"]["factors"] == result.best["als"].parameters["factors"]
    assert len(config.models["als"]["prior_weights"]) == 4  # fitted per activity level on validation
    assert config.models["lightfm_hybrid"] == FAST_ENGINE["lightfm_hybrid"]  # untouched kinds keep theirs
    assert tomllib.loads(written.read_text(encoding="utf-8"))["split"]["cold_start_share"] == 0.15


def test_tune_on_other_data_writes_that_data_into_the_tuned_config(
    config_file: Path, shop_dir: Path, tmp_path: Path
) -> None:
    """Settings searched on --data are trained on it: the tuned config must not point elsewhere."""
    elsewhere = tmp_path / "config-elsewhere.toml"
    elsewhere.write_text(
        config_file.read_text(encoding="utf-8").replace(f'path = "{shop_dir}"', 'path = "data/not-searched"'),
        encoding="utf-8",
    )
    written = tmp_path / "tuned.toml"
    run_tuning(
        elsewhere, budget_seconds=1.0, models=["persona_popularity"], data_path=shop_dir, write_config=written
    )
    assert load_config(written).data.path == str(shop_dir)
    text = written.read_text(encoding="utf-8")
    assert f"--data {shop_dir}" in text and "[data] path is the --data searched (data/not-searched" in text


def test_tune_refuses_to_replace_an_existing_tuned_config_before_searching(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "shop.toml"
    config.write_text(config_file.read_text(encoding="utf-8"), encoding="utf-8")
    earlier = tmp_path / "shop-tuned.toml"  # the default name: CONFIG with -tuned
    earlier.write_text("# an hour of search\n", encoding="utf-8")
    argv = ["tune", "--config", str(config), "--budget-seconds", "60", "--models", "persona_popularity"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(earlier) in err and "--overwrite" in err and "--write-config" in err
    named = tmp_path / "named.toml"
    named.write_text("# mine\n", encoding="utf-8")
    assert main([*argv, "--write-config", str(named)]) == 2
    assert f"argument --write-config: {named} already exists" in " ".join(capsys.readouterr().err.split())
    assert earlier.read_text(encoding="utf-8") == "# an hour of search\n"
    assert named.read_text(encoding="utf-8") == "# mine\n"


def test_tune_with_overwrite_keeps_the_untuned_models_and_says_which_it_tuned(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = tmp_path / "tuned.toml"
    written.write_text("# an earlier search\n", encoding="utf-8")
    argv = ["tune", "--config", str(config_file), "--budget-seconds", "1", "--models", "persona_popularity"]
    assert main([*argv, "--write-config", str(written), "--overwrite", "--no-progress"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "tuned in this run: persona_popularity" in out
    assert f"kept as {config_file} sets them: popularity, als, lightfm_hybrid" in out
    assert f"tuned config replaced (--overwrite) {written}" in out
    models = load_config(written).models
    assert {kind: models[kind] for kind in ("als", "lightfm_hybrid")} == {
        kind: FAST_ENGINE[kind] for kind in ("als", "lightfm_hybrid")
    }
    assert "Not tuned in this run" in written.read_text(encoding="utf-8")
    assert main([*argv, "--write-config", str(tmp_path / "json.toml"), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["tuned"] == ["persona_popularity"] and document["replaced_existing"] is False
    assert document["kept"] == ["popularity", "als", "lightfm_hybrid"]


def test_tune_with_overwrite_warns_before_searching_when_an_earlier_tuning_would_be_lost(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = tmp_path / "tuned.toml"
    earlier = tomllib.loads(config_file.read_text(encoding="utf-8"))
    earlier["models"]["als"] = {**earlier["models"]["als"], "factors": 96}  # an earlier run tuned ALS
    written.write_text(to_toml(earlier, "an earlier search"), encoding="utf-8")
    argv = ["tune", "--config", str(config_file), "--budget-seconds", "1", "--models", "persona_popularity"]
    assert main([*argv, "--write-config", str(written), "--overwrite", "--no-progress", "--json"]) == 0
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert f"warning: {written} sets als otherwise than {config_file}; --overwrite writes them as" in err
    assert f"To re-tune other models and keep these, pass --config {written}" in err
    assert json.loads(captured.out)["settings_replaced"] == ["als"]
    assert load_config(written).models["als"] == FAST_ENGINE["als"]  # as warned: the earlier ALS is gone
    # The advice works: with the tuned file as --config, in place, nothing is lost and nothing is said.
    again = ["tune", "--config", str(written), "--budget-seconds", "1", "--models", "persona_popularity"]
    assert main([*again, "--write-config", str(written), "--overwrite", "--no-progress", "--json"]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and json.loads(captured.out)["settings_replaced"] == []


def test_tune_rejects_unknown_kinds_and_bad_budgets(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tune", "--config", str(config_file), "--budget-seconds", "1", "--models", "svd"]) == 2
    assert "cannot tune svd" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # refused by the parser, before the config is read
        main(["tune", "--config", str(config_file), "--budget-seconds", "0"])
    assert exit_info.value.code == 2
    assert "argument --budget-seconds: must be greater than 0" in capsys.readouterr().err
    assert parse_config({"models": {"als": {}}}).models == {"als": {}}


def test_simplex_grid_covers_every_weighting_in_tenths_once() -> None:
    grid = simplex_grid(3)
    assert len(grid) == 66 and grid[0] == [1.0, 0.0, 0.0]
    assert all(math.isclose(sum(point), 1.0) and min(point) >= 0 for point in grid)
    assert len({tuple(point) for point in grid}) == 66
    assert simplex_grid(1) == [[1.0]]


def test_a_blend_is_compared_with_its_members_as_searched_and_weights_fitted_on_validation(
    config_file: Path, prepared: PreparedData, tmp_path: Path
) -> None:
    text = config_file.read_text(encoding="utf-8") + (
        "[models.linear_autoencoder]\nfactors = 32\n"
        '[models.blend]\nmembers = [{kind = "als"}, {kind = "linear_autoencoder"}]\n'
    )
    with_blend = tmp_path / "blend.toml"
    with_blend.write_text(text, encoding="utf-8")
    report = run_comparison(with_blend, show_progress=False, prepared=prepared, trials=2)
    rows = {m.name: m for m in report.models}
    blend, ablation = rows["engine:blend"], rows["engine:blend without personas"]
    assert blend.persona_conditioned and ablation.ablation_of == "engine:blend"
    members = blend.parameters["members"]
    assert [m["kind"] for m in members] == ["als", "linear_autoencoder"]
    # each member is its kind as compared (searched), without its personas, on one thread
    for member in members:
        kind = member["kind"]
        searched = model_class(kind).without_personas(rows[f"engine:{kind}"].parameters)
        assert {k: v for k, v in member.items() if k != "kind"} == {**searched, "num_threads": 1}
    assert blend.parameters["weights"] in simplex_grid(2)
    prior = blend.parameters["prior_weights"]  # the blend's own persona prior, per activity level
    assert prior is None or (len(prior) == 4 and min(prior) >= 0)
    if blend.parameters["prior_half_life_days"] is None:  # an all-time prior goes with the personas
        assert ablation.parameters["prior_weights"] is None
    else:  # a recency prior stays, at the population's scope, as a factor model's ablation keeps it
        assert ablation.parameters["prior_weights"] == prior
        assert ablation.parameters["prior_scope"] == "population"
    assert (
        ablation.parameters["members"] == members
        and ablation.parameters["weights"] == blend.parameters["weights"]
    )


def test_tune_writes_a_blend_of_the_winners_with_weights_fitted_on_validation(
    config_file: Path, tmp_path: Path
) -> None:
    with_blend = tmp_path / "blend.toml"
    with_blend.write_text(
        config_file.read_text(encoding="utf-8")
        + '[models.blend]\nmembers = [{kind = "als"}, {kind = "linear_autoencoder", factors = 16}]\n',
        encoding="utf-8",
    )
    written = tmp_path / "tuned.toml"
    result = run_tuning(with_blend, budget_seconds=2.0, models=["als"], seed=1, write_config=written)
    assert result.blend is not None and result.blend_ndcg is not None and math.isfinite(result.blend_ndcg)
    blend = load_config(written).models["blend"]

    def written(kind: str, settings: dict[str, object]) -> dict[str, object]:  # TOML has no None
        ablated = model_class(kind).without_personas(dict(settings)) or settings
        return {"kind": kind, **{k: v for k, v in ablated.items() if v is not None}}

    # the winner, and the member not searched as configured, each without its personas
    assert blend["members"][0] == written("als", result.best["als"].parameters)
    assert blend["members"][1] == written("linear_autoencoder", {"factors": 16})
    assert blend["weights"] == result.blend["weights"] and blend["weights"] in simplex_grid(2)


def test_the_engine_and_its_library_try_the_same_draws_of_the_hyperparameters_they_share() -> None:
    def spec(name: str, space: dict[str, Any]) -> SearchSpec:
        return SearchSpec(name=name, build=lambda parameters: None, starts=({},), space=space)

    engine = spec("als", search_space("als", {"penalty": "constant"}))
    library = spec("implicit_als", LIBRARY_SEARCH_SPACES["implicit_als"])
    trials = [(trial_parameters(engine, i, 7), trial_parameters(library, i, 7)) for i in range(1, 30)]
    for ours, theirs in trials:  # same names, same ranges (constant penalty): the same values
        assert {name: ours[name] for name in theirs} == theirs
        assert {"persona_blend", "demographic_weight"} <= ours.keys()
    assert len({tuple(sorted(theirs.items())) for _, theirs in trials}) == len(trials)  # trials differ
    # the per-interaction form searches another range: the same quantile of it
    scaled = spec("als", search_space("als", {}))
    for index in range(1, 30):
        low = trial_parameters(scaled, index, 7)["regularization"]
        high = trial_parameters(library, index, 7)["regularization"]
        assert math.isclose(low * 10, high, rel_tol=1e-3)
    # another search seed draws anew
    assert trial_parameters(library, 3, 8) != trial_parameters(library, 3, 7)
