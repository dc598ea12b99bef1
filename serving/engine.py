"""What the API does, independent of the web framework: score, explain, take feedback.

`ScoringEngine` owns the champion model, the online store, the prediction log, the API
keys and the rate limiter. The BentoML service (`serving.service`) is a thin layer over
it, so the scoring path can be tested and benchmarked without a server.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np

from fraud_assets.core.live_batch import HistoryBatch, batch_features
from serving.alerting import REGISTRY_UNREACHABLE, STORE_DOWN, ServiceAlerts
from serving.answers import Reason, Scored, ScoredBatch, decode_scored, record_text
from serving.champion import ChampionModel, LoadedModel
from serving.config import ServingSettings
from serving.errors import fail
from serving.keys import ApiKeys
from serving.metrics import build_metrics
from serving.online_store import (
    Commit,
    Prepared,
    PreparedBatch,
    SqliteOnlineStore,
    StoredResult,
    StoreTxn,
    StoreUnavailable,
    empty_history,
    open_store,
)
from serving.prediction_log import PredictionLog, age_band
from serving.ratelimit import open_limiter
from serving.schemas import (
    BatchRequest,
    Explanation,
    FeatureContribution,
    Feedback,
    FeedbackAck,
    Transaction,
)
from serving.store_api import features_json_rows
from serving.store_guard import GuardedStore

logger = logging.getLogger("serving.engine")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)
CATEGORICAL = ("merchant_category", "currency", "device_type", "channel", "country")
TOP_REASONS = 3


def ts_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, floored like the offline pipeline."""
    return (moment - EPOCH) // ONE_MS


def store_txn(txn: Transaction) -> StoreTxn:
    return StoreTxn(
        transaction_id=txn.transaction_id,
        user_id=txn.user_id,
        merchant_id=txn.merchant_id,
        ts_ms=ts_ms(txn.timestamp),
        amount=float(txn.amount),
        device_id=txn.device_id or "",
        country=txn.country or "",
    )


def feature_input(txn: Transaction, ts: int) -> dict[str, object]:
    """The transaction as the feature builder reads it (missing categoricals left out)."""
    out: dict[str, object] = {"ts_ms": ts, "amount": float(txn.amount)}
    for name in CATEGORICAL:
        value = getattr(txn, name)
        if value is not None:
            out[name] = value
    return out


def new_prediction_ids(n: int) -> list[uuid.UUID]:
    """n new prediction ids: time-ordered UUIDs (version 7, RFC 9562).

    The first 48 bits are the Unix time in milliseconds and the other 74 random, so ids made
    one after another sort together: inserting them into the prediction log's and the
    online store's indexes touches the last pages of each index instead of a random page
    per row. The bits of all n are set at once with numpy (~0.5 µs an id).
    """
    raw = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    millis = time.time_ns() // 1_000_000
    raw[:, :6] = np.frombuffer(millis.to_bytes(6, "big"), dtype=np.uint8)
    raw[:, 6] = 0x70 | (raw[:, 6] & 0x0F)  # version 7
    raw[:, 8] = 0x80 | (raw[:, 8] & 0x3F)  # variant 0b10
    data = raw.tobytes()
    return [uuid.UUID(bytes=data[k : k + 16]) for k in range(0, 16 * n, 16)]


def batch_columns(txns: Sequence[Transaction], stxns: Sequence[StoreTxn]) -> dict[str, Any]:
    """Many transactions as the batch feature builder reads them (columns, canonical order)."""
    columns: dict[str, Any] = {
        "ts_ms": np.array([t.ts_ms for t in stxns], dtype=np.int64),
        "amount": np.array([t.amount for t in stxns], dtype=np.float64),
        "user_id": [t.user_id for t in stxns],
        "merchant_id": [t.merchant_id for t in stxns],
        "device_id": [t.device_id for t in stxns],
    }
    for name in CATEGORICAL:
        columns[name] = [getattr(t, name) or "" for t in txns]
    return columns


