"""The arms a decision chooses among: declared offers or variants, optionally crossed with positions.

Off-policy evaluation needs every arm a candidate policy could choose, not only those the log happens
to show: "uniform" means 1/A over the shop's A arms, and a candidate's probability of the logged arm is
what weighs each decision. When a decision also fills a slot (``position`` in the decisions table), the
arm is the pair offer x position, and the declared set is every declared offer in every declared
position. Taking the set from the log instead (the pairs that happened to appear) silently changes what
"uniform" means, so an inferred set is marked ``inferred`` and callers warn about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from engine.decisions.arm_estimates import ArmEstimates
from engine.errors import PersonaEngineError

POSITION_SEPARATOR = "@"
"""Joins an arm and its position into one arm id: ``offer_free_ship@2``."""


class ArmSetError(PersonaEngineError, ValueError):
    """A logged arm or position outside the declared set; the message names the row and the set."""


def combined_id(arm_id: str, position: str) -> str:
    return f"{arm_id}{POSITION_SEPARATOR}{position}"


def _natural(values: Sequence[str]) -> list[str]:
    """Sorted, numerically when every value is a number (slot 10 after slot 9, not after slot 1)."""
    unique = set(values)
    try:
        return sorted(unique, key=float)
    except ValueError:
        return sorted(unique)


@dataclass(frozen=True)
class ArmSet:
    """Declared (or, flagged, inferred) arm ids and positions; ``ids`` are what policies choose among."""

    arm_ids: tuple[str, ...]
    positions: tuple[str, ...] = ()  # empty: decisions carry no position
    source: str = "declared"
    inferred: bool = False
    positions_inferred: bool = False

    def __post_init__(self) -> None:
        for name, values in (("arm", self.arm_ids), ("position", self.positions)):
            if len(set(values)) != len(values) or any(v == "" for v in values):
                raise ArmSetError(f"the {name}s must be distinct and non-empty, got {list(values)}")
        if not self.arm_ids:
            raise ArmSetError("the arm set is empty")

    @classmethod
    def from_log(
        cls, arm_ids: Sequence[str], positions: Sequence[str] | None = None, *, source: str = "the log"
    ) -> ArmSet:
        """The arms and positions a log shows, marked as inferred."""
        return cls(
            tuple(_natural(arm_ids)),
            tuple(_natural(positions)) if positions is not None else (),
            source=source,
            inferred=True,
            positions_inferred=positions is not None,
        )

    @property
    def ids(self) -> tuple[str, ...]:
        if not self.positions:
            return self.arm_ids
        return tuple(combined_id(a, p) for a in self.arm_ids for p in self.positions)

    def base_arm(self, arm_id: str) -> str:
        """The offer or variant of one of ``ids`` (itself when there are no positions)."""
        if not self.positions:
            return arm_id
        return arm_id.rsplit(POSITION_SEPARATOR, 1)[0]

    def index(
        self,
        arm_ids: Sequence[str],
        positions: Sequence[str | None] | None,
        rows: Sequence[int] | None = None,
    ) -> NDArray[np.int64]:
        """The index in ``ids`` of each logged (arm, position); ``rows`` (1-based) name rows in errors."""
        arm_index = {a: i for i, a in enumerate(self.arm_ids)}
        position_index = {p: i for i, p in enumerate(self.positions)}
        out = np.empty(len(arm_ids), dtype=np.int64)
        width = max(len(self.positions), 1)
        for i, arm in enumerate(arm_ids):
            row = rows[i] if rows is not None else i + 1
            a = arm_index.get(arm)
            if a is None:
                raise ArmSetError(
                    f"row {row}, column 'arm_id': {arm!r} is not one of the arms from {self.source} "
                    f"({', '.join(self.arm_ids)})"
                )
            p = 0
            if self.positions:
                position = positions[i] if positions is not None else None
                found = position_index.get(position) if position is not None else None
                if found is None:
                    raise ArmSetError(
                        f"row {row}, column 'position': {position!r} is not one of the positions "
                        f"{', '.join(self.positions)}"
                    )
                p = found
            out[i] = a * width + p
        return out

    def expand(self, estimates: ArmEstimates) -> ArmEstimates:
        """Estimates per arm (which know no positions) as estimates per arm x position, equal across slots."""
        missing = [a for a in self.arm_ids if a not in estimates.arm_ids]
        if missing:
            raise ArmSetError(
                f"the arm estimates have no arm {missing[0]!r}; they cover {', '.join(estimates.arm_ids)}"
            )
        columns = [estimates.arm_ids.index(self.base_arm(arm)) for arm in self.ids]
        return ArmEstimates(
            self.ids,
            estimates.persona_ids,
            estimates.alpha[:, columns],
            estimates.beta[:, columns],
            prior=estimates.prior,
            iterations=estimates.iterations,
            converged=estimates.converged,
        )
