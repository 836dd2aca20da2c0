"""The ``persona-engine`` argument parser, assembled from the command modules.

Each command's parser lives next to the function that runs it; this module only fixes the program's
own help and the order in which ``persona-engine --help`` lists the commands (the order of a first
run: make data, train, look at the result, then the rest).
"""

from __future__ import annotations

import argparse
import textwrap
from importlib import metadata

from cli import (
    data_commands,
    decision_commands,
    drift_commands,
    event_log_commands,
    model_commands,
    serving_commands,
)
from cli.arguments import CommandLineParser, HelpFormatter

COMMANDS_IN_HELP_ORDER = (
    data_commands.add_generate_command,
    model_commands.add_train_command,
    model_commands.add_evaluate_command,
    serving_commands.add_recommend_command,
    data_commands.add_personas_command,
    data_commands.add_discover_command,
    model_commands.add_summary_command,
    model_commands.add_report_command,
    data_commands.add_adapt_command,
    serving_commands.add_batch_recommend_command,
    serving_commands.add_segments_command,
    model_commands.add_compare_command,
    model_commands.add_tune_command,
    decision_commands.add_evaluate_policy_command,
    decision_commands.add_experiment_report_command,
    drift_commands.add_drift_command,
    serving_commands.add_serve_command,
    event_log_commands.add_archive_events_command,
)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; the parsed arguments carry the function to run as ``handler``."""
    parser: argparse.ArgumentParser = CommandLineParser(
        prog="persona-engine",
        description="Persona-conditioned personalization for e-commerce: learn persona mixes and "
        "persona-aware recommenders from interaction data, evaluate them, and write versioned artifacts.",
        formatter_class=HelpFormatter,
        epilog=textwrap.dedent(
            """
            a first run:
              persona-engine generate --out data/demo
              persona-engine train --config training/configs/demo.toml
              persona-engine summary --artifact artifacts/latest
            run 'persona-engine COMMAND --help' for each command's options and examples.
            """
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS_IN_HELP_ORDER:
        add(sub)
    return parser


def _version() -> str:
    """The installed package's version (pyproject.toml), or "unknown" when run from an uninstalled tree."""
    try:
        return metadata.version("persona-engine")
    except metadata.PackageNotFoundError:
        return "unknown"
