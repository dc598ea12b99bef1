"""The online store and the rate limiter open the SQLite file a URL names, in either form."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.online_store import open_store
from serving.ratelimit import SqliteCounters, open_limiter
from serving.sqlite_store import SqliteOnlineStore


@pytest.mark.parametrize("form", ["sqlite:///{}", "{}"])
def test_a_sqlite_url_or_a_bare_path_opens_that_file(tmp_path: Path, form: str) -> None:
    path = tmp_path / "online.db"
    url = form.format(path)
    store = open_store(url)
    try:
        assert isinstance(store, SqliteOnlineStore)
        assert store.path == path
    finally:
        store.close()
    limiter = open_limiter(url, 10)
    try:
        assert isinstance(limiter.backend, SqliteCounters)
        assert limiter.backend.path == path
    finally:
        limiter.close()
    assert path.exists()
