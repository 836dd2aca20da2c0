import datetime as dt
import hashlib
import inspect
import re
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from cli.main import main
from engine.errors import PersonaEngineError
from engine.models.registry import MODEL_KINDS, model_settings_schema
from training.config import ConfigError, load_config, parse_config
from training.split import (
    LoadedEvents,
    SplitError,
    TimeSplit,
    _held_out,
    all_events_split,
    split_events,
    split_predefined,
)
from training.synthetic_shop import ShopConfig, generate_shop

REPO = Path(__file__).resolve().parents[2]


def test_demo_config_loads() -> None:
    config = load_config(REPO / "training" / "configs" / "demo.toml")
    assert set(config.models) == {"popularity", "persona_popularity", "als", "bpr", "lightfm_hybrid"}
    assert config.evaluation.k == 10


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"split": {"test_dayz": 3}}, r"\[split\] test_dayz: unknown key \(did you mean 'test_days'\?\)"),
        ({"split": {"test_days": "3"}}, r'\[split\] test_days: expected an integer, got "3"'),
        ({"split": {"cold_start_share": 1.5}}, "cold_start_share must be in"),
        (
            {"drift": {"target_false_alarm": 0.0}},
            r"\[drift\] target_false_alarm must be in \(0, 1\), got 0.0",
        ),
        ({"drift": {"calibration_customers": -1}}, r"\[drift\] calibration_customers must be >= 0"),
        (
            {"drift": {"target_false_alarms": 0.1}},
            r"\[drift\] target_false_alarms: unknown key \(did you mean",
        ),
        ({"models": {"svd": {}}}, r"\[models.svd\] is not a known model"),
        ({"interactions": {"view": -1}}, "positive weights"),
        ({"interactions": {"purchse": 5.0}}, r"\[interactions\] purchse: unknown event type \(did you mean"),
        ({"trainng": {}}, r"unknown section \[trainng\] \(did you mean \[training\]\?\)"),
        (
            {"output": {"refit_on_all_events": "no"}},
            r'\[output\] refit_on_all_events: expected true or false, got "no"',
        ),
        (
            {"output": {"refit_on_all_events": 0}},
            r"\[output\] refit_on_all_events: expected true or false, got 0",
        ),
        (
            {"output": {"refit": False}},
            r"\[output\] refit: unknown key \(did you mean 'refit_on_all_events'\?\)",
        ),
        ({"models": {"als": {"factors": "64"}}}, r'\[models.als\] factors: expected an integer, got "64"'),
        (
            {"models": {"als": {"factorz": 64}}},
            r"\[models.als\] factorz: unknown key \(did you mean 'factors'\?\)",
        ),
        ({"models": {"als": {"factors": 0}}}, r"\[models.als\] factors must be a positive integer"),
        (
            {"models": {"lightfm_hybrid": {"epochz": 5}}},
            r"\[models.lightfm_hybrid\] epochz: unknown key \(did you mean 'epochs'\?\)",
        ),
        ({"models": {"lightfm_hybrid": {"loss": "hinge"}}}, r"\[models.lightfm_hybrid\] loss must be one of"),
        (
            {"models": {"bpr": {"learning_rate": True}}},
            r"\[models.bpr\] learning_rate: expected a number, got true",
        ),
        (
            {"models": {"popularity": {"k": 3}}},
            r"\[models.popularity\] k: unknown key; this model takes no settings",
        ),
        (
            {"personas": {"inference": {"max_iteration": 5}}},
            r"\[personas.inference\] max_iteration: unknown key \(did you mean 'max_iterations'\?\)",
        ),
        (
            {"personas": {"inference": {"tolerance": "small"}}},
            r'\[personas.inference\] tolerance: expected a number, got "small"',
        ),
        (
            {"training": {"deterministic": "yes"}},
            r'\[training\] deterministic: expected true or false, got "yes"',
        ),
    ],
)
def test_bad_configs_name_the_key(document: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(document, source="my.toml")
    assert str(info.value).startswith("my.toml, [") or str(info.value).startswith("my.toml: ")


def test_model_settings_are_checked_against_the_model_constructors() -> None:
    """The settings a config may name are each model's constructor parameters, not a second list."""
    for kind, cls in MODEL_KINDS.items():
        names = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        assert list(model_settings_schema(kind)) == names
    assert model_settings_schema("als")["factors"] == (int, 64)
    parse_config({"models": {"als": {"factors": 8, "regularization": 1}, "lightfm_hybrid": {"loss": "bpr"}}})


def test_a_bad_model_setting_stops_train_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "x.toml"
    config.write_text(
        f'[data]\npath = "{tmp_path / "no-data-needed"}"\n[output]\nroot = "{tmp_path / "artifacts"}"\n'
        "[models.popularity]\n[models.als]\n[models.lightfm_hybrid]\nepochz = 5\n",
        encoding="utf-8",
    )
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"error: {config}, [models.lightfm_hybrid] epochz: unknown key (did you mean 'epochs'?)"
    )
    assert not (tmp_path / "artifacts").exists()


