"""Settings of the scoring service, read once from the environment.

Every value has a default that works on a laptop: the model comes from the platform's
MLflow registry (`FRAUD_HOME`, `MLFLOW_TRACKING_URI`, `FRAUD_MODEL_NAME`), state and the
model cache live under `FRAUD_HOME/serving/`, and predictions are logged to the platform
database.

| variable | default | meaning |
| --- | --- | --- |
| `FRAUD_MODEL_POLL_SECONDS` | 30 | how often the `champion` alias is checked |
| `FRAUD_MODEL_STARTUP_CHECK_SECONDS` | 10 | longest wait on the registry when starting from cache |
| `FRAUD_REVIEW_BAND` | 0.5 | review when score >= threshold x band |
| `FRAUD_ONLINE_STORE_URL` | `FRAUD_HOME/serving/online.db` | a SQLite path or `redis://...` |
| `FRAUD_PREDICTION_LOG_URL` | `FRAUD_PLATFORM_DB_URL` | SQLAlchemy URL of the prediction log |
| `FRAUD_RATE_LIMIT_PER_MIN` | 1000 | requests per API key per minute |
| `FRAUD_AUTH_DISABLED` | 0 | 1 turns API keys off (local experiments only) |
| `FRAUD_SERVING_WORKERS` | 2 | worker processes of `bentoml serve` |
| `FRAUD_REASON_CODES` | fast | `fast` (path attribution), `exact` (TreeSHAP) or `auto` |
| `FRAUD_ACCESS_LOG` | 0 | 1 writes every request to the access log (`bentoml.access`) |
| `FRAUD_ONLINE_STORE_TIMEOUT_MS` | 250 | longest wait on the online store before scoring degraded |
| `FRAUD_PREDICTION_LOG_FLUSH_MS` | 500 | how often the prediction log writes its queued rows |
| `FRAUD_DIRECT_ANSWERS` | 1 | 0 sends requests through BentoML's request pipeline |
| `FRAUD_ENGINE_THREAD` | auto | 1: direct answers scored on a thread of their own; auto: Redis |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fraud_pipelines.settings import Settings

ReasonMode = Literal["auto", "exact", "fast"]
MAX_BATCH = 10_000
MAX_BODY_BYTES = 16 * 1024 * 1024
FUTURE_TOLERANCE_SECONDS = 300


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def direct_answers_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether the gateway answers the API routes itself (FRAUD_DIRECT_ANSWERS, default on).

    Off, every request goes through BentoML's generic request pipeline to the API methods
    of `serving.service`; the answers are the same, only slower (see docs/benchmarks.md).
    """
    source = os.environ if env is None else env
    return source.get("FRAUD_DIRECT_ANSWERS", "1").strip().lower() not in {"0", "false", "no"}


def access_log_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether every request is written to the access log (FRAUD_ACCESS_LOG, default off)."""
    return _flag((os.environ if env is None else env).get("FRAUD_ACCESS_LOG"))


def is_remote_store(url: str) -> bool:
    """Whether an online store URL names Redis; anything else is a SQLite path."""
    return url.startswith(("redis://", "rediss://", "unix://"))


def sqlite_store_path(url: str) -> Path:
    """The file of a SQLite online store URL: a path, or `sqlite:///` and a path."""
    return Path(url.removeprefix("sqlite:///"))


def _engine_thread(value: str, store_url: str) -> bool:
    """Whether engine calls run on their own thread (`serving.engine_thread`).

    `auto` turns it on for a remote online store, whose round trips would otherwise stop
    the event loop; with the embedded SQLite store there is no wait to overlap.
    """
    value = value.strip().lower()
    if value == "auto":
        return is_remote_store(store_url)
    if _flag(value):
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"FRAUD_ENGINE_THREAD must be auto, 1 or 0, not {value!r}")


@dataclass(frozen=True)
class ServingSettings:
    """Where the service finds its model, keeps its state and logs its predictions."""

    home: Path
    tracking_uri: str
    model_name: str
    platform_db_url: str
    poll_seconds: float
    review_band: float
    online_store_url: str
    prediction_log_url: str
    rate_limit_per_min: int
    auth_disabled: bool
    workers: int
    reason_codes: ReasonMode
    access_log: bool
    store_timeout_s: float = 0.25
    alert_webhook_url: str | None = None
    log_flush_s: float = 0.5
    startup_check_s: float = 10.0
    engine_thread: bool = False

    @property
    def serving_dir(self) -> Path:
        return self.home / "serving"

    @property
    def cache_dir(self) -> Path:
        return self.serving_dir / "cache"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServingSettings:
        source = dict(os.environ if env is None else env)
        base = Settings.from_env(source)
        store_default = str(base.home / "serving" / "online.db")
        mode = source.get("FRAUD_REASON_CODES", "fast").strip().lower()
        if mode not in ("auto", "exact", "fast"):
            raise ValueError(f"FRAUD_REASON_CODES must be auto, exact or fast, not {mode!r}")
        store_url = source.get("FRAUD_ONLINE_STORE_URL", store_default)
        band = float(source.get("FRAUD_REVIEW_BAND", "0.5"))
        if not 0.0 < band <= 1.0:
            raise ValueError(f"FRAUD_REVIEW_BAND must be in (0, 1], not {band}")
        return cls(
            home=base.home,
            tracking_uri=base.mlflow_tracking_uri,
            model_name=base.model_name,
            platform_db_url=base.platform_db_url,
            poll_seconds=max(0.05, float(source.get("FRAUD_MODEL_POLL_SECONDS", "30"))),
            review_band=band,
            online_store_url=store_url,
            prediction_log_url=source.get("FRAUD_PREDICTION_LOG_URL", base.platform_db_url),
            rate_limit_per_min=max(1, int(source.get("FRAUD_RATE_LIMIT_PER_MIN", "1000"))),
            auth_disabled=_flag(source.get("FRAUD_AUTH_DISABLED")),
            workers=max(1, int(source.get("FRAUD_SERVING_WORKERS", "2"))),
            reason_codes=mode,  # type: ignore[arg-type]
            access_log=access_log_enabled(source),
            store_timeout_s=max(0.01, float(source.get("FRAUD_ONLINE_STORE_TIMEOUT_MS", "250")))
            / 1000.0,
            alert_webhook_url=source.get("FRAUD_ALERT_WEBHOOK_URL") or None,
            log_flush_s=max(0.01, float(source.get("FRAUD_PREDICTION_LOG_FLUSH_MS", "500")))
            / 1000.0,
            startup_check_s=max(0.0, float(source.get("FRAUD_MODEL_STARTUP_CHECK_SECONDS", "10"))),
            engine_thread=_engine_thread(source.get("FRAUD_ENGINE_THREAD", "auto"), store_url),
        )
