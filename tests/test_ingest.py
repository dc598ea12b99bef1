"""Tests for bring-your-own-data ingestion (fraud_assets.core.ingest)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest

from fraud_assets.core.ingest import (
    DatasetConfig,
    DatasetError,
    IngestResult,
    ingest,
    ingest_frame,
    load_dataset_config,
    write_rejects,
)
from fraud_assets.core.schema import FIELDS, sort_canonical

REPO = Path(__file__).resolve().parents[1]


def canonical_rows(n: int = 4, start: int = 0) -> pd.DataFrame:
    """A small, fully valid frame using the canonical column names."""
    ids = range(start, start + n)
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i:04d}" for i in ids],
            "timestamp": [f"2024-03-0{1 + i % 5} 1{i % 10}:00:00" for i in ids],
            "user_id": [f"00{i % 3}" for i in ids],
            "merchant_id": [f"m{i % 2}" for i in ids],
            "amount": [10.5 + i for i in ids],
            "currency": ["EUR"] * n,
            "is_fraud": ["0" if i % 2 else "1" for i in ids],
        }
    )


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def config_for(path: Path | str, **overrides: object) -> DatasetConfig:
    return DatasetConfig(name="test", path=str(path), **overrides)


def assert_accounted(result: IngestResult) -> None:
    assert result.rows_read == len(result.valid) + len(result.rejects)


def reasons_by_row(result: IngestResult) -> dict[int, str]:
    return dict(zip(result.rejects["source_row"], result.rejects["reject_reason"], strict=True))


def test_identity_mapping_round_trip_parquet(tmp_path: Path) -> None:
    """Canonical data must come back unchanged, typed and in canonical order."""
    frame = canonical_rows(6)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    frame["is_fraud"] = frame["is_fraud"].astype("int8")
    frame.to_parquet(tmp_path / "tx.parquet", index=False)

    result = ingest(config_for(tmp_path / "tx.parquet"))

    assert result.rejects.empty
    assert result.rows_read == 6
    assert result.source_files == [str(tmp_path / "tx.parquet")]
    valid = result.valid
    assert list(valid.columns) == [
        f.name for f in FIELDS if f.name in frame.columns
    ]  # schema order
    assert valid["timestamp"].dtype == "datetime64[ns, UTC]"
    assert valid["amount"].dtype == "float64"
    assert valid["is_fraud"].dtype == "int8"
    assert valid["transaction_id"].dtype == object
    assert all(isinstance(v, str) for v in valid["user_id"])
    assert valid.equals(sort_canonical(valid))
    expected = frame.assign(timestamp=frame["timestamp"].dt.tz_localize("UTC"))
    expected = sort_canonical(expected)[valid.columns]
    pd.testing.assert_frame_equal(valid, expected, check_dtype=False)


def test_identity_mapping_round_trip_csv_keeps_text_ids(tmp_path: Path) -> None:
    """CSV ids such as '007' must not be turned into numbers."""
    path = write_csv(tmp_path / "tx.csv", canonical_rows(4))
    result = ingest(config_for(path))
    assert result.rejects.empty
    assert set(result.valid["user_id"]) == {"000", "001", "002"}
    assert result.valid["is_fraud"].tolist() == [1, 0, 1, 0]


def test_valid_rows_sorted_like_sort_canonical() -> None:
    """Feature code assumes time-then-id order; ties in time must be broken by id."""
    frame = canonical_rows(5)
    frame["timestamp"] = "2024-03-01 10:00:00"
    frame["transaction_id"] = ["b", "a", "é", "B", "a2"]
    result = ingest_frame(frame.iloc[::-1], config_for("unused"))
    assert result.valid["transaction_id"].tolist() == ["B", "a", "a2", "b", "é"]
    assert result.valid.equals(sort_canonical(result.valid))


def test_renamed_columns_are_mapped(tmp_path: Path) -> None:
    """Users' own column names must reach the canonical fields."""
    source = canonical_rows(3).rename(
        columns={"transaction_id": "txn_ref", "timestamp": "event_time", "user_id": "card_hash"}
    )
    source["transaction_id"] = "not the id"  # the explicit mapping must win over this column
    path = write_csv(tmp_path / "tx.csv", source)
    mapping = {"transaction_id": "txn_ref", "timestamp": "event_time", "user_id": "card_hash"}
    config = config_for(path, columns=mapping)
    result = ingest(config)
    assert result.rejects.empty
    assert result.valid["transaction_id"].tolist() == ["t0000", "t0001", "t0002"]
    assert "card_hash" not in result.valid.columns
    assert result.valid["user_id"].tolist() == ["000", "001", "002"]


