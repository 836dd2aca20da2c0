"""``spark-submit`` entry point: ``spark-submit [options] cli/spark_submit.py train --config ...``.

spark-submit runs a Python *file*, not a console script, so this file runs the ``persona-engine``
command line with the arguments after it. The engine must be installed on the driver and on every
executor (``pip install persona-engine`` in the cluster's Python, or a packed virtualenv shipped with
``--archives``): executors import it to run the persona EM's E-step.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # spark-submit puts this file's folder first on sys.path; its modules are not top-level ones.
    here = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != here]
    from cli.main import main

    sys.exit(main())
