"""Security checks: no unpickling on the serving path, no committed secrets, and no API
key or raw protected attribute in any log line."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from serving_world import ModelWorld
from test_service import running, transaction, wait_for

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import scan_secrets  # noqa: E402

GENDER_MARKER = "Gx7-protected-gender"
AGE_MARKER = 37.625


def test_serving_never_unpickles(model_world: ModelWorld, tmp_path: Path) -> None:
    """Import the service and load and use the champion with pickle.load/loads/Unpickler,
    joblib/cloudpickle/dill/torch loaders and numpy.load(allow_pickle=True) all raising."""
    home = tmp_path / "home"
    home.mkdir()
    env = model_world.process_env(
        home, FRAUD_PLATFORM_DB_URL=f"sqlite:///{home / 'platform.db'}", PYTHONPATH=str(REPO)
    )
    payment = transaction(model_world, 1)
    done = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "no_unpickle_probe.py"), json.dumps(payment)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["attempts"] == []
    assert {"pickle.loads", "pickle.Unpickler", "numpy.load(allow_pickle=True)"} <= set(
        report["guarded"]
    )
    assert 0.0 <= report["score"] <= 1.0 and report["explained"] == len(model_world.spec.features)


def test_secret_scan_passes_on_the_repository() -> None:
    """Every tracked file is clean (documented placeholders are allowlisted)."""
    assert scan_secrets.main(["--root", str(REPO)]) == 0


def _planted(*parts: str) -> str:
    """Glue a fake secret together at run time, so this file itself scans clean."""
    return "".join(parts)


PLANTED = {
    "id_rsa.txt": (
        _planted("-----BEGIN RSA ", "PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n"),
        "private key",
    ),
    "aws.py": (_planted('KEY = "AKIA', 'Z7QX4MBN2JDR5HTW"\n'), "AWS access key id"),
    "settings.py": (
        _planted("db_password = ", '"hunter2-but-longer"\n'),
        "password or token literal",
    ),
    "client.py": (
        _planted('headers = {"X-API-Key": "fsk_', 'a1b2c3d4e5f6_Zq8pX-k2Lr9vB4nT7wYc3mHs"}\n'),
        "fraud platform API key",
    ),
    "compose.yaml": (
        _planted("url: postgresql://fraud:", "S3cr3tPassw0rd@db:5432/fraud\n"),
        "credentials in URL",
    ),
    "deploy.env": (
        _planted("SIGNING_KEY=Jb7xQ2mZ9rT4v", "L8kW3nY6pF1sD5hG0cA\n"),
        "high-entropy value in config",
    ),
    "ci.yml": (
        _planted("token: ghp_", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z\n"),
        "private token prefix",
    ),
}


def test_secret_scan_catches_planted_secrets(tmp_path: Path) -> None:
    """Each planted secret is reported by its rule; placeholders are not."""
    paths = []
    for name, (text, _) in PLANTED.items():
        (tmp_path / name).write_text(text)
        paths.append(tmp_path / name)
    clean = tmp_path / "example.env"
    clean.write_text("FRAUD_API_TOKEN=<your token>\nPASSWORD=${DB_PASSWORD}\nSECRET=changeme\n")
    paths.append(clean)
    findings = scan_secrets.scan_files(paths, tmp_path, scan_secrets.load_allowlist())
    found = {(Path(f.path).name, f.rule) for f in findings}
    for name, (_, rule) in PLANTED.items():
        assert (name, rule) in found, (name, rule, found)
    assert not [f for f in findings if Path(f.path).name == "example.env"]
    assert all("S3cr3tPassw0rd" not in str(f) for f in findings), "findings must be redacted"
    assert scan_secrets.main(["--root", str(tmp_path), "--paths", *map(str, paths)]) == 1


def test_logs_hold_no_api_key_and_no_raw_protected_attribute(
    model_world: ModelWorld,
    tmp_path: Path,
    clean_env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Valid, wrong-key and malformed requests, with gender and age sent: no log line holds
    a full key, the gender value or the exact age, and the prediction log keeps a band."""
    caplog.set_level(logging.DEBUG)
    home = tmp_path / "home"
    with running(model_world, home, clean_env, FRAUD_ACCESS_LOG="1") as (client, headers):
        wait_for(client, lambda b: b["ready"])
        key = headers["X-API-Key"]
        prefix, key_id, secret = key.split("_")
        wrong = f"{prefix}_{key_id}_{secret[::-1]}"
        sensitive = {"gender": GENDER_MARKER[:32], "age": AGE_MARKER}
        requests = [
            (headers, transaction(model_world, 1, **sensitive)),
            ({"X-API-Key": wrong}, transaction(model_world, 2, **sensitive)),
            ({"X-API-Key": f"{key}x"}, transaction(model_world, 3, **sensitive)),
            (headers, {**transaction(model_world, 4, **sensitive), "amount": -1}),
            (headers, {**transaction(model_world, 5), "gender": GENDER_MARKER * 3}),
            (headers, {**transaction(model_world, 6, gender=GENDER_MARKER), "age": 151.625}),
            (headers, {**transaction(model_world, 7, **sensitive), "currency": "???"}),
        ]
        statuses = [
            client.post("/predict", json=body, headers=sent).status_code for sent, body in requests
        ]
        batch = [transaction(model_world, 10 + i, **sensitive) for i in range(3)]
        statuses.append(
            client.post("/predict/batch", json={"transactions": batch}, headers=headers).status_code
        )
        statuses.append(
            client.post(
                "/predict/explain", json=transaction(model_world, 20, **sensitive), headers=headers
            ).status_code
        )
        statuses.append(
            client.post(
                "/feedback",
                json={"prediction_id": str(uuid.uuid4()), "is_fraud": True},
                headers={"X-API-Key": wrong},
            ).status_code
        )
    assert statuses == [200, 401, 401, 422, 422, 422, 422, 200, 200, 401]
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert caplog.records, "nothing was logged: the capture is not working"
    for secret_value in (key, wrong, secret, f"{key}x"):
        assert secret_value not in text
    assert GENDER_MARKER[:12] not in text
    assert str(AGE_MARKER) not in text and "151.625" not in text
    engine = sa.create_engine(f"sqlite:///{home / 'platform.db'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM prediction_log")).mappings().all()
    engine.dispose()
    assert rows and {r["age_band"] for r in rows} == {"30-39"}
    dumped = json.dumps([dict(r) for r in rows], default=str)
    assert GENDER_MARKER[:12] not in dumped and str(AGE_MARKER) not in dumped
    assert key not in dumped and secret not in dumped
