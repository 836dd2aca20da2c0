"""The serving half of ``make demo``: start the real server on an artifact, call it, stop it.

It runs exactly what a shop would run (``persona-engine serve`` in its own process, called over gRPC
through ``serving.client``), for three kinds of request: a known customer with their inferred mix, a
customer scored under a mix given in the request, and a visitor the engine has never seen. Then the
live loop: a short session recorded with RecordEvents moves a customer's mix (and what they are
shown), and weeks of different behaviour recorded for another customer show up as drift in their
persona profile. It ends with the server's own metrics and a clean SIGTERM shutdown.

    python -m serving.demo --artifact artifacts/latest
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.artifact.contents import load_artifact
from engine.live.event_scoring import LiveEventScorer
from engine.live.events import BehaviorEvent
from serving.client import PersonaEngineClient
from serving.examples.personalize_page import describe
from serving.generated.persona.v1 import types_pb2

STARTUP_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _example_customers(artifact: Path, n: int) -> list[str]:
    """Known customers with the most pronounced mixes, one per dominant persona where possible."""
    loaded = load_artifact(artifact)
    ids = loaded.customers.ids
    modelled = set(loaded.model_customers.ids.tolist())
    mixes = loaded.mix_overall
    picked: list[str] = []
    for k in range(mixes.shape[1]):
        order = np.argsort(-mixes[:, k])
        for row in order[:50]:
            if str(ids[row]) in modelled and int(np.argmax(mixes[row])) == k:
                picked.append(str(ids[row]))
                break
        if len(picked) == n:
            break
    return picked


def _heading(text: str) -> None:
    print(f"\n== {text}")


def _mix_line(mix: types_pb2.PersonaMix, source: types_pb2.PersonaMixSource.ValueType) -> str:
    weights = ", ".join(f"{w.persona_id} {w.weight:.2f}" for w in mix.weights[:3])
    name = types_pb2.PersonaMixSource.Name(source).removeprefix("PERSONA_MIX_SOURCE_").lower()
    return f"{weights}  (source: {name})"


def _typical_items(scorer: LiveEventScorer, persona: int, n: int) -> list[str]:
    """Items whose choice says most clearly that this persona is shopping (the model's own view)."""
    scores = scorer.item_scores
    margin = scores[:, persona] - np.delete(scores, persona, axis=1).max(axis=1)
    return [str(scorer.items.ids[i]) for i in np.argsort(-margin)[:n]]


def _persona_other_than(scorer: LiveEventScorer, persona: str, preferred: Sequence[str]) -> int:
    """A persona to act out with item views alone: one whose items say who is shopping (not one known
    mostly by discounts, like a bargain hunter, since these views carry no discount)."""
    ids = scorer.persona_ids
    choices = [p for p in preferred if p in ids and p != persona] or [p for p in ids if p != persona]
    return ids.index(choices[0])


def _live_loop(engine: PersonaEngineClient, artifact: Path, customers: Sequence[str]) -> None:
    """A session moving one customer's mix, and weeks of new behaviour making another drift."""
    scorer = LiveEventScorer.from_artifact(load_artifact(artifact))
    now = dt.datetime.now(dt.UTC)
    shopper = customers[0]
    before = engine.get_persona_profile(shopper)
    dominant = before.persona_mix.weights[0].persona_id
    target = _persona_other_than(scorer, dominant, ("tech_savvy", "health_enthusiast", "luxury_enthusiast"))
    _heading(f"RecordEvents: {shopper} browses {scorer.persona_ids[target]} items in a session")
    print(f"  mix before: {_mix_line(before.persona_mix, before.persona_mix_source)}")
    first = engine.personalize(shopper, k=5)
    session = [
        BehaviorEvent(
            f"demo-{shopper}-{i}",
            shopper,
            item,
            "view",
            now - dt.timedelta(minutes=5 - i),
            None,
            0.0,
            "web",
            "app",
        )
        for i, item in enumerate(_typical_items(scorer, target, 4))
    ]
    engine.record_events(session)
    after = engine.get_persona_profile(shopper)
    print(f"  recorded {len(session)} views")
    print(f"  mix after:  {_mix_line(after.persona_mix, after.persona_mix_source)}")
    second = engine.personalize(shopper, k=5)
    print(f"  top products before: {', '.join(i.title for i in first.items)}")
    print(f"  top products after:  {', '.join(i.title for i in second.items)}")
    print(f"  offers before: {', '.join(o.offer_id for o in first.offers)}")
    print(f"  offers after:  {', '.join(o.offer_id for o in second.offers)}")

    drifter = customers[-1]
    home = engine.get_persona_profile(drifter).persona_mix.weights[0].persona_id
    away = _persona_other_than(scorer, home, ("health_enthusiast", "luxury_enthusiast", "tech_savvy"))
    items = _typical_items(scorer, away, 12)
    _heading(
        f"RecordEvents: three weeks of {scorer.persona_ids[away]} shopping by {drifter} (usually {home})"
    )
    start = now - dt.timedelta(days=21)
    history = [
        BehaviorEvent(f"demo-drift-{drifter}-{day}-{j}", drifter, items[(2 * day + j) % len(items)], "view",
                      start + dt.timedelta(days=day, hours=j), None, 0.0, "web", "app")
        for day in range(0, 21, 3)
        for j in range(2)
    ]  # fmt: skip
    engine.record_events(history)
    drift = engine.get_persona_profile(drifter).drift
    since = drift.since.ToDatetime().date().isoformat() if drift.HasField("since") else "-"
    print(
        f"  drift: drifting={drift.drifting} from {drift.from_persona_id} to {drift.to_persona_id}, "
        f"evidence {drift.statistic:.1f} nats (confidence {drift.confidence:.3f}), since {since}"
    )


def run(artifact: Path) -> int:
    artifact = artifact.resolve()
    port, metrics_port = _free_port(), _free_port()
    scratch = tempfile.TemporaryDirectory(prefix="persona-engine-demo-")
    command = [
        sys.executable, "-m", "serving.server", "--artifact", str(artifact),
        "--address", f"127.0.0.1:{port}", "--metrics-port", str(metrics_port), "--log-level", "warning",
        "--event-log", str(Path(scratch.name) / "events.db"),
    ]  # fmt: skip
    print(f"starting: persona-engine serve --artifact {artifact} --address 127.0.0.1:{port}")
    server = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        with PersonaEngineClient(f"127.0.0.1:{port}", timeout_s=2.0) as engine:
            engine.wait_until_serving(timeout_s=STARTUP_TIMEOUT_S)
            known = _example_customers(artifact, 2)
            for customer in known:
                _heading(f"Personalize: known customer {customer}, inferred mix")
                print(describe(engine.personalize(customer, k=5, explain=True)))
            if known:
                _heading(f"GetPersonaProfile: {known[0]}")
                profile = engine.get_persona_profile(known[0])
                for context_mix in profile.context_mixes:
                    weights = ", ".join(
                        f"{w.persona_id} {w.weight:.2f}" for w in context_mix.persona_mix.weights[:2]
                    )
                    name = types_pb2.ShoppingContext.Name(context_mix.shopping_context)
                    print(f"  {name.removeprefix('SHOPPING_CONTEXT_').lower()}: {weights}")
                for evidence in profile.evidence[:2]:
                    signals = "; ".join(
                        f"{s.description} {s.customer_value:.2f} (typical {s.population_value:.2f})"
                        for s in evidence.signals[:2]
                    )
                    print(f"  why {evidence.persona_id}: {signals}")
                _heading(f"Personalize: {known[0]} with a mix given in the request (tech_savvy=1)")
                print(describe(engine.personalize(known[0], persona_mix={"tech_savvy": 1.0}, k=5)))
            _heading("Personalize: a visitor the engine has never seen (cold start)")
            print(describe(engine.personalize("first-time-visitor-42", k=5)))
            if known:
                _live_loop(engine, artifact, known)
        _heading("server metrics after these calls")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(
                    (
                        "persona_engine_requests_total",
                        "persona_engine_customers_total",
                        "persona_engine_live_events_total",
                        "persona_engine_drift_started_total",
                    )
                ):
                    print(f"  {line}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            code = server.wait()
        scratch.cleanup()
    print(f"\nserver stopped on SIGTERM (exit status {code})")
    return 0 if code == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--artifact", type=Path, default=Path("artifacts/latest"))
    return run(parser.parse_args(argv).artifact)


if __name__ == "__main__":
    sys.exit(main())
