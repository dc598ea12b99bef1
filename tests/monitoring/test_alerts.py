"""Alert store lifecycle, de-duplication, webhook delivery and the CLI."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa

from fraud_assets.core.alerts import (
    ACKNOWLEDGED,
    DISMISSED,
    OPEN,
    RESOLVED,
    AlertStore,
    WebhookNotifier,
    default_fingerprint,
    main,
)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'platform.db'}"


class Hook:
    """A local webhook that answers with scripted status codes and records what it got."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.bodies: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                hook.bodies.append(json.loads(self.rfile.read(length)))
                status = hook.statuses.pop(0) if hook.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status < 400 else b"boom")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/secret"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.close()


def test_repeats_deduplicate_into_one_row(db_url):
    """A drift check running hourly must not open 24 alerts a day for the same problem."""
    store = AlertStore(db_url)
    first = store.raise_alert("DRIFT", "WARNING", "amount drifted", {"psi": 0.12}, "7")
    again = store.raise_alert("drift", "CRITICAL", "amount drifted", {"psi": 0.31}, "7")
    assert first.is_new and not again.is_new
    assert again.id == first.id and again.occurrences == 2
    assert again.severity == "CRITICAL" and again.details == {"psi": 0.31}
    assert again.last_seen_at >= first.last_seen_at
    assert again.fingerprint == default_fingerprint("DRIFT", "7", "amount drifted")
    calmer = store.raise_alert("DRIFT", "WARNING", "amount drifted", {"psi": 0.15}, "7")
    assert calmer.severity == "CRITICAL" and calmer.occurrences == 3
    other_model = store.raise_alert("DRIFT", "WARNING", "amount drifted", {}, "8")
    assert other_model.id != first.id
    assert len(store.list()) == 2
    with pytest.raises(ValueError, match="type"):
        store.raise_alert("WEATHER", "WARNING", "rain", {})


def test_ack_dismiss_flow_and_new_alert_after_dismissal(db_url):
    """Acknowledged alerts keep absorbing repeats; after a dismissal a recurrence is news."""
    store = AlertStore(db_url)
    alert = store.raise_alert("BIAS", "CRITICAL", "FPR gap on age_band", {"gap": 0.08}, "3")
    acked = store.acknowledge(alert.id, by="alice")
    assert acked.status == ACKNOWLEDGED and acked.status_by == "alice"
    repeat = store.raise_alert("BIAS", "CRITICAL", "FPR gap on age_band", {"gap": 0.09}, "3")
    assert repeat.id == alert.id and repeat.status == ACKNOWLEDGED and repeat.occurrences == 2
    with pytest.raises(ValueError):
        store.acknowledge(alert.id, by="bob")
    with pytest.raises(ValueError, match="reason"):
        store.dismiss(alert.id, by="alice", reason=" ")
    dismissed = store.dismiss(alert.id, by="alice", reason="known: promo for students")
    assert dismissed.status == DISMISSED and dismissed.status_reason.startswith("known")
    fresh = store.raise_alert("BIAS", "CRITICAL", "FPR gap on age_band", {"gap": 0.1}, "3")
    assert fresh.is_new and fresh.id != alert.id and fresh.status == OPEN
    assert [a.id for a in store.list(status=OPEN)] == [fresh.id]
    assert [a.id for a in store.list(status=DISMISSED, type="bias")] == [alert.id]
    with pytest.raises(KeyError):
        store.acknowledge(999, by="alice")


def test_resolve_closes_the_active_alert_of_a_fingerprint(db_url):
    """When the next check is OK again, the monitor resolves its alert by fingerprint."""
    store = AlertStore(db_url)
    alert = store.raise_alert("LATENCY", "WARNING", "p99 > 50ms", {"p99_ms": 61}, "3")
    assert store.resolve(alert.fingerprint) == 1
    assert store.get(alert.id).status == RESOLVED
    assert store.resolve(alert.fingerprint) == 0
    assert store.raise_alert("LATENCY", "WARNING", "p99 > 50ms", {}, "3").is_new


