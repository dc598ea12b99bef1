"""Scoring service benchmark: our /predict against `mlflow models serve` and a bare floor.

    .venv/bin/python benchmarks/serving_bench.py [--rows 400000] [--duration 20]

It runs the whole comparison by itself, on this machine, with `wrk` (installed with
apt-get if missing):

1. Builds a platform in a temporary folder: synthetic transactions (60 days from
   2026-01-01), the whole asset graph (features, a trained and checked model registered
   as `fraud_detector@champion`, the online store loaded from history). The last day is
   held back as live traffic.
2. Starts three servers, each with 2 worker processes:
   * ours: `bentoml serve serving.service:FraudScorer`, with API keys, the rate limiter
     (raised so the load is not refused), online features, reason codes and the
     prediction log all on;
   * `mlflow models serve` of the same ONNX model (`OMP_NUM_THREADS=1`), bare inference
     on a ready feature vector;
   * the floor: bare FastAPI + ONNX Runtime under uvicorn (`benchmarks/floor_app.py`),
     access log off.
3. Loads them with wrk: single payments at 16 and at 1 connection (every request a new
   transaction_id, so nothing is answered from the idempotency record), batches of 1,000
   payments, and /predict/explain at 1 connection. The held-back day is replayed as the
   following days: each pass over it is shifted a day later than the one before (and each
   run starts after the days earlier runs used), so customers' histories grow as under
   real traffic. Replaying it onto its own day again and again would instead give every
   customer that day's payments many times over, and make every figure depend on how
   long the runs last.

It prints the wrk command of every run and, on its last line, one JSON object with
`rps_c16`, `p99_c16_ms`, `p50_c1_ms`, `p99_c1_ms`, `mlflow_rps_c16`, `floor_rps_c16`,
`batch_tps`, `explain_p50_ms` and the rest of the figures. `cpu_c16` and `cpu_batch` say
where the CPU went during the 16-connection and the batch runs (`benchmarks/cpu_meter.py`):
the cores used by our service's event loops (`ours_main`) and its other threads
(`ours_threads`), by Redis and PostgreSQL on the stack, and by the rest of the machine
(wrk and the kernel), each also as µs of CPU per request or per payment; `cpu_floor_c16`
and `cpu_mlflow_c16` the same for the references.

With `--stack DIR` it benches the production topology instead: the running, seeded native
stack in DIR (`FRAUD_RATE_LIMIT_PER_MIN=100000000 ./scripts/stack.sh up`, then
`./scripts/stack.sh seed`), whose two scoring replicas (one worker each) share the Redis
online store and the PostgreSQL prediction log. Load at 16 connections is split 8 + 8 across
the replicas by two wrk processes started together; the references run on the stack's
champion.
"""

import argparse
import concurrent.futures
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from cpu_meter import CpuMeter

