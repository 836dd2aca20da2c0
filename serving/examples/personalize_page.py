"""What a shop backend does while rendering a page: one Personalize call, and a fallback when it fails.

Start a server first (it listens on localhost:50051 by default):

    persona-engine serve --artifact artifacts/latest

then ask it for a customer's home page, optionally as a given persona mix:

    python -m serving.examples.personalize_page --customer c0042
    python -m serving.examples.personalize_page --customer c0042 --mix bargain_hunter=0.7,tech_savvy=0.3

The pattern to copy is in ``personalize_or_fallback``: a page must render even when the engine is slow
or down, so every call has a short deadline and any failure other than a bad request falls back to the
shop's non-personalised default. A bad request (INVALID_ARGUMENT) is a bug in the caller and is raised
(here ``main`` reports it in one line naming the flag, with the server's status and message, and exits 2).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from typing import Final

import grpc

from serving.client import DEFAULT_TARGET, Filters, PageContext, PersonaEngineClient
from serving.examples.command_line import EXIT_FAILURE, int_in_range, non_empty, refused, seconds
from serving.generated.persona.v1 import personalization_service_pb2, types_pb2

MAX_RESULTS: Final = 200  # PersonalizeRequest.num_results' limit


def parse_mix(text: str) -> dict[str, float]:
    """``"bargain_hunter=0.7,tech_savvy=0.3"`` as a mapping; the server validates and normalises it."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        persona, sep, weight = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"entry {part!r} is not persona=weight")
        try:
            mix[persona.strip()] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"weight of {persona.strip()!r} is not a number: {weight!r}"
            ) from None
    if not mix:
        raise argparse.ArgumentTypeError("empty")
    return mix


def personalize_or_fallback(
    engine: PersonaEngineClient,
    customer_id: str,
    *,
    persona_mix: dict[str, float] | None,
    cart_item_ids: Sequence[str],
    k: int,
) -> personalization_service_pb2.PersonalizeResponse | None:
    """The engine's page for this customer, or None when the page should render its default instead."""
    context = PageContext(
        timestamp=dt.datetime.now(dt.UTC),
        channel="direct",
        device="mobile",
        page_type="home",
        cart_item_ids=cart_item_ids,
    )
    try:
        return engine.personalize(
            customer_id,
            persona_mix=persona_mix,
            context=context,
            filters=Filters(),  # the defaults: nothing already purchased, nothing out of stock
            k=k,
            explain=True,
        )
    except grpc.RpcError as error:
        code = error.code() if isinstance(error, grpc.Call) else None
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            raise
        details = error.details() if isinstance(error, grpc.Call) else str(error)
        print(f"engine failed ({code.name if code else 'unknown'}: {details}); rendering the default page")
        return None


def _mix_text(mix: types_pb2.PersonaMix) -> str:
    return ", ".join(f"{w.persona_id} {w.weight:.2f}" for w in mix.weights)


def describe(page: personalization_service_pb2.PersonalizeResponse) -> str:
    """The response as the text a developer wants to see while wiring the call into a page."""
    decision = page.decision
    source = types_pb2.PersonaMixSource.Name(decision.persona_mix_source).removeprefix("PERSONA_MIX_SOURCE_")
    lines = [
        f"decision {decision.decision_id}: model {decision.model_name} version {decision.model_version}, "
        f"cold start {'yes' if decision.cold_start else 'no'}",
        f"persona mix ({source.lower()}): {_mix_text(decision.persona_mix)}",
        f"layout {page.layout.variant_id} (propensity {page.layout.propensity:.2f})",
    ]
    for slot in page.layout.slots:
        lines.append(f"  {slot.name}: {', '.join([*slot.item_ids, *slot.offer_ids]) or '-'}")
    lines.append("products:")
    for item in page.items:
        reason = types_pb2.ReasonCode.Name(item.reason).removeprefix("REASON_CODE_").lower()
        why = ", ".join(f"{c.persona_id} {c.share:.0%}" for c in item.persona_contributions)
        lines.append(
            f"  {item.rank:>3}. {item.item_id} {item.title!r} ({item.category}, {item.price:.2f}) "
            f"{reason}{f' [{why}]' if why else ''}"
        )
    lines.append("offers:" if page.offers else "offers: none eligible")
    for offer in page.offers:
        kind = types_pb2.OfferKind.Name(offer.kind).removeprefix("OFFER_KIND_").lower()
        lines.append(
            f"  {offer.rank:>3}. {offer.offer_id} ({kind}) propensity {offer.propensity:.2f}: {offer.reason}"
        )
    return "\n".join(lines)


PROG: Final = "python -m serving.examples.personalize_page"
# The request fields the flags set, for naming the flag when the server refuses one.
FLAGS: Final = {
    "customer_id": "--customer",
    "persona_mix": "--mix",
    "context.cart_item_ids": "--cart",
    "num_results": "-k",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--target", type=non_empty, default=DEFAULT_TARGET, help=f"server address (default {DEFAULT_TARGET})"
    )
    parser.add_argument(
        "--customer", type=non_empty, required=True, help="customer id; unknown ids are served as cold start"
    )
    parser.add_argument(
        "--mix", type=parse_mix, help="score as this persona mix, e.g. bargain_hunter=0.7,..."
    )
    parser.add_argument("--cart", default="", help="comma-separated item ids in the cart")
    parser.add_argument(
        "-k",
        type=int_in_range(1, MAX_RESULTS),
        default=8,
        help=f"number of products (1-{MAX_RESULTS}, default 8)",
    )
    parser.add_argument(
        "--timeout", type=seconds(allow_zero=False), default=0.3, help="deadline of the call in seconds"
    )
    parser.add_argument(
        "--wait",
        type=seconds(allow_zero=True),
        default=5.0,
        help="seconds to wait for the server to be SERVING",
    )
    args = parser.parse_args(argv)

    with PersonaEngineClient(args.target, timeout_s=args.timeout) as engine:
        try:
            engine.wait_until_serving(timeout_s=args.wait)
        except TimeoutError as error:
            print(f"{PROG}: error: {error}; is `persona-engine serve` running?", file=sys.stderr)
            return EXIT_FAILURE
        try:
            page = personalize_or_fallback(
                engine,
                args.customer,
                persona_mix=args.mix,
                cart_item_ids=[i for i in args.cart.split(",") if i],
                k=args.k,
            )
        except grpc.RpcError as error:  # INVALID_ARGUMENT: what the flags asked for is not valid
            return refused(PROG, error, FLAGS)
        if page is not None:
            print(describe(page))
    return 0


if __name__ == "__main__":
    sys.exit(main())
