"""A training run whose Spark driver dies says so in one line, naming the memory setting to raise.

The JVM is really killed (SIGKILL, as the kernel's OOM killer or a Java OutOfMemoryError exit would
leave it), in a child process so that the suite's shared session is untouched. A killed JVM runs no
shutdown hooks, so the temporary folders Spark makes (``spark-*``, ``artifacts-*``) would outlive it
in /tmp, one set per run of the suite: the child's JVM gets the test's own temporary folder instead.
"""

from __future__ import annotations

import os
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


def test_a_dead_driver_jvm_becomes_one_clear_error(tmp_path: Path) -> None:
    java_tmp = tmp_path / "java-tmp"
    java_tmp.mkdir()
    env = {**os.environ, "JDK_JAVA_OPTIONS": f"-Djava.io.tmpdir={java_tmp}"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=env,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("LOST")]
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(lines) == 1, done.stdout + done.stderr[-3000:]
    assert "driver_memory is 700m, raise it" in lines[0]
    assert "Spark's driver stopped answering" in lines[0]
    assert any(java_tmp.iterdir()), "the child's JVM did not take the test's temporary folder"
