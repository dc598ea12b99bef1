"""The one place that reads the environment: every backend choice has an embedded default."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


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

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        home = Path(env.get("FRAUD_HOME", REPO_ROOT / ".fraud")).resolve()
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
        )

    @property
    def mlflow_artifact_root(self) -> Path:
        return self.home / "mlflow" / "artifacts"
