"""The bounds every Timestamp of a request is held to, and the error that names what is wrong with it.

A Timestamp is two integers, and the zero message is 1970-01-01T00:00:00Z. That is what a client sends
when it leaves the field's seconds unset, and what protobuf.js encodes a JavaScript ``Date`` object as
(it expects ``{seconds, nanos}``): a Node backend's most natural mistake. Accepted, such an event sits
in the log half a century before the shop opened (training reads it; live state gives it no weight)
and a request context dated then is a holiday (1 January). No shop's data starts before ``EARLIEST``,
so anything earlier is refused, the zero message with a word on where it comes from. ``nanos`` is
checked here too: protobuf's own message for a bad one names a range that is not the Timestamp's.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from google.protobuf.timestamp_pb2 import Timestamp

from engine.invalid_request import InvalidRequestError

EARLIEST: Final = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
# Recorded events and outcomes may be stamped this far ahead of the server's clock (clients' clocks
# drift; a time zone applied twice is a day off at most); ``latest`` is then the server's now plus this.
MAX_AHEAD: Final = dt.timedelta(hours=24)
_MAX_NANOS: Final = 999_999_999


def checked_timestamp(message: Timestamp, field: str, latest: dt.datetime | None = None) -> dt.datetime:
    """The moment ``message`` holds, in UTC; InvalidRequestError naming ``field`` when it is not a
    valid Timestamp, before ``EARLIEST`` or (when given) after ``latest``, the server's now plus
    ``MAX_AHEAD``."""
    if not 0 <= message.nanos <= _MAX_NANOS:
        raise InvalidRequestError(field, f"nanos must be 0 to {_MAX_NANOS:,}, got {message.nanos}")
    try:
        moment = message.ToDatetime(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        raise InvalidRequestError(
            field, f"seconds {message.seconds} is outside the years 1 to 9999 a Timestamp can hold"
        ) from None
    if moment < EARLIEST:
        zero = message.seconds == 0 and message.nanos == 0
        why = (
            " (the zero Timestamp: seconds left unset, or a JavaScript Date object, which protobuf.js "
            "encodes as an empty message; send {seconds, nanos})"
            if zero
            else ""
        )
        raise InvalidRequestError(field, f"{_text(moment)} is before {EARLIEST.date().isoformat()}{why}")
    if latest is not None and moment > latest:
        raise InvalidRequestError(
            field,
            f"{_text(moment)} is more than {MAX_AHEAD.total_seconds() / 3600:g} hours ahead of the "
            "server's clock",
        )
    return moment


def _text(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