def test_optional_field_absent_is_reported_not_an_error(tmp_path: Path) -> None:
    """Missing optional data should degrade features, not stop the pipeline."""
    path = write_csv(tmp_path / "tx.csv", canonical_rows(3).drop(columns=["currency", "is_fraud"]))
    result = ingest(config_for(path))
    assert len(result.valid) == 3
    assert "device_id" in result.missing_fields
    assert "features needing it are skipped" in result.missing_fields["device_id"]
    assert "currency" in result.missing_fields
    assert "unlabelled" in result.missing_fields["is_fraud"]
    assert "device_id" not in result.valid.columns


def test_missing_required_column_names_file_and_column(tmp_path: Path) -> None:
    """A dataset without amounts is unusable and the user must see which column is missing."""
    path = write_csv(tmp_path / "no_amount.csv", canonical_rows(3).drop(columns="amount"))
    with pytest.raises(DatasetError) as err:
        ingest(config_for(path))
    message = str(err.value)
    assert "no_amount.csv" in message
    assert "'amount'" in message
    assert "transaction_id" in message  # lists the available columns


def test_mapping_to_unknown_source_column_names_it(tmp_path: Path) -> None:
    """A typo in the mapping must point at the typo, not fail later with a KeyError."""
    source = canonical_rows(3).rename(columns={"amount": "amount_eur"})
    path = write_csv(tmp_path / "tx.csv", source)
    with pytest.raises(DatasetError) as err:
        ingest(config_for(path, columns={"amount": "amount_euro"}))
    message = str(err.value)
    assert "'amount_euro'" in message
    assert "tx.csv" in message
    assert "amount_eur" in message  # in the list of available columns / did-you-mean


def test_unknown_canonical_key_is_a_config_error(tmp_path: Path) -> None:
    """Mapping onto a field the schema does not have is a config mistake, caught up front."""
    yaml_path = tmp_path / "ds.yaml"
    yaml_path.write_text("name: x\npath: tx.csv\ncolumns:\n  amout: amount_eur\n")
    with pytest.raises(DatasetError) as err:
        load_dataset_config(yaml_path)
    message = str(err.value)
    assert str(yaml_path) in message
    assert "'amout'" in message
    assert "transaction_id" in message  # lists the valid names
    with pytest.raises(pydantic.ValidationError, match="amout"):
        DatasetConfig(name="x", path="tx.csv", columns={"amout": "a"})


def test_config_relative_path_resolves_against_yaml_folder(tmp_path: Path) -> None:
    """Configs must work no matter which directory the pipeline is started from."""
    (tmp_path / "datasets").mkdir()
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "tx.csv", canonical_rows(2))
    yaml_path = tmp_path / "datasets" / "mine.yaml"
    yaml_path.write_text("name: mine\npath: ../data/tx.csv\ncolumns:\n")
    config = load_dataset_config(yaml_path)
    assert Path(config.path) == tmp_path / "data" / "tx.csv"
    assert len(ingest(config).valid) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\npath: a.csv\nlabel_delay_days: soon\n", "label_delay_days"),
        ("name: x\npath: a.csv\nformat: xlsx\n", "format"),
        ("name: x\npath: a.csv\ntimezone: Mars/Olympus\n", "timezone"),
        ("name: x\npath: a.csv\nsheet: 1\n", "sheet"),
        ("path: a.csv\n", "name"),
        ("name: x\npath: [unclosed\n", "invalid YAML"),
        ("- just\n- a list\n", "mapping"),
    ],
)
def test_invalid_config_names_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    """Config mistakes must say which file and which key is wrong."""
    yaml_path = tmp_path / "bad.yaml"
    yaml_path.write_text(text)
    with pytest.raises(DatasetError) as err:
        load_dataset_config(yaml_path)
    assert str(yaml_path) in str(err.value)
    assert expected in str(err.value)


