"""Request and response bodies of the fraud scoring API.

These models are the merchant's documentation: every field's description and example
appear on the service's OpenAPI page. Requests are validated strictly (unknown fields,
non-finite or negative amounts, unknown currencies and timestamps in the future are
rejected with a 4xx naming the field), so a malformed request never reaches the model.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, Self
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from fraud_assets.core.schema import CURRENCIES
from serving.config import FUTURE_TOLERANCE_SECONDS, MAX_BATCH

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
MAX_AMOUNT = 1e7
Decision = Literal["approve", "review", "decline"]


def _printable(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


# The pattern documents the control-character rule in the OpenAPI schema; `_printable`
# enforces it with a clearer message than a failed pattern would give.
PRINTABLE = {"pattern": r"^[^\u0000-\u001f\u007f-\u009f]*$"}
Id = Annotated[
    str,
    Field(min_length=1, max_length=128, json_schema_extra=PRINTABLE),
    AfterValidator(_printable),
]
Label = Annotated[
    str,
    Field(min_length=1, max_length=64, json_schema_extra=PRINTABLE),
    AfterValidator(_printable),
]

ProtectedLabel = Annotated[
    str, Field(max_length=32, json_schema_extra=PRINTABLE), AfterValidator(_printable)
]


def as_utc(value: datetime) -> datetime:
    """A timestamp in UTC; one without an offset is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _not_in_future(value: datetime) -> datetime:
    value = as_utc(value)
    # Compared as epoch seconds: a batch checks 10,000 of them, and building a datetime
    # for "now" each time costs more than the comparison.
    if value.timestamp() > time.time() + FUTURE_TOLERANCE_SECONDS:
        raise ValueError(
            f"is more than {FUTURE_TOLERANCE_SECONDS // 60} minutes in the future "
            f"(server time {datetime.now(UTC).isoformat(timespec='seconds')})"
        )
    return value


def _openapi_examples(schema: dict[str, Any], model: type) -> None:
    """Mirror each field's `examples` as OpenAPI 3.0's `example`, which the docs page shows."""
    for prop in schema.get("properties", {}).values():
        if isinstance(prop, dict) and prop.get("examples"):
            prop.setdefault("example", prop["examples"][0])
    sample = getattr(model, "openapi_example", None)
    if sample is not None:
        schema["example"] = sample


class ApiModel(BaseModel):
    """Base of every request and response body."""

    model_config = ConfigDict(json_schema_extra=_openapi_examples)

    @classmethod
    def trusted(cls, **values: Any) -> Self:
        """An instance from values the service computed itself, every field given.

        Responses are built from the engine's own numbers, which need no validation;
        pydantic's `model_construct` still costs ~4.5 µs an object (a batch of 1,000
        payments builds 4,000), this ~0.5 µs. The instance is the same as a validated one
        (tests/serving/test_schemas.py checks it field by field and in JSON).
        """
        obj = cls.__new__(cls)
        object.__setattr__(obj, "__dict__", values)
        object.__setattr__(obj, "__pydantic_fields_set__", set(values))
        object.__setattr__(obj, "__pydantic_extra__", None)
        object.__setattr__(obj, "__pydantic_private__", None)
        return obj


EXAMPLE_TRANSACTION: dict[str, Any] = {
    "transaction_id": "t-2026-07-30-000123",
    "timestamp": "2026-07-30T14:05:09Z",
    "user_id": "u0004711",
    "merchant_id": "m00042",
    "merchant_category": "electronics",
    "amount": 249.99,
    "currency": "EUR",
    "device_id": "d58121937",
    "device_type": "mobile",
    "channel": "app",
    "country": "DE",
}


