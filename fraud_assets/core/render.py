"""Markdown for asset pages, from plain data."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


def json_safe(value: object) -> object:
    """JSON-friendly scalars: numpy numbers to Python, NaN and inf to None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> str:
    """A markdown table with the given columns, one line per row."""
    head = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def frame_table(frame: pd.DataFrame, max_rows: int = 10) -> str:
    """The first rows of a frame as a markdown table."""
    rows = frame.head(max_rows).to_dict("records")
    return markdown_table(rows, [str(c) for c in frame.columns])


def mapping_table(values: Mapping[str, object], key: str = "name", value: str = "value") -> str:
    """A two-column markdown table from a mapping."""
    return markdown_table([{key: k, value: v} for k, v in values.items()], [key, value])