def test_yaml_label_spellings_survive_yaml_booleans(tmp_path: Path) -> None:
    """YAML reads `yes` and `1` as bool/int; the label must still match the user's text."""
    yaml_path = tmp_path / "ds.yaml"
    yaml_path.write_text("name: x\npath: a.csv\nfraud_values: [yes, 1]\ngenuine_values: [no, 0]\n")
    config = load_dataset_config(yaml_path)
    assert {"yes", "1"} <= set(config.fraud_values)
    assert {"no", "0"} <= set(config.genuine_values)


def test_missing_config_file(tmp_path: Path) -> None:
    """A wrong config path must fail with the path, not a bare FileNotFoundError."""
    with pytest.raises(DatasetError, match=r"nope\.yaml"):
        load_dataset_config(tmp_path / "nope.yaml")


def test_bundled_synthetic_config_loads() -> None:
    """The default dataset config must stay valid and point at the synthetic parquet."""
    config = load_dataset_config(REPO / "datasets" / "synthetic.yaml")
    assert config.name == "synthetic"
    assert config.format == "parquet"
    assert config.columns == {}
    assert Path(config.path) == REPO / "data" / "raw" / "synthetic.parquet"


def test_bundled_example_custom_config_works(tmp_path: Path) -> None:
    """The example users copy from must actually ingest the CSV it describes."""
    (tmp_path / "datasets").mkdir()
    shutil.copy(REPO / "datasets" / "example_custom.yaml", tmp_path / "datasets")
    (tmp_path / "data" / "raw" / "acme").mkdir(parents=True)
    text = (
        "txn_ref;event_time;card_hash;shop;mcc_group;amount_eur;ccy;label;chargeback_date\n"
        "A-1001;03.02.2024 14:05;9f2c;M-77;épicerie;12,50;EUR;0;\n"
        "A-1002;03.02.2024 14:07;41aa;M-12;electronics;899,00;EUR;chargeback;24.02.2024 09:00\n"
    )
    (tmp_path / "data" / "raw" / "acme" / "transactions_2024-02.csv").write_bytes(
        text.encode("cp1252")
    )
    result = ingest(load_dataset_config(tmp_path / "datasets" / "example_custom.yaml"))
    assert result.rejects.empty, result.rejects["reject_reason"].tolist()
    valid = result.valid
    assert valid["amount"].tolist() == [12.5, 899.0]
    assert valid["merchant_category"].tolist() == ["épicerie", "electronics"]
    assert valid["is_fraud"].tolist() == [0, 1]
    # 14:05 in Berlin in winter is 13:05 UTC.
    assert valid["timestamp"].iloc[0] == pd.Timestamp("2024-02-03 13:05", tz="UTC")


def test_file_not_found_and_empty_glob(tmp_path: Path) -> None:
    """A wrong path must be reported as such, with the path."""
    with pytest.raises(DatasetError, match="not found"):
        ingest(config_for(tmp_path / "missing.csv"))
    with pytest.raises(DatasetError, match="no files match"):
        ingest(config_for(tmp_path / "*.parquet"))


def test_empty_files_raise(tmp_path: Path) -> None:
    """Empty exports happen; they must fail loudly rather than train on nothing."""
    (tmp_path / "zero.csv").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"zero\.csv.*0 bytes"):
        ingest(config_for(tmp_path / "zero.csv"))
    write_csv(tmp_path / "header.csv", canonical_rows(0))
    with pytest.raises(DatasetError, match=r"header\.csv.*no data rows"):
        ingest(config_for(tmp_path / "header.csv"))
    canonical_rows(0).to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(DatasetError, match=r"empty\.parquet.*no data rows"):
        ingest(config_for(tmp_path / "empty.parquet"))


