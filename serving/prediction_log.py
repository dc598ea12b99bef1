"""Every scored payment, kept for monitoring, audits and retraining.

Rows go to the `prediction_log` table of a SQLAlchemy database (`FRAUD_PREDICTION_LOG_URL`,
default the platform database): the payment's fields without its protected attributes
(only a 10-year age band is kept), the features the model saw, the score, decision,
model version, latency and prediction id. Outcomes reported to /feedback go to the
`feedback` table and join on prediction_id.

Writing never waits for the database, and a row is never lost once `log()` or `log_many()`
has returned, even if the worker is then killed with SIGKILL:

* the rows are first appended to this process's journal under `FRAUD_HOME/serving/spool/`
  (JSON lines) with one unbuffered write per call, so they are in the operating system's
  page cache before the caller acknowledges the payment. There is no fsync per row: the
  journal survives the death of the process, not a power cut or a kernel crash;
* the rows are also kept in memory, where a background thread takes them to insert them in
  batches; the journal is read back only for rows memory no longer holds. After each
  committed batch the journal's committed offset, in the header line of its file, moves past
  the batch. The journal is a series of segment files of `journal_segment_bytes`; a segment
  whose rows are all committed is deleted, so the journal stays small;
* when the database is down, or more than `max_memory_rows` rows wait, the rows in memory
  are set aside: the journal is fsync'd and they are read back from it, in order, once the
  database answers again;
* inserts are idempotent (`ON CONFLICT (prediction_id) DO NOTHING` on PostgreSQL and
  SQLite), so a batch written twice, e.g. after a kill between the insert and the offset
  update, is stored once;
* each live process holds an exclusive `flock` on its journal files; the lock dies with the
  process, so the next start of this or any other worker sharing the folder finds the
  journal of a killed (or stopped while the database was down) worker unlocked and
  delivers its rows from the committed offset on (spool files of earlier versions, without
  the header, from their start);
* a row the database rejects for its content (not for being unreachable) goes to
  `spool/rejected.jsonl` with the reason and is counted as dropped;
* if the journal itself cannot be written (disk full), rows are kept in memory only, an
  error is logged, and rows the database then cannot take before memory must be set aside
  are counted as dropped.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import operator
import os
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from itertools import repeat
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from fraud_assets.core.tables import create_tables

logger = logging.getLogger("serving.prediction_log")

metadata = sa.MetaData()
prediction_log = sa.Table(
    "prediction_log",
    metadata,
    sa.Column("prediction_id", sa.String(36), primary_key=True),
    sa.Column("transaction_id", sa.String(128), nullable=False, index=True),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("transaction_ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("merchant_id", sa.String(128), nullable=False),
    sa.Column("merchant_category", sa.String(64)),
    sa.Column("amount", sa.Float, nullable=False),
    sa.Column("currency", sa.String(3)),
    sa.Column("device_id", sa.String(128)),
    sa.Column("device_type", sa.String(64)),
    sa.Column("channel", sa.String(64)),
    sa.Column("country", sa.String(2)),
    sa.Column("age_band", sa.String(8)),
    # JSON object feature name -> value, as text: sa.JSON doubles the writer's CPU cost.
    sa.Column("features", sa.Text, nullable=False),
    sa.Column("fraud_score", sa.Float, nullable=False),
    sa.Column("decision", sa.String(8), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("degraded", sa.Boolean, nullable=False),
    sa.Column("endpoint", sa.String(32), nullable=False),
    sa.Column("api_key", sa.String(100)),
)
feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("prediction_id", sa.String(36), nullable=False, index=True),
    sa.Column("transaction_id", sa.String(128), nullable=False),
    sa.Column("is_fraud", sa.Boolean, nullable=False),
    sa.Column("label_timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("api_key", sa.String(100)),
)


def age_band(age: float | None) -> str | None:
    """A 10-year band such as '30-39': enough for fairness reports, not the raw value."""
    if age is None:
        return None
    low = int(age // 10) * 10
    return f"{low}-{low + 9}"


def make_engine(url: str) -> sa.Engine:
    connect_args: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several workers append to the same SQLite file; wait for the lock, don't fail.
        connect_args["timeout"] = 30
    engine = sa.create_engine(url, future=True, pool_pre_ping=True, connect_args=connect_args)
    if url.startswith("sqlite"):
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (monitoring) work beside the writers, and without an fsync per commit
    # a batch insert does not stall the worker's other threads on the disk. Rows are safe
    # from a process kill in the journal until committed; a power cut is out of scope.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    except Exception as exc:  # a locked file keeps its mode; the log still works
        logger.warning("prediction log: could not set SQLite pragmas: %s", exc)
    finally:
        cursor.close()


# msgspec writes a row in a few microseconds, the standard library in ~40: this runs on the
# request path. Datetimes come out in RFC 3339 (ISO 8601), floats in their shortest exact
# form. The inserters use it too, to turn a column of datetimes or floats into text at once:
# datetime.isoformat() costs ~0.7 µs a value, msgspec less than 0.1.
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()

COPY_TABLE = "prediction_log_load"
INSUFFICIENT_PRIVILEGE = "42501"  # PostgreSQL's SQLSTATE
_COPY_NULL = "\\N"
# COPY's text format gives a meaning to these four characters; anything else goes as it is.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_NONE = type(None)
_TZINFO = operator.attrgetter("tzinfo")
_MINUTE = timedelta(minutes=1)
_UTC_OR_NAIVE = frozenset([UTC, None])
# In msgspec's RFC 3339 text of a datetime, its offset (Z, or +HH:MM) and a whole second.
_OFFSET = re.compile(rb'(?:Z|[+-]\d\d:\d\d)"')
_WHOLE_SECOND = re.compile(rb'(:\d\d)"')


def _column_values(rows: list[dict[str, Any]], names: Sequence[str]) -> list[list[Any]]:
    """The rows' values column by column, None where a row has no such key. The loops run in
    C (`map`), which is what makes building parameters cost well under a µs a value."""
    return [list(map(dict.get, rows, repeat(name))) for name in names]


def _unchanged(values: list[Any]) -> list[Any]:
    return values


def _as_ints(values: list[Any]) -> list[Any]:
    return list(map(int, values))


def _rfc3339(values: list[datetime]) -> tuple[bytes, bool] | None:
    """The datetimes as msgspec's JSON array of RFC 3339 strings: the wall-clock fields,
    '.ffffff' unless the microsecond is 0, then Z (any zero offset), +HH:MM, or nothing
    (naive); and whether all are UTC or naive. None unless every datetime is naive or has a
    fixed offset of whole minutes: msgspec drops the seconds of an offset, and calls a
    zoneinfo zone's `utcoffset` where SQLAlchemy does not."""
    zones = set(map(_TZINFO, values))
    for tz in zones:
        if tz is not None and (type(tz) is not timezone or tz.utcoffset(None) % _MINUTE):
            return None
    return _encoder.encode(values), zones <= _UTC_OR_NAIVE


