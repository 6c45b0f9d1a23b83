"""`vad`: train, score, re-fit thresholds, inspect, sample and encode from the command line.

Every failure the user can fix prints one line, `error: …`, and exits with status 2."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from pipeline.artifact import contract
from pipeline.core.errors import PipelineError, exit_on_user_error

if TYPE_CHECKING:  # imported lazily at run time, to keep `vad --help` fast
    import polars as pl

    from pipeline.core.config import CsvReading
    from pipeline.runtime import ScoreReport

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="VAE anomaly detection: polars ingest, PyTorch training, ONNX export, onnxruntime scoring.",
)
console = Console()


AS_JSON = typer.Option("--json", help="Print the result as one JSON object (for scripts), nothing else.")
# How CSV files are read (polars' options), kept with the model; `vad score` changes them for one run.
DECIMAL_COMMA = typer.Option("--decimal-comma/--no-decimal-comma", help="CSV: decimals written 3,14 (fields by ';' or tab).")
SKIP_ROWS = typer.Option(min=0, help="CSV: rows under the header that are not data (a units row: 1).")
NULL_VALUES = typer.Option(help="CSV: comma-separated markers of a missing reading, e.g. 'NA,#N/A'.")
ENCODING = typer.Option(help="CSV: the file's encoding, utf8 (default), utf8-lossy, or a codec such as cp1252.")
TIME_FORMAT = typer.Option(help="The time column's format where it is text, e.g. '%d.%m.%Y %H:%M' (strptime).")


def _csv_reading(
    decimal_comma: bool | None, skip_rows: int | None, null_values: str | None, encoding: str | None, time_format: str | None
) -> dict:
    """The CSV reading options given on the command line, as the config's `csv` section."""
    given: dict[str, object] = {"decimal_comma": decimal_comma, "skip_rows_after_header": skip_rows}
    given |= {"null_values": _split(null_values), "encoding": encoding, "time_format": time_format}
    reading = {key: value for key, value in given.items() if value is not None}
    return {"csv": reading} if reading else {}


def print_json(result: dict) -> None:
    """One JSON object on one line of stdout (no wrapping, no colour): what a script reads."""
    typer.echo(json.dumps(result, default=str))


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


