"""Alerts the scoring service raises about itself, in the platform's alert store.

The service raises PIPELINE alerts when the MLflow registry cannot be reached, when a
champion version is refused (checksum mismatch, broken artifact) and when the online store
is down, and resolves them when the condition ends. They appear beside the monitoring
alerts (`python -m fraud_assets.core.alerts list`) and go to the webhook if one is set.

Alerts are written from background threads (the registry poller, the store recovery
thread), never on the request path, and a failure to write one is logged, never raised.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

logger = logging.getLogger("serving.alerting")

REGISTRY_UNREACHABLE = "serving:registry-unreachable"
STORE_DOWN = "serving:online-store-down"


class ServiceAlerts:
    """Opens and resolves the service's alerts; repeats are counted by the store."""

    def __init__(self, db_url: str, webhook_url: str | None = None) -> None:
        self.db_url = db_url
        self.webhook_url = webhook_url
        self._store: Any = None
        self._lock = threading.Lock()
        self._open: set[str] = set()

    def _alerts(self) -> Any:
        if self._store is None:
            from fraud_assets.core.alerts import AlertStore, WebhookNotifier

            notifier = WebhookNotifier(self.webhook_url) if self.webhook_url else None
            self._store = AlertStore(self.db_url, notifier)
        return self._store

    def open(
        self,
        fingerprint: str,
        severity: str,
        title: str,
        details: dict[str, Any] | None = None,
        model_version: str | None = None,
    ) -> None:
        """Raise (or count again) the alert with this fingerprint."""
        try:
            with self._lock:
                self._alerts().raise_alert(
                    "PIPELINE", severity, title, details or {}, model_version, fingerprint
                )
                self._open.add(fingerprint)
        except Exception:
            logger.exception("could not record the alert %r", title)

    def resolve(self, fingerprint: str, reason: str) -> None:
        """Close the active alert with this fingerprint, if this service opened one."""
        if fingerprint not in self._open:
            return
        try:
            with self._lock:
                self._alerts().resolve(fingerprint, "scoring-service", reason)
                self._open.discard(fingerprint)
        except Exception:
            logger.exception("could not resolve the alert %s", fingerprint)
