"""The bad-input catalogue: every case is a row of docs/reliability.md and a test here.

Each case feeds one kind of bad input to the real pipeline (`score_files` with a trained
model, or `fit_model`) and checks one of two outcomes:
- an error: a `PipelineError` whose message names what it can (file, column, row), and no
  output left behind (no scores file, no temporary, no model version);
- a documented repair: the input is scored, and the repair is what the docs say it is.

    python tests/test_bad_input.py    # rewrite the table in docs/reliability.md from this file
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from common import DATA, FAST_TRAIN, ROOT

from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.ops.inbox import score_batch
from pipeline.ops.records import Batch
from pipeline.runtime import Scorer, ScoreReport, score_files
from pipeline.training.fit import fit_model

DOCS = ROOT / "docs" / "reliability.md"
TABLE_START, TABLE_END = "<!-- catalogue:start -->", "<!-- catalogue:end -->"
TABULAR_CSV = (DATA / "tabular" / "batch.csv").read_text()
HEADER, *ROWS = TABULAR_CSV.splitlines()


@dataclass
class Case:
    id: str
    stage: str  # ingest | schema | values | sensor | training | inbox
    given: str
    outcome: str
    run: Callable[[Context], None]


CATALOGUE: list[Case] = []


def case(id: str, stage: str, given: str, outcome: str) -> Callable:
    def register(run: Callable[[Context], None]) -> Callable:
        CATALOGUE.append(Case(id, stage, given, outcome, run))
        return run

    return register


class Context:
    """A case's folders and models, and the two checks every case ends with."""

    def __init__(self, tmp: Path, tabular: Scorer, sensor: Scorer) -> None:
        self.tmp, self.tabular, self.sensor = tmp, tabular, sensor
        self.inputs, self.out, self.models = tmp / "in", tmp / "out", tmp / "models"
        self.inputs.mkdir()

    # -- inputs ------------------------------------------------------------------------
    def text(self, name: str, text: str | bytes) -> Path:
        path = self.inputs / name
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return path

    def csv(self, name: str = "batch.csv", header: str = HEADER, rows: list[str] = ROWS) -> Path:
        return self.text(name, "\n".join([header, *rows]) + "\n")

    def frame(self, name: str, frame: pl.DataFrame) -> Path:
        path = self.inputs / name
        {".parquet": frame.write_parquet, ".csv": frame.write_csv, ".ndjson": frame.write_ndjson, ".arrow": frame.write_ipc}[
            path.suffix
        ](path)
        return path

    @staticmethod
    def sensors() -> pl.DataFrame:
        return pl.read_parquet(DATA / "sensors" / "batch.parquet")

    @staticmethod
    def tabular_rows() -> pl.DataFrame:
        return pl.read_csv(DATA / "tabular" / "batch.csv")

    # -- actions -----------------------------------------------------------------------
    def score(self, source: Path | str, model: str = "tabular") -> tuple[pl.DataFrame, ScoreReport]:
        scorer = self.tabular if model == "tabular" else self.sensor
        report = score_files(scorer, source, self.out / "scores.parquet")
        return pl.read_parquet(report.output), report

    def train(self, source: Path | str, config: str = "tabular", **data: object) -> Path:
        overrides = {"train": FAST_TRAIN, "data": data} if data else {"train": FAST_TRAIN}
        return fit_model(source, load_config(DATA / f"{config}.toml", **overrides), self.models).version_dir

    # -- outcomes ----------------------------------------------------------------------
    def refused(
        self,
        action: Callable[[], object],
        *fragments: str,
        file: Path | str | None = None,
        column: str | None = None,
        row: int | None = None,
    ) -> str:
        """The action fails with a PipelineError naming what it should, and leaves nothing behind."""
        with pytest.raises(PipelineError) as error:
            action()
        message = str(error.value)
        expected = [
            *fragments,
            *([f"'{file}'"] if file else []),
            *([f"column '{column}'"] if column else []),
            *([f"row {row}"] if row is not None else []),
        ]
        for fragment in expected:
            assert fragment in message, f"{fragment!r} not in: {message}"
        left = [p for folder in (self.out, self.models) if folder.exists() for p in folder.rglob("*") if p.is_file()]
        assert not left, f"left behind: {left}"
        return message

    def left_out(self, path: Path, entity: str, *fragments: str, column: str | None = None, row: int | None = None) -> str:
        """The sensor batch is scored without `entity`, which the report names with an error
        naming what it should (the file, column and row); the other machines are scored."""
        scored, report = self.score(path, "sensor")
        assert list(report.inputs.failed) == [entity], report.inputs.failed
        message = report.inputs.failed[entity]
        expected = [
            *fragments,
            f"'{path}'",
            *([f"column '{column}'"] if column else []),
            *([f"row {row}"] if row is not None else []),
        ]
        for fragment in expected:
            assert fragment in message, f"{fragment!r} not in: {message}"
        machines = set(self.sensors()["machine"].unique()) - {entity}
        assert set(scored["machine"].unique()) == machines and scored.height == report.rows
        return message


