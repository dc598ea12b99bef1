"""The benchmarks' CPU meter: whose CPU time it counts, from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from cpu_meter import CpuMeter, CpuUse, descendants

pytestmark = pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc")

SPIN_S = 0.3


def _spin(cpu_seconds: float) -> None:
    """Burn this thread's CPU for `cpu_seconds` of its own CPU time."""
    end = time.thread_time() + cpu_seconds
    while time.thread_time() < end:
        pass


def test_counts_main_thread_other_threads_and_child_processes_apart() -> None:
    # The child spins when told to, says so, and stays alive until the run has been read:
    # a process that is gone by the end of a run takes its CPU time with it.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "sys.stdin.readline()\n"
            f"end = time.process_time() + {SPIN_S}\n"
            "while time.process_time() < end: pass\n"
            "print('spun', flush=True)\n"
            "sys.stdin.readline()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        meter = CpuMeter({"self": [os.getpid()]})
        with meter.run() as used:
            child.stdin.write(b"go\n")
            child.stdin.flush()
            worker = threading.Thread(target=_spin, args=(SPIN_S,))
            worker.start()
            _spin(SPIN_S)
            worker.join()
            assert child.stdout.readline() == b"spun\n"
    finally:
        child.kill()
        child.wait()
    seconds = used.seconds
    main = used.cores["self_main"] * seconds
    threads = used.cores["self_threads"] * seconds
    # Clock ticks are 10 ms: allow two of them. The child's main thread counts as a main
    # thread of the part, so "main" holds this process's and the child's.
    assert main >= 2 * SPIN_S - 0.02
    assert threads >= SPIN_S - 0.02
    assert used.cores["machine"] * seconds >= main + threads - 0.05
    assert used.cores["rest"] >= 0.0


def test_descendants_include_the_root_and_its_children() -> None:

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        found = descendants([os.getpid()])
    finally:
        child.kill()
        child.wait()
    assert os.getpid() in found
    assert child.pid in found


def test_per_unit_turns_cores_into_microseconds_of_cpu_a_unit() -> None:
    used = CpuUse(seconds=10.0, cores={"ours_main": 1.5, "rest": 0.25})
    # 30,000 units in 10 s is 3,000 a second: 1.5 cores is 500 µs a unit.
    assert used.per_unit(30_000) == {"ours_main": 500.0, "rest": 83.3}
    assert used.per_unit(0) == {}
    assert used.report(30_000)["cores"] == {"ours_main": 1.5, "rest": 0.25}
