"""The fast inserters store exactly what SQLAlchemy's statement stores.

The same rows go through `RowInserter` (SQLAlchemy's compiled INSERT ... ON CONFLICT DO
NOTHING, the writer before the fast paths) into one database and through the dialect's
fast inserter into another; the raw stored values, their storage classes, and what
SQLAlchemy and `pd.read_sql` (the monitoring assets) read back must be equal. On SQLite
and on a real PostgreSQL 15.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg_server import Postgres
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.dialects.postgresql import pg8000

from serving.prediction_log import (
    NotCopyableError,
    PostgresInserter,
    PredictionLog,
    RowInserter,
    SqliteInserter,
    inserter_for,
    make_engine,
    metadata,
    prediction_log,
)

COLUMNS = [c.name for c in prediction_log.columns]
NULLABLE = [c.name for c in prediction_log.columns if c.nullable]
IST = timezone(timedelta(hours=5, minutes=30))
PST = timezone(timedelta(hours=-8))
ODD_OFFSET = timezone(timedelta(hours=1, seconds=30))
AMSTERDAM = ZoneInfo("Europe/Amsterdam")  # +00:19:32 in 1900


def base_row(i: int) -> dict[str, Any]:
    """A row as the engine logs it, features already JSON text (as `log_many` leaves it)."""
    now = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    return {
        "prediction_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"inserts-{i}")),
        "transaction_id": f"t{i}",
        "scored_at": now + timedelta(seconds=i),
        "transaction_ts": now - timedelta(minutes=i),
        "user_id": f"u{i}",
        "merchant_id": f"m{i % 7}",
        "merchant_category": "electronics",
        "amount": 10.25 + i,
        "currency": "EUR",
        "device_id": f"d{i}",
        "device_type": "mobile",
        "channel": "app",
        "country": "DE",
        "age_band": "30-39",
        "features": '{"amount":10.25,"is_new_device":1.0,"user_amount_zscore":-0.3333333333333333}',
        "fraud_score": 0.0123,
        "decision": "approve",
        "model_version": "7",
        "latency_ms": 0.5,
        "degraded": False,
        "endpoint": "predict",
        "api_key": "merchant",
    }


def edge_rows() -> list[dict[str, Any]]:
    """One row per value that a text or number conversion could get wrong."""
    variants: list[dict[str, Any]] = [
        {},
        {"scored_at": datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)},  # no microseconds
        {"transaction_ts": datetime(2026, 3, 1, 17, 45, 1, 5, tzinfo=IST)},
        {"transaction_ts": datetime(2026, 2, 28, 23, 59, 59, 999999, tzinfo=PST)},
        {"transaction_ts": datetime(2026, 3, 1, 9, 0, 0, 42)},  # naive
        {"transaction_ts": datetime(1, 1, 1, tzinfo=UTC)},
        {"amount": 5},  # an int in a Float column
        {"amount": -0.0, "fraud_score": 5e-324, "latency_ms": 1.7976931348623157e308},
        {"amount": 0.1 + 0.2, "fraud_score": 1 / 3, "latency_ms": math.inf},
        {"degraded": True, "endpoint": "predict_batch"},
        dict.fromkeys(NULLABLE),
        {"merchant_category": "", "device_id": "", "api_key": ""},  # empty, not NULL
        {"transaction_id": "tab\there", "user_id": "new\nline", "merchant_id": "cr\rhere"},
        {"transaction_id": "back\\slash", "user_id": "\\N", "merchant_id": "\\\\N\t\\"},
        {"transaction_id": "quote\"'", "user_id": "Zürich — €, 😀", "device_id": "a,b;c|d"},
        {"features": '{"note":"a\\tb\\\\c\\n","emoji":"\\ud83d\\ude00","x":1e-7}'},
    ]
    return [{**base_row(i), **variant} for i, variant in enumerate(variants)]


def sqlite_raw(engine: sa.Engine) -> list[tuple[Any, ...]]:
    """Every stored value beside its SQLite storage class, in prediction_id order."""
    selected = ", ".join(f"{name}, typeof({name})" for name in COLUMNS)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT {selected} FROM prediction_log ORDER BY prediction_log.prediction_id"
        ).all()
    return [tuple(row) for row in rows]


def postgres_raw(engine: sa.Engine) -> list[tuple[Any, ...]]:
    """Every stored value as PostgreSQL prints it (exact for float8 since PostgreSQL 12) and
    as psycopg2 reads it, in prediction_id order."""
    selected = ", ".join([*(f"{name}::text" for name in COLUMNS), *COLUMNS])
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT {selected} FROM prediction_log ORDER BY prediction_log.prediction_id"
        ).all()
    return [tuple(row) for row in rows]


def read_back(engine: sa.Engine) -> tuple[list[Any], pd.DataFrame]:
    """The rows as SQLAlchemy's typed select and as the monitoring assets' read_sql see them."""
    with engine.connect() as conn:
        typed = conn.execute(
            sa.select(prediction_log).order_by(prediction_log.c.prediction_id)
        ).all()
        frame = pd.read_sql(sa.text("SELECT * FROM prediction_log ORDER BY prediction_id"), conn)
    return [tuple(row) for row in typed], frame


def store(engine: sa.Engine, inserter: RowInserter, batches: list[list[dict[str, Any]]]) -> None:
    for batch in batches:
        with engine.begin() as conn:
            inserter.insert(conn, [dict(row) for row in batch])


def assert_stored_alike(old: sa.Engine, new: sa.Engine) -> None:
    raw = sqlite_raw if old.dialect.name == "sqlite" else postgres_raw
    old_raw, new_raw = raw(old), raw(new)
    assert old_raw, "nothing stored"
    # repr tells -0.0 from 0.0 and compares NaN with itself.
    assert repr(new_raw) == repr(old_raw)
    (old_typed, old_frame), (new_typed, new_frame) = read_back(old), read_back(new)
    assert repr(new_typed) == repr(old_typed)
    pd.testing.assert_frame_equal(new_frame, old_frame)


@contextmanager
def pair_of_databases(server: Postgres | None, folder: Path | None) -> Iterator[list[sa.Engine]]:
    """Two empty databases with the prediction log table, one for each inserter: SQLite
    files in `folder` (in memory without one), or two new databases on the server."""
    created: list[str] = []
    if server is None:
        urls = [f"sqlite:///{folder / f'{name}.db'}" if folder else "sqlite://" for name in "ab"]
    else:
        created = [f"inserts_{name}_{uuid.uuid4().hex[:8]}" for name in ("old", "new")]
        admin = sa.create_engine(server.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in created:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
        urls = [server.url.rsplit("/", 1)[0] + f"/{name}" for name in created]
    engines = [make_engine(url) for url in urls]
    try:
        for engine in engines:
            metadata.create_all(engine)
        yield engines
    finally:
        for engine in engines:
            engine.dispose()
        if created:
            with admin.connect() as conn:
                for name in created:
                    conn.exec_driver_sql(f"DROP DATABASE {name}")
            admin.dispose()


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]


@pytest.fixture(params=BACKENDS)
def two_databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[sa.Engine]]:
    """Two empty databases of the backend: one for each inserter."""
    server = request.getfixturevalue("postgres") if request.param == "postgresql" else None
    with pair_of_databases(server, tmp_path) as engines:
        yield engines


def test_the_fast_inserter_is_chosen_per_database(two_databases: list[sa.Engine]) -> None:
    """SQLite and PostgreSQL over psycopg2 get their fast path; other databases SQLAlchemy's."""
    engine = two_databases[0]
    expected = SqliteInserter if engine.dialect.name == "sqlite" else PostgresInserter
    assert type(inserter_for(engine.dialect)) is expected
    for other in (mysql.dialect(), pg8000.dialect()):
        assert type(inserter_for(other)) is RowInserter


