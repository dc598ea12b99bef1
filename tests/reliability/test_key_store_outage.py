"""API keys while the platform database (PostgreSQL) is down.

A key the service verified before keeps working on what it knew of the key, so an outage of
the database does not turn every merchant away; a key it never saw cannot be checked and is
answered 503 with Retry-After by the gateway (never 401, which would tell a merchant their
valid key is wrong, and never 500).
"""

from collections.abc import Iterator

import pytest
from pg_server import Postgres

from serving.keys import ApiKeys, KeyStoreUnavailable


@pytest.fixture
def keys(postgres: Postgres) -> Iterator[ApiKeys]:
    # No caching time: every verification goes to the database while it is up.
    store = ApiKeys(postgres.url, cache_seconds=0.0, negative_cache_seconds=0.0)
    yield store
    store.engine.dispose()


def test_known_key_keeps_working_and_unknown_key_is_unavailable(
    postgres: Postgres, keys: ApiKeys
) -> None:
    known = keys.create("outage-known")
    never_seen = keys.create("outage-never-seen")
    assert keys.verify(known) == "outage-known"
    wrong_secret = known[:-1] + ("A" if known[-1] != "A" else "B")
    postgres.stop()
    try:
        assert keys.verify(known) == "outage-known"
        # What was known of the key still decides: a wrong secret is still refused.
        assert keys.verify(wrong_secret) is None
        with pytest.raises(KeyStoreUnavailable):
            keys.verify(never_seen)
    finally:
        postgres.start()
    keys.engine.dispose()
    assert keys.verify(never_seen) == "outage-never-seen"
    assert keys.revoke("outage-known")
    assert keys.verify(known) is None
