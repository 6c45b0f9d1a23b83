"""Scoring on every core (issue 37): `score_files` end to end, reading and preparing alone,
and writing the scores alone, at 1, 2, 4, 8 and 16 cores (as many as the machine has).

    python bench/scaling.py                          # writes the "Scaling" section of BENCHMARKS.md
    python bench/scaling.py --rows 100000 --rounds 1 --output /tmp/scaling.md   # a quick check

Each measurement runs in a fresh process pinned to the first N cores before polars and
onnxruntime size their thread pools, so `cpu_cores()` and both libraries see N. Rounds
alternate the core counts, so the machine's noise (it is shared) falls on all of them alike;
each figure is the median over rounds of the best of three, and the ratios are of those medians.
The model is the product's default (`vad train` on the bundled tabular data and its config,
model settings at their defaults); the rows are its batch repeated to `--rows`, with noise.

"Writing alone, pyarrow (before)" is the writer `score_files` used until issue 37: one
`pyarrow.parquet.ParquetWriter` on one thread, kept here verbatim as the yardstick."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import typer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sections import Blocks, markdown_blocks, print_blocks, replace_section  # noqa: E402

# Runs in a child pinned to its cores (argv: cores, model, source, folder, provider).
MEASURE = """
import os, sys
cores = int(sys.argv[1])
os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])  # before any thread pool starts
import json, time
from pathlib import Path
import polars as pl, pyarrow.parquet as pq
from pipeline.artifact import contract
from pipeline.data import ingest
from pipeline.runtime import ScoreOptions, Scorer, score_files, write_scores
from pipeline.runtime.files import _scored_chunks
from scaling import pyarrow_before

model, source, folder, provider = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]
scorer = Scorer.load(model, provider=provider)
rows = pq.ParquetFile(source).metadata.num_rows

def best(action):
    action()
    times = []
    for _ in range(3):
        started = time.perf_counter(); action(); times.append(time.perf_counter() - started)
    return min(times)

columns = scorer.schema.source_columns
read = rows / best(lambda: [scorer.prepare(b) for b in ingest.iter_file_batches(source, columns, 65536)])
frames = [scored.with_columns(pl.lit(file.name, dtype=pl.Categorical).alias(contract.SOURCE_FILE),
                              pl.lit(scorer.manifest.key, dtype=pl.Categorical).alias(contract.MODEL_VERSION))
          for file, scored, _ in _scored_chunks(scorer, [source], 65536, scorer.resolve(ScoreOptions()))]
tables = [frame.to_arrow() for frame in frames]
before = rows / best(lambda: pyarrow_before(folder / "before.parquet", tables))
now = rows / best(lambda: write_scores(iter(frames), folder / "now.parquet", ".parquet"))
now_csv = rows / best(lambda: write_scores(iter(frames), folder / "now.csv", ".csv"))
end_to_end = rows / best(lambda: score_files(scorer, source, folder / "scores.parquet"))
to_csv = rows / best(lambda: score_files(scorer, source, folder / "scores.csv"))
sizes = {name: (folder / f"{name}.parquet").stat().st_size / rows for name in ("before", "now")}
print(json.dumps({"read": read, "write before": before, "write": now, "write csv": now_csv,
                  "end to end": end_to_end, "end to end csv": to_csv,
                  "bytes before": sizes["before"], "bytes now": sizes["now"]}))
"""


def pyarrow_before(path: Path, tables: list, top_k: int = 3) -> None:
    """The writer of `score_files` until issue 37, as it was: one pyarrow ParquetWriter on one
    thread, text columns lz4 with dictionaries, floats plain, no statistics on the rankings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.artifact import contract

    schema = tables[0].schema
    texts = [f.name for f in schema if not pa.types.is_floating(f.type)]
    ranked = {name for i in range(top_k) for name in (contract.top_feature(i + 1), contract.top_share(i + 1))}
    writer = pq.ParquetWriter(
        path,
        schema,
        compression={f.name: "lz4" if f.name in texts else "none" for f in schema},
        store_schema=False,
        use_dictionary=texts,
        write_statistics=[n for n in schema.names if n not in ranked],
    )
    for table in tables:
        writer.write_table(table)
    writer.close()


LABELS = {
    "end to end": "`score_files` end to end, Parquet → Parquet",
    "end to end csv": "`score_files` end to end, Parquet → CSV",
    "read": "reading and preparing alone",
    "write before": "writing alone, pyarrow (before)",
    "write": "writing alone, the product's writer (Parquet)",
    "write csv": "writing alone, the product's writer (CSV)",
}