# == ingest ================================================================================


@case("empty-file", "ingest", "a 0-byte CSV", "error naming the file: it is empty")
def _(ctx: Context) -> None:
    path = ctx.text("batch.csv", b"")
    ctx.refused(lambda: ctx.score(path), "is empty", file=path)


@case("header-only", "ingest", "a CSV with a header and no rows", "error naming the file: no data rows")
def _(ctx: Context) -> None:
    path = ctx.csv(rows=[])
    ctx.refused(lambda: ctx.score(path), "has no data rows", file=path)


@case("missing-file", "ingest", "a path that does not exist", "error naming the path")
def _(ctx: Context) -> None:
    ctx.refused(lambda: ctx.score(ctx.inputs / "nope.csv"), "does not exist", file=ctx.inputs / "nope.csv")


@case("glob-matches-nothing", "ingest", "a glob that matches no file", "error naming the glob")
def _(ctx: Context) -> None:
    ctx.refused(lambda: ctx.score(f"{ctx.inputs}/*.parquet"), "matched no file")


@case("folder-without-data", "ingest", "a folder with no file of a known format", "error naming the folder")
def _(ctx: Context) -> None:
    ctx.text("notes.txt", "hello")
    ctx.refused(lambda: ctx.score(ctx.inputs), "holds no file of a known format", file=None)


@case("unknown-format", "ingest", "a `.xlsx` file", "error naming the file and the formats read")
def _(ctx: Context) -> None:
    path = ctx.text("batch.xlsx", b"PK\x03\x04")
    ctx.refused(lambda: ctx.score(path), "unsupported format '.xlsx'", ".parquet", file=path)


