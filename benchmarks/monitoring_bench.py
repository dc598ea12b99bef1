"""Monitoring benchmark: each monitoring asset on a window of N scored transactions.

    .venv/bin/python benchmarks/monitoring_bench.py --scored 1000000

1. Generates `--history + --scored` synthetic transactions over `--days` days with the drift
   knob on (the last fifth of the period is shifted, as in the monitoring loop test).
2. Materializes the training graph on the days before the scored window (ingestion, features,
   model, gate, explanations, online store), so there is a champion and every customer's
   history is in the online store.
3. Scores the next `--scored` transactions in time order through the scoring service's
   batch path, in-process: `ScoringEngine.predict_batch` with 10,000 transactions a call,
   which computes online features, scores, commits each payment to the online store and
   writes the prediction log (the log is flushed after every call, so nothing is dropped).
4. Ingests the scored days too (their labels and protected attributes arrive with them,
   as the daily files do in production).
5. Materializes each monitoring asset on its own, the scored window being the whole log:
   `scored_predictions`, `drift_report`, `performance_report`, `bias_report`, `model_card`.

Prints progress, then the figures as one JSON object on the last line: per asset the wall
time of its materialization, the asset step's own time, and the peak resident memory of this
process during it (the kernel's high-water mark, reset before each asset), plus the setup
timings and the command.
"""

import argparse
import json
import platform
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from fraud_assets import datasets, features, models, monitoring, serving_state
from fraud_assets.core.features import compute_features
from fraud_assets.datasets import read_history
from fraud_pipelines.sandbox import (
    ASSET_PARTITION_RANGE_END,
    ASSET_PARTITION_RANGE_START,
    Platform,
    make_platform,
)
from serving.config import ServingSettings
from serving.engine import ScoringEngine
from serving.prediction_log import age_band
from serving.schemas import BatchRequest, Transaction

ASSETS = dg.load_assets_from_modules([datasets, features, models, monitoring, serving_state])
TRAINING = [
    "transactions",
    "feature_set",
    "fraud_model",
    "champion_model",
    "model_explanations",
    "online_features",
]
MONITORING = ["scored_predictions", "drift_report", "performance_report", "bias_report"]
BATCH = 10_000
# The benchmark times monitoring, not the model: any champion that tells fraud from noise will
# do, so small smoke runs (a few days of data) pass the gate too.
BENCH_BASELINES = {
    "average_precision": ">= 0.1",
    "recall_at_1pct_fpr": ">= 0.0",
    "auc_roc": ">= 0.7",
    "precision": ">= 0.0",
    "recall": ">= 0.0",
    "f1": ">= 0.0",
    "fpr": "<= 1.0",
}


def reset_peak_rss() -> None:
    """Reset this process's resident-memory high-water mark (Linux `clear_refs`)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """This process's resident-memory high-water mark since the last reset, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def materialize(sandbox: Platform, selection: list[str], first: str, last: str, ops: dict) -> dict:
    """Materialize `selection`; return wall seconds, per-step seconds and peak RSS."""
    reset_peak_rss()
    started = time.perf_counter()
    result = dg.materialize(
        ASSETS,
        selection=selection,
        instance=sandbox.instance,
        resources=sandbox.resources,
        run_config={"ops": ops},
        tags={ASSET_PARTITION_RANGE_START: first, ASSET_PARTITION_RANGE_END: last},
        raise_on_error=False,
    )
    wall = time.perf_counter() - started
    if not result.success:
        failures = [e.message for e in result.all_events if e.is_failure]
        raise RuntimeError(f"materializing {selection} failed: {failures[-3:]}")
    steps = {
        s.step_key: round(s.end_time - s.start_time, 2)
        for s in sandbox.instance.get_run_step_stats(result.run_id)
        if s.end_time and s.start_time
    }
    return {"wall_s": round(wall, 2), "steps_s": steps, "peak_rss_mb": round(peak_rss_mb())}