def run_child(cores: int, model: Path, source: Path, folder: Path, provider: str = "cpu") -> dict[str, float]:
    """One child's rates (rows/s) and sizes (bytes per row), on the first `cores` cores."""
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(cores), str(model), str(source), str(folder), provider],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench")])},
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1])
    return json.loads(result.stdout.strip().splitlines()[-1])


def distinct_rows(rows: int, seed: int = 0) -> pl.DataFrame:
    """The bundled batch repeated to `rows`, each reading moved by 1% noise and each id its own:
    repeated values would let the writers' dictionaries shrink the scores to a few distinct
    values and flatter the write (a repeated batch wrote 1 M rows of scores in 0.4 MB)."""
    batch = pl.read_csv(ROOT / "data" / "tabular" / "batch.csv")
    frame = pl.concat([batch] * (rows // batch.height + 1)).head(rows)
    rng = np.random.default_rng(seed)
    return frame.with_columns(
        [
            pl.col(name) * pl.Series(1 + 0.01 * rng.standard_normal(rows))
            for name, dtype in frame.schema.items()
            if dtype.is_float()
        ],
        batch_id=pl.int_range(pl.len()),
    )


def core_counts() -> list[int]:
    available = len(os.sched_getaffinity(0))
    return [n for n in (1, 2, 4, 8, 16) if n <= available] or [1]


def main(rows: int = 1_000_000, rounds: int = 5, output: Path = typer.Option(ROOT / "BENCHMARKS.md")) -> None:
    counts = core_counts()
    with tempfile.TemporaryDirectory(prefix="vad-scaling-") as tmp:
        folder = Path(tmp)
        source = folder / "rows.parquet"
        distinct_rows(rows).write_parquet(source)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline.cli",
                "train",
                "data/tabular/history.csv",
                "--config",
                "data/tabular.toml",
                "--out",
                str(folder / "models"),
                "--no-progress",
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        model = folder / "models" / "demo-tabular"
        runs: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
        for round_ in range(rounds):
            for n in counts if round_ % 2 == 0 else reversed(counts):
                runs[n].append(run_child(n, model, source, folder))
                print(f"round {round_ + 1}, {n} core(s): {runs[n][-1]['end to end']:,.0f} rows/s end to end", flush=True)
    medians = {n: {key: statistics.median(run[key] for run in runs[n]) for key in LABELS} for n in counts}
    blocks: Blocks = {
        f"Rows per second by cores, {rows:,} rows, median of {rounds} rounds": [
            (
                f"{LABELS[key]}, {n} core(s)",
                f"{medians[n][key] / 1e3:,.0f} k rows/s",
                f"{medians[n][key] / medians[1][key]:.2f}× 1 core" if n > 1 else "",
            )
            for key in LABELS
            for n in counts
        ]
    }
    top = counts[-1]
    ratios = [run_top["end to end"] / run_one["end to end"] for run_top, run_one in zip(runs[top], runs[1], strict=True)]
    blocks["Ratios"] = [
        (
            f"end to end, {top} cores vs 1 core",
            f"{medians[top]['end to end'] / medians[1]['end to end']:.2f}×",
            "each round: " + ", ".join(f"{r:.2f}" for r in ratios),
        ),
        (
            f"writing alone at {top} cores, the product's writer vs pyarrow (before)",
            f"{medians[top]['write'] / medians[top]['write before']:.2f}×",
            f"at 1 core: {medians[1]['write'] / medians[1]['write before']:.2f}×",
        ),
        (
            f"end to end vs reading alone, {top} cores",
            f"{medians[top]['end to end'] / medians[top]['read']:.2f}",
            "the share of the read rate the whole path keeps",
        ),
        (
            "scores file size, the product's writer vs pyarrow (before)",
            f"{runs[1][0]['bytes now']:.1f} vs {runs[1][0]['bytes before']:.1f} bytes per row",
            "Parquet; the product writes no compression, before compressed the text columns (lz4)",
        ),
    ]
    print_blocks(blocks)
    command = "python bench/scaling.py" + ("" if (rows, rounds) == (1_000_000, 5) else f" --rows {rows} --rounds {rounds}")
    section = (
        f"## Scaling with cores (issue 37)\n\n`{command}`, on this machine ({top} cores, "
        f"{os.uname().machine}); the default model, scored from Parquet.\n\n{markdown_blocks(blocks)}"
    )
    replace_section(output, "scaling", section)


if __name__ == "__main__":
    typer.run(main)
