"""The one error of the artifact package, in a module of its own so that every part of the package
(the folder, the manifest's schema, its signature) raises the same class without importing each other."""

from __future__ import annotations

from engine.errors import PersonaEngineError


class ArtifactError(PersonaEngineError, RuntimeError):
    """An artifact that cannot be written or trusted; the message names the artifact and the file."""
