"""Start a server process, wait until it answers, and stop it with everything it spawned.

Used by the benchmarks and the HTTP tests to run `bentoml serve`, `uvicorn` or `mlflow
models serve` on loopback. The server gets its own process group, so stopping it also stops
its worker processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bentoml_serve_command(port: int) -> list[str]:
    """`bentoml serve` of the scoring service on 127.0.0.1:`port`."""
    return [
        str(BIN / "bentoml"),
        "serve",
        "serving.service:FraudScorer",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """SIGTERM the process group (a graceful stop), SIGKILL it after `timeout` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@contextlib.contextmanager
def running_server(
    cmd: Sequence[str],
    env: Mapping[str, str],
    ready_url: str,
    log: Path,
    timeout: float = 240.0,
    ready: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `cmd` (output to `log`) until the block ends; enter once `ready_url` is ready.

    Raises RuntimeError with the log's tail when the process exits or is not ready within
    `timeout` seconds.
    """
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(cmd),
            env=dict(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[0]} exited; {log}:\n{log.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if ready(httpx.get(ready_url, timeout=5)):
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{ready_url} not ready in {timeout:.0f} s; {log}:\n"
                        f"{log.read_text()[-3000:]}"
                    )
                time.sleep(0.5)
            yield proc
        finally:
            stop_group(proc)
