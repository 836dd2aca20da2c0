"""What a shop backend's event pipeline does: send what customers did, in batches, without losing any.

Start a server with an event log first:

    persona-engine serve --artifact artifacts/latest --event-log events.db

then send an event (or an outcome of a decision the server returned):

    python -m serving.examples.record_events --customer c0042 --item i0017 --event-type purchase \\
        --price 12.5
    python -m serving.examples.record_events --customer c0042 --decision-id <id> --outcome layout_converted

The pattern to copy is in ``deliver``: the engine acknowledges a record only once it is on disk, and a
record sent twice is stored once (the event id is the key), so the pipeline keeps its buffer until the
call returns and retries the whole batch on any transient failure, a timeout included (the first
attempt may have been stored: the retry then reports it as a duplicate). Records the engine rejects are
bugs in the pipeline; they are logged and dropped, never retried (they would fail again).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import grpc

from engine.live.events import BehaviorEvent, DecisionOutcome, OutcomeKind
from serving.client import DEFAULT_TARGET, PersonaEngineClient
from serving.examples.command_line import EXIT_USAGE, flag_for, non_empty, refused, seconds

MAX_RECORDS_PER_CALL = 1000
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass
class Delivery:
    """What happened to the records handed to ``deliver``."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[str] = field(default_factory=list)  # "field: message" per rejected record


def deliver(
    engine: PersonaEngineClient,
    events: Sequence[BehaviorEvent],
    outcomes: Sequence[DecisionOutcome] = (),
    *,
    attempts: int = 5,
    timeout_s: float = 2.0,
    backoff_s: float = 0.2,
) -> Delivery:
    """Send every record, in calls of at most 1000 of each kind; raises only when a call keeps failing."""
    delivery = Delivery()
    for start in range(0, max(len(events), len(outcomes), 1), MAX_RECORDS_PER_CALL):
        chunk_events = events[start : start + MAX_RECORDS_PER_CALL]
        chunk_outcomes = outcomes[start : start + MAX_RECORDS_PER_CALL]
        for attempt in range(1, attempts + 1):
            try:
                response = engine.record_events(chunk_events, chunk_outcomes, timeout_s=timeout_s)
                break
            except grpc.RpcError as error:
                code = error.code() if isinstance(error, grpc.Call) else None
                if code not in TRANSIENT or attempt == attempts:
                    raise
                time.sleep(backoff_s * 2 ** (attempt - 1))  # the same batch again: safe, see above
        delivery.accepted += response.accepted_events + response.accepted_outcomes
        delivery.duplicates += response.duplicate_events + response.duplicate_outcomes
        delivery.rejected += [f"{error.field}: {error.message}" for error in response.errors]
    return delivery


PROG: Final = "python -m serving.examples.record_events"
# The record fields the flags set, for naming the flag beside a field the server names.
FLAGS: Final = {
    "customer_id": "--customer",
    "item_id": "--item",
    "event_type": "--event-type",
    "price_paid": "--price",
    "decision_id": "--decision-id",
    "kind": "--outcome",
    "arm_id": "--arm",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Record one behavioural event or one decision outcome with the engine."
    )
    parser.add_argument(
        "--target", type=non_empty, default=DEFAULT_TARGET, help=f"server address (default {DEFAULT_TARGET})"
    )
    parser.add_argument("--customer", required=True, help="the customer's id")
    parser.add_argument("--item", help="the item acted on (for an event)")
    parser.add_argument(
        "--event-type",
        choices=("view", "cart", "purchase"),
        help="what the customer did (for an event; default view)",
    )
    parser.add_argument("--price", type=float, help="unit price paid (for an event)")
    parser.add_argument("--decision-id", help="the decision_id of a response (for an outcome)")
    parser.add_argument("--outcome", choices=[kind.value for kind in OutcomeKind], help="what happened")
    parser.add_argument("--arm", help="the offer or layout variant id (for an outcome; optional for layouts)")
    parser.add_argument(
        "--timeout", type=seconds(allow_zero=False), default=2.0, help="deadline per call, seconds"
    )
    args = parser.parse_args(argv)
    now = dt.datetime.now(dt.UTC)
    events: list[BehaviorEvent] = []
    outcomes: list[DecisionOutcome] = []
    if args.decision_id is not None or args.outcome is not None:
        if args.decision_id is None or args.outcome is None:
            parser.error("--decision-id and --outcome go together")
        for given, value in (
            ("--item", args.item),
            ("--event-type", args.event_type),
            ("--price", args.price),
        ):
            if value is not None:
                parser.error(f"{given} is for an event; an outcome takes --decision-id, --outcome and --arm")
        outcomes.append(
            DecisionOutcome(
                str(uuid.uuid4()), args.decision_id, args.customer, OutcomeKind(args.outcome), now, args.arm
            )
        )
    elif args.item is not None:
        if args.arm is not None:
            parser.error("--arm is for an outcome (with --decision-id and --outcome)")
        events.append(
            BehaviorEvent(
                str(uuid.uuid4()),
                args.customer,
                args.item,
                args.event_type or "view",
                now,
                price_paid=args.price,
            )
        )
    else:
        parser.error("give --item (an event) or --decision-id with --outcome (an outcome)")
    with PersonaEngineClient(args.target, timeout_s=args.timeout) as engine:
        try:
            delivery = deliver(engine, events, outcomes, timeout_s=args.timeout)
        except grpc.RpcError as error:
            return refused(PROG, error, FLAGS)
    for problem in delivery.rejected:
        flag = flag_for(problem.partition(": ")[0], FLAGS)
        print(f"rejected: {f'{flag}: ' if flag else ''}{problem}", file=sys.stderr)
    print(
        f"accepted {delivery.accepted}, duplicates {delivery.duplicates}, rejected {len(delivery.rejected)}"
    )
    return 0 if not delivery.rejected else EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