@app.command()
def train(  # noqa: PLR0913 - its options are its signature  # long: 32 options, each a line
    source: Annotated[str, typer.Argument(help="Training data: a file, glob or folder (CSV, Parquet, NDJSON, Arrow).")],
    config: Annotated[
        Optional[Path], typer.Option(help="TOML config with sections data, model, train, threshold, export.")
    ] = None,
    like: Annotated[
        Optional[Path],
        typer.Option(
            help="A model (folder or version) to train like: its kept configuration, changed by the options given "
            "here; the new version goes beside it unless --name or --out say otherwise."
        ),
    ] = None,
    name: Annotated[Optional[str], typer.Option(help="Model name (folder under --out).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Root folder of exported models (default: exported).")] = None,
    mode: Annotated[Optional[str], typer.Option(help="tabular or sensor.")] = None,
    features: Annotated[Optional[str], typer.Option(help="Comma-separated feature columns (default: inferred).")] = None,
    id_columns: Annotated[Optional[str], typer.Option(help="Comma-separated key columns passed to the output.")] = None,
    label_column: Annotated[Optional[str], typer.Option(help="Label column (never a feature).")] = None,
    ignore_columns: Annotated[
        Optional[str], typer.Option(help="Comma-separated columns that are neither features nor keys (other labels, notes).")
    ] = None,
    time_column: Annotated[Optional[str], typer.Option(help="Time column (sensor mode).")] = None,
    entity_column: Annotated[Optional[str], typer.Option(help="Entity column; windows never cross entities.")] = None,
    window: Annotated[Optional[int], typer.Option(help="Window length in time steps (sensor mode).")] = None,
    stride: Annotated[Optional[int], typer.Option(help="Training window stride.")] = None,
    missing: Annotated[Optional[str], typer.Option(help="error or impute (training median).")] = None,
    duplicates: Annotated[
        Optional[str],
        typer.Option(help="A time repeated within an entity (sensor mode): error, last or mean; kept with the model."),
    ] = None,
    max_gap: Annotated[
        Optional[str],
        typer.Option(
            help="Sensor mode: no window spans a longer gap in time (ISO 8601 such as PT15M, HH:MM:SS, or seconds)."
        ),
    ] = None,
    resample: Annotated[
        Optional[str],
        typer.Option(
            help="Sensor mode: readings averaged onto a fixed time step (ISO 8601 such as PT5M); kept with the model."
        ),
    ] = None,
    time_zone: Annotated[
        Optional[str],
        typer.Option(help="Sensor mode: the times are local wall-clock times of this zone (Europe/Berlin); kept."),
    ] = None,
    decimal_comma: Annotated[Optional[bool], DECIMAL_COMMA] = None,
    skip_rows_after_header: Annotated[Optional[int], SKIP_ROWS] = None,
    null_values: Annotated[Optional[str], NULL_VALUES] = None,
    encoding: Annotated[Optional[str], ENCODING] = None,
    time_format: Annotated[Optional[str], TIME_FORMAT] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Maximum epochs (early stopping may end sooner).")] = None,
    latent: Annotated[Optional[int], typer.Option(help="Latent size (default scales with inputs).")] = None,
    hidden: Annotated[Optional[str], typer.Option(help="Hidden sizes, e.g. 64,32.")] = None,
    likelihood: Annotated[Optional[str], typer.Option(help="bernoulli, student, fixed or gaussian.")] = None,
    beta: Annotated[Optional[float], typer.Option(help="KL weight after warm-up.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda.")] = None,
    threshold: Annotated[Optional[str], typer.Option(help="quantile, contamination, pot or best-f1.")] = None,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
    int8: Annotated[
        Optional[bool], typer.Option("--int8", help="Also export an int8 scorer (dynamic quantisation).")
    ] = None,
    as_json: Annotated[bool, AS_JSON] = False,
) -> None:
    """Train a VAE and export it as a new version (ONNX graphs + manifest)."""
    from pipeline.core.config import load_config
    from pipeline.training.fit import fit_model  # a scoring-only install: main() names the extra

    window_spec = {k: v for k, v in {"length": window, "stride": stride}.items() if v is not None}
    base, beside, lineage = _trained_like(like, keep_place=name is None and out is None)
    with _said_as_flags():
        cfg = load_config(
            config,
            base=base,
            name=name,
            data={
                "mode": mode,
                "features": _split(features),
                "id_columns": _split(id_columns),
                "label_column": label_column,
                "ignore_columns": _split(ignore_columns),
                "time_column": time_column,
                "entity_column": entity_column,
                "missing": missing,
                "duplicates": duplicates,
                "max_gap": max_gap,
                "resample": resample,
                "time_zone": time_zone,
                **({"window": window_spec} if window_spec else {}),
                **_csv_reading(decimal_comma, skip_rows_after_header, null_values, encoding, time_format),
            },
            model={
                "latent": latent,
                "hidden": [int(h) for h in _split(hidden) or []] if hidden else None,
                "likelihood": likelihood,
            },
            train={"epochs": epochs, "beta": beta, "seed": seed, "device": device, "progress": progress},
            threshold={"method": threshold},
            export={"int8": int8},
        )
    outcome = fit_model(source, cfg, out or Path("exported"), lineage=lineage, into=beside)
    result = outcome.calibrated.result
    if as_json:
        fitted = outcome.calibrated.threshold
        print_json(
            {
                "model": cfg.name,
                "version_dir": outcome.version_dir,
                "rows": len(outcome.data.x),
                "inputs": outcome.data.x.shape[1],
                "device": result.device,
                "best_epoch": result.best_epoch,
                "epochs_run": len(result.history),
                "validation_neg_beta_elbo": result.best_validation,
                "imputed": outcome.data.imputed,
                "merged": outcome.data.merged,
                "threshold": fitted.model_dump(mode="json"),
            }
        )
        return
    schema = outcome.data.schema
    console.print(
        "features: "
        + ", ".join(c.name + (f" (one-hot, {len(c.categories)} categories)" if c.categories else "") for c in schema.columns)
        + (f"; keys in the output: {', '.join(schema.key_columns)}" if schema.key_columns else ""),
        soft_wrap=True,
        markup=False,
    )
    console.print(
        f"trained [bold]{cfg.name}[/] on {len(outcome.data.x):,} rows × {outcome.data.x.shape[1]} inputs "
        f"({result.device}); best epoch {result.best_epoch} of {len(result.history)}, "
        f"validation −β-ELBO {result.best_validation:.3f}"
    )
    if outcome.data.imputed:
        filled = ", ".join(f"{column}: {count}" for column, count in outcome.data.imputed.items())
        console.print(f"[yellow]missing values filled with the training median:[/] {filled}")
    if outcome.data.merged:
        console.print(f"[yellow]repeated readings merged ({cfg.data.duplicates}):[/] {outcome.data.merged}")
    console.print(f"threshold {outcome.calibrated.threshold.value:.4f} ({outcome.calibrated.threshold.method})")
    console.print(f"exported to [bold]{outcome.version_dir}[/]")


FLAG_OF = {"threshold.method": "--threshold", "data.window.length": "--window", "data.window.stride": "--stride"}


