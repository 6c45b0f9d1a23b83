"""Reading tabular and sensor files with polars: one file, a glob or a folder.

Files are read one at a time so that every error can name the file it came from."""

from __future__ import annotations

import csv
import glob
import itertools
import json
import logging
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
from flatbuffers import encode, packer, table

from pipeline.core.atomic import atomic_output
from pipeline.core.config import CsvReading
from pipeline.core.errors import DataError

FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".arrow": "ipc",
    ".ipc": "ipc",
    ".feather": "ipc",
}

log = logging.getLogger(__name__)


def file_format(path: Path) -> str:
    """Return the reader name for a path, or fail naming the suffixes we read."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise DataError(
            f"file '{path}' has an unsupported format '{path.suffix or '(no suffix)'}'; expected one of {known}."
        )
    return fmt


def resolve_sources(source: str | Path) -> list[Path]:
    """Expand a file, folder or glob into a sorted list of readable files.

    A folder contributes its direct children with a known suffix; hidden files and
    temporary files (leading '.' or '_') are skipped so half-written files are never read.
    Within a folder or a glob, symbolic links (to files or to folders) are not followed: one
    could point anywhere, a credentials file, and errors quote data (P05, N42). A file named
    on its own is read, link or not: its reader chose it."""
    path = Path(source)
    if path.is_file():
        file_format(path)
        return [path]
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and p.suffix.lower() in FORMATS and not p.name.startswith((".", "_")) and not _linked(p, path)
        )
        if not files:
            raise DataError(f"folder '{path}' holds no file of a known format ({', '.join(sorted(FORMATS))}).")
        return files
    base = glob_base(str(source))
    matches = sorted(
        Path(p) for p in glob.glob(str(source), recursive=True) if Path(p).is_file() and not _linked(Path(p), base)
    )
    if not matches:
        if not is_glob(source):
            raise DataError(f"file '{source}' does not exist.")
        raise DataError(f"glob '{source}' matched no file.")
    for match in matches:
        file_format(match)
    return matches


def is_glob(source: str | Path) -> bool:
    """Whether a source names files by a pattern (a wildcard anywhere), not one path."""
    return any(ch in str(source) for ch in "*?[")


def glob_base(pattern: str) -> Path:
    """The folder a glob starts from: its path up to the first part with a wildcard."""
    parts = Path(pattern).parts
    literal = list(itertools.takewhile(lambda part: not is_glob(part), parts))
    return Path(*literal) if literal else Path(".")


def _linked(path: Path, base: Path) -> bool:
    """Whether `path`, or a folder between it and `base`, is a symbolic link (logged once)."""
    current = path
    while current != base and current != current.parent:
        if current.is_symlink():
            log.warning("'%s' is reached through a symbolic link and is not read; copy or move the file itself in.", path)
            return True
        current = current.parent
    return False


def sniff_separator(path: Path, encoding: str = "utf8") -> str:
    """Guess a CSV separator from the header line (',', ';', tab or '|')."""
    with path.open("rb") as handle:
        head = handle.readline(65536).decode(_codec(encoding), errors="replace")
    if path.suffix.lower() == ".tsv":
        return "\t"
    try:
        return csv.Sniffer().sniff(head, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _codec(encoding: str) -> str:
    """Python's name for a CsvReading encoding."""
    return "utf-8" if encoding in ("utf8", "utf8-lossy") else encoding


HEADER_LIMIT = 16 << 20  # bytes of a CSV header line read to check its names


def check_csv_header(path: Path, separator: str, encoding: str = "utf8") -> None:
    """Refuse a header that names a column twice (polars would silently rename the second), and
    a header longer than 16 MiB, which cannot be checked (P14b: a duplicate past the first MiB
    went unseen and the first of the two was scored)."""
    with path.open("rb") as handle:
        line = handle.readline(HEADER_LIMIT + 1)
    if len(line) > HEADER_LIMIT and not line.endswith(b"\n"):
        raise DataError(
            f"file '{path}' has a header line over {HEADER_LIMIT >> 20} MiB; split its columns "
            "into several files, or write it as Parquet."
        )
    try:  # polars reads a header lossily: a name would silently hold '�' where the file has 'é'
        head = line.decode(_codec(encoding), errors="replace" if encoding == "utf8-lossy" else "strict")
    except UnicodeDecodeError as exc:
        raise _undecodable(path, encoding, f" (row 0, byte {exc.start})") from None
    try:
        names = next(csv.reader(head.splitlines()[:1], delimiter=separator), [])
    except csv.Error as exc:
        raise DataError(f"file '{path}' has a header that cannot be read as CSV: {exc}.") from exc
    seen: set[str] = set()
    for name in names:
        if name in seen and name:
            raise DataError(f"file '{path}' names column '{name}' twice in its header; rename or drop one.")
        seen.add(name)


