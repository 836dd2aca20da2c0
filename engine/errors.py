"""The one base of every error a user of persona-engine can cause and fix.

A bad data file, an unknown persona, a corrupt artifact, a request field out of range: each has its own
class (so code can react to one kind) and a message that names the file, row, column or field. They
all derive from ``PersonaEngineError`` so that the edges catch exactly one thing: the command line
turns it into one line on stderr and exit status 2, and the gRPC layer into a status with the message.
Anything else that escapes is a bug and keeps its traceback.

Each subclass also keeps the built-in base it had (``ValueError``, ``KeyError``, ``RuntimeError``), so
callers that caught those before still do.
"""

from __future__ import annotations


class PersonaEngineError(Exception):
    """An error whose message tells the user what to fix; never raised for a bug in the engine."""
