"""Named arrays in a folder, one ``.npy`` each, written and read without pickle.

Models, persona inference, arm estimates, explanations and id maps all persist a handful of named
arrays. Doing it through one pair of functions keeps the safety rule in one place (``allow_pickle`` is
off both ways, so a tampered file cannot run code on load) and gives every component the same error
for a missing or unreadable file, raised as the component's own error class so its callers keep
catching what they caught before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.errors import PersonaEngineError

ARRAY_SUFFIX = ".npy"


def save_array(path: Path, array: NDArray[Any]) -> Path:
    """Write one array as C-contiguous ``.npy`` (object arrays are refused by numpy without pickle)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.ascontiguousarray(array), allow_pickle=False)
    return path


def load_array(path: Path, *, error: type[PersonaEngineError] = PersonaEngineError) -> NDArray[Any]:
    """Read one ``.npy`` written by ``save_array``; a missing or unreadable file raises ``error``."""
    if not path.is_file():
        raise error(f"{path.parent}: missing array file {path.name}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as problem:
        raise error(f"{path}: not a readable array ({problem})") from None


def save_arrays(directory: Path, arrays: Mapping[str, NDArray[Any]]) -> list[Path]:
    """Write ``name.npy`` for every entry into ``directory`` (created if needed); returns the files."""
    directory.mkdir(parents=True, exist_ok=True)
    return [save_array(directory / f"{name}{ARRAY_SUFFIX}", array) for name, array in arrays.items()]


def load_arrays(
    directory: Path, names: Iterable[str], *, error: type[PersonaEngineError] = PersonaEngineError
) -> dict[str, NDArray[Any]]:
    """Read the named arrays that ``save_arrays`` wrote; the first missing one raises ``error``."""
    return {name: load_array(directory / f"{name}{ARRAY_SUFFIX}", error=error) for name in names}