from fraud_pipelines.process import bentoml_serve_command, free_port, running_server

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA_START = "2026-01-01"
# Every request body is one of `bodies`, each given as its pieces: text, 0 where the
# run-unique id goes, and a number (epoch seconds) where a payment's timestamp goes. Each
# pass over the bodies is moved on by a day (`day_shift`), so a replay continues the
# history like the next days of traffic instead of piling every pass onto the same day.
WRK_SCRIPT = """-- bodies: %(count)d
local bodies = {%(bodies)s}
local day_shift = %(day_shift)d
local max_days = %(max_days)d
local day0 = tonumber(os.getenv("BENCH_DAY0") or "0")
local path = "%(path)s"
local headers = {["Content-Type"] = "application/json"%(key)s}
local counter = 0
tid = 0
statuses = {}
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

-- After `until_epoch` (0: never) only GET /healthz is sent, so every scoring request has
-- been answered by the time wrk stops and its answers can be counted exactly.
local until_epoch = %(until)d
scored = 0

function request()
  if until_epoch > 0 and os.time() >= until_epoch then
    return wrk.format("GET", "/healthz")
  end
  counter = counter + 1
  local pieces = bodies[(counter %% #bodies) + 1]
  -- day0 differs between runs of a script, so no run resends an earlier run's ids (which
  -- would be answered from the idempotency record instead of scored).
  local id = "%(run)s-" .. day0 .. "-" .. tid .. "-" .. counter
  -- The two threads take turns over the days: each day gets one pass.
  local day = day0 + math.floor(counter / #bodies) * 2 + tid - 1
  local shift = 0
  if max_days > 0 then shift = (day %% max_days) * day_shift end
  local out = {}
  for k = 1, #pieces do
    local piece = pieces[k]
    if type(piece) == "string" then
      out[k] = piece
    elseif piece == 0 then
      out[k] = id
    else
      out[k] = os.date("!%%Y-%%m-%%dT%%H:%%M:%%S", piece + shift)
    end
  end
  return wrk.format("POST", path, headers, table.concat(out))
end

function response(status, headers, body)
  if until_epoch > 0 and not string.find(body, '"prediction_id"', 1, true) then
    if string.find(body, '"alive"', 1, true) or string.find(body, '"status"', 1, true) or
       status == 200 then
      return  -- a health check of the last seconds
    end
  elseif status == 200 then
    scored = scored + 1
  end
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local bad = 0
  local ok = 0
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    for code, n in pairs(s) do
      if code ~= 200 then bad = bad + n end
    end
    ok = ok + thread:get("scored")
  end
  io.write(string.format(
    'WRKJSON {"requests": %%d, "scored_200": %%d, "seconds": %%.3f, "non_200": %%d, ' ..
    '"socket_errors": %%d, ' ..
    '"p50_ms": %%.3f, "p90_ms": %%.3f, "p99_ms": %%.3f, "max_ms": %%.3f}\\n',
    summary.requests, ok, summary.duration / 1e6, bad,
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is required (apt-get install wrk)")
    return found


def build_platform(root: Path, rows: int, days: int) -> tuple[dict[str, str], pd.DataFrame]:
    """Materialize the graph on all days but the last; return the env and the last day."""
    import dagster as dg

    from fraud_assets import datasets, features, models, serving_state
    from fraud_pipelines.sandbox import (
        ASSET_PARTITION_RANGE_END,
        ASSET_PARTITION_RANGE_START,
        make_platform,
    )

    # The data starts on the first day the partitions know, leaving months to replay its
    # last day on the days after.
    sandbox = make_platform(root, rows=rows, days=days, start=DATA_START)
    last = pd.Timestamp(sandbox.last_day, tz="UTC")
    result = dg.materialize(
        dg.load_assets_from_modules([datasets, features, models, serving_state]),
        instance=sandbox.instance,
        resources=sandbox.resources,
        tags={
            ASSET_PARTITION_RANGE_START: sandbox.first_day,
            ASSET_PARTITION_RANGE_END: (last - pd.Timedelta(days=1)).strftime("%Y-%m-%d"),
        },
        raise_on_error=False,
    )
    if not result.success:
        raise SystemExit("materializing the benchmark platform failed")
    raw = pd.read_parquet(root / "raw" / "synthetic.parquet")
    live = raw[pd.to_datetime(raw["timestamp"], utc=True) >= last].sort_values("timestamp")
    return sandbox.env(), live.reset_index(drop=True)


def time_marker(stamp: pd.Timestamp | str) -> str:
    """A timestamp as the wrk script's marker: its whole seconds move on by a day a pass."""
    stamp = pd.Timestamp(stamp)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return f"#TS:{int(stamp.floor('s').timestamp())}#{stamp.isoformat()[19:]}"


def payloads(live: pd.DataFrame) -> list[dict[str, object]]:
    """Scoring requests (the API's Transaction fields) of the held-back payments."""
    from serving.schemas import Transaction

    out = []
    for record in live.to_dict("records"):
        item: dict[str, object] = {}
        for name in Transaction.model_fields:
            value = record.get(name)
            if value is None or (isinstance(value, float) and np.isnan(value)):
                continue
            if isinstance(value, pd.Timestamp):
                value = time_marker(value)
            item[name] = value.item() if isinstance(value, np.generic) else value
        item["transaction_id"] = f"{item['transaction_id']}-#ID#"
        out.append(item)
    return out


_MARKER = re.compile(r"#ID#|#TS:(-?\d+)#")


def lua_pieces(body: str) -> str:
    """A body as a Lua table of pieces: text, 0 for the id, epoch seconds for a timestamp."""
    pieces: list[str] = []
    start = 0
    for match in _MARKER.finditer(body):
        pieces.append(json.dumps(body[start : match.start()]))
        pieces.append(match.group(1) or "0")
        start = match.end()
    pieces.append(json.dumps(body[start:]))
    return "{" + ", ".join(pieces) + "}"


