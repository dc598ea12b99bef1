"""Command line: materialize the graph, roll back the champion, start the platform.

python -m fraud_pipelines.cli materialize      # the whole asset graph, once
python -m fraud_pipelines.cli rollback         # champion back to the previous version
python -m fraud_pipelines.cli promotions       # the promotion log
python -m fraud_pipelines.cli up               # data + graph + Dagster, MLflow, scoring
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fraud_pipelines.sandbox import ASSET_PARTITION_RANGE_END, ASSET_PARTITION_RANGE_START
from fraud_pipelines.settings import REPO_ROOT, Settings


def _dagster_home(settings: Settings) -> Path:
    """A project-local DAGSTER_HOME holding the repository's dagster.yaml.

    The instance is on SQLite unless DAGSTER_PG_HOST (and the other DAGSTER_PG_* variables)
    name a PostgreSQL server; see fraud_pipelines/instance.py.
    """
    from fraud_pipelines.instance import write_dagster_home

    chosen = os.environ.get("DAGSTER_HOME")
    home = Path(chosen or settings.home / "dagster")
    home.mkdir(parents=True, exist_ok=True)
    # The project-local home always follows the repository's file; a home the user chose
    # keeps its own settings once it has them.
    if not chosen or not (home / "dagster.yaml").exists():
        write_dagster_home(home)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def source_day_range(settings: Settings, dataset_config: str | None = None) -> tuple[str, str]:
    """First and last day present in the configured dataset."""
    from fraud_assets.core.ingest import ingest, load_dataset_config

    result = ingest(load_dataset_config(dataset_config or settings.dataset_config))
    ts = result.valid["timestamp"]
    return ts.min().strftime("%Y-%m-%d"), ts.max().strftime("%Y-%m-%d")


def materialize(settings: Settings, dataset_config: str | None = None) -> bool:
    """Materialize every asset once, all days of the dataset in one run."""
    import dagster as dg

    from fraud_pipelines.definitions import defs

    _dagster_home(settings)
    first, last = source_day_range(settings, dataset_config)
    instance = dg.DagsterInstance.get()
    run_config = {}
    if dataset_config:
        run_config = {"ops": {"transactions": {"config": {"dataset_config": dataset_config}}}}
    job = defs.resolve_job_def("full_graph_job")
    result = job.execute_in_process(
        instance=instance,
        run_config=run_config,
        tags={ASSET_PARTITION_RANGE_START: first, ASSET_PARTITION_RANGE_END: last},
        raise_on_error=False,
    )
    print(f"run {result.run_id}: {'succeeded' if result.success else 'FAILED'} ({first}..{last})")
    return result.success


def ensure_sample_data(settings: Settings, rows: int) -> None:
    """Generate the bundled synthetic dataset if the default config's file is missing."""
    from fraud_assets.core.ingest import load_dataset_config
    from fraud_assets.core.synthetic import SyntheticConfig, generate, write

    config = load_dataset_config(settings.dataset_config)
    target = Path(config.path)
    if target.exists() or any(c in config.path for c in "*?["):
        return
    today = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 61 * 86400))
    frame = generate(SyntheticConfig(n_transactions=rows, start=today, days=60))
    write(frame, target)
    print(f"generated {len(frame):,} synthetic transactions into {target}")


