"""The service when its dependencies fail: Redis down, MLflow down, a corrupt model.

Real redis-server and real MLflow stores; nothing is mocked.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from serving_world import ModelWorld
from test_service import (
    _engine,
    champion_version,
    registry_checked,
    running,
    transaction,
    wait_for,
)

from fraud_assets.core.alerts import AlertStore
from fraud_assets.core.registry import CHAMPION, Registry
from fraud_pipelines.process import free_port
from serving.alerting import REGISTRY_UNREACHABLE, STORE_DOWN


class RedisProcess:
    """A redis-server on a fixed loopback port that can be stopped and started again."""

    def __init__(self, port: int, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
        self.cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                    "--save", "", "--appendonly", "yes", "--appendfsync", "always"]  # fmt: skip
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.time() + 20
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # as abrupt as a crash
        self.proc.wait(10)


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    process = RedisProcess(free_port(), tmp_path)
    process.start()
    yield process
    if process.proc is not None and process.proc.poll() is None:
        process.stop()


def test_redis_down_scores_degraded_and_catches_up(
    model_world: ModelWorld,
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    redis_process: RedisProcess,
) -> None:
    url = f"redis://127.0.0.1:{redis_process.port}/0"
    home = tmp_path / "home"
    user = "u-redis-outage"
    with running(model_world, home, clean_env, FRAUD_ONLINE_STORE_URL=url) as (client, headers):
        wait_for(client, lambda b: b["ready"])

        def pay(i: int) -> dict:
            body = transaction(model_world, i, user_id=user, device_id="dev-outage")
            response = client.post("/predict", json=body, headers=headers)
            assert response.status_code == 200, response.text
            return response.json()

        assert not pay(0)["degraded"]
        redis_process.stop()
        timings, answers = [], []
        for i in range(1, 31):
            began = time.perf_counter()
            answers.append(pay(i))
            timings.append(time.perf_counter() - began)
        assert all(a["degraded"] for a in answers)
        # One request may wait for the store's timeout (250 ms); the rest skip the store.
        timings.sort()
        assert timings[-2] < 0.25, timings[-5:]
        body = client.get("/readyz").json()
        assert body["ready"] and body["online_store"].startswith("degraded")
        alerts = AlertStore(f"sqlite:///{home / 'platform.db'}").list()
        assert [a.fingerprint for a in alerts if a.status == "open"].count(STORE_DOWN) == 1

        redis_process.start()
        wait_for(client, lambda b: b["online_store"] == "ok")
        engine = _engine()
        assert engine.store.caught_up == 30 and not engine.store.pending
        # The history now holds all 31 payments: the next one sees 31 prior ones.
        explain = client.post(
            "/predict/explain",
            json=transaction(model_world, 40, user_id=user, device_id="dev-outage"),
            headers=headers,
        ).json()
        seen = {c["feature"]: c["value"] for c in explain["contributions"]}
        assert seen["user_txn_count_7d"] == 31.0
        assert seen["is_new_device"] == 0.0
        resolved = AlertStore(f"sqlite:///{home / 'platform.db'}").list(status="resolved")
        assert any(a.fingerprint == STORE_DOWN for a in resolved)


def test_registry_outage_and_refused_model_raise_alerts(
    model_world: ModelWorld, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    db = f"sqlite:///{home / 'platform.db'}"
    with running(model_world, home, clean_env) as (client, headers):
        wait_for(client, lambda b: b["ready"] and registry_checked(b))
        good = champion_version(model_world)
        bad = model_world.register(tamper=True)
        try:
            wait_for(client, lambda b: bad in b.get("refused_versions", {}))
            response = client.post("/predict", json=transaction(model_world, 50), headers=headers)
            assert response.json()["model_version"] == good
        finally:
            Registry(model_world.tracking_uri, "fraud_detector", model_world.platform_db_url)\
                .set_alias(CHAMPION, good, "undo corrupt test", "pytest")  # fmt: skip
        refused = [a for a in AlertStore(db).list() if f"v{bad} refused" in a.title]
        assert len(refused) == 1 and refused[0].severity == "CRITICAL"
        assert refused[0].type == "PIPELINE" and "sha256" in refused[0].details["message"]

    unreachable = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    with running(model_world, home, clean_env, **unreachable) as (client, headers):
        wait_for(client, registry_checked)
        response = client.post("/predict", json=transaction(model_world, 51), headers=headers)
        assert response.status_code == 200 and response.json()["model_version"] == good
        # The poller's first failure raises the alert (written off the request path).
        deadline = time.time() + 30
        while time.time() < deadline:
            active = [a for a in AlertStore(db).list() if a.fingerprint == REGISTRY_UNREACHABLE]
            if active:
                break
            time.sleep(0.2)
        assert len(active) == 1 and active[0].severity == "WARNING"
        assert f"still serving v{good}" in active[0].title