def test_corrupt_parquet_raises_naming_file(tmp_path: Path) -> None:
    """A damaged file must produce a clear error, not a pyarrow traceback."""
    rng = np.random.default_rng(0)
    (tmp_path / "noise.parquet").write_bytes(rng.bytes(2048))
    with pytest.raises(DatasetError, match=r"noise\.parquet.*cannot read as Parquet"):
        ingest(config_for(tmp_path / "noise.parquet"))

    canonical_rows(50).to_parquet(tmp_path / "whole.parquet")
    data = (tmp_path / "whole.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"cut\.parquet.*cannot read as Parquet"):
        ingest(config_for(tmp_path / "cut.parquet"))


def test_wrong_encoding_raises_with_hint_and_config_fixes_it(tmp_path: Path) -> None:
    """Latin-1 exports are common; the error must say how to fix it."""
    frame = canonical_rows(2).assign(merchant_id=["Café Müller", "Bäckerei"])
    path = tmp_path / "latin.csv"
    path.write_bytes(frame.to_csv(index=False).encode("latin-1"))
    with pytest.raises(DatasetError) as err:
        ingest(config_for(path))
    assert "latin.csv" in str(err.value)
    assert "encoding" in str(err.value)
    result = ingest(config_for(path, csv_options={"encoding": "latin-1"}))
    assert sorted(result.valid["merchant_id"]) == ["Bäckerei", "Café Müller"]


def test_csv_rows_longer_than_header_raise(tmp_path: Path) -> None:
    """pandas would silently shift such rows into an index; that must not pass as valid data."""
    path = tmp_path / "shifted.csv"
    path.write_text(
        "transaction_id,timestamp,user_id,merchant_id,amount\nt1,2024-01-01,u,m,1,extra\n"
    )
    with pytest.raises(DatasetError, match=r"shifted\.csv.*more fields than the header"):
        ingest(config_for(path))


def test_parquet_with_saved_pandas_index_keeps_that_column(tmp_path: Path) -> None:
    """A frame saved with transaction_id as its index must still provide transaction_id."""
    canonical_rows(3).set_index("transaction_id").to_parquet(tmp_path / "indexed.parquet")
    result = ingest(config_for(tmp_path / "indexed.parquet"))
    assert result.valid["transaction_id"].tolist() == ["t0000", "t0001", "t0002"]


def test_unknown_suffix_needs_explicit_format(tmp_path: Path) -> None:
    """Auto-detection must not guess on unknown suffixes."""
    path = write_csv(tmp_path / "tx.dat", canonical_rows(2))
    with pytest.raises(DatasetError, match="format"):
        ingest(config_for(path))
    assert len(ingest(config_for(path, format="csv")).valid) == 2


def test_text_in_amount_rejects_only_those_rows(tmp_path: Path) -> None:
    """One bad value must not cost the whole file."""
    frame = canonical_rows(4).astype({"amount": object})
    frame.loc[1, "amount"] = "twelve"
    result = ingest(config_for(write_csv(tmp_path / "tx.csv", frame)))
    assert len(result.valid) == 3
    assert reasons_by_row(result) == {1: "amount: not a number 'twelve'"}
    assert_accounted(result)


def test_amount_column_all_text_rejects_every_row_without_crashing(tmp_path: Path) -> None:
    """A wrongly mapped column is a data problem the user can inspect in the rejects."""
    frame = canonical_rows(3).assign(amount=["a", "b", "c"])
    frame.to_parquet(tmp_path / "tx.parquet")
    result = ingest(config_for(tmp_path / "tx.parquet"))
    assert result.valid.empty
    assert list(result.valid.columns)[:2] == ["transaction_id", "timestamp"]
    assert result.rejects["reject_reason"].str.startswith("amount: not a number").all()
    assert_accounted(result)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("amount", "-3.0", "amount: negative value -3.0"),
        ("amount", "NaN", "amount: NaN value"),
        ("amount", "inf", "amount: infinite value inf"),
        ("amount", "", "amount: missing required value"),
        ("currency", "XYZ", "currency: unknown code 'XYZ'"),
        ("timestamp", "abc", "timestamp: cannot parse 'abc'"),
        ("timestamp", "", "timestamp: missing required value"),
        ("user_id", "   ", "user_id: missing required value"),
        ("merchant_id", "m\x00x", "merchant_id: contains control characters 'm\\x00x'"),
        ("is_fraud", "maybe", "is_fraud: unknown label 'maybe'"),
        ("age", "150", "age: outside 0-120: 150.0"),
        ("age", "-1", "age: outside 0-120: -1.0"),
        ("label_timestamp", "2024-02-01 00:00:00", "label_timestamp: 2024-02-01 00:00:00+00:00"),
        ("label_timestamp", "soon", "label_timestamp: cannot parse 'soon'"),
    ],
)
def test_bad_values_are_rejected_with_reason(column: str, value: str, reason: str) -> None:
    """Each rule must reject the offending row and say why."""
    frame = canonical_rows(3).assign(age="40", label_timestamp="2024-03-20 00:00:00")
    frame[column] = frame[column].astype(object)
    frame.loc[1, column] = value
    result = ingest_frame(frame, config_for("unused"))
    assert reasons_by_row(result)[1].startswith(reason)
    assert len(result.valid) == 2
    assert_accounted(result)


