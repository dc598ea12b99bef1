"""Creating the platform's own tables, safely when several processes start at once."""

from __future__ import annotations

import sqlalchemy as sa

# Any fixed 64-bit number: the advisory lock every process of the platform takes to create
# tables (on PostgreSQL), so they take turns instead of racing.
_SCHEMA_LOCK = 0x6672617564736368  # "fraudsch"


def create_tables(metadata: sa.MetaData, engine: sa.Engine) -> None:
    """`metadata.create_all` that several processes can run at the same moment.

    On PostgreSQL two processes creating the same table at once race inside the catalog,
    and the loser fails with a duplicate key on `pg_type` (seen when two scoring replicas
    started together). A transaction-scoped advisory lock makes them take turns; the
    second then finds the tables there.
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        metadata.create_all(conn)
