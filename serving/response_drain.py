"""A graceful stop that waits for the answers of the calls in flight to reach their callers.

gRPC's own graceful stop (``server.stop(grace)``) refuses new calls and closes each connection the
moment its last call has handed its response to the kernel. A frame the client sends after that (a
flow-control window update or a ping, which a client sends while it reads a large response) is then
unread when the socket closes, so the kernel resets the connection instead of closing it, and a reset
discards whatever part of the response the kernel had not sent yet. The caller of a call that
succeeded on the server then sees UNAVAILABLE. The drain test
(``tests/serving/test_server_process.py``) hit it about once in 40 stops with two 1000-customer
batches in flight; CI hit it once.

So a stop has two steps. First the calls that were running when the stop began finish while the
connections stay open and are read (health already says NOT_SERVING, so callers that watch it have
moved away), and the connections stay open ``RESPONSE_FLUSH_S`` after the last of those responses
left. Only then does ``server.stop`` refuse new calls and close the connections, with what is left of
the grace period. Calls that arrive during the first step are served, not refused, and are not waited
for: under steady load from callers that ignore health, waiting for them would last the whole grace
period and then cut off every call in flight.

The interceptor (``serving.interceptors``) reports every unary call's handler here: an increment when
it starts and one method call when it ends. Only calls running when the stop began register a
callback for the moment their response is sent, so a call costs nothing more while the server serves.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Final

# How long connections stay open after the last awaited response left the server: the time a caller
# needs to read it and the server to read the caller's last frames. Responses of tens of megabytes
# leave in a few hundred milliseconds on a loaded machine; a stop without recent calls pays nothing.
RESPONSE_FLUSH_S: Final = 0.5
# How often the stop looks at the count (the done callbacks run on the loop, like the stop itself).
_CHECK_S: Final = 0.005


class ResponseDrain:
    """Per serving process: the unary calls whose handler runs, and, once a stop began, the calls that
    were running then and have not sent their response yet. Used on the event loop only."""

    def __init__(self, flush_s: float = RESPONSE_FLUSH_S) -> None:
        self.flush_s = flush_s
        self.handlers_running = 0
        self._last_handler_end = -math.inf  # time.perf_counter() when the last handler returned
        self._stop_began: float | None = None
        self._awaited_handlers = 0  # running when the stop began, handler not returned yet
        self._awaited_sends = 0  # running when the stop began, handler returned, response not sent
        self._last_awaited_sent = -math.inf

    @property
    def awaited(self) -> int:
        """Calls that were running when the stop began and have not sent their response yet."""
        return self._awaited_handlers + self._awaited_sends

    def handler_ended(self, context: Any, started: float, ended: float) -> None:
        """A handler returned (or raised) at ``ended``; it started at ``started`` (``perf_counter``)."""
        self.handlers_running -= 1
        self._last_handler_end = ended
        if self._stop_began is not None and started < self._stop_began:
            self._awaited_handlers -= 1
            self._awaited_sends += 1
            context.add_done_callback(self._response_sent)

    def _response_sent(self, _context: Any) -> None:
        self._awaited_sends -= 1
        self._last_awaited_sent = time.perf_counter()

    async def drain(self, budget_s: float) -> tuple[int, float]:
        """Wait, at most ``budget_s``, for the calls running now to send their responses, then
        ``flush_s`` after the last response any of them, or a call before the stop, gave.
        Returns how many calls were running and the seconds waited. Call once, when the stop begins."""
        began = time.perf_counter()
        deadline = began + budget_s
        self._stop_began = began
        running = self._awaited_handlers = self.handlers_running
        ended_before = self._last_handler_end
        while self.awaited > 0 and time.perf_counter() < deadline:
            await asyncio.sleep(_CHECK_S)
        last_out = max(ended_before, self._last_awaited_sent)
        pause = min(last_out + self.flush_s, deadline) - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
        return running, time.perf_counter() - began
