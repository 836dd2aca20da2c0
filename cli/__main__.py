"""``python -m cli``: the same command as the ``persona-engine`` console script, without installing it."""

import sys

from cli.main import main

sys.exit(main())
