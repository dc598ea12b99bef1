"""The Bento: `scripts/build_bento.sh` builds one that carries every module the service needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_bento_builds_with_every_module_the_service_imports(tmp_path: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "1"}
    subprocess.run([str(ROOT / "scripts" / "build_bento.sh")], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=600)  # fmt: skip
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "bentoml"), "list", "-o", "json"],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    tags = [b["tag"] for b in json.loads(listed.stdout)]
    assert len(tags) == 1 and tags[0].startswith("fraud_scorer:"), tags
    bento = tmp_path / "bentoml" / "bentos" / "fraud_scorer" / tags[0].split(":")[1]
    assert (bento / "env" / "docker" / "Dockerfile").is_file()
    src = bento / "src"
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    for package in ("bentoml==", "onnxruntime==", "xgboost-cpu==", "redis==", "sqlalchemy=="):
        assert package in requirements.lower(), package
    # Import the service from the Bento's own sources only (the repo is not on the path)
    # and list which first-party modules it loaded from where.
    probe = (
        "import sys, serving.service, json;"
        "print(json.dumps({n: getattr(m, '__file__', '') for n, m in sys.modules.items()"
        " if n.split('.')[0] in ('serving', 'fraud_assets', 'fraud_pipelines')}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(src), "PYTHONSAFEPATH": "1"},
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    modules = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert "serving.engine" in modules
    outside = {n: f for n, f in modules.items() if f and not f.startswith(str(src))}
    assert not outside, f"loaded from outside the Bento: {outside}"
