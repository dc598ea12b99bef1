"""Shared fixtures: a temporary platform (data, Dagster instance, MLflow store) per session."""

from collections.abc import Iterator

import pytest

from fraud_pipelines.sandbox import Platform, make_platform

__all__ = ["Platform", "make_platform"]


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    yield make_platform(tmp_path_factory.mktemp("platform"))
