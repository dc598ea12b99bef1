"""Per-feature attribution of an xgboost model, compiled for per-request latency.

Both explainers read the same flat description of the booster (`TreeEnsemble`): every
node of every tree numbered across the whole forest, with its split feature, float32
threshold, default direction for missing values, cover (`sum_hessian`) and mean value.

* `PathAttribution` (Saabas): for every split on a row's path, the change of the node's
  cover-weighted mean value is credited to the split feature. Equal to
  `booster.predict(..., pred_contribs=True, approx_contribs=True)`, ranks features like
  TreeSHAP in practice, and costs a few microseconds per row.
* `TreeShap`: exact SHAP values with the tree-path-dependent algorithm of Lundberg et al.
  ("Consistent Individualized Feature Attribution for Tree Ensembles", Algorithm 2), the
  one xgboost runs for `pred_contribs=True`, whose numbers it reproduces. Polynomial in
  depth: O(leaves x depth^2) per tree, a few hundred microseconds per row for a few
  hundred depth-6 trees, with no DMatrix to build and no lock to take.

Both walkers are compiled by numba once per process, when a model loads (the champion
warms them up), and release the GIL while they run. There is no on-disk compilation
cache: numba's cache index is a pickle, and the service never unpickles anything.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np


def _base_margin(learner: dict[str, Any]) -> float:
    raw = str(learner["learner_model_param"]["base_score"]).strip("[]")
    base = float(raw.split(",")[0])
    objective = learner["objective"]["name"]
    if objective in ("binary:logistic", "reg:logistic"):
        return math.log(base / (1.0 - base))
    return base


@dataclass(frozen=True)
class TreeEnsemble:
    """The trees of an xgboost booster as flat arrays; node `n` of tree `t` is `roots[t] + n`.

    Attributes, one entry per node unless said otherwise:
        n_features: width of the rows the model scores.
        base_margin: the model's starting margin (log-odds for a logistic objective).
        max_depth: depth of the deepest leaf over all trees (a lone root has depth 0).
        roots: the first node of every tree (one entry per tree).
        left, right: children of a split, -1 at a leaf.
        is_leaf: whether the node is a leaf.
        feature: the split feature (0 at a leaf).
        threshold: the split goes left when `value < threshold` in float32 (+inf at a leaf).
        default_left: where a missing value (NaN) goes.
        cover: the training hessian mass that reached the node (`sum_hessian`).
        mean: the cover-weighted mean of the leaf values below the node (its value at a leaf).
    """

    n_features: int
    base_margin: float
    max_depth: int
    roots: np.ndarray
    left: np.ndarray
    right: np.ndarray
    is_leaf: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    cover: np.ndarray
    mean: np.ndarray

    @property
    def expected_value(self) -> float:
        """The model's average margin over its training cover: xgboost's bias column."""
        return self.base_margin + float(self.mean[self.roots].sum())

    @classmethod
    def from_booster(cls, booster: Any) -> TreeEnsemble:
        """Read a `gbtree` booster with one output (binary or regression) from its JSON."""
        model = json.loads(bytes(booster.save_raw("json")))
        learner = model["learner"]
        params = learner["learner_model_param"]
        gbm = learner["gradient_booster"]
        if gbm.get("name") != "gbtree":
            raise ValueError(f"only gbtree boosters are supported, not {gbm.get('name')!r}")
        if int(params.get("num_class", 0)) > 1 or int(params.get("num_target", 1)) > 1:
            raise ValueError("only models with a single output are supported")
        trees = gbm["model"]["trees"]
        if any(any(t.get("split_type", ())) for t in trees):
            raise ValueError("categorical splits are not supported")

        def flat(key: str, dtype: type) -> np.ndarray:
            return np.concatenate([np.asarray(t[key], dtype=dtype) for t in trees])

        sizes = [len(t["left_children"]) for t in trees]
        roots = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
        shift = np.repeat(roots, sizes)
        left, right = flat("left_children", np.int64), flat("right_children", np.int64)
        is_leaf = left < 0
        left = np.where(is_leaf, -1, left + shift)
        right = np.where(is_leaf, -1, right + shift)
        cover = flat("sum_hessian", np.float64)
        value = flat("split_conditions", np.float64)
        depths = _levels(roots, left, right)
        mean = np.where(is_leaf, value, 0.0)
        # Deepest level first, so both children of a split are known before the split.
        for level in reversed(depths[:-1]):
            split = level[~is_leaf[level]]
            lc, rc = left[split], right[split]
            mean[split] = (mean[lc] * cover[lc] + mean[rc] * cover[rc]) / cover[split]
        return cls(
            n_features=int(params["num_feature"]),
            base_margin=_base_margin(learner),
            max_depth=len(depths) - 1,
            roots=roots,
            left=left,
            right=right,
            is_leaf=is_leaf,
            feature=np.where(is_leaf, 0, flat("split_indices", np.int64)),
            threshold=np.where(is_leaf, np.float32(np.inf), flat("split_conditions", np.float32)),
            default_left=flat("default_left", np.bool_),
            cover=cover,
            mean=mean,
        )


def _levels(roots: np.ndarray, left: np.ndarray, right: np.ndarray) -> list[np.ndarray]:
    """The nodes at depth 0, 1, 2, ... of every tree (whatever order the nodes are stored in)."""
    levels = []
    frontier = roots
    while frontier.size:
        levels.append(frontier)
        children = np.concatenate([left[frontier], right[frontier]])
        frontier = children[children >= 0]
    return levels


def _ensemble(model: TreeEnsemble | Any) -> TreeEnsemble:
    return model if isinstance(model, TreeEnsemble) else TreeEnsemble.from_booster(model)


def _rows(x: np.ndarray, n_features: int) -> np.ndarray:
    """The rows as a C-contiguous float32 matrix, checked to be as wide as the model."""
    x = np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ValueError(f"expected rows of {n_features} features, got shape {x.shape}")
    return x


class PathAttribution:
    """Saabas contributions of an xgboost booster (binary or regression, one output).

    `model` is a booster or an already parsed `TreeEnsemble`.
    """

    def __init__(self, model: TreeEnsemble | Any) -> None:
        trees = _ensemble(model)
        self.trees = trees
        self.n_features = trees.n_features
        self.base_margin = trees.base_margin
        self.roots = trees.roots
        self.is_leaf = trees.is_leaf
        self.feature = trees.feature
        self.condition = trees.threshold
        self.default_left = trees.default_left
        # Leaves point to themselves with zero gain, so every path simply idles once it ends.
        node = np.arange(len(trees.is_leaf), dtype=np.int64)
        left = np.where(trees.is_leaf, node, trees.left)
        right = np.where(trees.is_leaf, node, trees.right)
        mean = trees.mean
        # Interleaved (right, left) so that `2 * node + went_left` picks the child.
        self.child = np.empty(2 * len(node), dtype=np.int64)
        self.child[0::2], self.child[1::2] = right, left
        self.gain = np.empty(2 * len(node), dtype=np.float64)
        self.gain[0::2], self.gain[1::2] = mean[right] - mean, mean[left] - mean
        self.bias = trees.expected_value

    def contributions(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows x features contributions, per-row bias); they sum to the margin."""
        x = _rows(x, self.n_features)
        out = np.zeros(x.shape, dtype=np.float64)
        _walk_paths(
            x, self.roots, self.is_leaf, self.feature, self.condition, self.default_left,
            self.child, self.gain, out,
        )  # fmt: skip
        return out, np.full(len(x), self.bias)


