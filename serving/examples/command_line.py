"""What the example scripts share at the command line; not part of the patterns they show.

A mistake on an example's command line must read like any command's: the flag named, exit status 2,
no traceback. So a flag's value is checked where argparse reads it (``int_in_range``, ``seconds``,
``non_empty``: ``argument -k: must be 1 to 200, got 0``), and a call the server refuses ends in one
line with its status code and message, naming the flag behind the field the server names
(``refused``): ``error: --mix: INVALID_ARGUMENT: persona_mix.weights[0].persona_id: unknown persona
'tech_savy'; ...``, exit 2 for INVALID_ARGUMENT (what the flags asked for is wrong) and 1 for any other
failure (the server or the network).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable, Mapping
from typing import Final

import grpc

EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
# The record's place in a RecordEvents request, before the field itself: "events[3]."
_RECORD_PREFIX: Final = re.compile(r"^(?:events|outcomes)\[\d+\]\.")


def int_in_range(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low} to {high}, got {value}")
        return value

    return parse


def seconds(*, allow_zero: bool) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds, above 0 (or 0 too, with ``allow_zero``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not (math.isfinite(value) and (value >= 0 if allow_zero else value > 0)):
            raise argparse.ArgumentTypeError(
                f"must be {'0 or more' if allow_zero else 'more than 0'} seconds, got {text}"
            )
        return value

    return parse


def non_empty(text: str) -> str:
    """An argparse type: any text but the empty one (an empty id or address is always a mistake)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def flag_for(field: str, flags: Mapping[str, str]) -> str | None:
    """The flag that set ``field`` (a field path as the server names it, ``persona_mix.weights[0]``
    or ``events[0].price_paid``), from ``flags`` (field path prefix -> flag); None when no flag did."""
    path = _RECORD_PREFIX.sub("", field)
    for prefix, flag in flags.items():
        if path == prefix or path.startswith((f"{prefix}.", f"{prefix}[")):
            return flag
    return None


def refused(prog: str, error: grpc.RpcError, flags: Mapping[str, str]) -> int:
    """Say on stderr, in one line, why the server refused the call; returns the exit status."""
    code = error.code() if isinstance(error, grpc.Call) else None
    details = (error.details() if isinstance(error, grpc.Call) else None) or str(error)
    flag = flag_for(details.partition(": ")[0], flags) if code is grpc.StatusCode.INVALID_ARGUMENT else None
    name = code.name if code is not None else "UNKNOWN"
    print(f"{prog}: error: {f'{flag}: ' if flag else ''}{name}: {details}", file=sys.stderr)
    return EXIT_USAGE if code is grpc.StatusCode.INVALID_ARGUMENT else EXIT_FAILURE
