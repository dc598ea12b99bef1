"""Explanation micro-benchmark: per-row cost of exact TreeSHAP and of path attribution.

    .venv/bin/python benchmarks/explain_bench.py --trees 200 --depth 6 --rows 300

1. Builds the platform's features (27 of them) on `--transactions` synthetic payments
   (the generator, ingestion and point-in-time features the pipeline uses), then trains
   an xgboost model on them with the platform's default parameters, but exactly
   `--trees` rounds of depth `--depth` (no early stopping), one thread. `--model` loads
   an xgboost model file instead (it must take the same 27 features).
2. Explains `--rows` payments one at a time, as `POST /predict/explain` does, with each
   method in turn, block by block (`--rounds` blocks, the order rotating every block, so
   each method runs warm and a busy neighbour hurts every method alike):
   * `treeshap_tables`: `serving.attribution.TreeShap` (what the service runs): leaf
     tables built at load, read per row (`--max-table-mib` bounds their memory);
   * `treeshap_walker`: the same class with no table memory, so every tree is walked
     with Algorithm 2 (the service's previous exact path, and the fallback for trees
     whose tables exceed the bound);
   * `xgboost_pred_contribs`: a one-row DMatrix and `booster.predict(pred_contribs=True)`,
     one thread (the service's exact path before the compiled walker);
   * `shap_tree_explainer`: `shap.TreeExplainer(booster).shap_values(row)` with the
     additivity check off, if shap imports;
   * `saabas_numba`: `serving.attribution.PathAttribution` (the fast reason codes).
3. Measures how far both TreeSHAP paths are from xgboost's contributions on those rows.

Prints its command line, one line per method, the tables' build time and memory, then the
figures as one JSON object on the last line: per method the p50 and p99 wall time per row
in microseconds and the p50 CPU time of the calling thread (less sensitive to other
processes on a shared machine), plus the model's size, the tables' build time (the first
build includes numba's compilation, the second is what a champion swap costs) and memory,
how many trees were walked instead, the largest difference to xgboost of each TreeSHAP
path and the load average before and after.
"""

import argparse
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from fraud_assets.core.features import FeatureConfig, build_feature_spec, compute_features
from fraud_assets.core.ingest import DatasetConfig, ingest_frame
from fraud_assets.core.schema import sort_canonical
from fraud_assets.core.synthetic import SyntheticConfig, generate
from fraud_assets.core.training import DEFAULT_PARAMS
from serving.attribution import DEFAULT_MAX_TABLE_BYTES, PathAttribution, TreeEnsemble, TreeShap