@case("truncated-parquet", "ingest", "a Parquet file cut in half", "error naming the file")
def _(ctx: Context) -> None:
    whole = ctx.frame("whole.parquet", ctx.tabular_rows()).read_bytes()
    (ctx.inputs / "whole.parquet").unlink()
    path = ctx.text("batch.parquet", whole[: len(whole) // 2])
    ctx.refused(lambda: ctx.score(path), "cannot read file", file=path)


@case("corrupted-parquet", "ingest", "Parquet magic bytes around garbage", "error naming the file")
def _(ctx: Context) -> None:
    path = ctx.text("batch.parquet", b"PAR1" + bytes(range(256)) * 4 + b"PAR1")
    ctx.refused(lambda: ctx.score(path), "cannot read file", file=path)


@case("corrupted-arrow", "ingest", "an Arrow IPC file with a broken footer", "error naming the file")
def _(ctx: Context) -> None:
    path = ctx.text("batch.arrow", b"ARROW1\x00\x00garbage")
    ctx.refused(lambda: ctx.score(path), "cannot read file", "as ipc", file=path)


@case("malformed-ndjson", "ingest", "an NDJSON file with an unterminated object", "error naming the file")
def _(ctx: Context) -> None:
    lines = ctx.tabular_rows().head(3).write_ndjson().splitlines()
    path = ctx.text("batch.ndjson", "\n".join([*lines, lines[0][:-5]]) + "\n")
    ctx.refused(lambda: ctx.score(path), "cannot read file", "as ndjson", file=path)


@case("non-utf8", "ingest", "a Latin-1 CSV ('bölt')", "error naming the file, row and byte offset; says how to convert")
def _(ctx: Context) -> None:
    fields = ROWS[4].split(",")
    fields[2] = "bölt"  # the product column
    rows = [*ROWS[:4], ",".join(fields), *ROWS[5:]]
    path = ctx.text("batch.csv", ("\n".join([HEADER, *rows]) + "\n").encode("latin-1"))
    ctx.refused(lambda: ctx.score(path), "not valid UTF-8", "--encoding cp1252", file=path, row=5)


@case("wrong-delimiter", "ingest", "a CSV separated by ':'", "error: a single column was found, with a delimiter hint")
def _(ctx: Context) -> None:
    path = ctx.text("batch.csv", TABULAR_CSV.replace(",", ":"))
    ctx.refused(lambda: ctx.score(path), "single column", "delimiter", file=path)


@case(
    "semicolon-delimiter",
    "ingest",
    "a CSV separated by ';'",
    "repair: the delimiter is sniffed; scores equal the ',' file's",
)
def _(ctx: Context) -> None:
    scored, _ = ctx.score(ctx.text("batch.csv", TABULAR_CSV.replace(",", ";")))
    reference = ctx.tabular.score(ctx.tabular_rows())
    np.testing.assert_allclose(scored["score"].to_numpy(), reference["score"].to_numpy(), rtol=1e-6)


@case("duplicate-column-names", "ingest", "a CSV header naming 'pressure' twice", "error naming the file and the column")
def _(ctx: Context) -> None:
    path = ctx.csv(header=HEADER + ",pressure", rows=[r + ",1.0" for r in ROWS])
    ctx.refused(lambda: ctx.score(path), "names column 'pressure' twice", file=path)


@case(
    "folder-mixed-formats",
    "ingest",
    "a folder with the same rows as CSV, Parquet, NDJSON and Arrow",
    "repair: every file is read; each format gives the same scores",
)
def _(ctx: Context) -> None:
    rows = ctx.tabular_rows().head(50)
    for suffix in (".csv", ".parquet", ".ndjson", ".arrow"):
        ctx.frame(f"part{suffix}", rows)
    scored, report = ctx.score(ctx.inputs)
    assert len(report.files) == 4 and scored.height == 200
    per_file = scored.partition_by("source_file", as_dict=True)
    first = next(iter(per_file.values()))["score"].to_numpy()
    for part in per_file.values():
        np.testing.assert_allclose(part["score"].to_numpy(), first, rtol=1e-6)


@case(
    "bad-second-file",
    "ingest",
    "a folder whose second file lacks a column",
    "error naming the second file; no output at all, not even the first file's",
)
def _(ctx: Context) -> None:
    ctx.frame("a.parquet", ctx.tabular_rows())
    bad = ctx.frame("b.parquet", ctx.tabular_rows().drop("pressure"))
    ctx.refused(lambda: ctx.score(ctx.inputs), "column 'pressure' is missing", file=bad)


@case(
    "file-changed-while-read",
    "ingest",
    "a CSV appended to while it is scored",
    "error naming the file: it changed while being read",
)
def _(ctx: Context) -> None:
    path = ctx.csv(rows=ROWS * 200)  # 200k rows: several chunks, so the read takes a while
    stop = threading.Event()

    def append() -> None:
        with path.open("a") as handle:
            while not stop.wait(0.002):
                handle.write(ROWS[0] + "\n")
                handle.flush()

    writer = threading.Thread(target=append)
    writer.start()
    try:
        ctx.refused(lambda: ctx.score(path), "changed while it was being read", file=path)
    finally:
        stop.set()
        writer.join()


# == schema ================================================================================


@case("missing-column", "schema", "a batch without the 'pressure' column", "error naming the file and the column")
def _(ctx: Context) -> None:
    path = ctx.frame("batch.parquet", ctx.tabular_rows().drop("pressure"))
    ctx.refused(lambda: ctx.score(path), "column 'pressure' is missing", file=path)


@case("renamed-column", "schema", "'pressure' renamed to 'Pressure'", "error naming the column, suggesting the near name")
def _(ctx: Context) -> None:
    path = ctx.frame("batch.parquet", ctx.tabular_rows().rename({"pressure": "Pressure"}))
    ctx.refused(lambda: ctx.score(path), "column 'pressure' is missing", "Did you mean 'Pressure'?", file=path)


@case("text-in-numeric", "schema", "'n/a' in the numeric 'temperature' column", "error naming file, column, row and value")
def _(ctx: Context) -> None:
    rows = [*ROWS[:6], ROWS[6].replace(ROWS[6].split(",")[4], "n/a", 1), *ROWS[7:]]
    path = ctx.csv(rows=rows)
    ctx.refused(lambda: ctx.score(path), "must be numeric", "'n/a'", file=path, column="temperature", row=7)


@case("wrong-dtype", "schema", "dates in the numeric 'temperature' column", "error naming the file, the column and the type")
def _(ctx: Context) -> None:
    path = ctx.frame("batch.parquet", ctx.tabular_rows().with_columns(temperature=pl.date(2026, 1, 1)))
    ctx.refused(lambda: ctx.score(path), "must be numeric, got Date", file=path, column="temperature")


@case(
    "number-for-category",
    "schema",
    "numbers in the categorical 'product' column",
    "repair: read as text; values never seen in training count as unseen categories",
)
def _(ctx: Context) -> None:
    _, report = ctx.score(ctx.frame("batch.parquet", ctx.tabular_rows().with_columns(product=pl.lit(7))))
    assert report.inputs.unseen_categories["product"] == 1000


@case("extra-columns", "schema", "columns the model does not know", "repair: ignored; scores unchanged")
def _(ctx: Context) -> None:
    scored, _ = ctx.score(ctx.frame("batch.parquet", ctx.tabular_rows().with_columns(extra=pl.lit(1.0))))
    np.testing.assert_allclose(scored["score"].to_numpy(), ctx.tabular.score(ctx.tabular_rows())["score"].to_numpy())


@case("column-order", "schema", "the columns in reverse order", "repair: matched by name; scores unchanged")
def _(ctx: Context) -> None:
    rows = ctx.tabular_rows()
    scored, _ = ctx.score(ctx.frame("batch.parquet", rows.select(rows.columns[::-1])))
    np.testing.assert_allclose(scored["score"].to_numpy(), ctx.tabular.score(rows)["score"].to_numpy())


# == values ================================================================================


@case(
    "nan-under-error",
    "values",
    "a NaN in a one-machine batch of a model trained with missing = 'error'",
    "error naming file, column and row",
)
def _(ctx: Context) -> None:
    frame = (
        ctx.sensors()
        .filter(pl.col("machine") == "press-01")
        .with_columns(load=pl.when(pl.int_range(pl.len()) == 9).then(float("nan")).otherwise(pl.col("load")))
    )
    path = ctx.frame("batch.parquet", frame)
    ctx.refused(lambda: ctx.score(path, "sensor"), "missing value", "--missing impute", file=path, column="load", row=10)


@case(
    "null-under-error",
    "values",
    "an empty cell in a model trained with missing = 'error'",
    "that machine left out, named with file, column and row; the other machines scored",
)
def _(ctx: Context) -> None:
    frame = ctx.sensors().with_columns(load=pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("load")))
    path = ctx.frame("batch.parquet", frame)
    ctx.left_out(path, "press-01", "missing value", column="load", row=4)


@case(
    "inf-under-error",
    "values",
    "+inf in a model trained with missing = 'error'",
    "that machine left out, named with file, column and row; the other machines scored, and the value",
)
def _(ctx: Context) -> None:
    frame = ctx.sensors().with_columns(
        load=pl.when(pl.int_range(pl.len()) == 0).then(float("inf")).otherwise(pl.col("load"))
    )
    path = ctx.frame("batch.parquet", frame)
    ctx.left_out(path, "press-01", "infinite value (inf)", column="load", row=1)


@case(
    "nan-under-impute",
    "values",
    "NaN and empty cells with missing = 'impute'",
    "repair: the training median, counted per column in the report",
)
def _(ctx: Context) -> None:
    rows = ctx.tabular_rows().with_columns(
        temperature=pl.when(pl.int_range(pl.len()) < 3).then(None).otherwise(pl.col("temperature")),
        pressure=pl.when(pl.int_range(pl.len()) == 5).then(float("nan")).otherwise(pl.col("pressure")),
    )
    scored, report = ctx.score(ctx.frame("batch.parquet", rows))
    assert dict(report.inputs.imputed) == {"temperature": 3, "pressure": 1}
    assert np.isfinite(scored["score"].to_numpy()).all()


@case(
    "minus-inf-under-impute",
    "values",
    "-inf with missing = 'impute'",
    "scored as the most extreme reading (an overflow), not imputed",
)
def _(ctx: Context) -> None:
    rows = ctx.tabular_rows().with_columns(
        yield_pct=pl.when(pl.int_range(pl.len()) == 0).then(float("-inf")).otherwise(pl.col("yield_pct"))
    )
    scored, report = ctx.score(ctx.frame("batch.parquet", rows))
    assert not report.inputs.imputed
    assert scored["is_anomaly"][0] and scored["score"][0] == scored["score"].max()


@case(
    "huge-values",
    "values",
    "1e300 and 1e38 (beyond and at float32's limit)",
    "scored: finite scores, both rows flagged as anomalies",
)
def _(ctx: Context) -> None:
    rows = ctx.tabular_rows().with_columns(
        temperature=pl.when(pl.int_range(pl.len()) == 0).then(1e300).otherwise(pl.col("temperature")),
        energy_kwh=pl.when(pl.int_range(pl.len()) == 1).then(-1e38).otherwise(pl.col("energy_kwh")),
    )
    scored, _ = ctx.score(ctx.frame("batch.parquet", rows))
    assert np.isfinite(scored["score"].to_numpy()).all()
    assert scored["is_anomaly"][:2].to_list() == [True, True]
    assert scored["top1_feature"][:2].to_list() == ["temperature", "energy_kwh"]


@case(
    "id-past-64-bits",
    "values",
    "batch ids from 2^63 up (read as 128-bit integers)",
    "scored; each id kept exactly, as text (Parquet holds no 128-bit integer)",
)
def _(ctx: Context) -> None:
    rows = ctx.tabular_rows().head(5).with_columns(batch_id=pl.lit(2**63) + pl.int_range(5).cast(pl.Int128))
    path = ctx.inputs / "big-ids.csv"
    rows.write_csv(path)
    scored, _ = ctx.score(path)
    assert scored["batch_id"].to_list() == [str(2**63 + i) for i in range(5)]


@case(
    "unseen-category",
    "values",
    "a 'line' value never seen in training",
    "repair: encoded as no known category (all zeros), counted, and the row flagged (unseen = 'flag')",
)
def _(ctx: Context) -> None:
    rows = ctx.tabular_rows().with_columns(
        line=pl.when(pl.int_range(pl.len()) < 2).then(pl.lit("L9")).otherwise(pl.col("line"))
    )
    scored, report = ctx.score(ctx.frame("batch.parquet", rows))
    assert dict(report.inputs.unseen_categories) == {"line": 2}
    normal = ctx.tabular.score(ctx.tabular_rows())
    assert scored["is_anomaly"][:2].to_list() == [True, True]  # a new production line stands out
    assert scored["is_anomaly"][2:].to_list() == normal["is_anomaly"][2:].to_list()


@case(
    "missing-category",
    "values",
    "an empty 'shift' cell",
    "repair: treated as an unseen category, counted; not flagged for it (a gap is not a new category)",
)
def _(ctx: Context) -> None:
    rows = ctx.tabular_rows().with_columns(shift=pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col("shift")))
    scored, report = ctx.score(ctx.frame("batch.parquet", rows))
    assert dict(report.inputs.unseen_categories) == {"shift": 1}
    assert scored["is_anomaly"][0] == (scored["score"][0] > ctx.tabular.threshold)


