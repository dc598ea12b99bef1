"""The canonical transaction schema every dataset is mapped onto."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Field:
    """One canonical column: its dtype kind, whether a source must supply it, and its meaning."""

    name: str
    kind: str  # "string", "datetime", "float", "int", "bool"
    required: bool
    description: str


FIELDS: tuple[Field, ...] = (
    Field("transaction_id", "string", True, "Unique id of the transaction."),
    Field("timestamp", "datetime", True, "When the transaction happened (UTC)."),
    Field("user_id", "string", True, "The paying customer (card holder or account)."),
    Field("merchant_id", "string", True, "The merchant receiving the payment."),
    Field("merchant_category", "string", False, "Merchant category, e.g. electronics."),
    Field("amount", "float", True, "Amount in the transaction currency; finite and >= 0."),
    Field("currency", "string", False, "ISO 4217 currency code, e.g. EUR."),
    Field("device_id", "string", False, "Device fingerprint used for the payment."),
    Field("device_type", "string", False, "mobile, desktop, tablet, ..."),
    Field("channel", "string", False, "web, app, phone, ..."),
    Field("country", "string", False, "ISO 3166-1 alpha-2 country of the transaction."),
    Field("gender", "string", False, "Protected attribute, used only for bias reports."),
    Field("age", "float", False, "Protected attribute (years), used only for bias reports."),
    Field(
        "date_of_birth", "datetime", False, "Protected attribute; turned into age if age is absent."
    ),
    Field("is_fraud", "int", False, "Label: 1 fraud, 0 genuine. Absent or empty while unknown."),
    Field("label_timestamp", "datetime", False, "When the label became known (UTC)."),
)

FIELD_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
REQUIRED: tuple[str, ...] = tuple(f.name for f in FIELDS if f.required)
PROTECTED: tuple[str, ...] = ("gender", "age", "date_of_birth")

CURRENCIES: frozenset[str] = frozenset(
    {"EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "JPY", "CAD", "AUD"}
)


def canonical_order(columns: list[str] | pd.Index) -> list[str]:
    """The given canonical columns in schema order (unknown names are dropped)."""
    present = set(columns)
    return [f.name for f in FIELDS if f.name in present]


def is_canonical(frame: pd.DataFrame) -> bool:
    """Whether rows are already in canonical order (a cheap linear check)."""
    if len(frame) < 2:
        return True
    ts = frame["timestamp"].to_numpy(dtype="datetime64[ns]")
    ids = frame["transaction_id"].to_numpy()
    step = ts[1:] > ts[:-1]
    tie = ts[1:] == ts[:-1]
    if not (step | tie).all():
        return False
    return bool((ids[1:][tie] > ids[:-1][tie]).all())


def sort_canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in the one order every feature computation assumes: time, then transaction id."""
    if is_canonical(frame):
        return frame.reset_index(drop=True)
    return frame.sort_values(["timestamp", "transaction_id"], kind="mergesort").reset_index(
        drop=True
    )
