"""Features of one live transaction, computed by the platform's one feature implementation.

`fraud_assets.core.features.online_features` is the reference: this builder produces the
same numbers (tests check bit-for-bit equality) but looks categorical codes up in a table
built once per model with `encode_categories` itself, because that function builds a
pandas Categorical per call (about 1 ms per categorical field for a single row), far
too slow for a per-request budget of a millisecond. Everything else (windows, z-score,
novelty flags, merchant rates) goes through `online_prior_state` and `assemble`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from fraud_assets.core.features import (
    CATEGORICAL_FIELDS,
    FeatureSpec,
    MerchantHistory,
    UserHistory,
    assemble,
    encode_categories,
    online_prior_state,
)

CODE_SUFFIX = "_code"


class FeatureBuilder:
    """Builds the feature vector (spec order, float64) of one transaction."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.width = len(spec.features)
        self._codes: list[tuple[int, str, dict[str, float]]] = []
        others: list[str] = []
        other_index: list[int] = []
        for j, name in enumerate(spec.features):
            field = name[: -len(CODE_SUFFIX)] if name.endswith(CODE_SUFFIX) else ""
            if field in CATEGORICAL_FIELDS:
                vocab = list(spec.vocab[field])
                codes = encode_categories(vocab, vocab)
                self._codes.append((j, field, dict(zip(vocab, codes.tolist(), strict=True))))
            else:
                others.append(name)
                other_index.append(j)
        self._rest = dataclasses.replace(spec, features=tuple(others))
        self._rest_index = np.asarray(other_index, dtype=np.int64)

    def build(
        self, txn: Mapping[str, object], user: UserHistory, merchant: MerchantHistory
    ) -> np.ndarray:
        """Features of `txn` (keys ts_ms, amount and the categorical fields) given its history.

        A categorical field that is missing or None counts as the empty string, as in
        `online_features`.
        """
        ts = int(txn["ts_ms"])  # type: ignore[call-overload]
        amount = float(txn["amount"])  # type: ignore[arg-type]
        out = np.empty(self.width, dtype=np.float64)
        if len(self._rest_index):
            state = online_prior_state(ts, amount, user, merchant)
            rest = assemble({"amount": [amount]}, np.array([ts], dtype=np.int64), state, self._rest)
            out[self._rest_index] = rest[0]
        for j, field, table in self._codes:
            value = txn.get(field)
            out[j] = table.get("" if value is None else str(value), -1.0)
        return out