@dataclass(frozen=True)
class UniquePaths:
    """The row-independent half of TreeSHAP (Algorithm 2) for every tree, walked in advance.

    Algorithm 2 walks each tree depth first and keeps, for the node it is at, the "unique
    path": the distinct features split on above it, each with the share of training cover
    that flows along the path (its zero fraction), whether the explained row follows the
    path at that feature (its one fraction, 0 or 1), and the permutation weights. Only the
    one fractions and the weights depend on the row; which feature sits at which position,
    the zero fractions, the depth of every node and where a repeated feature must be
    unwound are properties of the tree. They are computed here once, and the compiled walk
    then visits the nodes in this order (parent, left subtree, right subtree) with nothing
    to decide but the row's direction at each split.

    Arrays with one entry per visited node, in visiting order (tree after tree):
        depth: the node's depth (0 starts a tree), i.e. its row in the walker's scratch.
        unique: the position at which the node's own element joins its unique path.
        zero: that element's zero fraction (the node's share of its parent's cover, times
            the earlier share of the same feature when the parent's feature repeats).
        left_side: whether the node is the left child of its parent.
        feature, threshold, default_left: the node's split (unused at a leaf).
        repeat: position in the node's unique path of its split feature if that feature
            was split on above (to be unwound before extending again), else -1.
        repeat_zero: the zero fraction of that earlier element.
        leaf: the leaf's row in the per-leaf arrays, -1 at a split.
    Arrays with one row per leaf:
        leaf_value: the leaf's value (margin units).
        leaf_feature, leaf_zero: feature and zero fraction of each element of the leaf's
            unique path (element 0 is the empty root element).
    """

    width: int
    depth: np.ndarray
    unique: np.ndarray
    zero: np.ndarray
    left_side: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    repeat: np.ndarray
    repeat_zero: np.ndarray
    leaf: np.ndarray
    leaf_value: np.ndarray
    leaf_feature: np.ndarray
    leaf_zero: np.ndarray

    @classmethod
    def from_trees(cls, trees: TreeEnsemble) -> UniquePaths:
        """Walk every tree once, as Algorithm 2 would, recording what does not depend on x."""
        width = trees.max_depth + 2
        n_nodes = len(trees.is_leaf)
        n_leaves = int(trees.is_leaf.sum())
        order = np.empty(n_nodes, dtype=np.int64)
        depth = np.empty(n_nodes, dtype=np.int64)
        unique = np.empty(n_nodes, dtype=np.int64)
        zero = np.empty(n_nodes, dtype=np.float64)
        left_side = np.zeros(n_nodes, dtype=np.bool_)
        repeat = np.full(n_nodes, -1, dtype=np.int64)
        repeat_zero = np.zeros(n_nodes, dtype=np.float64)
        leaf = np.full(n_nodes, -1, dtype=np.int64)
        leaf_node = np.empty(n_leaves, dtype=np.int64)
        leaf_feature = np.zeros((n_leaves, width), dtype=np.int64)
        leaf_zero = np.zeros((n_leaves, width), dtype=np.float64)
        left, right, cover = trees.left.tolist(), trees.right.tolist(), trees.cover.tolist()
        features, is_leaf = trees.feature.tolist(), trees.is_leaf.tolist()
        e = n_leaf = 0
        for root in trees.roots.tolist():
            # (node, depth, is it a left child, its unique path's features and zero
            # fractions, its own element last); the root's path is the empty element.
            stack: list[tuple[int, int, bool, tuple[int, ...], tuple[float, ...]]]
            stack = [(root, 0, False, (-1,), (1.0,))]
            while stack:
                node, d, is_left, path, zeros = stack.pop()
                order[e] = node
                depth[e] = d
                unique[e] = len(path) - 1
                zero[e] = zeros[-1]
                left_side[e] = is_left
                if is_leaf[node]:
                    leaf[e] = n_leaf
                    leaf_node[n_leaf] = node
                    leaf_feature[n_leaf, 1 : len(path)] = path[1:]
                    leaf_zero[n_leaf, : len(path)] = zeros
                    n_leaf += 1
                    e += 1
                    continue
                split = features[node]
                incoming = 1.0
                if split in path:
                    at = path.index(split)
                    repeat[e] = at
                    repeat_zero[e] = incoming = zeros[at]
                    path, zeros = path[:at] + path[at + 1 :], zeros[:at] + zeros[at + 1 :]
                e += 1
                path = (*path, split)
                for child, child_is_left in ((right[node], False), (left[node], True)):
                    child_zero = cover[child] / cover[node] * incoming
                    stack.append((child, d + 1, child_is_left, path, (*zeros, child_zero)))
        return cls(
            width=width,
            depth=depth,
            unique=unique,
            zero=zero,
            left_side=left_side,
            feature=trees.feature[order],
            threshold=trees.threshold[order],
            default_left=trees.default_left[order],
            repeat=repeat,
            repeat_zero=repeat_zero,
            leaf=leaf,
            leaf_value=trees.mean[leaf_node],
            leaf_feature=leaf_feature,
            leaf_zero=leaf_zero,
        )


