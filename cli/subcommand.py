"""How a command joins the parser: the same help layout, examples and ``--json`` flag for every one.

Each command's parser is built next to the function that runs it (in the ``*_commands`` modules);
this module keeps the parts they all share in one place, so ``--help`` looks the same everywhere and
the parsed arguments carry the function to run (``args.handler``).
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from typing import TypeAlias

from cli.arguments import DEFAULT_ARTIFACT, HelpFormatter, artifact_folder

Handler: TypeAlias = Callable[[argparse.Namespace], int]
"""Runs one command on its parsed arguments and returns the exit status."""

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What ``add_subparsers`` returns: where commands are added."""


def add_command(
    sub: Subcommands, name: str, help_text: str, examples: str, handler: Handler
) -> argparse.ArgumentParser:
    """A command whose ``--help`` ends with ``examples`` and which can print JSON instead of tables."""
    parser = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=textwrap.dedent(examples),
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout instead of tables"
    )
    parser.set_defaults(handler=handler, prog=parser.prog)
    return parser


ARTIFACT_HELP = "artifact folder: ROOT (its latest version), ROOT/latest or ROOT/<version>"


def add_artifact_argument(parser: argparse.ArgumentParser) -> None:
    """``--artifact``, the same flag with the same default in every command that reads an artifact.

    The default is a string so that argparse checks it like a given value: a missing artifacts/latest
    is refused as ``argument --artifact: artifacts/latest: no such artifact folder (...)``."""
    parser.add_argument("--artifact", type=artifact_folder, default=DEFAULT_ARTIFACT, help=ARTIFACT_HELP)