def test_only_one_active_row_per_fingerprint_even_across_stores(db_url):
    """Two monitor processes sharing the DB must still produce a single active alert."""
    first, second = AlertStore(db_url), AlertStore(db_url)
    a = first.raise_alert("PIPELINE", "CRITICAL", "training failed", {}, fingerprint="train")
    b = second.raise_alert("PIPELINE", "CRITICAL", "training failed", {}, fingerprint="train")
    assert a.id == b.id and b.occurrences == 2
    with first.engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.execute(
            sa.text(
                "INSERT INTO alerts (created_at, updated_at, type, severity, status, title, "
                "details, fingerprint, occurrences, last_seen_at) VALUES (:t, :t, 'PIPELINE', "
                "'CRITICAL', 'open', 'dup', '{}', 'train', 1, :t)"
            ),
            {"t": a.created_at},
        )


def test_webhook_delivers_slack_payload_for_new_alerts_only(db_url, hook):
    """On-call gets one message per incident, not one per hourly repeat."""
    notifier = WebhookNotifier(hook.url, timeout=2, retries=0)
    store = AlertStore(db_url, notifier=notifier)
    alert = store.raise_alert("DRIFT", "CRITICAL", "5 features drifted", {"psi": 0.4}, "12")
    store.raise_alert("DRIFT", "CRITICAL", "5 features drifted", {"psi": 0.5}, "12")
    assert len(hook.bodies) == 1
    body = hook.bodies[0]
    assert "[CRITICAL] DRIFT: 5 features drifted (model 12)" in body["text"]
    assert body["blocks"][0]["type"] == "section"
    assert any(f"ack {alert.id}" in json.dumps(block) for block in body["blocks"])


def test_webhook_retries_server_errors_then_succeeds(hook):
    """A Slack hiccup (5xx) must not lose the message."""
    hook.statuses = [500, 503]
    notifier = WebhookNotifier(hook.url, timeout=2, retries=3, backoff=0.01)
    assert notifier.post({"text": "hello"}) is True
    assert len(hook.bodies) == 3


def test_webhook_gives_up_quietly(hook, caplog):
    """A dead webhook must never crash the monitoring job; it logs and returns False."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreachable = WebhookNotifier(f"http://127.0.0.1:{port}/hook", timeout=1, retries=2, backoff=0)
    with caplog.at_level(logging.WARNING, logger="fraud_assets.alerts"):
        assert unreachable.post({"text": "x"}) is False
    assert "failed after 3 attempt(s)" in caplog.text
    assert "/hook" not in caplog.text  # webhook paths are secrets

    hook.statuses = [404]
    rejected = WebhookNotifier(hook.url, timeout=2, retries=3, backoff=0.01)
    assert rejected.post({"text": "x"}) is False
    assert len(hook.bodies) == 1  # a 4xx will not get better by retrying

    assert WebhookNotifier("not a url", retries=0).post({"text": "x"}) is False


def test_cli_list_ack_dismiss(db_url, capsys, monkeypatch):
    """On-call works alerts from a terminal; the env var points it at the platform DB."""
    store = AlertStore(db_url)
    first = store.raise_alert("PERFORMANCE", "WARNING", "recall dropped", {"recall": 0.6}, "4")
    second = store.raise_alert("DRIFT", "CRITICAL", "amount drifted", {}, "4")
    monkeypatch.setenv("FRAUD_PLATFORM_DB_URL", db_url)

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "recall dropped" in out and "amount drifted" in out and "SEVERITY" in out
    assert out.index("amount drifted") < out.index("recall dropped")

    assert main(["ack", str(first.id), "--by", "carol"]) == 0
    assert "acknowledged by carol" in capsys.readouterr().out
    assert main(["--db-url", db_url, "dismiss", str(second.id), "--reason", "seasonal"]) == 0
    assert "dismissed" in capsys.readouterr().out

    assert main(["list", "--status", "dismissed", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [a["id"] for a in listed] == [second.id]
    assert listed[0]["status_reason"] == "seasonal"

    assert main(["ack", str(second.id)]) == 1
    assert "cannot move it" in capsys.readouterr().err
    assert main(["ack", "999"]) == 1
    with pytest.raises(SystemExit):
        main(["dismiss", str(first.id)])  # --reason is required
