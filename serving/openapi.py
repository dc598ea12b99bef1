"""The service's OpenAPI document as merchants (and contract tests) should read it.

BentoML generates the paths and the request/response bodies from the pydantic models,
but documents errors with its own `{"error": "..."}` body and only 400/404/500. Every
error of this API has the body of `serving.schemas.ErrorResponse` and can be 400, 401,
404, 405, 408, 413, 415, 422, 429, 500 or 503; the key goes in the `X-API-Key` header; and
/readyz, /healthz, /livez and /metrics have bodies of their own. Optional request fields
accept `null`, which BentoML's generated request schemas leave out. `document` rewrites
the generated document accordingly; the gateway serves the result at /docs.json.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

from serving.schemas import ErrorResponse

REF = "#/components/schemas/{model}"
SECURITY_SCHEME = "ApiKeyHeader"

API_ERRORS: dict[int, str] = {
    400: "The body is not valid JSON.",
    401: "The X-API-Key header is missing, or the key is unknown or revoked.",
    405: "The route accepts POST only.",
    408: "The request body did not arrive within 10 s.",
    413: "The body is larger than 16 MiB.",
    415: "The body is not sent as application/json.",
    422: "A field is missing or invalid; `details` names each field and what is wrong.",
    429: "The key's per-minute request budget is spent; see the Retry-After header.",
    500: "An unexpected error; it has been logged.",
    503: "No verified model is loaded yet, or the state store is unavailable.",
}
NOT_FOUND = "No prediction with this prediction_id was returned by this service."

READINESS: dict[str, Any] = {
    "type": "object",
    "title": "Readiness",
    "required": ["ready", "reason"],
    "properties": {
        "ready": {"type": "boolean", "description": "True when a verified model is loaded."},
        "reason": {"type": "string", "description": "Why the service is (not) ready."},
    },
    "description": "Readiness with the reason, the model served and the registry's state.",
}


def _error_response(description: str, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}},
    }
    if retry_after:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before the next request.",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return response


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def _declare_nullable(schema: dict[str, Any]) -> None:
    """BentoML drops `null` from optional fields of a request body; the API accepts it."""
    for prop in schema.get("properties", {}).values():
        if isinstance(prop, dict) and "default" in prop and prop["default"] is None:
            if "type" in prop:
                prop["nullable"] = True


def document(spec: dict[str, Any]) -> dict[str, Any]:
    """The generated document with this API's errors, key header and health bodies."""
    out = copy.deepcopy(spec)
    components = out.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    error_schema = ErrorResponse.model_json_schema(ref_template=REF)
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorResponse"] = error_schema
    for name in ("InvalidArgument", "NotFound", "InternalServerError"):
        schemas.pop(name, None)
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The merchant's API key (`python -m serving.keys create NAME`).",
    }
    for path, item in out.get("paths", {}).items():
        post = item.get("post")
        if post is not None and "requestBody" in post:
            for media in post["requestBody"].get("content", {}).values():
                _declare_nullable(media.get("schema", {}))
            responses = {str(k): v for k, v in post["responses"].items() if str(k) == "200"}
            for status, description in API_ERRORS.items():
                responses[str(status)] = _error_response(description, retry_after=status == 429)
            if path == "/feedback":
                responses["404"] = _error_response(NOT_FOUND)
            post["responses"] = responses
            post["security"] = [{SECURITY_SCHEME: []}]
    paths = out.setdefault("paths", {})
    if "/readyz" in paths:
        ready = {"application/json": {"schema": READINESS}}
        paths["/readyz"]["get"]["responses"] = {
            "200": {"description": "Ready to score.", "content": ready},
            "503": {"description": "Not ready; `reason` says why.", "content": ready},
        }
    for path in ("/healthz", "/livez"):
        if path in paths:
            paths[path]["get"]["responses"] = {"200": _text("The process is alive.")}
    if "/metrics" in paths:
        paths["/metrics"]["get"]["responses"] = {"200": _text("Prometheus text format.")}
    return out


@cache
def service_document() -> bytes:
    """/docs.json of the FraudScorer service (built once per process)."""
    from serving.service import FraudScorer

    return json.dumps(document(FraudScorer.openapi_spec.asdict())).encode()
