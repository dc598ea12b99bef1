"""Per-feature attribution of an xgboost model, compiled for per-request latency.

Both explainers read the same flat description of the booster (`TreeEnsemble`): every
node of every tree numbered across the whole forest, with its split feature, float32
threshold, default direction for missing values, cover (`sum_hessian`) and mean value.

* `PathAttribution` (Saabas): for every split on a row's path, the change of the node's
  cover-weighted mean value is credited to the split feature. Equal to
  `booster.predict(..., pred_contribs=True, approx_contribs=True)`, ranks features like
  TreeSHAP in practice, and costs a few microseconds per row.
* `TreeShap`: exact SHAP values of the tree-path-dependent value function of Lundberg et
  al. ("Consistent Individualized Feature Attribution for Tree Ensembles"), the numbers
  xgboost computes for `pred_contribs=True`. Most of the work is done once, when the
  model loads (`LeafTables`, the idea of FastTreeSHAP v2, Yang 2021): for 200 depth-6
  trees over 27 features, about 5 MiB of tables built in some 15 ms, and then about 60 µs
  per row, against about 300 µs for Algorithm 2 of the paper.

Why a table per leaf is enough. The path-dependent value of a feature set S is the
model's expected margin when only the features in S are known: a split on a feature in S
sends the row the way the row goes, any other split shares it between both children in
proportion to their training cover. If F is the set of distinct features a leaf's path
splits on (d of them), z_j the share of cover that follows the path at feature j (the
product of the cover ratios of its splits on j) and o_j = 1 if the row meets every
condition of the path on j (0 otherwise), a leaf with value v adds
v * prod_{j in S ∩ F} o_j * prod_{j in F - S} z_j to the value of S. Features outside F
change nothing for this leaf, so its Shapley value for a feature i of F is

    phi_i = v * (o_i - z_i) * sum_{S ⊆ B - {i}} w(|S|, d) * prod_{j in F - S - {i}} z_j,
    w(s, d) = s! (d - s - 1)! / d!,   B = {j in F : o_j = 1},

which depends on the row only through B. With E(C) = sum_{S ⊆ C} w(|S|, d) prod_{C - S} z
and Q(B) = v * prod_{F - B} z it is (1 - z_i) Q(B) E(B - {i}) for i in B and -Q(B) E(B)
for every i outside B, so all 2^d x d values of a leaf take O(2^d d) to tabulate. Leaves
close together are tabulated together (up to four: a split's leaf children and the leaf
pairs below it), by the row's mask at that split and the directions it takes there; a
row then reads one table row per unit, found by evaluating every split once. Tables
grow as 2^depth: the trees whose tables do not fit `max_table_bytes` together (64 MiB by
default, smallest tables first) are explained by the exact Algorithm 2 of the paper
instead (`UniquePaths`), O(leaves x depth^2) per tree.

Every walker is compiled by numba once per process, when a model loads (the champion
warms them up), and releases the GIL while it runs; concurrent calls write only their own
scratch. There is no on-disk compilation cache: numba's cache index is a pickle, and the
service never unpickles anything.
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

    def subset(self, trees: np.ndarray) -> TreeEnsemble:
        """The ensemble of the trees numbered `trees` only (same features and base margin)."""
        ends = np.append(self.roots[1:], len(self.is_leaf))
        nodes = np.concatenate(
            [np.arange(self.roots[t], ends[t]) for t in trees] or [np.zeros(0, np.int64)]
        )
        renumber = np.full(len(self.is_leaf), -1, dtype=np.int64)
        renumber[nodes] = np.arange(len(nodes))
        left, right = self.left[nodes], self.right[nodes]
        left = np.where(left < 0, -1, renumber[left])
        right = np.where(right < 0, -1, renumber[right])
        roots = renumber[self.roots[trees]]
        return TreeEnsemble(
            n_features=self.n_features,
            base_margin=self.base_margin,
            max_depth=len(_levels(roots, left, right)) - 1,
            roots=roots,
            left=left,
            right=right,
            is_leaf=self.is_leaf[nodes],
            feature=self.feature[nodes],
            threshold=self.threshold[nodes],
            default_left=self.default_left[nodes],
            cover=self.cover[nodes],
            mean=self.mean[nodes],
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


DEFAULT_MAX_TABLE_BYTES = 64 * 2**20
"""The default bound on the memory of `TreeShap`'s leaf tables (64 MiB)."""


