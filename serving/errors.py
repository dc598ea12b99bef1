"""The one error format of the API, and how errors travel from handlers to the gateway.

Every 4xx and 5xx body is
`{"error": {"code": "...", "message": "...", "details": [{"field": "...", "issue": "..."}]}}`.
BentoML turns exceptions raised in an API method into its own response format, so a
handler that fails on purpose calls `fail(...)`: the error is parked in a per-request
slot (a context variable the gateway sets) and the gateway writes it out in this format.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, NoReturn

from bentoml.exceptions import BentoMLException

STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}


@dataclass(frozen=True)
class ApiErrorInfo:
    status: int
    code: str
    message: str
    details: tuple[tuple[str, str], ...] = ()

    def body(self) -> bytes:
        return error_body(self.code, self.message, self.details)


@dataclass
class RequestSlot:
    """Per-request facts shared between the gateway and the API methods."""

    api_key: str | None = None
    error: ApiErrorInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)


REQUEST: ContextVar[RequestSlot | None] = ContextVar("fraud_request", default=None)


class ApiError(BentoMLException):
    """A deliberate error response; carries its status so BentoML keeps it."""

    def __init__(self, info: ApiErrorInfo) -> None:
        super().__init__(info.message, error_code=HTTPStatus(info.status))
        self.info = info


def fail(status: int, code: str, message: str, details: Iterable[tuple[str, str]] = ()) -> NoReturn:
    """End the request with an error in the API's format."""
    info = ApiErrorInfo(status, code, message, tuple(details))
    slot = REQUEST.get()
    if slot is not None:
        slot.error = info
    raise ApiError(info)


def error_body(code: str, message: str, details: Sequence[tuple[str, str]] = ()) -> bytes:
    return json.dumps(
        {
            "error": {
                "code": code,
                "message": message,
                "details": [{"field": f, "issue": i} for f, i in details],
            }
        }
    ).encode()


def field_path(loc: Sequence[Any]) -> str:
    """`("transactions", 3, "amount")` -> `transactions[3].amount`."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def _issue(error: dict[str, Any]) -> str:
    message = str(error.get("msg", "invalid value"))
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field (not part of the schema)"
    if kind == "missing":
        return "required field is missing"
    return message.removeprefix("Value error, ")


def from_validation(errors: Sequence[dict[str, Any]]) -> ApiErrorInfo:
    """Our error for a list of pydantic errors (as BentoML reports them)."""
    if any(e.get("type") == "json_invalid" for e in errors):
        issue = next(str(e.get("msg", "")) for e in errors if e.get("type") == "json_invalid")
        return ApiErrorInfo(
            400, "invalid_json", "the request body is not valid JSON", (("body", issue),)
        )
    details = tuple((field_path(e.get("loc", ())), _issue(e)) for e in errors[:100])
    count = len(errors)
    noun = "field is" if count == 1 else "fields are"
    return ApiErrorInfo(422, "validation_error", f"{count} {noun} invalid", details)


def rewrite(status: int, body: bytes) -> ApiErrorInfo:
    """Turn any error response produced below the gateway into our format."""
    try:
        parsed: Any = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("detail"), list):
        return from_validation(parsed["detail"])
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        inner = parsed["error"]
        details = tuple(
            (str(d.get("field", "")), str(d.get("issue", "")))
            for d in inner.get("details", [])
            if isinstance(d, dict)
        )
        return ApiErrorInfo(
            status, str(inner.get("code", "error")), str(inner.get("message", "")), details
        )
    if status >= 500:
        message = "an unexpected error occurred; it has been logged"
    elif isinstance(parsed, dict) and "error" in parsed:
        message = str(parsed["error"])
    elif isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
        message = str(parsed[0].get("error", ""))
    else:
        message = body.decode("utf-8", "replace").strip()[:300] or HTTPStatus(status).phrase
    return ApiErrorInfo(status, STATUS_CODES.get(status, "error"), message)