def test_refit_switch_defaults_on_and_survives_path_resolution(tmp_path: Path) -> None:
    assert parse_config({}).output.refit_on_all_events
    path = tmp_path / "c.toml"
    path.write_text('[output]\nroot = "out"\nrefit_on_all_events = false\n', encoding="utf-8")
    config = load_config(path)
    assert not config.output.refit_on_all_events and Path(config.output.root).is_absolute()
    assert config.to_dict()["output"]["refit_on_all_events"] is False  # what the manifest stores
    path.write_text("[output]\nrefit_on_all_events = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="refit_on_all_events: expected true or false") as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}, [output]")


def test_all_events_split_holds_nothing_out() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    events = pl.DataFrame(
        {"customer_id": ["a", "b", "a", "c"], "timestamp": [start + dt.timedelta(days=d) for d in range(4)]}
    )
    split = all_events_split(events)
    assert split.train_events.height == 4 and split.test_events.height == 0
    assert split.warm_customers == ("a", "b", "c") and split.cold_customers == ()
    _train_customers_in_order(split)
    assert split.test_start > events["timestamp"].max() and not split.holds_out  # type: ignore[operator]
    assert split_events(events, test_days=1, cold_start_share=0.0, seed=1).holds_out


def test_a_split_that_leaves_nothing_to_train_on_or_to_evaluate_is_refused_naming_the_setting() -> None:
    """Both were a traceback (a ValueError); one far-future timestamp (a typo, 2062) made a test period
    of one event by a new customer, and train wrote an artifact with no evaluation (fuzz pass)."""
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    days = [0, 1, 2, 3, 40]
    events = pl.DataFrame(
        {
            "customer_id": ["a", "b", "a", "c", "d"],
            "timestamp": [start + dt.timedelta(days=d) for d in days],
        }
    )
    with pytest.raises(SplitError, match=r"no events before the test period \(\[split\] test_days = 100"):
        split_events(events, test_days=100, cold_start_share=0.0, seed=1)
    with pytest.raises(
        SplitError, match=r"nothing to evaluate \(1 event\(s\) in it\)\. Is the latest timestamp"
    ):
        split_events(events, test_days=28, cold_start_share=0.0, seed=1)
    with pytest.raises(SplitError):  # a PersonaEngineError: the CLI prints it on one line, exit 2
        raise SplitError("x")
    assert issubclass(SplitError, PersonaEngineError)


def test_time_split_and_stable_cold_holdout() -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    events = pl.DataFrame(
        {
            "customer_id": [f"c{i % 50}" for i in range(500)],
            "timestamp": [start + dt.timedelta(hours=7 * i) for i in range(500)],
        }
    )
    split = split_events(events, test_days=20, cold_start_share=0.2, seed=1)
    assert split.train_events["timestamp"].max() < split.test_start <= split.test_events["timestamp"].min()
    assert split.train_events.height + split.test_events.height == 500
    assert not set(split.warm_customers) & set(split.cold_customers)
    assert 3 <= len(split.cold_customers) <= 20
    again = split_events(events.reverse(), test_days=20, cold_start_share=0.2, seed=1)
    assert set(again.cold_customers) == set(split.cold_customers)


