"""Config keys that name a file or folder: a bad one is refused before any data is read, naming the
config file and the key (``training.config_references``), through the real command line."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from cli.main import main
from engine.personas.catalog import bundled_catalog_names
from training.config import ConfigError, parse_config
from training.prepared_data import prepare
from training.synthetic_shop import ShopConfig, generate_shop


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shop")
    generate_shop(out, ShopConfig(customers=200, items=100, events=6_000, seed=3))
    return out


def _config(
    folder: Path, shop: Path, *, data: str = "", personas: str = "", split: str = "", output: str = ""
) -> Path:
    """A training config in ``folder`` with the shop and small models; each section's extra lines given."""
    path = folder / "train.toml"
    path.write_text(
        f'[data]\npath = "{shop}"\n{data}\n'
        f"[personas]\n{personas}\n"
        f"[split]\n{split}\n"
        f'[output]\nroot = "{folder / "artifacts"}"\n{output}\n'
        "[models.persona_popularity]\n",
        encoding="utf-8",
    )
    return path


def _train(config: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    """Train through the CLI, expecting the user error (exit 2); its message on one line."""
    capsys.readouterr()
    assert main(["train", "--config", str(config), "--no-progress", *flags]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in err
    return err


def test_an_unknown_catalog_name_names_the_config_file_the_key_and_the_bundled_catalogs(
    shop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said only "no bundled persona catalog named 'nosuch'": which config, which key, which names?"""
    config = _config(tmp_path, shop, personas='catalog = "nosuch"')
    err = _train(config, capsys)
    assert (
        f"error: {config}, [personas] catalog: no bundled persona catalog named 'nosuch'; "
        "bundled: default, movielens, online_retail (or a path to a .toml file)"
    ) in err
    assert bundled_catalog_names() == ("default", "movielens", "online_retail")
    # tune reads the same config
    capsys.readouterr()
    assert main(["tune", "--config", str(config), "--budget-seconds", "5", "--no-progress"]) == 2
    assert (
        f"{config}, [personas] catalog: no bundled persona catalog named 'nosuch'" in capsys.readouterr().err
    )


def test_a_catalog_file_that_is_missing_or_not_toml_names_the_config_key_and_the_file(
    shop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, shop, personas=f'catalog = "{tmp_path / "mine.toml"}"')
    assert (
        f"{config}, [personas] catalog: {tmp_path / 'mine.toml'}: persona catalog file not found"
        in _train(config, capsys)
    )
    (tmp_path / "mine.toml").write_text("[[personas]\n", encoding="utf-8")
    assert f"{config}, [personas] catalog: {tmp_path / 'mine.toml'}: not valid TOML" in _train(config, capsys)


def test_a_missing_data_folder_or_a_file_in_its_place_names_the_config_and_data_path(
    shop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was "the shop data breaks the data contract: /x: is not a directory", no config named."""
    config = _config(tmp_path, tmp_path / "nowhere", personas="")
    assert f"{config}, [data] path: data folder {tmp_path / 'nowhere'}: no such folder" in _train(
        config, capsys
    )
    config = _config(tmp_path, shop / "events.parquet")
    err = _train(config, capsys)
    assert f"{config}, [data] path: data folder {shop / 'events.parquet'}: is a file, not a folder" in err


def test_an_event_log_that_is_missing_or_not_a_log_names_the_config_and_data_event_log(
    shop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, shop, data=f'event_log = "{tmp_path / "events.db"}"')
    err = _train(config, capsys)
    assert f"{config}, [data] event_log: event log {tmp_path / 'events.db'}: no such file" in err
    (tmp_path / "events.db").write_text("not a database\n", encoding="utf-8")
    err = _train(config, capsys)
    assert (
        f"{config}, [data] event_log: event log {tmp_path / 'events.db'}: not a usable SQLite database" in err
    )


def test_a_missing_predefined_test_events_file_names_the_config_and_split_test_events(
    shop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was "the shop data breaks the data contract: DATA/nosuch.csv: predefined split: no test events
    file"; discover --training-split reads the same key."""
    config = _config(tmp_path, shop, split='method = "predefined"\ntest_events = "nosuch.csv"')
    expected = f"{config}, [split] test_events: {shop / 'nosuch.csv'}: no such file"
    assert expected in _train(config, capsys)
    capsys.readouterr()
    discover = ["discover", "--data", str(shop), "--write-catalog", str(tmp_path / "proposed.toml")]
    assert main([*discover, "--training-split", str(config)]) == 2
    assert expected in " ".join(capsys.readouterr().err.split())


def test_an_artifact_root_that_cannot_be_a_folder_is_refused_before_training(
    shop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file at [output] root stopped the run only when the artifact was written, after training."""
    taken = tmp_path / "taken"
    taken.write_text("", encoding="utf-8")
    config = _config(tmp_path, shop)
    config.write_text(config.read_text(encoding="utf-8").replace(str(tmp_path / "artifacts"), str(taken)))
    started = time.perf_counter()
    assert f"{config}, [output] root: artifact folder {taken}: is a file, not a folder" in _train(
        config, capsys
    )
    assert time.perf_counter() - started < 5  # nothing was loaded or fitted
    config.write_text(config.read_text(encoding="utf-8").replace(str(taken), str(taken / "sub")))
    err = _train(config, capsys)
    assert (
        f"[output] root: artifact folder {taken / 'sub'}: {taken}, where it would be made, is a file" in err
    )


def test_a_flag_that_replaces_a_key_is_not_blamed_on_the_config_file(
    shop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """train --data and --output replace the config's values: a problem then names the flag's folder alone,
    and the config's own (missing) data folder is not checked."""
    config = _config(tmp_path, tmp_path / "nowhere")
    taken = tmp_path / "taken"
    taken.write_text("", encoding="utf-8")
    err = _train(config, capsys, "--data", str(shop), "--output", str(taken))
    assert f"error: artifact folder {taken}: is a file, not a folder" in err
    assert str(config) not in err and "nowhere" not in err


def test_a_moved_catalog_named_in_an_artifacts_config_names_its_manifest(shop: Path, tmp_path: Path) -> None:
    """evaluate and report rebuild from the manifest's config: the manifest is the file to name."""
    catalog = tmp_path / "mine.toml"
    shutil.copy(Path(__file__).resolve().parents[2] / "engine" / "catalogs" / "default.toml", catalog)
    document = {
        "data": {"path": str(shop)},
        "personas": {"catalog": str(catalog)},
        "models": {"popularity": {}},
    }
    config = parse_config(document, source="artifacts/v1/manifest.json")
    catalog.unlink()
    with pytest.raises(
        ConfigError, match=r"artifacts/v1/manifest.json, \[personas\] catalog: .*mine.toml: persona"
    ):
        prepare(config)


def test_the_manifest_config_does_not_carry_where_the_values_came_from(shop: Path) -> None:
    config = parse_config({"data": {"path": str(shop)}}, source="train.toml")
    assert config.from_source("[data] path", str(shop))
    assert "source_values" not in config.to_dict()
    assert parse_config(config.to_dict()).to_dict() == config.to_dict()