@case("one-row", "values", "a batch of one row", "scored: the same score as that row within a larger batch")
def _(ctx: Context) -> None:
    scored, _ = ctx.score(ctx.csv(rows=ROWS[:1]))
    assert scored.height == 1
    np.testing.assert_allclose(scored["score"][0], ctx.tabular.score(ctx.tabular_rows())["score"][0], rtol=1e-6)


@case(
    "constant-column-at-scoring",
    "values",
    "a sensor stuck at one value for the whole batch",
    "scored: flagged when the value is far from normal (a stuck sensor is an anomaly, not an error)",
)
def _(ctx: Context) -> None:
    frame = ctx.sensors().with_columns(pressure=pl.lit(0.0))
    scored, _ = ctx.score(ctx.frame("batch.parquet", frame), "sensor")
    assert scored["is_anomaly"].mean() > 0.9 and (scored["top1_feature"] == "pressure").mean() > 0.9


# == sensor series =========================================================================


@case(
    "fewer-rows-than-window",
    "sensor",
    "3 rows for a 12-step window",
    "repair: each entity's first row is repeated to fill the window; every row is scored",
)
def _(ctx: Context) -> None:
    scored, _ = ctx.score(ctx.frame("batch.parquet", ctx.sensors().head(3)), "sensor")
    assert scored.height == 3 and np.isfinite(scored["score"].to_numpy()).all()