class ScoringEngine:
    """Scores payments with the champion model and keeps the online state current."""

    def __init__(self, settings: ServingSettings, start_model: bool = True) -> None:
        self.settings = settings
        self.metrics = build_metrics()
        self.alerts = ServiceAlerts(settings.platform_db_url, settings.alert_webhook_url)
        backend = open_store(settings.online_store_url, settings.store_timeout_s)
        if isinstance(backend, SqliteOnlineStore):
            backend.start_checkpointer()
        self.store = GuardedStore(backend, on_change=self._on_store_change)
        self.limiter = open_limiter(settings.online_store_url, settings.rate_limit_per_min)
        self.keys = None if settings.auth_disabled else ApiKeys(settings.platform_db_url)
        self.log = PredictionLog(
            settings.prediction_log_url,
            spool_dir=settings.serving_dir / "spool",
            on_drop=self.metrics.log_dropped.inc,
            on_spool=self.metrics.log_spooled.inc,
            on_replay=self.metrics.log_replayed.inc,
            flush_interval_s=settings.log_flush_s,
        )
        self.champion = ChampionModel(
            settings,
            on_swap=self._on_swap,
            on_failure=self._on_model_failure,
            on_registry=self._on_registry,
        )
        self._closed = False
        # Labelled Prometheus children cost ~20 us to look up; requests reuse them.
        self._decision_counters: dict[tuple[str, str], Any] = {}
        self._predict_timer = self.metrics.scoring_seconds.labels("predict")
        if start_model:
            self.champion.start()

    def _on_swap(self, new: LoadedModel, old: LoadedModel | None) -> None:
        gauge = self.metrics.model_info
        if old is not None:
            gauge.labels(old.name, old.version).set(0)
        gauge.labels(new.name, new.version).set(1)
        self.metrics.model_swaps.inc()
        import gc

        # Keep the new model's objects out of the collector's way (see service.tune_gc).
        gc.freeze()

    def _count_decision(self, decision: str, version: str, times: int = 1) -> None:
        counter = self._decision_counters.get((decision, version))
        if counter is None:
            counter = self.metrics.decisions.labels(decision, version)
            self._decision_counters[(decision, version)] = counter
        # One increment per decision and batch: each costs ~1 µs in multiprocess mode.
        counter.inc(times)

    def _on_model_failure(self, message: str) -> None:
        self.metrics.model_failures.inc()
        current = self.champion.current
        self.alerts.open(
            "serving:model:" + hashlib.sha256(message.encode()).hexdigest()[:24],
            "CRITICAL",
            f"Scoring service could not take the champion: {message[:200]}",
            {
                "message": message,
                "serving_version": current.version if current else None,
                "model_name": self.settings.model_name,
            },
            current.version if current else None,
        )

    def _on_registry(self, reachable: bool, error: str | None) -> None:
        if reachable:
            self.alerts.resolve(REGISTRY_UNREACHABLE, "the MLflow registry answers again")
            return
        current = self.champion.current
        self.alerts.open(
            REGISTRY_UNREACHABLE,
            "WARNING" if current is not None else "CRITICAL",
            "Scoring service cannot reach the MLflow registry"
            + (f"; still serving v{current.version}" if current else "; no model to serve"),
            {"tracking_uri": self.settings.tracking_uri, "error": error},
            current.version if current else None,
        )

    def _on_store_change(self, available: bool, error: str | None) -> None:
        if available:
            self.alerts.resolve(STORE_DOWN, "the online store answers again")
            return
        self.alerts.open(
            STORE_DOWN,
            "CRITICAL",
            "Online feature store down: payments are scored without history (degraded)",
            {"online_store": self.settings.online_store_url, "error": error},
        )

    def close(self) -> None:
        """Stop polling and flush the prediction log (graceful shutdown)."""
        if self._closed:
            return
        self._closed = True
        self.champion.stop()
        self.limiter.close()
        self.log.close()
        self.store.close()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether a verified model is loaded, and what /readyz says about it."""
        status = self.champion.status
        model = self.champion.current
        store_ok: str = "ok"
        if not self.store.available:
            # Still ready: payments are scored without history and flagged degraded.
            store_ok = (
                f"degraded: {self.store.error}; {len(self.store.pending)} history updates "
                "wait for the store"
            )
        body: dict[str, Any] = {
            "ready": status.ready,
            "reason": status.reason,
            "model": None
            if model is None
            else {
                "name": model.name,
                "version": model.version,
                "source": model.source,
                "threshold": model.threshold,
                "review_threshold": model.review_threshold,
                "feature_spec_version": model.spec.version,
                "loaded_at": model.loaded_at.isoformat(),
            },
            "registry": {
                "tracking_uri": self.settings.tracking_uri,
                "reachable": status.registry_reachable,
                "error": status.registry_error,
                "last_checked": status.last_checked.isoformat() if status.last_checked else None,
            },
            "refused_versions": dict(status.refused_versions),
            "online_store": store_ok,
        }
        return status.ready, body

    def _model(self) -> LoadedModel:
        model = self.champion.current
        if model is None:
            fail(503, "model_unavailable", self.champion.status.reason)
        return model

    def _prepare(self, txn: StoreTxn) -> tuple[Prepared, bool]:
        try:
            return self.store.prepare(txn), False
        except StoreUnavailable as exc:
            logger.error("scoring %s without history: %s", txn.transaction_id, exc)
            self.metrics.degraded.inc()
            user, merchant = empty_history()
            return Prepared(user, merchant), True

    def _reasons(
        self, model: LoadedModel, x: np.ndarray, scores: np.ndarray, decisions: Sequence[str]
    ) -> list[list[Reason]]:
        mode = self.settings.reason_codes
        n = len(x)
        if mode == "exact":
            exact = np.ones(n, dtype=bool)
        elif mode == "fast":
            exact = np.zeros(n, dtype=bool)
        else:
            exact = np.array([d != "approve" for d in decisions], dtype=bool)
        contrib = np.zeros((n, x.shape[1]))
        for flag in (True, False):
            rows = np.flatnonzero(exact == flag)
            if len(rows):
                contrib[rows], _ = model.explainer.contributions(x[rows], scores[rows], flag)
        names = model.spec.features
        top = np.argsort(-contrib, axis=1, kind="stable")[:, :TOP_REASONS]
        rows = np.arange(n)[:, None]
        top_values = x[rows, top].tolist()
        top_contrib = contrib[rows, top].tolist()
        return [
            [
                Reason(names[j], v, c)
                for j, v, c in zip(features, values, contributions, strict=True)
                if c > 0
            ]
            for features, values, contributions in zip(
                top.tolist(), top_values, top_contrib, strict=True
            )
        ]

    def _log_row(
        self,
        txn: Transaction,
        features: np.ndarray,
        result: Scored,
        endpoint: str,
        api_key: str | None,
        names: Sequence[str],
    ) -> dict[str, Any]:
        return {
            "prediction_id": str(result.prediction_id),
            "transaction_id": txn.transaction_id,
            "scored_at": datetime.now(UTC),
            "transaction_ts": txn.timestamp,
            "user_id": txn.user_id,
            "merchant_id": txn.merchant_id,
            "merchant_category": txn.merchant_category,
            "amount": float(txn.amount),
            "currency": txn.currency,
            "device_id": txn.device_id,
            "device_type": txn.device_type,
            "channel": txn.channel,
            "country": txn.country,
            "age_band": age_band(txn.age),
            "features": dict(zip(names, features.tolist(), strict=True)),
            "fraud_score": result.fraud_score,
            "decision": result.decision,
            "model_version": result.model_version,
            "latency_ms": result.latency_ms,
            "degraded": result.degraded,
            "endpoint": endpoint,
            "api_key": api_key,
        }

    def _replay(self, stored: StoredResult, model: LoadedModel) -> Scored:
        """The original answer to a retried transaction_id."""
        if stored.response:
            return decode_scored(stored.response)
        # Committed but never answered (a batch interrupted mid-way): score the stored
        # features again, keeping the original prediction id.
        x = np.asarray([stored.features], dtype=np.float64)
        score = float(model.scorer.predict(x)[0])
        decision = model.decide(score)
        result = Scored(
            prediction_id=uuid.UUID(stored.prediction_id),
            transaction_id=stored.transaction_id,
            fraud_score=score,
            decision=decision,
            is_fraud=decision == "decline",
            reason_codes=self._reasons(model, x, np.array([score]), [decision])[0],
            model_version=model.version,
            latency_ms=0.0,
            degraded=False,
        )
        try:
            self.store.save_responses([(stored.transaction_id, record_text(result))])
        except StoreUnavailable as exc:
            logger.error("could not save the response of %s: %s", stored.transaction_id, exc)
        return result

    def predict(self, txn: Transaction, api_key: str | None = None) -> Scored:
        """Score one payment, record it in the history and the log, return the decision."""
        started = time.perf_counter()
        model = self._model()
        stxn = store_txn(txn)
        prepared, degraded = self._prepare(stxn)
        if prepared.existing is not None:
            return self._replay(prepared.existing, model)
        features = model.builder.build(
            feature_input(txn, stxn.ts_ms), prepared.user, prepared.merchant
        )
        x = features[None, :]
        score = float(model.scorer.predict(x)[0])
        decision = model.decide(score)
        reasons = self._reasons(model, x, np.array([score]), [decision])[0]
        prediction_id = new_prediction_ids(1)[0]

        def answer(is_degraded: bool) -> Scored:
            return Scored(
                prediction_id=prediction_id,
                transaction_id=txn.transaction_id,
                fraud_score=score,
                decision=decision,
                is_fraud=decision == "decline",
                reason_codes=reasons,
                model_version=model.version,
                latency_ms=round((time.perf_counter() - started) * 1000.0, 3),
                degraded=is_degraded,
            )

        result = answer(degraded)
        if not degraded:
            try:
                earlier = self.store.commit(
                    stxn, features, str(prediction_id), model.version, record_text(result)
                )
            except StoreUnavailable as exc:
                logger.error("%s scored but not recorded: %s", txn.transaction_id, exc)
                self.metrics.degraded.inc()
                degraded = True
                result = answer(True)
            else:
                if earlier is not None:
                    return self._replay(earlier, model)
        if degraded:
            self.store.defer(
                Commit(stxn, features, str(prediction_id), model.version, record_text(result))
            )
        self._count_decision(decision, model.version)
        self._predict_timer.observe(time.perf_counter() - started)
        self.log.log(self._log_row(txn, features, result, "predict", api_key, model.spec.features))
        return result

    def predict_batch(self, request: BatchRequest, api_key: str | None = None) -> ScoredBatch:
        """Score many payments as if one by one in time order, with one read and one write.

        The store is read once for the whole batch; each payment's features also count the
        batch's earlier payments of the same customer and merchant (`batch_features`), one
        model call scores them all, and one write records them.
        """
        started = time.perf_counter()
        n = len(request.transactions)
        results = self._score_many(
            request.transactions, [api_key] * n, [started] * n, "predict_batch"
        )
        self.metrics.scoring_seconds.labels("predict_batch").observe(time.perf_counter() - started)
        return ScoredBatch(results=results)

    def predict_many(
        self,
        txns: Sequence[Transaction],
        api_keys: Sequence[str | None],
        started: Sequence[float],
    ) -> list[Scored]:
        """Score concurrent single payments together (what `predict` answers each of them).

        `started[i]` is when request i began (`time.perf_counter()`), for its latency.
        """
        results = self._score_many(txns, api_keys, started, "predict")
        now = time.perf_counter()
        for began in started:
            self._predict_timer.observe(now - began)
        return results

    def _score_many(
        self,
        txns: Sequence[Transaction],
        api_keys: Sequence[str | None],
        started: Sequence[float],
        endpoint: str,
    ) -> list[Scored]:
        """Score payments in canonical order with one store read, model call and write."""
        model = self._model()
        n = len(txns)
        stxns = [store_txn(t) for t in txns]
        order = sorted(range(n), key=lambda i: (stxns[i].ts_ms, stxns[i].transaction_id))
        first_of: dict[str, int] = {}
        unique: list[int] = []  # first occurrence of each transaction_id, in canonical order
        for i in order:
            if stxns[i].transaction_id not in first_of:
                first_of[stxns[i].transaction_id] = i
                unique.append(i)
        results: list[Scored | None] = [None] * n
        degraded = False
        try:
            prepared = self.store.prepare_many([stxns[i] for i in unique])
        except StoreUnavailable as exc:
            logger.error("scoring %d payments without history: %s", len(unique), exc)
            self.metrics.degraded.inc(len(unique))
            degraded = True
            prepared = PreparedBatch(
                HistoryBatch.empty(len(unique)), {}, np.zeros(len(unique), dtype=bool)
            )
        for k, stored in prepared.existing.items():
            results[unique[k]] = self._replay(stored, model)
        todo = [k for k in range(len(unique)) if k not in prepared.existing]
        if todo:
            rows = [unique[k] for k in todo]
            history = prepared.history.take(np.asarray(todo, dtype=np.int64))
            # Payments already in the store, or not recorded now, add nothing to the history.
            adds = np.zeros(len(todo), dtype=bool) if degraded else ~prepared.in_history[todo]
            x = batch_features(
                batch_columns([txns[i] for i in rows], [stxns[i] for i in rows]),
                adds,
                history,
                model.spec,
            )
            scores = model.scorer.predict(x)
            decisions = [model.decide(s) for s in scores.tolist()]
            reasons = self._reasons(model, x, scores, decisions)
            finished = time.perf_counter()
            ids = new_prediction_ids(len(rows))
            score_list = scores.tolist()
            scored = [
                Scored(
                    prediction_id=ids[k],
                    transaction_id=stxns[i].transaction_id,
                    fraud_score=score_list[k],
                    decision=decisions[k],
                    is_fraud=decisions[k] == "decline",
                    reason_codes=reasons[k],
                    model_version=model.version,
                    latency_ms=round((finished - started[i]) * 1000.0, 3),
                    degraded=degraded,
                )
                for k, i in enumerate(rows)
            ]
            earlier = self._record_batch(model, [stxns[i] for i in rows], x, scored, degraded)
            logged: list[dict[str, Any]] = []
            names = model.spec.features
            counted: Counter[str] = Counter()
            for k, i in enumerate(rows):
                stored = earlier.get(stxns[i].transaction_id)
                if stored is not None:
                    results[i] = self._replay(stored, model)
                    continue
                result = scored[k]
                results[i] = result
                counted[result.decision] += 1
                logged.append(self._log_row(txns[i], x[k], result, endpoint, api_keys[i], names))
            for decision, times in counted.items():
                self._count_decision(decision, model.version, times)
            self.log.log_many(logged)
        for i in range(n):
            if results[i] is None:
                results[i] = results[first_of[stxns[i].transaction_id]]
        return [r for r in results if r is not None]

    def _record_batch(
        self,
        model: LoadedModel,
        stxns: Sequence[StoreTxn],
        x: np.ndarray,
        scored: list[Scored],
        degraded: bool,
    ) -> dict[str, StoredResult]:
        """Record a scored batch in one write; returns results other requests stored first.

        If the store cannot take them, the payments are flagged degraded (in `scored`) and
        their history updates queued for when it is back.
        """
        if not degraded:
            texts = features_json_rows(x)
            version = model.version
            commits = [
                Commit(t, x[k], str(r.prediction_id), version, record_text(r), texts[k])
                for k, (t, r) in enumerate(zip(stxns, scored, strict=True))
            ]
            try:
                return self.store.commit_many(commits)
            except StoreUnavailable as exc:
                logger.error("a batch of %d scored but not recorded: %s", len(commits), exc)
                self.metrics.degraded.inc(len(commits))
        for k, t in enumerate(stxns):
            scored[k] = msgspec.structs.replace(scored[k], degraded=True)
            self.store.defer(
                Commit(
                    t,
                    x[k],
                    str(scored[k].prediction_id),
                    model.version,
                    record_text(scored[k]),
                )
            )
        return {}

    def explain(self, txn: Transaction) -> Explanation:
        """Every feature's exact contribution; a scored transaction_id is explained as scored."""
        model = self._model()
        stxn = store_txn(txn)
        # One store read gives either the payment's stored result or its history.
        prepared, _ = self._prepare(stxn)
        stored = prepared.existing
        if stored is not None and len(stored.features) == len(model.spec.features):
            features = np.asarray(stored.features, dtype=np.float64)
        else:
            stored = None
            features = model.builder.build(
                feature_input(txn, stxn.ts_ms), prepared.user, prepared.merchant
            )
        x = features[None, :]
        scores = model.scorer.predict(x)
        contrib, base = model.explainer.contributions(x, scores, exact=True)
        score = float(scores[0])
        order = np.argsort(-np.abs(contrib[0]), kind="stable")
        names = model.spec.features
        return Explanation.trusted(
            transaction_id=txn.transaction_id,
            model_version=model.version,
            fraud_score=score,
            decision=model.decide(score),
            logit=float(base[0] + contrib[0].sum()),
            base_value=float(base[0]),
            contributions=[
                FeatureContribution.trusted(feature=names[j], value=v, contribution=c)
                for j, v, c in zip(
                    order.tolist(),
                    features[order].tolist(),
                    contrib[0, order].tolist(),
                    strict=True,
                )
            ],
            from_history=stored is not None,
        )

    def feedback(self, feedback: Feedback, api_key: str | None = None) -> FeedbackAck:
        """Record a payment's confirmed outcome; it feeds the merchant's fraud rate."""
        prediction_id = str(feedback.prediction_id)
        try:
            stored = self.store.find_prediction(prediction_id)
        except StoreUnavailable as exc:
            fail(503, "store_unavailable", f"the outcome cannot be recorded now: {exc}")
        if stored is None:
            fail(
                404,
                "unknown_prediction",
                f"no prediction with id {prediction_id}",
                [("prediction_id", "not a prediction_id returned by this service")],
            )
        label_ts = feedback.label_timestamp or datetime.now(UTC)
        try:
            self.store.record_label(stored.transaction_id, feedback.is_fraud, ts_ms(label_ts))
        except StoreUnavailable as exc:
            fail(503, "store_unavailable", f"the outcome cannot be recorded now: {exc}")
        self.log.record_feedback(
            prediction_id, stored.transaction_id, feedback.is_fraud, label_ts, api_key
        )
        return FeedbackAck(
            prediction_id=feedback.prediction_id,
            transaction_id=stored.transaction_id,
            is_fraud=feedback.is_fraud,
            label_timestamp=label_ts,
        )