def test_typed_nan_and_inf_amounts_are_rejected() -> None:
    """Parquet floats can hold NaN and inf directly, not only as text."""
    frame = canonical_rows(4).assign(amount=[1.0, np.nan, np.inf, -np.inf])
    result = ingest_frame(frame, config_for("unused"))
    assert reasons_by_row(result) == {
        1: "amount: missing or NaN value",
        2: "amount: infinite value inf",
        3: "amount: infinite value -inf",
    }


def test_every_reason_of_a_row_is_listed() -> None:
    """Users fix data faster when they see all problems of a row at once."""
    frame = canonical_rows(2).astype(object)
    frame.loc[0, ["amount", "currency", "timestamp"]] = ["-1", "ABC", "yesterday"]
    result = ingest_frame(frame, config_for("unused"))
    assert reasons_by_row(result)[0] == (
        "currency: unknown code 'ABC'; timestamp: cannot parse 'yesterday'; "
        "amount: negative value -1.0"
    )


def test_duplicate_transaction_id_keeps_first() -> None:
    """Double-counted transactions would bias training; the repeat is rejected, not merged."""
    frame = canonical_rows(4)
    frame.loc[3, "transaction_id"] = frame.loc[1, "transaction_id"]
    result = ingest_frame(frame, config_for("unused"))
    assert reasons_by_row(result) == {3: "transaction_id: duplicate of source_row 1"}
    assert sorted(result.valid["transaction_id"]) == ["t0000", "t0001", "t0002"]


def test_empty_label_means_unknown_and_values_are_configurable() -> None:
    """Recent transactions are not labelled yet; they must be kept with an NA label."""
    frame = canonical_rows(4).assign(is_fraud=["Chargeback", "", "ok", " OK "])
    config = config_for("unused", fraud_values=["chargeback"], genuine_values=["ok"])
    result = ingest_frame(frame, config)
    assert result.rejects.empty
    assert result.valid["is_fraud"].dtype == "Int8"
    assert result.valid["is_fraud"].tolist() == [1, pd.NA, 0, 0]


def test_label_values_in_both_lists_are_a_config_error() -> None:
    """An ambiguous label spelling cannot be resolved row by row."""
    with pytest.raises(pydantic.ValidationError, match="both fraud and genuine"):
        DatasetConfig(name="x", path="a.csv", fraud_values=["1", "x"], genuine_values=["X"])