@case(
    "unsorted-times",
    "sensor",
    "rows shuffled",
    "repair: sorted by entity and time, reported; scores equal the sorted input's",
)
def _(ctx: Context) -> None:
    frame = ctx.sensors()
    scored, report = ctx.score(ctx.frame("batch.parquet", frame.sample(fraction=1.0, shuffle=True, seed=3)), "sensor")
    assert report.inputs.resorted
    reference = ctx.sensor.score(frame.sort("machine", "timestamp"))
    np.testing.assert_allclose(scored["score"].to_numpy(), reference["score"].to_numpy(), rtol=1e-6)


@case(
    "duplicate-times",
    "sensor",
    "one machine's reading repeated at the same time",
    "that machine left out, named with the file, the time column and both rows; the other machines scored",
)
def _(ctx: Context) -> None:
    frame = ctx.sensors()
    path = ctx.frame("batch.parquet", pl.concat([frame, frame.slice(10, 1)]))
    ctx.left_out(path, "press-01", "appears twice", f"rows 11 and {frame.height + 1}", column="timestamp")


@case(
    "missing-time",
    "sensor",
    "an empty timestamp",
    "that machine left out, named with file, column and row; the other machines scored",
)
def _(ctx: Context) -> None:
    frame = ctx.sensors().with_columns(
        timestamp=pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("timestamp"))
    )
    path = ctx.frame("batch.parquet", frame)
    ctx.left_out(path, "press-01", "missing value", column="timestamp", row=6)


