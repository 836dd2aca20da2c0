"""The ids in the documented examples exist in the shop ``persona-engine generate`` writes.

An example naming a customer the generated shop does not have still runs: it silently answers as for
a cold-start visitor, so the reader never sees what the command does for a known customer. This test
reads every documented command (README, ``--help`` examples, the serving examples' docstrings), checks
that each customer and item id they name is in a generated shop with the default id widths, and runs
the README's ``recommend`` example to see that it serves a known customer.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from pathlib import Path

import polars as pl
import pytest

from cli.main import main
from cli.parser import build_parser
from tests.cli.test_help import _command_lines, _subcommands
from training.config import parse_config
from training.synthetic_shop import ShopConfig, generate_shop
from training.train_job import run_training

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [
    ROOT / "README.md",
    *sorted((ROOT / "serving" / "examples").glob("*.py")),
    ROOT / "serving/client.py",
]
# The default shop's sizes have four digits (5,000 customers, 2,000 items), so its ids are c0042 and
# i0017; any shop of 1,000-9,999 customers and items has the same ids and is quicker to build.
SHOP = ShopConfig(customers=1_000, items=1_000, events=30_000, seed=3)
CUSTOMER_FLAGS = ("--customer", "--customer-ids")
ITEM_FLAGS = ("--item",)
DOCUMENTED_ID = re.compile(r"""(?:personalize|recommend_products|customer_id=)\(?\s*["'](c\d+)["']""")


def _epilogs() -> list[str]:
    texts = []
    for argv in _command_lines():
        parser = build_parser()
        for name in argv:
            parser = _subcommands(parser)[name]
        texts.append(parser.epilog or "")
    return texts


def _commands() -> list[list[str]]:
    """Every documented command line, continuation lines joined, split as a shell would."""
    texts = [path.read_text(encoding="utf-8") for path in DOCUMENTS] + _epilogs()
    commands = []
    for text in texts:
        joined = re.sub(r"\\\s*\n\s*", " ", text.replace("\\\\\n", "\\\n"))
        for match in re.finditer(r"(?:persona-engine|python -m serving\.examples\.\w+)[^\n`|#]*", joined):
            line = re.sub(r"\[([^\]]*)\]", r"\1", match.group(0))  # optional parts are examples too
            try:
                commands.append(shlex.split(line))
            except ValueError:
                continue
    return commands


def _ids(flags: tuple[str, ...]) -> set[str]:
    found = set()
    for argv in _commands():
        for flag, value in itertools.pairwise(argv):
            if flag in flags and not value.startswith("<") and not Path(value).suffix:
                found.update(part for part in value.split(",") if re.fullmatch(r"[ci]\d+", part))
    return found


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_shop(tmp_path_factory.mktemp("documented") / "shop", SHOP).out_dir


def test_the_documents_name_customers_and_items() -> None:
    assert len(_commands()) > 30
    assert _ids(CUSTOMER_FLAGS) and _ids(ITEM_FLAGS)


def test_every_documented_customer_and_item_is_in_the_generated_shop(shop: Path) -> None:
    customers = set(pl.read_parquet(shop / "customers.parquet")["customer_id"].to_list())
    items = set(pl.read_parquet(shop / "items.parquet")["item_id"].to_list())
    in_code = {m.group(1) for path in DOCUMENTS for m in DOCUMENTED_ID.finditer(path.read_text("utf-8"))}
    assert not (_ids(CUSTOMER_FLAGS) | in_code) - customers, "documented customers the shop does not have"
    assert not _ids(ITEM_FLAGS) - items, "documented items the shop does not have"


def test_the_readme_recommend_example_serves_a_known_customer(
    shop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = parse_config(
        {
            "data": {"path": str(shop)},
            "models": {"popularity": {}, "persona_popularity": {}},
            "output": {"root": str(tmp_path / "artifacts")},
        }
    )
    artifact = run_training(config, show_progress=False).artifact_path
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = next(argv for argv in _commands() if argv[:2] == ["persona-engine", "recommend"])
    assert " ".join(example) in re.sub(r"\[([^\]]*)\]", r"\1", readme)
    argv = [part if part != "artifacts/latest" else str(artifact) for part in example[1:]]
    assert main([*argv, "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["cold_start"] is False and answer["mix_source"] == "request"  # the example gives a mix
    mix_free = [part for i, part in enumerate(argv) if "--mix" not in (part, argv[i - 1])]
    assert main([*mix_free, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mix_source"] == "inferred"