def test_mixed_file_keeps_good_rows_and_accounts_for_every_row(tmp_path: Path) -> None:
    """Nothing may be dropped silently: every row read is either valid or a reject."""
    frame = canonical_rows(8).astype(object)
    frame.loc[2, "amount"] = "-5"
    frame.loc[5, "timestamp"] = "31/31/2024"
    frame.loc[6, "transaction_id"] = "t0000"
    path = write_csv(tmp_path / "mixed.csv", frame)
    result = ingest(config_for(path))
    assert result.rows_read == 8
    assert_accounted(result)
    assert len(result.valid) == 5
    rejects = result.rejects
    assert rejects["source_row"].tolist() == [2, 5, 6]
    assert (rejects["source_file"] == str(path)).all()
    # Original source values, as text, for the user to fix upstream.
    assert rejects.loc[rejects["source_row"] == 5, "timestamp"].item() == "31/31/2024"
    assert rejects.loc[rejects["source_row"] == 2, "amount"].item() == "-5"
    assert set(rejects.columns) >= {"source_file", "source_row", "reject_reason", *frame.columns}


def test_ingest_frame_reports_positions_for_any_index() -> None:
    """source_row must be the row position even when the frame has its own index."""
    frame = canonical_rows(3).set_index(pd.Index([10, 20, 30]))
    frame.loc[20, "amount"] = -1.0
    result = ingest_frame(frame, config_for("unused"), source_file="batch-7")
    assert result.rejects["source_row"].tolist() == [1]
    assert result.rejects["source_file"].tolist() == ["batch-7"]
    assert result.valid.index.tolist() == [0, 1]


def test_glob_reads_all_files_and_rejects_cross_file_duplicates(tmp_path: Path) -> None:
    """Monthly exports are common; duplicates across them must be caught like within one."""
    write_csv(tmp_path / "part-1.csv", canonical_rows(3, start=0))
    canonical_rows(3, start=3).to_parquet(tmp_path / "part-2.parquet")
    third = canonical_rows(2, start=6).drop(columns="currency")
    third.loc[1, "transaction_id"] = "t0001"
    write_csv(tmp_path / "part-3.csv", third)

    result = ingest(config_for(tmp_path / "part-*"))

    assert [Path(f).name for f in result.source_files] == [
        "part-1.csv",
        "part-2.parquet",
        "part-3.csv",
    ]
    assert result.rows_read == 8
    assert_accounted(result)
    assert len(result.valid) == 7
    reject = result.rejects.iloc[0]
    assert reject["source_file"].endswith("part-3.csv")
    assert reject["source_row"] == 1
    assert reject["reject_reason"] == (
        f"transaction_id: duplicate of source_row 1 in {tmp_path / 'part-1.csv'}"
    )
    assert "1 of 3 files" in result.missing_fields["currency"]
    assert result.valid["currency"].isna().sum() == 1
    assert result.valid.equals(sort_canonical(result.valid))


def test_naive_timestamps_are_localized_from_config_timezone() -> None:
    """Local export times must land on the right UTC instant for time-based features."""
    frame = canonical_rows(3).assign(
        timestamp=["2024-07-01 12:00:00", "2024-01-15 12:00:00", "2024-07-01T12:00:00+00:00"]
    )
    result = ingest_frame(frame, config_for("unused", timezone="Europe/Berlin"))
    by_id = result.valid.set_index("transaction_id")["timestamp"]
    assert by_id["t0000"] == pd.Timestamp("2024-07-01 10:00", tz="UTC")  # CEST, UTC+2
    assert by_id["t0001"] == pd.Timestamp("2024-01-15 11:00", tz="UTC")  # CET, UTC+1
    assert by_id["t0002"] == pd.Timestamp("2024-07-01 12:00", tz="UTC")  # explicit offset


@pytest.mark.parametrize("timezone", ["UTC", "Europe/Berlin"])
def test_mixed_naive_and_offset_timestamps(timezone: str) -> None:
    """An offset on one row must not leak into the next naive row (a pandas ISO parser trap)."""
    frame = canonical_rows(3).assign(
        timestamp=["2024-01-01 10:00:00+02:00", "2024-01-02 10:00:00", "2024-01-03T10:00:00Z"]
    )
    result = ingest_frame(frame, config_for("unused", timezone=timezone))
    naive_local = pd.Timestamp("2024-01-02 10:00", tz=timezone).tz_convert("UTC")
    assert result.valid["timestamp"].tolist() == [
        pd.Timestamp("2024-01-01 08:00", tz="UTC"),
        naive_local,
        pd.Timestamp("2024-01-03 10:00", tz="UTC"),
    ]