class TreeShap:
    """Exact TreeSHAP contributions of an xgboost booster (binary or regression, one output).

    The same numbers as `booster.predict(DMatrix(x), pred_contribs=True)`: column j of the
    contributions is feature j's SHAP value in margin units (log-odds for a classifier),
    and the bias is the model's expected margin, so every row sums to its margin. `model`
    is a booster or an already parsed `TreeEnsemble`. Safe to call from many threads.
    """

    def __init__(self, model: TreeEnsemble | Any) -> None:
        trees = _ensemble(model)
        self.trees = trees
        self.n_features = trees.n_features
        self.bias = trees.expected_value
        self.paths = UniquePaths.from_trees(trees)
        self._walk = _tree_shap_walker(self.paths.width)

    def contributions(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows x features SHAP values, per-row bias); they sum to the margin."""
        x = _rows(x, self.n_features)
        out = np.zeros(x.shape, dtype=np.float64)
        p = self.paths
        self._walk(
            x, p.depth, p.unique, p.zero, p.left_side, p.feature, p.threshold,
            p.default_left, p.repeat, p.repeat_zero, p.leaf, p.leaf_value, p.leaf_feature,
            p.leaf_zero, out,
        )  # fmt: skip
        return out, np.full(len(x), self.bias)


# Compiled once per process when a model loads (champion warms it up). No on-disk cache:
# numba's cache index is a pickle, and the service never unpickles anything.
@numba.njit(nogil=True)
def _walk_paths(
    x: np.ndarray,
    roots: np.ndarray,
    is_leaf: np.ndarray,
    feature: np.ndarray,
    condition: np.ndarray,
    default_left: np.ndarray,
    child: np.ndarray,
    gain: np.ndarray,
    out: np.ndarray,
) -> None:
    """Follow each row down every tree, crediting each split's gain to its feature."""
    for i in range(x.shape[0]):
        for root in roots:
            node = root
            while not is_leaf[node]:
                value = x[i, feature[node]]
                went_left = default_left[node] if np.isnan(value) else value < condition[node]
                pick = 2 * node + (1 if went_left else 0)
                out[i, feature[node]] += gain[pick]
                node = child[pick]