def _spawn(cmd: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    return subprocess.Popen(
        list(cmd), env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def up(settings: Settings, rows: int, skip_materialize: bool) -> int:
    """Sample data, one materialization, then the three UIs until Ctrl-C."""
    ensure_sample_data(settings, rows)
    if not skip_materialize and not materialize(settings):
        print("The run failed (see the Dagster UI for which step and why); starting the UIs.")
    from serving.keys import ApiKeys

    demo_key = ApiKeys(settings.platform_db_url).create(f"quickstart-{int(time.time())}")
    home = _dagster_home(settings)
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    bin_dir = Path(sys.executable).parent
    dagster_port = env.get("FRAUD_DAGSTER_PORT", "3000")
    mlflow_port = env.get("FRAUD_MLFLOW_PORT", "5000")
    serving_port = env.get("FRAUD_SERVING_PORT", "3001")
    services = {
        "Dagster UI": (
            [
                str(bin_dir / "dagster"),
                "dev",
                "-w",
                str(REPO_ROOT / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                dagster_port,
            ],
            f"http://127.0.0.1:{dagster_port}",
        ),
        "MLflow UI": (
            [
                str(bin_dir / "mlflow"),
                "server",
                "--backend-store-uri",
                settings.mlflow_tracking_uri,
                "--default-artifact-root",
                settings.mlflow_artifact_root.as_uri(),
                "--host",
                "127.0.0.1",
                "--port",
                mlflow_port,
                "--workers",
                "1",
            ],
            f"http://127.0.0.1:{mlflow_port}",
        ),
        "Scoring API": (
            [
                str(bin_dir / "bentoml"),
                "serve",
                "serving.service:FraudScorer",
                "--host",
                "127.0.0.1",
                "--port",
                serving_port,
            ],
            f"http://127.0.0.1:{serving_port}",
        ),
    }
    env["DAGSTER_HOME"] = str(home)
    procs = {
        name: _spawn(cmd, env, logs / f"{name.split()[0].lower()}.log")
        for name, (cmd, _) in services.items()
    }
    print("\nThe platform is starting (logs in .fraud/logs):")
    for name, (_, url) in services.items():
        print(f"  {name:12s} {url}")
    print("  API docs     " + services["Scoring API"][1] + "/docs")
    print(f"  API key      {demo_key}   (header X-API-Key; manage with python -m serving.keys)")
    print("Press Ctrl-C to stop.\n")
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping:
        for name, proc in procs.items():
            if proc.poll() is not None:
                print(f"{name} exited with {proc.returncode}; see .fraud/logs")
                stopping = True
        time.sleep(0.5)
    for proc in procs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.time() + 20
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    print("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fraud", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mat = sub.add_parser("materialize", help="materialize the whole asset graph once")
    mat.add_argument("--dataset-config", help="dataset YAML (default: FRAUD_DATASET_CONFIG)")
    roll = sub.add_parser("rollback", help="move champion back to the previous version")
    roll.add_argument("--actor", default=os.environ.get("USER", "cli"))
    sub.add_parser("promotions", help="print the promotion log")
    start = sub.add_parser("up", help="sample data, materialize, start the UIs")
    start.add_argument("--rows", type=int, default=200_000)
    start.add_argument("--skip-materialize", action="store_true")
    sub.add_parser("alerts", help="list, acknowledge or dismiss alerts", add_help=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    settings = Settings.from_env()
    if argv[:1] == ["alerts"]:
        from fraud_assets.core.alerts import main as alerts_main

        rest = argv[1:]
        if "--db-url" not in rest and rest and not rest[0].startswith("-"):
            rest = [rest[0], "--db-url", settings.platform_db_url, *rest[1:]]
        return alerts_main(rest)
    args = parser.parse_args(argv)
    if args.command == "materialize":
        return 0 if materialize(settings, args.dataset_config) else 1
    if args.command in ("rollback", "promotions"):
        from fraud_assets.core.registry import Registry

        registry = Registry(
            settings.mlflow_tracking_uri, settings.model_name, settings.platform_db_url
        )
        if args.command == "rollback":
            version = registry.rollback(f"cli:{args.actor}")
            print(f"champion is now {settings.model_name} v{version}")
            return 0
        for e in registry.log.entries(settings.model_name):
            print(
                f"{e.at:%Y-%m-%d %H:%M:%S}  {e.alias:10s} {e.from_version or '-':>4} -> "
                f"{e.to_version or '-':<4} {e.actor}: {e.reason}"
            )
        return 0
    return up(settings, args.rows, args.skip_materialize)


if __name__ == "__main__":
    sys.exit(main())