def check_unique_names(path: Path, fmt: str) -> None:
    """Refuse an Arrow file whose schema, or an NDJSON file whose first object, names a column
    twice, as a CSV header is refused (R38: polars panicked on the Arrow file, then said it had
    no data rows; the NDJSON file failed on a number of the wrong type)."""
    if fmt == "ipc":
        names = arrow_file_names(path)
        if names is None:  # a stream, or not Arrow at all: polars says what it is
            return
    else:
        with path.open("rb") as handle:
            line = handle.readline(HEADER_LIMIT).strip()
        try:
            names = [key for key, _ in json.loads(line or b"{}", object_pairs_hook=lambda pairs: pairs)]
        except (ValueError, TypeError, AttributeError):  # not one JSON object: polars names the row
            return
    repeated = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if repeated is not None:
        raise DataError(f"file '{path}' names column '{repeated}' twice; rename or drop one.")


ARROW_MAGIC = b"ARROW1"


def arrow_file_names(path: Path) -> list[str] | None:
    """The top-level column names of an Arrow IPC file, read from the schema in its footer,
    where Arrow's readers read it (File.fbs: Footer.schema, slot 1; Schema.fbs: Schema.fields,
    slot 1, Field.name, slot 0). polars' own schema readers fold a repeated name into one,
    and pyarrow is 170 MB the scoring install does without. None where the file does not
    end as an Arrow file does."""
    with path.open("rb") as handle:
        size = handle.seek(0, 2)
        if size < 18:  # magic, padding, footer length, magic
            return None
        handle.seek(size - 10)
        tail = handle.read(10)
        length = int.from_bytes(tail[:4], "little", signed=True)
        if not tail.endswith(ARROW_MAGIC) or not 0 < length <= size - 18:
            return None
        handle.seek(size - 10 - length)
        footer = bytearray(handle.read(length))
    try:
        root = table.Table(footer, encode.Get(packer.uoffset, footer, 0))
        at = root.Offset(6)
        if not at:
            return None
        schema = table.Table(footer, root.Indirect(root.Pos + at))
        fields = schema.Offset(6)
        names = []
        for i in range(schema.VectorLen(fields) if fields else 0):
            field = table.Table(footer, schema.Indirect(schema.Vector(fields) + 4 * i))
            name = field.Offset(4)
            names.append(field.String(field.Pos + name).decode("utf-8") if name else "")
        return names
    except (IndexError, TypeError, ValueError, UnicodeDecodeError, struct.error):  # damaged: polars says how
        return None


def scan_file(path: Path, reading: CsvReading | None = None) -> pl.LazyFrame:
    """Lazily scan one file so that later selects read only the needed columns; a CSV as
    `reading` says (the model's or the training config's), by default as plain CSV."""
    fmt = file_format(path)
    if fmt == "csv":
        reading = reading or CsvReading()
        separator = reading.separator or sniff_separator(path, reading.encoding)
        check_csv_header(path, separator, reading.encoding)
        options = {
            "separator": separator,
            "try_parse_dates": reading.time_format is None,
            "decimal_comma": reading.decimal_comma,
            "skip_rows_after_header": reading.skip_rows_after_header,
            "null_values": reading.null_values or None,
        }
        if reading.encoding in ("utf8", "utf8-lossy"):
            return pl.scan_csv(path, encoding=reading.encoding, **options)  # type: ignore[arg-type]
        return guard(path, lambda: pl.read_csv(path, encoding=reading.encoding, **options)).lazy()  # type: ignore[arg-type]
    if fmt == "parquet":
        return pl.scan_parquet(path)
    check_unique_names(path, fmt)
    if fmt == "ndjson":
        return pl.scan_ndjson(path)
    return pl.scan_ipc(path)


def file_columns(path: Path, reading: CsvReading | None = None) -> dict[str, pl.DataType]:
    """The column names and dtypes of a file, read from its header or footer only."""
    return dict(guard(path, lambda: scan_file(path, reading).collect_schema()))


def read_file(
    path: Path, columns: list[str] | None = None, reading: CsvReading | None = None, every: int = 1
) -> pl.DataFrame:
    """Read one file (only `columns` when given); an empty file is an error. With `every`
    > 1, only every n-th row is kept, by polars' streaming engine: memory holds the sample,
    never the file."""
    lazy = scan_file(path, reading)
    lazy = lazy.select(columns) if columns is not None else lazy
    if every > 1:
        frame = guard(path, lambda: lazy.gather_every(every).collect(engine="streaming"))
    else:
        frame = guard(path, lazy.collect)
    if frame.height == 0:
        raise DataError(f"file '{path}' has no data rows.")
    return frame


