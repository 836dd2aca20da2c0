"""The settings of persona inference: what a training config's ``[personas.inference]`` table holds.

Kept apart from the model because training configs, saved model manifests and tests build and
compare these settings without fitting anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from engine.personas.shopping_context import DEFAULT_HOLIDAYS


@dataclass(frozen=True)
class PersonaInferenceConfig:
    """Knobs of the fit. Prior strengths are in pseudo-events, so they compare directly with event counts.

    mix_prior_strength:     starting concentration (pseudo-events) of each "mostly one persona" component
                            of the mix prior; the fit replaces it by the empirical-Bayes estimate.
    mix_prior_dominant_share: starting share of the dominant persona in those components (also fitted).
    context_prior_strength: pseudo-events pulling a context mix towards the customer's overall mix.
    profile_prior_share:    strength of the pull of each persona's behaviour towards the catalog seed,
                            as a share of the average number of events per persona.
    seed_tilt:              factor on the odds of a value a persona's signals name (e.g. its categories).
    seed_damping:           factor on the odds of "yes" for a "low" discount, brand or bulk signal.
    chunk_customers:        customers per chunk of the E-step, fold-ins and explanations: memory of
                            their per-event intermediates is bounded by a chunk, not by the shop
                            (the mixes do not depend on it beyond floating-point rounding).
    threads:                chunks of the E-step run on this many threads (the compiled step releases
                            the GIL); with fewer chunks than threads the chunks are made smaller.
    accelerate:             extrapolate the EM's steps (SQUAREM, see ``em_extrapolation``), never
                            keeping a jump that lowers the objective; false takes plain EM steps, to
                            the same fixed points at the plain rate. The plain rate is slow where the
                            fit creeps along a flat ridge: on MovieLens 100K 200 plain steps still
                            gained 3e-5 per event each and thousands were needed to settle; extrapolated,
                            the fit reached plain EM's objective of step ~370 in 132 E-steps, and the
                            planted test shop's fixed point in 27 instead of 87.
    em_customers:           the EM fits persona behaviour on a seeded random sample of at most this
                            many customers (each with all their events), then every customer is folded
                            in under it; 0 fits on every customer. The behaviour is a few hundred
                            numbers per persona, which this many customers pin down as well as millions
                            do, and the EM's iterations then cost the same at any shop size: only the
                            single fold-in pass grows with it. On the 1M-customer benchmark shop, samples
                            of 100k / 50k / 25k recovered the planted mixes alike (mean total variation
                            0.2174 / 0.2175 / 0.2175, leading persona right for 85.02 / 85.00 / 84.94%)
                            in 16.5 / 13.1 / 11.2 s; on a 200k-customer shop 50k matched the full fit.
    """

    max_iterations: int = 200  # E-steps (an extrapolated step costs one, as a plain step does)
    tolerance: float = 1e-5  # stop when a plain EM step improves the objective per event by less
    mix_prior_strength: float = 4.0
    mix_prior_dominant_share: float = 0.6
    context_prior_strength: float = 6.0
    profile_prior_share: float = 0.05
    seed_tilt: float = 3.5
    seed_damping: float = 0.4
    fold_in_iterations: int = 100
    chunk_customers: int = 50_000
    threads: int = 2
    accelerate: bool = True
    em_customers: int = 50_000
    holidays: tuple[tuple[int, int], ...] = DEFAULT_HOLIDAYS

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("max_iterations", self.max_iterations >= 1, "an integer >= 1"),
            ("tolerance", self.tolerance >= 0, ">= 0"),
            ("mix_prior_strength", self.mix_prior_strength > 0, "> 0"),
            ("mix_prior_dominant_share", 0 < self.mix_prior_dominant_share < 1, "in (0, 1)"),
            ("context_prior_strength", self.context_prior_strength > 0, "> 0"),
            ("profile_prior_share", self.profile_prior_share > 0, "> 0"),
            ("seed_tilt", self.seed_tilt >= 1, ">= 1"),
            ("seed_damping", 0 < self.seed_damping <= 1, "in (0, 1]"),
            ("fold_in_iterations", self.fold_in_iterations >= 1, "an integer >= 1"),
            ("chunk_customers", self.chunk_customers >= 1, "an integer >= 1"),
            ("threads", self.threads >= 1, "an integer >= 1"),
            ("em_customers", self.em_customers >= 0, "an integer >= 0 (0: every customer)"),
        ]
        integers = {"max_iterations", "fold_in_iterations", "chunk_customers", "threads", "em_customers"}
        for name, ok, requirement in checks:
            value = getattr(self, name)
            allowed = int if name in integers else int | float
            if (
                isinstance(value, bool)
                or not isinstance(value, allowed)
                or not math.isfinite(value)
                or not ok
            ):
                raise ValueError(f"PersonaInferenceConfig.{name} must be {requirement}, got {value!r}")
        try:
            holidays = tuple((int(month), int(day)) for month, day in self.holidays)
        except (TypeError, ValueError):
            raise ValueError(
                f"PersonaInferenceConfig.holidays must be (month, day) pairs, got {self.holidays!r}"
            ) from None
        if not isinstance(self.accelerate, bool):
            raise ValueError(
                f"PersonaInferenceConfig.accelerate must be true or false, got {self.accelerate!r}"
            )
        object.__setattr__(self, "holidays", holidays)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["holidays"] = [list(pair) for pair in self.holidays]
        return document

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> PersonaInferenceConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(document) - known)
        if unknown:
            raise ValueError(
                f"unknown persona inference setting(s) {unknown}; known: {', '.join(sorted(known))}"
            )
        return cls(**dict(document))
