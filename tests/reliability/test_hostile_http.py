"""Hand-made hostile requests against one real `bentoml serve` process.

Each request gets a prompt answer below 500 (a 4xx for everything the API cannot accept),
and afterwards the service is still healthy: /healthz answers and a valid payment scores.
A slow-loris body is cut off with 408 within the gateway's body deadline while other
clients keep being served.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from serving_world import ModelWorld
from test_prediction_spool import record_figure

from fraud_pipelines.process import bentoml_serve_command, free_port, running_server
from serving.gateway import BODY_TIMEOUT_SECONDS

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 240.0
PROMPT_SECONDS = 15.0
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("hostile_http")]


class Server:
    """A running `bentoml serve` with a valid key."""

    def __init__(self, base: str, key: str, world: ModelWorld, log: Path) -> None:
        self.base = base
        self.key = key
        self.world = world
        self.log = log
        self.client = httpx.Client(base_url=base, timeout=60.0)
        self.counter = 0

    def payment(self, **overrides: Any) -> dict[str, Any]:
        self.counter += 1
        row = self.world.history.iloc[-1 - self.counter % 300]
        stamp = self.world.history["timestamp"].max() + pd.Timedelta(seconds=self.counter)
        return {
            "transaction_id": f"hostile-{time.time_ns()}-{self.counter}",
            "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "user_id": row["user_id"],
            "merchant_id": row["merchant_id"],
            "amount": 42.0,
            "currency": "EUR",
            **overrides,
        }

    def post_raw(self, path: str, content: bytes) -> httpx.Response:
        return self.client.post(
            path,
            content=content,
            headers={"X-API-Key": self.key, "content-type": "application/json"},
        )

    def assert_healthy(self) -> None:
        assert self.client.get("/healthz").status_code == 200
        scored = self.client.post("/predict", json=self.payment(), headers={"X-API-Key": self.key})
        assert scored.status_code == 200, scored.text


@pytest.fixture(scope="module")
def server(model_world: ModelWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("hostile")
    home = root / "home"
    home.mkdir()
    env = model_world.process_env(
        home,
        FRAUD_PLATFORM_DB_URL=f"sqlite:///{home / 'platform.db'}",
        FRAUD_SERVING_WORKERS="1",
        FRAUD_RATE_LIMIT_PER_MIN="100000",
        FRAUD_ACCESS_LOG="1",
    )
    key = subprocess.run(
        [sys.executable, "-m", "serving.keys", "create", "hostile"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    port = free_port()
    log_path = root / "serve.log"
    base = f"http://127.0.0.1:{port}"
    with running_server(
        bentoml_serve_command(port), env, f"{base}/readyz", log_path, START_TIMEOUT, cwd=REPO
    ) as proc:
        running = Server(base, key, model_world, log_path)
        try:
            yield running
            assert proc.poll() is None, "the server died during the hostile requests"
        finally:
            running.client.close()


def _timed(call: Any) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = call()
    return response, time.perf_counter() - started


def _expect(
    server: Server, name: str, response: httpx.Response, seconds: float, status: int
) -> None:
    assert response.status_code == status, (name, response.status_code, response.text[:500])
    if status >= 400:
        assert set(response.json()) == {"error"}
    assert seconds < PROMPT_SECONDS, (name, seconds)
    server.assert_healthy()
    record_figure("hostile", case=name, status=response.status_code, seconds=round(seconds, 3))


def test_ten_megabyte_bodies(server: Server) -> None:
    """10 MB of JSON: a 10 MB id is a field error, a 17 MB body is refused before parsing."""
    big_id = json.dumps(server.payment(transaction_id="x" * 10_000_000)).encode()
    response, seconds = _timed(lambda: server.post_raw("/predict", big_id))
    _expect(server, "10 MB transaction_id", response, seconds, 422)
    junk = b"[" + b"1," * 5_000_000 + b"1]"
    response, seconds = _timed(lambda: server.post_raw("/predict/batch", junk))
    _expect(server, "10 MB array body", response, seconds, 422)
    huge = b'{"transactions": "' + b"y" * (17 * 1024 * 1024) + b'"}'
    response, seconds = _timed(lambda: server.post_raw("/predict/batch", huge))
    _expect(server, "17 MB body", response, seconds, 413)


def test_deeply_nested_json(server: Server) -> None:
    """100,000 levels of nesting are refused without a recursion crash."""
    for name, body in {
        "nested arrays": b"[" * 100_000 + b"]" * 100_000,
        "nested objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        "nested in a field": json.dumps(server.payment())[:-1].encode()
        + b', "user_id": '
        + b"[" * 50_000
        + b"]" * 50_000
        + b"}",
    }.items():
        response, seconds = _timed(lambda body=body: server.post_raw("/predict", body))
        assert response.status_code in (400, 422), (name, response.text[:300])
        _expect(server, name, response, seconds, response.status_code)


@pytest.mark.parametrize(
    ("name", "value", "status"),
    [
        ("NUL byte", "t\u0000x", 422),
        ("escape sequence", "\u001b[31mred", 422),
        ("C1 control", "t\u0085x", 422),
        ("DEL", "t\u007f", 422),
        ("right-to-left override", "t\u202etxt.exe", 200),
        ("emoji and CJK", "支付-💳-ü", 200),
        ("zero-width joiner", "a\u200db", 200),
    ],
)
def test_unicode_and_control_characters_in_ids(
    server: Server, name: str, value: str, status: int
) -> None:
    """Control characters are field errors; other unicode is an ordinary id."""
    response, seconds = _timed(
        lambda: server.client.post(
            "/predict",
            json=server.payment(transaction_id=f"{value}-{time.time_ns()}", user_id=value),
            headers={"X-API-Key": server.key},
        )
    )
    _expect(server, f"id with {name}", response, seconds, status)
    if status == 422:
        fields = {d["field"] for d in response.json()["error"]["details"]}
        assert fields == {"transaction_id", "user_id"}


def test_lone_surrogate_in_an_id(server: Server) -> None:
    """A JSON escape of half a UTF-16 pair cannot be a string: a 4xx, not a crash."""
    body = json.dumps(server.payment()).replace('"EUR"', '"EUR", "device_id": "\\ud800"')
    response, seconds = _timed(lambda: server.post_raw("/predict", body.encode()))
    assert 400 <= response.status_code < 500, response.text
    _expect(server, "lone surrogate", response, seconds, response.status_code)


@pytest.mark.parametrize(
    ("name", "literal", "status"),
    [
        ("1e308", "1e308", 422),
        ("NaN", "NaN", 422),
        ("Infinity", "Infinity", 422),
        ("1e309 (overflows to infinity)", "1e309", 422),
        # -0 is the number zero: a zero-amount payment is valid and scored.
        ("negative zero", "-0.0", 200),
    ],
)
def test_extreme_amounts(server: Server, name: str, literal: str, status: int) -> None:
    """Amounts beyond 10,000,000 or not finite are field errors naming `amount`."""
    body = json.dumps(server.payment(amount=123.25)).replace("123.25", literal).encode()
    response, seconds = _timed(lambda: server.post_raw("/predict", body))
    _expect(server, f"amount {name}", response, seconds, status)
    if status == 422:
        assert [d["field"] for d in response.json()["error"]["details"]] == ["amount"]


def test_batch_of_10001(server: Server) -> None:
    """One payment over the batch limit is refused before anything is scored."""
    one = server.payment()
    body = {"transactions": [{**one, "transaction_id": f"b-{i}"} for i in range(10_001)]}
    response, seconds = _timed(
        lambda: server.client.post("/predict/batch", json=body, headers={"X-API-Key": server.key})
    )
    _expect(server, "10,001-item batch", response, seconds, 422)
    assert response.json()["error"]["details"][0]["field"] == "transactions"


def test_slow_loris_body_is_cut_off_and_others_are_served(server: Server) -> None:
    """A body sent a byte at a time gets 408 within the body deadline; meanwhile a normal
    client keeps scoring."""
    host, port = server.base.removeprefix("http://").split(":")
    body = json.dumps(server.payment()).encode()
    sock = socket.create_connection((host, int(port)), timeout=BODY_TIMEOUT_SECONDS + 20)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {server.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head)
    answer = bytearray()
    stop = threading.Event()
    served: list[int] = []

    def other_client() -> None:
        with httpx.Client(base_url=server.base, timeout=10.0) as client:
            while not stop.is_set():
                response = client.post(
                    "/predict", json=server.payment(), headers={"X-API-Key": server.key}
                )
                served.append(response.status_code)
                time.sleep(0.2)

    neighbour = threading.Thread(target=other_client)
    neighbour.start()
    started = time.perf_counter()
    try:
        sock.settimeout(0.5)
        for byte in body:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer:
                break
            if time.perf_counter() - started > BODY_TIMEOUT_SECONDS + 20:
                break
    finally:
        seconds = time.perf_counter() - started
        stop.set()
        neighbour.join(30)
        sock.close()
    status_line = bytes(answer).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 408"), bytes(answer)[:300]
    assert seconds < BODY_TIMEOUT_SECONDS + 5
    assert served and set(served) == {200}, served
    server.assert_healthy()
    record_figure(
        "hostile",
        case="slow loris (1 byte / 0.5 s)",
        status=408,
        seconds=round(seconds, 2),
        others_served=len(served),
    )


def test_server_log_holds_no_key_and_no_raw_protected_attribute(server: Server) -> None:
    """After all the hostile traffic (run last): the server's own log, access log included,
    never shows the API key, a wrong key, the gender sent or the exact age."""
    prefix, key_id, secret = server.key.split("_")
    wrong = f"{prefix}_{key_id}_{secret[::-1]}"
    marker = "Gq4-protected-gender"
    for key in (server.key, wrong):
        for body in (
            server.payment(gender=marker, age=41.375),
            {**server.payment(gender=marker, age=41.375), "amount": "NaN"},
        ):
            server.client.post("/predict", json=body, headers={"X-API-Key": key})
    server.client.post(
        "/predict",
        json=server.payment(gender=marker * 3, age=200.375),
        headers={"X-API-Key": wrong},
    )
    time.sleep(1.0)
    text = server.log.read_text(errors="replace")
    assert "path=/predict" in text, "the access log is not in the captured output"
    assert "path=/readyz" in text, "the gateway's own routes are missing from the access log"
    for value in (server.key, secret, wrong, marker, "41.375", "200.375"):
        assert value not in text, value
