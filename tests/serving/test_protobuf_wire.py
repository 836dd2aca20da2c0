"""Each hand-written wire encoding against upb's serialization of the same field."""

from __future__ import annotations

import struct

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from serving.generated.persona.v1 import types_pb2
from serving.protobuf_wire import (
    FIXED64,
    VARINT,
    append_strings,
    double_field,
    field_key,
    key,
    length_delimited,
    string_field,
    varint,
    varint_field,
)


@given(st.integers(-(2**31), 2**31 - 1).filter(bool))
def test_int32_fields_as_upb_writes_them_negative_ones_in_ten_bytes(value: int) -> None:
    expected = types_pb2.RecommendedItem(rank=value).SerializeToString()
    assert varint_field(field_key(types_pb2.RecommendedItem, "rank"), value) == expected


@given(st.integers(0, 2**64 - 1))
def test_varints_of_any_size_round_trip(value: int) -> None:
    encoded = varint(value)
    decoded = sum((byte & 0x7F) << (7 * i) for i, byte in enumerate(encoded))
    assert decoded == value
    assert all(byte & 0x80 for byte in encoded[:-1]) and not encoded[-1] & 0x80


@given(st.text(min_size=1))
def test_strings_as_upb_writes_them(value: str) -> None:
    expected = types_pb2.RecommendedItem(title=value).SerializeToString()
    assert string_field(field_key(types_pb2.RecommendedItem, "title"), value) == expected


@given(st.floats().filter(lambda x: struct.pack("<d", x) != bytes(8)))
def test_doubles_as_upb_writes_them(value: float) -> None:
    expected = types_pb2.RecommendedItem(price=value).SerializeToString()
    assert double_field(field_key(types_pb2.RecommendedItem, "price"), value) == expected


@given(st.lists(st.text(max_size=300), max_size=5))
def test_repeated_strings_as_upb_writes_them(values: list[str]) -> None:
    parts: list[bytes] = []
    append_strings(parts, field_key(types_pb2.LayoutSlot, "item_ids"), values)
    assert b"".join(parts) == types_pb2.LayoutSlot(item_ids=values).SerializeToString()


def test_submessages_enums_and_bools() -> None:
    slot = types_pb2.LayoutSlot(name="hero", offer_ids=["o1"])
    layout = types_pb2.LayoutDecision(slots=[slot])
    assert length_delimited(key(3, 2), slot.SerializeToString()) == layout.SerializeToString()
    decision = types_pb2.DecisionInfo(cold_start=True, persona_mix_source=types_pb2.PERSONA_MIX_SOURCE_LIVE)
    fields = varint_field(field_key(types_pb2.DecisionInfo, "persona_mix_source"), 4) + varint_field(
        field_key(types_pb2.DecisionInfo, "cold_start"), True
    )
    assert fields == decision.SerializeToString()


def test_keys_come_from_the_descriptor_and_unknown_kinds_are_refused() -> None:
    assert field_key(types_pb2.RecommendedItem, "score") == key(2, FIXED64)
    assert field_key(types_pb2.RecommendedItem, "rank") == key(3, VARINT)
    with pytest.raises(ValueError, match=r"google\.protobuf\.Timestamp\.seconds"):
        field_key(Timestamp, "seconds")  # int64: not a kind these encoders write
