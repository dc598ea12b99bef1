"""Fixtures of the scoring service tests (see serving_world for the model world)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pandas as pd
import pytest
from serving_world import ModelWorld, build_model_world, synthetic_history

from fraud_pipelines.process import free_port

# BentoML serves /metrics from Prometheus' multi-process files; in-process test apps need the
# folder set before prometheus_client is first imported.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="fraud-prom-"))


@pytest.fixture(scope="session")
def history() -> pd.DataFrame:
    """The shared 20-day synthetic history (read-only; copy before changing it)."""
    return synthetic_history()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port (skipped if not installed)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.time() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def model_world(tmp_path_factory: pytest.TempPathFactory) -> ModelWorld:
    """A temporary platform with a registered champion (session-wide; versions accumulate)."""
    return build_model_world(tmp_path_factory.mktemp("model_world"))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No FRAUD_* / MLflow variables leak in from the developer's shell."""
    for name in list(os.environ):
        if name.startswith(("FRAUD_", "MLFLOW_TRACKING_URI")):
            monkeypatch.delenv(name, raising=False)
    return monkeypatch
