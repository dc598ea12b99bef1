"""Bring your own data: map a CSV or Parquet source onto the canonical transaction schema.

A dataset is described by a small YAML file (see ``datasets/synthetic.yaml`` and
``datasets/example_custom.yaml``): where the files are, which of your columns holds which
canonical field, how timestamps are written and how labels are spelled. ``ingest`` reads the
files, renames and converts the columns, and checks every row. Rows that break a rule are not
dropped silently: they come back in ``IngestResult.rejects`` with their original values and
every reason, so ``rows_read == len(valid) + len(rejects)`` always holds.

Problems that make the whole source unusable (missing file, unreadable file, a required
column that is not there, a mapping that names a column that does not exist) raise
``DatasetError`` with a message naming the file and the fix.
"""

from __future__ import annotations

import difflib
import glob
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fraud_assets.core.schema import (
    CURRENCIES,
    FIELD_BY_NAME,
    FIELDS,
    canonical_order,
)

__all__ = [
    "DatasetConfig",
    "DatasetError",
    "IngestResult",
    "ingest",
    "ingest_frame",
    "load_dataset_config",
    "write_rejects",
]

_STR = pd.StringDtype("pyarrow")
_IDS = ("transaction_id", "user_id", "merchant_id", "device_id")
_TEXT_FIELDS = tuple(f.name for f in FIELDS if f.kind == "string")
_DATETIME_FIELDS = tuple(f.name for f in FIELDS if f.kind == "datetime")
_CONTROL_CHARS = r"[\x00-\x1f\x7f-\x9f]"
# An explicit UTC offset or zone after a clock time; dates alone ("2024-01-05") must not match.
_OFFSET_RE = (
    r"\d:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[AaPp][Mm])?\s*"
    r"(?:[zZ]|UTC|GMT|(?:UTC|GMT)?[+-]\d{2}(?::?\d{2})?)$"
)
# Largest epoch magnitude per unit that still fits in datetime64[ns].
_EPOCH_LIMIT = {"s": 9.2e9, "ms": 9.2e12, "us": 9.2e15, "ns": 9.2e18}
_CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".zip", ".xz", ".zst", ".tar"}
_PARQUET_SUFFIXES = {".parquet", ".pq", ".parq"}
_BLOCKED_CSV_OPTIONS = {"filepath_or_buffer", "chunksize", "iterator", "index_col", "usecols"}
_META_COLUMNS = ("source_file", "source_row", "reject_reason")

_MISSING_REASON = {
    "merchant_category": "not in source; merchant-category features are skipped",
    "currency": "not in source; amounts are used as they are, without a currency check",
    "gender": "not in source; bias reports by gender are skipped",
    "age": "not in source and no date_of_birth to derive it; bias reports by age are skipped",
    "date_of_birth": "not in source; only used to derive age",
    "is_fraud": "not in source; the data is unlabelled (it can be scored, not trained on)",
    "label_timestamp": (
        "not in source; set label_delay_days in the dataset config to assume a labelling delay"
    ),
}


class DatasetError(Exception):
    """The dataset as a whole cannot be used; the message names the file and the problem."""