def score(sandbox: Platform, period: pd.DataFrame) -> dict:
    """Score `period` in time order through the engine's batch path; return the figures."""
    env = {**sandbox.env(), "FRAUD_AUTH_DISABLED": "1", "FRAUD_MODEL_POLL_SECONDS": "3600"}
    engine = ScoringEngine(ServingSettings.from_env(env))
    fields = [c for c in Transaction.model_fields if c in period.columns]
    started = time.perf_counter()
    try:
        if not engine.champion.wait_checked(120):
            raise RuntimeError(f"no champion loaded: {engine.champion.status.reason}")
        for start in range(0, len(period), BATCH):
            chunk = period.iloc[start : start + BATCH][fields].to_dict("records")
            for row in chunk:
                row["timestamp"] = row["timestamp"].isoformat()
            engine.predict_batch(BatchRequest.model_validate({"transactions": chunk}))
            if not engine.log.flush(timeout=600):
                raise RuntimeError("the prediction log writer did not keep up")
            done = start + len(chunk)
            if done % 100_000 == 0 or done == len(period):
                rate = done / (time.perf_counter() - started)
                print(f"scored {done:>9,} ({rate:,.0f} tx/s)", flush=True)
        written, dropped = engine.log.written, engine.log.dropped
    finally:
        engine.close()
    seconds = time.perf_counter() - started
    if dropped or written != len(period):
        raise RuntimeError(f"prediction log: {written} written, {dropped} dropped")
    return {
        "path": "engine",
        "rows": written,
        "seconds": round(seconds, 1),
        "rows_per_s": round(written / seconds),
    }