def _sqlite_datetimes(values: list[datetime]) -> list[str] | None:
    """SQLAlchemy's SQLite text of datetimes, 'YYYY-MM-DD HH:MM:SS.ffffff': the wall-clock
    fields, the offset dropped, the microseconds always written."""
    encoded = _rfc3339(values)
    if encoded is None:
        return None
    text, utc_or_naive = encoded
    text = text.replace(b"T", b" ")
    if utc_or_naive:
        text = text.replace(b'Z"', b'"')
    else:
        text = _OFFSET.sub(b'"', text)
    if len(text) != 29 * len(values) + 1:  # not all 26 characters: some lack microseconds
        text = _WHOLE_SECOND.sub(rb'\1.000000"', text)
    return _decoder.decode(text)


class _Binder:
    """Turns a column of Python values into what SQLAlchemy would hand the driver.

    `processor` is SQLAlchemy's own bind processor for the column and dialect. When every
    value is of `fast_type`, `fast` does the same conversion for the whole column at once
    (or returns None when it cannot); any other column (a NULL, a `date`, a pandas
    Timestamp, a string) goes through `processor` value by value, so odd values are
    converted, or refused, exactly as before.
    """

    def __init__(
        self,
        processor: Callable[[Any], Any],
        fast_type: type | None = None,
        fast: Callable[[list[Any]], list[Any] | None] = _unchanged,
    ) -> None:
        self.processor = processor
        self.fast_types = frozenset([fast_type]) if fast_type is not None else frozenset()
        self.fast = fast

    def __call__(self, values: list[Any]) -> list[Any]:
        if self.fast_types and set(map(type, values)) <= self.fast_types:
            converted = self.fast(values)
            if converted is not None:
                return converted
        return list(map(self.processor, values))


