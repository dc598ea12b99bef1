"""The model in production: `models:/<name>@champion`, verified, cached and hot-swapped.

`ChampionModel` resolves the `champion` alias in the MLflow registry, downloads the
version, checks the ONNX file against the sha256 recorded at registration and loads it
with its feature spec, decision threshold and native model (for explanations). A
background thread checks the alias every `FRAUD_MODEL_POLL_SECONDS`; when it moves, the
new version is loaded beside the old one and a single reference is swapped, so every
request is scored by exactly one complete model and none waits or fails.

A model whose checksum or contents do not match its registration is refused (logged, and
the current model keeps serving): the service never scores with a corrupt model. Every
verified model is cached under `FRAUD_HOME/serving/cache/<name>/<version>/`, so the
service starts on the last champion when MLflow is unreachable and says so in /readyz.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fraud_assets.core.features import FeatureSpec
from fraud_assets.core.registry import (
    CHAMPION,
    INFO_FILE,
    ONNX_FILE,
    SPEC_FILE,
    ChecksumMismatch,
    RegisteredVersion,
    Registry,
    sha256_file,
)
from fraud_assets.core.scoring import OnnxScorer
from serving.attribution import PathAttribution, TreeEnsemble, TreeShap
from serving.config import ServingSettings
from serving.featurizer import FeatureBuilder

logger = logging.getLogger("serving.champion")

Decision = Literal["approve", "review", "decline"]
REGISTERED_FILE = "registered.json"
POINTER_FILE = "champion.json"
EXTRA_DIR = "extra_files"

# A registry that does not answer must not stall the poller for minutes (MLflow's HTTP
# client retries 7 times with exponential backoff by default).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
# Each worker scores one request at a time on one core; idle OpenMP threads spinning in
# xgboost would only steal CPU from the other worker.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class ModelRejected(Exception):
    """A model version failed verification and will not be served."""


class Explainer:
    """Exact per-feature contributions (log-odds) from the model's native file.

    For xgboost both explanations run in compiled code on the parsed trees (`TreeShap`
    for exact, `PathAttribution` for fast), without a DMatrix or a lock, so concurrent
    requests explain at the same time; other algorithms use their library's TreeSHAP.
    """

    def __init__(self, algorithm: str, native_file: Path) -> None:
        self.algorithm = algorithm
        self.native_file = native_file
        self._paths: PathAttribution | None = None
        self._shap: TreeShap | None = None
        if algorithm == "xgboost":
            import xgboost as xgb

            booster = xgb.Booster()
            booster.load_model(str(native_file))
            trees = TreeEnsemble.from_booster(booster)
            self._paths = PathAttribution(trees)
            self._shap = TreeShap(trees)

    def contributions(
        self, x: np.ndarray, scores: np.ndarray, exact: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows x features contributions, per-row base value) for the feature rows `x`.

        Exact TreeSHAP by default; `exact=False` uses path attribution (Saabas), which
        ranks features similarly at a fraction of the cost (tree models only).
        """
        x = np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32)
        if not exact and self._paths is not None:
            return self._paths.contributions(x)
        if self._shap is not None:
            return self._shap.contributions(x)
        from fraud_assets.core.explain import contributions

        contrib = np.asarray(contributions(self.algorithm, self.native_file, x), np.float64)
        p = np.clip(np.asarray(scores, dtype=np.float64), 1e-12, 1 - 1e-12)
        return contrib, np.log(p / (1 - p)) - contrib.sum(axis=1)


@dataclass(frozen=True)
class LoadedModel:
    """One verified champion version, ready to score."""

    name: str
    version: str
    source: Literal["registry", "cache"]
    folder: Path
    onnx_sha256: str
    threshold: float
    review_threshold: float
    algorithm: str
    spec: FeatureSpec
    builder: FeatureBuilder
    scorer: OnnxScorer
    explainer: Explainer
    loaded_at: datetime

    def decide(self, score: float) -> Decision:
        if score >= self.threshold:
            return "decline"
        if score >= self.review_threshold:
            return "review"
        return "approve"

    def with_source(self, source: Literal["registry", "cache"]) -> LoadedModel:
        import dataclasses

        return dataclasses.replace(self, source=source)


