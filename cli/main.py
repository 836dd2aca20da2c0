"""The ``persona-engine`` command line: generate data, train, evaluate, inspect and explain.

Output is for people by default (progress bars, aligned tables); ``--json`` prints one JSON document
on stdout for scripts. Errors in the user's files end the command with exit status 2 and a message
naming the file, row and column, never a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from cli.allocator_settings import ALLOCATOR_SETTINGS, ALLOCATOR_SETTINGS_VARIABLE

# implicit warns (and slows down) when OpenBLAS runs threads next to implicit's own; set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# polars' allocator (jemalloc) keeps freed memory per arena, eight arenas on two cores by default, so
# the memory one thread frees is seldom what the next allocation gets, and fresh memory costs page
# faults (on a VM that hands freed pages back to its host, 2 s a gigabyte and more). One arena halves
# the split's page faults and its peak on 10M events (3.2 -> 2.4 GB) and takes about a second of
# kernel time off a million-customer build. Read when polars loads; a value set by the user wins.
os.environ.setdefault(ALLOCATOR_SETTINGS_VARIABLE, ALLOCATOR_SETTINGS)

from cli.parser import build_parser
from cli.subcommand import Handler
from engine.errors import PersonaEngineError
from training.console_output import stderr_console
from training.flag_error import FlagError


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status, or 2 (with a one-line message) for an error the user can fix."""
    from rich.text import Text

    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    # A path the user named that cannot be read or written (missing, a file where a folder must be,
    # no permission) is theirs to fix too; anything else that escapes is a bug.
    except (PersonaEngineError, OSError) as error:
        if isinstance(error, OSError) and not isinstance(error, FileNotFoundError) and error.filename is None:
            raise
        if isinstance(error, FlagError):  # as the parser prints a value it refuses (CommandLineParser)
            prog = getattr(args, "prog", "persona-engine")
            sys.stderr.write(f"error: {prog}: argument {error.flag}: {error.problem} (see '{prog} --help')\n")
            return 2
        message = str(error) if isinstance(error, PersonaEngineError) else _describe_os_error(error)
        stderr_console.print(
            Text.assemble(("error:", "bold red"), " ", _one_problem_one_line(error, message)), soft_wrap=True
        )
        return 2


def _one_problem_one_line(error: Exception, message: str) -> str:
    """A data contract error with a single problem on one line (its message lists problems below a
    heading); imported here, on the error path, because the data loader brings polars with it."""
    from engine.data.loading import DataValidationError

    if isinstance(error, DataValidationError) and error.total == len(error.issues) == 1:
        return f"the shop data breaks the data contract: {error.issues[0]}"
    return message


def _describe_os_error(error: OSError) -> str:
    """``path: reason`` rather than Python's ``[Errno 20] Not a directory: 'path'``."""
    if error.filename is None:
        return str(error)
    return f"{error.filename}: {(error.strerror or str(error)).lower()}"