@case(
    "nan-time",
    "sensor",
    "NaN in a numeric time column (seconds)",
    "that machine left out, named with file, column and row; the other machines scored, and the value",
)
def _(ctx: Context) -> None:
    seconds = pl.col("timestamp").dt.epoch("s").cast(pl.Float64)
    frame = ctx.sensors().with_columns(timestamp=pl.when(pl.int_range(pl.len()) == 4).then(float("nan")).otherwise(seconds))
    path = ctx.frame("batch.parquet", frame)  # NaN sorted last and was scored at the end of its series
    ctx.left_out(path, "press-01", "not a time (nan)", column="timestamp", row=5)


@case(
    "missing-entity",
    "sensor",
    "an empty machine id",
    "that row left out as entity '(missing)', named with file, column and row; the machines scored",
)
def _(ctx: Context) -> None:
    frame = ctx.sensors().with_columns(machine=pl.when(pl.int_range(pl.len()) == 2).then(None).otherwise(pl.col("machine")))
    path = ctx.frame("batch.parquet", frame)
    ctx.left_out(path, "(missing)", "missing value", column="machine", row=3)


def _text_times(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(timestamp=pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S"))


@case(
    "unparsable-time",
    "sensor",
    "'yesterday' in the time column",
    "that machine left out, named with file, column and row; the other machines scored, and the value",
)
def _(ctx: Context) -> None:
    frame = _text_times(ctx.sensors()).with_columns(
        timestamp=pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("yesterday")).otherwise(pl.col("timestamp"))
    )
    path = ctx.frame("batch.csv", frame)
    ctx.left_out(path, "press-01", "'yesterday' cannot be parsed", column="timestamp", row=8)


@case("mixed-offsets", "sensor", "times with +01:00 and +02:00 offsets", "repair: converted to UTC, then ordered")
def _(ctx: Context) -> None:
    frame = _text_times(ctx.sensors()).with_columns(
        timestamp=pl.col("timestamp")
        + pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit("+01:00")).otherwise(pl.lit("+02:00"))
    )
    scored, _ = ctx.score(ctx.frame("batch.csv", frame), "sensor")
    assert scored.schema["timestamp"] == pl.Datetime("us", "UTC") and scored.height == frame.height


@case(
    "naive-and-aware-times",
    "sensor",
    "times with and without an offset in one file",
    "the machine whose times mix zones left out, named with the row where they mix; the other machines scored",
)
def _(ctx: Context) -> None:
    frame = _text_times(ctx.sensors()).with_columns(
        timestamp=pl.when(pl.int_range(pl.len()) == 0).then(pl.col("timestamp") + "Z").otherwise(pl.col("timestamp"))
    )
    path = ctx.frame("batch.csv", frame)
    ctx.left_out(path, "press-01", "mixes time zones", column="timestamp", row=2)