def test_edge_values_are_stored_alike(two_databases: list[sa.Engine]) -> None:
    """Datetimes with and without offsets or microseconds, ints, -0.0, subnormals, infinity,
    booleans, NULLs beside empty strings, and text with tabs, newlines, backslashes (COPY's
    special characters), quotes and non-ASCII: the same stored values either way."""
    old, new = two_databases
    rows = edge_rows()
    inserter = inserter_for(new.dialect)
    if isinstance(inserter, PostgresInserter):
        inserter.copy_text(rows)  # COPY takes them all: not SQLAlchemy's statement again
    store(old, RowInserter(), [rows])
    store(new, inserter, [rows])
    assert_stored_alike(old, new)


def test_conflicts_and_odd_values_are_stored_alike(two_databases: list[sa.Engine]) -> None:
    """A prediction_id already stored or twice in a batch is stored once, the first copy
    kept; batches with values the fast path leaves to SQLAlchemy (a `date` in a DateTime
    column, a str subclass, an offset with seconds, a zoneinfo zone) are stored alike too."""

    class Label(str):
        pass

    old, new = two_databases
    rows = edge_rows()
    first = [rows[0], rows[1]]
    again = [{**rows[0], "amount": 99.0}, rows[2], rows[2], rows[3]]
    odd = [
        {**rows[4], "transaction_ts": date(2026, 2, 27)},
        {**rows[5], "decision": Label("review")},
    ]
    # Offsets msgspec would not write exactly: SQLAlchemy's processor converts these.
    odd_offsets = [
        {**rows[6], "scored_at": datetime(2026, 3, 1, 12, 0, 1, 7, tzinfo=ODD_OFFSET)},
        {**rows[7], "transaction_ts": datetime(1900, 6, 1, 10, 30, tzinfo=AMSTERDAM)},
    ]
    fast = inserter_for(new.dialect)
    if isinstance(fast, PostgresInserter):
        for row in odd:
            with pytest.raises(NotCopyableError):
                fast.copy_text([row])
    store(old, RowInserter(), [first, again, odd, odd_offsets])
    store(new, fast, [first, again, odd, odd_offsets])
    assert_stored_alike(old, new)
    with new.connect() as conn:
        amount = conn.execute(
            sa.select(prediction_log.c.amount).where(
                prediction_log.c.prediction_id == rows[0]["prediction_id"]
            )
        ).scalar_one()
    assert amount == rows[0]["amount"], "the stored row is kept"


