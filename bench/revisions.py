"""Scoring speed of two git revisions, side by side in one run: for a change that must not
move it (a restructuring). Each revision is checked out into a temporary worktree; the
rounds alternate between them, so the machine's noise falls on both alike.

    python bench/revisions.py f291fcd HEAD               # the structure move of issue 18
    python bench/revisions.py A B --rows 1000000 --rounds 3
    python bench/revisions.py A B --mode sensor --rows 200000   # the demo sensor model's windows

The model is exported once, by the first revision (`vad train` on the bundled tabular or
sensor data), and scored by both: the exported format is the contract both must read. Sensor
rows are the demo history's machines, copied under other names until there are `rows`. The table
gives the best of three per round, in rows/s: the fused kernel alone, and `score_files`
end to end from Parquet (reading, preparing, scoring, writing)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]

# Runs inside a worktree; the names it imports have stayed public through the move.
MEASURE = """
import json, sys, time
import numpy as np, polars as pl
from pipeline.runtime import Scorer, score_files
model, source, out = sys.argv[1:4]
scorer = Scorer.load(model)
frame = pl.read_parquet(source)
x, _, _ = scorer.prepare(frame)
x = np.ascontiguousarray(x, dtype=np.float32)
kernel = scorer.kernel()
def best(action):
    times = []
    for _ in range(3):
        start = time.perf_counter(); action(); times.append(time.perf_counter() - start)
    return min(times)
print(json.dumps({"kernel": len(x) / best(lambda: kernel.run(["score", "top_index", "top_share"], x)),
                  "end to end": frame.height / best(lambda: score_files(scorer, source, out))}))
"""


def worktree(revision: str, folder: Path) -> Path:
    subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(folder), revision], cwd=ROOT, check=True)
    return folder


def run(tree: Path, *args: str) -> str:
    """`python args` with the worktree's code first on the path (not the installed checkout's)."""
    result = subprocess.run(
        [sys.executable, *args],
        cwd=tree,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
    )
    if result.returncode != 0:
        raise SystemExit(f"{tree}: {result.stderr.strip().splitlines()[-1]}")
    return result.stdout


def source_rows(mode: str, rows: int) -> pl.DataFrame:
    """`rows` rows of the bundled data: the tabular batch repeated, or the sensor history's
    machines copied under new names (each copy a series of its own)."""
    if mode == "tabular":
        batch = pl.read_csv(ROOT / "data" / "tabular" / "batch.csv")
        return pl.concat([batch] * (rows // batch.height + 1)).head(rows)
    history = pl.read_parquet(ROOT / "data" / "sensors" / "history.parquet").drop("label", "anomaly_kind")
    copies = [history.with_columns(pl.col("machine") + f"-{i}") for i in range(rows // history.height + 1)]
    return pl.concat(copies).head(rows)


TRAINING = {
    "tabular": ("data/tabular/history.csv", "data/tabular.toml", "demo-tabular"),
    "sensor": ("data/sensors/history.parquet", "data/sensors.toml", "demo-sensors"),
}


def main(first: str, second: str, rows: int = 1_000_000, rounds: int = 3, mode: str = "tabular") -> None:
    console = Console()
    with tempfile.TemporaryDirectory(prefix="vad-revisions-") as tmp:
        tmp_path = Path(tmp)
        trees = {first: worktree(first, tmp_path / "first"), second: worktree(second, tmp_path / "second")}
        try:
            source = tmp_path / "rows.parquet"
            source_rows(mode, rows).write_parquet(source)
            data, config, name = TRAINING[mode]
            run(
                trees[first],
                "-m",
                "pipeline.cli",
                "train",
                data,
                "--config",
                config,
                "--out",
                str(tmp_path / "models"),
                "--no-progress",
            )
            model = tmp_path / "models" / name
            figures: dict[str, list[dict[str, float]]] = {first: [], second: []}
            for round_ in range(rounds):
                for revision, tree in trees.items():
                    figures[revision].append(
                        json.loads(
                            run(tree, "-c", MEASURE, str(model), str(source), str(tmp_path / f"out-{round_}.parquet"))
                        )
                    )
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    table = Table(title=f"scoring {rows:,} {mode} rows, best of 3 per round, {rounds} alternating rounds")
    table.add_column("what")
    for revision in (first, second):
        table.add_column(f"{revision} (M rows/s per round)", justify="right")
    table.add_column(f"{second} / {first}, best round", justify="right")
    for what in ("kernel", "end to end"):
        best = {r: max(f[what] for f in figures[r]) for r in figures}
        table.add_row(
            what,
            *(" ".join(f"{f[what] / 1e6:.3f}" for f in figures[r]) for r in (first, second)),
            f"{best[second] / best[first]:.2f}",
        )
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
