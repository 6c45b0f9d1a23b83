"""Reading files, globs and folders in every supported format."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from common import ROOT
from polars.testing import assert_frame_equal

from pipeline.core.config import CsvReading
from pipeline.core.errors import DataError
from pipeline.data import ingest
from pipeline.data.ingest import iter_file_batches, read_file, resolve_sources, write_frame

FRAME = pl.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "x"], "c": [10, 20, 30]})


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".ndjson", ".arrow"])
def test_every_format_reads_back_the_same_frame(tmp_path: Path, suffix: str) -> None:
    path = write_frame(FRAME, tmp_path / f"t{suffix}")
    assert_frame_equal(read_file(path), FRAME)


def test_read_file_reads_only_requested_columns(tmp_path: Path) -> None:
    path = write_frame(FRAME, tmp_path / "t.parquet")
    assert read_file(path, ["c", "a"]).columns == ["c", "a"]


def test_semicolon_csv_is_sniffed(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a;b\n1;2\n3;4\n")
    assert read_file(path).to_dict(as_series=False) == {"a": [1, 3], "b": [2, 4]}


def test_folder_and_glob_resolve_to_sorted_known_files(tmp_path: Path) -> None:
    for name in ["b.csv", "a.parquet", "notes.txt", ".hidden.csv", "_partial.csv"]:
        (tmp_path / name).write_text("a\n1\n")
    assert [p.name for p in resolve_sources(tmp_path)] == ["a.parquet", "b.csv"]
    # A glob is taken as written (hidden files excluded, as Python's glob does).
    assert [p.name for p in resolve_sources(tmp_path / "*.csv")] == ["_partial.csv", "b.csv"]


def test_glob_matching_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="matched no file"):
        resolve_sources(tmp_path / "*.parquet")


def test_unknown_format_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match=r"data\.xlsx.*unsupported format '\.xlsx'"):
        resolve_sources(path)


def test_batches_cover_every_row_once(tmp_path: Path) -> None:
    big = pl.DataFrame({"a": range(10_000), "b": range(10_000)})
    path = write_frame(big, tmp_path / "big.parquet")
    batches = list(iter_file_batches(path, ["a"], batch_rows=1_000))
    assert sum(b.height for b in batches) == 10_000
    assert pl.concat(batches)["a"].to_list() == list(range(10_000))


def test_write_frame_leaves_no_temporary_file(tmp_path: Path) -> None:
    write_frame(FRAME, tmp_path / "out.parquet")
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


def test_sampled_read_keeps_every_nth_row_with_the_streaming_engine(tmp_path: Path) -> None:
    frame = pl.DataFrame({"a": range(50_000), "b": [float(i) / 3 for i in range(50_000)]})
    frame.write_csv(tmp_path / "big.csv")
    assert ingest.count_rows(tmp_path / "big.csv") == 50_000
    sample = ingest.read_file(tmp_path / "big.csv", ["a"], every=10)
    assert sample["a"].to_list() == list(range(0, 50_000, 10))


def test_training_with_max_rows_reads_an_even_sample(tmp_path: Path) -> None:
    from pipeline.core.config import load_config
    from pipeline.training.fit import _sampling_step, load_training_set

    history = pl.read_csv(ROOT / "data" / "tabular" / "history.csv")
    pl.concat([history] * 4).write_parquet(tmp_path / "history.parquet")
    config = load_config(ROOT / "data" / "tabular.toml", train={"max_rows": 1_000})
    assert _sampling_step([tmp_path / "history.parquet"], config) == 4 * history.height // 1_000  # thinned while read
    data = load_training_set(tmp_path / "history.parquet", config)
    assert len(data.x) == 1_000


def test_an_arrow_files_column_names_are_read_from_its_footer_as_pyarrow_reads_them(tmp_path: Path) -> None:
    """The scoring install reads them without pyarrow (repeated names are what polars folds)."""
    import pyarrow as pa
    import pyarrow.feather as feather

    table = pa.table({f"größe_{i}": [1.0] for i in range(300)} | {"s": [{"x": 1}], "l": [[1, 2]]})
    feather.write_feather(table, tmp_path / "wide.arrow")
    assert ingest.arrow_file_names(tmp_path / "wide.arrow") == table.column_names
    pl.DataFrame({"a": [1], "b": ["x"]}).write_ipc(tmp_path / "polars.arrow", compression="zstd")
    assert ingest.arrow_file_names(tmp_path / "polars.arrow") == ["a", "b"]
    pl.DataFrame({"a": [1]}).write_ipc_stream(tmp_path / "stream.arrow")  # no footer: polars reads it
    whole = (tmp_path / "wide.arrow").read_bytes()
    (tmp_path / "cut.arrow").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "bent.arrow").write_bytes(whole[:-40] + b"\xff" * 30 + whole[-10:])
    for name in ("stream", "cut", "bent"):
        assert ingest.arrow_file_names(tmp_path / f"{name}.arrow") is None


def test_a_windows_export_is_read_in_its_encoding_and_refused_in_utf8_naming_the_option(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("Zeit;Temperatur °C\n2026-01-01 00:00;21,5\n2026-01-01 00:10;21,7\n", encoding="cp1252")
    frame = read_file(path, reading=CsvReading(encoding="cp1252", decimal_comma=True))
    assert frame.columns == ["Zeit", "Temperatur °C"] and frame["Temperatur °C"].to_list() == [21.5, 21.7]
    with pytest.raises(DataError, match=r"is not valid UTF-8 \(row 0, byte 16\).*--encoding cp1252"):
        read_file(path, reading=CsvReading(decimal_comma=True))


def test_a_time_format_decides_what_a_day_first_date_means(tmp_path: Path) -> None:
    """03/04/2026 is 3 April in Europe and 4 March in the US: a guess cannot know."""
    from datetime import datetime

    from pipeline.core.config import DataConfig
    from pipeline.data.schema import coerce, learn_schema

    path = tmp_path / "readings.csv"
    path.write_text("t,x\n03/04/2026 10:00,1.0\n04/04/2026 10:00,2.0\n05/04/2026 10:00,3.0\n")
    reading = CsvReading(time_format="%d/%m/%Y %H:%M")
    frame = read_file(path, reading=reading)
    schema = learn_schema(frame, DataConfig(mode="sensor", time_column="t", csv=reading))
    assert coerce(frame, schema, str(path))["t"].to_list()[0] == datetime(2026, 4, 3, 10, 0)
    path.write_text("t,x\n03/04/2026 10:00,1.0\n2026-04-04 10:00,2.0\n")
    with pytest.raises(DataError, match=r"'2026-04-04 10:00' does not match the time format '%d/%m/%Y %H:%M'.*row 2"):
        coerce(read_file(path, reading=reading), schema, str(path))
