"""`make demo`: train on the bundled data, export, score a new batch and show the results.

It runs the same `vad` commands a user would type (echoed before each step), then checks
the flags against the labels the data generator kept."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from rich.console import Console
from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score

from pipeline.cli import app
from pipeline.data.ingest import read_file

console = Console()
DEMOS = [
    (
        "demo-sensors",
        "data/sensors/history.parquet",
        "data/sensors.toml",
        "data/sensors/batch.parquet",
        ["machine", "timestamp"],
    ),
    ("demo-tabular", "data/tabular/history.csv", "data/tabular.toml", "data/tabular/batch.csv", ["batch_id"]),
]


def run(*args: str) -> None:
    console.rule(f"[bold]$ vad {' '.join(args)}")
    app(list(args), standalone_mode=False)


def evaluate(scores_path: Path, labelled: str, keys: list[str]) -> str:
    """Compare scores and flags with the generator's labels (kept out of the features)."""
    truth = read_file(Path(labelled), [*keys, "label"])
    joined = pl.read_parquet(scores_path).join(truth.select(*keys, "label"), on=keys, how="inner")
    y, s, flag = joined["label"].to_numpy(), joined["score"].to_numpy(), joined["is_anomaly"].to_numpy()
    return (
        f"ROC-AUC {roc_auc_score(y, s):.3f}, average precision {average_precision_score(y, s):.3f}, "
        f"flag precision {precision_score(y, flag, zero_division=0):.2f}, recall {recall_score(y, flag):.2f} "
        f"({int(y.sum())} labelled anomalous rows of {len(y)})"
    )


def main() -> None:
    outputs = []
    for name, history, config, batch, keys in DEMOS:
        run("train", history, "--config", config, "--out", "exported", "--no-progress")
        scores = Path("runs") / f"{name}-scores.parquet"
        run("score", f"exported/{name}", batch, "--output", str(scores), "--show", "5", "--report")
        console.print(f"[bold]{name}[/] against the bundled labels: {evaluate(scores, batch, keys)}")
        page = scores.with_name(f"{scores.stem}.report.html")  # open it in a browser
        outputs += [f"exported/{name}/{(Path('exported') / name / 'latest').read_text().strip()}/", str(scores), str(page)]
    run("inspect", "exported/demo-sensors")
    console.rule("[bold]where everything went")
    for path in outputs:
        console.print(f"  {path}")
    console.print(
        "Each version folder holds encoder.onnx, decoder.onnx, scorer.onnx, scorer_sampled.onnx, "
        "manifest.json, checkpoint.pt and history.json."
    )


if __name__ == "__main__":
    main()