@pytest.mark.parametrize("backend", BACKENDS)
def test_refused_rows_are_rejected_one_by_one(backend: str, tmp_path: Path, request: Any) -> None:
    """Through the fast inserter, a row the database refuses for its content (a NULL in a NOT
    NULL column; on PostgreSQL also a value too long for its column, refused by COPY) goes
    to rejected.jsonl with the database's reason, and its batch-mates are stored."""
    if backend == "postgresql":
        server: Postgres = request.getfixturevalue("postgres")
        server.reset()
        url = server.url
    else:
        url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, spool_dir=tmp_path / "spool", flush_interval_s=3600)
    rows = edge_rows()
    bad = [{**base_row(100), "user_id": None}]
    if backend == "postgresql":
        bad.append({**base_row(101), "currency": "EURO"})
    log.log_many([*rows[:3], *bad, *rows[3:]])
    assert log.wait_delivered(30)
    log.close()
    with log.engine.connect() as conn:
        stored = set(conn.execute(sa.select(prediction_log.c.prediction_id)).scalars())
    log.engine.dispose()
    assert stored == {row["prediction_id"] for row in rows}
    rejected = (tmp_path / "spool" / "rejected.jsonl").read_text().splitlines()
    assert len(rejected) == len(bad) and log.dropped == len(bad)
    reasons = "\n".join(rejected)
    assert "NOT NULL" in reasons.upper() or "NOT-NULL" in reasons.upper()
    if backend == "postgresql":
        assert "too long" in reasons


