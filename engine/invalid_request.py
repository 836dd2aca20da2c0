"""The one error a personalization request can fail with because of what the caller sent.

Callers fix a bad request by reading the message, so the error always names the field at fault as a
path ("filters.price_max", "promotions.pins[1].item_id") and says what was expected and what came.
Domain objects raise it with the path relative to themselves; whoever embeds them (the request
translation of the gRPC server) prefixes the path with ``within``, so each layer only knows its own
field names.
"""

from __future__ import annotations

from engine.errors import PersonaEngineError


class InvalidRequestError(PersonaEngineError, ValueError):
    """A request outside the documented limits; ``field`` is the path of the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem

    def within(self, prefix: str) -> InvalidRequestError:
        """The same error seen from the enclosing message, e.g. ``price_max`` -> ``filters.price_max``."""
        if not prefix:
            return self
        return InvalidRequestError(f"{prefix}.{self.field}" if self.field else prefix, self.problem)