def score_offline(sandbox: Platform, period: pd.DataFrame) -> dict:
    """Fill the prediction log for `period` without the per-payment online store.

    The same pieces as the service, minus its per-payment SQLite commits: the champion the
    engine loads and verifies, features from the feature module's offline path (the one
    the parity test proves equal to the online path), the champion's ONNX scorer and
    decision rule, and the service's prediction-log writer, with rows shaped as the engine
    writes them (endpoint `predict_batch`). Needs the window's days ingested first.
    """
    env = {**sandbox.env(), "FRAUD_AUTH_DISABLED": "1", "FRAUD_MODEL_POLL_SECONDS": "3600"}
    engine = ScoringEngine(ServingSettings.from_env(env))
    started = time.perf_counter()
    try:
        if not engine.champion.wait_checked(120):
            raise RuntimeError(f"no champion loaded: {engine.champion.status.reason}")
        model = engine.champion.current
        lake = sandbox.resources["lake"]
        wanted = set(period["transaction_id"])
        history = read_history(lake)
        matrix = compute_features(history, model.spec)
        keep = matrix["transaction_id"].isin(wanted).to_numpy()
        window = history.loc[keep].reset_index(drop=True)
        fields = [c for c in Transaction.model_fields if c in window.columns]
        window = window[fields].astype(object).where(window[fields].notna(), None)
        x = matrix.loc[keep, list(model.spec.features)].to_numpy(dtype=np.float64)
        del history, matrix
        features_s = time.perf_counter() - started
        names = list(model.spec.features)
        for start in range(0, len(window), BATCH):
            t0 = time.perf_counter()
            block = x[start : start + BATCH]
            scores = model.scorer.predict(block)
            rows = window.iloc[start : start + BATCH].to_dict("records")
            latency = round((time.perf_counter() - t0) * 1000.0, 3)
            for row, vector, score in zip(rows, block, scores, strict=True):
                decision = model.decide(float(score))
                engine.log.log(
                    {
                        "prediction_id": str(uuid.uuid4()),
                        "transaction_id": row["transaction_id"],
                        "scored_at": datetime.now(UTC),
                        "transaction_ts": pd.Timestamp(row["timestamp"]).to_pydatetime(),
                        "user_id": row["user_id"],
                        "merchant_id": row["merchant_id"],
                        "merchant_category": row.get("merchant_category"),
                        "amount": float(row["amount"]),
                        "currency": row.get("currency"),
                        "device_id": row.get("device_id"),
                        "device_type": row.get("device_type"),
                        "channel": row.get("channel"),
                        "country": row.get("country"),
                        "age_band": age_band(row.get("age")),
                        "features": dict(zip(names, vector.tolist(), strict=True)),
                        "fraud_score": float(score),
                        "decision": decision,
                        "model_version": model.version,
                        "latency_ms": latency,
                        "degraded": False,
                        "endpoint": "predict_batch",
                        "api_key": None,
                    }
                )
            if not engine.log.flush(timeout=600):
                raise RuntimeError("the prediction log writer did not keep up")
            done = start + len(rows)
            if done % 100_000 == 0 or done == len(window):
                rate = done / (time.perf_counter() - started)
                print(f"logged {done:>9,} ({rate:,.0f} tx/s)", flush=True)
        written, dropped = engine.log.written, engine.log.dropped
    finally:
        engine.close()
    seconds = time.perf_counter() - started
    if dropped or written != len(period):
        raise RuntimeError(f"prediction log: {written} written of {len(period)}, {dropped} dropped")
    return {
        "path": "offline",
        "rows": written,
        "features_s": round(features_s, 1),
        "seconds": round(seconds, 1),
        "rows_per_s": round(written / seconds),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scored", type=int, default=1_000_000, help="rows in the window")
    parser.add_argument("--history", type=int, default=500_000, help="rows to train on")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument(
        "--path",
        choices=["engine", "offline"],
        default="engine",
        help="engine: ScoringEngine.predict_batch; offline: see score_offline (faster)",
    )
    args = parser.parse_args()

    figures: dict[str, object] = {"scored": args.scored, "history": args.history}
    setup: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="monitoring-bench-") as folder:
        started = time.perf_counter()
        sandbox = make_platform(
            Path(folder), rows=args.history + args.scored, days=args.days, drift=True
        )
        setup["generate_s"] = round(time.perf_counter() - started, 1)
        raw = pd.read_parquet(sandbox.root / "raw" / "synthetic.parquet")
        raw = raw.sort_values(["timestamp", "transaction_id"], kind="stable")
        day = raw["timestamp"].dt.strftime("%Y-%m-%d")
        # Train on whole days before the window; score the next `--scored` rows after them.
        first_window_day = day.iloc[args.history]
        history_days = day < first_window_day
        cutoff = day[history_days].iloc[-1]
        period = raw[~history_days].head(args.scored)
        if len(period) < args.scored:
            raise RuntimeError(f"only {len(period)} rows after {cutoff}")
        last_scored = period["timestamp"].iloc[-1].strftime("%Y-%m-%d")
        first_scored = period["timestamp"].iloc[0].strftime("%Y-%m-%d")
        figures.update(
            trained_on=f"{sandbox.first_day}..{cutoff} ({int(history_days.sum()):,} rows)",
            window=f"{first_scored}..{last_scored}",
        )
        print(f"training on {figures['trained_on']}, scoring {figures['window']}", flush=True)

        model = {"baselines": BENCH_BASELINES, "label_delay_days": 7.0}
        setup["training_graph"] = materialize(
            sandbox, TRAINING, sandbox.first_day, cutoff, {"fraud_model": {"config": model}}
        )
        print(f"training graph: {setup['training_graph']}", flush=True)
        ingest = ("ingest_scored_days", ["transactions"], first_scored, last_scored)
        merge = {"transactions": {"config": {"merge": True}}}
        if args.path == "offline":
            setup[ingest[0]] = materialize(sandbox, *ingest[1:], merge)
        reset_peak_rss()
        scorer = score_offline if args.path == "offline" else score
        setup["scoring"] = scorer(sandbox, period)
        setup["scoring"]["peak_rss_mb"] = round(peak_rss_mb())
        print(f"scoring: {setup['scoring']}", flush=True)
        del raw, period, day, history_days
        if args.path == "engine":
            setup[ingest[0]] = materialize(sandbox, *ingest[1:], merge)

        window = {"window_days": float(args.days + 1), "window_end": None}
        assets: dict[str, dict] = {}
        for asset in [*MONITORING, "model_card"]:
            ops = {"scored_predictions": {"config": window}} if asset == MONITORING[0] else {}
            assets[asset] = materialize(sandbox, [asset], sandbox.first_day, last_scored, ops)
            event = sandbox.instance.get_latest_materialization_event(dg.AssetKey(asset))
            meta = event.asset_materialization.metadata
            if "status" in meta:
                assets[asset]["status"] = meta["status"].value
            if "dagster/row_count" in meta:
                assets[asset]["rows"] = meta["dagster/row_count"].value
            if "rows" in meta:
                assets[asset]["rows"] = meta["rows"].value
            if "n_current" in meta:
                assets[asset]["rows"] = meta["n_current"].value
            print(f"{asset:20s} {assets[asset]}", flush=True)
    figures.update(
        assets=assets,
        setup=setup,
        machine=f"{platform.machine()} python {sys.version.split()[0]}",
        command=" ".join([Path(sys.executable).name, *sys.argv]),
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
