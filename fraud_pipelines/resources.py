"""Typed, swappable resources: where files live, which dataset is read, and MLflow."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import sqlalchemy as sa

from fraud_assets.core.alerts import AlertStore, WebhookNotifier
from fraud_assets.core.ingest import DatasetConfig, load_dataset_config
from fraud_assets.core.registry import Registry
from fraud_pipelines.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

    from serving.online_store import OnlineStore

PAUSE_AT_ENV = "FRAUD_TEST_PAUSE_AT"
PAUSE_MARKER_ENV = "FRAUD_TEST_PAUSE_MARKER"


def pause_point(name: str) -> None:
    """A named place where fault-injection tests stop a run, so they can kill it there.

    When FRAUD_TEST_PAUSE_AT equals `name`, the process creates the file named by
    FRAUD_TEST_PAUSE_MARKER and sleeps until it is killed. No deployment sets it; unset, this
    is one dictionary lookup.
    """
    if os.environ.get(PAUSE_AT_ENV) != name:
        return
    Path(os.environ[PAUSE_MARKER_ENV]).write_text(f"{name} {os.getpid()}\n")
    while True:
        time.sleep(60)


def _temp_name(path: Path) -> tuple[str, str]:
    # The temporary file keeps the target's extension: some writers (xgboost) choose the
    # format from it.
    return f".{path.stem}.", f".tmp{path.suffix}"


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Write `path` so that a reader, or a run killed at any moment, sees either the previous
    file or the complete new one, never half of it.

    `write` fills a temporary file in the same folder, which then replaces `path` in one
    rename. Temporary files left behind by a killed writer of the same file are removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = _temp_name(path)
    handle, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(handle)
    temp = Path(name)
    try:
        write(temp)
        with temp.open("rb+") as written:
            os.fsync(written.fileno())
        pause_point(f"replace:{path.name}")
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    for stale in path.parent.glob(f"{prefix}*{suffix}"):
        stale.unlink(missing_ok=True)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """`path.write_bytes(data)`, atomically (see `atomic_write`)."""
    return atomic_write(path, lambda temp: temp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> Path:
    """`path.write_text(text)`, atomically (see `atomic_write`)."""
    return atomic_write(path, lambda temp: temp.write_text(text))


def atomic_write_parquet(path: Path, frame: pd.DataFrame) -> Path:
    """`frame.to_parquet(path, index=False)`, atomically (see `atomic_write`)."""
    return atomic_write(path, lambda temp: frame.to_parquet(temp, index=False))


class DataLake(dg.ConfigurableResource):
    """Folders for partitioned transactions, feature sets, models, rejects and reports.

    Assets write their files through `atomic_write` and its helpers, so a run killed
    mid-write leaves the previous file (or none), never a truncated one.
    """

    root: str

    def path(self, *parts: str) -> Path:
        target = Path(self.root).joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    @property
    def transactions_dir(self) -> Path:
        return self.path("transactions", "_").parent

    def day_file(self, day: str) -> Path:
        return self.path("transactions", f"date={day}", "part.parquet")

    def day_files(self) -> list[Path]:
        return sorted(self.transactions_dir.glob("date=*/part.parquet"))


class DatasetSource(dg.ConfigurableResource):
    """The dataset config (YAML) that maps a CSV or Parquet source onto the canonical schema."""

    config_path: str

    def load(self, override: str | None = None) -> DatasetConfig:
        return load_dataset_config(override or self.config_path)


class MlflowTracking(dg.ConfigurableResource):
    """MLflow tracking and registry, plus the promotion log in the platform database."""

    tracking_uri: str
    ui_url: str = "http://127.0.0.1:5000"
    experiment: str = "fraud_detection"
    model_name: str = "fraud_detector"
    platform_db_url: str
    artifact_root: str | None = None

    def registry(self) -> Registry:
        return Registry(self.tracking_uri, self.model_name, self.platform_db_url)

    def activate(self) -> None:
        """Point the process-wide MLflow client at this deployment's store."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)

    def experiment_id(self) -> str:
        """The experiment's id, creating it (with a local artifact root if set) on first use."""
        import mlflow

        self.activate()
        found = mlflow.get_experiment_by_name(self.experiment)
        if found:
            return found.experiment_id
        location = None
        if self.artifact_root:
            folder = Path(self.artifact_root) / self.experiment
            folder.mkdir(parents=True, exist_ok=True)
            location = folder.as_uri()
        return mlflow.create_experiment(self.experiment, artifact_location=location)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url}/#/experiments/{experiment_id}/runs/{run_id}"

    def version_url(self, version: str) -> str:
        return f"{self.ui_url}/#/models/{self.model_name}/versions/{version}"


class AlertsResource(dg.ConfigurableResource):
    """Where alerts are stored (the platform database) and the webhook that hears of them."""

    db_url: str
    webhook_url: str | None = None

    def store(self) -> AlertStore:
        notifier = WebhookNotifier(self.webhook_url) if self.webhook_url else None
        return AlertStore(self.db_url, notifier=notifier)


class PredictionLogSource(dg.ConfigurableResource):
    """The scoring service's prediction log and feedback tables (SQLAlchemy URL)."""

    url: str

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.url, future=True)


class OnlineStoreResource(dg.ConfigurableResource):
    """The scoring service's online feature store: a SQLite path or a redis:// URL."""

    url: str

    def open(self) -> OnlineStore:
        from serving.online_store import open_store

        return open_store(self.url)


def build_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    """The platform's resources for this deployment, chosen from the environment."""
    s = settings or Settings.from_env()
    return {
        "lake": DataLake(root=str(s.home / "data")),
        "dataset": DatasetSource(config_path=str(s.dataset_config)),
        "mlflow": MlflowTracking(
            tracking_uri=s.mlflow_tracking_uri,
            ui_url=s.mlflow_ui_url,
            experiment=s.experiment,
            model_name=s.model_name,
            platform_db_url=s.platform_db_url,
            artifact_root=str(s.mlflow_artifact_root)
            if s.mlflow_tracking_uri.startswith("sqlite")
            else None,
        ),
        "alerts": AlertsResource(
            db_url=s.platform_db_url,
            webhook_url=dg.EnvVar("FRAUD_ALERT_WEBHOOK_URL")
            if os.environ.get("FRAUD_ALERT_WEBHOOK_URL")
            else None,
        ),
        "prediction_log": PredictionLogSource(url=s.prediction_log_url),
        "online_store": OnlineStoreResource(url=s.online_store_url),
    }
