"""The catalog's items as ready-made RecommendedItem wire bytes, prepared once per loaded artifact.

Five of a RecommendedItem's ten fields never change between calls: item id, title, category, brand and
price come from the artifact's item catalog. Encoding them once per artifact leaves a response only
the per-call fields to add (score, rank, reason, promotion id, persona contributions), appended as
bytes (``serving.protobuf_wire`` explains why bytes and why the response is the same).

Why bytes and not prepared messages: measured with the upb backend (``benchmarks/translation_cost.py``
and the same harness on item lists alone: 20-item lists of the test artifact, CPU time per list),
building each item field by field costs 38 µs, ``items.add(**fields)`` 23 µs, copying a prepared
message (``items.add().CopyFrom(prepared)``, then setting score, rank and reason) 14 µs,
``add().MergeFrom`` 20 µs, ``extend`` then setting 19 µs; prepared bytes joined with the per-call
fields and parsed once cost 12 µs (9 µs of it the joining). The bytes also hold far less: at
100,000 items the prepared messages grew the process by 58-64 MiB (about 600 bytes each), the
fragments hold 9.8 MiB (about 100 bytes each: one ``bytes`` object per item in a tuple indexed
through the catalog's own id map; a second id -> fragment dict would save 1 µs per response and
cost 10 MiB more), and they are built in 0.2 s of CPU.

Which artifact: prepared items are kept per ``ItemCatalog`` object, weakly, so every Personalizer
over one loaded artifact (the experiment arms' siblings share it) uses one table, and an artifact's
table goes when the artifact does. ``prepare_items`` builds the table; call it when a model loads,
before it serves, so no request pays for it. A request whose artifact has no table yet builds it on
first use (``prepared_items``). A fragment is right for the results of any personalizer over its
catalog because the engine copies an item's catalog fields into each result; the translation tests
compare real engine results against the field-by-field oracle, so an engine that ever put other
values there (live prices, say) fails them first.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Final

from engine.data.id_map import UnknownIdError
from engine.data.item_catalog import ItemCatalog
from engine.personalizer import Personalizer, RecommendedItem
from engine.ranking.list_assembly import ItemReason
from serving.generated.persona.v1 import types_pb2
from serving.protobuf_wire import (
    SMALL_LIMIT,
    SMALL_VARINTS,
    double,
    field_key,
    string_field,
    varint,
    varint_field,
)

_ITEM = types_pb2.RecommendedItem
STATIC_FIELDS: Final = ("item_id", "title", "category", "brand", "price")
PER_CALL_FIELDS: Final = ("score", "rank", "reason", "promotion_id", "persona_contributions")
_ITEM_ID, _TITLE, _CATEGORY, _BRAND, _PRICE = (field_key(_ITEM, name) for name in STATIC_FIELDS)
_SCORE, _RANK, _REASON, _PROMOTION_ID, _CONTRIBUTIONS = (field_key(_ITEM, name) for name in PER_CALL_FIELDS)
_CONTRIBUTION_PERSONA = field_key(types_pb2.PersonaContribution, "persona_id")
_CONTRIBUTION_SHARE = field_key(types_pb2.PersonaContribution, "share")

# Looked up once: an enum lookup by name per item costs more than building the rest of the item.
REASON_CODES: Final = {
    reason: types_pb2.ReasonCode.Value(f"REASON_CODE_{reason.value.upper()}") for reason in ItemReason
}
_RANKS: Final = 1024  # ranks below this (every list the API allows) have their bytes ready
# Per reason and rank, the two fields' bytes: an item is then its fragment, score and this tail.
_TAILS: Final = {
    reason: tuple(varint_field(_RANK, rank) + varint_field(_REASON, code) for rank in range(_RANKS))
    for reason, code in REASON_CODES.items()
}
_MAX_REMEMBERED_PERSONAS: Final = 1024
_BUILD_CHUNK: Final = 8192


def _length(data: bytes) -> bytes:
    size = len(data)
    return SMALL_VARINTS[size] if size < SMALL_LIMIT else varint(size)


def static_fields(item_id: str, title: str, category: str, brand: str, price: float) -> bytes:
    """An item's catalog fields, followed by the score's key (every item has a score next).

    Written out rather than through ``string_field``: a table of a million items is built at load.
    """
    i, t, c, b = (
        item_id.encode("utf-8"),
        title.encode("utf-8"),
        category.encode("utf-8"),
        brand.encode("utf-8"),
    )
    return b"".join(
        (
            _ITEM_ID, _length(i), i,
            _TITLE, _length(t), t,
            _CATEGORY, _length(c), c,
            _BRAND, _length(b), b,
            _PRICE, double(price), _SCORE,
        )
    )  # fmt: skip


class PreparedItems:
    """Every catalog item's ``static_fields``, in catalog order.

    An item whose text cannot be encoded (a lone surrogate) has none: it is encoded per call, where
    it fails as it did before, for the one request that lists it.
    """

    def __init__(self, catalog: ItemCatalog) -> None:
        started = time.perf_counter()
        fragments: list[bytes | None] = []
        for start in range(0, len(catalog), _BUILD_CHUNK):  # chunks: columns as Python objects are big
            rows = slice(start, start + _BUILD_CHUNK)
            columns = zip(
                catalog.ids.ids[rows].tolist(),
                catalog.titles[rows].tolist(),
                catalog.categories[rows].tolist(),
                catalog.brands[rows].tolist(),
                catalog.prices[rows].tolist(),
                strict=True,
            )
            for item_id, title, category, brand, price in columns:
                try:
                    fragments.append(static_fields(item_id, title, category, brand, price))
                except UnicodeEncodeError:
                    fragments.append(None)
        self._fragments: tuple[bytes | None, ...] = tuple(fragments)
        self._position = catalog.ids.index
        self.build_seconds = time.perf_counter() - started

    def __len__(self) -> int:
        return len(self._fragments)

    @property
    def nbytes(self) -> int:
        """Memory held by the fragments and the tuple of them (the id map is the catalog's)."""
        return sys.getsizeof(self._fragments) + sum(sys.getsizeof(f) for f in self._fragments if f)

    def fragment(self, item_id: str) -> bytes | None:
        """The item's prepared bytes; None for an id not in the catalog or an item without them."""
        try:
            return self._fragments[self._position(item_id)]
        except UnknownIdError:
            return None


_PREPARED: weakref.WeakKeyDictionary[ItemCatalog, PreparedItems] = weakref.WeakKeyDictionary()
_PREPARING = threading.Lock()


def prepare_items(personalizer: Personalizer) -> PreparedItems:
    """The prepared items of ``personalizer``'s artifact, built now unless they already exist.

    Meant for the moment a model loads (``ModelHolder``'s ``prepare`` hook runs on every model
    before it serves); one build per artifact however many threads or personalizers ask.
    """
    catalog = personalizer.item_catalog
    with _PREPARING:
        prepared = _PREPARED.get(catalog)
        if prepared is None:
            prepared = PreparedItems(catalog)
            _PREPARED[catalog] = prepared
    return prepared


def prepared_items(personalizer: Personalizer) -> PreparedItems:
    """What a request uses: the table prepared at load, or one built now if the load did not."""
    prepared = _PREPARED.get(personalizer.item_catalog)
    return prepared if prepared is not None else prepare_items(personalizer)


# Contribution heads are per persona: the entry's key and length and its persona_id field, so an
# explained item's contribution is that head plus the share's 8 bytes. Personas come from catalogs
# (a handful); the cap only bounds a process that serves very many artifacts over its lifetime.
_CONTRIBUTION_HEADS: dict[str, bytes] = {}


def _contribution_head(persona_id: str) -> bytes:
    head = _CONTRIBUTION_HEADS.get(persona_id)
    if head is None:
        persona = string_field(_CONTRIBUTION_PERSONA, persona_id)
        # the entry's length counts the persona field, the share's key (1 byte) and its 8 bytes
        head = _CONTRIBUTIONS + varint(len(persona) + 9) + persona + _CONTRIBUTION_SHARE
        if len(_CONTRIBUTION_HEADS) >= _MAX_REMEMBERED_PERSONAS:
            _CONTRIBUTION_HEADS.clear()
        _CONTRIBUTION_HEADS[persona_id] = head
    return head


def _extras(item: RecommendedItem) -> bytes:
    """The fields only some items have: a promotion id, persona contributions (explain)."""
    parts = [string_field(_PROMOTION_ID, item.promotion_id)] if item.promotion_id else []
    heads = _CONTRIBUTION_HEADS
    for persona_id, share in item.persona_shares:
        parts.append(heads.get(persona_id) or _contribution_head(persona_id))
        parts.append(double(share))
    return b"".join(parts)


def append_items(
    parts: list[bytes], field: bytes, items: Sequence[RecommendedItem], prepared: PreparedItems | None
) -> None:
    """Append ``items`` to ``parts`` as the repeated RecommendedItem field whose key is ``field``.

    The catalog fields come from ``prepared`` when it has the item: it must be the table of the
    artifact whose personalizer produced ``items`` (the engine copies those fields from its catalog).
    Without it, or for an item it lacks, they are encoded from the item itself: the same bytes.
    """
    fragments = prepared._fragments if prepared is not None else None
    position_of = prepared._position if prepared is not None else None
    tails, small = _TAILS, SMALL_VARINTS
    for item in items:
        static: bytes | None = None
        if fragments is not None and position_of is not None:
            try:
                static = fragments[position_of(item.item_id)]
            except UnknownIdError:  # not this artifact's item: encoded from the result below
                static = None
        if static is None:
            static = static_fields(item.item_id, item.title, item.category, item.brand, item.price)
        rank = item.rank
        tail = (
            tails[item.reason][rank]
            if 0 <= rank < _RANKS
            else varint_field(_RANK, rank) + varint_field(_REASON, REASON_CODES[item.reason])
        )
        if item.promotion_id or item.persona_shares:
            tail += _extras(item)
        size = len(static) + 8 + len(tail)
        parts += (
            field,
            small[size] if size < SMALL_LIMIT else varint(size),
            static,
            double(item.score),
            tail,
        )
