"""batch-recommend and segments on a small trained artifact of the synthetic shop."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from cli.main import main
from engine.data.loading import load_shop
from engine.personalization_request import CustomerTarget, ProductRequest
from engine.personalizer import Personalizer
from tests.engine.small_artifact import train_small_artifact
from training.batch_recommend import CustomerListError, batch_recommend, read_customer_ids
from training.config import parse_config
from training.persona_segments import persona_segments
from training.synthetic_shop import ShopConfig, generate_shop
from training.train_job import run_training


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_artifact(tmp_path_factory.mktemp("batch-jobs"))


@pytest.fixture(scope="module")
def personalizer(artifact: Path) -> Personalizer:
    return Personalizer.from_path(artifact)


def test_every_customer_gets_k_unpurchased_items_as_the_api_would(
    personalizer: Personalizer, tmp_path: Path
) -> None:
    out = tmp_path / "top.parquet"
    report = batch_recommend(personalizer, out, k=5, chunk=97)
    frame = pl.read_parquet(out)
    n = len(personalizer.customers)
    assert report.customers == n and report.rows == frame.height == 5 * n
    assert frame.group_by("customer_id").agg(pl.col("rank").sort()).get_column("rank").to_list()[0] == [
        1,
        2,
        3,
        4,
        5,
    ]
    customer = str(personalizer.customers.ids[7])
    mine = frame.filter(pl.col("customer_id") == customer).sort("rank")
    expected = personalizer.recommend_products(
        [CustomerTarget(customer)], ProductRequest(k=5), overall_mix=True
    )[0]
    assert expected.decision.mix.as_dict() == personalizer.mix_for(customer)[0].as_dict()  # overall, any day
    assert mine["item_id"].to_list() == [item.item_id for item in expected.items]
    purchased = personalizer.purchases[personalizer.customers.index(customer)].indices
    assert not set(mine["item_id"].to_list()) & set(personalizer.items.ids[purchased].tolist())

    # chunking only bounds memory: another chunk size writes the same lists
    batch_recommend(personalizer, tmp_path / "big-chunks.parquet", k=5, chunk=10_000)
    assert pl.read_parquet(tmp_path / "big-chunks.parquet").equals(frame)


def test_a_customer_list_with_unknown_ids_is_served_cold_start(
    personalizer: Personalizer, tmp_path: Path
) -> None:
    known = str(personalizer.customers.ids[0])
    ids = read_customer_ids(f"{known}, stranger-1 ,{known}")
    assert ids == [known, "stranger-1"]
    report = batch_recommend(personalizer, tmp_path / "few.parquet", customer_ids=ids, k=3)
    frame = pl.read_parquet(tmp_path / "few.parquet")
    assert report.unknown_customers == 1 and frame.height == 6
    assert frame.filter(pl.col("customer_id") == "stranger-1")["cold_start"].all()
    assert frame.filter(pl.col("customer_id") == "stranger-1")["mix_source"].unique().to_list() == ["prior"]


def _numbered_shop_artifact(folder: Path) -> Path:
    """A small trained artifact whose customer ids are numbers ("1001"), as an export's are."""
    shop = folder / "shop"
    generate_shop(shop, ShopConfig(customers=120, items=100, events=3_000, seed=5))
    for table in ("customers", "events", "decisions"):
        frame = pl.read_parquet(shop / f"{table}.parquet")
        renamed = pl.lit("1") + pl.col("customer_id").str.strip_prefix("c").str.zfill(3)
        frame.with_columns(renamed.alias("customer_id")).write_parquet(shop / f"{table}.parquet")
    config = parse_config(
        {
            "data": {"path": str(shop)},
            "split": {"test_days": 28, "cold_start_share": 0.1},
            "models": {"popularity": {}, "persona_popularity": {}},
            "output": {"root": str(folder / "artifacts")},
        }
    )
    return run_training(config, show_progress=False).artifact_path