@settings(max_examples=40, deadline=None)
@given(
    hours=st.lists(st.integers(0, 24 * 60), min_size=1, max_size=60),
    test_days=st.integers(0, 40),
    predefined_every=st.integers(1, 5),
)
def test_a_handed_over_table_splits_exactly_like_a_kept_one(
    hours: list[int], test_days: int, predefined_every: int
) -> None:
    """The releasing split (``LoadedEvents``: column by column, the loaded table let go) gives the same
    periods, row order, dtypes and hold-out as filtering a table that stays alive."""
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    events = pl.DataFrame(
        {
            "event_id": [f"e{n}" for n in range(len(hours))],
            "customer_id": [f"c{h % 7}" for h in hours],
            "timestamp": [start + dt.timedelta(hours=h) for h in hours],
            "quantity": [float(h % 3) for h in hours],
        }
    )
    cutoff = max(hours) - 24 * test_days
    seen = {h % 7 for h in hours if h < cutoff}
    evaluable = any(h % 7 in seen for h in hours if h >= cutoff)  # a test event by a known customer
    if min(hours) < cutoff and not evaluable:
        for table in (events, LoadedEvents(events.clone())):
            with pytest.raises(SplitError, match="nothing to evaluate"):
                split_events(table, test_days=test_days, cold_start_share=0.3, seed=2)
    if min(hours) < cutoff and evaluable:  # a split with a training period and something to test
        kept = split_events(events, test_days=test_days, cold_start_share=0.3, seed=2)
        loaded = LoadedEvents(events.clone())
        handed = split_events(loaded, test_days=test_days, cold_start_share=0.3, seed=2)
        assert_frame_equal(handed.train_events, kept.train_events)
        assert_frame_equal(handed.test_events, kept.test_events)
        assert (handed.test_start, handed.warm_customers, handed.cold_customers) == (
            kept.test_start,
            kept.warm_customers,
            kept.cold_customers,
        )
        with pytest.raises(RuntimeError, match="handed over already"):
            loaded.take()
        _train_customers_in_order(handed)
    test_ids = events["event_id"].gather_every(predefined_every)
    if 0 < test_ids.len() < events.height:
        kept = split_predefined(events, test_ids, cold_start_share=0.3, seed=2)
        handed = split_predefined(LoadedEvents(events.clone()), test_ids, cold_start_share=0.3, seed=2)
        assert_frame_equal(handed.train_events, kept.train_events)
        assert_frame_equal(handed.test_events, kept.test_events)
        _train_customers_in_order(handed)


def _train_customers_in_order(split: TimeSplit) -> None:
    """The customers a split hands ``prepare`` are its training events' own, in first-appearance order,
    and exactly those split into warm and cold."""
    assert split.train_customers is not None
    want = split.train_events["customer_id"].unique(maintain_order=True).to_list()
    assert split.train_customers.to_list() == want
    assert sorted(want) == sorted(split.warm_customers + split.cold_customers)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.text(min_size=1, max_size=12), max_size=40, unique=True),
    st.integers(0, 2**31),
    st.floats(0.0, 1.0),
)
def test_cold_holdout_is_the_per_customer_hash_rule(customers: list[str], seed: int, share: float) -> None:
    """The batched hash keeps the rule every earlier split used, so a shop's cold customers never move."""

    def held_out(customer_id: str) -> bool:
        digest = hashlib.blake2b(f"{seed}:{customer_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 < share

    assert _held_out(customers, seed, share).tolist() == [held_out(c) for c in customers]


@pytest.mark.parametrize(
    ("customers", "cold_start_share", "advice"),
    [(40, 0.9, "lower \\[split\\] cold_start_share"), (6, 0.0, "use a data set with more customers")],
)
def test_a_split_with_too_few_customers_to_fit_is_refused_saying_what_to_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], customers: int, cold_start_share: float, advice: str
) -> None:
    """Two to five customers ended in NaN factors, a NaN in the manifest or a ZeroDivisionError in ALS
    (a data scientist's walkthrough on the first customers of an export); one line says why instead."""
    shop = tmp_path / "shop"
    generate_shop(shop, ShopConfig(customers=customers, items=100, events=customers * 40, seed=3))
    config = tmp_path / "small.toml"
    config.write_text(
        f'[data]\npath = "{shop}"\n[split]\ncold_start_share = {cold_start_share}\n'
        f'[models.popularity]\n[models.als]\n[output]\nroot = "{tmp_path / "artifacts"}"\n',
        encoding="utf-8",
    )
    assert main(["train", "--config", str(config), "--no-progress"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert re.search(
        rf"error: the split leaves \d customer\(s\) to fit the models on, of \d+ .*at least 10: {advice}", err
    )
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").iterdir())
