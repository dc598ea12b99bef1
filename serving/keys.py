"""API keys of the scoring service, stored hashed in the platform database.

A key looks like `fsk_<id>_<secret>`. Only the id, a random salt and the HMAC-SHA256 of
the secret are stored, so a copy of the database reveals no usable key. Merchants send
the key in the `X-API-Key` header.

    python -m serving.keys create NAME    # prints the new key once; store it safely
    python -m serving.keys list
    python -m serving.keys revoke NAME

Verified keys are cached in each worker for `cache_seconds` (30 s), so a revocation
takes effect within that time.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from fraud_assets.core.tables import create_tables
from serving.prediction_log import make_engine

logger = logging.getLogger("serving.keys")

PREFIX = "fsk"
metadata = sa.MetaData()
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("key_id", sa.String(32), nullable=False, unique=True),
    sa.Column("salt", sa.String(64), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)


@dataclass(frozen=True)
class KeyInfo:
    name: str
    key_id: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class _Cached:
    name: str | None
    salt: str
    key_hash: str
    expires: float


def _digest(salt: str, secret: str) -> str:
    return hmac.new(bytes.fromhex(salt), secret.encode(), hashlib.sha256).hexdigest()


def _split(raw: str) -> tuple[str, str] | None:
    parts = raw.strip().split("_")
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class KeyStoreUnavailable(Exception):
    """The platform database cannot be reached to check a key it has not seen yet."""


class ApiKeys:
    """Create, list, revoke and verify API keys."""

    def __init__(
        self, url: str, cache_seconds: float = 30.0, negative_cache_seconds: float = 5.0
    ) -> None:
        self.engine = make_engine(url)
        create_tables(metadata, self.engine)
        self.cache_seconds = cache_seconds
        self.negative_cache_seconds = negative_cache_seconds
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def create(self, name: str) -> str:
        """Create a key named `name` and return it (the only time it is shown)."""
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(24).replace("_", "-")
        salt = secrets.token_hex(16)
        with self.engine.begin() as conn:
            exists = conn.execute(sa.select(api_keys.c.id).where(api_keys.c.name == name)).first()
            if exists is not None:
                raise ValueError(f"a key named {name!r} already exists; revoke it or pick another")
            conn.execute(
                api_keys.insert().values(
                    name=name,
                    key_id=key_id,
                    salt=salt,
                    key_hash=_digest(salt, secret),
                    created_at=datetime.now(UTC),
                )
            )
        return f"{PREFIX}_{key_id}_{secret}"

    def list(self) -> list[KeyInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.id)).mappings().all()
        return [KeyInfo(r["name"], r["key_id"], r["created_at"], r["revoked_at"]) for r in rows]

    def revoke(self, name: str) -> bool:
        """Revoke the key named `name`; its name is freed for a new key."""
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(api_keys.c.id, api_keys.c.key_id).where(
                    api_keys.c.name == name, api_keys.c.revoked_at.is_(None)
                )
            ).first()
            if row is None:
                return False
            conn.execute(
                api_keys.update()
                .where(api_keys.c.id == row.id)
                .values(revoked_at=datetime.now(UTC), name=f"{name} (revoked {row.key_id})")
            )
        with self._lock:
            self._cache.pop(row.key_id, None)
        return True

    def verify(self, raw: str | None) -> str | None:
        """The name of the key `raw`, or None if it is missing, unknown, wrong or revoked."""
        if not raw:
            return None
        parsed = _split(raw)
        if parsed is None:
            return None
        key_id, secret = parsed
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is None or cached.expires < now:
            try:
                cached = self._fetch(key_id, now)
            except sa.exc.DBAPIError as exc:
                # The database is down: a key verified before keeps working on what was
                # known of it (a revocation takes effect once the database is back); a key
                # never seen cannot be checked.
                if cached is None:
                    raise KeyStoreUnavailable(str(exc.orig or exc)) from exc
                logger.warning("API key store unavailable, using the last known key: %s", exc)
        if cached.name is None:
            return None
        if not hmac.compare_digest(_digest(cached.salt, secret), cached.key_hash):
            return None
        return cached.name

    def _fetch(self, key_id: str, now: float) -> _Cached:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(api_keys.c.name, api_keys.c.salt, api_keys.c.key_hash).where(
                    api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None)
                )
            ).first()
        if row is None:
            entry = _Cached(None, "00", "", now + self.negative_cache_seconds)
        else:
            entry = _Cached(row.name, row.salt, row.key_hash, now + self.cache_seconds)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_id] = entry
        return entry


def main(argv: list[str] | None = None) -> int:
    """Command line for managing API keys in the platform database."""
    from serving.config import ServingSettings

    parser = argparse.ArgumentParser(
        prog="python -m serving.keys", description="Manage API keys of the fraud scoring API."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a key and print it once")
    create.add_argument("name")
    sub.add_parser("list", help="list keys (never the secrets)")
    revoke = sub.add_parser("revoke", help="revoke a key")
    revoke.add_argument("name")
    parser.add_argument("--db", help="SQLAlchemy URL (default: FRAUD_PLATFORM_DB_URL)")
    args = parser.parse_args(argv)
    keys = ApiKeys(args.db or ServingSettings.from_env().platform_db_url)
    if args.command == "create":
        try:
            key = keys.create(args.name)
        except ValueError as exc:
            parser.error(str(exc))
        print(key)  # noqa: T201
        return 0
    if args.command == "list":
        for info in keys.list():
            state = f"revoked {info.revoked_at:%Y-%m-%d}" if info.revoked_at else "active"
            print(f"{info.name}\t{info.key_id}\t{info.created_at:%Y-%m-%d %H:%M}\t{state}")  # noqa: T201
        return 0
    if not keys.revoke(args.name):
        print(f"no active key named {args.name!r}")  # noqa: T201
        return 1
    print(f"revoked {args.name}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
