"""A training run whose Spark driver dies says so in one line, naming the memory setting to raise.

The JVM is really killed (SIGKILL, as the kernel's OOM killer or a Java OutOfMemoryError exit would
leave it), in a child process so that the suite's shared session is untouched.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent(
    """
    import os, signal
    from training.config import EngineSection
    from training.spark.session import SparkDriverLostError, training_session

    try:
        with training_session(EngineSection(master="local[1]", driver_memory="700m")) as session:
            assert session.range(5).count() == 5
            os.kill(int(session._jvm.java.lang.ProcessHandle.current().pid()), signal.SIGKILL)
            session.range(10).count()
    except SparkDriverLostError as error:
        print("LOST", error)
    """
)


def test_a_dead_driver_jvm_becomes_one_clear_error() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=180, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("LOST")]
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(lines) == 1, done.stdout + done.stderr[-3000:]
    assert "driver_memory is 700m, raise it" in lines[0]
    assert "Spark's driver stopped answering" in lines[0]