@pytest.mark.integration
def test_a_role_without_temporary_tables_still_stores_rows(
    postgres: Postgres, tmp_path: Path
) -> None:
    """Where the role may not create temporary tables (TEMPORARY revoked from PUBLIC, as some
    hardening guides say), the writer inserts with SQLAlchemy's statement instead of
    mistaking the refusal for a database that is down."""
    suffix = uuid.uuid4().hex[:8]
    database, role = f"notemp_{suffix}", f"notemp_{suffix}"
    admin = sa.create_engine(postgres.url, isolation_level="AUTOCOMMIT")
    base = postgres.url.rsplit("/", 1)[0]
    owner = sa.create_engine(f"{base}/{database}", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {database}")
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
            conn.exec_driver_sql(f"REVOKE TEMPORARY ON DATABASE {database} FROM PUBLIC")
        with owner.connect() as conn:
            conn.exec_driver_sql(f"GRANT USAGE, CREATE ON SCHEMA public TO {role}")
        url = base.replace("postgres@", f"{role}@") + f"/{database}"
        log = PredictionLog(url, spool_dir=tmp_path / "spool", flush_interval_s=3600)
        rows = edge_rows()
        log.log_many([dict(row) for row in rows])
        assert log.wait_delivered(30)
        log.close()
        assert isinstance(log.inserter, PostgresInserter)
        assert log.inserter.temporary_tables is False
        with owner.connect() as conn:
            stored = set(conn.exec_driver_sql("SELECT prediction_id FROM prediction_log").scalars())
        assert stored == {row["prediction_id"] for row in rows}
        assert log.dropped == 0 and log.spooled == 0
    finally:
        owner.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
        admin.dispose()


# PostgreSQL refuses offsets beyond 15:59, and psycopg2 cannot read back a timestamp before
# year 1 or after 9999 in UTC.
OFFSETS = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-15 * 60, 15 * 60)
)
DATETIMES = st.datetimes(
    min_value=datetime(2, 1, 1),
    max_value=datetime(9998, 12, 31),
    timezones=st.none() | st.just(UTC) | OFFSETS,
)
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)


@st.composite
def random_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A batch of rows with arbitrary datetimes, numbers, booleans, text and NULLs."""
    rows = []
    for i in range(draw(st.integers(1, 8))):
        row = base_row(i)
        row["scored_at"] = draw(DATETIMES)
        row["transaction_ts"] = draw(DATETIMES)
        row["amount"] = draw(st.floats(allow_nan=False) | st.integers(-(2**53), 2**53))
        row["latency_ms"] = draw(st.floats(allow_nan=False))
        row["degraded"] = draw(st.booleans())
        for name in ("transaction_id", "user_id", "features"):
            row[name] = draw(TEXT)
        for name in ("device_id", "api_key"):
            row[name] = draw(st.none() | TEXT)
        rows.append(row)
    return rows


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_rows_are_stored_alike(backend: str, request: pytest.FixtureRequest) -> None:
    """Any datetime (offset or none), float, int, boolean, text and NULL: the fast path
    stores what SQLAlchemy stores."""
    server = request.getfixturevalue("postgres") if backend == "postgresql" else None
    with pair_of_databases(server, None) as engines:

        @settings(
            max_examples=150 if server is None else 60,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(rows=random_rows())
        def stored_alike(rows: list[dict[str, Any]]) -> None:
            for engine in engines:
                with engine.begin() as conn:
                    conn.execute(prediction_log.delete())
            store(engines[0], RowInserter(), [rows])
            store(engines[1], inserter_for(engines[1].dialect), [rows])
            assert_stored_alike(*engines)

        stored_alike()


ANY_ZONE = (
    st.none()
    | st.just(UTC)
    | st.builds(timezone, st.timedeltas(-timedelta(hours=23, minutes=59), timedelta(hours=23)))
    | st.just(AMSTERDAM)
)


@settings(max_examples=400, deadline=None)
@given(values=st.lists(st.datetimes(timezones=ANY_ZONE), min_size=1, max_size=40))
def test_sqlite_datetime_text_is_sqlalchemys(values: list[datetime]) -> None:
    """The whole-column conversion of datetimes gives SQLAlchemy's SQLite text for any mix
    of years, microseconds (0 or not), zones and offsets (with seconds too)."""
    dialect = sqlite.dialect()
    inserter = SqliteInserter(dialect)
    for index, binder in inserter.binders:
        column = prediction_log.columns[inserter.names[index]]
        if isinstance(column.type, sa.DateTime):
            processor = column.type.dialect_impl(dialect).bind_processor(dialect)
            assert processor is not None
            assert binder(values) == list(map(processor, values))
