"""Dataset assets: the ingested, validated transaction history."""

import hashlib

import dagster as dg
import pandas as pd

from fraud_assets.core.ingest import ingest, write_rejects
from fraud_assets.core.render import frame_table, mapping_table
from fraud_assets.core.schema import FIELD_BY_NAME, PROTECTED, sort_canonical
from fraud_pipelines.resources import DataLake, DatasetSource, atomic_write, atomic_write_parquet
from fraud_pipelines.settings import Settings

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=Settings.from_env().partition_start, end_offset=1
)


class TransactionsConfig(dg.Config):
    """Run config of `transactions`."""

    dataset_config: str | None = None
    """Path of a dataset config (YAML); empty means FRAUD_DATASET_CONFIG or the bundled
    synthetic dataset."""
    merge: bool = False
    """Merge into days already ingested (keeping their rows) instead of replacing them; the
    landing sensor uses this for files that add to a day."""


def content_hash(frame: pd.DataFrame) -> str:
    """A stable hash of a frame's contents, used as its data version."""
    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(rows.tobytes())
    digest.update(",".join(map(str, frame.columns)).encode())
    return digest.hexdigest()[:16]


def _schema(frame: pd.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=str(c),
                type=str(frame[c].dtype),
                description=FIELD_BY_NAME[c].description if c in FIELD_BY_NAME else None,
            )
            for c in frame.columns
        ]
    )


@dg.asset(
    group_name="datasets",
    kinds={"pandas", "parquet"},
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def transactions(
    context: dg.AssetExecutionContext,
    config: TransactionsConfig,
    dataset: DatasetSource,
    lake: DataLake,
) -> dg.MaterializeResult:
    """Card-not-present transactions in the canonical schema, one Parquet file per day.

    The source named by the dataset config is read, mapped onto the canonical schema and
    validated. Rows that fail validation are written to a rejects file with the reason for
    each row; a file that cannot be read fails the run naming the file. Daily partitions
    let new days be ingested as they land without rewriting history, and a range of days is
    processed in one run.
    """
    cfg = dataset.load(config.dataset_config)
    result = ingest(cfg)
    for name, reason in result.missing_fields.items():
        context.log.info(f"field {name}: {reason}")
    for note in result.notes:
        context.log.info(note)
    days = set(context.partition_keys)
    valid = result.valid
    day = valid["timestamp"].dt.strftime("%Y-%m-%d")
    first_partition = daily_partitions.get_first_partition_key()
    too_early = (day < first_partition).to_numpy()
    rejects = result.rejects
    if too_early.any():
        early = valid.loc[too_early].astype(str)
        early["source_file"] = ",".join(result.source_files)
        early["source_row"] = -1
        early["reject_reason"] = f"timestamp: before the first partition {first_partition}"
        rejects = pd.concat([rejects, early], ignore_index=True)
    selected = valid.loc[day.isin(days).to_numpy()]
    outside = int(len(valid) - len(selected) - too_early.sum())
    written = []
    for key, part in selected.groupby(day[day.isin(days)].to_numpy(), sort=True):
        path = lake.day_file(str(key))
        if config.merge and path.exists():
            existing = pd.read_parquet(path)
            part = pd.concat([existing, part], ignore_index=True).drop_duplicates(
                "transaction_id", keep="first"
            )
        atomic_write_parquet(path, sort_canonical(part))
        written.append(str(key))
    if not config.merge:
        for key in sorted(days - set(written)):
            path = lake.day_file(key)
            if path.exists():
                path.unlink()
    rejects_path = None
    if len(rejects):
        tag = f"{cfg.name}_{min(days)}_{max(days)}"
        result.rejects = rejects
        rejects_path = atomic_write(
            lake.path("rejects", f"{tag}.csv"), lambda temp: write_rejects(result, temp)
        )
        context.log.warning(f"{len(rejects)} rows rejected, reasons in {rejects_path}")
    selected = sort_canonical(selected)
    labels = pd.to_numeric(selected.get("is_fraud"), errors="coerce")
    version = content_hash(selected)
    metadata: dict[str, object] = {
        "dagster/row_count": len(selected),
        "rows_read": result.rows_read,
        "rows_rejected": len(rejects),
        "rows_outside_run_partitions": outside,
        "days_written": len(written),
        "dataset": cfg.name,
        "source_files": ", ".join(result.source_files),
        "content_hash": version,
        "fraud_rate": float(labels.mean()) if labels.notna().any() else float("nan"),
        "labelled_rows": int(labels.notna().sum()),
        "dagster/column_schema": _schema(selected),
        "preview": dg.MetadataValue.md(
            frame_table(selected.drop(columns=[c for c in PROTECTED if c in selected]), 8)
        ),
    }
    if len(selected):
        metadata["first_timestamp"] = selected["timestamp"].min().isoformat()
        metadata["last_timestamp"] = selected["timestamp"].max().isoformat()
    if result.missing_fields:
        metadata["missing_fields"] = dg.MetadataValue.md(
            mapping_table(result.missing_fields, "field", "consequence")
        )
    if rejects_path:
        metadata["rejects_file"] = dg.MetadataValue.path(str(rejects_path))
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version))


def read_history(lake: DataLake) -> pd.DataFrame:
    """Every ingested day, in canonical order."""
    files = lake.day_files()
    if not files:
        raise FileNotFoundError(
            f"no ingested transactions under {lake.transactions_dir}: materialize "
            "`transactions` first"
        )
    return sort_canonical(pd.concat([pd.read_parquet(f) for f in files], ignore_index=True))
