"""Processes starting together create the platform's tables without racing (PostgreSQL)."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from pg_server import Postgres

from fraud_assets.core.tables import create_tables

pytestmark = pytest.mark.integration


def test_many_processes_create_the_same_tables_at_once(postgres: Postgres) -> None:
    postgres.reset()
    # Each caller is a separate engine with its own metadata, as separate processes are.
    engines = [sa.create_engine(postgres.url) for _ in range(12)]
    barrier = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def start(engine: sa.Engine) -> None:
        metadata = sa.MetaData()
        for name in ("api_keys_race", "alerts_race", "prediction_log_race"):
            sa.Table(name, metadata, sa.Column("id", sa.Integer, primary_key=True))
        barrier.wait()
        try:
            create_tables(metadata, engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    with engines[0].connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
    assert {"api_keys_race", "alerts_race", "prediction_log_race"} <= names
    for engine in engines:
        engine.dispose()