def _checked_reading(kept: dict, given: dict) -> CsvReading:
    """A model's CSV reading with this run's options, checked as a config's would be."""
    from pipeline.core.config import CsvReading

    try:
        return CsvReading.model_validate({**kept, **given})
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise PipelineError(f"config `data.csv.{field}` is invalid: {error['msg']}.") from None


@contextmanager
def _said_as_flags() -> Iterator[None]:
    """A config error in the syntax of the command that was run: `--missing` where the config
    says `data.missing` (newcomer review N25: `--missing imput` was "config `data.missing` is
    invalid")."""
    try:
        yield
    except PipelineError as exc:
        found = re.match(r"config `([\w.]+)` is invalid", str(exc))
        if found is None:
            raise
        field = found.group(1)
        flag = FLAG_OF.get(field) or f"--{field.rsplit('.', 1)[-1].replace('_', '-')}"
        if flag.removeprefix("--").replace("-", "_") not in train.__annotations__ and field not in FLAG_OF:
            raise
        raise PipelineError(str(exc).replace(f"config `{field}`", f"{flag} (config `{field}`)", 1)) from exc


def _trained_like(like: Path | None, keep_place: bool) -> tuple[dict | None, Path | None, dict | None]:
    """For `--like MODEL`: the configuration that model was trained with, the model folder its
    new version goes into (when no name or root was given) and the lineage naming it."""
    if like is None:
        return None, None, None
    from pipeline.artifact.manifest import read_manifest, resolve_model_dir
    from pipeline.core.config import remembered_config

    version_dir = resolve_model_dir(like)
    manifest = read_manifest(version_dir)
    base = remembered_config(manifest.training, str(version_dir))
    lineage = {"change": f"trained like {manifest.name}/{manifest.version}"}
    if keep_place:  # a new version of the same model: the one it was made like is its parent
        return base, version_dir.parent, {"parent_version": manifest.version, **lineage}
    return base, None, lineage


@app.command()
def score(  # noqa: PLR0913 - its options are its signature  # long: 20 options, each a line
    model: Annotated[Path, typer.Argument(help="Model version folder, or a model folder (uses its latest).")],
    source: Annotated[str, typer.Argument(help="Data to score: a file, glob or folder.")],
    output: Annotated[
        Optional[Path],
        typer.Option(help="Scores file; its suffix picks the format: .parquet (default), .csv, .tsv, .ndjson or .arrow."),
    ] = None,
    estimator: Annotated[str, typer.Option(help="elbo (deterministic), mc or iwae.")] = "elbo",
    samples: Annotated[int, typer.Option(help="Samples for mc / iwae.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed for mc / iwae.")] = 0,
    threshold: Annotated[
        Optional[float], typer.Option(help="Override the model's threshold with a raw score (see `vad inspect`).")
    ] = None,
    threshold_quantile: Annotated[
        Optional[float],
        typer.Option(min=0.0, max=1.0, help="Override it with a quantile of the calibration scores, e.g. 0.99."),
    ] = None,
    provider: Annotated[str, typer.Option(help="auto, cpu, cuda or tensorrt.")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, or int8 for a model exported with its int8 scorer.")] = "fp32",
    top_k: Annotated[int, typer.Option(help="Contributing features per row.")] = contract.TOP_K,
    chunk_rows: Annotated[
        Optional[int],
        typer.Option(min=1, help="Rows read per chunk (tabular); default 65536, or 262144 when scoring on a GPU."),
    ] = None,
    show: Annotated[int, typer.Option(help="Top anomalies to print.")] = 10,
    missing: Annotated[
        Optional[str],
        typer.Option(help="Missing values: impute (the training medians) or error; default: the model's policy."),
    ] = None,
    max_rows: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help=(
                "Refuse a file of more rows (default for a sensor series: what half the available memory "
                "holds, at most 10,000,000; none for tables)."
            ),
        ),
    ] = None,
    with_report: Annotated[
        bool, typer.Option("--report", help="Also write <output>.report.md beside the scores: counts and plots.")
    ] = False,
    decimal_comma: Annotated[Optional[bool], DECIMAL_COMMA] = None,
    skip_rows_after_header: Annotated[Optional[int], SKIP_ROWS] = None,
    null_values: Annotated[Optional[str], NULL_VALUES] = None,
    encoding: Annotated[Optional[str], ENCODING] = None,
    time_format: Annotated[Optional[str], TIME_FORMAT] = None,
    as_json: Annotated[bool, AS_JSON] = False,
) -> None:
    """Score data with the ONNX scorer and write scores, flags and top contributing features."""
    from pipeline.runtime import Scorer, score_files

    if with_report:  # before scoring: a missing `report` extra is said before any output is written
        from pipeline.ops.reports import BatchContext, write_scores_report
    scorer = Scorer.load(model, provider=provider, precision=precision, missing=missing)  # type: ignore[arg-type]
    reading = _csv_reading(decimal_comma, skip_rows_after_header, null_values, encoding, time_format)
    if reading:  # this run only; the model keeps how it was trained to read
        with _said_as_flags():
            csv = _checked_reading(scorer.schema.csv.model_dump(), reading["csv"])
        scorer.schema = scorer.schema.model_copy(update={"csv": csv})
    if threshold_quantile is not None:
        if threshold is not None:
            raise PipelineError("give --threshold (a raw score) or --threshold-quantile (a share), not both.")
        threshold = scorer.threshold_at_quantile(threshold_quantile)
    output = output or Path("runs") / f"{scorer.manifest.name}-v{scorer.manifest.version}-scores.parquet"
    with scoring_progress(enabled=not as_json) as on_chunk:
        report = score_files(
            scorer,
            source,
            output,
            chunk_rows=chunk_rows,
            estimator=estimator,
            samples=samples,
            seed=seed,
            threshold=threshold,
            top_k=top_k,
            keep_top=show,
            on_chunk=on_chunk,
            max_rows=max_rows,
        )
    written = None
    if with_report:
        sources = tuple(Path(file) for file in report.files)  # the files scoring read, as it found them
        read = BatchContext(report.threshold, sources=sources, schema=scorer.schema, drift=report.drift)
        written = write_scores_report(scorer.manifest, report.output, read)
    if as_json:
        print_json(
            {
                "model": scorer.manifest.key,
                "output": report.output,
                "files": report.files,
                "rows": report.rows,
                "anomalies": report.anomalies,
                "alarms": report.alarms,
                "unjudged": report.unjudged,
                "threshold": report.threshold,
                "provider": scorer.kernel().describe(),
                "repairs": report.inputs.summary() if report.inputs.repaired else None,
                "report": written,
                "failed_entities": report.inputs.failed,
                "drift": report.drift.model_dump(mode="json") if report.drift is not None else None,
                "top": report.top,
            }
        )
        return
    print_score_report(report, scorer.kernel().describe())
    if written is not None:
        console.print(f"report written to [bold]{written}[/] and, for a browser, [bold]{written.with_suffix('.html')}[/]")


