"""The one place that reads the environment: every backend choice has an embedded default."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Ingestion lands a day after it ends; features and monitoring follow; bias needs matured
# labels, so it runs weekly.
DEFAULT_CRONS: dict[str, str] = {
    "features": "30 1 * * *",
    "drift": "0 2 * * *",
    "performance": "15 2 * * *",
    "bias": "30 2 * * 1",
}


@dataclass(frozen=True)
class Settings:
    """Where data, Dagster, MLflow and the platform database live.

    The defaults put everything under `.fraud/` in the repository: SQLite for MLflow and
    the platform database, local folders for data and artifacts.
    """

    home: Path
    dataset_config: Path
    mlflow_tracking_uri: str
    mlflow_ui_url: str
    platform_db_url: str
    model_name: str
    experiment: str
    partition_start: str
    prediction_log_url: str
    crons: dict[str, str]
    online_store_url: str
    retrain_cooldown_hours: float

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = Path(env.get("FRAUD_HOME", REPO_ROOT / ".fraud")).resolve()
        crons = {
            name: env.get(f"FRAUD_CRON_{name.upper()}", default)
            for name, default in DEFAULT_CRONS.items()
        }
        return cls(
            home=home,
            dataset_config=Path(
                env.get("FRAUD_DATASET_CONFIG", REPO_ROOT / "datasets" / "synthetic.yaml")
            ).resolve(),
            mlflow_tracking_uri=env.get(
                "MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
            ),
            mlflow_ui_url=env.get("MLFLOW_UI_URL", "http://127.0.0.1:5000"),
            platform_db_url=env.get("FRAUD_PLATFORM_DB_URL", f"sqlite:///{home / 'platform.db'}"),
            model_name=env.get("FRAUD_MODEL_NAME", "fraud_detector"),
            experiment=env.get("FRAUD_EXPERIMENT", "fraud_detection"),
            partition_start=env.get("FRAUD_PARTITION_START", "2026-01-01"),
            prediction_log_url=env.get(
                "FRAUD_PREDICTION_LOG_URL",
                env.get("FRAUD_PLATFORM_DB_URL", f"sqlite:///{home / 'platform.db'}"),
            ),
            crons=crons,
            online_store_url=env.get("FRAUD_ONLINE_STORE_URL", str(home / "serving" / "online.db")),
            retrain_cooldown_hours=float(env.get("FRAUD_RETRAIN_COOLDOWN_HOURS", "6")),
        )

    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def mlflow_artifact_root(self) -> Path:
        return self.home / "mlflow" / "artifacts"
