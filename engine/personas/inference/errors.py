"""The two errors of persona inference: a model asked to do what it cannot, and a saved model that is broken.

They live apart from the model so that callers (discovery, drift, the CLI) can catch them without
importing the fitting machinery, and so that the files code can raise the format error too.
"""

from __future__ import annotations

from engine.errors import PersonaEngineError


class PersonaInferenceError(PersonaEngineError, RuntimeError):
    """The model cannot do what was asked: not fitted yet, or mixes that do not fit this model."""


class PersonaModelFormatError(PersonaEngineError, ValueError):
    """A saved persona inference model that cannot be loaded; the message names the file and the problem."""