@contextmanager
def scoring_progress(enabled: bool) -> Iterator[Callable[[pl.DataFrame], object] | None]:
    """Rows scored so far and their rate, on stderr while scoring runs (a terminal only: logs
    and pipes stay clean); yields the per-chunk callback, or None."""
    stderr = Console(stderr=True)
    if not (enabled and stderr.is_terminal):
        yield None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("scoring: {task.completed:,.0f} rows"), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True) as bar:
        task = bar.add_task("score", total=None)
        yield lambda chunk: bar.advance(task, chunk.height)


def print_score_report(report: ScoreReport, provider: str) -> None:
    """The summary a person reads after scoring: counts, repairs, top rows, output path."""
    console.print(
        f"scored {report.rows:,} rows from {len(report.files)} file(s) on {provider}; "
        f"{report.anomalies:,} above threshold {report.threshold:.4f}, {report.alarms:,} alarm(s)"
    )
    if report.inputs.repaired:
        console.print(f"[yellow]input repairs:[/] {report.inputs.summary()}")
    if report.unjudged:  # the scheduled flow carries each stream on, so there only an entity's very first rows
        console.print(f"{report.unjudged:,} row(s) not judged: each entity's first rows, on padded windows (`judged`)")
    if report.drift is not None and report.drift.drifted:
        shifted = "; ".join(
            f"{e}: " + ", ".join(f"{c} {v:+.1f}" for c, v in s.items()) for e, s in report.drift.entities.items()
        )
        console.print(
            f"[yellow]drift from the training data:[/] {', '.join(report.drift.drifting)}"
            + (f" ({shifted})" if shifted else "")
            + ' (README, "Drift")'
        )
    if report.drift is not None and report.drift.not_judged:
        unjudged = report.drift.not_judged
        console.print(
            f"[yellow]drift not judged per entity for {len(unjudged)} of them[/] ("
            + "; ".join(f"{e}: {why}" for e, why in list(unjudged.items())[:5])
            + ("; …" if len(unjudged) > 5 else "")
            + "): the fleet's PSI judged their rows"
        )
    if report.top:
        table = Table(title="top anomalies (higher score = more anomalous)")
        columns = list(report.top[0])
        keys = [k for k in columns if k not in contract.score_columns(columns) - {contract.SOURCE_FILE}]
        keys = [k for k in keys if k != contract.SOURCE_FILE or len(report.files) > 1]  # one file: said above
        percentile = contract.PERCENTILE in columns
        for key in keys:  # a key is never cut (N23: `TX0002…` at 80 columns); the explanation wraps instead
            table.add_column(key, no_wrap=True, min_width=max(len(key), *(len(str(row[key])) for row in report.top)))
        for column in [contract.SCORE, *([contract.PERCENTILE] if percentile else [])]:
            table.add_column(column, no_wrap=True)
        table.add_column("top features (share of excess −log p)", overflow="fold", min_width=12)
        for row in report.top:
            table.add_row(
                *[str(row[k]) for k in keys],
                f"{row[contract.SCORE]:.2f}",
                *([f"{row[contract.PERCENTILE]:.2f}"] if percentile else []),
                contract.explanation(row),
            )
        console.print(table)
    console.print(f"scores written to [bold]{report.output}[/]")