class Transaction(ApiModel):
    """One card-not-present payment to score, in the platform's canonical schema.

    Send it as soon as the customer submits the payment. The optional fields improve the
    score; leave out what you do not have rather than sending placeholders.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=_openapi_examples)
    openapi_example: ClassVar[dict[str, Any]] = EXAMPLE_TRANSACTION

    transaction_id: Id = Field(
        description=(
            "Your unique id of the payment (1-128 printable characters). Sending the same id "
            "again returns the original result instead of scoring twice."
        ),
        examples=["t-2026-07-30-000123"],
    )
    timestamp: Annotated[datetime, AfterValidator(_not_in_future)] = Field(
        description=(
            "When the payment happened, ISO 8601 in UTC (e.g. 2026-07-30T14:05:09Z). A time "
            "without an offset is read as UTC; more than 5 minutes in the future is rejected."
        ),
        examples=["2026-07-30T14:05:09Z"],
    )
    user_id: Id = Field(
        description="The paying customer (card holder or account), stable across payments.",
        examples=["u0004711"],
    )
    merchant_id: Id = Field(
        description="The merchant receiving the payment (your merchant id).",
        examples=["m00042"],
    )
    merchant_category: Label | None = Field(
        default=None,
        description="Merchant category, e.g. electronics, fashion, travel, digital_goods.",
        examples=["electronics"],
    )
    amount: float = Field(
        strict=True,
        ge=0.0,
        le=MAX_AMOUNT,
        allow_inf_nan=False,
        description=(
            "Amount in the payment currency: a finite JSON number between 0 and 10,000,000."
        ),
        examples=[249.99],
    )
    currency: str | None = Field(
        default=None,
        description="ISO 4217 currency code of the amount, one of the supported codes.",
        examples=["EUR"],
        json_schema_extra={"enum": [*sorted(CURRENCIES), None]},
    )
    device_id: Id | None = Field(
        default=None,
        description="Device fingerprint used for the payment (your device-intelligence id).",
        examples=["d58121937"],
    )
    device_type: Label | None = Field(
        default=None, description="mobile, desktop, tablet, ...", examples=["mobile"]
    )
    channel: Label | None = Field(
        default=None, description="web, app, phone, ...", examples=["app"]
    )
    country: str | None = Field(
        default=None,
        description="ISO 3166-1 alpha-2 country of the payment, upper case (e.g. DE).",
        examples=["DE"],
        json_schema_extra={"pattern": _COUNTRY.pattern},
    )
    gender: ProtectedLabel | None = Field(
        default=None,
        description=(
            "Optional protected attribute. Accepted for fairness monitoring only: it is never "
            "used for scoring and never stored as sent."
        ),
        examples=["F"],
    )
    age: float | None = Field(
        default=None,
        strict=True,
        ge=0,
        le=150,
        allow_inf_nan=False,
        description=(
            "Optional protected attribute (years). Never used for scoring; only a 10-year "
            "band is kept for fairness monitoring."
        ),
        examples=[34],
    )

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str | None) -> str | None:
        if value is not None and value not in CURRENCIES:
            raise ValueError(
                f"unknown currency {value[:16]!r}; supported: {', '.join(sorted(CURRENCIES))}"
            )
        return value

    @field_validator("country")
    @classmethod
    def _country_code(cls, value: str | None) -> str | None:
        if value is not None and not _COUNTRY.match(value):
            raise ValueError("must be an ISO 3166-1 alpha-2 code in upper case, e.g. DE")
        return value


class BatchRequest(ApiModel):
    """Up to 10,000 payments scored in one call, e.g. for a back-office re-check."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_openapi_examples)

    transactions: list[Transaction] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description=(
            "The payments, 1 to 10,000. They are scored in time order, so a later payment of "
            "the same customer sees the earlier ones; results come back in request order."
        ),
        examples=[[EXAMPLE_TRANSACTION]],
    )


class ReasonCode(ApiModel):
    """A feature that pushed the fraud score up, and by how much."""

    feature: str = Field(
        description="Feature name, e.g. user_txn_count_1h.", examples=["is_new_device"]
    )
    value: float = Field(description="The feature's value for this payment.", examples=[1.0])
    contribution: float = Field(
        description="How much the feature raised the score, in log-odds.", examples=[1.37]
    )