def _binder(column_type: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> _Binder | None:
    """The column's bind conversion, with a whole-column fast path for the usual values
    (checked against SQLAlchemy's processor in tests/reliability/test_prediction_inserts.py)."""
    processor = column_type.dialect_impl(dialect).bind_processor(dialect)
    if processor is None:
        return None
    if isinstance(column_type, sa.DateTime) and dialect.name == "sqlite":
        return _Binder(processor, datetime, _sqlite_datetimes)
    if isinstance(column_type, sa.Boolean):
        return _Binder(processor, bool, _unchanged if dialect.supports_native_boolean else _as_ints)
    if isinstance(column_type, sa.Float) and not column_type.asdecimal:
        return _Binder(processor, float)
    return _Binder(processor)


class RowInserter:
    """Stores a batch of prediction rows, skipping prediction_ids already stored, through
    SQLAlchemy's compiled INSERT ... ON CONFLICT DO NOTHING (a plain INSERT on dialects
    without it). This is the reference the faster inserters below must store alike, and the
    one used on any other database.

    `insert` runs inside the caller's transaction and is called once per transaction; a
    database error comes out as SQLAlchemy's exception (`sa.exc.IntegrityError`, ...).
    """

    def statement(self, dialect: sa.Dialect) -> sa.Insert:
        if dialect.name == "postgresql":
            return postgresql.insert(prediction_log).on_conflict_do_nothing(
                index_elements=["prediction_id"]
            )
        if dialect.name == "sqlite":
            return sqlite.insert(prediction_log).on_conflict_do_nothing(
                index_elements=["prediction_id"]
            )
        return prediction_log.insert()

    def insert(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        conn.execute(self.statement(conn.dialect), rows)


class SqliteInserter(RowInserter):
    """The same compiled statement, run by the driver's `executemany` with parameter tuples
    built a column at a time: ~2.5 µs of Python a row on top of SQLite's own work, where
    SQLAlchemy's per-row parameter processing adds ~9 (SQLite's share grows with the table:
    ~6 µs a row on an empty one, ~28 at 300,000 rows, for its random-key indexes). The
    values are converted as SQLAlchemy's processors convert them (DateTime to its text
    format, Boolean to 0/1, Float through float()), so the stored rows are the same.

    Unlike SQLAlchemy, a row without some key stores NULL there even when other rows of the
    batch have it.
    """

    def __init__(self, dialect: sa.Dialect) -> None:
        compiled = self.statement(dialect).compile(
            dialect=dialect, column_keys=[c.name for c in prediction_log.columns]
        )
        self.sql = compiled.string
        self.names = list(compiled.positiontup or [])
        columns = prediction_log.columns
        self.binders = [
            (index, binder)
            for index, name in enumerate(self.names)
            if (binder := _binder(columns[name].type, dialect)) is not None
        ]

    def insert(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        columns = _column_values(rows, self.names)
        for index, binder in self.binders:
            columns[index] = binder(columns[index])
        conn.exec_driver_sql(self.sql, list(zip(*columns, strict=True)))


def _copy_strings(values: list[Any], nulls: bool) -> list[Any]:
    """Text values (str, or None if `nulls`) as COPY text: escaped only if one of them has a
    character COPY reads specially."""
    blob = "".join([v for v in values if v is not None] if nulls else values)
    if "\\" in blob or "\t" in blob or "\n" in blob or "\r" in blob:
        values = [v if v is None else v.translate(_COPY_ESCAPES) for v in values]
    if nulls:
        return [_COPY_NULL if v is None else v for v in values]
    return values


class NotCopyableError(Exception):
    """A value COPY's text would not render as the driver does: use SQLAlchemy's statement."""


class PostgresInserter(RowInserter):
    """COPY of the batch into a session's temporary table, then one
    INSERT ... SELECT ... ON CONFLICT (prediction_id) DO NOTHING into prediction_log. Per
    row, measured: ~5.5 µs of client CPU against ~22 for psycopg2's `execute_values` (it
    renders each row with `mogrify`) and 40-55 for SQLAlchemy's statement, and about a
    quarter of the latter's server CPU.

    COPY reads each value from its text, so a column is copied only when its values are of
    the types whose `str()` PostgreSQL parses to what psycopg2's literal would give: str for
    text, float and int for floats, datetime for timestamps, bool, and None. A batch with any
    other value goes through SQLAlchemy's statement. Constraint errors come from the INSERT
    into prediction_log itself (the temporary table has no constraints), with its name.
    """

    def __init__(self, dialect: sa.Dialect) -> None:
        quote = dialect.identifier_preparer.quote
        self.names = [c.name for c in prediction_log.columns]
        names = ", ".join(quote(name) for name in self.names)
        self.create_sql = (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {COPY_TABLE} ON COMMIT DELETE ROWS AS "
            f"SELECT {names} FROM prediction_log WITH NO DATA"
        )
        self.copy_sql = f"COPY {COPY_TABLE} ({names}) FROM STDIN"
        self.insert_sql = (
            f"INSERT INTO prediction_log ({names}) SELECT {names} FROM {COPY_TABLE} "
            "ON CONFLICT (prediction_id) DO NOTHING"
        )
        self.binders = {
            index: binder
            for index, column in enumerate(prediction_log.columns)
            if (binder := _binder(column.type, dialect)) is not None
        }
        self.copyable = [self._copyable(column.type) for column in prediction_log.columns]
        # None until a temporary table was first created; False if the role may not.
        self.temporary_tables: bool | None = None

    @staticmethod
    def _copyable(column_type: sa.types.TypeEngine[Any]) -> frozenset[type]:
        if isinstance(column_type, sa.String):
            kinds: tuple[type, ...] = (str,)
        elif isinstance(column_type, sa.Float):
            kinds = (float, int)
        elif isinstance(column_type, sa.DateTime):
            kinds = (datetime,)
        elif isinstance(column_type, sa.Boolean):
            kinds = (bool,)
        else:
            kinds = ()
        return frozenset([*kinds, _NONE])

    def copy_text(self, rows: list[dict[str, Any]]) -> str:
        """The rows in COPY's text format; raises `NotCopyableError` (see the class)."""
        columns = _column_values(rows, self.names)
        for index, binder in self.binders.items():
            columns[index] = binder(columns[index])
        fields = [
            self._copy_field(values, copyable)
            for values, copyable in zip(columns, self.copyable, strict=True)
        ]
        return "\n".join(map("\t".join, zip(*fields, strict=True))) + "\n"

    @staticmethod
    def _copy_field(values: list[Any], copyable: frozenset[type]) -> list[str]:
        """A column's values as COPY text; raises `NotCopyableError`."""
        kinds = set(map(type, values))
        if not kinds <= copyable:
            raise NotCopyableError(", ".join(sorted(kind.__name__ for kind in kinds - copyable)))
        if str in kinds:
            return _copy_strings(values, _NONE in kinds)
        if float in copyable and 0 in values:
            # psycopg2 sends a float as a numeric literal, and numeric has no negative zero:
            # SQLAlchemy's statement stores -0.0 as 0.
            values = [0.0 if v == 0 else v for v in values]
            kinds = set(map(type, values))
        if kinds == {datetime} and (encoded := _rfc3339(values)) is not None:
            return encoded[0].decode()[2:-2].split('","')
        if kinds == {float} and b"null" not in (text := _encoder.encode(values)):
            return text.decode()[1:-1].split(",")  # msgspec writes inf and nan as null
        # Numbers, datetimes, booleans: str() has no character COPY reads specially.
        if _NONE in kinds:
            return [_COPY_NULL if v is None else str(v) for v in values]
        return list(map(str, values))

    def insert(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        try:
            text = self.copy_text(rows)
        except NotCopyableError:
            super().insert(conn, rows)
            return
        if not self._create_temporary_table(conn):
            super().insert(conn, rows)
            return
        cursor = conn.connection.cursor()
        try:
            cursor.copy_expert(self.copy_sql, io.StringIO(text), size=len(text) + 1)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise sa.exc.DBAPIError.instance(
                self.copy_sql, None, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
            ) from exc
        finally:
            cursor.close()
        conn.exec_driver_sql(self.insert_sql)

    def _create_temporary_table(self, conn: sa.Connection) -> bool:
        """Create the session's temporary table unless it exists; False if the role lacks
        the TEMPORARY privilege (some hardened databases revoke it from PUBLIC), which
        would otherwise look like a database down for good. Checked once, in a savepoint."""
        if self.temporary_tables is None:
            try:
                with conn.begin_nested():
                    conn.exec_driver_sql(self.create_sql)
            except sa.exc.ProgrammingError as exc:
                if getattr(exc.orig, "pgcode", None) != INSUFFICIENT_PRIVILEGE:
                    raise
                logger.warning(
                    "prediction log: no TEMPORARY privilege, rows are inserted without COPY "
                    "(several times the CPU): %s",
                    exc.orig,
                )
                self.temporary_tables = False
            else:
                self.temporary_tables = True
                return True
        if self.temporary_tables:
            conn.exec_driver_sql(self.create_sql)
        return self.temporary_tables


def inserter_for(dialect: sa.Dialect) -> RowInserter:
    """The fastest inserter for the database: SQLite's, PostgreSQL's over psycopg2, or
    SQLAlchemy's statement."""
    if dialect.name == "sqlite":
        return SqliteInserter(dialect)
    if dialect.name == "postgresql" and dialect.driver == "psycopg2":
        return PostgresInserter(dialect)
    return RowInserter()


DATETIME_COLUMNS = frozenset(
    c.name for c in prediction_log.columns if isinstance(c.type, sa.DateTime)
)
REJECTED_FILE = "rejected.jsonl"
JOURNAL_SUFFIX = ".jsonl"
# A segment file is created under this suffix, locked, and then renamed: a file another
# process can see under its final name is always locked while its writer lives.
NEW_SUFFIX = ".new"
HEADER_PREFIX = b"#journal committed="
HEADER_LEN = len(HEADER_PREFIX) + 21  # 20 digits and a newline
READ_BYTES = 4 << 20


def _features_json(features: Any) -> bytes:
    return features.encode() if isinstance(features, str) else _encoder.encode(features)


def _encode_line(row: dict[str, Any]) -> bytes:
    """`row` as a JSON line, its `features` inlined as an object; afterwards `row["features"]`
    holds the features' JSON text, as the database stores it."""
    text = _features_json(row["features"])
    row["features"] = msgspec.Raw(text)
    try:
        return _encoder.encode(row) + b"\n"
    finally:
        row["features"] = text.decode()


def _encode_lines(rows: list[dict[str, Any]]) -> bytes:
    """`_encode_line` of each row, joined. Many rows are encoded with one `encode_lines`
    call (10-15% faster); a single one, log()'s case, is faster alone."""
    if len(rows) == 1:
        return _encode_line(rows[0])
    texts = [_features_json(row["features"]) for row in rows]
    for row, text in zip(rows, texts, strict=True):
        row["features"] = msgspec.Raw(text)
    try:
        return _encoder.encode_lines(rows)
    finally:
        for row, text in zip(rows, texts, strict=True):
            row["features"] = text.decode()


def encode_row(row: dict[str, Any]) -> bytes:
    """One row as a JSON line: datetimes in ISO 8601, features inlined as an object."""
    return _encode_lines([dict(row)])


def decode_row(line: bytes) -> dict[str, Any]:
    """The row `encode_row` or `log_many` wrote, features as their JSON text again (spool
    files of earlier versions hold them as a string)."""
    row = json.loads(line)
    if not isinstance(row, dict):
        raise ValueError("not a JSON object")
    if not isinstance(row.get("features", ""), str):
        row["features"] = json.dumps(row["features"])
    for name in DATETIME_COLUMNS:
        value = row.get(name)
        if isinstance(value, str):
            row[name] = datetime.fromisoformat(value)
    return row


def _header(committed: int) -> bytes:
    """A journal file's first line: the file offset of its first row not yet committed."""
    return HEADER_PREFIX + b"%020d\n" % committed


def _committed_offset(fd: int) -> int | None:
    """The committed offset in a journal file's header; None for a spool file without one."""
    head = os.pread(fd, HEADER_LEN, 0)
    digits = head[len(HEADER_PREFIX) : -1]
    if len(head) == HEADER_LEN and head.startswith(HEADER_PREFIX) and digits.isdigit():
        return int(digits)
    return None


def _read_lines(fd: int, offset: int, stop: int, limit: int) -> tuple[list[bytes], int]:
    """Up to `limit` complete lines of the file between `offset` and `stop`, without their
    newlines, and the offset just after the last one. An incomplete last line is left out."""
    size = READ_BYTES
    while True:
        data = os.pread(fd, min(size, stop - offset), offset)
        lines = data.split(b"\n")
        del lines[-1]  # what follows the last newline: nothing, or an incomplete line
        if len(lines) >= limit or len(data) < size:
            break
        size *= 2
    del lines[limit:]
    return lines, offset + sum(len(line) + 1 for line in lines)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_transient(exc: BaseException) -> bool:
    """True when the database could not be reached, as opposed to refusing the row itself."""
    return not isinstance(exc, (sa.exc.DataError, sa.exc.IntegrityError))


class _TransientFailure(Exception):
    """The database is unreachable: the batch is still ours to keep."""


@dataclass
class _Segment:
    """One journal file of this process: its rows hold journal positions [base, stop)."""

    path: Path
    fd: int
    base: int
    size: int = 0

    @property
    def stop(self) -> int:
        return self.base + self.size

    def offset(self, position: int) -> int:
        """The file offset of a journal position."""
        return HEADER_LEN + position - self.base

    def close(self, delete: bool) -> None:
        if delete:
            self.path.unlink(missing_ok=True)
        os.close(self.fd)


class Batch(NamedTuple):
    """The oldest rows not yet committed: `rows` from memory, or `lines` read from disk,
    and the journal position to commit once they are stored."""

    rows: list[dict[str, Any]]
    lines: list[bytes]
    end: int


class Journal:
    """This process's journal of prediction rows, the orphaned ones of processes gone, and
    the copy in memory of the rows not yet committed.

    Journal positions count row bytes across this process's segments; a segment's file is a
    header line (the file offset of its first uncommitted row) followed by JSON lines. Every
    segment is written by `os.pwrite` (unbuffered) and flock'd by this process while it is
    open. Appends may come from any thread; `take`, `commit` and `rotate_if_full` from one
    writer thread only.
    """

    def __init__(self, directory: Path, segment_bytes: int = 8 << 20) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._serial = 0
        self._segments: list[_Segment] = []
        self._lock = threading.Lock()
        # Rows in memory, one entry per append: the rows and the journal position after
        # them (None when the journal could not be written). They cover the positions
        # from `_memory_from` to `end`.
        self._memory: deque[tuple[list[dict[str, Any]], int | None]] = deque()
        self._memory_from = 0
        self._failing = False
        self.cached = 0
        self.appended = 0
        self.end = 0
        self.committed = 0

    @property
    def paths(self) -> list[Path]:
        """This process's journal files, oldest first."""
        return [segment.path for segment in self._segments]

    def append(self, rows: list[dict[str, Any]], data: bytes) -> None:
        """Write the encoded rows with one system call and keep the rows in memory."""
        with self._lock:
            end: int | None
            try:
                if not self._segments:
                    self._segments.append(_Segment(*self._create(), base=self.end))
                self._write(self._segments[-1], data)
                end = self.end
            except OSError as exc:
                end = None
                if not self._failing:
                    logger.error("prediction journal not writable, rows kept in memory: %s", exc)
                self._failing = True
            else:
                if self._failing:
                    logger.warning("prediction journal writable again")
                self._failing = False
            self._memory.append((rows, end))
            self.cached += len(rows)
            self.appended += len(rows)

    def _write(self, segment: _Segment, data: bytes) -> None:
        offset = segment.offset(segment.stop)
        done = 0
        try:
            while done < len(data):
                done += os.pwrite(segment.fd, data[done:], offset + done)
        except OSError:
            if done:
                try:
                    os.ftruncate(segment.fd, offset)
                except OSError:
                    pass  # the next write overwrites the partial row
            raise
        segment.size += len(data)
        self.end += len(data)

    def _create(self) -> tuple[Path, int]:
        """A new segment file, locked and with its header, under its final name."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._serial += 1
        path = self.directory / f"{self._name}-{self._serial:06d}{JOURNAL_SUFFIX}"
        new = path.with_suffix(NEW_SUFFIX)
        fd = os.open(new, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.pwrite(fd, _header(HEADER_LEN), 0)
            os.rename(new, path)
        except BaseException:
            os.close(fd)
            new.unlink(missing_ok=True)
            raise
        return path, fd

    def take(self, limit: int) -> Batch:
        """The oldest uncommitted rows: from memory (up to `limit`, or one whole append), or
        read back from disk when memory no longer holds them."""
        if self.committed < self._memory_from:
            for segment in self._segments:
                if segment.base <= self.committed < segment.stop:
                    stop = min(self._memory_from, segment.stop)
                    lines, after = _read_lines(
                        segment.fd, segment.offset(self.committed), segment.offset(stop), limit
                    )
                    if lines:
                        return Batch([], lines, segment.base + after - HEADER_LEN)
            raise RuntimeError(f"journal unreadable at position {self.committed}")
        taken: list[dict[str, Any]] = []
        with self._lock:
            while self._memory and len(taken) < limit:
                rows, end = self._memory.popleft()
                taken.extend(rows)
                if end is not None:
                    self._memory_from = end
            self.cached -= len(taken)
            return Batch(taken, [], self._memory_from)

    def commit(self, end: int) -> None:
        """The rows before journal position `end` are in the database: move the committed
        offset past them and delete the segments they complete."""
        moved = end > self.committed
        self.committed = max(self.committed, end)
        with self._lock:
            while len(self._segments) > 1 and self._segments[0].stop <= self.committed:
                self._segments.pop(0).close(delete=True)
        if moved and self._segments:
            first = self._segments[0]
            os.pwrite(first.fd, _header(first.offset(self.committed)), 0)

    def rotate_if_full(self) -> None:
        """Start a new segment when the current one has reached `segment_bytes`."""
        if not self._segments or self._segments[-1].size < self.segment_bytes:
            return
        try:
            path, fd = self._create()
        except OSError as exc:
            logger.warning("prediction journal not rotated, the segment grows on: %s", exc)
            return
        with self._lock:
            self._segments.append(_Segment(path, fd, base=self.end))
        self.commit(self.committed)

    def set_aside(self) -> tuple[int, int]:
        """Forget the rows held in memory: they are read back from disk when their turn
        comes. Returns how many rows were forgotten and how many of them never reached the
        journal (lost)."""
        with self._lock:
            count = self.cached
            lost = sum(len(rows) for rows, end in self._memory if end is None)
            self._memory.clear()
            self.cached = 0
            self._memory_from = self.end
        return count, lost

    def sync(self) -> None:
        """fsync the journal, for rows that now live on disk only."""
        with self._lock:
            fds = [os.dup(segment.fd) for segment in self._segments]
        try:
            for fd in fds:
                os.fsync(fd)
            if fds:
                _fsync_dir(self.directory)
        finally:
            for fd in fds:
                os.close(fd)

    def close(self) -> None:
        """Release the journal: committed segments are deleted, the others are left, unlocked,
        for the next start to deliver. A later append starts a new segment."""
        with self._lock:
            for segment in self._segments:
                segment.close(delete=segment.stop <= self.committed or segment.size == 0)
            self._segments = []

    @contextmanager
    def orphans(self) -> Iterator[list[tuple[Path, int]]]:
        """Journal and spool files of processes that are gone, each opened and locked by us."""
        taken: list[tuple[Path, int]] = []
        try:
            candidates = sorted(
                p
                for p in self.directory.iterdir()
                if p.name != REJECTED_FILE and p.suffix in (JOURNAL_SUFFIX, NEW_SUFFIX)
            )
        except OSError:  # no folder (yet)
            candidates = []
        own = set(self.paths)
        for path in candidates:
            if path in own:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                stat = os.fstat(fd)
            except OSError:
                os.close(fd)
                continue
            if stat.st_nlink == 0:  # delivered and deleted by another process meanwhile
                os.close(fd)
            elif path.suffix == NEW_SUFFIX:
                # Left by a process killed while creating a segment: it holds no row. A
                # younger one may be a segment being created right now.
                if time.time() - stat.st_mtime > 60:
                    path.unlink(missing_ok=True)
                os.close(fd)
            else:
                taken.append((path, fd))
        try:
            yield taken
        finally:
            for _, fd in taken:
                os.close(fd)


class PredictionLog:
    """Batched, off-request-path writer of the prediction log that never loses a row."""

    def __init__(
        self,
        url: str,
        batch_size: int = 1000,
        flush_interval_s: float = 0.5,
        max_memory_rows: int = 20_000,
        max_backlog: int = 200_000,
        on_drop: Callable[[int], None] | None = None,
        spool_dir: Path | str | None = None,
        retry_max_s: float = 5.0,
        on_spool: Callable[[int], None] | None = None,
        on_replay: Callable[[int], None] | None = None,
        journal_segment_bytes: int = 8 << 20,
        inserter: RowInserter | None = None,
    ) -> None:
        """Past `max_memory_rows` waiting rows, the writer sets the rows in memory aside and
        reads them back from the journal; at `max_backlog` the request thread itself does
        (the writer may be stuck on the database). `spool_dir`, the journal's folder, defaults
        to `FRAUD_HOME/serving/spool`. `inserter` defaults to the fastest one for the
        database (`inserter_for`); `RowInserter()` is SQLAlchemy's statement."""
        if spool_dir is None:
            from serving.config import ServingSettings

            spool_dir = ServingSettings.from_env().serving_dir / "spool"
        self.url = url
        self.engine = make_engine(url)
        self.inserter = inserter if inserter is not None else inserter_for(self.engine.dialect)
        self._table_ready = False
        try:
            self._ensure_table()
        except Exception as exc:
            logger.warning("prediction log database unavailable at start, spooling: %s", exc)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_memory_rows = max_memory_rows
        self.max_backlog = max(max_backlog, max_memory_rows)
        self.retry_max_s = retry_max_s
        self.journal = Journal(Path(spool_dir), journal_segment_bytes)
        # An Event the writer sleeps on, set only to hurry it: a wake-up per request hands
        # the GIL back and forth and costs the request far more than the write.
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._handled = 0
        self._settled = 0
        self._stopping = False
        self._on_drop = on_drop
        self._on_spool = on_spool
        self._on_replay = on_replay
        self._retry_at = 0.0
        self._backoff = 0.0
        self._orphans_at = 0.0
        self.dropped = 0
        self.written = 0
        self.spooled = 0
        self.replayed = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Rows logged by this instance and not yet in the database (or refused by it)."""
        return self.journal.appended - self._settled

    def log(self, row: dict[str, Any]) -> None:
        """Journal and queue one prediction row (see `log_many`)."""
        self._append([row], _encode_line(row))

    def log_many(self, rows: list[dict[str, Any]]) -> None:
        """Journal and queue prediction rows; never waits for the database.

        When this returns, the rows are in the journal (one write for all of them) and
        survive a kill of the process. Each row's `features` is replaced by its JSON text.
        """
        if rows:
            self._append(rows, _encode_lines(rows))

    def _append(self, rows: list[dict[str, Any]], data: bytes) -> None:
        self.journal.append(rows, data)
        if self.journal.cached >= self.max_backlog:
            self._set_aside()

    def record_feedback(
        self,
        prediction_id: str,
        transaction_id: str,
        is_fraud: bool,
        label_timestamp: datetime,
        api_key: str | None,
    ) -> None:
        """Store an outcome synchronously: the caller's acknowledgement means it is saved."""
        with self.engine.begin() as conn:
            conn.execute(
                feedback.insert().values(
                    prediction_id=prediction_id,
                    transaction_id=transaction_id,
                    is_fraud=is_fraud,
                    label_timestamp=label_timestamp,
                    received_at=datetime.now(UTC),
                    api_key=api_key,
                )
            )

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row logged so far was offered to the database: it is stored, or
        the database is unreachable and the row waits in the journal."""
        target = self.journal.appended
        if self._handled < target:
            self._wake.set()
        deadline = time.monotonic() + timeout
        with self._done:
            while self._handled < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._done.wait(min(left, 0.1))
        return True

    def wait_delivered(self, timeout: float = 30.0) -> bool:
        """Wait until every row logged so far, set-aside ones included, is in the database."""
        deadline = time.monotonic() + timeout
        while self.pending > 0:
            if time.monotonic() > deadline or not self._thread.is_alive():
                return False
            self._retry_at = 0.0
            self._wake.set()
            time.sleep(0.05)
        return self.flush(max(0.0, deadline - time.monotonic()))

    def close(self, timeout: float = 30.0) -> None:
        """Write out everything logged; what the database refuses stays in the journal."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            # Its files stay locked until the process exits; the next start delivers them.
            logger.error("prediction log writer did not finish within %.0f s", timeout)
        else:
            if self.pending:
                logger.warning(
                    "%d prediction log rows stay in %s; the next start writes them",
                    self.pending,
                    self.journal.directory,
                )
            self.journal.close()
        self.engine.dispose()

    def _ensure_table(self) -> None:
        if not self._table_ready:
            create_tables(metadata, self.engine)
            self._table_ready = True

    def _drop(self, count: int) -> None:
        self.dropped += count
        if self._on_drop is not None:
            self._on_drop(count)

    def _count(self, handled: int = 0, settled: int = 0) -> None:
        with self._done:
            self._handled += handled
            self._settled += settled
            self._done.notify_all()

    def _spooled(self, count: int) -> None:
        if count:
            self.spooled += count
            if self._on_spool is not None:
                self._on_spool(count)

    def _set_aside(self) -> None:
        """Leave the rows in memory to the journal alone (database down, or backlog)."""
        count, lost = self.journal.set_aside()
        if not count:
            return
        self.journal.sync()
        if lost:
            logger.error("%d prediction log rows lost: the journal could not be written", lost)
            self._drop(lost)
        self._spooled(count - lost)
        self._count(handled=count, settled=lost)

    def _down(self, exc: BaseException) -> None:
        self._backoff = min(max(self._backoff * 2, 0.25), self.retry_max_s)
        self._retry_at = time.monotonic() + self._backoff
        logger.warning(
            "prediction log database unavailable (retry in %.1f s): %s", self._backoff, exc
        )

    def _database_due(self, final: bool) -> bool:
        return final or time.monotonic() >= self._retry_at

    def _run(self) -> None:
        while True:
            stopping = self._stopping
            try:
                self._cycle(final=stopping)
            except Exception:
                logger.exception("prediction log writer cycle failed")
                time.sleep(1.0)
            if stopping:
                return
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()

    def _cycle(self, final: bool) -> None:
        if self._database_due(final) and time.monotonic() >= self._orphans_at:
            self._orphans_at = time.monotonic() + 30.0
            self._replay_orphans()
        while self._database_due(final):
            if self.journal.cached > self.max_memory_rows:
                self._set_aside()
            batch = self.journal.take(self.batch_size)
            in_memory = bool(batch.rows)
            if not in_memory and not batch.lines:
                break
            rows = batch.rows if in_memory else self._decode(batch.lines)
            delivered = False
            try:
                self._deliver(rows)
                delivered = True
            except _TransientFailure:
                pass
            finally:
                if in_memory:
                    if not delivered:
                        self._spooled(len(rows))
                    self._count(handled=len(rows))
            if not delivered:
                self._set_aside()
                break
            self.journal.commit(batch.end)
            self._count(settled=len(batch.rows) + len(batch.lines))
            if not in_memory:
                self._replayed(len(rows))
            if not final:
                self.journal.rotate_if_full()
        if not self._database_due(final):
            self._set_aside()

    def _decode(self, lines: list[bytes]) -> list[dict[str, Any]]:
        """The rows of journal lines; a line that does not decode is set aside as refused."""
        rows: list[dict[str, Any]] = []
        refused: list[tuple[dict[str, Any], str]] = []
        for line in lines:
            try:
                rows.append(decode_row(line))
            except ValueError as exc:
                refused.append(({"line": line.decode("utf-8", "replace")}, str(exc)))
        if refused:
            self._reject(refused)
        return rows

    def _replay_orphans(self) -> None:
        with self.journal.orphans() as orphans:
            for path, fd in orphans:
                committed = _committed_offset(fd)
                stop = os.fstat(fd).st_size
                if committed is None:
                    offset = 0
                elif committed <= stop:
                    offset = committed
                else:  # header written, rows not (a power cut): replay it all
                    offset = HEADER_LEN
                count = 0
                while True:
                    lines, after = _read_lines(fd, offset, stop, self.batch_size)
                    if not lines:
                        break
                    rows = self._decode(lines)
                    try:
                        self._deliver(rows)
                    except _TransientFailure:
                        self._replayed(count)
                        return
                    count += len(rows)
                    offset = after
                    if committed is not None:
                        os.pwrite(fd, _header(offset), 0)
                if offset < stop:
                    logger.warning("%s ends with a partial row; it was never acked", path.name)
                path.unlink(missing_ok=True)
                self._replayed(count)
                logger.info("replayed %d prediction log rows from %s", count, path.name)

    def _replayed(self, count: int) -> None:
        if count:
            self.replayed += count
            if self._on_replay is not None:
                self._on_replay(count)

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        """Insert a batch; raises `_TransientFailure` if the database cannot be reached."""
        if not batch:
            return
        try:
            self._ensure_table()
            with self.engine.begin() as conn:
                self.inserter.insert(conn, batch)
        except Exception as exc:
            if _is_transient(exc):
                self._down(exc)
                raise _TransientFailure(str(exc)) from exc
            self._deliver_each(batch)
            return
        self._backoff = 0.0
        self.written += len(batch)

    def _deliver_each(self, batch: list[dict[str, Any]]) -> None:
        """Row by row, to set aside only the rows the database refuses for their content."""
        refused: list[tuple[dict[str, Any], str]] = []
        for row in batch:
            try:
                with self.engine.begin() as conn:
                    self.inserter.insert(conn, [row])
            except Exception as exc:
                if _is_transient(exc):
                    self._down(exc)
                    raise _TransientFailure(str(exc)) from exc
                if isinstance(exc, sa.exc.IntegrityError) and self._stored(row["prediction_id"]):
                    continue
                refused.append((row, str(getattr(exc, "orig", exc))))
            else:
                self.written += 1
        if refused:
            self._reject(refused)

    def _stored(self, prediction_id: str) -> bool:
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(prediction_log.c.prediction_id).where(
                    prediction_log.c.prediction_id == prediction_id
                )
            ).first()
        return found is not None

    def _reject(self, refused: list[tuple[dict[str, Any], str]]) -> None:
        path = self.journal.directory / REJECTED_FILE
        self.journal.directory.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as handle:
            for row, reason in refused:
                entry = json.loads(encode_row(row)) if "prediction_id" in row else row
                handle.write(json.dumps({"reason": reason[:500], "row": entry}).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        logger.error(
            "%d prediction log rows refused by the database, kept in %s", len(refused), path
        )
        self._drop(len(refused))
