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
