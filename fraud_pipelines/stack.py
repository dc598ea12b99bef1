"""The production topology on one machine, started from local binaries instead of containers.

python -m fraud_pipelines.stack up        # start everything (again, on the same data)
python -m fraud_pipelines.stack seed      # 200k sample rows, the whole graph once, an API key
python -m fraud_pipelines.stack status    # every component, its address and its health
python -m fraud_pipelines.stack env       # export lines that point a shell at the stack
python -m fraud_pipelines.stack down      # stop everything; data stays for the next `up`

It runs the same components as docker-compose.yml, each as a process on 127.0.0.1:

| component | what it is | default port |
| --- | --- | --- |
| postgres | PostgreSQL 15 (initdb/pg_ctl): Dagster, MLflow and platform databases | 5432 |
| redis | the scoring service's online feature store | 6379 |
| mlflow | tracking server with the registry in PostgreSQL and served artifacts | 5000 |
| user-code | the Dagster code location as a gRPC server | 4000 |
| dagster-webserver | the Dagster UI | 3000 |
| dagster-daemon | schedules, sensors, the run queue and run retries | - |
| scoring-1, scoring-2 | `bentoml serve` replicas sharing Redis and a prediction log | 3001, 3002 |

Everything lives under one directory (`.fraud/stack/` by default, or `--root`): database
files, Redis' append-only file, MLflow artifacts, the Dagster home, the data lake, logs and
process ids. The ports chosen on the first `up` are saved there, so `status`, `down` and the
next `up` find the same stack. Ports come from FRAUD_PG_PORT, FRAUD_REDIS_PORT,
FRAUD_MLFLOW_PORT, FRAUD_CODE_SERVER_PORT, FRAUD_DAGSTER_PORT and FRAUD_SERVING_PORTS
(comma-separated, one per replica); the defaults are `DEFAULT_PORTS`, which
docker-compose.yml also uses (a test keeps the two in step).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fraud_pipelines.process import bentoml_serve_command
from fraud_pipelines.settings import REPO_ROOT

DEFAULT_ROOT = REPO_ROOT / ".fraud" / "stack"
LOCATION_NAME = "fraud_platform"
DATABASES = ("dagster", "mlflow", "fraud")
DB_USER = "fraud"
PG_BIN_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/15/bin")

# HTTP paths whose 200 means the component is alive; the compose healthchecks probe the same.
HTTP_HEALTH = {
    "mlflow": "/health",
    "dagster-webserver": "/server_info",
    "scoring": "/healthz",
}
# Stopped together, phase by phase: every process that writes to Redis or PostgreSQL stops
# (and writes out what it holds) before Redis, and PostgreSQL stops last.
STOP_PHASES = (
    ("scoring", "dagster-daemon", "dagster-webserver", "user-code", "mlflow"),
    ("redis",),
)


class StackError(RuntimeError):
    """A component could not be started, stopped or reached; the message says which and why."""


@dataclass(frozen=True)
class Ports:
    """Loopback ports of every component; `scoring` has one port per replica."""

    postgres: int = 5432
    redis: int = 6379
    mlflow: int = 5000
    code_server: int = 4000
    dagster: int = 3000
    scoring: tuple[int, ...] = (3001, 3002)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Ports:
        """Ports from FRAUD_*_PORT variables, defaults for the rest."""
        d = cls()
        serving = env.get("FRAUD_SERVING_PORTS")
        return cls(
            postgres=int(env.get("FRAUD_PG_PORT", d.postgres)),
            redis=int(env.get("FRAUD_REDIS_PORT", d.redis)),
            mlflow=int(env.get("FRAUD_MLFLOW_PORT", d.mlflow)),
            code_server=int(env.get("FRAUD_CODE_SERVER_PORT", d.code_server)),
            dagster=int(env.get("FRAUD_DAGSTER_PORT", d.dagster)),
            scoring=tuple(int(p) for p in serving.split(",")) if serving else d.scoring,
        )

    @classmethod
    def free(cls, replicas: int = 2) -> Ports:
        """Ports nobody is listening on right now: for tests next to other stacks."""
        picked = _free_ports(5 + replicas)
        return cls(*picked[:5], scoring=tuple(picked[5:]))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ports:
        return cls(**{**data, "scoring": tuple(data["scoring"])})


DEFAULT_PORTS = Ports()


def healthchecks(ports: Ports) -> dict[str, list[str]]:
    """The command that tells whether each component is healthy.

    docker-compose.yml runs the same commands (with each service's own port), and `status`
    runs them here; `python -m fraud_pipelines.stack probe URL` is the HTTP check.
    """
    probe = ["python", "-m", "fraud_pipelines.stack", "probe"]
    checks = {
        "postgres": ["pg_isready", "-h", "127.0.0.1", "-p", str(ports.postgres)],
        "redis": ["redis-cli", "-h", "127.0.0.1", "-p", str(ports.redis), "ping"],
        "mlflow": [*probe, f"http://127.0.0.1:{ports.mlflow}{HTTP_HEALTH['mlflow']}"],
        "user-code": [
            "dagster",
            "api",
            "grpc-health-check",
            "-h",
            "127.0.0.1",
            "-p",
            str(ports.code_server),
        ],
        "dagster-webserver": [
            *probe,
            f"http://127.0.0.1:{ports.dagster}{HTTP_HEALTH['dagster-webserver']}",
        ],
        "dagster-daemon": ["dagster-daemon", "liveness-check"],
    }
    for i, port in enumerate(ports.scoring, start=1):
        checks[f"scoring-{i}"] = [*probe, f"http://127.0.0.1:{port}{HTTP_HEALTH['scoring']}"]
    return checks


def probe(url: str, timeout: float = 3.0) -> bool:
    """True when a GET of the URL answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _grpc_serving(port: int) -> bool:
    """True when the gRPC server on the port answers Dagster's health check as SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2
    from grpc_health.v1.health_pb2_grpc import HealthStub

    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="DagsterApi"), timeout=5
            )
    except grpc.RpcError:
        return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process (to tell it from a later one with the same id)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return fields[19]


@dataclass
class Component:
    """One long-running process of the stack."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int | None = None
    cwd: Path = REPO_ROOT


@dataclass
class SeedResult:
    """What `seed` did: the run that materialized the graph and the API key it created."""

    run_id: str
    api_key: str
    rows: int
    first_day: str
    last_day: str


@dataclass
class Stack:
    """A native stack under `root`: start, stop, inspect and talk to it.

    `ports` applies to a new stack; an existing one keeps the ports saved on its first `up`.
    `env` adds or overrides variables of every component (e.g. FRAUD_MODEL_POLL_SECONDS).
    """

    root: Path = DEFAULT_ROOT
    ports: Ports | None = None
    env: dict[str, str] = field(default_factory=dict)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    # Seconds spent in each phase of up, seed, wait_ready and down (summed over calls).
    timings: dict[str, float] = field(default_factory=dict, repr=False)
    _started: dict[str, float] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        saved = self._load_state()
        if saved:
            self.ports = Ports.from_dict(saved["ports"])
        elif self.ports is None:
            self.ports = Ports.from_env(os.environ)

    @property
    def p(self) -> Ports:
        assert self.ports is not None
        return self.ports

    @property
    def state_file(self) -> Path:
        return self.root / "stack.json"

    @property
    def home(self) -> Path:
        """FRAUD_HOME of the pipeline: the data lake, the dataset config and its source."""
        return self.root / "home"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def dagster_url(self) -> str:
        return f"http://127.0.0.1:{self.p.dagster}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.p.mlflow}"

    @property
    def scoring_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.p.scoring]

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.p.redis}/0"

    def database_url(self, name: str, driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL of one of the stack's databases: dagster, mlflow or fraud."""
        password = self._password()
        return f"{driver}://{DB_USER}:{password}@127.0.0.1:{self.p.postgres}/{name}"

    @property
    def platform_db_url(self) -> str:
        """Promotion log, alerts, API keys and the prediction log."""
        return self.database_url("fraud")

    def client_env(self) -> dict[str, str]:
        """Variables that point a client (the CLI, a notebook, a test) at this stack."""
        return {
            "FRAUD_HOME": str(self.home),
            "FRAUD_DATASET_CONFIG": os.environ.get(
                "FRAUD_DATASET_CONFIG", str(self.home / "dataset.yaml")
            ),
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            "MLFLOW_UI_URL": self.mlflow_url,
            "FRAUD_PLATFORM_DB_URL": self.platform_db_url,
            "FRAUD_PREDICTION_LOG_URL": self.platform_db_url,
            "FRAUD_ONLINE_STORE_URL": self.redis_url,
            "DAGSTER_HOME": str(self.dagster_home),
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.p.postgres),
            "DAGSTER_PG_USER": DB_USER,
            "DAGSTER_PG_PASSWORD": self._password(),
            "DAGSTER_PG_DB": "dagster",
        }

    def components(self) -> list[Component]:
        """Every process but PostgreSQL (which pg_ctl runs), in start order."""
        bin_dir = Path(sys.executable).parent
        base = self._base_env()
        workspace = str(self.dagster_home / "workspace.yaml")
        mlflow_env = {
            **base,
            "MLFLOW_BACKEND_STORE_URI": self.database_url("mlflow"),
            "MLFLOW_ARTIFACTS_DESTINATION": str(self.root / "mlflow" / "artifacts"),
            "MLFLOW_HOST": "127.0.0.1",
            "MLFLOW_PORT": str(self.p.mlflow),
            "MLFLOW_BIN": str(bin_dir / "mlflow"),
            "MLFLOW_AUTH_STATE_DIR": str(self.root / "mlflow"),
        }
        found = [
            Component(
                "redis",
                [
                    shutil.which("redis-server") or "redis-server",
                    "--port",
                    str(self.p.redis),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.root / "redis"),
                    # Every write is in the append-only file within a second, so a restart
                    # keeps the customers' velocity state.
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                ],
                base,
                self.p.redis,
            ),
            Component(
                "mlflow",
                ["bash", str(REPO_ROOT / "mlflow" / "server.sh")],
                mlflow_env,
                self.p.mlflow,
            ),
            Component(
                "user-code",
                [
                    str(bin_dir / "dagster"),
                    "code-server",
                    "start",
                    "-m",
                    "fraud_pipelines.definitions",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.p.code_server),
                    "--location-name",
                    LOCATION_NAME,
                ],
                base,
                self.p.code_server,
            ),
            Component(
                "dagster-webserver",
                [
                    str(bin_dir / "dagster-webserver"),
                    "-w",
                    workspace,
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.p.dagster),
                ],
                base,
                self.p.dagster,
            ),
            Component(
                "dagster-daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", workspace], base
            ),
        ]
        for i, port in enumerate(self.p.scoring, start=1):
            replica_env = {
                **base,
                # Each replica keeps its own model cache, as separate containers would.
                "FRAUD_HOME": str(self.root / f"scoring-{i}"),
                # And its own metrics: `bentoml serve` empties $BENTOML_HOME's Prometheus
                # folder when it starts, and /metrics reports every file in it.
                "BENTOML_HOME": str(self.root / f"scoring-{i}" / "bentoml"),
                # One worker each unless FRAUD_SERVING_WORKERS (environment or `env`) says.
                "FRAUD_SERVING_WORKERS": base.get("FRAUD_SERVING_WORKERS", "1"),
            }
            found.append(
                Component(
                    f"scoring-{i}",
                    bentoml_serve_command(port),
                    replica_env,
                    port,
                )
            )
        return found

    def up(self, timeout: float = 600.0) -> None:
        """Start every component not already running and wait until all are healthy.

        On a directory that holds a stack already, the data, the ports and the password are
        reused: it is a restart.
        """
        with self._phase("up"):
            ensure_redis_server()
            with self._phase("up: prepare"):
                self._prepare()
            with self._phase("up: postgres"):
                self._start_postgres()
                self._create_databases()
            deadline = time.monotonic() + timeout
            comps = {c.name: c for c in self.components()}
            with self._phase("up: redis"):
                self._start(comps["redis"])
                self._wait(["redis"], deadline)
            # The replicas need MLflow only to find a model, and keep asking until they do, so
            # they load their code while MLflow and the code server start.
            replicas = [n for n in comps if n.startswith("scoring-")]
            with self._phase("up: services"):
                for name in ("mlflow", "user-code", *replicas):
                    self._start(comps[name])
                self._wait(["user-code"], deadline)
                for name in ("dagster-webserver", "dagster-daemon"):
                    self._start(comps[name])
                self._wait(["mlflow", "dagster-webserver", "dagster-daemon", *replicas], deadline)

    def down(self, timeout: float = 60.0) -> None:
        """Stop everything: SIGTERM to every process (the scoring replicas write out their
        prediction logs while Redis and PostgreSQL are still up), then Redis, then
        `pg_ctl stop -m fast`."""
        with self._phase("down"):
            names = [c.name for c in self.components()] if self.state_file.exists() else []
            for phase in STOP_PHASES:
                members = [n for n in names if n in phase or n.rsplit("-", 1)[0] in phase]
                with self._phase(f"down: {', '.join(phase)}"):
                    signalled = time.monotonic()
                    for name in members:
                        self._signal(name, signal.SIGTERM)
                    for name in members:
                        self._reap(name, timeout)
                        self.timings[f"stopped: {name}"] = time.monotonic() - signalled
            if (self.root / "postgres" / "data" / "postmaster.pid").exists():
                with self._phase("down: postgres"):
                    self._pg_ctl("stop", "-m", "fast", "-w", "-t", str(int(timeout)))

    def status(self) -> dict[str, dict[str, Any]]:
        """Each component's pid (None when stopped), address and health."""
        report: dict[str, dict[str, Any]] = {
            "postgres": {"pid": self._postgres_pid(), "address": f"127.0.0.1:{self.p.postgres}"}
        }
        for comp in self.components():
            address = f"127.0.0.1:{comp.port}" if comp.port else "-"
            if comp.name in HTTP_HEALTH or comp.name.startswith("scoring-"):
                address = f"http://{address}"
            report[comp.name] = {"pid": self._pid(comp.name), "address": address}
        running = [name for name, row in report.items() if row["pid"] is not None]
        # The Dagster checks are command-line programs that take seconds to start: run all
        # checks at once.
        with ThreadPoolExecutor(max_workers=len(report)) as pool:
            verdicts = dict(zip(running, pool.map(self.healthy, running), strict=True))
        for name, row in report.items():
            row["healthy"] = verdicts.get(name, False)
        return report

    def healthy(self, name: str) -> bool:
        """Run the component's healthcheck (the same one docker-compose.yml runs)."""
        argv = healthchecks(self.p)[name]
        if argv[:3] == ["python", "-m", "fraud_pipelines.stack"]:
            return probe(argv[-1])
        bin_dir = Path(sys.executable).parent
        if argv[0] in ("dagster", "dagster-daemon"):
            argv = [str(bin_dir / argv[0]), *argv[1:]]
        if name == "postgres":
            argv = [pg_binary("pg_isready"), *argv[1:]]
        try:
            done = subprocess.run(
                argv, env=self._base_env(), capture_output=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    def ready(self) -> bool:
        """True when every scoring replica has a verified model loaded (GET /readyz)."""
        return all(probe(f"{url}/readyz") for url in self.scoring_urls)

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Wait until every replica serves a model (after the first training, or a restart)."""
        deadline = time.monotonic() + timeout
        with self._phase("wait_ready"):
            while not self.ready():
                if time.monotonic() > deadline:
                    raise StackError(f"scoring replicas not ready; see {self.logs}/scoring-*.log")
                time.sleep(1.0)

    def launch(
        self,
        job_name: str,
        tags: Mapping[str, str] | None = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> str:
        """Queue a run of a job through the Dagster webserver; the daemon starts it."""
        from dagster_graphql import DagsterGraphQLClient

        client = DagsterGraphQLClient("127.0.0.1", port_number=self.p.dagster, timeout=60)
        return client.submit_job_execution(
            job_name,
            repository_location_name=LOCATION_NAME,
            run_config=dict(run_config or {}),
            tags=dict(tags or {}),
        )

    def wait_for_run(self, run_id: str, timeout: float = 900.0) -> str:
        """Wait for a run to finish; return its final status (SUCCESS, FAILURE or CANCELED)."""
        from dagster_graphql import DagsterGraphQLClient

        client = DagsterGraphQLClient("127.0.0.1", port_number=self.p.dagster, timeout=60)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = client.get_run_status(run_id).value
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                return status
            time.sleep(2.0)
        raise StackError(f"run {run_id} did not finish within {timeout:.0f} s")

    def materialize(
        self,
        job_name: str,
        tags: Mapping[str, str] | None = None,
        run_config: Mapping[str, Any] | None = None,
        timeout: float = 900.0,
    ) -> str:
        """Run a job to the end through the daemon, in one process (the runs here are small);
        return the run id, or raise if it did not succeed."""
        config = {"execution": {"config": {"in_process": {}}}, **(run_config or {})}
        run_id = self.launch(job_name, tags, config)
        status = self.wait_for_run(run_id, timeout)
        if status != "SUCCESS":
            raise StackError(f"{job_name} run {run_id} ended {status}; see {self.dagster_url}")
        return run_id

    def seed(
        self,
        rows: int = 200_000,
        model_config: Mapping[str, Any] | None = None,
        key_name: str = "stack",
        start: str | None = None,
    ) -> SeedResult:
        """Sample data (if there is none), the whole graph once, and a new API key.

        The sample covers the sixty days before yesterday, or sixty days from `start`
        (YYYY-MM-DD; the serving benchmark starts early to replay the last day on later days).

        The graph's `online_features` asset fills Redis, and the promotion gate makes the first
        passing model champion, which the replicas load at their next poll. `model_config` is
        the run config of `fraud_model`: a sample much smaller than the default has too few
        frauds in its test window for the production baselines, so pass lower `baselines`.
        """
        from fraud_pipelines.sandbox import ASSET_PARTITION_RANGE_END, ASSET_PARTITION_RANGE_START
        from serving.keys import ApiKeys

        with self._phase("seed: sample data"):
            first, last, count = self._sample_data(rows, start)
        run_config = (
            {"ops": {"fraud_model": {"config": dict(model_config)}}} if model_config else {}
        )
        with self._phase("seed: full_graph_job"):
            run_id = self.materialize(
                "full_graph_job",
                tags={ASSET_PARTITION_RANGE_START: first, ASSET_PARTITION_RANGE_END: last},
                run_config=run_config,
            )
        key = ApiKeys(self.platform_db_url).create(f"{key_name}-{int(time.time())}")
        return SeedResult(run_id, key, count, first, last)

    def replay(self, api_key: str, count: int = 300, prefix: str = "replay") -> list[str]:
        """Score the last `count` sample transactions again as new payments of the last hour.

        Each gets a new id (`prefix-0`, ...) and a timestamp in the last `count` x 10 s, and
        the batch is split across the replicas. Returns when every payment is in the prediction
        log, so `materialize("drift_job")` (or `monitoring_job`) reports on them next.
        """
        import httpx
        import pandas as pd
        import sqlalchemy as sa

        fields = [
            "user_id",
            "merchant_id",
            "merchant_category",
            "amount",
            "currency",
            "device_id",
            "device_type",
            "channel",
            "country",
        ]
        source = pd.read_parquet(self.home / "raw" / "synthetic.parquet", columns=fields)
        now = time.time()
        payments = []
        for i, row in enumerate(source.tail(count).to_dict("records")):
            at = time.gmtime(now - 10 * (count - i))
            payments.append(
                {
                    **{k: float(v) if k == "amount" else str(v) for k, v in row.items()},
                    "transaction_id": f"{prefix}-{i}",
                    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", at),
                }
            )
        urls = self.scoring_urls
        share = -(-len(payments) // len(urls))
        for n, url in enumerate(urls):
            batch = payments[n * share : (n + 1) * share]
            if not batch:
                continue
            answer = httpx.post(
                f"{url}/predict/batch",
                json={"transactions": batch},
                headers={"X-API-Key": api_key},
                timeout=300,
            )
            if answer.status_code != 200:
                raise StackError(f"{url} refused the batch: {answer.status_code} {answer.text}")
        ids = [p["transaction_id"] for p in payments]
        engine = sa.create_engine(self.platform_db_url)
        query = sa.text("SELECT count(*) FROM prediction_log WHERE transaction_id LIKE :prefix")
        try:
            deadline = time.monotonic() + 60
            while True:
                with engine.connect() as conn:
                    logged = conn.execute(query, {"prefix": f"{prefix}-%"}).scalar()
                if logged >= len(ids) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        finally:
            engine.dispose()
        if logged < len(ids):
            raise StackError(f"only {logged} of {len(ids)} replayed payments were logged")
        return ids

    def _sample_data(self, rows: int, start: str | None = None) -> tuple[str, str, int]:
        import pandas as pd

        from fraud_assets.core.synthetic import SyntheticConfig, generate, write

        source = self.home / "raw" / "synthetic.parquet"
        if source.exists():
            frame = pd.read_parquet(source, columns=["timestamp"])
        else:
            # Sixty days ending yesterday, so the monitoring windows and the service's
            # "not in the future" rule line up with the wall clock.
            start = start or time.strftime("%Y-%m-%d", time.gmtime(time.time() - 61 * 86400))
            frame = generate(SyntheticConfig(n_transactions=rows, start=start, days=60))
            write(frame, source)
        ts = frame["timestamp"]
        return ts.min().strftime("%Y-%m-%d"), ts.max().strftime("%Y-%m-%d"), len(frame)

    def _password(self, create: bool = False) -> str:
        """The PostgreSQL password, generated on the first `up` and kept in the stack folder."""
        secret = self.root / "secrets" / "postgres_password"
        if not secret.exists():
            if not create:
                return ""
            secret.parent.mkdir(parents=True, exist_ok=True)
            secret.parent.chmod(0o700)
            secret.write_text(secrets.token_urlsafe(24))
            secret.chmod(0o600)
        return secret.read_text().strip()

    def _load_state(self) -> dict[str, Any] | None:
        if self.state_file.exists():
            return json.loads(self.state_file.read_text())
        return None

    def _base_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k != "PROMETHEUS_MULTIPROC_DIR" and not k.startswith("BENTOML_")
        }
        env.update(self.client_env())
        env.update(self.env)
        env.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
        return env

    def _prepare(self) -> None:
        self._password(create=True)
        for sub in ("redis", "mlflow/artifacts", "logs", "run", "home", "dagster"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # PostgreSQL runs as the postgres user, which must be able to enter the folder.
            self.root.chmod(0o755)
        if not self.state_file.exists():
            self.state_file.write_text(json.dumps({"ports": asdict(self.p)}, indent=2) + "\n")
        from fraud_pipelines.instance import write_dagster_home

        write_dagster_home(self.dagster_home, self._base_env())
        (self.dagster_home / "workspace.yaml").write_text(
            "# Written by fraud_pipelines.stack: the code location is a separate gRPC server.\n"
            "load_from:\n"
            "  - grpc_server:\n"
            "      host: 127.0.0.1\n"
            f"      port: {self.p.code_server}\n"
            f"      location_name: {LOCATION_NAME}\n"
        )
        dataset = self.home / "dataset.yaml"
        if not dataset.exists():
            dataset.write_text(
                "# The stack's sample data, generated by `python -m fraud_pipelines.stack seed`.\n"
                "name: synthetic\npath: raw/synthetic.parquet\nformat: parquet\n"
            )

    def _as_postgres(self, argv: Sequence[str]) -> list[str]:
        """initdb and the server refuse to run as root; run them as the postgres user."""
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return list(argv)

    def _pg_ctl(self, *args: str) -> None:
        data = self.root / "postgres" / "data"
        argv = self._as_postgres([pg_binary("pg_ctl"), "-D", str(data), *args])
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise StackError(f"pg_ctl {args[0]} failed: {done.stderr.strip() or done.stdout}")

    def _start_postgres(self) -> None:
        pg_dir = self.root / "postgres"
        data = pg_dir / "data"
        pg_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(pg_dir, "postgres", "postgres")
        if not (data / "PG_VERSION").exists():
            pwfile = pg_dir / "pwfile"
            pwfile.write_text(self._password() + "\n")
            if os.geteuid() == 0:
                shutil.chown(pwfile, "postgres", "postgres")
            pwfile.chmod(0o600)
            argv = [
                pg_binary("initdb"),
                "-D",
                str(data),
                "-U",
                DB_USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
            ]
            done = subprocess.run(
                self._as_postgres(argv), capture_output=True, text=True, check=False
            )
            pwfile.unlink()
            if done.returncode != 0:
                raise StackError(
                    f"initdb failed: {done.stderr.strip()} (the postgres user must be able to "
                    f"reach {pg_dir}: every parent folder needs o+x)"
                )
            with (data / "postgresql.conf").open("a") as conf:
                # TCP on loopback only; no Unix socket, so no shared /var/run directory.
                conf.write(
                    "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
                    "max_connections = 200\n"
                )
        if self._postgres_pid() is None:
            self._pg_ctl(
                "start",
                "-w",
                "-t",
                "120",
                "-l",
                str(pg_dir / "postgres.log"),
                "-o",
                f"-p {self.p.postgres}",
            )

    def stop_postgres(self) -> None:
        """Stop PostgreSQL alone (`pg_ctl stop -m fast`), as an outage does; the rest runs on."""
        self._pg_ctl("stop", "-m", "fast", "-w", "-t", "60")

    def start_postgres(self) -> None:
        """Start PostgreSQL again on its data and port (after `stop_postgres`)."""
        self._start_postgres()

    def _postgres_pid(self) -> int | None:
        pidfile = self.root / "postgres" / "data" / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _start_time(pid) is not None else None

    def _create_databases(self) -> None:
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1",
            port=self.p.postgres,
            user=DB_USER,
            password=self._password(),
            dbname="postgres",
        )
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                for name in DATABASES:
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                    if cur.fetchone() is None:
                        cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        """Time a phase: added to `timings` and printed to stderr."""
        started = time.monotonic()
        try:
            yield
        finally:
            took = time.monotonic() - started
            self.timings[name] = self.timings.get(name, 0.0) + took
            print(f"stack {self.root.name}: {name} {took:.1f} s", file=sys.stderr, flush=True)

    def _pidfile(self, name: str) -> Path:
        return self.root / "run" / f"{name}.pid"

    def _pid(self, name: str) -> int | None:
        """The running process of a component, or None."""
        proc = self._procs.get(name)
        if proc is not None:
            return proc.pid if proc.poll() is None else None
        try:
            pid_text, started = self._pidfile(name).read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        return pid if _start_time(pid) == started else None

    def _start(self, comp: Component) -> None:
        if self._pid(comp.name) is not None:
            return
        if comp.port is not None and _port_open(comp.port):
            raise StackError(f"{comp.name}: port {comp.port} is taken by another process")
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{comp.name}.log").open("ab") as log:
            proc = subprocess.Popen(
                comp.argv,
                cwd=comp.cwd,
                env=comp.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._procs[comp.name] = proc
        self._started[comp.name] = time.monotonic()
        self._pidfile(comp.name).write_text(f"{proc.pid} {_start_time(proc.pid)}\n")

    def _wait(self, names: Sequence[str], deadline: float) -> None:
        ports = {c.name: c.port for c in self.components()}
        pending = list(names)
        last_tried: dict[str, float] = {}
        while pending:
            for name in list(pending):
                if self._pid(name) is None:
                    tail = _tail(self.logs / f"{name}.log")
                    raise StackError(f"{name} exited during start:\n{tail}")
                port = ports.get(name)
                if port is not None and not _port_open(port):
                    continue
                # The Dagster checks start a Python program each: they run once a cheap probe
                # says they can pass, and not more than every 5 s.
                slow = name in ("user-code", "dagster-daemon")
                if slow and not self._worth_checking(name):
                    continue
                if slow and time.monotonic() - last_tried.get(name, 0.0) < 5.0:
                    continue
                last_tried[name] = time.monotonic()
                if self.healthy(name):
                    pending.remove(name)
                    if name in self._started:
                        took = time.monotonic() - self._started[name]
                        self.timings[f"healthy: {name}"] = took
                        print(
                            f"stack {self.root.name}: {name} healthy after {took:.1f} s",
                            file=sys.stderr,
                            flush=True,
                        )
            if pending:
                if time.monotonic() > deadline:
                    raise StackError(f"not healthy in time: {', '.join(pending)} ({self.logs})")
                time.sleep(1.0)

    def _worth_checking(self, name: str) -> bool:
        """In-process probes that pass before the component's own healthcheck can: the code
        server answers gRPC health checks as SERVING, the daemon has written a heartbeat since
        it started (the liveness check also accepts heartbeats up to 30 minutes old, from
        before a restart). A daemon this object did not start is left to its own check."""
        if name == "user-code":
            return _grpc_serving(self.p.code_server)
        started = self._started.get(name)
        if name == "dagster-daemon" and started is not None:
            return self._daemon_heartbeat_since(time.time() - (time.monotonic() - started))
        return True

    def _daemon_heartbeat_since(self, since: float) -> bool:
        import psycopg2

        try:
            conn = psycopg2.connect(
                host="127.0.0.1",
                port=self.p.postgres,
                user=DB_USER,
                password=self._password(),
                dbname="dagster",
                connect_timeout=5,
            )
        except psycopg2.Error:
            return False
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT body FROM daemon_heartbeats")
                bodies = [row[0] for row in cur.fetchall()]
        except psycopg2.Error:
            return False
        finally:
            conn.close()
        for body in bodies:
            try:
                if float(json.loads(body).get("timestamp", 0.0)) >= since:
                    return True
            except (ValueError, TypeError, AttributeError):
                continue
        return False

    def _signal(self, name: str, sig: signal.Signals) -> None:
        pid = self._pid(name)
        if pid is not None:
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                pass

    def _reap(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._pid(name) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        if self._pid(name) is not None:
            self._signal(name, signal.SIGKILL)
            time.sleep(0.5)
        self._procs.pop(name, None)
        self._pidfile(name).unlink(missing_ok=True)


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def pg_binary(name: str) -> str:
    """A PostgreSQL program: FRAUD_PG_BIN, then the usual install folders, then PATH."""
    folders = [os.environ.get("FRAUD_PG_BIN", ""), *PG_BIN_DIRS]
    for folder in filter(None, folders):
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise StackError(f"{name} not found: install PostgreSQL 15 or set FRAUD_PG_BIN")
    return found


def ensure_redis_server() -> str:
    """redis-server, installed from the Debian packages when missing (needs root)."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which("redis-server")
    if not found:
        raise StackError("redis-server not found: apt-get install -y redis-server")
    return found


def _print_status(stack: Stack) -> bool:
    report = stack.status()
    print(f"stack in {stack.root}")
    for name, row in report.items():
        state = "healthy" if row["healthy"] else ("running" if row["pid"] else "stopped")
        print(f"  {name:18s} {state:8s} {row['address']:28s} pid {row['pid'] or '-'}")
    return all(row["healthy"] for row in report.values())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fraud_pipelines.stack", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get("FRAUD_STACK_DIR", DEFAULT_ROOT)),
        help="the stack's directory (default .fraud/stack, or FRAUD_STACK_DIR)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start every component, or restart on existing data")
    seed = sub.add_parser("seed", help="sample data, materialize the graph, create an API key")
    seed.add_argument("--rows", type=int, default=200_000)
    seed.add_argument("--start", help="first day of the sample (default: 61 days ago)")
    seed.add_argument(
        "--model-config",
        type=json.loads,
        help='the fraud_model asset\'s config as JSON, e.g. \'{"baselines": {"fpr": "<= 0.04"}}\'',
    )
    sub.add_parser("status", help="every component's address and health")
    sub.add_parser("env", help="print export lines for a shell")
    sub.add_parser("down", help="stop every component; the data stays")
    check = sub.add_parser("probe", help="exit 0 when GET URL answers 200 (healthchecks)")
    check.add_argument("url")
    args = parser.parse_args(argv)
    if args.command == "probe":
        return 0 if probe(args.url) else 1
    stack = Stack(args.root)
    if args.command == "up":
        stack.up()
        _print_status(stack)
        print(f"\nDagster  {stack.dagster_url}\nMLflow   {stack.mlflow_url}")
        for url in stack.scoring_urls:
            print(f"Scoring  {url}  (docs at {url}/docs)")
        return 0
    if args.command == "seed":
        result = stack.seed(args.rows, model_config=args.model_config, start=args.start)
        print(f"materialized {result.first_day}..{result.last_day} ({result.rows:,} rows)")
        print(f"run {result.run_id}\nAPI key {result.api_key}  (header X-API-Key)")
        return 0
    if args.command == "status":
        return 0 if _print_status(stack) else 1
    if args.command == "env":
        for key, value in stack.client_env().items():
            print(f"export {key}={value}")
        return 0
    stack.down()
    print("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
