"""A sensor fleet scored from the command line in bounded memory (issue 21).

    python bench/fleet.py                      # 50 M rows × 8 sensors × 200 machines
    python bench/fleet.py --rows 2000000       # a quick look

Writes a generated fleet file (machines interleaved the way a fleet logs them: every machine's
readings for one block of time, then the next block), trains a small sensor model on the
fleet's first days with `vad train`, scores the whole file with `vad score` in a fresh process,
and reports that process's peak resident memory and rate. Then the scores of a few machines are
checked against those machines' rows scored alone, in memory, by the library. Writes the
"Fleet" section of BENCHMARKS.md."""

from __future__ import annotations

import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sections import replace_section  # noqa: E402

from pipeline.runtime import Scorer  # noqa: E402

SENSORS = [f"s{i}" for i in range(8)]
STEPS_PER_BLOCK = 250  # a block: every machine's next 250 readings (one a minute)


def fleet_block(entities: int, first_step: int, steps: int, seed: int) -> pa.Table:
    """`steps` one-minute readings of every machine: a daily cycle per sensor, a level per
    machine, noise; machines interleaved within the block."""
    rng = np.random.default_rng(seed)
    step = np.arange(first_step, first_step + steps)
    machine = np.repeat(np.arange(entities), steps)
    t = np.tile(step, entities)
    phase = 2 * np.pi * t / 1440.0
    columns: dict[str, pa.Array] = {
        "machine": pa.array([f"m-{m:03d}" for m in range(entities)]).take(pa.array(machine)),
        "timestamp": pa.array((np.datetime64("2026-01-01") + t.astype("timedelta64[m]")).astype("datetime64[us]")),
    }
    for i, name in enumerate(SENSORS):
        level = 1.0 + 0.1 * ((machine * 7 + i) % 11)
        columns[name] = pa.array(level + 0.5 * np.sin(phase + i) + 0.1 * rng.standard_normal(len(t)))
    return pa.table(columns)


def write_fleet(path: Path, rows: int, entities: int) -> None:
    """`rows` rows in blocks, never all in memory."""
    steps = rows // entities
    with pq.ParquetWriter(path, fleet_block(1, 0, 1, 0).schema, compression="zstd") as writer:
        for first in range(0, steps, STEPS_PER_BLOCK):
            block = fleet_block(entities, first, min(STEPS_PER_BLOCK, steps - first), seed=first)
            writer.write_table(block, row_group_size=262_144)


def run_measured(command: list[str]) -> tuple[float, float]:
    """Peak resident memory (MB, from GNU time) and wall seconds of a command."""
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *command], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{command[:2]} failed:\n{done.stderr[-3000:]}")
    return int(done.stderr.strip().splitlines()[-1]) / 1024, seconds


def main(
    rows: int = 50_000_000,
    entities: int = 200,
    train_steps: int = 1_000,
    epochs: int = 5,
    check_machines: int = 3,
    write: bool = True,
) -> None:
    started_all = time.perf_counter()
    console = Console()
    vad = str(Path(sys.executable).with_name("vad"))
    lines: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp:
        tmp_path = Path(tmp)
        fleet = tmp_path / "fleet.parquet"
        started = time.perf_counter()
        write_fleet(fleet, rows, entities)
        console.print(f"wrote {rows:,} rows ({fleet.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - started:.0f} s")
        history = tmp_path / "history.parquet"
        pl.scan_parquet(fleet).filter(
            pl.col("timestamp") < pl.datetime(2026, 1, 1) + pl.duration(minutes=train_steps)
        ).sink_parquet(history)
        train = [
            vad,
            "train",
            str(history),
            "--name",
            "fleet",
            "--out",
            str(tmp_path / "models"),
            "--mode",
            "sensor",
            "--time-column",
            "timestamp",
            "--entity-column",
            "machine",
            "--features",
            ",".join(SENSORS),
            "--window",
            "10",
            "--epochs",
            str(epochs),
            "--no-progress",
        ]
        train_mb, train_s = run_measured(train)
        lines.append(
            (
                f"`vad train`: {entities * train_steps:,} rows (the first {train_steps} minutes), "
                f"{epochs} epochs, window 10",
                f"{train_s:.0f} s, peak RSS {train_mb:,.0f} MB",
            )
        )
        scores = tmp_path / "scores.parquet"
        score_mb, score_s = run_measured(
            [vad, "score", str(tmp_path / "models" / "fleet"), str(fleet), "--output", str(scores), "--show", "0"]
        )
        lines.append(
            (
                f"`vad score`: {rows:,} rows × {len(SENSORS)} sensors × {entities} machines "
                f"({fleet.stat().st_size / 1e9:.2f} GB Parquet), fresh process",
                f"peak RSS {score_mb:,.0f} MB, {rows / score_s / 1e6:.2f} M rows/s ({score_s:.0f} s)",
            )
        )
        scored = pl.scan_parquet(scores)
        count, ordered = scored.select(pl.len(), pl.col("machine").is_sorted()).collect().row(0)
        scorer = Scorer.load(tmp_path / "models" / "fleet")
        worst = 0.0
        picked = [f"m-{m:03d}" for m in np.linspace(0, entities - 1, check_machines).astype(int)]
        for machine in picked:
            alone = scorer.score(pl.scan_parquet(fleet).filter(pl.col("machine") == machine).collect())
            mine = scored.filter(pl.col("machine") == machine).select("timestamp", "score").collect()
            assert mine["timestamp"].equals(alone["timestamp"]), machine
            worst = max(worst, float(np.max(np.abs(mine["score"].to_numpy() - alone["score"].to_numpy()))))
        lines.append(
            (
                f"rows out; scores of {', '.join(picked)} against their rows scored alone",
                f"{count:,} rows{' in machine order' if ordered else ''}; largest difference {worst:.1e}",
            )
        )
        assert count == rows and worst == 0.0, (count, worst)
    wall = time.perf_counter() - started_all
    table = Table(title="Fleet scoring")
    for column in ("what", "measured"):
        table.add_column(column)
    for row in lines:
        table.add_row(*row)
    console.print(table)
    if write:
        body = "\n".join(f"| {a} | {b} |" for a, b in lines)
        replace_section(
            ROOT / "BENCHMARKS.md",
            "fleet",
            f"""## Fleet scoring in bounded memory (issue 21)

Command: `python bench/fleet.py` ({wall / 60:.1f} min; {platform.machine()}, polars {pl.__version__}). A fleet file
too large to read whole is split by machine in one streaming pass and scored a group of whole machines
at a time (`pipeline/runtime/entities.py`). The training is short on purpose: this measures memory and
equality, not detection.

| what | measured |
|---|---|
{body}
""",
        )


if __name__ == "__main__":
    typer.run(main)
