"""Per-call time of `batch_features` (and of `batch_prior_state` alone) on live batches.

    .venv/bin/python benchmarks/batch_features_bench.py
    .venv/bin/python benchmarks/batch_features_bench.py --baseline 9c29836

Batches of n = 1, 8, 16, 1,000 and 10,000 payments in canonical order, each with a store
view of up to 9 recent events a payment. Small batches come in two cases: `distinct`
(every customer and merchant once, the common case of concurrent single payments) and
`repeats` (customers and merchants drawn from n / 2 of each: every part of the batch
path runs). Large batches draw customers from 2n and merchants from n / 10. 90% of the
payments join the history. Each figure is the best of 5 repeats of an auto-ranged loop, in
microseconds a call. `--baseline REV` also runs the same cases against the `fraud_assets`
of git revision REV (unpacked with `git archive` into a temporary folder) and prints both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from fraud_assets.core import live_batch
from fraud_assets.core.features import (
    CATEGORICAL_FIELDS,
    MERCHANT_WINDOWS_MS,
    FeatureConfig,
    FeatureSpec,
)
from fraud_assets.core.live_batch import HistoryBatch, batch_features, batch_prior_state

ROOT = Path(__file__).resolve().parent.parent
CASES: tuple[tuple[int, str], ...] = (
    (1, "distinct"),
    (8, "distinct"),
    (8, "repeats"),
    (16, "distinct"),
    (16, "repeats"),
    (1000, "mixed"),
    (10000, "mixed"),
)
START_MS = 1_780_000_000_000


def make_batch(
    n: int, case: str, rng: np.random.Generator
) -> tuple[dict[str, Any], np.ndarray, HistoryBatch]:
    """n payments, who repeats as `case` says, and the store's view before them."""
    if case == "distinct":
        users, merchants = np.arange(n), np.arange(n)
    elif case == "repeats":
        users = rng.integers(0, max(1, n // 2), n)
        merchants = rng.integers(0, max(1, n // 2), n)
    else:
        users = rng.integers(0, 2 * n, n)
        merchants = rng.integers(0, max(1, n // 10), n)
    ts = np.sort(START_MS + rng.integers(0, 600_000, n)).astype(np.int64)
    choices = {
        "merchant_category": ["food", "travel", "games", "electronics", "fashion"],
        "currency": ["EUR", "USD", "GBP"],
        "device_type": ["mobile", "desktop", "tablet"],
        "channel": ["app", "web"],
        "country": ["DE", "FR", "NL", "US", "GB"],
    }
    txns: dict[str, Any] = {
        "ts_ms": ts,
        "amount": np.round(rng.gamma(2.0, 30.0, n), 2),
        "user_id": [f"u{k}" for k in users],
        "merchant_id": [f"m{k}" for k in merchants],
        "device_id": [f"d{k}" for k in rng.integers(0, 3, n)],
    }
    for c in CATEGORICAL_FIELDS:
        txns[c] = rng.choice(choices[c], n).tolist()
    sizes = rng.integers(0, 10, n)
    rows = np.repeat(np.arange(n), sizes)

    def counts() -> np.ndarray:
        return rng.integers(0, 50, n).astype(np.float64)

    base = HistoryBatch(
        user_n=counts(),
        user_log_sum=counts() * 3.1,
        user_log_sumsq=counts() * 11.3,
        user_last_ts=ts - rng.integers(0, 86_400_000, n),
        seen_device=rng.random(n) < 0.5,
        seen_merchant=rng.random(n) < 0.5,
        seen_country=rng.random(n) < 0.5,
        merchant_counts={k: counts() for k in MERCHANT_WINDOWS_MS},
        merchant_known=counts(),
        merchant_fraud=counts() / 10,
        event_row=rows,
        event_ts=ts[rows] - rng.integers(0, 8 * 86_400_000, len(rows)),
        event_amount=rng.gamma(2.0, 30.0, len(rows)),
    )
    return txns, rng.random(n) < 0.9, base


def _best_us(call: Callable[[], object]) -> float:
    timer = timeit.Timer(call)
    number, _ = timer.autorange()
    return min(timer.repeat(5, number)) / number * 1e6


def bench_spec() -> FeatureSpec:
    """A feature spec with every feature and small vocabularies."""
    vocab = {
        "merchant_category": ("electronics", "food", "games", "travel"),
        "currency": ("EUR", "GBP", "USD"),
        "device_type": ("desktop", "mobile"),
        "channel": ("app", "web"),
        "country": ("DE", "FR", "GB", "US"),
    }
    features = tuple(
        [
            "amount",
            "log_amount",
            *(f"{c}_code" for c in vocab),
            *(f"user_txn_count_{w}" for w in ("1h", "24h", "7d")),
            *(f"user_amount_sum_{w}" for w in ("1h", "24h", "7d")),
            "user_amount_zscore",
            "user_prior_txn_count",
            "seconds_since_last_txn",
            "is_new_device",
            "is_new_merchant",
            "is_new_country",
            "hour",
            "weekday",
            "is_night",
            "is_weekend",
            "merchant_txn_count_24h",
            "merchant_txn_count_7d",
            "merchant_labels_known",
            "merchant_fraud_rate",
        ]
    )
    return FeatureSpec(FeatureConfig(), features, {}, vocab, 0.01, "bench")


def measure() -> list[dict[str, Any]]:
    """Per-call microseconds of every case, with the `fraud_assets` on the path."""
    spec = bench_spec()
    rng = np.random.default_rng(7)
    rows = []
    for n, case in CASES:
        txns, adds, base = make_batch(n, case, rng)
        ts, amount = txns["ts_ms"], txns["amount"]
        rows.append(
            {
                "n": n,
                "case": case,
                "batch_features_us": _best_us(partial(batch_features, txns, adds, base, spec)),
                "prior_state_us": _best_us(
                    partial(batch_prior_state, ts, amount, txns, adds, base)
                ),
            }
        )
    return rows


def _measure_revision(revision: str) -> list[dict[str, Any]]:
    """The same cases against `fraud_assets` as of a git revision, in a fresh process."""
    with tempfile.TemporaryDirectory() as folder:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", revision, "fraud_assets"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        env = {**os.environ, "PYTHONPATH": folder}
        out = subprocess.run(
            [sys.executable, __file__, "--json"], env=env, check=True, capture_output=True
        ).stdout
        measured = json.loads(out)
        if not measured["source"].startswith(str(Path(folder).resolve())):
            raise RuntimeError(f"the baseline run imported {measured['source']}")
    return measured["rows"]


def _source() -> str:
    """Where the measured `fraud_assets` was imported from."""
    return str(Path(live_batch.__file__).resolve().parent.parent)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="git revision to measure too, e.g. 9c29836")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = parser.parse_args()
    rows = measure()
    if args.json:
        print(json.dumps({"source": _source(), "rows": rows}))
        return 0
    old = _measure_revision(args.baseline) if args.baseline else None
    print(f"command: {' '.join([os.path.relpath(sys.executable), *sys.argv])}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"fraud_assets: {_source()}" + (f"; before: git {args.baseline}" if old else ""))
    header = f"{'n':>6} {'case':9} {'batch_features':>15} {'prior_state':>12}"
    if old:
        header += f" {'before':>12} {'before':>12}"
    print(header + "   (us a call)")
    for k, row in enumerate(rows):
        line = (
            f"{row['n']:>6} {row['case']:9} {row['batch_features_us']:>15.1f}"
            f" {row['prior_state_us']:>12.1f}"
        )
        if old:
            line += f" {old[k]['batch_features_us']:>12.1f} {old[k]['prior_state_us']:>12.1f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
