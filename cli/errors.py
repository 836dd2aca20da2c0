"""The error for mistakes in what the user gave the command line (flags, their values, files)."""

from __future__ import annotations

from engine.errors import PersonaEngineError


class UserError(PersonaEngineError):
    """An error in what the user gave us (files, flags); printed without a traceback, exit status 2."""