def test_dst_gaps_and_overlaps_are_kept_and_noted() -> None:
    """An hour of data a year must not vanish because of daylight-saving changes."""
    frame = canonical_rows(2).assign(timestamp=["2024-03-31 02:30:00", "2024-10-27 02:30:00"])
    result = ingest_frame(frame, config_for("unused", timezone="Europe/Berlin"))
    assert result.rejects.empty
    assert any("DST" in note for note in result.notes)


def test_timestamp_format_and_epoch_units() -> None:
    """Day-first strings and epoch numbers are frequent in exports."""
    frame = canonical_rows(2).assign(timestamp=["02/01/2024 10:00", "13/01/2024 11:30"])
    result = ingest_frame(frame, config_for("unused", timestamp_format="%d/%m/%Y %H:%M"))
    assert result.valid["timestamp"].tolist() == [
        pd.Timestamp("2024-01-02 10:00", tz="UTC"),
        pd.Timestamp("2024-01-13 11:30", tz="UTC"),
    ]
    epoch = canonical_rows(2).assign(timestamp=[1_700_000_000_000, 1_700_000_060_000])
    result = ingest_frame(epoch, config_for("unused", timestamp_unit="ms"))
    assert result.valid["timestamp"].iloc[0] == pd.Timestamp("2023-11-14 22:13:20", tz="UTC")
    without_unit = ingest_frame(epoch, config_for("unused"))
    assert without_unit.rejects["reject_reason"].str.contains("timestamp_unit").all()


def test_label_delay_days_fills_label_timestamp() -> None:
    """Without label times the training cut-off would leak future labels."""
    frame = canonical_rows(3).assign(is_fraud=["1", "", "0"])
    result = ingest_frame(frame, config_for("unused", label_delay_days=30))
    valid = result.valid.set_index("transaction_id")
    assert valid.loc["t0000", "label_timestamp"] == valid.loc["t0000", "timestamp"] + pd.Timedelta(
        days=30
    )
    assert pd.isna(valid.loc["t0001", "label_timestamp"])  # no label, no label time
    assert "label_timestamp" not in result.missing_fields
    assert any("label_delay_days" in note and "30" in note for note in result.notes)


def test_age_is_derived_from_date_of_birth() -> None:
    """Bias reports need age; many sources only store the birth date."""
    frame = canonical_rows(3).assign(
        timestamp=["2024-03-01 10:00:00", "2024-03-02 10:00:00", "2024-03-03 10:00:00"],
        date_of_birth=["1990-03-02", "1990-03-02", "2030-01-01"],
    )
    result = ingest_frame(frame, config_for("unused"))
    valid = result.valid.set_index("transaction_id")
    assert valid.loc["t0000", "age"] == 33.0  # the day before the birthday
    assert valid.loc["t0001", "age"] == 34.0  # on the birthday
    assert reasons_by_row(result)[2].startswith("age: derived from date_of_birth")
    assert "age" not in result.missing_fields
    assert any("date_of_birth" in note for note in result.notes)


def test_write_rejects_writes_reasons(tmp_path: Path) -> None:
    """Rejects are only useful if users can open them next to their source data."""
    frame = canonical_rows(3)
    frame.loc[0, "amount"] = -2.5
    result = ingest_frame(frame, config_for("unused"))
    written = write_rejects(result, tmp_path / "out" / "rejects.csv")
    assert written == tmp_path / "out" / "rejects.csv"
    back = pd.read_csv(written, dtype=str)
    assert back["reject_reason"].tolist() == ["amount: negative value -2.5"]
    assert back["source_row"].tolist() == ["0"]
    assert back["transaction_id"].tolist() == ["t0000"]

    clean = ingest_frame(canonical_rows(2), config_for("unused"))
    assert write_rejects(clean, tmp_path / "none.csv") is None
    assert not (tmp_path / "none.csv").exists()
