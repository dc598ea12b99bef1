"""The README's screenshot of the `drift_report` asset page, taken from a real Dagster UI.

    .venv/bin/python scripts/drift_screenshot.py      # docs/img/drift_report{,_worst_features}.png
    .venv/bin/python scripts/drift_screenshot.py --out /tmp/drift.png --keep /tmp/demo

What it does, in about two minutes on a quiet two-core machine:

1. builds a throwaway platform (`fraud_pipelines.sandbox.make_platform`): 60,000 synthetic
   transactions over 30 days with the drift knob on for the last fifth of the period;
2. materializes the training assets on the days before the shift, as the monitoring loop
   test does, so `fraud_detector` has a champion and the online store knows every customer;
3. scores the days after the shift through the scoring service's own engine
   (`ScoringEngine.predict_batch`, the code path of `/predict/batch`), which writes the
   prediction log;
4. materializes `scored_predictions` and `drift_report`;
5. starts `dagster-webserver` on a free loopback port against that instance and saves the
   `drift_report` page with `ui_snapshots.snapshot_drift_report`, which fails unless the
   page shows the status and the metadata table of the latest materialization.

The tests run `screenshot_running` against the native stack's UI (tests/stack/test_stack.py).
"""

import argparse
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import dagster as dg
import pandas as pd

from fraud_assets import datasets, features, models, monitoring, serving_state
from fraud_pipelines.sandbox import (
    ASSET_PARTITION_RANGE_END,
    ASSET_PARTITION_RANGE_START,
    Platform,
    make_platform,
)
from fraud_pipelines.settings import REPO_ROOT
from serving.config import ServingSettings
from serving.engine import ScoringEngine
from serving.schemas import BatchRequest, Transaction

DEFAULT_OUT = REPO_ROOT / "docs" / "img" / "drift_report.png"
DEFAULT_WORST_FEATURES = REPO_ROOT / "docs" / "img" / "drift_report_worst_features.png"
ROWS, DAYS = 60_000, 30
SHIFT_FRACTION = 0.8
BATCH = 5_000
TRAINING_ASSETS = [
    "transactions",
    "feature_set",
    "fraud_model",
    "champion_model",
    "model_explanations",
    "online_features",
]
# A month of 60k rows holds a few hundred frauds: bars that tell a model from noise are
# enough for a picture of the drift page; production bars are in fraud_assets/core/baselines.
DEMO_BASELINES = {"average_precision": ">= 0.2", "auc_roc": ">= 0.75"}