class FraudScore(ApiModel):
    """The fraud decision for one payment."""

    prediction_id: UUID = Field(
        description="Id of this prediction; quote it when reporting the outcome to /feedback.",
        examples=["8b9f6a52-3f0c-4d7e-9a39-2f1d1c9a0e71"],
    )
    transaction_id: str = Field(
        description="The transaction_id you sent.", examples=["t-2026-07-30-000123"]
    )
    fraud_score: float = Field(
        ge=0.0,
        le=1.0,
        description="Estimated probability that the payment is fraud.",
        examples=[0.031],
    )
    decision: Decision = Field(
        description=(
            "decline: score >= the model's threshold; review: score >= threshold x review "
            "band (default half the threshold); approve otherwise."
        ),
        examples=["approve"],
    )
    is_fraud: bool = Field(
        description="True exactly when the decision is decline.", examples=[False]
    )
    reason_codes: list[ReasonCode] = Field(
        description=(
            "Up to three features that pushed the score up most, largest first, from a fast "
            "path attribution of the model (log-odds). /predict/explain gives the exact TreeSHAP "
            "contribution of every feature."
        ),
    )
    model_version: str = Field(
        description="Registry version of the model that scored the payment.", examples=["7"]
    )
    latency_ms: float = Field(
        description="Server-side processing time of the scoring, in milliseconds.",
        examples=[0.8],
    )
    degraded: bool = Field(
        description=(
            "True when the payment was scored without the customer's and merchant's history "
            "(the state store was unavailable): the score is less reliable."
        ),
        examples=[False],
    )


class BatchResponse(ApiModel):
    """One result per payment, in the order of the request."""

    results: list[FraudScore] = Field(description="The decisions, in request order.")


class FeatureContribution(ApiModel):
    """One feature's value and its exact contribution to the log-odds of fraud."""

    feature: str = Field(description="Feature name.", examples=["user_amount_zscore"])
    value: float = Field(description="The feature's value for this payment.", examples=[3.2])
    contribution: float = Field(
        description="TreeSHAP contribution to the log-odds (positive raises the score).",
        examples=[0.84],
    )


class Explanation(ApiModel):
    """Why the model scored a payment as it did: every feature's exact contribution.

    `base_value` plus the sum of all contributions equals `logit`, the log-odds of
    `fraud_score`. Explaining never changes the customer's history.
    """

    transaction_id: str = Field(description="The transaction_id you sent.")
    model_version: str = Field(description="Registry version of the explained model.")
    fraud_score: float = Field(description="The model's fraud probability for the payment.")
    decision: Decision = Field(description="The decision this score leads to.")
    logit: float = Field(description="log(score / (1 - score)).")
    base_value: float = Field(description="The model's expected log-odds before any feature.")
    contributions: list[FeatureContribution] = Field(
        description="Every feature, largest absolute contribution first."
    )
    from_history: bool = Field(
        description=(
            "True when this transaction_id was already scored and its features as of that "
            "moment were explained; false when the payment was explained as if new."
        )
    )


class Feedback(ApiModel):
    """The confirmed outcome of a scored payment (chargeback, confirmed fraud or genuine)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_openapi_examples)

    prediction_id: UUID = Field(
        description="The prediction_id returned when the payment was scored.",
        examples=["8b9f6a52-3f0c-4d7e-9a39-2f1d1c9a0e71"],
    )
    is_fraud: bool = Field(
        strict=True, description="true if the payment turned out to be fraud.", examples=[True]
    )
    label_timestamp: Annotated[datetime, AfterValidator(_not_in_future)] | None = Field(
        default=None,
        description="When the outcome became known (ISO 8601, UTC); defaults to now.",
        examples=["2026-08-04T09:00:00Z"],
    )


class FeedbackAck(ApiModel):
    """Confirmation that the outcome was recorded."""

    prediction_id: UUID = Field(description="The prediction the outcome belongs to.")
    transaction_id: str = Field(description="The payment the outcome belongs to.")
    is_fraud: bool = Field(description="The recorded outcome.")
    label_timestamp: datetime = Field(description="When the outcome counts as known (UTC).")
    status: Literal["recorded"] = Field(default="recorded", description="Always recorded.")


class ErrorDetail(ApiModel):
    """What is wrong with one field of the request."""

    field: str = Field(description="Path of the field, e.g. transactions[3].amount.")
    issue: str = Field(description="What is wrong with it.")


class ErrorBody(ApiModel):
    code: str = Field(
        description="Stable machine-readable code, e.g. validation_error, invalid_api_key.",
        examples=["validation_error"],
    )
    message: str = Field(description="Human-readable summary.")
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorResponse(ApiModel):
    """The body of every error response (4xx and 5xx)."""

    error: ErrorBody