@numba.njit(nogil=True)
def _coefficients(width: int) -> tuple[np.ndarray, ...]:
    """The integer ratios of EXTEND, UNWIND and UNWOUNDSUM, tabulated as [u, k].

    u is the position of a path's last element, k an element's position (or a number of
    ones). Weight lanes are shifted by one (`weight[k + 1]` is the weight of k ones):
        keep[u, k + 1] = (u - k) / (u + 1) for k < u, and 0 beyond (EXTEND, zero part)
        shift[u, k + 1] = k / (u + 1) for 1 <= k <= u, and 0 elsewhere (EXTEND, one part)
        down[u, k] = (u - k) / (u + 1)
        up_inv[u, k] = (u + 1) / (k + 1)
        down_inv[u, k] = (u + 1) / (u - k) for k < u
        ratio[u, k] = (u - k) / (k + 1)
    """
    keep = np.zeros((width, width + 1))
    shift = np.zeros((width, width + 1))
    down = np.zeros((width, width))
    up_inv = np.zeros((width, width))
    down_inv = np.zeros((width, width))
    ratio = np.zeros((width, width))
    for u in range(width):
        for k in range(width):
            if k < u:
                keep[u, k + 1] = (u - k) / (u + 1)
                down_inv[u, k] = (u + 1) / (u - k)
            if 1 <= k <= u:
                shift[u, k + 1] = k / (u + 1)
            down[u, k] = (u - k) / (u + 1)
            up_inv[u, k] = (u + 1) / (k + 1)
            ratio[u, k] = (u - k) / (k + 1)
    return keep, shift, down, up_inv, down_inv, ratio


