"""The layering rules the README's architecture section promises, checked on the source.

engine/ is the domain core: it must run inside a training job, a notebook or a Spark executor
without a gRPC or Prometheus install, so it imports nothing from the layers above it or from those
libraries. The checks read the source with ``ast`` (no import side effects), so a lazy import inside
a function counts the same as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "engine"
FORBIDDEN_IN_ENGINE = ("serving", "training", "benchmarks", "tests", "cli", "grpc", "prometheus_client")


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _engine_sources() -> list[Path]:
    return sorted(ENGINE.rglob("*.py"))


@pytest.mark.parametrize("path", _engine_sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_imports_nothing_from_the_layers_above_or_the_serving_libraries(path: Path) -> None:
    offending = [
        f"line {line}: {module}"
        for line, module in _imported_modules(path)
        if module.split(".")[0] in FORBIDDEN_IN_ENGINE
    ]
    assert not offending, f"{path.relative_to(ROOT)} imports {offending}"


def test_the_import_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from serving.metrics import X\n    import grpc.aio\n")
    assert [module for _, module in _imported_modules(source)] == ["serving.metrics", "grpc.aio"]


def test_engine_is_organised_in_packages_with_few_loose_modules() -> None:
    loose = sorted(p.name for p in ENGINE.glob("*.py"))
    assert len(loose) <= 10, loose


def _below_the_command_line() -> list[Path]:
    return sorted(p for layer in ("engine", "training", "serving") for p in (ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("path", _below_the_command_line(), ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_below_the_command_line_imports_it(path: Path) -> None:
    """cli/ drives training jobs and the server; a job or the server importing it would be a cycle."""
    offending = [
        f"line {line}: {module}" for line, module in _imported_modules(path) if module.split(".")[0] == "cli"
    ]
    assert not offending, f"{path.relative_to(ROOT)} imports {offending}"


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("serving", ("training", "benchmarks", "tests", "cli")),
        ("training", ("serving", "benchmarks", "tests", "cli")),
    ],
)
def test_serving_and_training_are_siblings_over_the_core(layer: str, forbidden: tuple[str, ...]) -> None:
    """The server must not need the training stack installed, nor a job the gRPC one."""
    offending = [
        f"{path.relative_to(ROOT)} line {line}: {module}"
        for path in sorted((ROOT / layer).rglob("*.py"))
        for line, module in _imported_modules(path)
        if module.split(".")[0] in forbidden
    ]
    assert not offending, offending


MAX_LINES = 800
GENERATED = ROOT / "serving" / "generated"


def _hand_written_sources() -> list[Path]:
    layers = ("engine", "serving", "training", "benchmarks", "cli")
    return sorted(p for layer in layers for p in (ROOT / layer).rglob("*.py") if GENERATED not in p.parents)


def test_no_hand_written_module_is_past_a_readable_size() -> None:
    too_long = {
        str(p.relative_to(ROOT)): n
        for p in _hand_written_sources()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not too_long, f"split these along their concerns (over {MAX_LINES} lines): {too_long}"


# Core modules whose behaviour is tested through another module's tests, and why that file is their
# home. Every other module of engine/ has tests/engine/<package>/test_<module>.py of its own.
TESTED_ELSEWHERE: dict[str, str] = {
    "engine.artifact.layout": "tests/engine/artifact/test_contents.py",  # the layout is what contents write
    "engine.artifact.errors": "tests/engine/artifact/test_folder.py",  # the package's one error class
    "engine.data.contract": "tests/engine/data/test_loading.py",  # loading enforces the contract
    "engine.data.data_issues": "tests/engine/data/test_loading.py",  # the issues loading reports
    "engine.data.shop_data": "tests/engine/data/test_loading.py",  # the value loading returns
    "engine.data.timestamp_text": "tests/engine/data/test_loading.py",  # every spelling, through loading
    "engine.decisions.candidate_policy": "tests/engine/evaluation/test_off_policy_evaluation.py",
    "engine.evaluation.experiment_report": "tests/engine/decisions/test_experiment.py",
    "engine.invalid_request": "tests/engine/test_personalization_request.py",
    "engine.live.decision_log_writer": "tests/engine/live/test_event_log.py",  # it appends to the log
    "engine.live.decisions": "tests/engine/live/test_live_loop.py",  # the loop's decision step
    "engine.live.event_scoring": "tests/engine/live/test_customer_state.py",
    # one contract test runs against the in-memory store and a real Redis
    "engine.live.state_store": "tests/serving/test_state_store_contract.py",
    "engine.models.base": "tests/engine/models/test_recommender_contract.py",
    # the numerics beneath PersonaInferenceModel are checked through its fit, infer and explain
    "engine.personas.inference.behaviour": "tests/engine/personas/inference/test_model_files.py",
    "engine.personas.inference.catalog_seed": "tests/engine/personas/inference/test_model.py",
    "engine.personas.inference.em_fit": "tests/engine/personas/inference/test_model.py",
    "engine.personas.inference.errors": "tests/engine/personas/inference/test_model.py",
    "engine.personas.inference.inferred_mixes": "tests/engine/personas/inference/test_model.py",
    "engine.personas.inference.item_choice": "tests/engine/personas/inference/test_model.py",
}


def _core_modules() -> list[str]:
    return sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in ENGINE.rglob("*.py")
        if p.name != "__init__.py"
    )


def _own_test_file(module: str) -> Path:
    *package, name = module.split(".")[1:]
    return ROOT.joinpath("tests", "engine", *package, f"test_{name}.py")


@pytest.mark.parametrize("module", _core_modules())
def test_every_core_module_has_a_test_home(module: str) -> None:
    own = _own_test_file(module)
    if module not in TESTED_ELSEWHERE:
        assert own.is_file(), f"{module}: add {own.relative_to(ROOT)} (or name its home in TESTED_ELSEWHERE)"
        return
    assert not own.is_file(), f"{module} has {own.relative_to(ROOT)} now: drop it from TESTED_ELSEWHERE"
    home = ROOT / TESTED_ELSEWHERE[module]
    assert home.is_file(), f"{module}: its test home {home} is gone"
    package = module.rsplit(".", 1)[0]
    imported = {name for _, name in _imported_modules(home)} | {
        f"{node.module}.{alias.name}"
        for node in ast.walk(ast.parse(home.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and node.module
        for alias in node.names
    }
    # the home exercises the module directly or through the package's public value that wraps it
    assert module in imported or any(name.startswith(package) for name in imported), (
        f"{home.relative_to(ROOT)} does not touch {module}"
    )
