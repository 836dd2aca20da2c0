"""Every user-facing error derives from PersonaEngineError, so the CLI and the servicer catch one thing."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import engine
import serving
import training
from engine.errors import PersonaEngineError

# Errors that are not the user's to fix: internal signals and the benchmark's wire checks.
_INTERNAL = {"_UnusableColumnTypeError"}


def _modules() -> list[str]:
    names = []
    for package in (engine, serving, training):
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            if ".generated" in info.name or info.name.endswith("__main__"):
                continue
            names.append(info.name)
    return names


def _error_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(value, Exception)
                and value.__module__ == module.__name__
                and value.__name__ not in _INTERNAL
            ):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[key] for key in sorted(found)]


def test_the_project_defines_error_classes_at_all() -> None:
    assert len(_error_classes()) >= 30


@pytest.mark.parametrize("error", _error_classes(), ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}")
def test_every_error_class_is_a_persona_engine_error(error: type[BaseException]) -> None:
    assert issubclass(error, PersonaEngineError)


def test_key_error_subclasses_print_their_message_unquoted() -> None:
    from engine.data.id_map import UnknownIdError
    from engine.decisions.offer_eligibility import UnknownOfferError

    assert str(UnknownIdError("item", ["i1"])) == "unknown item id(s): 'i1'"
    assert str(UnknownOfferError(["o9"], ["o1"])).startswith("unknown offer id(s): 'o9'")
