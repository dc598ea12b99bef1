"""A throwaway deployment on local files: for tests, benchmarks and trying things out."""

from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg

from fraud_assets.core.synthetic import SyntheticConfig, generate, write
from fraud_pipelines.resources import build_resources
from fraud_pipelines.settings import Settings

ASSET_PARTITION_RANGE_START = "dagster/asset_partition_range_start"
ASSET_PARTITION_RANGE_END = "dagster/asset_partition_range_end"


@dataclass(frozen=True)
class Platform:
    """A throwaway deployment: its settings, resources and Dagster instance."""

    root: Path
    settings: Settings
    resources: dict[str, dg.ConfigurableResource]
    instance: dg.DagsterInstance
    first_day: str
    last_day: str

    def env(self) -> dict[str, str]:
        """Environment variables that point a process (e.g. the scoring service) here."""
        return {
            "FRAUD_HOME": str(self.settings.home),
            "MLFLOW_TRACKING_URI": self.settings.mlflow_tracking_uri,
            "FRAUD_PLATFORM_DB_URL": self.settings.platform_db_url,
            "FRAUD_PREDICTION_LOG_URL": self.settings.prediction_log_url,
            "FRAUD_MODEL_NAME": self.settings.model_name,
            "FRAUD_ONLINE_STORE_URL": self.settings.online_store_url,
        }


def make_platform(root: Path, rows: int = 60_000, days: int = 30, **synthetic: object) -> Platform:
    """Generate a synthetic source and wire settings, resources and an instance around it."""
    frame = generate(SyntheticConfig(n_transactions=rows, days=days, **synthetic))
    source = write(frame, root / "raw" / "synthetic.parquet")
    config = root / "dataset.yaml"
    config.write_text(f"name: synthetic_test\npath: {source}\nformat: parquet\n")
    settings = replace(
        Settings.from_env({}),
        home=root / "home",
        dataset_config=config,
        mlflow_tracking_uri=f"sqlite:///{root / 'home' / 'mlflow.db'}",
        platform_db_url=f"sqlite:///{root / 'home' / 'platform.db'}",
        prediction_log_url=f"sqlite:///{root / 'home' / 'platform.db'}",
        online_store_url=str(root / "home" / "serving" / "online.db"),
    )
    (root / "home").mkdir(parents=True, exist_ok=True)
    (root / "dagster").mkdir(exist_ok=True)
    instance = dg.DagsterInstance.local_temp(str(root / "dagster"))
    return Platform(
        root,
        settings,
        build_resources(settings),
        instance,
        frame["timestamp"].min().strftime("%Y-%m-%d"),
        frame["timestamp"].max().strftime("%Y-%m-%d"),
    )
