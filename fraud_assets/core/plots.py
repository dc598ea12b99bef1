"""Plots as PNG bytes, built by pure functions so they can be attached anywhere and tested."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def pr_curve_png(y: np.ndarray, score: np.ndarray, threshold: float) -> bytes:
    """Precision against recall, with the decision threshold marked."""
    precision, recall, thresholds = precision_recall_curve(y, score)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(recall, precision, lw=1.5)
    if len(thresholds):
        i = int(np.clip(np.searchsorted(thresholds, threshold), 0, len(thresholds) - 1))
        ax.scatter([recall[i]], [precision[i]], color="crimson", zorder=3, label="threshold")
        ax.legend(loc="lower left")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test window)")
    ax.grid(alpha=0.3)
    return _png(fig)


def roc_curve_png(y: np.ndarray, score: np.ndarray) -> bytes:
    """ROC curve with the low-FPR region that matters for declines shaded."""
    fpr, tpr, _ = roc_curve(y, score)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(fpr, tpr, lw=1.5)
    ax.axvspan(0, 0.01, color="orange", alpha=0.2, label="FPR <= 1%")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set(xlabel="false-positive rate", ylabel="recall", title="ROC (test window)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _png(fig)


def confusion_matrix_png(tp: float, fp: float, fn: float, tn: float) -> bytes:
    """Counts of each outcome at the decision threshold."""
    grid = np.array([[tn, fp], [fn, tp]])
    fig, ax = plt.subplots(figsize=(4, 3.5))
    ax.imshow(np.log1p(grid), cmap="Blues")
    for (i, j), value in np.ndenumerate(grid):
        ax.text(j, i, f"{int(value):,}", ha="center", va="center")
    ax.set_xticks([0, 1], ["approve", "decline"])
    ax.set_yticks([0, 1], ["genuine", "fraud"])
    ax.set(title="Confusion matrix at threshold")
    return _png(fig)


def bar_png(labels: list[str], values: list[float], title: str, xlabel: str) -> bytes:
    """Horizontal bars, largest on top."""
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(labels) + 1.2))
    ax.barh(labels[::-1], values[::-1])
    ax.set(title=title, xlabel=xlabel)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown that shows a PNG inline in the Dagster UI."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