@dataclass(frozen=True)
class LeafTables:
    """The SHAP values of every leaf for every set of its path's conditions a row can meet.

    The splits of the tabulated trees are visited tree after tree, each tree depth first
    (a split, its left subtree, its right subtree). Along the way a row carries a mask:
    bit k is set when the row meets every condition so far on the k-th distinct feature
    of the path (positions in order of first appearance). The leaves are tabulated in
    units: a split with a leaf or a leaf pair (a split with two leaf children) below it
    holds the summed SHAP values of those leaves (up to four) in a table with a row for
    every mask at the split and every direction the row can take at the split and at the
    leaf pairs' splits. A row is explained in two passes: every split once, which finds
    each unit's table row, then every unit, which adds that row to the row's SHAP values.
    Units are numbered by width, so that the second pass runs loops of a fixed length.

    Arrays with one entry per split, in visiting order:
        depth: the split's depth (0 at a root).
        side: 1 if the split is the left child of its parent, else 0 (0 at a root).
        feature, threshold, default_left: the split (left when `value < threshold`, or
            when the value is NaN and `default_left`).
        bit: 1 << the position of the split feature on the path below the split.
        new_bit: `bit` if the feature is new on the path, 0 if it was split on above.
        slot: where the split writes its share of its unit's table row: 3 * unit +
            decision (a unit's row is the sum of its three slots, unused ones stay 0),
            or a spare slot past them if the split has no unit.
        mask_mult, step: the split's share of its unit's table row, in table entries, is
            `(mask * mask_mult + went_left) * step`: mask_mult is 2^decisions at the
            unit's split and 0 at a leaf pair's split (whose mask its unit does not use),
            step is the unit's width times 2^decision. Both 0 without a unit.
    Arrays with one entry per unit:
        start: where the unit's table starts in `table`.
    Other attributes:
        features: the distinct features of every unit's leaves, in path order, unit
            after unit (as many as the unit's width).
        ends: ends[w] is the number of units at most w features wide.
        table: every unit's table, unit after unit (float64).
        levels: the depth of the deepest split plus 2 (rows of the mask scratch).
        tabulated: one entry per tree of the ensemble, whether it is explained here (a
            tree that is a lone leaf always is: it credits no feature).
    """

    depth: np.ndarray
    side: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    bit: np.ndarray
    new_bit: np.ndarray
    slot: np.ndarray
    mask_mult: np.ndarray
    step: np.ndarray
    start: np.ndarray
    features: np.ndarray
    ends: np.ndarray
    table: np.ndarray
    levels: int
    tabulated: np.ndarray

    @classmethod
    def from_trees(cls, trees: TreeEnsemble, max_bytes: int) -> LeafTables:
        """Tabulate the trees whose tables fit in `max_bytes` together, smallest first."""
        # Compiled code fills arrays allocated here and returns nothing: numba boxes an
        # array it allocated itself by unpickling its class, and the service never unpickles.
        n_split = int((~trees.is_leaf).sum())
        n_leaf = len(trees.is_leaf) - n_split
        span = trees.max_depth + 1
        splits = np.full((n_split, 8), -1, dtype=np.int64)
        units = np.zeros((n_split, 7), dtype=np.int64)
        features = np.zeros(n_split * span, dtype=np.int64)
        conditions = np.zeros((n_leaf, 7), dtype=np.int64)
        values = np.zeros(n_leaf)
        zero = np.full((n_leaf, span), -1.0)
        tree_entries = np.zeros(len(trees.roots))
        counts = np.zeros(3, dtype=np.int64)
        _layout(
            trees.roots, trees.left, trees.right, trees.is_leaf, trees.feature, trees.cover,
            trees.mean, splits, units, features, conditions, values, zero, tree_entries, counts,
        )  # fmt: skip
        n_units, n_features, n_leaves = counts.tolist()
        units, features = units[:n_units], features[:n_features]
        conditions, values, zero = conditions[:n_leaves], values[:n_leaves], zero[:n_leaves]
        order = np.argsort(tree_entries, kind="stable")
        fits = np.cumsum(tree_entries[order]) * 8.0 <= max_bytes
        tabulated = np.zeros(len(trees.roots), dtype=np.bool_)
        tabulated[order[fits]] = True

        u_tree, u_bits, u_decisions, u_width, u_at = units.T[:5]
        kept = np.flatnonzero(tabulated[u_tree])
        kept = kept[np.argsort(u_width[kept], kind="stable")]
        width, decisions = u_width[kept], u_decisions[kept]
        entries = np.left_shift(1, u_bits[kept] + decisions) * width
        offset = np.concatenate([[0], np.cumsum(entries)]).astype(np.int64)
        table = np.zeros(int(offset[-1]), dtype=np.float64)
        _fill_tables(kept, units, conditions, values, zero, offset, table)
        # Each unit's features, gathered in the new unit order.
        first = np.cumsum(width) - width
        gather = np.repeat(u_at[kept] - first, width) + np.arange(int(width.sum()))

        # Columns as contiguous arrays: the per-row pass streams through them.
        _, node, depth, side, position, new, unit, decision = np.ascontiguousarray(
            splits[tabulated[splits[:, 0]]].T
        )
        # One spare last entry: a split without a unit (-1) gets the spare number.
        renumber = np.full(len(units) + 1, len(kept), dtype=np.int64)
        renumber[kept] = np.arange(len(kept))
        number = renumber[unit]
        has_unit = number < len(kept)
        unit_width = np.append(width, 0)[number]
        opens = has_unit & (decision == 0)
        bit = np.left_shift(1, position)
        return cls(
            depth=depth,
            side=side,
            feature=trees.feature[node],
            threshold=trees.threshold[node],
            default_left=trees.default_left[node],
            bit=bit,
            new_bit=np.where(new == 1, bit, 0),
            slot=np.where(has_unit, 3 * number + decision, 3 * len(kept)),
            mask_mult=np.where(opens, np.left_shift(1, np.append(decisions, 0)[number]), 0),
            step=np.where(has_unit, np.left_shift(1, np.maximum(decision, 0)) * unit_width, 0),
            start=offset[:-1],
            features=features[gather],
            ends=np.searchsorted(width, np.arange(int(width.max(initial=0)) + 1), "right"),
            table=table,
            levels=int(depth.max(initial=-1)) + 2,
            tabulated=tabulated,
        )