class DatasetConfig(BaseModel):
    """How to read one dataset and map its columns onto the canonical schema.

    Usually loaded from YAML with :func:`load_dataset_config`. ``columns`` maps a canonical
    field name to the name of your column; canonical fields you do not map are looked up under
    their own name. Timestamps without a UTC offset are read as local time in ``timezone`` and
    converted to UTC.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    path: str = Field(min_length=1)
    format: Literal["auto", "csv", "parquet"] = "auto"
    columns: dict[str, str] = Field(default_factory=dict)
    timestamp_format: str | None = None
    timestamp_unit: Literal["s", "ms", "us", "ns"] | None = None
    timezone: str = "UTC"
    fraud_values: list[str] = Field(default_factory=lambda: ["1", "true", "yes", "fraud"])
    genuine_values: list[str] = Field(default_factory=lambda: ["0", "false", "no", "genuine"])
    label_delay_days: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    csv_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("columns", "csv_options", mode="before")
    @classmethod
    def _empty_mapping(cls, value: Any) -> Any:
        # An empty YAML key (`columns:`) arrives as None; it means "no entries".
        return {} if value is None else value

    @field_validator("columns")
    @classmethod
    def _known_canonical_names(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = [k for k in value if k not in FIELD_BY_NAME]
        if unknown:
            raise ValueError(
                f"unknown canonical field(s) {', '.join(map(repr, unknown))}; "
                f"valid names: {', '.join(f.name for f in FIELDS)}"
            )
        empty = [k for k, v in value.items() if not v.strip()]
        if empty:
            raise ValueError(f"empty source column name for {', '.join(map(repr, empty))}")
        return value

    @field_validator("fraud_values", "genuine_values", mode="before")
    @classmethod
    def _labels_as_text(cls, value: Any) -> Any:
        # YAML reads 1 as int and yes/no/on/off/true/false as bool, losing the user's spelling;
        # labels are compared as text, so a bool stands for every spelling YAML maps to it.
        if not isinstance(value, list):
            return value
        texts: list[str] = []
        for v in value:
            if isinstance(v, bool):
                texts.extend(["true", "yes", "on"] if v else ["false", "no", "off"])
            else:
                texts.append(str(v))
        return texts

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            pd.Timestamp("2020-01-01").tz_localize(value)
        except Exception as exc:
            raise ValueError(
                f"unknown timezone {value!r} (use an IANA name such as 'Europe/Berlin' or 'UTC')"
            ) from exc
        return value

    @field_validator("csv_options")
    @classmethod
    def _allowed_csv_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        blocked = sorted(set(value) & _BLOCKED_CSV_OPTIONS)
        if blocked:
            raise ValueError(
                f"csv_options may not set {', '.join(blocked)} (ingest reads every "
                "column of every row itself)"
            )
        return value

    @model_validator(mode="after")
    def _labels_disjoint(self) -> DatasetConfig:
        fraud = {v.strip().lower() for v in self.fraud_values}
        genuine = {v.strip().lower() for v in self.genuine_values}
        if not fraud or not genuine:
            raise ValueError("fraud_values and genuine_values must each list at least one value")
        both = sorted(fraud & genuine)
        if both:
            raise ValueError(f"label value(s) {both} are listed as both fraud and genuine")
        return self


@dataclass
class IngestResult:
    """What ``ingest`` produced.

    ``valid`` holds the canonical columns present in the source (schema order, canonical
    dtypes, sorted by time then transaction id). ``rejects`` holds the rows that broke a rule,
    with their original values as text plus ``source_file``, ``source_row`` (0-based data row in
    that file) and ``reject_reason``. ``missing_fields`` lists optional canonical fields the
    source does not have, with what that means. ``notes`` says what ingest filled in or derived.
    """

    valid: pd.DataFrame
    rejects: pd.DataFrame
    missing_fields: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    source_files: list[str] = field(default_factory=list)
    rows_read: int = 0


def load_dataset_config(path: str | Path) -> DatasetConfig:
    """Read a dataset YAML file; a relative ``path`` inside it is taken from the YAML's folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: dataset config not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read dataset config: {exc}") from exc
    except yaml.YAMLError as exc:
        raise DatasetError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise DatasetError(
            f"{path}: a dataset config must be a YAML mapping (name: ..., path: ...), "
            f"got {type(raw).__name__}"
        )
    if isinstance(raw.get("path"), str):
        data_path = os.path.expanduser(raw["path"])
        if not os.path.isabs(data_path):
            data_path = os.path.normpath(os.path.join(path.parent.resolve(), data_path))
        raw = {**raw, "path": data_path}
    try:
        return DatasetConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "\n".join(
            f"  - {'.'.join(map(str, err['loc'])) or '<config>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise DatasetError(f"{path}: invalid dataset config:\n{problems}") from exc


def ingest(config: DatasetConfig) -> IngestResult:
    """Read every file of the dataset, map and validate it, and combine the results.

    Files of a glob are read in sorted order. A transaction id seen in an earlier file makes
    the later row a reject, exactly as within one file.
    """
    files = _resolve_files(config)
    valid_parts: list[pd.DataFrame] = []
    reject_parts: list[pd.DataFrame] = []
    missing_by_file: list[dict[str, str]] = []
    notes: list[str] = []
    seen: pd.DataFrame | None = None
    rows_read = 0
    for number, file in enumerate(files, start=1):
        frame = _read_file(file, config)
        result, new_ids = _ingest(frame, config, str(file), seen)
        del frame  # the raw text of a large file is no longer needed
        rows_read += result.rows_read
        valid_parts.append(result.valid)
        reject_parts.append(result.rejects)
        missing_by_file.append(result.missing_fields)
        notes.extend(n for n in result.notes if n not in notes)
        if number < len(files):
            located = pd.DataFrame(
                {"file": str(file), "row": new_ids.index.to_numpy()},
                index=pd.Index(new_ids.to_numpy(dtype=object), name="transaction_id"),
            )
            seen = located if seen is None else pd.concat([seen, located])
    names = [str(f) for f in files]
    return IngestResult(
        valid=_finish(_concat_valid(valid_parts)),
        rejects=_concat_rejects(reject_parts),
        missing_fields=_merge_missing(missing_by_file, names),
        notes=notes,
        source_files=names,
        rows_read=rows_read,
    )


def ingest_frame(
    frame: pd.DataFrame, config: DatasetConfig, source_file: str = "<frame>"
) -> IngestResult:
    """Map and validate a DataFrame already in memory (``config.path`` is not used).

    ``source_row`` in the rejects is the 0-based position of the row in ``frame``.
    """
    result, _ = _ingest(frame, config, source_file, None)
    result.valid = _finish(result.valid)
    return result


def write_rejects(result: IngestResult, path: Path) -> Path | None:
    """Write the rejected rows with their reasons as CSV; returns None when nothing was rejected."""
    if result.rejects.empty:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    result.rejects.to_csv(path, index=False)
    return path


def _resolve_files(config: DatasetConfig) -> list[Path]:
    pattern = os.path.expanduser(config.path)
    if any(ch in pattern for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        if not files:
            raise DatasetError(f"{pattern}: no files match this glob (dataset {config.name!r})")
        return files
    file = Path(pattern)
    if not file.exists():
        raise DatasetError(f"{file}: file not found (dataset {config.name!r})")
    if file.is_dir():
        raise DatasetError(
            f"{file}: is a folder; point path at a file or a glob such as {file}/*.parquet"
        )
    return [file]


def _file_format(file: Path, config: DatasetConfig) -> str:
    if config.format != "auto":
        return config.format
    suffixes = [s.lower() for s in file.suffixes]
    while suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes.pop()
    suffix = suffixes[-1] if suffixes else ""
    if suffix in _PARQUET_SUFFIXES:
        return "parquet"
    if suffix in _CSV_SUFFIXES:
        return "csv"
    raise DatasetError(
        f"{file}: cannot tell the format from the suffix {suffix or '(none)'!r}; "
        "set format: csv or format: parquet in the dataset config"
    )


def _read_file(file: Path, config: DatasetConfig) -> pd.DataFrame:
    try:
        size = file.stat().st_size
    except OSError as exc:
        raise DatasetError(f"{file}: cannot access file: {exc}") from exc
    if size == 0:
        raise DatasetError(f"{file}: file is empty (0 bytes)")
    if _file_format(file, config) == "parquet":
        frame = _read_parquet(file)
    else:
        frame = _read_csv(file, config)
    if len(frame) == 0:
        raise DatasetError(f"{file}: no data rows (the file has columns but no rows)")
    return frame


def _read_parquet(file: Path) -> pd.DataFrame:
    def string_as_arrow(dtype: pa.DataType) -> pd.StringDtype | None:
        # Arrow-backed strings skip a copy to Python objects and make the string checks fast.
        if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
            return _STR
        return None

    try:
        table = pq.read_table(file)
        # ignore_metadata: a pandas index saved in the file (say transaction_id) comes back as
        # an ordinary column instead of being lost when rows are renumbered.
        return table.to_pandas(
            types_mapper=string_as_arrow, date_as_object=False, ignore_metadata=True
        )
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        raise DatasetError(
            f"{file}: cannot read as Parquet (corrupt, truncated or not Parquet): {exc}"
        ) from exc


def _read_csv(file: Path, config: DatasetConfig) -> pd.DataFrame:
    # Everything is read as text so ids keep leading zeros and rejects show the original values.
    options: dict[str, Any] = {"dtype": str, "keep_default_na": False, "encoding": "utf-8"}
    if file.suffix.lower() == ".tsv":
        options["sep"] = "\t"
    options.update(config.csv_options)
    encoding = options["encoding"]
    _check_raw_csv(file, str(encoding))
    try:
        frame = pd.read_csv(file, **options)
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{file}: cannot decode as {encoding} ({exc.reason}: "
            f"{bytes(exc.object[exc.start : exc.start + 1])!r}); "
            "set csv_options: {encoding: <the file's encoding>} in the dataset config, "
            "e.g. latin-1 or cp1252"
        ) from exc
    except LookupError as exc:
        raise DatasetError(f"{file}: unknown encoding {encoding!r} in csv_options") from exc
    except pd.errors.EmptyDataError as exc:
        raise DatasetError(f"{file}: no columns to read (blank file)") from exc
    except pd.errors.ParserError as exc:
        raise DatasetError(f"{file}: malformed CSV: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise DatasetError(
            f"{file}: cannot read CSV with csv_options {config.csv_options}: {exc}"
        ) from exc
    except OSError as exc:
        raise DatasetError(f"{file}: cannot read file: {exc}") from exc
    if not isinstance(frame.index, pd.RangeIndex):
        # pandas silently turns surplus leading fields into an index, shifting every value.
        raise DatasetError(
            f"{file}: data rows have more fields than the header ({len(frame.columns)} "
            "columns); check the separator (csv_options: {sep: ...}) and the header line"
        )
    return frame


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _check_raw_csv(file: Path, encoding: str) -> None:
    """Refuse bytes pandas would silently mangle: its parser ends a value at a NUL byte.

    A UTF-16 file (byte-order mark, or NUL bytes between ASCII letters) read as an 8-bit
    encoding gets a hint naming UTF-16. Compressed files are left to pandas.
    """
    if file.suffix.lower() in _COMPRESSION_SUFFIXES or encoding.lower().replace("-", "").startswith(
        ("utf16", "utf32")
    ):
        return
    offset = 0
    line = 1
    with file.open("rb") as handle:
        while chunk := handle.read(1 << 24):
            if offset == 0 and chunk.startswith(_UTF16_BOMS):
                raise DatasetError(
                    f"{file}: the file is UTF-16 (it starts with a UTF-16 byte-order mark); "
                    "set csv_options: {encoding: utf-16} in the dataset config"
                )
            at = chunk.find(b"\x00")
            if at >= 0:
                line += chunk.count(b"\n", 0, at)
                looks_utf16 = chunk[:200].count(b"\x00") > 50
                hint = (
                    "the file looks UTF-16: set csv_options: {encoding: utf-16}"
                    if looks_utf16
                    else "remove them upstream (a CSV never contains NUL bytes)"
                )
                raise DatasetError(f"{file}: NUL byte at line {line} (byte {offset + at}); {hint}")
            line += chunk.count(b"\n")
            offset += len(chunk)


def _resolve_columns(
    columns: pd.Index, config: DatasetConfig, source_file: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """Canonical name -> source column, and absent optional fields -> reason.

    Every mapping to an absent column and every absent required field is named in one
    error, so a wrong mapping is fixed in one go rather than one column per attempt.
    """
    available = list(columns)
    shown = ", ".join(map(repr, map(str, available)))
    mapped_sources = {src: canonical for canonical, src in config.columns.items()}
    resolved: dict[str, Any] = {}
    missing: dict[str, str] = {}
    problems: list[str] = []
    for f in FIELDS:
        if f.name in config.columns:
            src = config.columns[f.name]
            if src not in available:
                problems.append(
                    f"columns maps {f.name} -> {src!r}, but there is no column "
                    f"{src!r}{_did_you_mean(src, available)}"
                )
            resolved[f.name] = src
            continue
        taken_by = mapped_sources.get(f.name)
        if f.name in available and taken_by is None:
            resolved[f.name] = f.name
            continue
        why = (
            f"column {f.name!r} is mapped to {taken_by}"
            if taken_by
            else f"no column named {f.name!r} and no entry for it in columns"
        )
        if f.required:
            problems.append(
                f"required field {f.name!r} is missing ({why}); add "
                f"`{f.name}: <your column>` under columns"
                f"{'' if taken_by else _did_you_mean(f.name, available)}"
            )
            continue
        reason = _MISSING_REASON.get(f.name, "not in source; features needing it are skipped")
        missing[f.name] = f"{reason} ({why})" if taken_by else reason
    if problems:
        raise DatasetError(f"{source_file}: {'; '.join(problems)}; available columns: {shown}")
    return resolved, missing


def _did_you_mean(name: str, available: list[Any]) -> str:
    close = difflib.get_close_matches(name, [str(a) for a in available], n=3, cutoff=0.6)
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


class _Problems:
    """Every reason each row is rejected, kept in the order the checks ran."""

    def __init__(self, n: int) -> None:
        self.reasons = np.full(n, "", dtype=object)

    def add(
        self,
        mask: np.ndarray | pd.Series,
        field_name: str,
        message: str | Callable[[np.ndarray], list[str]],
    ) -> None:
        """Record ``message`` (text, or a function of the offending positions) for masked rows."""
        pos = np.flatnonzero(np.asarray(mask, dtype=bool))
        if pos.size == 0:
            return
        texts = [message] * pos.size if isinstance(message, str) else message(pos)
        new = np.asarray([f"{field_name}: {t}" for t in texts], dtype=object)
        current = self.reasons[pos]
        self.reasons[pos] = np.where(current == "", new, current + "; " + new)

    @property
    def bad(self) -> np.ndarray:
        return self.reasons != ""


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _values_at(series: pd.Series, fmt: Callable[[Any], str]) -> Callable[[np.ndarray], list[str]]:
    return lambda pos: [fmt(v) for v in series.iloc[pos].tolist()]


def _as_text(col: pd.Series) -> pd.Series:
    """Any column as stripped Arrow-backed text; empty strings become missing."""
    if isinstance(col.dtype, pd.StringDtype):
        text = col.astype(_STR)
    elif pd.api.types.is_bool_dtype(col.dtype):
        text = col.astype(_STR)
    elif pd.api.types.is_float_dtype(col.dtype):
        values = col.to_numpy(dtype=float, na_value=np.nan)
        finite = values[np.isfinite(values)]
        whole = bool(np.all(finite == np.round(finite))) and bool(np.all(np.abs(finite) < 2**53))
        # Integer ids stored as float (because of NaNs) should read "42", not "42.0".
        text = col.astype("Int64").astype(_STR) if whole else col.astype(_STR)
    else:
        text = col.astype(_STR)
    text = text.str.strip()
    return text.mask(text == "")


def _raw_text(col: pd.Series) -> pd.Series:
    """Original values as text for the rejects file; missing values become empty strings."""
    obj = col.astype(object)
    return obj.where(col.notna(), "").astype(str)


def _to_numbers(text: pd.Series, config: DatasetConfig) -> pd.Series:
    """Text to float64 (NaN where it is not a number), honouring csv_options decimal/thousands."""
    thousands = config.csv_options.get("thousands")
    decimal = config.csv_options.get("decimal", ".")
    if thousands:
        text = text.str.replace(str(thousands), "", regex=False)
    if decimal != ".":
        text = text.str.replace(str(decimal), ".", regex=False)
    numbers = pd.to_numeric(text.astype(object), errors="coerce")
    return pd.Series(np.asarray(numbers, dtype=float), index=text.index)


def _numeric_field(
    col: pd.Series, name: str, config: DatasetConfig, problems: _Problems
) -> tuple[pd.Series, np.ndarray, str]:
    """Parse a numeric column.

    Returns the float64 values, the mask of missing values and how to describe them: a typed
    column cannot tell a null from a NaN, a text column can ("" versus "nan").
    """
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        values = pd.Series(col.to_numpy(dtype=float, na_value=np.nan), index=col.index)
        return values, values.isna().to_numpy(), "missing or NaN value"
    text = _as_text(col)
    values = _to_numbers(text, config)
    missing = text.isna().to_numpy()
    nan_text = text.str.lower().isin(["nan", "+nan", "-nan"]).fillna(False).to_numpy(bool)
    problems.add(nan_text, name, "NaN value")
    unparseable = ~missing & values.isna().to_numpy() & ~nan_text
    problems.add(unparseable, name, _values_at(text, lambda v: f"not a number {_show(v)}"))
    return values, missing, "missing required value"


def _from_epoch(numbers: pd.Series, unit: str) -> pd.Series:
    limit = _EPOCH_LIMIT[unit]
    numbers = numbers.where(numbers.abs() < limit)
    return pd.to_datetime(numbers, unit=unit, utc=True, errors="coerce")


def _localize(wall: pd.Series, tz: str, name: str, source_file: str, notes: list[str]) -> pd.Series:
    """Naive wall-clock times in ``tz`` -> UTC, settling DST gaps and overlaps explicitly."""
    if tz == "UTC":
        return wall.dt.tz_localize("UTC")
    local = wall.dt.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    odd = int((local.isna() & wall.notna()).sum())
    if odd:
        # The repeated autumn hour is read as standard time, the skipped spring hour moves
        # forward; rejecting them would lose an hour of data every year.
        local = wall.dt.tz_localize(
            tz, ambiguous=np.zeros(len(wall), dtype=bool), nonexistent="shift_forward"
        )
        notes.append(
            f"{name}: {odd} local time(s) in {source_file} fall in a DST change of {tz} "
            "(repeated hour read as standard time, skipped hour shifted forward)"
        )
    return local.dt.tz_convert("UTC")


def _to_ns(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Tz-aware datetimes as datetime64[ns, UTC]; values outside the ns range become NaT."""
    if values.dtype == "datetime64[ns, UTC]":
        return values, np.zeros(len(values), dtype=bool)
    low = pd.Timestamp.min.tz_localize("UTC")
    high = pd.Timestamp.max.tz_localize("UTC")
    outside = (values.notna() & ((values < low) | (values > high))).to_numpy()
    values = values.where(~outside)
    return values.astype("datetime64[ns, UTC]"), outside


def _datetime_field(
    col: pd.Series,
    name: str,
    config: DatasetConfig,
    problems: _Problems,
    notes: list[str],
    source_file: str,
) -> pd.Series:
    """Parse a date/time column to datetime64[ns, UTC]; unparseable values become reject reasons.

    timestamp_format, timestamp_unit and timezone describe transaction and label times. A birth
    date is a calendar date: parsed flexibly and never shifted, which would move birthdays.
    """
    required = FIELD_BY_NAME[name].required
    is_birth = name == "date_of_birth"
    tz = "UTC" if is_birth else config.timezone
    fmt = None if is_birth else config.timestamp_format
    epoch_unit = None if is_birth else config.timestamp_unit
    if isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(col.dtype):
        missing = col.isna().to_numpy()
        if isinstance(col.dtype, pd.DatetimeTZDtype):
            parsed = col.dt.tz_convert("UTC")
        else:
            parsed = _localize(col, tz, name, source_file, notes)
        parsed, outside = _to_ns(parsed)
        problems.add(outside, name, _values_at(col, lambda v: f"out of range {str(v)!r}"))
    elif pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        missing = col.isna().to_numpy()
        if epoch_unit is None:
            problems.add(
                ~missing,
                name,
                _values_at(
                    col,
                    lambda v: (
                        f"numeric value {v!r} needs timestamp_unit "
                        "(s, ms, us or ns) in the dataset config"
                    ),
                ),
            )
            parsed = pd.Series(pd.NaT, index=col.index, dtype="datetime64[ns, UTC]")
        else:
            numbers = pd.Series(col.to_numpy(dtype=float, na_value=np.nan), index=col.index)
            if pd.api.types.is_integer_dtype(col.dtype) and not col.isna().any():
                numbers = col.astype("int64")  # keeps ns precision that float would lose
            parsed = _from_epoch(numbers, epoch_unit)
            problems.add(
                ~missing & parsed.isna().to_numpy(),
                name,
                _values_at(col, lambda v: f"cannot convert {v!r} {epoch_unit} to a time"),
            )
    else:
        text = _as_text(col)
        missing = text.isna().to_numpy()
        if epoch_unit is not None:
            parsed = _from_epoch(_to_numbers(text, config), epoch_unit)
        else:
            parsed = _parse_text_times(text, name, tz, fmt, notes, source_file)
        problems.add(
            ~missing & parsed.isna().to_numpy(),
            name,
            _values_at(text, lambda v: f"cannot parse {_show(v)}"),
        )
    if required:
        problems.add(missing, name, "missing required value")
    return parsed


def _parse_text_times(
    text: pd.Series,
    name: str,
    tz: str,
    fmt: str | None,
    notes: list[str],
    source_file: str,
) -> pd.Series:
    """Parse text times to UTC; text without an explicit offset is local time in ``tz``."""
    if fmt is not None:
        has_offset = np.full(len(text), "%z" in fmt or "%Z" in fmt)
    else:
        has_offset = text.str.contains(_OFFSET_RE, regex=True).fillna(False).to_numpy(bool)
    if has_offset.all() or not has_offset.any():
        parsed = _parse_uniform_times(text, fmt)
    else:
        # pandas' ISO parser carries the last seen offset over to following naive strings, so
        # text with and without offsets is parsed separately.
        parsed = pd.concat(
            [
                _parse_uniform_times(text[has_offset], fmt),
                _parse_uniform_times(text[~has_offset], fmt),
            ]
        ).reindex(text.index)
    if tz == "UTC":
        return parsed
    # With utc=True naive text was read as UTC; re-read those wall times in the configured zone.
    naive = ~has_offset & parsed.notna().to_numpy()
    if not naive.any():
        return parsed
    wall = parsed.dt.tz_localize(None).where(naive)
    local = _localize(wall, tz, name, source_file, notes)
    return parsed.where(~naive, local)


def _parse_uniform_times(text: pd.Series, fmt: str | None) -> pd.Series:
    """Parse text that is all naive or all with offsets; fast ISO 8601 first, then flexible."""
    with warnings.catch_warnings():
        # Flexible parsing warns about guessed formats; the result is checked row by row anyway.
        warnings.simplefilter("ignore", UserWarning)
        parsed = pd.to_datetime(text, format=fmt or "ISO8601", utc=True, errors="coerce")
        if fmt is None:
            retry = (parsed.isna() & text.notna()).to_numpy()
            if retry.any():
                again = pd.to_datetime(text[retry], format="mixed", utc=True, errors="coerce")
                parsed = parsed.where(~retry, again.reindex(parsed.index))
    return _to_ns(parsed)[0]


def _ingest(
    frame: pd.DataFrame,
    config: DatasetConfig,
    source_file: str,
    seen: pd.DataFrame | None,
) -> tuple[IngestResult, pd.Series]:
    """Validate one source frame.

    ``valid`` is returned unsorted with Arrow-backed text (``_finish`` makes it user-facing).
    Also returns the transaction ids this frame introduces (indexed by source row), so later
    files of a glob can recognise duplicates through ``seen``.
    """
    if frame.columns.duplicated().any():
        dupes = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise DatasetError(f"{source_file}: duplicate column names {dupes}")
    frame = frame.reset_index(drop=True)
    resolved, missing_fields = _resolve_columns(frame.columns, config, source_file)
    source = {name: frame[col] for name, col in resolved.items()}
    problems = _Problems(len(frame))
    notes: list[str] = []

    out = _text_fields(source, problems)
    for name in _DATETIME_FIELDS:
        if name in source:
            out[name] = _datetime_field(source[name], name, config, problems, notes, source_file)
    out["amount"] = _amount(source["amount"], config, problems)
    if "age" in source:
        out["age"] = _age(source["age"], config, problems)
    elif "date_of_birth" in out:
        local_time = out["timestamp"].dt.tz_convert(config.timezone)
        out["age"] = _derived_age(local_time, out["date_of_birth"], problems)
        missing_fields.pop("age", None)
        notes.append("age: derived from date_of_birth as completed years at transaction time")
    if "is_fraud" in source:
        out["is_fraud"] = _labels(source["is_fraud"], config, problems)
    _label_times(out, config, problems, notes, missing_fields)
    new_ids = _duplicates(out["transaction_id"], seen, problems)

    bad = problems.bad
    valid = pd.DataFrame({name: out[name] for name in canonical_order(list(out))})
    if bad.any():
        valid = valid[~bad].reset_index(drop=True)
    result = IngestResult(
        valid=valid,
        rejects=_build_rejects(frame, bad, problems.reasons, source_file),
        missing_fields=missing_fields,
        notes=notes,
        source_files=[source_file],
        rows_read=len(frame),
    )
    return result, new_ids


def _text_fields(source: dict[str, pd.Series], problems: _Problems) -> dict[str, pd.Series]:
    """Strip every text field; check required ids, control characters and currency codes."""
    out: dict[str, pd.Series] = {}
    for name in _TEXT_FIELDS:
        if name not in source:
            continue
        text = _as_text(source[name])
        if FIELD_BY_NAME[name].required:
            problems.add(text.isna().to_numpy(), name, "missing required value")
        if name in _IDS:
            control = text.str.contains(_CONTROL_CHARS, regex=True).fillna(False).to_numpy(bool)
            problems.add(
                control, name, _values_at(text, lambda v: f"contains control characters {_show(v)}")
            )
        if name == "currency":
            text = text.str.upper()
            unknown = (~text.isin(CURRENCIES) & text.notna()).to_numpy(bool)
            problems.add(unknown, name, _values_at(text, lambda v: f"unknown code {_show(v)}"))
        out[name] = text
    return out


def _amount(col: pd.Series, config: DatasetConfig, problems: _Problems) -> pd.Series:
    """Amounts must be present, finite and not negative."""
    amount, missing, missing_text = _numeric_field(col, "amount", config, problems)
    problems.add(missing, "amount", missing_text)
    values = amount.to_numpy()
    problems.add(np.isinf(values), "amount", _values_at(amount, lambda v: f"infinite value {v}"))
    negative = np.isfinite(values) & (values < 0)
    problems.add(negative, "amount", _values_at(amount, lambda v: f"negative value {v}"))
    return amount


def _age(col: pd.Series, config: DatasetConfig, problems: _Problems) -> pd.Series:
    """Ages may be missing; present ones must lie within 0-120 years."""
    age, _, _ = _numeric_field(col, "age", config, problems)
    outside = ((age < 0) | (age > 120)).to_numpy()
    problems.add(outside, "age", _values_at(age, lambda v: f"outside 0-120: {v}"))
    return age


def _derived_age(local_time: pd.Series, born: pd.Series, problems: _Problems) -> pd.Series:
    """Completed years between birth and the (local) transaction date, checked to be 0-120."""
    before_birthday = (local_time.dt.month < born.dt.month) | (
        (local_time.dt.month == born.dt.month) & (local_time.dt.day < born.dt.day)
    )
    age = (local_time.dt.year - born.dt.year - before_birthday.astype(float)).astype(float)
    outside = ((age < 0) | (age > 120)).to_numpy()
    problems.add(
        outside,
        "age",
        _values_at(age, lambda v: f"derived from date_of_birth is {v}, outside 0-120"),
    )
    return age


def _labels(col: pd.Series, config: DatasetConfig, problems: _Problems) -> pd.Series:
    """Label text -> 1 / 0 / NA (empty means not labelled yet); other spellings are rejected."""
    # Labels have a handful of distinct values: normalise those, then broadcast by code.
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    spelled = _as_text(pd.Series(uniques)).str.lower()
    spelled = pd.concat([spelled, pd.Series([pd.NA], dtype=_STR)], ignore_index=True)
    codes = np.where(codes < 0, len(uniques), codes)  # the appended NA stands for missing
    is_fraud = spelled.isin([v.strip().lower() for v in config.fraud_values]).to_numpy(bool)
    is_genuine = spelled.isin([v.strip().lower() for v in config.genuine_values]).to_numpy(bool)
    known = (is_fraud | is_genuine)[codes]
    unknown = spelled.notna().to_numpy(bool)[codes] & ~known
    problems.add(
        unknown,
        "is_fraud",
        lambda pos: [f"unknown label {_show(spelled.iloc[c])}" for c in codes[pos]],
    )
    label = pd.arrays.IntegerArray(is_fraud[codes].astype("int8"), ~known)
    return pd.Series(label, index=col.index)


def _label_times(
    out: dict[str, pd.Series],
    config: DatasetConfig,
    problems: _Problems,
    notes: list[str],
    missing_fields: dict[str, str],
) -> None:
    """Check label_timestamp is not before the transaction, or fill it from label_delay_days."""
    if "label_timestamp" in out:
        labelled_at, happened_at = out["label_timestamp"], out["timestamp"]
        early = (labelled_at < happened_at).to_numpy(bool)
        problems.add(
            early,
            "label_timestamp",
            lambda pos: [
                f"{lt} is before timestamp {ts}"
                for lt, ts in zip(labelled_at.iloc[pos], happened_at.iloc[pos], strict=True)
            ],
        )
        if config.label_delay_days is not None:
            notes.append("label_delay_days ignored: the source has label_timestamp")
        return
    if config.label_delay_days is None:
        return
    if "is_fraud" not in out:
        notes.append("label_delay_days ignored: the source has no is_fraud labels")
        return
    delay = pd.Timedelta(days=config.label_delay_days)
    out["label_timestamp"] = (out["timestamp"] + delay).where(out["is_fraud"].notna())
    missing_fields.pop("label_timestamp", None)
    notes.append(
        f"label_timestamp: not in source; set to timestamp + {config.label_delay_days:g} days "
        "(label_delay_days) for labelled rows"
    )


def _duplicates(ids: pd.Series, seen: pd.DataFrame | None, problems: _Problems) -> pd.Series:
    """Reject repeated transaction ids (the first occurrence stays); return the new ids."""
    has_id = ids.notna().to_numpy()
    dup = ids.duplicated(keep="first").to_numpy() & has_id
    first = has_id & ~dup
    if dup.any():
        first_row = pd.Series(np.flatnonzero(first), index=ids[first].to_numpy())
        problems.add(
            dup,
            "transaction_id",
            lambda pos: [f"duplicate of source_row {r}" for r in ids.iloc[pos].map(first_row)],
        )
    if seen is not None and len(seen):
        earlier = ids.isin(seen.index).to_numpy(bool) & first
        problems.add(
            earlier,
            "transaction_id",
            lambda pos: [
                f"duplicate of source_row {seen.at[i, 'row']} in {seen.at[i, 'file']}"
                for i in ids.iloc[pos]
            ],
        )
        first &= ~earlier
    return ids[first]


def _build_rejects(
    frame: pd.DataFrame, bad: np.ndarray, reasons: np.ndarray, source_file: str
) -> pd.DataFrame:
    positions = np.flatnonzero(bad)
    meta = pd.DataFrame(
        {
            "source_file": source_file,
            "source_row": positions.astype("int64"),
            "reject_reason": reasons[positions].astype(str),
        }
    )
    raw = {}
    for col in frame.columns:
        # A source column that shares a name with our bookkeeping columns keeps its value.
        label = f"{col}_source" if str(col) in _META_COLUMNS else str(col)
        raw[label] = _raw_text(frame[col].iloc[positions]).to_numpy()
    return pd.concat([meta, pd.DataFrame(raw, index=meta.index)], axis=1)


def _finish(valid: pd.DataFrame) -> pd.DataFrame:
    """Canonical columns, schema order and dtypes, rows in the order of ``sort_canonical``.

    Arrow's stable multi-key sort gives the same permutation as the stable pandas mergesort in
    ``schema.sort_canonical`` (valid rows have no missing keys, and UTF-8 byte order is code
    point order) but is about ten times faster on a million unique ids.
    """
    order = np.arange(len(valid))
    if len(valid) > 1:
        keys = pa.table(
            {
                "timestamp": pa.array(valid["timestamp"].array),
                "transaction_id": pa.array(valid["transaction_id"].astype(_STR).array),
            }
        )
        order = pc.sort_indices(
            keys, sort_keys=[("timestamp", "ascending"), ("transaction_id", "ascending")]
        ).to_numpy()
    columns: dict[str, Any] = {}
    for name in canonical_order(valid.columns):
        kind = FIELD_BY_NAME[name].kind
        col = valid[name]
        if kind == "string":
            columns[name] = _object_strings(col, order, distinct=name != "transaction_id")
        elif kind == "datetime":
            columns[name] = col.astype("datetime64[ns, UTC]").array.take(order)
        elif kind == "float":
            columns[name] = col.to_numpy(dtype="float64", na_value=np.nan)[order]
        else:
            label = col.astype("Int8").array.take(order)
            columns[name] = label if label.isna().any() else label.astype("int8")
    return pd.DataFrame(columns, index=pd.RangeIndex(len(valid)))


def _object_strings(col: pd.Series, order: np.ndarray, distinct: bool) -> np.ndarray:
    """Text as a Python-object array (None when missing), reordered by ``order``.

    With ``distinct`` each distinct value becomes one shared Python string, which is faster and
    saves a lot of memory for columns such as currency or merchant_category.
    """
    arr = pa.array(col.astype(_STR).array)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not distinct:
        return arr.take(pa.array(order)).to_numpy(zero_copy_only=False)
    encoded = arr.dictionary_encode()
    uniques = np.append(encoded.dictionary.to_numpy(zero_copy_only=False), None)
    codes = pc.fill_null(encoded.indices, len(uniques) - 1).to_numpy()
    return uniques[codes[order]]


def _typed_missing(name: str, n: int) -> pd.Series:
    """An all-missing column with the dtype ``_ingest`` uses for this field."""
    kind = FIELD_BY_NAME[name].kind
    if kind == "string":
        return pd.Series(pd.NA, index=range(n), dtype=_STR)
    if kind == "datetime":
        return pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns, UTC]")
    if kind == "float":
        return pd.Series(np.nan, index=range(n), dtype="float64")
    return pd.Series(pd.NA, index=range(n), dtype="Int8")


def _concat_valid(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if len(parts) == 1:
        return parts[0]
    names = canonical_order([c for p in parts for c in p.columns])
    # A field absent from one file gets a typed empty column so concat keeps every dtype.
    aligned = [
        p.assign(
            **{c: _typed_missing(c, len(p)).set_axis(p.index) for c in names if c not in p.columns}
        )[names]
        for p in parts
    ]
    return pd.concat(aligned, ignore_index=True)


def _concat_rejects(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if len(parts) == 1:
        return parts[0]
    order: list[str] = []
    for part in parts:
        order.extend(c for c in part.columns if c not in order)
    non_empty = [p for p in parts if len(p)]
    if not non_empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in order}).astype(
            {"source_row": "int64"}
        )
    rejects = pd.concat([p.reindex(columns=order) for p in non_empty], ignore_index=True)
    source_columns = [c for c in order if c not in _META_COLUMNS]
    rejects[source_columns] = rejects[source_columns].fillna("")
    return rejects


def _merge_missing(per_file: list[dict[str, str]], files: list[str]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for f in FIELDS:
        absent_in = [
            file for file, missing in zip(files, per_file, strict=True) if f.name in missing
        ]
        if not absent_in:
            continue
        first_reason = next(m[f.name] for m in per_file if f.name in m)
        if len(absent_in) == len(files):
            merged[f.name] = first_reason
        else:
            merged[f.name] = (
                f"not in {len(absent_in)} of {len(files)} files ({', '.join(absent_in)}); "
                "those rows have no value"
            )
    return merged
