"""The online store: what the scoring service knows of every customer and merchant.

Features of a live payment depend on the customer's and the merchant's past; the store
keeps exactly that state, updates it after every scored payment and remembers each scored
transaction_id with its result, so a retried request gets the original answer and is never
counted twice. The interface is `OnlineStore` (`serving.store_api`); two backends
implement it:

* `SqliteOnlineStore` (default, `serving.sqlite_store`): one SQLite file shared by the
  worker processes of one machine, each worker reading a copy of the state in memory.
* `RedisOnlineStore` (`serving.redis_store`): chosen when `FRAUD_ONLINE_STORE_URL` starts
  with `redis://`, for replicas on several machines.

`bulk_load` fills a fresh store from the offline history so the service knows every
customer's past from its first request; `python -m serving.online_store load` does it
from the platform's ingested transactions. The parity test (tests/serving/test_parity.py)
replays a day through each store and checks every feature against the offline computation.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pandas as pd

from fraud_assets.core.features import FeatureSpec
from serving.config import is_remote_store, sqlite_store_path
from serving.redis_store import RedisOnlineStore
from serving.sqlite_store import SqliteOnlineStore
from serving.store_api import (
    Commit,
    OnlineStore,
    Prepared,
    PreparedBatch,
    StoredResult,
    StoreTxn,
    StoreUnavailable,
    empty_history,
)

__all__ = [
    "Commit",
    "OnlineStore",
    "Prepared",
    "PreparedBatch",
    "RedisOnlineStore",
    "SqliteOnlineStore",
    "StoreTxn",
    "StoreUnavailable",
    "StoredResult",
    "empty_history",
    "open_store",
]


def open_store(url: str, timeout_s: float = 5.0) -> OnlineStore:
    """The store a URL names: `redis://...` for Redis, anything else is a SQLite path.

    `timeout_s` is Redis' network timeout. SQLite keeps its own lock wait: a busy file is
    a moment's wait on another writer, not an outage.
    """
    if is_remote_store(url):
        return RedisOnlineStore(url, timeout_s=timeout_s)
    return SqliteOnlineStore(sqlite_store_path(url))


def _read_history(home: Path) -> pd.DataFrame:
    files = sorted((home / "data" / "transactions").glob("date=*/part.parquet"))
    if not files:
        raise SystemExit(f"no ingested transactions under {home / 'data' / 'transactions'}")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m serving.online_store load`: fill the store from the ingested history."""
    from serving.config import ServingSettings

    parser = argparse.ArgumentParser(
        prog="python -m serving.online_store",
        description="Load the scoring service's online store from the offline history.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="replace the store's content with the history")
    load.add_argument("--history", type=Path, help="parquet file (default: ingested days)")
    load.add_argument(
        "--spec", type=Path, help="feature_spec.json (default: FRAUD_HOME/data/features/)"
    )
    args = parser.parse_args(argv)
    settings = ServingSettings.from_env()
    history = pd.read_parquet(args.history) if args.history else _read_history(settings.home)
    spec_path = args.spec or settings.home / "data" / "features" / "feature_spec.json"
    spec = FeatureSpec.from_json(spec_path.read_text())
    store = open_store(settings.online_store_url)
    began = time.perf_counter()
    rows = store.bulk_load(history, spec)
    seconds = time.perf_counter() - began
    print(  # noqa: T201
        f"loaded {rows:,} transactions into {settings.online_store_url} in {seconds:.1f} s"
    )
    return 0 if math.isfinite(seconds) else 1


if __name__ == "__main__":
    raise SystemExit(main())
