"""The random draws of one decision, derived from its decision id alone.

Every served decision (offers, a layout) has a decision id, and its exploration must be replayable
from that id: the decision log stores the id and the propensities, and replaying a logged decision
against the same artifact must make the same choices. Seeding ``np.random.default_rng`` from the id
does that, but building a generator (its SeedSequence hashes the seed into a 128-bit state, then
the bit generator and its wrapper are allocated) costs about 30 µs, more than the rest of an
epsilon-greedy decision; the page path needs only a handful of uniform numbers.

So the draws are a counter-based hash: block ``b`` of a decision's stream is BLAKE2b over the id's
UTF-8 bytes, personalised by the stream name (``offer``, ``layout``, ...) and salted with ``b``,
giving eight 64-bit words; word ``i`` of the stream is draw ``i``. BLAKE2b is a cryptographic hash,
so the words are indistinguishable from independent uniform bits whatever the ids look like (UUID4s,
sequential test ids), and one block covers a page: three offers and a layout take at most six
words, about 1.5 µs. Streams are independent, so the offers and the layout of one page do not
depend on each other's number of draws.

Propensities never depend on the draws (a policy computes them exactly from its estimates), so
changing how draws are derived changes which arm a given id explores, never what the log records
about the probability of that choice.

Thompson sampling needs thousands of normal draws per decision; ``generator()`` gives a numpy
generator seeded from a hash of the id and stream, built only when asked.
"""

from __future__ import annotations

import hashlib
import struct
import uuid

import numpy as np

_WORDS_PER_BLOCK = 8
_BLOCK = struct.Struct("<8Q")
_TO_UNIT = 1.0 / (1 << 53)  # a 53-bit integer times this is a double in [0, 1) with every bit random
_PERSON_MAX = 16  # BLAKE2b's personalisation string is at most 16 bytes


def new_decision_id() -> str:
    """A fresh decision id (a random UUID4 string)."""
    return str(uuid.uuid4())


class DecisionDraws:
    """The uniform draws of one decision stream, in order: ``random()`` and ``integers(n)`` each take
    the stream's next 64-bit word, so the same id and stream always give the same sequence."""

    __slots__ = ("_key", "_next", "_person", "_words")

    def __init__(self, decision_id: str, stream: str) -> None:
        person = stream.encode("utf-8")
        if len(person) > _PERSON_MAX:
            raise ValueError(f"stream name {stream!r} is longer than {_PERSON_MAX} bytes")
        self._key = decision_id.encode("utf-8")
        self._person = person
        self._words: tuple[int, ...] = ()
        self._next = 0

    def _word(self) -> int:
        block, offset = divmod(self._next, _WORDS_PER_BLOCK)
        if offset == 0:
            salt = block.to_bytes(16, "little")
            digest = hashlib.blake2b(self._key, digest_size=64, person=self._person, salt=salt).digest()
            self._words = _BLOCK.unpack(digest)
        self._next += 1
        return self._words[offset]

    def random(self) -> float:
        """A uniform double in [0, 1) (53 random bits, like numpy's ``Generator.random``)."""
        return (self._word() >> 11) * _TO_UNIT

    def integers(self, high: int) -> int:
        """A uniform integer in [0, high): the high bits of word x high (Lemire's multiply-shift; the
        bias is below high / 2**64, far under anything a decision log could measure)."""
        if high < 1:
            raise ValueError(f"high must be >= 1, got {high}")
        return (self._word() * high) >> 64

    def generator(self) -> np.random.Generator:
        """A numpy generator for decisions that need many draws (Thompson sampling), seeded from a
        hash of the id and stream (not from the words ``random`` uses)."""
        seed = hashlib.blake2b(self._key, digest_size=16, person=self._person, salt=b"generator").digest()
        return np.random.default_rng(int.from_bytes(seed, "little"))
