"""The MLflow model registry as the platform uses it: versions, aliases, and their history.

A version of `fraud_detector` carries the ONNX model (what serving runs), the native
model in its library's own format, the feature spec and its hash, the decision
threshold, and the sha256 of the ONNX file. The alias `champion` marks the model in
production and `challenger` the newest candidate. MLflow keeps no history of alias
moves, so every move made through this module is appended to the promotion log.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from fraud_assets.core.tables import create_tables

CHAMPION = "champion"
CHALLENGER = "challenger"
ONNX_FILE = "model.onnx"
SPEC_FILE = "feature_spec.json"
INFO_FILE = "model_info.json"
EXTRA_DIR = "extra_files"

_metadata = sa.MetaData()
promotion_log = sa.Table(
    "promotion_log",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("alias", sa.String(50), nullable=False),
    sa.Column("from_version", sa.String(20)),
    sa.Column("to_version", sa.String(20)),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_onnx(data: bytes) -> bytes:
    """The same ONNX model with its graph given a fixed name.

    The converters name the graph with a random UUID, so two exports of one trained model
    would differ in bytes and in sha256. With a fixed name the sha256 identifies the model,
    and retraining on the same data with the same config (training is seeded) gives the
    same sha256, which is what makes registration idempotent.
    """
    import onnx

    model = onnx.load_from_string(data)
    model.graph.name = "fraud_model"
    return model.SerializeToString()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version and the facts serving needs to trust it."""

    name: str
    version: str
    run_id: str | None
    onnx_sha256: str
    threshold: float
    feature_spec_version: str
    tags: dict[str, str]


@dataclass(frozen=True)
class PromotionEntry:
    at: datetime
    alias: str
    from_version: str | None
    to_version: str | None
    reason: str
    actor: str


class PromotionLog:
    """Append-only history of alias moves, kept in the platform database."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url, future=True)
        create_tables(_metadata, self.engine)

    def append(
        self,
        model_name: str,
        alias: str,
        from_version: str | None,
        to_version: str | None,
        reason: str,
        actor: str,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                promotion_log.insert().values(
                    at=datetime.now(UTC),
                    model_name=model_name,
                    alias=alias,
                    from_version=from_version,
                    to_version=to_version,
                    reason=reason,
                    actor=actor,
                )
            )

    def entries(self, model_name: str, alias: str | None = None) -> list[PromotionEntry]:
        query = (
            sa.select(promotion_log)
            .where(promotion_log.c.model_name == model_name)
            .order_by(promotion_log.c.id)
        )
        if alias:
            query = query.where(promotion_log.c.alias == alias)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            PromotionEntry(
                r["at"], r["alias"], r["from_version"], r["to_version"], r["reason"], r["actor"]
            )
            for r in rows
        ]


class Registry:
    """Thin, typed access to the MLflow registry plus the promotion log."""

    def __init__(self, tracking_uri: str, model_name: str, promotion_db_url: str) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.log = PromotionLog(promotion_db_url)

    def version(self, version: str) -> RegisteredVersion:
        mv = self.client.get_model_version(self.model_name, version)
        return _as_registered(mv)

    def alias(self, alias: str) -> RegisteredVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(self.model_name, alias)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
                return None
            raise
        return _as_registered(mv)

    def set_alias(self, alias: str, version: str, reason: str, actor: str) -> None:
        """Point `alias` at `version` and record who moved it and why."""
        current = self.alias(alias)
        self.client.set_registered_model_alias(self.model_name, alias, version)
        self.log.append(
            self.model_name, alias, current.version if current else None, version, reason, actor
        )

    def rollback(self, actor: str) -> str:
        """Move `champion` back to the version it pointed at before its last move."""
        history = [e for e in self.log.entries(self.model_name, CHAMPION) if e.to_version]
        current = self.alias(CHAMPION)
        if current is None:
            raise LookupError(f"{self.model_name} has no champion to roll back from")
        previous = next(
            (e.from_version for e in reversed(history) if e.to_version == current.version), None
        )
        if not previous:
            raise LookupError(
                f"no earlier champion recorded for {self.model_name} v{current.version}"
            )
        self.set_alias(CHAMPION, previous, f"rollback from v{current.version}", actor)
        return previous

    def versions_with_sha256(self, onnx_sha: str) -> list[tuple[str, str | None]]:
        """Every version holding the ONNX model with this sha256, oldest first, with the
        Dagster run that registered it.

        A version is matched on its `onnx_sha256` tag or, for a version whose registering run
        was killed before it could tag the version, on the tag of its MLflow run (set before
        the model is logged).
        """
        found = []
        for mv in self.client.search_model_versions(f"name = '{self.model_name}'"):
            tags = dict(mv.tags or {})
            if mv.run_id and ("onnx_sha256" not in tags or "dagster_run_id" not in tags):
                tags = {**self.client.get_run(mv.run_id).data.tags, **tags}
            if tags.get("onnx_sha256") == onnx_sha:
                found.append((str(mv.version), tags.get("dagster_run_id")))
        return sorted(found, key=lambda item: int(item[0]))

    def download(self, version: str, folder: Path) -> Path:
        """Download a version's files into `folder` and return the folder."""
        import mlflow

        uri = f"models:/{self.model_name}/{version}"
        mlflow.set_registry_uri(self.tracking_uri)
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(folder), tracking_uri=self.tracking_uri
            )
        )
        # MLflow keeps `extra_files` in a subfolder; flatten so every file sits beside model.onnx.
        extra = local / EXTRA_DIR
        if extra.is_dir():
            for item in extra.iterdir():
                shutil.copy2(item, local / item.name)
        return local

    def fetch_onnx(self, version: str) -> tuple[bytes, RegisteredVersion, Path]:
        """The ONNX bytes of a version after checking them against the registered sha256."""
        info = self.version(version)
        folder = Path(tempfile.mkdtemp(prefix=f"fraud_model_v{version}_"))
        local = self.download(version, folder)
        data = (local / ONNX_FILE).read_bytes()
        actual = sha256_bytes(data)
        if actual != info.onnx_sha256:
            raise ChecksumMismatch(
                f"{self.model_name} v{version}: model.onnx sha256 {actual} does not match "
                f"the registered {info.onnx_sha256}"
            )
        return data, info, local


class ChecksumMismatch(Exception):
    """An artifact's bytes differ from the checksum recorded at registration."""


def _as_registered(mv: Any) -> RegisteredVersion:
    tags = dict(mv.tags or {})
    return RegisteredVersion(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id,
        onnx_sha256=tags.get("onnx_sha256", ""),
        threshold=float(tags.get("threshold", "nan")),
        feature_spec_version=tags.get("feature_spec_version", ""),
        tags=tags,
    )


def model_info_json(
    threshold: float, spec_version: str, onnx_sha: str, extra: dict[str, Any]
) -> str:
    return json.dumps(
        {
            "threshold": threshold,
            "feature_spec_version": spec_version,
            "onnx_sha256": onnx_sha,
            **extra,
        },
        indent=2,
        sort_keys=True,
        default=str,
    )