def platform_features(transactions: int, days: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The platform's feature matrix (float32, NaN where a feature is missing) and labels."""
    raw = generate(SyntheticConfig(n_transactions=transactions, days=days, seed=seed))
    frame = sort_canonical(ingest_frame(raw, DatasetConfig(name="bench", path="<memory>")).valid)
    spec = build_feature_spec(frame, FeatureConfig())
    features = compute_features(frame, spec)
    x = features[list(spec.features)].to_numpy(np.float32)
    y = frame.set_index("transaction_id").loc[features["transaction_id"], "is_fraud"]
    return x, y.to_numpy(np.float32)


def train(x: np.ndarray, y: np.ndarray, trees: int, depth: int, seed: int) -> xgb.Booster:
    """The platform's default xgboost parameters with a fixed number of rounds and depth."""
    defaults = DEFAULT_PARAMS["xgboost"]
    params = {
        "objective": "binary:logistic",
        "tree_method": "hist",
        "max_depth": depth,
        "eta": defaults["learning_rate"],
        "subsample": defaults["subsample"],
        "colsample_bytree": defaults["colsample_bytree"],
        "min_child_weight": defaults["min_child_weight"],
        "scale_pos_weight": (len(y) - y.sum()) / max(y.sum(), 1.0),
        "nthread": 1,
        "seed": seed,
    }
    return xgb.train(params, xgb.DMatrix(x, y), trees)


def time_rows(
    methods: dict[str, Callable[[np.ndarray], Any]], rows: np.ndarray, rounds: int
) -> dict[str, dict[str, float]]:
    """Explain every row alone with every method; per method p50/p99 wall and p50 CPU (µs).

    The rows are split into `rounds` blocks; each method explains a whole block in turn
    (in a rotating order), so every method runs warm, as in a stream of requests, and a
    busy neighbour on a shared machine hurts every method alike.
    """
    names = list(methods)
    wall: dict[str, list[int]] = {name: [] for name in names}
    cpu: dict[str, list[int]] = {name: [] for name in names}
    for r, block in enumerate(np.array_split(rows, rounds)):
        for j in range(len(names)):
            name = names[(r + j) % len(names)]
            method = methods[name]
            for row in block:
                one = row[None, :]
                c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
                method(one)
                t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
                wall[name].append(t1 - t0)
                cpu[name].append(c1 - c0)
    return {
        name: {
            "p50_us": round(float(np.percentile(wall[name], 50)) / 1e3, 1),
            "p99_us": round(float(np.percentile(wall[name], 99)) / 1e3, 1),
            "cpu_p50_us": round(float(np.percentile(cpu[name], 50)) / 1e3, 1),
        }
        for name in names
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--rows", type=int, default=300, help="rows explained per method")
    parser.add_argument("--rounds", type=int, default=5, help="blocks the rows are split into")
    parser.add_argument("--transactions", type=int, default=30_000)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--model", type=Path, help="an xgboost model file to load instead")
    parser.add_argument(
        "--max-table-mib", type=float, default=DEFAULT_MAX_TABLE_BYTES / 2**20,
        help="memory bound of the TreeSHAP leaf tables",
    )  # fmt: skip
    args = parser.parse_args()
    command = " ".join([Path(sys.executable).name, *sys.argv])
    print(command, flush=True)
    load_before = os.getloadavg()

    t0 = time.perf_counter()
    x, y = platform_features(args.transactions, args.days, args.seed)
    print(f"{len(x):,} payments, {x.shape[1]} features in {time.perf_counter() - t0:.1f} s")
    if args.model is not None:
        booster = xgb.Booster()
        booster.load_model(str(args.model))
    else:
        t0 = time.perf_counter()
        booster = train(x, y, args.trees, args.depth, args.seed)
        print(f"trained in {time.perf_counter() - t0:.1f} s")
    booster.set_param({"nthread": 1})
    trees = TreeEnsemble.from_booster(booster)
    if trees.n_features != x.shape[1]:
        parser.error(f"the model takes {trees.n_features} features, the platform has {x.shape[1]}")
    rng = np.random.default_rng(args.seed)
    rows = x[rng.choice(len(x), size=args.rows, replace=False)]

    max_table_bytes = int(args.max_table_mib * 2**20)
    t0 = time.perf_counter()
    shap_tables = TreeShap(trees, max_table_bytes=max_table_bytes)
    first_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    shap_tables = TreeShap(trees, max_table_bytes=max_table_bytes)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    shap_walker = TreeShap(trees, max_table_bytes=0)
    prepared = time.perf_counter() - t0
    saabas = PathAttribution(trees)
    t0 = time.perf_counter()
    shap_tables.contributions(rows[:1])
    shap_walker.contributions(rows[:1])
    saabas.contributions(rows[:1])
    compiled = time.perf_counter() - t0
    print(
        f"leaf tables: {shap_tables.table_bytes / 2**20:.1f} MiB, built in {build * 1e3:.0f} ms "
        f"({first_build:.1f} s with compilation), {shap_tables.walked_trees} trees walked"
    )

    def pred_contribs(one: np.ndarray) -> np.ndarray:
        matrix = xgb.DMatrix(one, nthread=1)
        return booster.predict(matrix, pred_contribs=True, validate_features=False)

    methods: dict[str, Callable[[np.ndarray], Any]] = {
        "treeshap_tables": shap_tables.contributions,
        "treeshap_walker": shap_walker.contributions,
        "xgboost_pred_contribs": pred_contribs,
    }
    try:
        import shap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            explainer = shap.TreeExplainer(booster)

        def shap_values(one: np.ndarray) -> Any:
            return explainer.shap_values(one, check_additivity=False)

        methods["shap_tree_explainer"] = shap_values
    except Exception as exc:  # shap is optional here: report why it is missing
        print(f"shap.TreeExplainer skipped: {type(exc).__name__}: {exc}")
    methods["saabas_numba"] = saabas.contributions
    for method in methods.values():  # warm every path (allocators, shap's first call)
        for row in rows[:5]:
            method(row[None, :])

    figures = time_rows(methods, rows, args.rounds)
    reference = pred_contribs(rows)

    def max_abs_diff(explainer: TreeShap) -> float:
        contrib, bias = explainer.contributions(rows)
        return float(
            max(np.abs(contrib - reference[:, :-1]).max(), np.abs(bias - reference[:, -1]).max())
        )

    for name, stats in figures.items():
        print(
            f"{name:22s} p50 {stats['p50_us']:9.1f} µs  p99 {stats['p99_us']:9.1f} µs  "
            f"cpu p50 {stats['cpu_p50_us']:9.1f} µs"
        )
    result = {
        "per_row": figures,
        "trees": len(trees.roots),
        "max_depth": trees.max_depth,
        "leaves": int(trees.is_leaf.sum()),
        "features": trees.n_features,
        "rows": args.rows,
        "max_abs_diff_vs_xgboost": {
            "treeshap_tables": max_abs_diff(shap_tables),
            "treeshap_walker": max_abs_diff(shap_walker),
        },
        "table_build_s": round(build, 3),
        "table_first_build_s": round(first_build, 2),
        "table_mib": round(shap_tables.table_bytes / 2**20, 2),
        "max_table_mib": args.max_table_mib,
        "walked_trees": shap_tables.walked_trees,
        "walker_prepare_s": round(prepared, 3),
        "numba_compile_s": round(compiled, 2),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "machine": f"{platform.machine()} {os.cpu_count()} cpus python {sys.version.split()[0]}",
        "command": command,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