@dataclass
class ChampionStatus:
    """What /readyz reports about the model."""

    ready: bool = False
    reason: str = "starting: the champion model has not been loaded yet"
    registry_reachable: bool | None = None
    registry_error: str | None = None
    last_checked: datetime | None = None
    last_load_error: str | None = None
    refused_versions: dict[str, str] = field(default_factory=dict)


def _registered_dict(info: RegisteredVersion) -> dict[str, Any]:
    return {
        "name": info.name,
        "version": info.version,
        "run_id": info.run_id,
        "onnx_sha256": info.onnx_sha256,
        "threshold": info.threshold,
        "feature_spec_version": info.feature_spec_version,
        "tags": info.tags,
    }


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / EXTRA_DIR / name):
        if candidate.exists():
            return candidate
    return None


class ChampionModel:
    """Holds the current champion and keeps it in step with the registry alias."""

    def __init__(
        self,
        settings: ServingSettings,
        registry_factory: Callable[[], Registry] | None = None,
        on_swap: Callable[[LoadedModel, LoadedModel | None], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
        on_registry: Callable[[bool, str | None], None] | None = None,
    ) -> None:
        self.settings = settings
        self.model_name = settings.model_name
        self.cache_root = settings.cache_dir / settings.model_name
        self._registry_factory = registry_factory or (
            lambda: Registry(settings.tracking_uri, settings.model_name, settings.platform_db_url)
        )
        self._registry: Registry | None = None
        self._on_swap = on_swap
        self._on_failure = on_failure
        self._on_registry = on_registry
        self._current: LoadedModel | None = None
        self.status = ChampionStatus()
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._first_check = threading.Event()

    @property
    def current(self) -> LoadedModel | None:
        """The model to score with. Read it once per request: it may be swapped any time."""
        return self._current

    def start(self, poll: bool = True) -> None:
        """Take the cached champion if there is one, then follow the registry.

        With a cached champion, `start` still waits up to `startup_check_s` for the first
        look at the registry before it returns (and the service reports ready). That look
        imports MLflow and opens its stores, ~2.7 s of CPU; done after the service was
        ready, it held the interpreter lock against requests for those seconds, and batches
        were scored 4-5 times slower. A restart also serves the current champion, not the
        one cached before the alias moved. If MLflow does not answer in time, the cached
        model is served and the look goes on in the background.
        """
        self._load_cached_pointer()
        self._thread = threading.Thread(
            target=self._run, args=(poll,), name="champion-poller", daemon=True
        )
        self._thread.start()
        wait = self.settings.startup_check_s
        if self._current is not None and wait > 0 and not self._first_check.wait(wait):
            logger.warning(
                "the MLflow registry did not answer within %.0f s; serving cached v%s",
                wait,
                self._current.version,
            )

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_checked(self, timeout: float) -> bool:
        """Block until the registry was consulted once (tests and CLI tools)."""
        return self._first_check.wait(timeout)

    def refresh(self) -> None:
        """Check the alias once and load the version it points to if it is new."""
        with self._refresh_lock:
            try:
                self._refresh()
            except Exception as exc:  # never let the poller die
                logger.exception("champion refresh failed")
                self._fail(f"refresh failed: {exc}")
            finally:
                self.status.last_checked = datetime.now(UTC)
                self._update_readiness()
                self._first_check.set()

    def _run(self, poll: bool) -> None:
        self.refresh()
        while poll and not self._stop.wait(self.settings.poll_seconds):
            self.refresh()

    def _fail(self, message: str) -> None:
        self.status.last_load_error = message
        if self._on_failure is not None:
            self._on_failure(message)

    def _registry_or_none(self) -> Registry | None:
        if self._registry is None:
            try:
                self._registry = self._registry_factory()
            except Exception as exc:
                self._unreachable(exc)
                return None
        return self._registry

    def _unreachable(self, exc: BaseException) -> None:
        first = self.status.registry_reachable is not False
        self.status.registry_reachable = False
        self.status.registry_error = f"{type(exc).__name__}: {str(exc)[:300]}"
        if first:
            logger.warning("MLflow registry unreachable: %s", self.status.registry_error)
            if self._on_registry is not None:
                self._on_registry(False, self.status.registry_error)

    def _refresh(self) -> None:
        registry = self._registry_or_none()
        if registry is None:
            return
        try:
            info = registry.alias(CHAMPION)
        except Exception as exc:
            self._unreachable(exc)
            return
        if self.status.registry_reachable is False:
            logger.info("MLflow registry reachable again")
            if self._on_registry is not None:
                self._on_registry(True, None)
        self.status.registry_reachable = True
        self.status.registry_error = None
        if info is None:
            self._fail(f"no version of {self.model_name} carries the alias '{CHAMPION}'")
            return
        current = self._current
        if (
            current is not None
            and current.version == info.version
            and current.onnx_sha256 == info.onnx_sha256
        ):
            if current.source == "cache":
                self._current = current.with_source("registry")
            return
        refused = self.status.refused_versions.get(info.version)
        try:
            model = self._load_version(registry, info)
        except (ChecksumMismatch, ModelRejected) as exc:
            if refused is None:
                logger.error(
                    "refusing %s v%s: %s; still serving %s",
                    self.model_name,
                    info.version,
                    exc,
                    f"v{current.version}" if current else "nothing",
                )
            self.status.refused_versions[info.version] = str(exc)
            self._fail(f"v{info.version} refused: {exc}")
            return
        except Exception as exc:
            logger.exception("could not load %s v%s", self.model_name, info.version)
            self._fail(f"v{info.version} could not be loaded: {exc}")
            return
        self.status.refused_versions.pop(info.version, None)
        self._swap(model)
        self._write_pointer(info.version)

    def _swap(self, model: LoadedModel) -> None:
        old = self._current
        # One reference assignment: a request that already read the old model finishes
        # with it; every later request gets the new one.
        self._current = model
        self.status.last_load_error = None
        logger.info(
            "serving %s v%s (from %s)%s",
            model.name,
            model.version,
            model.source,
            f", replacing v{old.version}" if old is not None else "",
        )
        if self._on_swap is not None:
            self._on_swap(model, old)

    def _update_readiness(self) -> None:
        model = self._current
        status = self.status
        if model is None:
            status.ready = False
            if status.registry_reachable is False:
                status.reason = (
                    f"no model: MLflow at {self.settings.tracking_uri} is unreachable "
                    f"({status.registry_error}) and there is no cached champion under "
                    f"{self.cache_root}"
                )
            elif status.last_load_error:
                status.reason = f"no model: {status.last_load_error}"
            else:
                status.reason = "starting: the champion model has not been loaded yet"
            return
        status.ready = True
        if model.source == "cache" and status.registry_reachable is False:
            status.reason = (
                f"serving cached v{model.version}: MLflow is unreachable ({status.registry_error})"
            )
        elif model.source == "cache":
            status.reason = f"serving cached v{model.version}; registry not checked yet"
        elif status.last_load_error:
            status.reason = f"serving v{model.version}; {status.last_load_error}"
        else:
            status.reason = f"serving v{model.version}"

    def _version_dir(self, version: str) -> Path:
        return self.cache_root / version

    def _load_version(self, registry: Registry, info: RegisteredVersion) -> LoadedModel:
        folder = self._version_dir(info.version)
        if folder.exists():
            try:
                return self._load_folder(folder, "registry", expected=info)
            except (ChecksumMismatch, ModelRejected) as exc:
                logger.warning("cached v%s is unusable (%s); downloading again", info.version, exc)
                shutil.rmtree(folder, ignore_errors=True)
        data, verified, local = registry.fetch_onnx(info.version)
        try:
            staged = self._stage(local, data, verified)
        finally:
            if Path(local).resolve().is_relative_to(Path(tempfile.gettempdir()).resolve()):
                shutil.rmtree(local, ignore_errors=True)
        return self._load_folder(staged, "registry", expected=verified)

    def _stage(self, downloaded: Path, onnx_bytes: bytes, info: RegisteredVersion) -> Path:
        """Copy a verified download into the cache, atomically (several workers may race)."""
        self.cache_root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".v{info.version}-", dir=self.cache_root))
        (tmp / ONNX_FILE).write_bytes(onnx_bytes)
        for name in (SPEC_FILE, INFO_FILE):
            source = _find(downloaded, name)
            if source is None:
                shutil.rmtree(tmp, ignore_errors=True)
                raise ModelRejected(f"v{info.version} has no {name} among its artifacts")
            shutil.copyfile(source, tmp / name)
        model_info = json.loads((tmp / INFO_FILE).read_text())
        native_name = str(model_info.get("native_file", "model.ubj"))
        native = _find(downloaded, native_name)
        if native is None:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelRejected(f"v{info.version} has no native model {native_name}")
        shutil.copyfile(native, tmp / native_name)
        (tmp / REGISTERED_FILE).write_text(json.dumps(_registered_dict(info), indent=2))
        target = self._version_dir(info.version)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another worker staged the same version first; use theirs (it is verified on load).
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def _load_folder(
        self,
        folder: Path,
        source: Literal["registry", "cache"],
        expected: RegisteredVersion | None = None,
    ) -> LoadedModel:
        registered = json.loads((folder / REGISTERED_FILE).read_text())
        version = str(registered["version"])
        sha = str(registered["onnx_sha256"])
        if expected is not None and sha != expected.onnx_sha256:
            raise ModelRejected(f"cached v{version} was registered with a different sha256")
        onnx_path = folder / ONNX_FILE
        actual = sha256_file(onnx_path)
        if not sha or actual != sha:
            raise ChecksumMismatch(
                f"{self.model_name} v{version}: model.onnx sha256 {actual} does not match "
                f"the registered {sha or '(none)'}"
            )
        spec = FeatureSpec.from_json((folder / SPEC_FILE).read_text())
        if registered.get("feature_spec_version") and (
            spec.version != registered["feature_spec_version"]
        ):
            raise ModelRejected(
                f"v{version}: feature spec {spec.version} differs from the registered "
                f"{registered['feature_spec_version']}"
            )
        threshold = float(registered["threshold"])
        if not (math.isfinite(threshold) and 0.0 < threshold <= 1.0):
            raise ModelRejected(f"v{version}: threshold {threshold!r} is not in (0, 1]")
        model_info = json.loads((folder / INFO_FILE).read_text())
        algorithm = str(registered.get("tags", {}).get("algorithm") or model_info["algorithm"])
        native = folder / str(model_info.get("native_file", "model.ubj"))
        scorer = OnnxScorer(onnx_path.read_bytes(), threads=1)
        width = scorer.session.get_inputs()[0].shape[-1]
        if isinstance(width, int) and width != len(spec.features):
            raise ModelRejected(
                f"v{version}: ONNX expects {width} features, the spec has {len(spec.features)}"
            )
        probe_rows = np.zeros((1, len(spec.features)), dtype=np.float32)
        probe = scorer.predict(probe_rows)
        if not np.all(np.isfinite(probe)):
            raise ModelRejected(f"v{version}: the model returns non-finite scores")
        explainer = Explainer(algorithm, native)
        # Compile and warm every per-request path here, off the request path, so the first
        # payment after a start or a swap is as fast as the rest.
        for exact in (False, True):
            explainer.contributions(probe_rows, probe, exact=exact)
        return LoadedModel(
            name=self.model_name,
            version=version,
            source=source,
            folder=folder,
            onnx_sha256=sha,
            threshold=threshold,
            review_threshold=threshold * self.settings.review_band,
            algorithm=algorithm,
            spec=spec,
            builder=FeatureBuilder(spec),
            scorer=scorer,
            explainer=explainer,
            loaded_at=datetime.now(UTC),
        )

    def _write_pointer(self, version: str) -> None:
        pointer = self.cache_root / POINTER_FILE
        tmp = pointer.with_suffix(f".{os.getpid()}.{time.monotonic_ns()}.tmp")
        try:
            tmp.write_text(json.dumps({"version": version, "at": datetime.now(UTC).isoformat()}))
            os.replace(tmp, pointer)
        except OSError as exc:
            logger.warning("could not record the cached champion: %s", exc)

    def _load_cached_pointer(self) -> None:
        pointer = self.cache_root / POINTER_FILE
        if not pointer.exists():
            return
        try:
            version = str(json.loads(pointer.read_text())["version"])
            model = self._load_folder(self._version_dir(version), "cache")
        except Exception as exc:
            logger.error("the cached champion cannot be used: %s", exc)
            self._fail(f"cached champion unusable: {exc}")
            return
        self._swap(model)
        self._update_readiness()
