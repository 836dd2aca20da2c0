"""Protocol Buffers wire encoding for the few field kinds the hot responses carry.

Why this exists: with the upb backend every field set through the Python API is a call across the
C boundary with its own type checks, so a Personalize response built field by field (20 items of nine
fields, offers, a layout, a persona mix) spends most of its translation time there. Encoding the
fields as bytes in Python, joining them, and handing the whole response to upb's parser in one call
(``Message.FromString``) costs a fraction of that.

Why the bytes sent stay identical: the parsed message holds exactly the values encoded, and the server
serializes that message as it would any other, in field-number order with proto3 defaults left out.
So fields may be encoded in any order, and a field at its default (0, "", false) may be encoded or
skipped; both parse to the same message. Only repeated fields keep their order, and submessage fields
(``layout``, ``decision``) are present exactly when encoded, even when empty, as after ``CopyFrom``.

Only the wire types these messages use are here: varint (int32, enum, bool), 64-bit (double) and
length-delimited (string, submessage). ``tests/serving/test_protobuf_wire.py`` checks each against
upb's own serialization.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Final

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

VARINT: Final = 0
FIXED64: Final = 1
LENGTH_DELIMITED: Final = 2

SMALL_LIMIT: Final = 1 << 14  # varints below this (one or two bytes) come from SMALL_VARINTS
_UINT64: Final = 1 << 64

double: Final[Callable[[float], bytes]] = struct.Struct("<d").pack
"""The 8 bytes of a double field's value (little-endian IEEE 754, as the wire format has it)."""


def _encode_varint(value: int) -> bytes:
    if value < 0:  # int32 and enum values below zero are sign-extended to 64 bits: ten bytes
        value += _UINT64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


SMALL_VARINTS: Final = tuple(_encode_varint(n) for n in range(SMALL_LIMIT))
"""``varint(n)`` for every n below ``SMALL_LIMIT``: hot loops index it rather than call ``varint``."""


def varint(value: int) -> bytes:
    """Base-128 varint of an int32, enum or length; values below 16384 come from a table."""
    if 0 <= value < SMALL_LIMIT:
        return SMALL_VARINTS[value]
    return _encode_varint(value)


def key(field_number: int, wire_type: int) -> bytes:
    """The bytes that open a field: its number and wire type."""
    return varint(field_number << 3 | wire_type)


_WIRE_TYPES: Final = {
    FieldDescriptor.TYPE_DOUBLE: FIXED64,
    FieldDescriptor.TYPE_INT32: VARINT,
    FieldDescriptor.TYPE_ENUM: VARINT,
    FieldDescriptor.TYPE_BOOL: VARINT,
    FieldDescriptor.TYPE_STRING: LENGTH_DELIMITED,
    FieldDescriptor.TYPE_MESSAGE: LENGTH_DELIMITED,
}


def field_key(message: type[Message], name: str) -> bytes:
    """The key of the field ``name`` of ``message``, from the generated descriptor (so the encoders
    name fields as the ``.proto`` does and cannot drift from its numbers). Only the field kinds
    above; repeated numbers are refused, since proto3 packs them."""
    descriptor = message.DESCRIPTOR
    field = descriptor.fields_by_name[name]
    wire_type = _WIRE_TYPES.get(field.type)
    if wire_type is None or (field.is_repeated and wire_type != LENGTH_DELIMITED):
        raise ValueError(f"{descriptor.full_name}.{name}: a field kind this encoder does not write")
    return key(field.number, wire_type)


def length_delimited(field_key: bytes, payload: bytes) -> bytes:
    """A string or submessage field: its key, the payload's length, the payload."""
    return field_key + varint(len(payload)) + payload


def string_field(field_key: bytes, value: str) -> bytes:
    """A string field; raises UnicodeEncodeError for text upb could not send either (lone surrogates)."""
    return length_delimited(field_key, value.encode("utf-8"))


def append_strings(parts: list[bytes], field_key: bytes, values: Iterable[str]) -> None:
    """A repeated string field's entries, appended to ``parts`` (one call for the whole list: a call
    per entry would cost more than the encoding)."""
    small = SMALL_VARINTS
    for value in values:
        encoded = value.encode("utf-8")
        size = len(encoded)
        parts += (field_key, small[size] if size < SMALL_LIMIT else _encode_varint(size), encoded)


def double_field(field_key: bytes, value: float) -> bytes:
    return field_key + double(value)


def varint_field(field_key: bytes, value: int) -> bytes:
    """An int32, enum or bool field (``True`` encodes as 1)."""
    return field_key + varint(int(value))
