"""Validation of numeric settings in frozen config dataclasses, with errors that name the field.

Configs are built from TOML and flags as often as from code, where a bool or a NaN passes Python's
type hints unnoticed; each check here rejects those along with values outside the field's range.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable


def check_numeric_settings(owner: object, checks: Iterable[tuple[str, bool, str]]) -> None:
    """Raises ValueError naming ``Owner.field`` for the first (field, in range, requirement) that fails."""
    for name, ok, requirement in checks:
        value = getattr(owner, name)
        # numbers.Real takes numpy scalars too; integers are always finite (and may be too large
        # for math.isfinite's float conversion)
        if (
            isinstance(value, bool)
            or type(value).__name__ == "bool_"
            or not isinstance(value, numbers.Real)
            or (not isinstance(value, numbers.Integral) and not math.isfinite(value))
            or not ok
        ):
            raise ValueError(f"{type(owner).__name__}.{name} must be {requirement}, got {value!r}")
