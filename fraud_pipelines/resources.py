"""Typed, swappable resources: where files live, which dataset is read, and MLflow."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import sqlalchemy as sa

from fraud_assets.core.alerts import AlertStore, WebhookNotifier
from fraud_assets.core.ingest import DatasetConfig, load_dataset_config
from fraud_assets.core.registry import Registry
from fraud_pipelines.settings import Settings

if TYPE_CHECKING:
    from serving.online_store import OnlineStore


class DataLake(dg.ConfigurableResource):
    """Folders for partitioned transactions, feature sets, models, rejects and reports."""

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