def lua(
    bodies: Sequence[str],
    path: str,
    run: str,
    key: str | None,
    until_epoch: int = 0,
    max_days: int = 0,
) -> str:
    """The wrk script sending `bodies` in turn; see WRK_SCRIPT for the markers.

    With `max_days` > 0 each pass over the bodies is a day later than the one before, for at
    most `max_days` days (then the days come round again).
    """
    header = f', ["X-API-Key"] = "{key}"' if key else ""
    return WRK_SCRIPT % {
        "bodies": ",\n".join(lua_pieces(b) for b in bodies),
        "count": len(bodies),
        "path": path,
        "key": header,
        "run": run,
        "until": until_epoch,
        "day_shift": 86_400,
        "max_days": max_days,
    }


# The first day of each script's next run, so that no run replays a day another filled.
_NEXT_DAY: dict[Path, int] = {}


def _day_env(script: Path) -> dict[str, str]:
    return {**os.environ, "BENCH_DAY0": str(_NEXT_DAY.get(script, 0))}


def _days_used(script: Path, requests: int) -> None:
    first = script.read_text().split("\n", 1)[0]  # "-- bodies: N"
    bodies = int(first.rsplit(" ", 1)[1])
    _NEXT_DAY[script] = _NEXT_DAY.get(script, 0) + requests // max(1, bodies) + 4


def _wrk_figures(out: str) -> dict[str, float]:
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    figures: dict[str, float] = json.loads(line.removeprefix("WRKJSON "))
    figures["rps"] = figures["requests"] / figures["seconds"]
    return figures


def run_wrk(
    wrk: str, url: str, script: Path, connections: int, seconds: int, label: str
) -> dict[str, float]:
    threads = min(connections, 2)
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    print(f"[{label}] {' '.join(cmd)}", flush=True)
    env = _day_env(script)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    figures = _wrk_figures(out)
    _days_used(script, int(figures["requests"]))
    print(
        f"[{label}] {figures['rps']:.0f} req/s  p50 {figures['p50_ms']:.2f} ms  "
        f"p99 {figures['p99_ms']:.2f} ms  non-200 {figures['non_200']}  "
        f"socket errors {figures['socket_errors']}",
        flush=True,
    )
    return figures


def warm(wrk: str, url: str, script: Path) -> None:
    out = subprocess.run(
        [wrk, "-t1", "-c2", "-d3s", "-s", str(script), url],
        check=True,
        capture_output=True,
        text=True,
        env=_day_env(script),
    ).stdout
    _days_used(script, int(_wrk_figures(out)["requests"]))