def test_an_id_list_written_as_floats_is_refused_naming_the_row_not_served_as_strangers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An export's numeric id column read as float gives 1001.0 for the customer 1001 (data scientist's
    walkthrough): every such customer was served a persona-only list, with exit status 0."""
    artifact = _numbered_shop_artifact(tmp_path)
    known = Personalizer.from_path(artifact).customers.ids[:2].tolist()
    pl.DataFrame({"customer_id": [float(known[0]), float(known[1]), 99999.0]}).write_parquet(
        tmp_path / "ids.parquet"
    )
    out = tmp_path / "b.parquet"
    argv = ["batch-recommend", "--artifact", str(artifact), "--out", str(out), "--customer-ids"]
    assert main([*argv, str(tmp_path / "ids.parquet")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (
        f"argument --customer-ids: {tmp_path / 'ids.parquet'}, row 1: '{known[0]}.0' is not a customer the "
        f"artifact knows, but '{known[0]}' is; 2 of the 3 ids are like it"
    ) in err
    assert not out.exists()
    assert main([*argv, f"{known[0]},99999"]) == 0  # as the shop writes them: one known, one new
    assert pl.read_parquet(out).group_by("customer_id").agg(pl.col("cold_start").first()).sort(
        "customer_id"
    ).rows() == [(known[0], False), ("99999", True)]


def test_customer_lists_from_files(tmp_path: Path) -> None:
    pl.DataFrame({"customer_id": ["a", "b", None, "a"], "x": [1, 2, 3, 4]}).write_csv(tmp_path / "ids.csv")
    assert read_customer_ids(str(tmp_path / "ids.csv")) == ["a", "b"]
    (tmp_path / "ids.txt").write_text("c\n\nd\n", encoding="utf-8")
    assert read_customer_ids(str(tmp_path / "ids.txt")) == ["c", "d"]


def test_a_customer_list_that_cannot_be_read_or_holds_no_id_is_refused_naming_it(tmp_path: Path) -> None:
    """Each of these was a traceback or, worse, "every customer" (fuzz pass)."""
    (tmp_path / "latin1.csv").write_bytes(b"customer_id\nc\xe9001\n")
    (tmp_path / "latin1.txt").write_bytes(b"c001\n\xff\xfe")
    pl.DataFrame({"customer_id": [["a", "b"]]}).write_parquet(tmp_path / "lists.parquet")
    pl.DataFrame({"customer_id": []}, schema={"customer_id": pl.String}).write_csv(tmp_path / "header.csv")
    for name, problem in (
        ("latin1.csv", "cannot read the customer list, row 1 \\(line 2\\), column 'customer_id': byte 0xE9"),
        ("latin1.txt", "cannot read the customer list"),
        ("lists.parquet", "cannot read the customer list"),
        ("header.csv", "the customer list holds no customer id"),
    ):
        with pytest.raises(CustomerListError, match=f"{name}: {problem}"):
            read_customer_ids(str(tmp_path / name))
    with pytest.raises(CustomerListError, match="'' names no customer id"):
        read_customer_ids("")


def test_batch_recommend_cli(artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.parquet"
    assert main(["batch-recommend", "--artifact", str(artifact), "--out", str(out), "-k", "2", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["rows"] == pl.read_parquet(out).height == 2 * document["customers"]

    pl.DataFrame({"id": ["x"]}).write_parquet(tmp_path / "wrong.parquet")
    code = main(
        [
            "batch-recommend",
            "--artifact",
            str(artifact),
            "--out",
            str(out),
            "--customer-ids",
            str(tmp_path / "wrong.parquet"),
        ]
    )
    assert code == 2
    assert "needs a customer_id column (columns found: id)" in capsys.readouterr().err.replace("\n", "")
    # An empty value (an unset shell variable) is refused, not taken for every customer.
    empty = ["batch-recommend", "--artifact", str(artifact), "--out", str(out), "--customer-ids", ""]
    assert main(empty) == 2
    assert "names no customer id" in capsys.readouterr().err


def _viewer_who_did_not_buy(personalizer: Personalizer) -> str:
    """A customer the model knows who viewed or carted items they never bought."""
    for row in range(len(personalizer.customers)):
        seen = set(personalizer.history[row].indices.tolist())
        bought = set(personalizer.purchases[row].indices.tolist())
        if personalizer.mixes.has_events[row] and seen - bought:
            return str(personalizer.customers.ids[row])
    raise AssertionError("the small shop has no customer who viewed without buying")


def test_recommend_and_batch_recommend_give_the_same_list_with_the_same_rule(
    personalizer: Personalizer, artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    customer = _viewer_who_did_not_buy(personalizer)
    out = tmp_path / "one.parquet"
    base = ["--artifact", str(artifact), "--json"]
    assert main(["batch-recommend", *base, "--out", str(out), "--customer-ids", customer, "-k", "8"]) == 0
    batch_document = json.loads(capsys.readouterr().out)
    assert main(["recommend", *base, "--customer", customer, "-k", "8"]) == 0
    one = json.loads(capsys.readouterr().out)
    rows = pl.read_parquet(out).sort("rank")
    assert rows["item_id"].to_list() == [item["item_id"] for item in one["items"]]
    assert one["excluded"] == batch_document["excluded"] == "purchased"
    # the rule is the API's: bought items are left out, viewed ones may come back
    assert one["mix_source"] == rows["mix_source"][0] == "inferred"

    # and the other rule, asked for in both, leaves out everything seen in both
    assert (
        main(["batch-recommend", *base, "--out", str(out), "--customer-ids", customer, "--exclude", "seen"])
        == 0
    )
    capsys.readouterr()
    assert main(["recommend", *base, "--customer", customer, "--exclude", "seen"]) == 0
    seen_rule = json.loads(capsys.readouterr().out)
    assert pl.read_parquet(out).sort("rank")["item_id"].to_list() == [
        i["item_id"] for i in seen_rule["items"]
    ]
    seen = set(
        personalizer.items.ids[personalizer.history[personalizer.customers.index(customer)].indices].tolist()
    )
    assert not seen & {item["item_id"] for item in seen_rule["items"]}


def test_a_campaign_list_steers_only_for_a_mix_the_user_gave(
    personalizer: Personalizer, artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --context a list is scored with the overall mix, whatever the day, so restating that mix
    with --mix, at any --steering, gives the same list; --steering alone is refused (walkthrough: it
    moved the list, because the overall mix was passed as a request's and measured against the clock's
    context)."""
    customer = str(personalizer.customers.ids[7])
    own = ",".join(f"{p}={w!r}" for p, w in personalizer.mix_for(customer)[0].as_dict().items())
    base = ["recommend", "--artifact", str(artifact), "--customer", customer, "-k", "8", "--json"]
    assert main(base) == 0
    plain = [item["item_id"] for item in json.loads(capsys.readouterr().out)["items"]]
    for steering in ("0", "1"):
        assert main([*base, "--mix", own, "--steering", steering]) == 0
        assert [item["item_id"] for item in json.loads(capsys.readouterr().out)["items"]] == plain
    assert main([*base, "--steering", "1"]) == 2
    assert "argument --steering: 1 applies only to a mix given with --mix" in capsys.readouterr().err


