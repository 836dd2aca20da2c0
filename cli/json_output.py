"""The ``--json`` output every command shares, so scripts can rely on one format."""

from __future__ import annotations

import json
import sys
from typing import Any


def emit_json(document: Any) -> None:
    """Print one indented JSON document on stdout; dates, paths and the like become their string form."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
