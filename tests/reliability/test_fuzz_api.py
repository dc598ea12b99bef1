"""Schemathesis fuzzing of the scoring API against its own OpenAPI document, in-process.

Every operation of /docs.json is fuzzed with schema-valid (positive) and schema-violating
(negative) requests, with a valid API key, without one and with a wrong one. Each
response must be no 5xx, carry a status and content type the document declares, and
have a body and headers that conform to it. The rate limit is raised so fuzzing is not
answered with 429 only; a separate test checks that 429, 413, 415 and 405 conform too.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from serving_world import ModelWorld
from starlette.testclient import TestClient
from test_prediction_spool import record_figure
from test_service import running, transaction, wait_for

BASE_URL = "http://testserver"
MIN_CASES = 2000
# The case count adds up over this module's tests: they must share one process.
pytestmark = pytest.mark.xdist_group("fuzz_api")
WRONG_KEY = "fsk_000000000000_not-a-real-secret"
RESPONSE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
AUTHS = ("valid", "missing", "wrong")
# Generated inputs per operation and mode; each input is sent once per key variant.
# FRAUD_FUZZ_EXAMPLES scales a run down while iterating (the count test then skips).
EXAMPLES = int(os.environ.get("FRAUD_FUZZ_EXAMPLES", "300"))
BATCH_EXAMPLES = max(1, EXAMPLES * 2 // 5)
COUNTS: Counter[str] = Counter()


@pytest.fixture(scope="module")
def fuzz_service(
    model_world: ModelWorld, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """One in-process service with a rate limit fuzzing cannot reach."""
    with pytest.MonkeyPatch.context() as env:
        home = tmp_path_factory.mktemp("fuzz") / "home"
        with running(model_world, home, env, FRAUD_RATE_LIMIT_PER_MIN="100000000") as (
            client,
            headers,
        ):
            wait_for(client, lambda b: b["ready"])
            yield client, headers


@pytest.fixture(scope="module")
def api_schema(fuzz_service: tuple[TestClient, dict[str, str]]) -> Any:
    client, _ = fuzz_service
    document = client.get("/docs.json")
    assert document.status_code == 200
    return schemathesis.openapi.from_dict(document.json())


def send(client: TestClient, case: Any, headers: dict[str, str]) -> Any:
    """Send a generated case through the in-process client, exactly as serialized."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
    if "json" in kwargs:
        content: bytes | None = json.dumps(kwargs["json"]).encode()
    else:
        data = kwargs.get("data")
        content = data.encode() if isinstance(data, str) else data
    return client.request(
        kwargs["method"],
        kwargs["url"],
        headers=kwargs.get("headers"),
        params=kwargs.get("params"),
        content=content,
    )


def auth_headers(auth: str, valid: dict[str, str]) -> dict[str, str]:
    if auth == "valid":
        return dict(valid)
    if auth == "wrong":
        return {"X-API-Key": WRONG_KEY}
    return {}


def fuzz_operation(
    client: TestClient, operation: Any, mode: GenerationMode, valid: dict[str, str]
) -> Counter[tuple[str, int]]:
    """Generate inputs for one operation and send each with every key variant.

    Returns how often each (key variant, status) was seen.
    """
    statuses: Counter[tuple[str, int]] = Counter()
    checks = list(RESPONSE_CHECKS)
    if mode is GenerationMode.NEGATIVE:
        checks.append(negative_data_rejection)
    examples = BATCH_EXAMPLES if operation.path == "/predict/batch" else EXAMPLES

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        statuses[("generated", 0)] += 1
        for auth in AUTHS:
            headers = auth_headers(auth, valid)
            response = send(client, case, headers)
            statuses[(auth, response.status_code)] += 1
            case.validate_response(response, checks=checks, headers=headers)
            if auth != "valid" and operation.method.upper() == "POST":
                assert response.status_code == 401, response.text

    run()
    return statuses


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_fuzz_every_operation(
    api_schema: Any, fuzz_service: tuple[TestClient, dict[str, str]], mode: GenerationMode
) -> None:
    """No 5xx, no crash and only documented, schema-conforming responses for any input,
    with a valid key, without a key and with a wrong key."""
    client, valid = fuzz_service
    started = time.perf_counter()
    seen: Counter[tuple[str, int]] = Counter()
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/predict",
        "/predict/batch",
        "/predict/explain",
        "/feedback",
        "/readyz",
    }
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET":
            continue  # no parameters: nothing can violate their schema
        seen += fuzz_operation(client, operation, mode, valid)
    assert not [key for key in seen if key[1] >= 500], seen
    generated = seen.pop(("generated", 0))
    requests = sum(seen.values())
    COUNTS["generated"] += generated
    COUNTS["requests"] += requests
    record_figure(
        "fuzz",
        mode=mode.value,
        generated=generated,
        requests=requests,
        statuses={f"{a} {s}": n for (a, s), n in sorted(seen.items())},
        seconds=round(time.perf_counter() - started, 1),
    )


def test_fuzz_case_count() -> None:
    """The runs above generated at least 2,000 cases, each sent with the three key variants
    (this test runs after them, in file order)."""
    if not COUNTS or EXAMPLES < 300:
        pytest.skip("run with the full fuzzing tests")
    record_figure("fuzz_total", **COUNTS)
    assert COUNTS["generated"] >= MIN_CASES, COUNTS
    assert COUNTS["requests"] == 3 * COUNTS["generated"], COUNTS


def test_error_responses_conform_to_the_document(
    model_world: ModelWorld, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """429, 413, 415, 405, 401 and 422 bodies and headers match the documented error schema."""
    with running(model_world, tmp_path / "home", clean_env, FRAUD_RATE_LIMIT_PER_MIN="3") as (
        client,
        headers,
    ):
        wait_for(client, lambda b: b["ready"])
        schema = schemathesis.openapi.from_dict(client.get("/docs.json").json())
        predict = schema["/predict"]["POST"]
        checks = [c for c in RESPONSE_CHECKS if c is not not_a_server_error]

        def check(response: Any, status: int, body: Any) -> None:
            assert response.status_code == status, response.text
            case = predict.Case(body=body, media_type="application/json")
            case.validate_response(response, checks=checks)

        txn = transaction(model_world, 1)
        check(client.post("/predict", json={**txn, "amount": -1}, headers=headers), 422, txn)
        check(client.post("/predict", json=txn, headers={"X-API-Key": WRONG_KEY}), 401, txn)
        big = b'{"transaction_id": "' + b"x" * (17 * 1024 * 1024) + b'"}'
        check(
            client.post(
                "/predict", content=big, headers={**headers, "content-type": "application/json"}
            ),
            413,
            txn,
        )
        check(
            client.post(
                "/predict", content=b"a=1", headers={**headers, "content-type": "text/plain"}
            ),
            415,
            txn,
        )
        limited = client.post("/predict", json=txn, headers=headers)
        check(limited, 429, txn)
        assert int(limited.headers["retry-after"]) >= 1
