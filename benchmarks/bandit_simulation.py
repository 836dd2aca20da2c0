"""The online bandit against the artifact's static policies, on the synthetic shop's planted truth.

Customers are drawn from the shop; each decision's true conversion rate is the customer's planted
weekday mix times the planted per-persona offer rates (truth/), while every policy sees only what
serving sees: the artifact's inferred mix and its estimates. Static policies (uniform, greedy,
epsilon-greedy, Thompson on the artifact's estimates) are scored exactly, as the mean true rate of
the arms they would choose; the online bandit (engine/decisions/online_bandit.py) plays the decisions one by
one and learns from Bernoulli outcomes drawn from the truth. ``--drift`` moves every arm's audience
to the next arm after training (the planted rates rolled by one arm), which is where learning online
has something to win.

    python -m benchmarks.bandit_simulation --data data/demo --artifact artifacts/latest [--drift]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import polars as pl

from engine.artifact.contents import load_artifact
from engine.decisions.arm_estimates import ArmEstimates
from engine.decisions.candidate_policy import CandidatePolicy
from engine.decisions.journey_stage import JourneyStage
from engine.decisions.online_bandit import BanditConfig, OnlineBandit
from engine.live.events import DecisionOutcome, OutcomeKind
from engine.live.state_store import MemoryStateStore
from training.console_output import print_table

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
STATIC = ("uniform", "greedy", "epsilon-greedy:0.1", "thompson")


def simulate(
    data: Path, artifact: Path, decisions: int, drift: bool, seed_strengths: list[float], floor: float
) -> list[dict[str, Any]]:
    loaded = load_artifact(artifact)
    estimates = loaded.arm_estimates["offer"]
    customers = loaded.customers
    inferred = loaded.mix_by_context[:, 0]  # weekday
    truth = pl.read_parquet(data / "truth/customer_mixes.parquet")
    planted = json.loads((data / "truth/response_rates.json").read_text(encoding="utf-8"))["offer"]
    personas = list(planted)
    rho = np.array([[planted[p][arm] for arm in estimates.arm_ids] for p in personas])
    if drift:
        rho = np.roll(rho, 1, axis=1)
    rows = customers.to_internal(truth["customer_id"].to_list(), strict=False)
    known = rows >= 0
    true_mix = truth.select([f"weekday__{p}" for p in personas]).to_numpy()[known]
    seen_mix = inferred[rows[known]]
    rng = np.random.default_rng(0)
    who = rng.integers(0, len(true_mix), decisions)
    expected = true_mix[who] @ rho  # (decisions, arms): each arm's true conversion rate
    results: list[dict[str, Any]] = [
        {"policy": "oracle (true best arm)", "rate": float(expected.max(axis=1).mean())}
    ]
    for spec in STATIC:
        p = CandidatePolicy.parse(spec).probabilities(
            estimates.arm_ids, seen_mix[who], estimates, np.random.default_rng(1)
        )
        results.append({"policy": spec, "rate": float(np.mean(np.sum(p * expected, axis=1)))})
    flat = ArmEstimates(
        estimates.arm_ids, estimates.persona_ids, np.ones_like(estimates.alpha), np.ones_like(estimates.beta)
    )
    variants = [(f"online bandit, seed <= {s:g}", estimates, s) for s in seed_strengths]
    variants.append(("online bandit, unseeded", flat, 100.0))
    for name, seed, strength in variants:
        bandit = OnlineBandit(
            "offer",
            seed,
            MemoryStateStore(),
            BanditConfig(exploration_floor=floor, seed_strength=strength),
            clock=lambda: NOW,
        )
        earned = np.zeros(decisions)
        for i in range(decisions):
            choice = bandit.choose(
                decision_id=f"d{i}",
                customer_id="c",
                mix=seen_mix[who[i]],
                stage=JourneyStage.BROWSING,
                rng=rng,
            ).choices[0]
            arm = estimates.arm_ids.index(choice.arm_id)
            earned[i] = expected[i, arm]
            bandit.update(DecisionOutcome(f"s{i}", f"d{i}", "c", OutcomeKind.OFFER_SHOWN, NOW, choice.arm_id))
            if rng.random() < expected[i, arm]:
                bandit.update(
                    DecisionOutcome(f"r{i}", f"d{i}", "c", OutcomeKind.OFFER_REDEEMED, NOW, choice.arm_id)
                )
        quarter = max(1, decisions // 4)
        results.append(
            {
                "policy": name,
                "rate": float(earned.mean()),
                "first_quarter": float(earned[:quarter].mean()),
                "last_quarter": float(earned[-quarter:].mean()),
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="a synthetic shop (with truth/)")
    parser.add_argument("--artifact", type=Path, required=True, help="an artifact trained on it")
    parser.add_argument("--decisions", type=int, default=6_000)
    parser.add_argument("--drift", action="store_true", help="move the true rates after training")
    parser.add_argument("--floor", type=float, default=0.01, help="the bandit's exploration floor")
    parser.add_argument("--seed-strength", type=float, action="append", help="repeatable; default 100, 1000")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = simulate(
        args.data,
        args.artifact,
        args.decisions,
        args.drift,
        args.seed_strength or [100.0, 1000.0],
        args.floor,
    )
    if args.json:
        print(json.dumps(results, indent=2))
        return
    nan = float("nan")
    print_table(
        f"true conversion rate per offer decision ({args.decisions:,} decisions"
        f"{', rates moved after training' if args.drift else ''})",
        ["policy", "conversion", "first quarter", "last quarter"],
        [[r["policy"], r["rate"], r.get("first_quarter", nan), r.get("last_quarter", nan)] for r in results],
    )


if __name__ == "__main__":
    main()
