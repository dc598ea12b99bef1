"""Where the CPU goes during a load run: per process tree, main threads apart, from /proc.

    meter = CpuMeter({"service": [server_pid], "redis": [redis_pid]})
    with meter.run() as used:
        ...  # the load
    used.per_unit(requests)  # µs of CPU per request (or payment) of each part

Each part is a set of process trees (a root pid and its descendants, read when the run
starts; a process that ends before the run does takes its CPU time with it). Its CPU is
split into the processes' main threads (`<part>_main`: for the scoring service, the event
loops that answer requests) and their other threads (`<part>_threads`: the engine thread
that scores with Redis, the prediction log's writer, the store's checkpointer and the
like). `machine` is the busy time of all cores from /proc/stat (user, system, interrupts,
steal), and `rest` what the parts do not account for: the load generator, the kernel's
network work on its behalf, and anything else running. Linux only; elsewhere the meter
reports nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")


def _fields(stat: Path) -> list[str]:
    """The fields of a /proc stat file after the command name (state, ppid, ...)."""
    raw = stat.read_text()
    return raw[raw.rindex(")") + 2 :].split()


def descendants(roots: Sequence[int]) -> list[int]:
    """The roots and every process below them."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_fields(entry / "stat")[1]), []).append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue  # exited while being read
    found: list[int] = []
    todo = list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def process_ticks(pids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """(all threads, main thread) user + system clock ticks of each process in `pids`.

    A process's own total includes threads that have ended, so the others' share is the
    total less the main thread's.
    """
    ticks: dict[int, tuple[int, int]] = {}
    for pid in pids:
        try:
            whole = _fields(PROC / str(pid) / "stat")
            main = _fields(PROC / str(pid) / "task" / str(pid) / "stat")
        except OSError:
            continue  # exited
        ticks[pid] = (int(whole[11]) + int(whole[12]), int(main[11]) + int(main[12]))
    return ticks


def machine_busy_ticks() -> int:
    """Clock ticks all cores spent on anything but idle and I/O wait."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return user + nice + system + irq + softirq + steal


@dataclass
class CpuUse:
    """Cores used on average during a run, by part (see module doc)."""

    seconds: float = 0.0
    cores: dict[str, float] = field(default_factory=dict)

    def per_unit(self, units: float) -> dict[str, float]:
        """µs of CPU per unit of work (a request or a payment) of each part."""
        if units <= 0 or self.seconds <= 0:
            return {}
        rate = units / self.seconds
        return {name: round(c * 1e6 / rate, 1) for name, c in self.cores.items()}

    def report(self, units: float) -> dict[str, object]:
        return {
            "cores": {name: round(c, 3) for name, c in self.cores.items()},
            "us_per_unit": self.per_unit(units),
        }


class CpuMeter:
    """Measures `CpuUse` over a block, for named parts given by their root pids."""

    def __init__(self, parts: Mapping[str, Sequence[int]]) -> None:
        self.parts = {name: list(roots) for name, roots in parts.items()}

    @contextmanager
    def run(self) -> Iterator[CpuUse]:
        used = CpuUse()
        if not (PROC / "stat").exists():
            yield used
            return
        pids = {name: descendants(roots) for name, roots in self.parts.items()}
        before = {name: process_ticks(p) for name, p in pids.items()}
        busy0, t0 = machine_busy_ticks(), time.perf_counter()
        yield used
        busy1, t1 = machine_busy_ticks(), time.perf_counter()
        after = {name: process_ticks(p) for name, p in pids.items()}
        per_second = os.sysconf("SC_CLK_TCK") * (t1 - t0)
        used.seconds = t1 - t0
        accounted = 0.0
        for name in self.parts:
            main = others = 0
            for pid, (whole, own) in after[name].items():
                whole0, own0 = before[name].get(pid, (0, 0))
                main += own - own0
                # The two files are read one after the other: a tick apart at most.
                others += max(0, (whole - whole0) - (own - own0))
            used.cores[f"{name}_main"] = main / per_second
            used.cores[f"{name}_threads"] = others / per_second
            accounted += (main + others) / per_second
        used.cores["machine"] = (busy1 - busy0) / per_second
        used.cores["rest"] = max(0.0, used.cores["machine"] - accounted)
