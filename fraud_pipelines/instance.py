"""Which Dagster instance a process runs on: embedded SQLite, or PostgreSQL when configured.

The repository's `dagster.yaml` holds the queue, concurrency, retry and telemetry settings
of every deployment. `write_dagster_home` copies it into DAGSTER_HOME and, when
`DAGSTER_PG_HOST` is set, adds the PostgreSQL `storage` section of `docker/dagster.yaml`, whose
values are read from the `DAGSTER_PG_*` variables when Dagster starts. Without those
variables the instance stays on SQLite files under DAGSTER_HOME, which is what the quick start
and the test suite use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from fraud_pipelines.settings import REPO_ROOT

POSTGRES_VARIABLES = (
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USER",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
)
BASE_FILE = REPO_ROOT / "dagster.yaml"
COMPOSE_FILE = REPO_ROOT / "docker" / "dagster.yaml"


def uses_postgres(env: Mapping[str, str]) -> bool:
    """True when the environment names a PostgreSQL server for Dagster's storage."""
    return bool(env.get("DAGSTER_PG_HOST"))


def postgres_storage() -> dict[str, object]:
    """The `storage` section of the compose instance: PostgreSQL, every value from env."""
    return yaml.safe_load(COMPOSE_FILE.read_text())["storage"]


def instance_yaml(env: Mapping[str, str]) -> str:
    """The dagster.yaml for a process with this environment.

    Raises ValueError when DAGSTER_PG_HOST is set but another DAGSTER_PG_* variable is not,
    because Dagster would otherwise fail later with a less helpful message.
    """
    base = BASE_FILE.read_text()
    if not uses_postgres(env):
        return base
    missing = [name for name in POSTGRES_VARIABLES if not env.get(name)]
    if missing:
        raise ValueError(f"DAGSTER_PG_HOST is set but {', '.join(missing)} is not")
    storage = yaml.safe_dump({"storage": postgres_storage()}, sort_keys=False)
    return (
        f"{base}\n# DAGSTER_PG_HOST is set: storage in PostgreSQL (from docker/dagster.yaml).\n"
        f"{storage}"
    )


def write_dagster_home(home: Path, env: Mapping[str, str] | None = None) -> Path:
    """Write DAGSTER_HOME/dagster.yaml for this environment and return the file."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    target.write_text(instance_yaml(os.environ if env is None else env))
    return target