def _sibling(name: str) -> ModuleType:
    """Import another script of this folder (scripts/ is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load scripts/{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


ui_snapshots = _sibling("ui_snapshots")


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _materialize(
    platform: Platform, selection: list[str], first: str, last: str, ops: dict
) -> None:
    assets = dg.load_assets_from_modules([datasets, features, models, monitoring, serving_state])
    result = dg.materialize(
        assets,
        selection=selection,
        instance=platform.instance,
        resources=platform.resources,
        run_config={"ops": ops},
        tags={ASSET_PARTITION_RANGE_START: first, ASSET_PARTITION_RANGE_END: last},
        raise_on_error=False,
    )
    if not result.success:
        failures = [e.message for e in result.all_events if e.is_failure]
        raise RuntimeError(f"materializing {selection} failed: {failures[-3:]}")


def score_period(platform: Platform, first: str, last: str) -> int:
    """Score every source transaction of the days [first, last] through the service's batch
    path, in time order, and wait until the prediction log holds them."""
    env = {**platform.env(), "FRAUD_AUTH_DISABLED": "1", "FRAUD_MODEL_POLL_SECONDS": "3600"}
    engine = ScoringEngine(ServingSettings.from_env(env))
    try:
        if not engine.champion.wait_checked(60):
            raise RuntimeError(f"the service loaded no champion: {engine.champion.status.reason}")
        raw = pd.read_parquet(platform.root / "raw" / "synthetic.parquet")
        day = raw["timestamp"].dt.strftime("%Y-%m-%d")
        period = raw[(day >= first) & (day <= last)].sort_values("timestamp")
        fields = [c for c in Transaction.model_fields if c in period.columns]
        rows = period[fields].to_dict("records")
        for start in range(0, len(rows), BATCH):
            chunk = rows[start : start + BATCH]
            for row in chunk:
                row["timestamp"] = row["timestamp"].isoformat()
            engine.predict_batch(BatchRequest.model_validate({"transactions": chunk}))
            if not engine.log.flush(timeout=120):
                raise RuntimeError("the prediction log did not keep up")
        if engine.log.dropped:
            raise RuntimeError(f"the prediction log dropped {engine.log.dropped} rows")
        return len(rows)
    finally:
        engine.close()


def _day(platform: Platform, offset: int) -> str:
    return (pd.Timestamp(platform.first_day) + pd.Timedelta(days=offset)).strftime("%Y-%m-%d")


def build_demo_platform(root: Path, rows: int = ROWS, days: int = DAYS) -> Platform:
    """A platform whose `drift_report` has been materialized once on drifted, scored traffic."""
    platform = make_platform(
        root, rows=rows, days=days, drift=True, drift_start_fraction=SHIFT_FRACTION
    )
    shift = round(days * SHIFT_FRACTION)
    model = {"baselines": DEMO_BASELINES, "label_delay_days": 2.0}
    _materialize(
        platform,
        TRAINING_ASSETS,
        platform.first_day,
        _day(platform, shift - 1),
        {"fraud_model": {"config": model}},
    )
    score_period(platform, _day(platform, shift), platform.last_day)
    _materialize(
        platform,
        ["scored_predictions", "drift_report"],
        platform.first_day,
        platform.last_day,
        {},
    )
    return platform


def webserver_env(platform: Platform) -> dict[str, str]:
    """The environment that points `dagster-webserver` and its code location at a platform."""
    return {
        **os.environ,
        **platform.env(),
        "FRAUD_DATASET_CONFIG": str(platform.settings.dataset_config),
        "DAGSTER_HOME": str(platform.instance.root_directory),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }


@contextmanager
def dagster_webserver(platform: Platform, timeout: float = 300.0) -> Iterator[str]:
    """Run `dagster-webserver` on a free loopback port against the platform's instance;
    yield its base URL once it answers, stop it on exit. Its output goes to
    `<platform root>/webserver.log`. Loading the code location takes 20-40 s on a quiet
    machine and minutes on a crowded one, hence the generous timeout."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (platform.root / "webserver.log").open("ab")
    command = [
        str(Path(sys.executable).with_name("dagster-webserver")),
        "-w",
        str(REPO_ROOT / "workspace.yaml"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=webserver_env(platform),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"dagster-webserver exited with {process.returncode}; "
                    f"see {platform.root / 'webserver.log'}"
                )
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"dagster-webserver did not answer on {url} in {timeout:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def make_screenshot(
    out: Path = DEFAULT_OUT, workdir: Path | None = None, worst_features_out: Path | None = None
) -> "ui_snapshots.Snapshot":
    """Build the demo platform, serve it, and save the `drift_report` page to `out`.

    Returns what the page was verified to show; raises `ui_snapshots.SnapshotError` if it
    lacks the status, the psi entries or the worst-features table. The worst-features table,
    opened from the page, is saved to `worst_features_out` when given. `workdir` keeps the
    platform (default: a temporary folder, removed afterwards).
    """
    with tempfile.TemporaryDirectory(prefix="drift-screenshot-") as scratch:
        root = Path(workdir) if workdir else Path(scratch)
        platform = build_demo_platform(root)
        with dagster_webserver(platform) as url:
            return screenshot_running(url, out, worst_features_out)


def screenshot_running(
    dagster_url: str, out: Path = DEFAULT_OUT, worst_features_out: Path | None = None
) -> "ui_snapshots.Snapshot":
    """Save the `drift_report` page of a running Dagster UI (e.g. the native stack's)."""
    with ui_snapshots.browser() as chromium:
        page = ui_snapshots.new_page(chromium)
        return ui_snapshots.snapshot_drift_report(
            page, dagster_url, Path(out), Path(worst_features_out) if worst_features_out else None
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG to write")
    parser.add_argument(
        "--worst-features",
        type=Path,
        default=DEFAULT_WORST_FEATURES,
        help="PNG of the worst-features table opened from the page",
    )
    parser.add_argument("--keep", type=Path, help="build the platform here and keep it")
    args = parser.parse_args()
    started = time.perf_counter()
    snapshot = make_screenshot(args.out, args.keep, args.worst_features)
    print(f"{snapshot.path} ({snapshot.path.stat().st_size:,} bytes) from {snapshot.url}")
    print(f"verified: {', '.join(snapshot.verified)}")
    print(f"took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