@case(
    "unknown-entity",
    "sensor",
    "a machine never seen in training",
    "scored like any other: entities are keys that keep series apart, not features",
)
def _(ctx: Context) -> None:
    frame = ctx.sensors().filter(pl.col("machine") == "press-01")
    scored, _ = ctx.score(ctx.frame("batch.parquet", frame.with_columns(machine=pl.lit("press-99"))), "sensor")
    np.testing.assert_allclose(scored["score"].to_numpy(), ctx.sensor.score(frame)["score"].to_numpy(), rtol=1e-6)


@case(
    "time-gaps",
    "sensor",
    "an hour of readings missing in the middle",
    "scored: by default windows count rows, so a window spans the gap; a model trained with `max_gap` restarts "
    "the series after it",
)
def _(ctx: Context) -> None:
    frame = ctx.sensors().filter(pl.col("machine") == "press-01")
    gapped = pl.concat([frame.head(100), frame.slice(112)])
    scored, _ = ctx.score(ctx.frame("batch.parquet", gapped), "sensor")
    assert scored.height == gapped.height and np.isfinite(scored["score"].to_numpy()).all()


# == inbox =================================================================================


@case(
    "inbox-file-replaced",
    "inbox",
    "a batch file rewritten after the inbox hashed it",
    "error naming the file; the ledger's identity never describes other bytes",
)
def _(ctx: Context) -> None:
    path = ctx.frame("batch.parquet", ctx.tabular_rows())
    stamp = path.stat()
    batch = Batch(file=str(path), identity="0" * 64, size=stamp.st_size, mtime_ns=stamp.st_mtime_ns)
    ctx.frame("batch.parquet", ctx.tabular_rows().head(10))
    ctx.refused(lambda: score_batch(ctx.tabular, batch, ctx.out), "changed while it was being read", file=path)


# == training ==============================================================================


def _history(rows: int | None = None) -> pl.DataFrame:
    frame = pl.read_csv(DATA / "tabular" / "history.csv")
    return frame.head(rows) if rows else frame


@case("train-header-only", "training", "a training CSV with a header and no rows", "error naming the file")
def _(ctx: Context) -> None:
    path = ctx.text("history.csv", _history().head(0).write_csv())
    ctx.refused(lambda: ctx.train(path), "has no data rows", file=path)


@case("train-one-row", "training", "one training row", "error: training needs at least 2 rows")
def _(ctx: Context) -> None:
    path = ctx.frame("history.parquet", _history(1))
    ctx.refused(lambda: ctx.train(path), "needs at least 2")


@case(
    "train-config-column-missing",
    "training",
    "the config's id column absent from the data",
    "error naming the column and the file",
)
def _(ctx: Context) -> None:
    path = ctx.frame("history.parquet", _history(300).drop("batch_id"))
    ctx.refused(lambda: ctx.train(path), "column 'batch_id' named in the config is missing", file=path)


@case(
    "train-text-in-second-file",
    "training",
    "text in a numeric column of the second training file",
    "error naming that file, the column and the row",
)
def _(ctx: Context) -> None:
    ctx.frame("a.parquet", _history(300))
    bad = ctx.frame(
        "b.parquet",
        _history(300)
        .with_columns(pl.col("pressure").cast(pl.String))
        .with_columns(pressure=pl.when(pl.int_range(pl.len()) == 41).then(pl.lit("high")).otherwise(pl.col("pressure"))),
    )
    ctx.refused(lambda: ctx.train(ctx.inputs), "must be numeric", "'high'", file=bad, column="pressure", row=42)


@case(
    "train-all-missing-column",
    "training",
    "a column that is empty in every row, missing = 'error' or 'impute'",
    "error naming the file and the column, before training: nothing to learn from it",
)
def _(ctx: Context) -> None:
    path = ctx.frame("history.parquet", _history(300).with_columns(pressure=pl.lit(None, pl.Float64)))
    for missing in ("error", "impute"):
        ctx.refused(
            lambda missing=missing: ctx.train(path, missing=missing),
            "empty in every row",
            "--ignore-columns pressure",
            file=path,
            column="pressure",
        )


