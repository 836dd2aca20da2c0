"""The error for a value given to a command-line flag that cannot be used.

A job that checks something only it can check (a model kind it cannot tune, a tuned config that
already exists) names the flag the value came from, and the command line prints it in the form
argparse gives a value it refuses: ``error: persona-engine tune: argument --models: ...``. So every
mistake in a flag reads one way, whether the parser or the job found it. The message alone
(``str(error)``) reads ``--models: ...`` for callers outside the command line.
"""

from __future__ import annotations

from engine.errors import PersonaEngineError


class FlagError(PersonaEngineError, ValueError):
    """``flag`` (as typed: ``--decisions``) was given a value that cannot be used, for ``problem``."""

    def __init__(self, flag: str, problem: str) -> None:
        self.flag = flag
        self.problem = problem
        super().__init__(f"{flag}: {problem}")
