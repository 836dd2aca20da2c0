"""The error for mistakes in what the user gave the command line (flags, their values, files)."""

from __future__ import annotations

from engine.errors import PersonaEngineError
from training.flag_error import FlagError

__all__ = ["FlagError", "UserError"]


class UserError(PersonaEngineError):
    """An error in what the user gave us (files, their contents); printed without a traceback, exit
    status 2. A value of one flag is a ``FlagError`` instead, printed in the parser's form."""
