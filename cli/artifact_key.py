"""The artifact signing key a command is given (``--artifact-key`` or its environment variable), read
and checked before the work it would sign: a wrong key found after an hour of training wastes the hour."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cli.errors import FlagError, UserError
from engine.errors import PersonaEngineError
from training.console_output import stderr_console

if TYPE_CHECKING:
    from engine.artifact import ArtifactSigner


def artifact_signer(flag: Path | None, environ: dict[str, str]) -> ArtifactSigner | None:
    """The signer of ``--artifact-key`` or its variable, read before an hour of training, or None."""
    from engine.artifact import ENV_ARTIFACT_KEY_FILE, ArtifactSigner

    path = flag or (Path(environ[ENV_ARTIFACT_KEY_FILE]) if environ.get(ENV_ARTIFACT_KEY_FILE) else None)
    if path is None:
        return None
    source = "--artifact-key" if flag else ENV_ARTIFACT_KEY_FILE
    try:
        signer = ArtifactSigner.from_file(path)
    except PersonaEngineError as error:
        if flag:
            raise FlagError(source, str(error)) from None
        raise UserError(f"{source}: {error}") from None
    if path.stat().st_mode & 0o077:
        stderr_console.print(
            f"warning: {source} {path}: other users may read this private key; restrict it with chmod 600",
            highlight=False,
        )
    return signer
