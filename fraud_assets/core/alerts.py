"""Alerts raised by monitoring (drift, bias, performance, latency, pipeline failures).

Alerts live in the `alerts` table of the platform database (any SQLAlchemy URL: SQLite for
local runs, PostgreSQL in production). An alert moves through these statuses:

* ``open``: raised and nobody has looked at it yet;
* ``acknowledged``: someone owns it; it stays active;
* ``dismissed``: judged not a problem (with a reason);
* ``resolved``: the condition cleared (e.g. the next drift check came back OK).

Raising the same alert again while one is open or acknowledged does not add a row: the
existing one counts another occurrence (and keeps the worse severity and latest details).
Which alerts are "the same" is decided by a fingerprint, by default a hash of the type,
model version and title. Once dismissed or resolved, the next raise opens a fresh alert.

A `WebhookNotifier` posts new alerts (not repeats) to Slack or any Slack-compatible
webhook; delivery failures are logged and never break the caller.

Command line::

    python -m fraud_assets.core.alerts list [--status open] [--type DRIFT]
    python -m fraud_assets.core.alerts ack 12 [--by alice]
    python -m fraud_assets.core.alerts dismiss 12 --reason "expected: holiday traffic"

``--db-url`` defaults to ``$FRAUD_PLATFORM_DB_URL`` or ``sqlite:///.fraud/platform.db``.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from fraud_assets.core.tables import create_tables

logger = logging.getLogger("fraud_assets.alerts")

TYPES: tuple[str, ...] = ("DRIFT", "BIAS", "PERFORMANCE", "LATENCY", "PIPELINE")
SEVERITIES: tuple[str, ...] = ("WARNING", "CRITICAL")
OPEN, ACKNOWLEDGED, DISMISSED, RESOLVED = "open", "acknowledged", "dismissed", "resolved"
STATUSES: tuple[str, ...] = (OPEN, ACKNOWLEDGED, DISMISSED, RESOLVED)
ACTIVE: tuple[str, ...] = (OPEN, ACKNOWLEDGED)
DEFAULT_DB_URL = "sqlite:///.fraud/platform.db"

_metadata = sa.MetaData()
alerts_table = sa.Table(
    "alerts",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("type", sa.String(16), nullable=False, index=True),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("model_version", sa.String(64)),
    sa.Column("title", sa.String(500), nullable=False),
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False, index=True),
    sa.Column("occurrences", sa.Integer, nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status_by", sa.String(200)),
    sa.Column("status_reason", sa.Text),
)
# At most one active alert per fingerprint, enforced by the database so that two monitors
# raising at the same moment cannot both insert.
sa.Index(
    "uq_alerts_active_fingerprint",
    alerts_table.c.fingerprint,
    unique=True,
    sqlite_where=alerts_table.c.status.in_(ACTIVE),
    postgresql_where=alerts_table.c.status.in_(ACTIVE),
)


@dataclass(frozen=True)
class Alert:
    """One alert row. `is_new` is True only on the object returned by the raise that
    inserted it (so callers know whether a notification went out)."""

    id: int
    created_at: datetime
    updated_at: datetime
    type: str
    severity: str
    status: str
    model_version: str | None
    title: str
    details: dict[str, Any]
    fingerprint: str
    occurrences: int
    last_seen_at: datetime
    status_by: str | None = None
    status_reason: str | None = None
    is_new: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "is_new"}
        for key in ("created_at", "updated_at", "last_seen_at"):
            out[key] = out[key].isoformat()
        return out


def default_fingerprint(alert_type: str, model_version: str | None, title: str) -> str:
    """Hash of type, model version and title: the identity of "the same alert"."""
    key = json.dumps([alert_type, model_version or "", title])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes even for timezone-aware columns.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _row_to_alert(row: Any, is_new: bool = False) -> Alert:
    return Alert(
        id=int(row["id"]),
        created_at=_utc(row["created_at"]),
        updated_at=_utc(row["updated_at"]),
        type=row["type"],
        severity=row["severity"],
        status=row["status"],
        model_version=row["model_version"],
        title=row["title"],
        details=json.loads(row["details"] or "{}"),
        fingerprint=row["fingerprint"],
        occurrences=int(row["occurrences"]),
        last_seen_at=_utc(row["last_seen_at"]),
        status_by=row["status_by"],
        status_reason=row["status_reason"],
        is_new=is_new,
    )


class WebhookNotifier:
    """Posts alerts as Slack-compatible JSON to a webhook URL.

    Connection errors, timeouts, 429 and 5xx responses are retried `retries` times with
    exponential backoff (`backoff`, then twice that, ...). Other 4xx responses are not
    retried: the request itself is wrong. `notify` never raises; it returns whether the
    message was delivered and logs why not.
    """

    def __init__(
        self, url: str, timeout: float = 5, retries: int = 3, backoff: float = 0.5
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    @staticmethod
    def payload(alert: Alert) -> dict[str, Any]:
        """Slack message: a one-line `text` (also the fallback) and blocks with the facts."""
        icon = ":rotating_light:" if alert.severity == "CRITICAL" else ":warning:"
        model = f" (model {alert.model_version})" if alert.model_version else ""
        text = f"{icon} [{alert.severity}] {alert.type}: {alert.title}{model}"
        details = json.dumps(alert.details, indent=1, sort_keys=True, default=str)
        if len(details) > 2500:
            details = details[:2500] + "\n..."
        fields = [
            ("Type", alert.type),
            ("Severity", alert.severity),
            ("Model version", alert.model_version or "-"),
            ("Alert id", str(alert.id)),
        ]
        return {
            "text": text,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
                {
                    "type": "section",
                    "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in fields],
                },
                {"type": "section", "text": {"type": "mrkdwn", "text": f"```{details}```"}},
                {
                    "type": "context",
                    "elements": [
                        {
                            "type": "mrkdwn",
                            "text": f"Raised {alert.created_at:%Y-%m-%d %H:%M:%S} UTC. "
                            f"Acknowledge: `python -m fraud_assets.core.alerts ack {alert.id}`",
                        }
                    ],
                },
            ],
        }

    def notify(self, alert: Alert) -> bool:
        """Deliver one alert; True on a 2xx response, False (logged) otherwise."""
        try:
            body = self.payload(alert)
        except Exception:
            logger.exception("could not build the webhook message for alert %s", alert.id)
            return False
        return self.post(body)

    def post(self, body: dict[str, Any]) -> bool:
        """POST a JSON body with retries; True on a 2xx response, never raises."""
        problem = "not attempted"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = httpx.post(self.url, json=body, timeout=self.timeout)
            except Exception as error:
                problem = f"{type(error).__name__}: {error}"
                continue
            if response.is_success:
                return True
            problem = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code < 500 and response.status_code != 429:
                break
        logger.warning(
            "webhook delivery to %s failed after %d attempt(s): %s",
            _redact(self.url),
            attempt + 1,
            problem,
        )
        return False


def _redact(url: str) -> str:
    """Scheme and host only: webhook paths are secrets."""
    try:
        parsed = httpx.URL(url)
        port = f":{parsed.port}" if parsed.port else ""
        return f"{parsed.scheme}://{parsed.host}{port}/..."
    except Exception:
        return "<invalid url>"


class AlertStore:
    """Alerts in the platform database, with de-duplication and an optional notifier."""

    def __init__(self, url: str, notifier: WebhookNotifier | None = None) -> None:
        connect_args: dict[str, Any] = {}
        if url.startswith("sqlite"):
            # Monitors and the CLI may write the same SQLite file at once; wait for the lock.
            connect_args["timeout"] = 30
        self.url = url
        self.engine = sa.create_engine(url, future=True, connect_args=connect_args)
        create_tables(_metadata, self.engine)
        self.notifier = notifier

    def raise_alert(
        self,
        type: str,  # noqa: A002 - the platform's name for the alert kind
        severity: str,
        title: str,
        details: dict[str, Any] | None = None,
        model_version: str | None = None,
        fingerprint: str | None = None,
    ) -> Alert:
        """Open an alert, or count another occurrence of the active one with its fingerprint.

        A repeat keeps the worse of the two severities and the latest details; only a newly
        inserted alert is sent to the notifier.
        """
        alert_type, severity = type.upper(), severity.upper()
        if alert_type not in TYPES:
            raise ValueError(f"type must be one of {TYPES}, got {type!r}")
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
        fp = fingerprint or default_fingerprint(alert_type, model_version, title)
        details_text = json.dumps(details or {}, sort_keys=True, default=str)
        for _ in range(2):
            try:
                alert = self._upsert(alert_type, severity, title, details_text, model_version, fp)
                break
            except sa.exc.IntegrityError:
                # Another writer inserted the same fingerprint first: count ours on its row.
                continue
        else:
            raise RuntimeError(f"could not record alert {fp}")
        if alert.is_new and self.notifier is not None:
            self.notifier.notify(alert)
        return alert

    def _upsert(
        self,
        alert_type: str,
        severity: str,
        title: str,
        details_text: str,
        model_version: str | None,
        fp: str,
    ) -> Alert:
        now = datetime.now(UTC)
        t = alerts_table
        with self.engine.begin() as conn:
            active = (
                conn.execute(sa.select(t).where(t.c.fingerprint == fp, t.c.status.in_(ACTIVE)))
                .mappings()
                .first()
            )
            if active is not None:
                worse = "CRITICAL" if "CRITICAL" in (severity, active["severity"]) else severity
                conn.execute(
                    t.update()
                    .where(t.c.id == active["id"])
                    .values(
                        occurrences=t.c.occurrences + 1,
                        last_seen_at=now,
                        updated_at=now,
                        severity=worse,
                        details=details_text,
                    )
                )
                alert_id, is_new = active["id"], False
            else:
                alert_id = conn.execute(
                    t.insert().values(
                        created_at=now,
                        updated_at=now,
                        type=alert_type,
                        severity=severity,
                        status=OPEN,
                        model_version=model_version,
                        title=title,
                        details=details_text,
                        fingerprint=fp,
                        occurrences=1,
                        last_seen_at=now,
                    )
                ).inserted_primary_key[0]
                is_new = True
            row = conn.execute(sa.select(t).where(t.c.id == alert_id)).mappings().one()
        return _row_to_alert(row, is_new=is_new)

    def get(self, alert_id: int) -> Alert:
        """One alert by id; KeyError if there is none."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(alerts_table).where(alerts_table.c.id == alert_id))
                .mappings()
                .first()
            )
        if row is None:
            raise KeyError(f"no alert with id {alert_id}")
        return _row_to_alert(row)

    def list(
        self,
        status: str | None = None,
        type: str | None = None,  # noqa: A002 - mirrors raise_alert
    ) -> list[Alert]:
        """Alerts, newest first, optionally only one status and/or type."""
        query = sa.select(alerts_table).order_by(alerts_table.c.id.desc())
        if status is not None:
            query = query.where(alerts_table.c.status == status.lower())
        if type is not None:
            query = query.where(alerts_table.c.type == type.upper())
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_row_to_alert(r) for r in rows]

    def _transition(
        self, alert_id: int, allowed_from: Sequence[str], to: str, by: str, reason: str | None
    ) -> Alert:
        now = datetime.now(UTC)
        t = alerts_table
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == alert_id)).mappings().first()
            if row is None:
                raise KeyError(f"no alert with id {alert_id}")
            if row["status"] not in allowed_from:
                raise ValueError(f"alert {alert_id} is {row['status']}; cannot move it to {to}")
            conn.execute(
                t.update()
                .where(t.c.id == alert_id)
                .values(status=to, updated_at=now, status_by=by, status_reason=reason)
            )
        return self.get(alert_id)

    def acknowledge(self, alert_id: int, by: str) -> Alert:
        """Take ownership of an open alert; it stays active and keeps de-duplicating."""
        return self._transition(alert_id, (OPEN,), ACKNOWLEDGED, by, None)

    def dismiss(self, alert_id: int, by: str, reason: str) -> Alert:
        """Close an active alert as not a problem; the next raise opens a new alert."""
        if not reason or not reason.strip():
            raise ValueError("dismissing an alert needs a reason")
        return self._transition(alert_id, ACTIVE, DISMISSED, by, reason)

    def resolve(self, fingerprint: str, by: str = "system", reason: str | None = None) -> int:
        """Mark the active alert with this fingerprint resolved; returns how many changed."""
        t = alerts_table
        with self.engine.begin() as conn:
            result = conn.execute(
                t.update()
                .where(t.c.fingerprint == fingerprint, t.c.status.in_(ACTIVE))
                .values(
                    status=RESOLVED,
                    updated_at=datetime.now(UTC),
                    status_by=by,
                    status_reason=reason,
                )
            )
        return int(result.rowcount or 0)