@dataclass(frozen=True)
class UniquePaths:
    """The row-independent half of TreeSHAP (Algorithm 2) for the given trees, walked once.

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
    is a booster or an already parsed `TreeEnsemble`. Trees are read from leaf tables
    (`LeafTables`) as long as those fit in `max_table_bytes`, the smallest first; the
    others are walked with Algorithm 2 (`UniquePaths`). Safe to call from many threads.
    """

    def __init__(
        self, model: TreeEnsemble | Any, max_table_bytes: int = DEFAULT_MAX_TABLE_BYTES
    ) -> None:
        trees = _ensemble(model)
        self.trees = trees
        self.n_features = trees.n_features
        self.bias = trees.expected_value
        self.tables = LeafTables.from_trees(trees, max_table_bytes)
        walked = np.flatnonzero(~self.tables.tabulated)
        self.paths: UniquePaths | None = None
        if walked.size:
            self.paths = UniquePaths.from_trees(trees.subset(walked))
            self._walk = _tree_shap_walker(self.paths.width)

    @property
    def table_bytes(self) -> int:
        """The memory held by the leaf tables."""
        return int(self.tables.table.nbytes)

    @property
    def walked_trees(self) -> int:
        """How many trees did not fit the table bound and are walked with Algorithm 2."""
        return int((~self.tables.tabulated).sum())

    def contributions(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows x features SHAP values, per-row bias); they sum to the margin."""
        x = _rows(x, self.n_features)
        out = np.zeros(x.shape, dtype=np.float64)
        t = self.tables
        _add_leaf_tables(
            x, t.depth, t.side, t.feature, t.threshold, t.default_left, t.bit, t.new_bit,
            t.slot, t.mask_mult, t.step, t.start, t.features, t.ends, t.table,
            t.levels, out,
        )  # fmt: skip
        p = self.paths
        if p is not None:
            self._walk(
                x, p.depth, p.unique, p.zero, p.left_side, p.feature, p.threshold,
                p.default_left, p.repeat, p.repeat_zero, p.leaf, p.leaf_value,
                p.leaf_feature, p.leaf_zero, out,
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
def _layout(
    roots: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    is_leaf: np.ndarray,
    feature: np.ndarray,
    cover: np.ndarray,
    value: np.ndarray,
    splits: np.ndarray,
    units: np.ndarray,
    features: np.ndarray,
    conditions: np.ndarray,
    values: np.ndarray,
    zero: np.ndarray,
    tree_entries: np.ndarray,
    counts: np.ndarray,
) -> None:
    """Walk every tree depth first and describe its splits, units and leaves (`LeafTables`).

    A split opens a unit when one of its children is a leaf or a leaf pair (a split whose
    children are both leaves), unless it is a leaf pair below another split itself. Its
    unit holds those leaves; a leaf is reached from it through the unit's split (decision
    0) and, below a leaf pair, the pair's split (decision 1 or 2, left pair first).

    Fills, sized for the worst case by the caller (`splits` preset to -1, `zero` to -1.0):
        splits, one row per split in visiting order: tree, node, depth, side, position of
            the split feature on the path below the split, 1 if that feature is new there,
            unit (-1 if none), decision within the unit.
        units, one row per unit: tree, mask bits at its split, decisions, width (distinct
            features of its leaves), where its features start in `features`, its first
            leaf and its number of leaves.
        features: every unit's features in path order (first appearance).
        conditions, one row per leaf: its number of conditions in the unit, then for each
            (position in the unit, decision, direction that reaches the leaf, 1 = left).
        values: the leaf values.
        zero: per leaf and unit position, the leaf's zero fraction, -1 where the feature is
            not on the leaf's path.
        tree_entries: per tree, the number of table entries it needs (a float, as deep
            trees need more than 2^63).
        counts: how many units, entries of `features` and leaves were written.
    """
    span = zero.shape[1]
    absorbed_unit = np.full(len(is_leaf), -1, dtype=np.int64)
    absorbed_decision = np.zeros(len(is_leaf), dtype=np.int64)
    # The unique path of the node being visited at depth d is row d: distinct features in
    # order of first appearance and their zero fractions. A node's row is built from its
    # parent's when the node is popped, which depth-first order leaves intact until then.
    path_feature = np.zeros((span, span), dtype=np.int64)
    path_zero = np.ones((span, span))
    path_len = np.zeros(span, dtype=np.int64)
    stack = np.empty((2 * span, 4), dtype=np.int64)
    s = u = at = e = 0
    for t in range(len(roots)):
        stack[0, 0], stack[0, 1], stack[0, 2], stack[0, 3] = roots[t], -1, 0, 0
        top = 1
        while top:
            top -= 1
            node, parent, d, side = stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3]
            if is_leaf[node]:
                continue
            if d > 0:
                size = path_len[d - 1]
                for k in range(size):
                    path_feature[d, k] = path_feature[d - 1, k]
                    path_zero[d, k] = path_zero[d - 1, k]
                q = _position(path_feature[d], size, feature[parent])
                if q == size:
                    path_feature[d, q] = feature[parent]
                    path_zero[d, q] = 1.0
                    size += 1
                path_len[d] = size
                path_zero[d, q] *= cover[node] / cover[parent]
            size = path_len[d]
            f = feature[node]
            q = _position(path_feature[d], size, f)
            new = q == size
            lc, rc = left[node], right[node]
            splits[s, 0], splits[s, 1], splits[s, 2], splits[s, 3] = t, node, d, side
            splits[s, 4], splits[s, 5] = q, new
            if absorbed_unit[node] >= 0:
                splits[s, 6], splits[s, 7] = absorbed_unit[node], absorbed_decision[node]
            elif (
                is_leaf[lc]
                or is_leaf[rc]
                or _pair(lc, left, right, is_leaf)
                or _pair(rc, left, right, is_leaf)
            ):
                for k in range(size):
                    features[at + k] = path_feature[d, k]
                width = size
                if new:
                    features[at + width] = f
                    width += 1
                below = width  # the features on the path of the split's children
                decisions = 1
                first = e
                for col in (1, 0):
                    child = lc if col == 1 else rc
                    ratio = cover[child] / cover[node]
                    if is_leaf[child]:
                        values[e] = value[child]
                        conditions[e, 0] = 1
                        conditions[e, 1], conditions[e, 2], conditions[e, 3] = q, 0, col
                        _leaf_zero(zero[e], path_zero[d], size, below, q, ratio)
                        e += 1
                    elif _pair(child, left, right, is_leaf):
                        j = decisions
                        decisions += 1
                        absorbed_unit[child], absorbed_decision[child] = u, j
                        g_f = feature[child]
                        g_q = _position(features[at:], width, g_f)
                        if g_q == width:
                            features[at + width] = g_f
                            width += 1
                        for g_col in (1, 0):
                            g = left[child] if g_col == 1 else right[child]
                            values[e] = value[g]
                            conditions[e, 0] = 2
                            conditions[e, 1], conditions[e, 2], conditions[e, 3] = q, 0, col
                            conditions[e, 4], conditions[e, 5] = g_q, j
                            conditions[e, 6] = g_col
                            _leaf_zero(zero[e], path_zero[d], size, below, q, ratio)
                            g_ratio = cover[g] / cover[child]
                            if g_q >= below:
                                zero[e, g_q] = g_ratio
                            else:
                                zero[e, g_q] *= g_ratio
                            e += 1
                units[u, 0], units[u, 1], units[u, 2], units[u, 3] = t, size, decisions, width
                units[u, 4], units[u, 5], units[u, 6] = at, first, e - first
                splits[s, 6], splits[s, 7] = u, 0
                tree_entries[t] += 2.0 ** (size + decisions) * width
                u += 1
                at += width
            s += 1
            stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = rc, node, d + 1, 0
            stack[top + 1, 0], stack[top + 1, 1] = lc, node
            stack[top + 1, 2], stack[top + 1, 3] = d + 1, 1
            top += 2
    counts[0], counts[1], counts[2] = u, at, e


@numba.njit(nogil=True)
def _position(path: np.ndarray, size: int, f: int) -> int:
    """Where feature f sits among the first `size` entries of a path (`size` if absent)."""
    for k in range(size):
        if path[k] == f:
            return k
    return size


@numba.njit(nogil=True)
def _pair(node: int, left: np.ndarray, right: np.ndarray, is_leaf: np.ndarray) -> bool:
    """Whether the node is a split whose children are both leaves."""
    return not is_leaf[node] and is_leaf[left[node]] and is_leaf[right[node]]


@numba.njit(nogil=True)
def _leaf_zero(
    out: np.ndarray, path: np.ndarray, size: int, below: int, q: int, ratio: float
) -> None:
    """The zero fractions of a child of a split: the split's path, then the split itself.

    The split feature (position q, `below` features in all) takes the child's share of
    the split's cover, times its earlier zero fraction when it was split on above.
    """
    for k in range(size):
        out[k] = path[k]
    if below > size:
        out[q] = ratio
    else:
        out[q] *= ratio


@numba.njit(nogil=True)
def _leaf_shap(zero: np.ndarray, value: float) -> np.ndarray:
    """One leaf's SHAP values, (2^d x d): row B for the row meeting the conditions in B.

    `zero` holds the zero fractions of the leaf's d distinct path features. With
    E(C) = sum_{S ⊆ C} w(|S|, d) prod_{C - S} z and Q(B) = value * prod_{F - B} z,
    feature i gets (1 - z_i) Q(B) E(B - {i}) if i is in B and -Q(B) E(B) otherwise
    (see the module docstring). prod_{j in C} (z_j + t) = sum_k coef[C, k] t^k collects
    the products of E(C) by the size of S, built one feature at a time.
    """
    d = len(zero)
    n = 1 << d
    weight = np.empty(d)
    weight[0] = 1.0 / d
    for k in range(1, d):
        weight[k] = weight[k - 1] * k / (d - k)
    coef = np.zeros((n, d + 1))
    coef[0, 0] = 1.0
    inside = np.ones(n)
    for c in range(1, n):
        low = 0
        while not (c >> low) & 1:
            low += 1
        rest = c & (c - 1)
        z = zero[low]
        inside[c] = inside[rest] * z
        coef[c, 0] = coef[rest, 0] * z
        for k in range(1, d + 1):
            coef[c, k] = coef[rest, k] * z + coef[rest, k - 1]
    sums = np.zeros(n)
    for c in range(n):
        total = 0.0
        for k in range(d):
            total += weight[k] * coef[c, k]
        sums[c] = total
    phi = np.empty((n, d))
    for b in range(n):
        q = value * inside[(n - 1) ^ b]
        cold = -q * sums[b]
        for i in range(d):
            if (b >> i) & 1:
                phi[b, i] = (1.0 - zero[i]) * q * sums[b ^ (1 << i)]
            else:
                phi[b, i] = cold
    return phi


@numba.njit(nogil=True)
def _fill_tables(
    kept: np.ndarray,
    units: np.ndarray,
    conditions: np.ndarray,
    values: np.ndarray,
    zero: np.ndarray,
    offset: np.ndarray,
    table: np.ndarray,
) -> None:
    """Write the table of each unit `kept[j]` (a row of `units`) from `offset[j]`.

    Table row `r = mask << decisions | directions` (bit j of `directions` set when the
    row goes left at decision j) sums the unit's leaves. A leaf's mask follows from the
    mask at the unit's split: the features new below the split join it, and each of the
    leaf's conditions keeps its feature in the mask only if the row goes the leaf's way
    there, since the row otherwise fails one of the feature's conditions.
    """
    for j in range(len(kept)):
        u = kept[j]
        bits, decisions, width = units[u, 1], units[u, 2], units[u, 3]
        first, count = units[u, 5], units[u, 6]
        fresh = ((1 << width) - 1) ^ ((1 << bits) - 1)
        for e in range(first, first + count):
            positions = np.flatnonzero(zero[e, :width] >= 0.0)
            phi = _leaf_shap(zero[e][positions], values[e])
            for r in range(1 << (bits + decisions)):
                mask = (r >> decisions) | fresh
                for c in range(conditions[e, 0]):
                    at, decision, direction = conditions[e, 1 + 3 * c : 4 + 3 * c]
                    if (r >> decision) & 1 != direction:
                        mask &= ~(1 << at)
                b = 0
                for i in range(len(positions)):
                    b |= ((mask >> positions[i]) & 1) << i
                row = offset[j] + r * width
                for i in range(len(positions)):
                    table[row + positions[i]] += phi[b, i]


@numba.njit(nogil=True)
def _add_leaf_tables(
    x: np.ndarray,
    depth: np.ndarray,
    side: np.ndarray,
    feature: np.ndarray,
    threshold: np.ndarray,
    default_left: np.ndarray,
    bit: np.ndarray,
    new_bit: np.ndarray,
    slot: np.ndarray,
    mask_mult: np.ndarray,
    step: np.ndarray,
    start: np.ndarray,
    features: np.ndarray,
    ends: np.ndarray,
    table: np.ndarray,
    levels: int,
    out: np.ndarray,
) -> None:
    """Add every row's SHAP values over the tabulated trees to `out` (rows x features).

    First pass, each split once: the mask it was reached with is `masks[depth, side]`,
    written by its parent, and it writes its children's (the child the row follows keeps
    the split feature's bit, the other loses it). The left subtree only writes deeper
    rows, so the right child's mask is intact when its turn comes. The split stores its
    share of its unit's table row in its own slot, without a branch (a split without a
    unit writes to the spare slot) and without reading it back. Second pass: each unit
    adds the row its slots add up to. Only the per-call scratch `masks` and `row_at` is
    written.
    """
    masks = np.zeros((levels, 2), dtype=np.int64)
    row_at = np.zeros(3 * ends[-1] + 1, dtype=np.int64)
    for i in range(x.shape[0]):
        row = x[i]
        phi = out[i]
        for s in range(len(depth)):
            d = depth[s]
            m = masks[d, side[s]]
            v = row[feature[s]]
            went_left = np.int64((v < threshold[s]) | (np.isnan(v) & default_left[s]))
            kept = m | new_bit[s]
            masks[d + 1, went_left] = kept
            masks[d + 1, 1 - went_left] = kept & ~bit[s]
            # went_left is added before multiplying: a product of went_left alone would be
            # compiled to a branch, mispredicted about every other split.
            row_at[slot[s]] = (m * mask_mult[s] + went_left) * step[s]
        u = at = 0
        for w in range(len(ends)):
            while u < ends[w]:
                r = start[u] + row_at[3 * u] + row_at[3 * u + 1] + row_at[3 * u + 2]
                for k in range(w):
                    phi[features[at + k]] += table[r + k]
                at += w
                u += 1


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
