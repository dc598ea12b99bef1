"""Real Dagster processes for fault tests: a run launched from the command line, the daemon,
and the ways they die (SIGTERM, or SIGKILL of the whole process group)."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from fraud_pipelines.resources import PAUSE_AT_ENV, PAUSE_MARKER_ENV
from fraud_pipelines.sandbox import Platform
from fraud_pipelines.settings import DEFAULT_CRONS, REPO_ROOT

BIN = Path(sys.executable).parent
# A cron that cannot fire while a test runs (midnight on 1 January).
NEVER = "0 0 1 1 *"
LOCATION = "fraud_platform"


def instance_yaml(max_concurrent_runs: int) -> str:
    """The repository's dagster.yaml settings, with the run queue limit a test needs."""
    return (
        "run_coordinator:\n"
        "  module: dagster._core.run_coordinator\n"
        "  class: QueuedRunCoordinator\n"
        "  config:\n"
        f"    max_concurrent_runs: {max_concurrent_runs}\n"
        "telemetry:\n"
        "  enabled: false\n"
    )


def dagster_home(
    platform: Platform, max_concurrent_runs: int = 2, code_server_port: int | None = None
) -> Path:
    """The platform's Dagster folder as DAGSTER_HOME: its SQLite storage, plus a dagster.yaml
    and a workspace.yaml for `fraud_pipelines.definitions`, loaded from a code server on
    `code_server_port` if given, else by the daemon itself."""
    home = platform.root / "dagster"
    (home / "dagster.yaml").write_text(instance_yaml(max_concurrent_runs))
    if code_server_port is None:
        location = (
            "  - python_module:\n"
            "      module_name: fraud_pipelines.definitions\n"
            f"      working_directory: {REPO_ROOT}\n"
        )
    else:
        location = (
            "  - grpc_server:\n"
            "      host: 127.0.0.1\n"
            f"      port: {code_server_port}\n"
            f"      location_name: {LOCATION}\n"
        )
    (home / "workspace.yaml").write_text("load_from:\n" + location)
    return home


def code_server_command(port: int) -> list[str]:
    """A code server for `fraud_pipelines.definitions`, as a deployment runs one beside the
    daemon: restarting the daemon then does not reload the code."""
    return [
        str(BIN / "dagster"),
        "api",
        "grpc",
        "-m",
        "fraud_pipelines.definitions",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "--location-name",
        LOCATION,
    ]


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def process_env(platform: Platform, home: Path, **extra: str) -> dict[str, str]:
    """Environment of a Dagster process working on `platform`: no schedule can fire."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRAUD_", "DAGSTER_"))}
    env.update(platform.env())
    env.update(
        {
            "DAGSTER_HOME": str(home),
            "FRAUD_DATASET_CONFIG": str(platform.settings.dataset_config),
            **{f"FRAUD_CRON_{name.upper()}": NEVER for name in DEFAULT_CRONS},
            **extra,
        }
    )
    return env


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start a command in its own process group, so it can be killed with its children."""
    return subprocess.Popen(
        args,
        cwd=REPO_ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def materialize_command(selection: list[str], run_config: str) -> list[str]:
    """`dagster asset materialize` of `selection` from the platform's code location."""
    return [
        str(BIN / "dagster"),
        "asset",
        "materialize",
        "-m",
        "fraud_pipelines.definitions",
        "--select",
        ",".join(selection),
        "--config-json",
        run_config,
    ]


def paused_env(env: dict[str, str], point: str, marker: Path) -> dict[str, str]:
    """`env` with the run told to stop at the named pause point (see `pause_point`)."""
    return {**env, PAUSE_AT_ENV: point, PAUSE_MARKER_ENV: str(marker)}


def log_tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    process: subprocess.Popen | None = None,
    log: Path | None = None,
) -> None:
    """Poll until `condition` holds; fail early, with the log, if `process` exits first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            tail = log_tail(log) if log else ""
            raise AssertionError(f"exited ({process.returncode}) before {what}\n{tail}")
        if time.monotonic() > deadline:
            tail = log_tail(log) if log else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{tail}")
        time.sleep(0.2)


def kill_group(process: subprocess.Popen, sig: signal.Signals, timeout: float = 60) -> None:
    """Send `sig` to the process and all its children, and wait for the process to end."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    if sig != signal.SIGKILL:
        # Whatever the process left behind (a code server) goes too.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def materializations(instance: dg.DagsterInstance, asset: str, run_id: str) -> int:
    """How many materializations of `asset` the run recorded."""
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
    return sum(1 for r in records if r.run_id == run_id)


def sensor_ticks(instance: dg.DagsterInstance, name: str) -> list:
    """Every recorded tick of the named sensor, newest first."""
    state = next((s for s in instance.all_instigator_state() if s.instigator_name == name), None)
    if state is None:
        return []
    return list(instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1000))