@app.command()
def threshold(  # noqa: PLR0913 - its options are its signature  # long: its options, each a line
    model: Annotated[Path, typer.Argument(help="Model version folder, or a model folder (its latest version).")],
    data: Annotated[
        str, typer.Argument(help="Recent data to fit on: a file, glob or folder (normal rows, unless labels are given).")
    ],
    method: Annotated[str, typer.Option(help="quantile, contamination, pot or best-f1.")] = "quantile",
    target: Annotated[
        Optional[float],
        typer.Option(help="The method's parameter: the quantile, the contamination, or POT's false-alarm risk."),
    ] = None,
    persistence: Annotated[
        Optional[str], typer.Option(help="k/n: flag a row when k of the last n rows of its series exceed (sensor models).")
    ] = None,
    label_column: Annotated[Optional[str], typer.Option(help="0/1 labels in the data, for best-f1.")] = None,
    activate: Annotated[
        bool, typer.Option(help="Also make the new version `latest` (only if `latest` did not move meanwhile).")
    ] = False,
    as_json: Annotated[bool, AS_JSON] = False,
) -> None:
    """Re-fit the threshold on new data, without retraining: writes the model's next version,
    which scoring uses once it is `latest` (--activate, or `vad promote` after a look)."""
    from pipeline.core.config import ThresholdConfig
    from pipeline.training.rethreshold import refit_threshold  # a scoring-only install: main() names the extra

    settings: dict = {"method": method}
    if target is not None:
        field = {"quantile": "quantile", "contamination": "contamination", "pot": "pot_risk"}.get(method, "target")
        settings[field] = target
    if persistence:
        k, _, n = persistence.partition("/")
        settings["persistence"] = {"k": k, "n": n or k}
    try:
        config = ThresholdConfig.model_validate(settings)
    except ValidationError as exc:
        raise PipelineError(f"threshold settings are invalid: {exc.errors()[0]['msg']} ({settings}).") from None
    refit = refit_threshold(model, data, config, label_column, activate=activate)
    if as_json:
        print_json(
            {
                "version_dir": refit.version_dir,
                "threshold": refit.threshold.model_dump(mode="json"),
                "rows": refit.rows,
                "flagged": refit.flagged,
                "latest": refit.active,
            }
        )
        return
    rule = refit.threshold.persistence
    console.print(
        f"threshold {refit.threshold.value:.4f} ({refit.threshold.method}"
        f"{f', {rule.k} of {rule.n} rows' if rule.n > 1 else ''}) fitted on {refit.rows:,} rows, "
        f"{refit.flagged:.2%} of them above it"
    )
    if refit.threshold.note:
        console.print(f"[yellow]note:[/] {refit.threshold.note}")
    console.print(f"new version written to [bold]{refit.version_dir}[/]")
    if refit.active:
        console.print("it is now `latest`: scoring on the model folder uses it from the next batch")
    else:
        console.print(
            f"not active: `vad promote {refit.version_dir.parent} {refit.version_dir.name}` makes it "
            "`latest` (or re-run with --activate)"
        )


@app.command()
def promote(
    model: Annotated[Path, typer.Argument(help="Model folder (holding its numbered versions).")],
    version: Annotated[str, typer.Argument(help="The version to make `latest`.")],
    expected: Annotated[
        Optional[str],
        typer.Option(help="Only if `latest` still names this version (what you looked at); default: whatever it names now."),
    ] = None,
    as_json: Annotated[bool, AS_JSON] = False,
) -> None:
    """Make a published version `latest` (a re-thresholded or retrained one, or a roll-back)."""
    from pipeline.artifact.manifest import set_latest
    from pipeline.artifact.versions import latest_version, record_decision

    before = latest_version(model)
    set_latest(model, version, expected=expected if expected is not None else before)
    record_decision(model, version, True, [f"promoted by hand from version {before}"], {"champion": before})
    if as_json:
        print_json({"model": str(model), "latest": version, "previous": before})
    else:
        console.print(f"{model.name}: `latest` is now version {version} (was {before})")


