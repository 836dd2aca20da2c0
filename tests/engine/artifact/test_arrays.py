from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.artifact.arrays import load_array, load_arrays, save_array, save_arrays
from engine.errors import PersonaEngineError


class ComponentError(PersonaEngineError):
    """Stands in for a component's own error class (ModelFormatError, ArmEstimateError...)."""


def test_arrays_round_trip_with_their_dtypes(tmp_path: Path) -> None:
    arrays = {
        "factors": np.arange(6, dtype=np.float32).reshape(2, 3),
        "ids": np.asarray(["a", "bb"], dtype=np.str_),
        "flags": np.asarray([True, False]),
    }
    written = save_arrays(tmp_path / "component", arrays)
    assert [p.name for p in written] == ["factors.npy", "ids.npy", "flags.npy"]
    loaded = load_arrays(tmp_path / "component", arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype
        np.testing.assert_array_equal(loaded[name], array)


def test_a_non_contiguous_array_is_written_contiguous(tmp_path: Path) -> None:
    view = np.arange(12, dtype=np.int64).reshape(3, 4)[:, ::2]
    path = save_array(tmp_path / "deep" / "view.npy", view)
    loaded = load_array(path)
    assert loaded.flags.c_contiguous
    np.testing.assert_array_equal(loaded, view)


def test_a_missing_file_raises_the_callers_error_naming_it(tmp_path: Path) -> None:
    save_arrays(tmp_path, {"alpha": np.zeros(2)})
    with pytest.raises(ComponentError, match=r"missing array file beta\.npy"):
        load_arrays(tmp_path, ["alpha", "beta"], error=ComponentError)
    with pytest.raises(PersonaEngineError, match=r"missing array file gone\.npy"):
        load_array(tmp_path / "gone.npy")


def test_pickled_or_damaged_files_are_refused_without_running_them(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        save_array(tmp_path / "objects.npy", np.asarray([{"a": 1}], dtype=object))
    np.save(tmp_path / "pickled.npy", np.asarray([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ComponentError, match=r"pickled\.npy: not a readable array"):
        load_array(tmp_path / "pickled.npy", error=ComponentError)
    (tmp_path / "garbage.npy").write_bytes(b"not numpy at all")
    with pytest.raises(ComponentError, match=r"garbage\.npy: not a readable array"):
        load_array(tmp_path / "garbage.npy", error=ComponentError)