def count_rows(path: Path, reading: CsvReading | None = None) -> int:
    """Data rows of one file (Parquet and Arrow: from the footer; CSV and NDJSON: one streaming pass)."""
    return int(guard(path, lambda: scan_file(path, reading).select(pl.len()).collect(engine="streaming").item()))


def read_file_slice(
    path: Path, columns: list[str], first_row: int, rows: int, reading: CsvReading | None = None
) -> pl.DataFrame:
    """Rows [first_row, first_row + rows) of one file (Parquet reads only the row groups needed)."""
    frame = guard(path, lambda: scan_file(path, reading).select(columns).slice(first_row, rows).collect())
    if frame.height == 0:
        raise DataError(f"file '{path}' has no rows from row {first_row + 1}.")
    return frame


def iter_file_batches(
    path: Path, columns: list[str], batch_rows: int, reading: CsvReading | None = None
) -> Iterator[pl.DataFrame]:
    """Stream one file in batches of about `batch_rows` rows with bounded memory.

    polars' streaming engine reads every format, Parquet included: on 1 M rows × 32 float
    columns it took 0.19 core-s (zstd) and 0.05 (snappy) where pyarrow's `iter_batches` took
    0.27 and 0.13. An 8 M-row file peaked at 0.33 GB resident however slowly the batches
    were taken (polars 2.1: it stops reading ahead); bench/speed.py checks 20 M rows."""
    lazy = scan_file(path, reading).select(columns)
    batches = guard(path, lambda: lazy.collect_batches(chunk_size=batch_rows))
    empty = True
    while True:
        batch = guard(path, lambda: next(batches, None))
        if batch is None:
            break
        if batch.height:
            empty = False
            yield batch
    if empty:
        raise DataError(f"file '{path}' has no data rows.")


def file_stamp(path: Path) -> tuple[int, int]:
    """(size, modification time in ns): what changes when a file is written to."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def file_identity(path: Path) -> list[int]:
    """(size, modification and change times in ns, inode): a file re-delivered under the same
    name, even with its size and mtime kept (`cp -p`, `rsync -t`), gets another."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def check_unchanged(path: Path, stamp: tuple[int, int]) -> None:
    """Refuse results read from a file that was written to meanwhile: they may mix old and new rows."""
    if file_stamp(path) != stamp:
        raise DataError(
            f"file '{path}' changed while it was being read; score it again once it is complete "
            "(write batches under a temporary name, then rename them into place)."
        )


def guard(path: Path, action):
    """Run a polars call and turn its failures into one DataError naming the file."""
    try:
        return action()
    except DataError:
        raise
    except pl.exceptions.ColumnNotFoundError as exc:
        raise DataError(f"file '{path}' lacks column {_first_line(exc)}.") from exc
    except pl.exceptions.NoDataError as exc:
        raise DataError(f"file '{path}' is empty.") from exc
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        if "utf-8" in str(exc).lower() or isinstance(exc, UnicodeDecodeError):
            raise _undecodable(path, "utf8", _first_bad_utf8(path)) from exc
        raise DataError(f"cannot read file '{path}' as {file_format(path)}: {_first_line(exc)}") from exc


def _undecodable(path: Path, encoding: str, place: str) -> DataError:
    if encoding in ("utf8", "utf8-lossy"):
        return DataError(
            f"file '{path}' is not valid UTF-8{place}: read it in its own encoding with --encoding (a "
            "Windows export is often cp1252: --encoding cp1252), or re-save it as UTF-8."
        )
    return DataError(f"file '{path}' is not valid {encoding}{place}: name its encoding with --encoding.")


def _first_bad_utf8(path: Path) -> str:
    """' (row N, byte B)' of the first line that is not UTF-8 (row 0 is a CSV header)."""
    offset = 0
    with path.open("rb") as handle:
        for line_number, line in enumerate(handle):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f" (row {line_number}, byte {offset + exc.start})"
            offset += len(line)
    return ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def write_frame(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write a frame as Parquet, CSV or NDJSON (by suffix), atomically (pipeline.core.atomic)."""
    path = Path(path)
    fmt = file_format(path)
    with atomic_output(path) as temporary:
        writers: dict[str, Callable[[Path], object]] = {
            "parquet": frame.write_parquet,
            "csv": frame.write_csv,
            "ndjson": frame.write_ndjson,
            "ipc": frame.write_ipc,
        }
        writer = writers[fmt]
        writer(temporary)
    return path