def run_split(
    wrk: str, urls: Sequence[str], script: Path, connections: int, seconds: int, label: str
) -> dict[str, float]:
    """wrk against several replicas at once, the connections shared out; figures combined.

    Requests and rates add up; p50 is the replicas' request-weighted mean and p99 / max the
    worst replica's (an upper bound of the combined percentile).
    """
    if len(urls) == 1:
        return run_wrk(wrk, urls[0], script, connections, seconds, label)
    shares = [connections // len(urls) + (i < connections % len(urls)) for i in range(len(urls))]
    with concurrent.futures.ThreadPoolExecutor(len(urls)) as pool:
        parts = list(
            pool.map(
                lambda args: run_wrk(wrk, args[0], script, args[1], seconds, f"{label} {args[0]}"),
                [(u, c) for u, c in zip(urls, shares, strict=True) if c],
            )
        )
    total = sum(p["requests"] for p in parts)
    return {
        "requests": total,
        "scored_200": sum(p["scored_200"] for p in parts),
        "seconds": max(p["seconds"] for p in parts),
        "non_200": sum(p["non_200"] for p in parts),
        "socket_errors": sum(p["socket_errors"] for p in parts),
        "p50_ms": sum(p["p50_ms"] * p["requests"] for p in parts) / max(1, total),
        "p90_ms": max(p["p90_ms"] for p in parts),
        "p99_ms": max(p["p99_ms"] for p in parts),
        "max_ms": max(p["max_ms"] for p in parts),
        "rps": sum(p["rps"] for p in parts),
    }


def replay_days(live: pd.DataFrame) -> int:
    """How many later days the held-back payments can be replayed on without reaching now."""
    last = pd.to_datetime(live["timestamp"], utc=True).max()
    return max(0, int((pd.Timestamp.now(tz="UTC") - last) / pd.Timedelta(days=1)) - 1)


def write_scripts(
    folder: Path,
    items: list[dict[str, object]],
    vectors: np.ndarray,
    key: str,
    run: str,
    max_days: int,
) -> Path:
    """The wrk scripts: payments for ours, feature vectors for the references.

    Payments are replayed a day later on each pass, for at most `max_days` days.
    """
    scripts = folder / "wrk"
    scripts.mkdir(parents=True, exist_ok=True)
    single = [json.dumps(item) for item in items]
    (scripts / "predict.lua").write_text(lua(single, "/predict", run, key, max_days=max_days))
    (scripts / "explain.lua").write_text(
        lua(single, "/predict/explain", f"{run}x", key, max_days=max_days)
    )
    # The held-back day in consecutive batches of 1,000 (its last partial batch left out),
    # so a pass holds each payment once. The items of a batch share the per-request suffix;
    # their own ids keep them apart.
    batch_bodies = [
        json.dumps({"transactions": items[b * 1000 : (b + 1) * 1000]})
        for b in range(max(1, len(items) // 1000))
    ]
    (scripts / "batch.lua").write_text(
        lua(batch_bodies, "/predict/batch", f"{run}b", key, max_days=max_days)
    )
    floor_bodies = [json.dumps({"features": row.tolist()}) for row in vectors]
    mlflow_bodies = [json.dumps({"inputs": [row.tolist()]}) for row in vectors]
    (scripts / "floor.lua").write_text(lua(floor_bodies, "/predict", run, None))
    (scripts / "mlflow.lua").write_text(lua(mlflow_bodies, "/invocations", run, None))
    return scripts


def measure_ours(
    wrk: str, urls: Sequence[str], scripts: Path, seconds: int, meter: CpuMeter
) -> dict[str, Any]:
    """Single payments at 16 and 1 connections, batches of 1,000, and explanations.

    `meter` records where the CPU goes during the 16-connection and the batch runs.
    """
    for url in urls:
        warm(wrk, url, scripts / "predict.lua")
    with meter.run() as cpu_c16:
        c16 = run_split(wrk, urls, scripts / "predict.lua", 16, seconds, "ours /predict c16")
    c1 = run_wrk(wrk, urls[0], scripts / "predict.lua", 1, seconds, "ours /predict c1")
    with meter.run() as cpu_batch:
        batch = run_split(wrk, urls, scripts / "batch.lua", 2, seconds, "ours /predict/batch c2")
    explain = run_wrk(wrk, urls[0], scripts / "explain.lua", 1, seconds, "ours /explain c1")
    return {
        # Cores used by each part, and its µs of CPU per request (per payment for batches).
        "cpu_c16": cpu_c16.report(c16["requests"]),
        "cpu_batch": cpu_batch.report(batch["requests"] * 1000),
        "rps_c16": round(c16["rps"]),
        "p50_c16_ms": round(c16["p50_ms"], 3),
        "p99_c16_ms": c16["p99_ms"],
        "p50_c1_ms": c1["p50_ms"],
        "p99_c1_ms": c1["p99_ms"],
        "rps_c1": round(c1["rps"]),
        "batch_tps": round(batch["rps"] * 1000),
        "batch_p50_ms": round(batch["p50_ms"], 3),
        "explain_p50_ms": explain["p50_ms"],
        "explain_p99_ms": explain["p99_ms"],
        "errors": sum(
            int(r["non_200"]) + int(r["socket_errors"]) for r in (c16, c1, batch, explain)
        ),
    }


def measure_references(
    wrk: str, folder: Path, base_env: dict[str, str], model_onnx: Path, scripts: Path, seconds: int
) -> dict[str, Any]:
    """The bare FastAPI floor and `mlflow models serve` of the champion, 2 workers each."""
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    floor_env = {**base_env, "FLOOR_MODEL": str(model_onnx), "PYTHONPATH": str(ROOT)}
    floor = [str(BIN / "uvicorn"), "benchmarks.floor_app:app", "--workers", "2"]
    floor += ["--no-access-log", "--host", "127.0.0.1", "--port", str(port)]
    with running_server(floor, floor_env, f"{url}/docs", logs / "floor.log") as server:
        warm(wrk, url, scripts / "floor.lua")
        with CpuMeter({"floor": [server.pid]}).run() as cpu_floor:
            f16 = run_wrk(wrk, url, scripts / "floor.lua", 16, seconds, "floor c16")
        f1 = run_wrk(wrk, url, scripts / "floor.lua", 1, seconds, "floor c1")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mlflow_cmd = [str(BIN / "mlflow"), "models", "serve", "-m", "models:/fraud_detector@champion"]
    mlflow_cmd += ["--env-manager", "local", "-w", "2", "-h", "127.0.0.1", "-p", str(port)]
    with running_server(mlflow_cmd, base_env, f"{url}/health", logs / "mlflow.log") as server:
        warm(wrk, url, scripts / "mlflow.lua")
        with CpuMeter({"mlflow": [server.pid]}).run() as cpu_mlflow:
            m16 = run_wrk(wrk, url, scripts / "mlflow.lua", 16, seconds, "mlflow serve c16")
    return {
        "cpu_floor_c16": cpu_floor.report(f16["requests"]),
        "cpu_mlflow_c16": cpu_mlflow.report(m16["requests"]),
        "floor_rps_c16": round(f16["rps"]),
        "floor_p99_c16_ms": f16["p99_ms"],
        "floor_p50_c1_ms": f1["p50_ms"],
        "floor_p99_c1_ms": f1["p99_ms"],
        "mlflow_rps_c16": round(m16["rps"]),
        "mlflow_p99_c16_ms": m16["p99_ms"],
    }


def ratios(out: dict[str, Any]) -> dict[str, float]:
    """Each figure against the references (the issue's goals are on the first one)."""

    def ratio(a: str, b: str) -> float:
        return round(float(out[a]) / max(1e-6, float(out[b])), 2)

    return {
        "rps_c16_vs_mlflow": ratio("rps_c16", "mlflow_rps_c16"),
        "rps_c16_vs_floor": ratio("rps_c16", "floor_rps_c16"),
        "p50_c1_vs_floor": ratio("p50_c1_ms", "floor_p50_c1_ms"),
        "p99_c1_vs_floor": ratio("p99_c1_ms", "floor_p99_c1_ms"),
        "p99_c16_vs_floor": ratio("p99_c16_ms", "floor_p99_c16_ms"),
    }


def home_inputs(home: Path, rows: int = 2000) -> tuple[Path, np.ndarray]:
    """The champion's ONNX file and the last `rows` feature vectors of a platform home."""
    from fraud_assets.core.features import FeatureSpec

    model_dir = home / "data" / "models" / "latest"
    spec = FeatureSpec.from_json((model_dir / "feature_spec.json").read_text())
    features = pd.read_parquet(
        home / "data" / "features" / "feature_set.parquet", columns=list(spec.features)
    ).tail(rows)
    return model_dir / "model.onnx", features.to_numpy(np.float64)


def tree_count(model_onnx: Path) -> int:
    """Trees in the champion's ONNX file. The references' speed depends on it: ONNX Runtime
    spreads a large tree ensemble over its intra-op threads, which `mlflow models serve`
    leaves at their default, one spinning thread per core (see docs/benchmarks.md)."""
    import onnx

    for node in onnx.load(str(model_onnx)).graph.node:
        if node.op_type.startswith("TreeEnsemble"):
            for attribute in node.attribute:
                if attribute.name == "nodes_treeids":
                    return len(set(attribute.ints))
    return 0


def reference_env(env: dict[str, str]) -> dict[str, str]:
    base_env = {**os.environ, **env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # `mlflow models serve` starts `uvicorn` by name: the environment's bin must be on PATH.
    base_env["PATH"] = f"{BIN}{os.pathsep}{base_env.get('PATH', '')}"
    return base_env


def bench_embedded(
    wrk: str, folder: Path, env: dict[str, str], live: pd.DataFrame, run: str, seconds: int
) -> dict[str, Any]:
    """Ours with the embedded defaults (SQLite store and log), 2 workers, and the references."""
    from serving.keys import ApiKeys

    base_env = reference_env(env)
    key = ApiKeys(env["FRAUD_PLATFORM_DB_URL"]).create(f"bench-{run}")
    model_onnx, vectors = home_inputs(Path(env["FRAUD_HOME"]))
    scripts = write_scripts(folder, payloads(live), vectors, key, run, replay_days(live))
    (folder / "logs").mkdir(exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ours_env = {
        **base_env,
        "FRAUD_RATE_LIMIT_PER_MIN": "100000000",
        "FRAUD_SERVING_WORKERS": "2",
        "PYTHONPATH": str(ROOT),
        # Its own BentoML home, so the benchmark never empties another service's metrics.
        "BENTOML_HOME": str(folder / "bentoml"),
    }
    log = folder / "logs" / "ours.log"
    with running_server(bentoml_serve_command(port), ours_env, f"{url}/readyz", log) as server:
        out = measure_ours(wrk, [url], scripts, seconds, CpuMeter({"ours": [server.pid]}))
    out.update(measure_references(wrk, folder, base_env, model_onnx, scripts, seconds))
    out["model_trees"] = tree_count(model_onnx)
    out["ratios"] = ratios(out)
    out["topology"] = "embedded: 1 service, 2 workers, SQLite online store and prediction log"
    out["wrk_scripts"] = str(scripts)
    return out


def bench_stack(wrk: str, folder: Path, root: Path, run: str, seconds: int) -> dict[str, Any]:
    """Ours as the native stack runs it, and the references on the stack's champion."""
    from fraud_pipelines.stack import Stack
    from serving.keys import ApiKeys

    stack = Stack(root)
    if not stack.ready():
        raise SystemExit(f"the stack in {root} is not up and seeded (./scripts/stack.sh status)")
    env = stack.client_env()
    key = ApiKeys(stack.platform_db_url).create(f"bench-{run}")
    raw = pd.read_parquet(stack.home / "raw" / "synthetic.parquet")
    stamps = pd.to_datetime(raw["timestamp"], utc=True)
    live = raw[stamps >= stamps.max().floor("D")].sort_values("timestamp").reset_index(drop=True)
    model_onnx, vectors = home_inputs(stack.home)
    scripts = write_scripts(folder, payloads(live), vectors, key, run, replay_days(live))
    pids = {name: row["pid"] for name, row in stack.status().items() if row["pid"]}
    meter = CpuMeter(
        {
            "ours": [pid for name, pid in pids.items() if name.startswith("scoring-")],
            "redis": [pids["redis"]] if "redis" in pids else [],
            "postgres": [pids["postgres"]] if "postgres" in pids else [],
        }
    )
    out = measure_ours(wrk, stack.scoring_urls, scripts, seconds, meter)
    out.update(measure_references(wrk, folder, reference_env(env), model_onnx, scripts, seconds))
    out["model_trees"] = tree_count(model_onnx)
    out["ratios"] = ratios(out)
    out["topology"] = (
        f"native stack: {len(stack.scoring_urls)} replicas x 1 worker, Redis online store, "
        "PostgreSQL prediction log"
    )
    out["wrk_scripts"] = str(scripts)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it")
    parser.add_argument(
        "--stack",
        type=Path,
        help="bench the running, seeded native stack in this folder instead (its replicas "
        "must be started with FRAUD_RATE_LIMIT_PER_MIN raised)",
    )
    args = parser.parse_args()
    wrk = ensure_wrk()
    run = f"b{int(time.time())}"
    folder = args.keep or Path(tempfile.mkdtemp(prefix="serving-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    figures: dict[str, object] = {}
    try:
        if args.stack:
            figures.update(bench_stack(wrk, folder, args.stack, run, args.duration))
        else:
            t0 = time.perf_counter()
            env, live = build_platform(folder / "platform", args.rows, args.days)
            print(f"platform built in {time.perf_counter() - t0:.0f} s; {len(live)} live payments")
            figures.update(bench_embedded(wrk, folder, env, live, run, args.duration))
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    figures.update(
        {
            "rows": args.rows,
            "duration_s": args.duration,
            "machine": f"{os.cpu_count()} cores {platform.machine()} python "
            f"{sys.version.split()[0]}",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
        }
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