def test_recommend_says_an_unknown_id_is_served_cold_start_and_names_the_id_it_may_mean(
    personalizer: Personalizer, artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    known = str(personalizer.customers.ids[3])
    base = ["recommend", "--artifact", str(artifact), "-k", "2", "--json"]
    assert main([*base, "--customer", f" {known} "]) == 0
    captured = capsys.readouterr()
    assert f"served as cold start; did you mean '{known}'?" in captured.err
    assert json.loads(captured.out)["cold_start"]  # stdout stays JSON
    assert main([*base, "--customer", "nobody-like-this"]) == 0
    assert capsys.readouterr().err.endswith("'nobody-like-this': served as cold start\n")  # no guess
    assert main([*base, "--customer", known]) == 0
    assert capsys.readouterr().err == ""


def test_batch_recommend_writes_where_each_mix_came_from(personalizer: Personalizer, tmp_path: Path) -> None:
    out = tmp_path / "sources.parquet"
    batch_recommend(personalizer, out, k=1)
    sources = pl.read_parquet(out).select("customer_id", "mix_source")
    has_events = dict(
        zip(personalizer.customers.ids.tolist(), personalizer.mixes.has_events.tolist(), strict=True)
    )
    expected = ["inferred" if has_events[c] else "prior" for c in sources["customer_id"].to_list()]
    assert sources["mix_source"].to_list() == expected
    assert "request" not in expected


def test_recommend_and_batch_recommend_state_the_exclusion_rule(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["recommend", "--artifact", str(artifact), "--customer", "c0042"]) == 0
    assert "left out: items the customer bought" in capsys.readouterr().out
    assert main(["batch-recommend", "--artifact", str(artifact), "--out", str(tmp_path / "b.parquet")]) == 0
    assert "left out: items the customer bought" in capsys.readouterr().out.replace("\n", " ")


def test_segments_hold_customers_above_the_threshold_with_a_reachable_channel(
    personalizer: Personalizer, artifact: Path, tmp_path: Path
) -> None:
    out = tmp_path / "segments.parquet"
    report = persona_segments(personalizer, out, threshold=0.4)
    frame = pl.read_parquet(out)
    mixes = personalizer.mixes.overall
    for k, persona in enumerate(personalizer.catalog.personas):
        rows = frame.filter(pl.col("persona_id") == persona.id)
        assert rows.height == int((mixes[:, k] >= 0.4).sum()) == report.segments[k].customers
        assert (rows["weight"] >= 0.4).all()
    assert report.channel_data.startswith("events in ")

    shop = load_shop(Path(json.loads((artifact / "manifest.json").read_text())["config"]["data"]["path"]))
    used = shop.events.filter(pl.col("channel").is_not_null()).group_by("customer_id", "channel").len()
    own = frame.filter(pl.col("channel_source") == "customer_events")
    assert own.height > 0.5 * frame.height
    for row in own.head(200).iter_rows(named=True):
        persona = personalizer.catalog.get(row["persona_id"])
        assert row["channel"] in persona.preferred_channels
        counts = used.filter(pl.col("customer_id") == row["customer_id"])
        best_preferred = counts.filter(pl.col("channel").is_in(list(persona.preferred_channels)))["len"].max()
        assert counts.filter(pl.col("channel") == row["channel"])["len"].item() == best_preferred


def test_segments_fall_back_to_catalog_channels_without_channel_data(
    personalizer: Personalizer, tmp_path: Path
) -> None:
    out = tmp_path / "segments.csv"
    report = persona_segments(personalizer, out, threshold=0.5, data_dir=tmp_path / "absent")
    frame = pl.read_csv(out, schema_overrides={"customer_id": pl.String})
    assert "not found" in report.channel_data
    assert frame["channel_source"].unique().to_list() == ["persona_catalog"]
    first = {p.id: p.preferred_channels[0] for p in personalizer.catalog.personas}
    assert all(first[p] == c for p, c in frame.select("persona_id", "channel").iter_rows())
    assert (frame["weight"] >= 0.5).all()


def test_segments_cli(artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.csv"
    assert main(["segments", "--artifact", str(artifact), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "persona segments" in printed and "bargain_hunter" in printed and out.is_file()
    with pytest.raises(SystemExit) as refused:  # when parsed, like every flag's bad value
        main(["segments", "--artifact", str(artifact), "--out", str(out), "--threshold", "0"])
    assert refused.value.code == 2
    assert "argument --threshold: must be above 0 and at most 1, got 0" in capsys.readouterr().err


def test_a_mix_not_summing_to_one_is_rescaled_with_a_note_and_prices_read_one_way(
    artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["recommend", "--artifact", str(artifact), "--customer", "c0042", "-k", "20"]
    assert main([*argv, "--mix", "bargain_hunter=0.7,tech_savvy=0.6"]) == 0
    captured = capsys.readouterr()
    assert "note: --mix weights sum to 1.3, not 1; rescaled to bargain_hunter=0.538, tech_savvy=0.462" in (
        captured.err.replace("\n", " ")
    )
    prices = [line.split()[-3] for line in captured.out.splitlines() if re.match(r"\s+\d+\s+i\d+", line)]
    assert len(prices) == 20
    assert all(re.fullmatch(r"\d{1,3}(,\d{3})*\.\d\d", price) for price in prices), prices

    assert main([*argv, "--mix", "bargain_hunter=0.4,tech_savvy=0.6"]) == 0
    assert "rescaled" not in capsys.readouterr().err


def test_a_k_longer_than_the_catalog_is_the_whole_catalog_with_a_note_in_both_commands(
    personalizer: Personalizer, artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-k 100000 listed the catalog (less purchases) without a word, and batch-recommend said "top 100000"
    while holding 4,096 customers x the whole catalog in memory at once (3.7 GB on a 2,000-item shop)."""
    n_items = len(personalizer.items)
    customer = str(personalizer.customers.ids[3])
    note = (
        f"note: -k 100,000 is more than the {n_items:,} items of the catalog; each list holds at most "
        f"{n_items:,} (the whole catalog, less items out of stock and what --exclude purchased leaves out)"
    )
    assert (
        main(["recommend", "--artifact", str(artifact), "--customer", customer, "-k", "100000", "--json"])
        == 0
    )
    captured = capsys.readouterr()
    bought = set(personalizer.purchases[personalizer.customers.index(customer)].indices.tolist())
    listable = int(personalizer.item_catalog.in_stock.sum()) - sum(
        bool(personalizer.item_catalog.in_stock[i]) for i in bought
    )
    assert len(json.loads(captured.out)["items"]) == listable < n_items
    assert note in " ".join(captured.err.split())

    out = tmp_path / "everything.parquet"
    args = [
        "batch-recommend",
        "--artifact",
        str(artifact),
        "--out",
        str(out),
        "-k",
        "100000",
        "--no-progress",
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert note in " ".join(captured.err.split())
    assert f"top {n_items} for {len(personalizer.customers):,} customers" in captured.out
    frame = pl.read_parquet(out)
    assert frame.filter(pl.col("customer_id") == customer).height == listable
    assert main([*args, "-k", str(n_items), "--json"]) == 0  # the catalog's size itself: no note
    captured = capsys.readouterr()
    assert "note:" not in captured.err and json.loads(captured.out)["requested_k"] is None
    assert pl.read_parquet(out).equals(frame)


def test_a_long_k_scores_fewer_customers_a_step_and_writes_the_same_lists(
    personalizer: Personalizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each step holds at most MAX_ROWS_PER_STEP rows: the customers of a step shrink as k grows; a
    row group of the file is one step."""
    monkeypatch.setattr("training.batch_recommend.MAX_ROWS_PER_STEP", 1_000)
    n_items = len(personalizer.items)
    bounded = batch_recommend(personalizer, tmp_path / "bounded.parquet", k=10**6)
    assert (bounded.k, bounded.requested_k) == (n_items, 10**6)
    groups = pq.ParquetFile(tmp_path / "bounded.parquet").metadata
    per_step = max(1, 1_000 // n_items)
    assert groups.num_row_groups == -(-len(personalizer.customers) // per_step)
    monkeypatch.undo()
    whole = batch_recommend(personalizer, tmp_path / "whole.parquet", k=n_items)
    assert whole.requested_k is None
    assert pl.read_parquet(tmp_path / "bounded.parquet").equals(pl.read_parquet(tmp_path / "whole.parquet"))
