"""Shared fixtures: a temporary platform (data, Dagster instance, MLflow store) per session,
and the native production stack (PostgreSQL, Redis, MLflow server, Dagster, two scoring
replicas) shared by tests/stack and tests/reliability."""

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fraud_pipelines.sandbox import Platform, make_platform
from fraud_pipelines.stack import Ports, SeedResult, Stack, StackError, pg_binary

ROWS = 25_000
# 25k rows leave a few dozen frauds in the test window: the bars of tests/test_assets.py's
# small platform, not production's. Early stopping ends training near 60 trees on this data.
SMALL_DATA_MODEL = {
    "baselines": {"average_precision": ">= 0.2", "auc_roc": ">= 0.75"},
    "n_estimators": 60,
}
# The load tests send thousands of requests a minute with one key; rate limiting has its own
# tests (tests/serving), here it must not turn load into 429s.
LOAD_RATE_LIMIT = "100000000"

__all__ = ["Platform", "make_platform"]


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    yield make_platform(tmp_path_factory.mktemp("platform"))


def _missing_binaries() -> str | None:
    try:
        for name in ("initdb", "pg_ctl"):
            pg_binary(name)
    except StackError as exc:
        return str(exc)
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser is needed to run PostgreSQL as the postgres user"
    can_install = os.geteuid() == 0 and shutil.which("apt-get") is not None
    if shutil.which("redis-server") is None and not can_install:
        return "redis-server is not installed (apt-get install -y redis-server)"
    return None


@pytest.fixture(scope="session")
def native_stack() -> Iterator[tuple[Stack, SeedResult]]:
    """A seeded stack on free ports, in a folder the postgres user can reach."""
    missing = _missing_binaries()
    if missing:
        pytest.skip(missing)
    root = Path(tempfile.mkdtemp(prefix="fraud-stack-"))
    root.chmod(0o755)
    stack = Stack(
        root / "stack",
        Ports.free(),
        env={"FRAUD_MODEL_POLL_SECONDS": "2", "FRAUD_RATE_LIMIT_PER_MIN": LOAD_RATE_LIMIT},
    )
    try:
        stack.up()
        result = stack.seed(ROWS, model_config=SMALL_DATA_MODEL)
        stack.wait_ready(timeout=300)
        yield stack, result
    finally:
        try:
            stack.down()
        finally:
            shutil.rmtree(root, ignore_errors=True)
            _save_timings(stack.timings)


def _save_timings(timings: dict[str, float]) -> None:
    """The stack's phase durations, for a person reading a slow CI run."""
    out = Path(os.environ.get("FRAUD_TEST_ARTIFACTS", "build/test-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    rounded = {name: round(seconds, 1) for name, seconds in timings.items()}
    (out / "stack_timings.json").write_text(json.dumps(rounded, indent=2) + "\n")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under `--dist loadgroup`, fail a grouped test whose xdist_group mark was lost (as with
    pytest 9.2 and pytest-xdist 3.8): every worker would start its own native stack, and the
    tests that share one would interleave."""
    grouped = item.get_closest_marker("xdist_group") is not None
    if grouped and getattr(item.config.option, "loadgroup", False) and "@" not in item.nodeid:
        pytest.fail(
            "pytest-xdist ignores the xdist_group mark with this pytest; see the pytest pin in "
            "pyproject.toml",
            pytrace=False,
        )
