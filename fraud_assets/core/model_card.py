"""The model card: one readable markdown document per champion."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fraud_assets.core.features import FEATURE_DEFS, FeatureSpec
from fraud_assets.core.metrics import HEADLINE
from fraud_assets.core.registry import RegisteredVersion
from fraud_assets.core.render import mapping_table, markdown_table

FAIRNESS_COLUMNS = {
    "disparate_impact": "disparate impact",
    "fpr_gap": "FPR gap",
    "dpd": "demographic parity diff.",
    "eod": "equalized odds diff.",
}


def _fairness_section(fairness: Mapping[str, Any] | None) -> str:
    if not fairness:
        return "No protected attributes in the dataset; fairness was not measured."
    rows = [
        {
            "attribute": attribute["name"],
            "status": attribute["status"],
            **{
                label: (attribute["metrics"].get(key) or {}).get("value")
                for key, label in FAIRNESS_COLUMNS.items()
            },
        }
        for attribute in fairness["attributes"]
    ]
    header = f"Overall: **{fairness['status']}** at threshold {fairness['threshold']:.4f}."
    return (
        header + "\n\n" + markdown_table(rows, ["attribute", "status", *FAIRNESS_COLUMNS.values()])
    )


def render_model_card(
    version: RegisteredVersion,
    info: Mapping[str, Any],
    spec: FeatureSpec,
    importance: Mapping[str, float] | None = None,
) -> str:
    """Markdown for a data scientist, a reviewer or an auditor."""
    metrics = info.get("test_metrics", {})
    split = info.get("split", {})
    groups = {d.name: d.group for d in FEATURE_DEFS}
    drift = info.get("drift_test_vs_training") or {}
    parts = [
        f"# Model card: {version.name} v{version.version}",
        f"Algorithm **{info.get('algorithm', '?')}**, trained {info.get('trained_at', '?')}, "
        f"MLflow run `{version.run_id}`. ONNX sha256 `{version.onnx_sha256}`.",
        "## Data",
        mapping_table(
            {
                "time span": f"{split.get('start')} .. {split.get('end')}",
                "training window ends": split.get("train_end"),
                "validation window ends": split.get("valid_end"),
                "training rows": split.get("train_rows"),
                "test rows": split.get("test_rows"),
                "left out for label delay": split.get("left_out_for_label_delay"),
                "frauds unknown at the training cutoff": split.get("fraud_unknown_at_cutoff"),
            },
            "item",
            "value",
        ),
        "## Features",
        f"Feature-set version `{spec.version}`: {len(spec.features)} features.",
        markdown_table(
            [{"feature": f, "group": groups.get(f, "?")} for f in spec.features],
            ["feature", "group"],
        ),
    ]
    if spec.skipped:
        parts.append("Skipped: " + "; ".join(f"{k} ({v})" for k, v in spec.skipped.items()))
    parts += [
        "## Metrics (test window)",
        markdown_table(
            [{"metric": k, "value": metrics.get(k)} for k in (*HEADLINE, "expected_cost")],
            ["metric", "value"],
        ),
        "## Threshold and costs",
        f"Decline when the score is at least **{info.get('threshold', version.threshold):.4f}**. "
        f"It minimizes expected cost on the validation window, where a missed fraud costs its "
        f"amount and a false decline costs {info.get('false_decline_cost')}.",
        "## Fairness",
        _fairness_section(info.get("fairness")),
        "## Top explanations",
    ]
    if importance:
        top = sorted(importance.items(), key=lambda kv: -kv[1])[:10]
        parts.append(
            markdown_table(
                [{"feature": k, "mean_abs_shap": v} for k, v in top], ["feature", "mean_abs_shap"]
            )
        )
    else:
        parts.append("Not computed yet: materialize `model_explanations`.")
    parts += [
        "## Drift at promotion",
        f"Test window against the training reference: **{drift.get('status', '?')}**; most "
        f"drifted: {', '.join(drift.get('worst_features', [])) or 'none'}.",
    ]
    return "\n\n".join(str(p) for p in parts) + "\n"
