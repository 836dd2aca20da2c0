"""Where a servicer runs an engine call: on the event loop, or in the blocking-work threads.

A page render costs the engine about a millisecond of CPU and, with live state in this process's
memory, never waits for anything: running it on the event loop saves two thread hand-offs per call,
which cost more than the work's share of waiting. Two kinds of call would stall the loop, and every
page render behind them, if they ran there:

- a call that waits: with live state in Redis (``--state redis://...``) every engine call reads and
  writes the store over the network, so every one goes to a thread;
- a call that scores for long: a RecommendProducts batch of a thousand customers is half a second of
  CPU. In a thread it shares the interpreter lock with the loop (which gets it back every few
  milliseconds), so page renders keep flowing beside it instead of waiting for the whole batch.

A call that waited for a free thread is checked against its deadline again when it starts there
(``DeadlinePassedError``): the caller has given up, and scoring anyway delays the calls queued
behind it. The servicer awaits ``EngineCalls.run(...)`` as one step; a dynamic batcher in front of
the engine would take its place (``await batcher.submit(...)``).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from typing import Final, Protocol, TypeVar

from engine.errors import PersonaEngineError
from engine.personalizer import Personalizer

# Calls scoring more targets than this run in a thread; a handful of targets is a page's worth.
INLINE_TARGETS: Final = 8

_Call = TypeVar("_Call")
_Result = TypeVar("_Result")


class Deadline(Protocol):
    """The part of a server context this module reads (grpc's sync and aio contexts both have it)."""

    def time_remaining(self) -> float | None: ...


class DeadlinePassedError(PersonaEngineError, TimeoutError):
    """The call's deadline passed before it was served (answered DEADLINE_EXCEEDED)."""


class EngineCalls:
    """Runs engine calls on the loop or in the loop's default executor (module doc).

    ``blocking_state`` is True when live state lives in a network store (Redis): then every call
    goes to a thread. Otherwise calls scoring at most ``inline_targets`` targets run on the loop.
    """

    def __init__(self, *, blocking_state: bool = False, inline_targets: int = INLINE_TARGETS) -> None:
        if inline_targets < 0:
            raise ValueError(f"inline_targets must be 0 or more, got {inline_targets}")
        self.blocking_state = blocking_state
        self.inline_targets = inline_targets

    def runs_inline(self, targets: int) -> bool:
        return not self.blocking_state and targets <= self.inline_targets

    async def run(
        self,
        context: Deadline,
        engine_call: Callable[[Personalizer, _Call], _Result],
        personalizer: Personalizer,
        call: _Call,
        *,
        targets: int = 1,
    ) -> _Result:
        """``engine_call(personalizer, call)``, inline or in a thread; the request id and other
        context variables go along to the thread, so its log lines name the call."""
        if self.runs_inline(targets):
            return engine_call(personalizer, call)
        work = functools.partial(_unless_expired, context, engine_call, personalizer, call)
        return await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(contextvars.copy_context().run, work)
        )


def _unless_expired(
    context: Deadline,
    engine_call: Callable[[Personalizer, _Call], _Result],
    personalizer: Personalizer,
    call: _Call,
) -> _Result:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise DeadlinePassedError("the deadline passed while the call waited for a thread")
    return engine_call(personalizer, call)
