"""Features of one live transaction, computed by the platform's one feature implementation.

A thin holder of the model's feature spec around `fraud_assets.core.features.online_features`,
the same code (windows, z-score, novelty flags, merchant rates, categorical codes) that the
`feature_set` asset runs offline.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fraud_assets.core.features import FeatureSpec, MerchantHistory, UserHistory, online_features


class FeatureBuilder:
    """Builds the feature vector (spec order, float64) of one transaction."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec

    def build(
        self, txn: Mapping[str, object], user: UserHistory, merchant: MerchantHistory
    ) -> np.ndarray:
        """Features of `txn` (keys ts_ms, amount and the categorical fields) given its history.

        A categorical field that is missing or None counts as the empty string.
        """
        return online_features(txn, user, merchant, self.spec)
