"""Prefect flow `vad-retrain`: train a challenger on recent data (rows the champion flags
left out), compare it with the champion on the latest recent rows, which neither was
trained on, and promote it (move `latest`) only when it passes the config's `[promotion]`
rules. Each task wraps one `pipeline.training.promotion` call; the decision and its reasons
are an artifact, and `vad versions MODEL` lists every version with its parent, data and
decision.

The challenger is trained as the champion was: its manifest keeps every option and settled
default, so no TOML is needed; one given changes only the sections it names.

Run:  python -m flows.retrain data/recent/ --model exported/demo-sensors"""

import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import typer
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from pipeline.artifact.manifest import RETRAIN_PREFIX, resolve_model_dir
from pipeline.artifact.versions import Decision
from pipeline.core.config import PipelineConfig, PromotionRules
from pipeline.core.errors import exit_on_user_error
from pipeline.runtime import Scorer
from pipeline.training import promotion


@task(cache_policy=NO_CACHE)
def split_recent(
    source: str, champion_dir: str, rules: PromotionRules, folder: str, label_column: Optional[str]
) -> promotion.RecentSplit:
    return promotion.split_recent(source, Scorer.load(champion_dir), rules, Path(folder), label_column)


@task(cache_policy=NO_CACHE)
def train_challenger(split: promotion.RecentSplit, config: PipelineConfig, champion_dir: str, source: str) -> str:
    return str(promotion.train_challenger(split, config, Scorer.load(champion_dir), source))


@task(cache_policy=NO_CACHE)
def compare(champion_dir: str, challenger_dir: str, holdout_file: str, label_column: Optional[str]) -> promotion.Comparison:
    return promotion.compare(Scorer.load(champion_dir), Scorer.load(challenger_dir), Path(holdout_file), label_column)


@task(cache_policy=NO_CACHE)
def settle(champion_dir: str, challenger_dir: str, comparison: promotion.Comparison, config: PipelineConfig) -> Decision:
    return promotion.settle(Scorer.load(champion_dir), Path(challenger_dir), comparison, config.promotion)


def decision_markdown(
    decision: Decision, champion: str, split: promotion.RecentSplit, comparison: promotion.Comparison
) -> str:
    verdict = "promoted: `latest` now points at it" if decision.promoted else "rejected: `latest` stays on the champion"
    return "\n".join(
        [
            f"# Challenger v{decision.version} against champion v{champion}: {verdict}",
            "",
            f"Trained on {split.train_rows} recent rows ({split.left_out} the champion flagged were left out); "
            f"compared on {comparison.rows} held-out recent normal rows.",
            "",
            "| rule | verdict |",
            "|---|---|",
            *[f"| {r.split(': ', 1)[1]} | {r.split(': ', 1)[0]} |" for r in decision.reasons],
            "",
        ]
    )


@flow(name="vad-retrain")
def retrain_flow(
    source: str,
    model: str = "exported/demo-sensors",
    config: Optional[str] = None,
    epochs: Optional[int] = None,
) -> dict[str, Any]:
    """Retrain `model` on `source` (recent data: file, glob or folder) and promote the
    challenger only if it passes the rules; returns the decision. The challenger is trained
    as the champion was (its kept configuration), with `config`'s sections over it."""
    logger = get_run_logger()
    champion_dir = str(resolve_model_dir(model))
    cfg = promotion.champion_config(Scorer.load(champion_dir), config, train={"progress": False, "epochs": epochs})
    # Named with this pid, so that the next export removes it if this run is killed (N22).
    with tempfile.TemporaryDirectory(prefix=f"{RETRAIN_PREFIX}{os.getpid()}-", dir=Path(champion_dir).parent) as folder:
        split = split_recent(source, champion_dir, cfg.promotion, folder, cfg.data.label_column)
        logger.info(
            "challenger trains on %d rows (%d flagged by the champion left out); %d held out",
            split.train_rows,
            split.left_out,
            split.holdout_rows,
        )
        challenger_dir = train_challenger(split, cfg, champion_dir, source)
        comparison = compare(champion_dir, challenger_dir, str(split.holdout_file), cfg.data.label_column)
    decision = settle(champion_dir, challenger_dir, comparison, cfg)
    for reason in decision.reasons:
        logger.info("%s", reason)
    logger.info("challenger v%s %s", decision.version, decision.decision)
    create_markdown_artifact(
        key="vad-retraining",
        markdown=decision_markdown(decision, Path(champion_dir).name, split, comparison),
        description=f"Retraining decision for {Path(champion_dir).parent.name}",
    )
    return {  # JSON: the run's result in Prefect
        **decision.model_dump(mode="json"),
        "split": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(split).items()},
    }


def main(
    source: str = typer.Argument(..., help="Recent data: file, glob or folder."),
    model: str = typer.Option("exported/demo-sensors", help="Model folder (its latest version is the champion)."),
    config: Optional[str] = typer.Option(
        None, help="TOML sections over the champion's own training configuration ([promotion] rules, train, ...)."
    ),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs for the challenger."),
) -> None:
    """Run the retraining flow once."""
    decision = Decision.model_validate(retrain_flow(source=source, model=model, config=config, epochs=epochs))
    print(f"challenger v{decision.version}: {decision.decision}")
    for reason in decision.reasons:
        print(f"  {reason}")


if __name__ == "__main__":
    exit_on_user_error(lambda: typer.run(main))
