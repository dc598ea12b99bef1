"""Fast path attribution (Saabas) of an xgboost model, for per-request reason codes.

Exact TreeSHAP costs about a millisecond per row for a few hundred trees, and xgboost's
own approximate contributions spend most of their time building a DMatrix. This walks
all trees at once with numpy: for every split on a row's path, the change of the node's
cover-weighted mean value is credited to the split feature. The result equals
`booster.predict(..., pred_contribs=True, approx_contribs=True)` (tested), ranks features
like TreeSHAP in practice, and costs about 0.1 ms per request.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def _base_margin(learner: dict[str, Any]) -> float:
    raw = str(learner["learner_model_param"]["base_score"]).strip("[]")
    base = float(raw.split(",")[0])
    objective = learner["objective"]["name"]
    if objective in ("binary:logistic", "reg:logistic"):
        return math.log(base / (1.0 - base))
    return base


class PathAttribution:
    """Saabas contributions of an xgboost booster (binary or regression, one output)."""

    def __init__(self, booster: Any) -> None:
        model = json.loads(bytes(booster.save_raw("json")))
        learner = model["learner"]
        trees = learner["gradient_booster"]["model"]["trees"]
        self.n_features = int(learner["learner_model_param"]["num_feature"])
        self.base_margin = _base_margin(learner)
        sizes = [len(t["left_children"]) for t in trees]
        offsets = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
        self.roots = offsets
        gid = np.arange(sum(sizes), dtype=np.int64)
        left = np.concatenate(
            [
                np.asarray(t["left_children"], np.int64) + o
                for t, o in zip(trees, offsets, strict=True)
            ]
        )
        right = np.concatenate(
            [
                np.asarray(t["right_children"], np.int64) + o
                for t, o in zip(trees, offsets, strict=True)
            ]
        )
        is_leaf = np.concatenate([np.asarray(t["left_children"]) < 0 for t in trees])
        # Leaves point to themselves with zero gain, so every path simply idles once it ends.
        left = np.where(is_leaf, gid, left)
        right = np.where(is_leaf, gid, right)
        self.feature = np.where(
            is_leaf, 0, np.concatenate([np.asarray(t["split_indices"], np.int64) for t in trees])
        )
        self.condition = np.where(
            is_leaf,
            np.float32(np.inf),
            np.concatenate([np.asarray(t["split_conditions"], np.float32) for t in trees]),
        )
        self.default_left = np.concatenate([np.asarray(t["default_left"], bool) for t in trees])
        mean = np.concatenate([self._node_means(t) for t in trees])
        # Interleaved (right, left) so that `2 * node + went_left` picks the child.
        self.child = np.empty(2 * len(gid), dtype=np.int64)
        self.child[0::2], self.child[1::2] = right, left
        self.gain = np.empty(2 * len(gid), dtype=np.float64)
        self.gain[0::2], self.gain[1::2] = mean[right] - mean, mean[left] - mean
        self.bias = self.base_margin + float(mean[offsets].sum())
        self.depth = max(self._depth(t) for t in trees)  # splits on the longest path

    @staticmethod
    def _node_means(tree: dict[str, Any]) -> np.ndarray:
        left = tree["left_children"]
        right = tree["right_children"]
        value = tree["split_conditions"]
        cover = tree["sum_hessian"]
        means = np.zeros(len(left), dtype=np.float64)
        # Children always come after their parent, so one backward pass fills every node.
        for node in range(len(left) - 1, -1, -1):
            if left[node] < 0:
                means[node] = value[node]
            else:
                lc, rc = left[node], right[node]
                means[node] = (means[lc] * cover[lc] + means[rc] * cover[rc]) / cover[node]
        return means

    @staticmethod
    def _depth(tree: dict[str, Any]) -> int:
        left, right = tree["left_children"], tree["right_children"]
        splits = 0
        frontier = [n for n in (0,) if left[n] >= 0]
        while frontier:
            splits += 1
            frontier = [c for n in frontier for c in (left[n], right[n]) if left[c] >= 0]
        return splits

    def contributions(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows x features contributions, per-row bias); they sum to the margin."""
        x = np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32)
        n, width = x.shape
        flat_x = x.ravel()
        base = (np.arange(n, dtype=np.int64) * width)[:, None]
        node = np.broadcast_to(self.roots, (n, len(self.roots)))
        missing = bool(np.isnan(flat_x).any())
        totals = np.zeros(n * width, dtype=np.float64)
        for _ in range(self.depth):
            slot = base + self.feature[node]
            value = flat_x[slot]
            went_left = value < self.condition[node]
            if missing:
                went_left = np.where(np.isnan(value), self.default_left[node], went_left)
            pick = 2 * node + went_left
            totals += np.bincount(
                slot.ravel(), weights=self.gain[pick].ravel(), minlength=n * width
            )
            node = self.child[pick]
        return totals.reshape(n, width), np.full(n, self.bias)
