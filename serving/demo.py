"""The serving half of ``make demo``: start the real server on an artifact, call it, stop it.

It runs exactly what a shop would run (``persona-engine serve`` in its own process, called over gRPC
through ``serving.client``), for three kinds of request: a known customer with their inferred mix, a
customer scored under a mix given in the request, and a visitor the engine has never seen. It ends
with the server's own metrics and a clean SIGTERM shutdown.

    python -m serving.demo --artifact artifacts/latest
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np

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
    ids = np.load(artifact / "ids" / "customers.npy", allow_pickle=False)
    modelled = set(np.load(artifact / "ids" / "model_customers.npy", allow_pickle=False).tolist())
    mixes = np.load(artifact / "customers" / "mix_overall.npy", allow_pickle=False)
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


def run(artifact: Path) -> int:
    artifact = artifact.resolve()
    port, metrics_port = _free_port(), _free_port()
    command = [
        sys.executable, "-m", "serving.server", "--artifact", str(artifact),
        "--address", f"127.0.0.1:{port}", "--metrics-port", str(metrics_port), "--log-level", "warning",
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
        _heading("server metrics after these calls")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(("persona_engine_requests_total", "persona_engine_customers_total")):
                    print(f"  {line}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            code = server.wait()
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