@app.command()
def inspect(
    model: Annotated[Path, typer.Argument(help="Model version folder, or a model folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole manifest as JSON.")] = False,
) -> None:
    """Show a model's manifest, schema, threshold and the available providers."""
    import onnxruntime as ort

    from pipeline.artifact.manifest import read_manifest, resolve_model_dir
    from pipeline.runtime import select_providers

    folder = resolve_model_dir(model)
    manifest = read_manifest(folder)
    if as_json:
        console.print_json(json.dumps(manifest.model_dump(mode="json")))
        return
    table = Table(title=f"{manifest.name} v{manifest.version}  ({folder})", show_header=False)
    schema, data = manifest.feature_schema, manifest.training_data
    facts = {
        "created": manifest.created_at,
        "mode": schema.mode,
        "features": ", ".join(c.name for c in schema.columns),
        "keys": ", ".join(schema.key_columns) or "-",
        "window": _readable(schema.window.model_dump()) if schema.window else "-",
        "missing values": schema.missing,
        "reading": _readable(
            {**schema.csv.model_dump(exclude_defaults=True), **({"time_zone": schema.time_zone} if schema.time_zone else {})}
        ),
        "inputs": str(len(manifest.input_names)),
        "model": _readable(manifest.model),
        "score": manifest.score_definition,
        "threshold": f"{manifest.threshold.value:.4f} ({manifest.threshold.method}"
        + (f" {_readable(manifest.threshold.parameters)}" if manifest.threshold.parameters else "")
        + (f"; {rule.k} of the last {rule.n} rows" if (rule := manifest.threshold.persistence).n > 1 else "")
        + ")"
        + (f" {manifest.threshold.note}" if manifest.threshold.note else ""),
        "lineage": _readable(manifest.lineage),
        "training data": f"{data.get('rows'):,} rows, sha256 {data.get('sha256', '')[:12]}…",
        # the percentile table's 112 values are for the runtime; --json shows them
        "validation": _readable(manifest.validation.model_dump(exclude={"score_percentiles"}, exclude_none=True)),
        "opset": str(manifest.opset),
        "files": ", ".join(manifest.files),
        "versions": _readable(manifest.library_versions),
        # installed is not usable: onnxruntime-gpu lists CUDA and TensorRT on machines without a GPU
        "providers": f"{', '.join(select_providers('auto'))} usable here (installed: "
        f"{', '.join(ort.get_available_providers())})",
    }
    for key, value in facts.items():
        table.add_row(key, value)
    console.print(table)


@app.command()
def runtime(as_json: Annotated[bool, AS_JSON] = False) -> None:
    """Which onnxruntime build scoring uses (onnxruntime or onnxruntime-gpu), its providers, and
    which of them work here: the check after installing the `gpu` extra (README, "Installs by role")."""
    from pipeline.runtime.providers import runtime_facts

    facts = runtime_facts()
    if as_json:
        print_json(facts)
        return
    console.print(f"active: {facts['active']} {facts['version']}", highlight=False)
    console.print(f"providers: {', '.join(facts['providers'])}; usable here: {', '.join(facts['usable'])}", soft_wrap=True)
    if facts["both_installed"]:
        console.print(
            "warning: onnxruntime and onnxruntime-gpu are both installed and share one folder; keep one: "
            "pip uninstall -y onnxruntime && pip install --force-reinstall --no-deps onnxruntime-gpu",
            highlight=False,
            markup=False,
        )


def _readable(value: object) -> str:
    """A manifest value as a person reads it: `key: value` pairs, lists joined, numbers to 4
    significant digits, no JSON braces or Python reprs (newcomer review N22); "-" when empty."""
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_nested(item)}" for key, item in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(_readable(item) for item in value) or "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _nested(value: object) -> str:
    return f"({_readable(value)})" if isinstance(value, dict) else _readable(value)