@functools.cache
def _tree_shap_walker(width: int) -> Any:
    """The compiled TreeSHAP walk for unique paths of at most `width` elements.

    The width (deepest leaf + 2) is a compile-time constant, so the fixed-width loops over
    a path unroll; one walker per model depth, compiled on its first call (the champion's
    warm-up) and shared by every model of that depth.
    """

    @numba.njit(nogil=True, fastmath={"contract"})
    def walk(
        x: np.ndarray,
        depth: np.ndarray,
        unique: np.ndarray,
        zero: np.ndarray,
        left_side: np.ndarray,
        feature: np.ndarray,
        threshold: np.ndarray,
        default_left: np.ndarray,
        repeat: np.ndarray,
        repeat_zero: np.ndarray,
        leaf: np.ndarray,
        leaf_value: np.ndarray,
        leaf_feature: np.ndarray,
        leaf_zero: np.ndarray,
        out: np.ndarray,
    ) -> None:
        """Add every row's TreeSHAP values over all trees to `out` (rows x features).

        Algorithm 2 with the row-independent bookkeeping done in advance (`UniquePaths`).
        Row d of `one` and `weight` holds the unique path of the current node at depth d:
        element k's one fraction at `one[d, k]` and the permutation weight of k ones at
        `weight[d, k + 1]` (lane 0 stays 0, so EXTEND is one pass over fixed lanes). A
        node copies its parent's row d - 1 and extends it; a split unwinds a repeated
        feature in place and records which child the row follows; a leaf credits each
        element with its unwound weight. One fractions are exactly 0 or 1 (the row
        either follows a branch or not), which the unwinding formulas rely on. Only the
        per-call scratch below is written, so calls may run at the same time.
        """
        keep, shift, down, up_inv, down_inv, ratio = _coefficients(width)
        one = np.zeros((width, width))
        weight = np.zeros((width, width + 1))
        followed = np.zeros((width, 2))
        for i in range(x.shape[0]):
            phi = out[i]
            row = x[i]
            for e in range(len(depth)):
                d, u, z = depth[e], unique[e], zero[e]
                if d == 0:
                    one[0, 0] = 1.0
                    for k in range(width + 1):
                        weight[0, k] = 0.0
                    weight[0, 1] = 1.0
                else:
                    o = followed[d - 1, 1 if left_side[e] else 0]
                    for k in range(width):
                        one[d, k] = one[d - 1, k]
                    for k in range(width):
                        weight[d, k + 1] = (
                            z * weight[d - 1, k + 1] * keep[u, k + 1]
                            + o * weight[d - 1, k] * shift[u, k + 1]
                        )
                    one[d, u] = o
                s = leaf[e]
                if s >= 0:
                    value = leaf_value[s]
                    top = weight[d, u + 1]
                    # For an element the row does not follow (one fraction 0), UNWOUNDSUM
                    # is `cold` / z and its credit that times (0 - z): -cold for every
                    # such element (0 if its zero fraction z is 0).
                    cold = 0.0
                    for k in range(u):
                        cold += weight[d, k + 1] * down_inv[u, k]
                    for m in range(1, u + 1):
                        zm, om = leaf_zero[s, m], one[d, m]
                        carry, hot = top, 0.0
                        for k in range(u - 1, -1, -1):
                            hot += carry * up_inv[u, k]
                            carry = weight[d, k + 1] - carry * (zm * ratio[u, k])
                        cold_m = cold if zm != 0.0 else 0.0
                        phi[leaf_feature[s, m]] += (
                            om * hot * (1.0 - zm) - (1.0 - om) * cold_m
                        ) * value
                    continue
                v = row[feature[e]]
                went_left = (v < threshold[e]) | (np.isnan(v) & default_left[e])
                incoming = 1.0
                at = repeat[e]
                if at >= 0:
                    incoming = one[d, at]
                    zero_at = repeat_zero[e]
                    if incoming != 0.0:
                        carry = weight[d, u + 1]
                        for k in range(u - 1, -1, -1):
                            previous = weight[d, k + 1]
                            weight[d, k + 1] = carry * up_inv[u, k]
                            carry = previous - weight[d, k + 1] * zero_at * down[u, k]
                    else:
                        for k in range(u - 1, -1, -1):
                            weight[d, k + 1] = weight[d, k + 1] * down_inv[u, k] / zero_at
                    for k in range(at, u):
                        one[d, k] = one[d, k + 1]
                followed[d, 1] = incoming * went_left
                followed[d, 0] = incoming - followed[d, 1]

    return walk
