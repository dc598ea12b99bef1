"""Hostile input files for ingestion: every file gets a clear error or a quarantine with
its reason, good rows of a mixed file are kept, and random damage never escapes as
anything but `DatasetError`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from fraud_assets.core.ingest import DatasetConfig, DatasetError, IngestResult, ingest
from fraud_pipelines.resources import DatasetSource
from fraud_pipelines.sensors import landing_sensor

FUZZ_ROUNDS = 150


def rows(n: int, start: int = 0) -> pd.DataFrame:
    """A valid frame in the canonical column names."""
    ids = range(start, start + n)
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i:05d}" for i in ids],
            "timestamp": [f"2026-03-0{1 + i % 5} 1{i % 10}:00:00" for i in ids],
            "user_id": [f"u{i % 7}" for i in ids],
            "merchant_id": [f"Café-{i % 3}" for i in ids],
            "amount": [10.5 + i for i in ids],
            "currency": ["EUR"] * n,
            "is_fraud": ["1" if i % 9 == 0 else "0" for i in ids],
        }
    )


def config(path: Path, **extra: object) -> DatasetConfig:
    return DatasetConfig(name="fuzz", path=str(path), **extra)


def accounted(result: IngestResult) -> None:
    assert result.rows_read == len(result.valid) + len(result.rejects)
    if len(result.rejects):
        assert result.rejects["reject_reason"].str.len().gt(0).all()


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("random bytes", lambda b: np.random.default_rng(0).bytes(5000), "cannot read as Parquet"),
        ("first half", lambda b: b[: len(b) // 2], "cannot read as Parquet"),
        ("footer cut", lambda b: b[:-12], "cannot read as Parquet"),
        ("magic only", lambda b: b"PAR1" + b"\x00" * 64 + b"PAR1", "cannot read as Parquet"),
        ("footer length zero", lambda b: b[:-8] + b"\x00" * 4 + b"PAR1", "cannot read as Parquet"),
        ("footer length huge", lambda b: b[:-8] + b"\xff\xff\xff\x7f" + b"PAR1", "cannot read"),
        ("a CSV named .parquet", lambda b: b"transaction_id,amount\nt1,1\n", "cannot read"),
    ],
)
def test_corrupt_parquet_is_a_clear_error(
    tmp_path: Path, name: str, damage: object, message: str
) -> None:
    """A damaged Parquet file names itself and the problem, never a raw pyarrow traceback."""
    good = tmp_path / "good.parquet"
    rows(200).to_parquet(good)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(damage(good.read_bytes()))  # type: ignore[operator]
    with pytest.raises(DatasetError, match=message) as err:
        ingest(config(bad))
    assert "bad.parquet" in str(err.value), name


def test_truncated_csv(tmp_path: Path) -> None:
    """A CSV cut mid-row keeps every complete row; one cut inside a quoted field is refused."""
    text = rows(50).to_csv(index=False)
    mid_row = tmp_path / "mid_row.csv"
    lines = text.splitlines(keepends=True)
    mid_row.write_text("".join(lines[:-1]) + lines[-1][: lines[-1].index(",u") + 3])
    result = ingest(config(mid_row))
    accounted(result)
    assert len(result.valid) == 49 and len(result.rejects) == 1
    reason = result.rejects["reject_reason"].item()
    assert "merchant_id: missing required value" in reason
    assert "amount: missing required value" in reason
    in_quote = tmp_path / "in_quote.csv"
    in_quote.write_text(text + 't99999,"2026-03-01 10:00:00,u1,m1,1')
    with pytest.raises(DatasetError, match=r"in_quote\.csv: malformed CSV"):
        ingest(config(in_quote))


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ("utf-16", "UTF-16"),
        ("utf-16-le", "NUL byte"),
        ("latin-1", "cannot decode as utf-8"),
        ("cp1252", "cannot decode as utf-8"),
    ],
)
def test_wrong_encodings_are_named_and_the_config_fixes_them(
    tmp_path: Path, encoding: str, message: str
) -> None:
    """A file in another encoding gets an error saying which option to set, and that
    option reads it correctly: no value is silently mangled."""
    frame = rows(20)
    path = tmp_path / f"{encoding}.csv"
    path.write_bytes(frame.to_csv(index=False).encode(encoding))
    with pytest.raises(DatasetError, match=message) as err:
        ingest(config(path))
    assert path.name in str(err.value) and "encoding" in str(err.value)
    fixed = ingest(config(path, csv_options={"encoding": encoding}))
    accounted(fixed)
    assert sorted(fixed.valid["merchant_id"].unique()) == ["Café-0", "Café-1", "Café-2"]


def test_utf8_with_byte_order_mark_reads_cleanly(tmp_path: Path) -> None:
    """Spreadsheet exports often start with a BOM; the first column name must survive it."""
    path = tmp_path / "bom.csv"
    path.write_bytes(rows(10).to_csv(index=False).encode("utf-8-sig"))
    result = ingest(config(path))
    assert len(result.valid) == 10


def test_nul_bytes_are_refused_not_truncated(tmp_path: Path) -> None:
    """pandas ends a value at a NUL byte: 'm\\x001' would silently become 'm'."""
    path = tmp_path / "nul.csv"
    text = rows(10).to_csv(index=False).replace("Café-1", "Caf\x00-1")
    path.write_text(text)
    with pytest.raises(DatasetError, match=r"nul\.csv: NUL byte at line 3"):
        ingest(config(path))


def test_duplicated_transaction_ids_keep_the_first(tmp_path: Path) -> None:
    """Duplicates are rejects naming the first occurrence; the first row is kept."""
    frame = pd.concat([rows(30), rows(5), rows(2, start=3)], ignore_index=True)
    path = tmp_path / "dupes.csv"
    frame.to_csv(path, index=False)
    result = ingest(config(path))
    accounted(result)
    assert len(result.valid) == 30 and result.valid["transaction_id"].is_unique
    assert len(result.rejects) == 7
    assert result.rejects["reject_reason"].str.contains("duplicate").all()


def test_mapping_naming_missing_columns(tmp_path: Path) -> None:
    """A mapping to columns the file lacks names each missing column and the file."""
    path = tmp_path / "renamed.csv"
    rows(5).rename(columns={"amount": "amt"}).to_csv(path, index=False)
    with pytest.raises(DatasetError) as err:
        ingest(config(path, columns={"amount": "value_eur", "user_id": "customer"}))
    text = str(err.value)
    assert "renamed.csv" in text
    assert "'value_eur'" in text and "'customer'" in text


def test_random_damage_never_escapes_as_another_error(tmp_path: Path) -> None:
    """Flip, cut and splice random bytes of good CSV and Parquet files: each result is a
    DatasetError or an ingest result that accounts for every row it read."""
    rng = np.random.default_rng(2026)
    csv_bytes = rows(300).to_csv(index=False).encode()
    rows(300).to_parquet(tmp_path / "base.parquet")
    parquet_bytes = (tmp_path / "base.parquet").read_bytes()
    outcomes = {"error": 0, "ingested": 0}
    started = time.perf_counter()
    for i in range(FUZZ_ROUNDS):
        base, suffix = (csv_bytes, "csv") if i % 2 == 0 else (parquet_bytes, "parquet")
        data = bytearray(base)
        for _ in range(int(rng.integers(1, 8))):
            kind = rng.integers(0, 3)
            at = int(rng.integers(0, len(data)))
            if kind == 0:
                data[at] = int(rng.integers(0, 256))
            elif kind == 1:
                del data[at : at + int(rng.integers(1, 200))]
            else:
                data[at:at] = rng.bytes(int(rng.integers(1, 50)))
        path = tmp_path / f"fuzz{i}.{suffix}"
        path.write_bytes(bytes(data))
        try:
            result = ingest(config(path))
        except DatasetError as exc:
            assert path.name in str(exc)
            outcomes["error"] += 1
        else:
            accounted(result)
            outcomes["ingested"] += 1
    from test_prediction_spool import record_figure

    record_figure(
        "ingest_fuzz",
        files=FUZZ_ROUNDS,
        seconds=round(time.perf_counter() - started, 1),
        **outcomes,
    )


def _old(path: Path) -> Path:
    past = time.time() - 60
    os.utime(path, (past, past))
    return path


def test_landing_sensor_quarantines_with_reasons_and_keeps_good_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad drops go to quarantine with a reason file; a mixed file is accepted with its good
    rows, and its bad rows are named for the ingestion run to write to the rejects file."""
    monkeypatch.setenv("FRAUD_HOME", str(tmp_path / "home"))
    (tmp_path / "dataset.yaml").write_text(f"name: landing\npath: {tmp_path / 'unused.csv'}\n")
    landing = tmp_path / "home" / "landing"
    landing.mkdir(parents=True)
    mixed = rows(40).astype(object)
    mixed.loc[3, "amount"] = "-7"
    mixed.loc[8, "timestamp"] = "not a time"
    mixed.loc[9, "transaction_id"] = "t00000"
    mixed.to_csv(landing / "mixed.csv", index=False)
    (landing / "utf16.csv").write_bytes(rows(5).to_csv(index=False).encode("utf-16"))
    (landing / "corrupt.parquet").write_bytes(b"PAR1" + b"\x01" * 100 + b"PAR1")
    (landing / "truncated.csv").write_text('transaction_id,timestamp\n"t1,2026')
    all_bad = rows(4).assign(amount="-1")
    all_bad.to_csv(landing / "all_bad.csv", index=False)
    for file in landing.iterdir():
        _old(file)
    context = dg.build_sensor_context(
        resources={"dataset": DatasetSource(config_path=str(tmp_path / "dataset.yaml"))}
    )
    result = landing_sensor(context)
    assert [r.tags["fraud/landed_file"] for r in result.run_requests] == ["mixed.csv"]
    assert (landing / "accepted" / "mixed.csv").exists()
    quarantine = landing / "quarantine"
    expected = {
        "utf16.csv": "UTF-16",
        "corrupt.parquet": "cannot read as Parquet",
        "truncated.csv": "malformed CSV",
        "all_bad.csv": "no valid rows",
    }
    for name, reason in expected.items():
        assert (quarantine / name).exists(), name
        assert reason in (quarantine / f"{name}.reason.txt").read_text(), name
    assert "amount" in (quarantine / "all_bad.csv.reason.txt").read_text()
    assert not [p for p in landing.iterdir() if p.is_file()]
    accepted = ingest(config(landing / "accepted" / "mixed.csv"))
    assert len(accepted.valid) == 37
    assert sorted(accepted.rejects["source_row"]) == [3, 8, 9]