@app.command()
def versions(
    model: Annotated[Path, typer.Argument(help="Model folder (holding its numbered versions).")],
    as_json: Annotated[bool, AS_JSON] = False,
) -> None:
    """List a model's versions: lineage (parent, what changed, the data), threshold, the
    promotion decisions, and which one is `latest`."""
    from pipeline.artifact.versions import latest_version, list_versions, read_decisions

    if not model.is_dir():
        raise PipelineError(f"model folder '{model}' does not exist.")
    manifests, decisions, latest = list_versions(model), read_decisions(model), latest_version(model)
    rows = [
        {
            "version": m.version,
            "latest": m.version == latest,
            "created": m.created_at,
            "parent": m.lineage.get("parent_version"),
            "change": m.lineage.get("change", "trained"),
            "data": m.lineage.get("data") or {"files": m.training_data.get("files"), "rows": m.training_data.get("rows")},
            "threshold": m.threshold.value,
            "decision": decided.model_dump() if (decided := decisions.get(m.version)) else None,
        }
        for m in manifests
    ]
    if as_json:
        print_json({"model": str(model), "latest": latest, "versions": rows})
        return
    print_versions(model.name, latest, rows)


def print_versions(name: str, latest: str | None, rows: list[dict]) -> None:
    """`vad versions` for a person: one row per version, then each decision's reasons."""
    table = Table(title=f"{name}: {len(rows)} version(s), latest = {latest}")
    for column in ("version", "created", "parent", "change", "trained on", "threshold", "decision"):
        table.add_column(column, no_wrap=column not in ("change", "trained on"))
    for row in rows:
        data, decision = row["data"], row["decision"]
        source = (
            Path(data["source"]).name if data.get("source") else ", ".join(Path(f).name for f in data.get("files") or [])
        )
        table.add_row(
            row["version"] + (" *" if row["latest"] else ""),
            row["created"][:10],
            row["parent"] or "-",
            row["change"],
            f"{source}, {data.get('rows')} rows",
            f"{row['threshold']:.4g}",
            decision["decision"] if decision else "-",
        )
    console.print(table)
    console.print("* latest")
    for row in rows:  # each decision's reasons, one per line, below the table
        if row["decision"]:
            console.print(f"v{row['version']} {row['decision']['decision']} ({row['decision']['at']}):")
            for reason in row["decision"]["reasons"]:
                console.print(f"  {reason}", markup=False, highlight=False)


@app.command()
def release(
    batch: Annotated[str, typer.Argument(help="The set-aside batch: its file name or path in the inbox.")],
    outbox: Annotated[Path, typer.Option(help="The scoring outbox (holding ledger.sqlite).")] = Path("runs/scoring"),
    model: Annotated[Optional[str], typer.Option(help="Only this model's batches (name, or name/version).")] = None,
    as_json: Annotated[bool, AS_JSON] = False,
) -> None:
    """Take a set-aside (failed) batch again on the next scoring run, with a fresh attempt
    budget: after the data was corrected in place, or the host was given more memory."""
    from pipeline.ops.inbox import LEDGER_FILE, open_ledger

    if not (outbox / LEDGER_FILE).is_file():
        raise PipelineError(f"'{outbox}' holds no ledger ('{LEDGER_FILE}'): name the scoring flow's outbox.")
    released = open_ledger(outbox).retry_dead_letters(batch, model)
    if not released:
        raise PipelineError(f"no failed batch named '{batch}' in {outbox / LEDGER_FILE}.")
    if as_json:
        print_json({"batch": batch, "released": released})
    else:
        console.print(f"{batch}: {released} set-aside batch record(s) released; the next run scores it again.")


