"""End-to-end pipeline benchmark: the whole asset graph on N synthetic transactions.

    .venv/bin/python benchmarks/pipeline_bench.py --rows 1000000

Prints one line per step, then the figures as one JSON object on the last line:
rows, total_s (generation excluded), per-asset seconds, features_rows_per_s (the
feature computation alone, as the `feature_set` asset measures it) and peak_rss_mb.
"""

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

from fraud_assets import datasets, features, models, serving_state
from fraud_pipelines.sandbox import (
    ASSET_PARTITION_RANGE_END,
    ASSET_PARTITION_RANGE_START,
    make_platform,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        sandbox = make_platform(Path(folder), rows=args.rows, days=args.days)
        generated = time.perf_counter() - started
        assets = dg.load_assets_from_modules([datasets, features, models, serving_state])
        t0 = time.perf_counter()
        result = dg.materialize(
            assets,
            instance=sandbox.instance,
            resources=sandbox.resources,
            tags={
                ASSET_PARTITION_RANGE_START: sandbox.first_day,
                ASSET_PARTITION_RANGE_END: sandbox.last_day,
            },
            raise_on_error=False,
        )
        total = time.perf_counter() - t0
        steps: dict[str, float] = {}
        for stats in sandbox.instance.get_run_step_stats(result.run_id):
            if stats.end_time and stats.start_time:
                steps[stats.step_key] = round(stats.end_time - stats.start_time, 2)
        meta = sandbox.instance.get_latest_materialization_event(
            dg.AssetKey("feature_set")
        ).asset_materialization.metadata
        model_meta = sandbox.instance.get_latest_materialization_event(
            dg.AssetKey("fraud_model")
        ).asset_materialization.metadata
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for step, seconds in steps.items():
        print(f"{step:22s} {seconds:8.2f} s")
    figures = {
        "rows": args.rows,
        "days": args.days,
        "success": result.success,
        "generate_s": round(generated, 2),
        "total_s": round(total, 2),
        "steps_s": steps,
        "features_rows_per_s": round(meta["rows_per_second"].value),
        "peak_rss_mb": round(peak_mb),
        "test_average_precision": round(model_meta["average_precision"].value, 4),
        "test_recall_at_1pct_fpr": round(model_meta["recall_at_1pct_fpr"].value, 4),
        "test_auc_roc": round(model_meta["auc_roc"].value, 4),
        "test_precision": round(model_meta["precision"].value, 4),
        "test_recall": round(model_meta["recall"].value, 4),
        "test_fpr": round(model_meta["fpr"].value, 4),
        "machine": f"{platform.machine()} python {sys.version.split()[0]}",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    print(json.dumps(figures))
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
