"""Fixtures of the reliability tests: a real PostgreSQL 15 on loopback and a model world."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))

from pg_server import PG_BIN, Postgres, remove_postgres, start_postgres
from serving_world import ModelWorld, build_model_world

from fraud_pipelines.process import free_port

os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="fraud-prom-"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """PostgreSQL 15 from /usr/local/bin on a free loopback port (skipped if not installed)."""
    if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed in /usr/local/bin")
    server = start_postgres(free_port())
    try:
        yield server
    finally:
        remove_postgres(server)


@pytest.fixture(scope="session")
def model_world(tmp_path_factory: pytest.TempPathFactory) -> ModelWorld:
    """A temporary platform with a registered champion."""
    return build_model_world(tmp_path_factory.mktemp("reliability_world"))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No FRAUD_* / MLflow variables leak in from the developer's shell."""
    for name in list(os.environ):
        if name.startswith(("FRAUD_", "MLFLOW_TRACKING_URI")):
            monkeypatch.delenv(name, raising=False)
    return monkeypatch