@app.command(name="dead-letters")
def dead_letters(
    outbox: Annotated[Path, typer.Option(help="The scoring outbox (holding ledger.sqlite).")] = Path("runs/scoring"),
    resend: Annotated[Optional[str], typer.Option(help="Owe this alert id again to the sinks that refused it.")] = None,
    as_json: Annotated[bool, AS_JSON] = False,
) -> None:
    """Alerts a sink refused (HTTP 4xx) three times, set aside with its reason; `--resend ID`
    sends one again on the next scoring run (after the sink or its block was fixed)."""
    from pipeline.ops.inbox import LEDGER_FILE, open_ledger

    if not (outbox / LEDGER_FILE).is_file():
        raise PipelineError(f"'{outbox}' holds no ledger ('{LEDGER_FILE}'): name the scoring flow's outbox.")
    ledger = open_ledger(outbox)
    if resend is not None:
        owed = ledger.resend(resend)
        if not owed:
            raise PipelineError(f"alert {resend!r} is not a dead letter in {outbox / LEDGER_FILE}.")
        print_json({"resend": resend, "sinks": owed}) if as_json else console.print(
            f"alert {resend}: owed again to {owed} sink(s); the next scoring run sends it."
        )
        return
    letters = ledger.dead_letters()
    if as_json:
        print_json({"dead_letters": letters})
        return
    table = Table(title=f"dead letters in {outbox / LEDGER_FILE}")
    for column in ("alert id", "sink", "refusals", "last reason"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        table.add_row(letter["alert_id"], letter["sink"], str(letter["attempts"]), letter["reason"])
    console.print(table if letters else "no dead letters: every refused alert was delivered or is still tried.")


@app.command()
def serve(  # noqa: PLR0913 - a command's options are its signature
    model: Annotated[Path, typer.Argument(help="Model folder (its latest version) or a version folder.")],
    inbox: Annotated[Path, typer.Argument(help="The folder batches are dropped into (it must exist).")],
    outbox: Annotated[Path, typer.Option(help="Scores, ledger and alerts go here.")] = Path("runs/scoring"),
    interval: Annotated[float, typer.Option(min=1, help="Seconds between scheduled runs.")] = 60.0,
    sink: Annotated[Optional[list[str]], typer.Option(help="Alert sink: prefect-event or a block slug.")] = None,
    archive: Annotated[Optional[Path], typer.Option(help="Move each scored batch's file here.")] = None,
    port: Annotated[int, typer.Option(help="Port of the local Prefect server (when PREFECT_API_URL is unset).")] = 4200,
) -> None:
    """Score every batch dropped into INBOX with MODEL, on a schedule, until interrupted: a local
    Prefect server on 127.0.0.1 (its UI address printed) and the scheduled deployment. The
    model and the inbox are checked first. The same as `python -m flows.serve`."""
    import importlib.util
    import os
    import sys

    if importlib.util.find_spec("prefect") is None:  # said here: the exec'd process would show a traceback
        raise ModuleNotFoundError("No module named 'prefect'", name="prefect")  # main() names the extra
    command = [sys.executable, "-m", "flows.serve", "--model", str(model), "--inbox", str(inbox)]
    command += ["--outbox", str(outbox), "--interval", str(interval), "--port", str(port)]
    for name in sink or ["prefect-event"]:
        command += ["--sink", name]
    command += ["--archive", str(archive)] if archive is not None else []
    os.execv(sys.executable, command)  # this process becomes the server's keeper: Ctrl-C reaches it as before


@app.command()
def sample(
    model: Annotated[Path, typer.Argument(help="Model version folder, or a model folder.")],
    n: Annotated[int, typer.Option("-n", min=1, help="Rows to generate.")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    output: Annotated[Optional[Path], typer.Option(help="Write to a .parquet/.csv/.ndjson file.")] = None,
) -> None:
    """Synthetic normal rows: the decoder's means at z ~ N(0, I). They are the most likely row
    of each draw, not draws of the noise: their spread is narrower than the data's, a
    category is the most likely one, and integer columns come back as decimals."""
    from pipeline.data.ingest import write_frame
    from pipeline.runtime import Scorer

    frame = Scorer.load(model).sample(n, seed)
    console.print(f"wrote {write_frame(frame, output)}" if output else frame)


@app.command()
def encode(
    model: Annotated[Path, typer.Argument(help="Model version folder, or a model folder.")],
    source: Annotated[str, typer.Argument(help="Data to embed: a file, glob or folder.")],
    output: Annotated[Optional[Path], typer.Option(help="Write to a .parquet/.csv/.ndjson file.")] = None,
) -> None:
    """Latent vectors (the encoder's means) for each row."""
    import polars as pl

    from pipeline.data.ingest import read_file, resolve_sources, write_frame
    from pipeline.runtime import Scorer

    scorer = Scorer.load(model)
    frames = [scorer.encode(read_file(f, scorer.schema.source_columns, scorer.schema.csv)) for f in resolve_sources(source)]
    frame = pl.concat(frames)
    console.print(f"wrote {write_frame(frame, output)}" if output else frame)


def _version(show: bool) -> None:
    if show:
        from importlib import metadata

        try:
            version = metadata.version("vae-pipeline")
        except metadata.PackageNotFoundError:  # run from a checkout that was never installed
            from pipeline import __version__ as version
        console.print(f"vad {version}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """VAE anomaly detection: polars ingest, PyTorch training, ONNX export, onnxruntime scoring."""


class _Notes(logging.Formatter):
    """`note:` for the decisions training makes about the data's columns (schema learning logs
    them as warnings, so a library user sees them too), `warning:` and `error:` for the rest."""

    def format(self, record: logging.LogRecord) -> str:
        kind = "note" if record.name == "pipeline.data.schema" else record.levelname.lower()
        return f"{kind}: {record.getMessage()}"


def main(argv: list[str] | None = None) -> None:
    """Console entry point for `vad`."""
    handler = logging.StreamHandler()
    handler.setFormatter(_Notes())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    args = sys.argv[1:] if argv is None else argv
    exit_on_user_error(lambda: app(args=argv, standalone_mode=True), as_json="--json" in args)


if __name__ == "__main__":
    main()