@case(
    "train-constant-column",
    "training",
    "a feature with one value in every training row",
    "repair: trained with that feature's scale set to 1; a later change of value scores high",
)
def _(ctx: Context) -> None:
    version = ctx.train(ctx.frame("history.parquet", _history().with_columns(pressure=pl.lit(80.0))))
    scorer = Scorer.load(version)
    scale = dict(zip(scorer.manifest.input_names, scorer.manifest.scaler.scale, strict=True))
    assert scale["pressure"] == 1.0
    rows = ctx.tabular_rows().head(20)
    same, moved = (
        scorer.score(rows.with_columns(pressure=pl.lit(80.0))),
        scorer.score(rows.with_columns(pressure=pl.lit(95.0))),
    )
    assert (moved["score"] > same["score"]).all()


@case(
    "train-window-too-long",
    "training",
    "sensor series shorter than the window",
    "error naming the file and the window length",
)
def _(ctx: Context) -> None:
    frame = pl.read_parquet(DATA / "sensors" / "history.parquet").group_by("machine").head(5)
    path = ctx.frame("history.parquet", frame)
    ctx.refused(lambda: ctx.train(path, "sensors"), "no entity has at least 12 rows", file=path)


@case(
    "train-duplicates-across-files",
    "training",
    "two training files holding the same readings",
    "error naming both rows and that it spans the training files",
)
def _(ctx: Context) -> None:
    frame = pl.read_parquet(DATA / "sensors" / "history.parquet").filter(pl.col("machine") == "press-01")
    ctx.frame("a.parquet", frame.head(600))
    ctx.frame("b.parquet", frame.slice(500, 600))  # 100 readings overlap
    ctx.refused(lambda: ctx.train(ctx.inputs, "sensors"), "appears twice", "2 training files")


@case(
    "train-too-many-categories",
    "training",
    "a named feature with more categories than max_categories",
    "error naming the column and the limit",
)
def _(ctx: Context) -> None:
    path = ctx.frame("history.parquet", _history(300).with_columns(line=pl.format("L{}", pl.int_range(pl.len()))))
    ctx.refused(
        lambda: ctx.train(path, features=["line", "pressure"]),
        "column 'line' has 300 categories",
        "max_categories",
        file=path,
    )


# == the runner and the docs table =========================================================


@pytest.fixture(scope="module")
def scorers(tabular_model: Path, sensor_model: Path) -> tuple[Scorer, Scorer]:
    return Scorer.load(tabular_model), Scorer.load(sensor_model)


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.id for c in CATALOGUE])
def test_bad_input(case: Case, scorers: tuple[Scorer, Scorer], tmp_path: Path) -> None:
    case.run(Context(tmp_path, *scorers))


def render_table() -> str:
    lines = ["| # | stage | case | given | outcome |", "|---:|---|---|---|---|"]
    lines += [f"| {i} | {c.stage} | `{c.id}` | {c.given} | {c.outcome} |" for i, c in enumerate(CATALOGUE, 1)]
    return "\n".join(lines)


def test_catalogue_has_forty_distinct_cases_and_the_docs_table_is_current() -> None:
    assert len(CATALOGUE) >= 40 and len({c.id for c in CATALOGUE}) == len(CATALOGUE)
    text = DOCS.read_text()
    current = text[text.index(TABLE_START) + len(TABLE_START) : text.index(TABLE_END)].strip()
    assert current == render_table(), f"docs/reliability.md is stale: run `python {Path(__file__).relative_to(ROOT)}`"


if __name__ == "__main__":
    text = DOCS.read_text()
    head, tail = text.split(TABLE_START)[0], text.split(TABLE_END)[1]
    DOCS.write_text(f"{head}{TABLE_START}\n{render_table()}\n{TABLE_END}{tail}")
    print(f"wrote {len(CATALOGUE)} cases to {DOCS.relative_to(ROOT)}")


def test_p14b_a_duplicate_column_past_the_first_mebibyte_of_the_header_is_found(tmp_path: Path) -> None:
    """P14b: the header check read 1 MiB, so a column named twice after 1 MiB of header went
    unseen and the first of the two was scored."""
    from pipeline.core.errors import DataError
    from pipeline.data.ingest import scan_file

    fillers = [f"padding_column_{i:06d}_{'x' * 40}" for i in range(25_000)]  # about 1.5 MiB of names
    names = ["temperature", *fillers, "temperature"]
    (tmp_path / "wide.csv").write_text(",".join(names) + "\n" + ",".join("1" for _ in names) + "\n")
    assert (tmp_path / "wide.csv").stat().st_size > 1 << 20
    with pytest.raises(DataError, match="names column 'temperature' twice"):
        scan_file(tmp_path / "wide.csv")