def format_table(alerts: Sequence[Alert]) -> str:
    """A fixed-width text table of alerts for the terminal."""
    if not alerts:
        return "no alerts"
    header = ("ID", "CREATED (UTC)", "TYPE", "SEVERITY", "STATUS", "MODEL", "SEEN", "TITLE")
    rows = [
        (
            str(a.id),
            f"{a.created_at:%Y-%m-%d %H:%M}",
            a.type,
            a.severity,
            a.status,
            a.model_version or "-",
            str(a.occurrences),
            a.title if len(a.title) <= 70 else a.title[:67] + "...",
        )
        for a in alerts
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _default_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "cli"


def _ensure_sqlite_dir(url: str) -> None:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    """`list`, `ack` and `dismiss` alerts from the terminal; returns the exit code."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db-url",
        default=argparse.SUPPRESS,
        help="SQLAlchemy URL (default: $FRAUD_PLATFORM_DB_URL or sqlite:///.fraud/platform.db)",
    )
    parser = argparse.ArgumentParser(
        prog="python -m fraud_assets.core.alerts",
        description="List, acknowledge and dismiss monitoring alerts.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", parents=[common], help="show alerts, newest first")
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--type", choices=TYPES, type=str.upper)
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    ack = commands.add_parser("ack", parents=[common], help="acknowledge an open alert")
    ack.add_argument("id", type=int)
    ack.add_argument("--by", default=_default_user())
    dismiss = commands.add_parser("dismiss", parents=[common], help="dismiss an active alert")
    dismiss.add_argument("id", type=int)
    dismiss.add_argument("--reason", required=True)
    dismiss.add_argument("--by", default=_default_user())
    args = parser.parse_args(argv)

    url = getattr(args, "db_url", None) or os.environ.get("FRAUD_PLATFORM_DB_URL", DEFAULT_DB_URL)
    _ensure_sqlite_dir(url)
    store = AlertStore(url)
    try:
        if args.command == "list":
            alerts = store.list(status=args.status, type=args.type)
            if args.json:
                print(json.dumps([a.to_dict() for a in alerts], indent=2))  # noqa: T201
            else:
                print(format_table(alerts))  # noqa: T201
        elif args.command == "ack":
            alert = store.acknowledge(args.id, by=args.by)
            print(f"alert {alert.id} acknowledged by {alert.status_by}")  # noqa: T201
        else:
            alert = store.dismiss(args.id, by=args.by, reason=args.reason)
            print(f"alert {alert.id} dismissed by {alert.status_by}: {alert.status_reason}")  # noqa: T201
    except (KeyError, ValueError) as error:
        message = error.args[0] if error.args else str(error)
        print(f"error: {message}", file=sys.stderr)  # noqa: T201
        return 1
    finally:
        store.engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
