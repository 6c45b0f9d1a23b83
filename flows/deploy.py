"""Create the scheduled scoring deployment on a work pool of a real Prefect server (for
`prefect worker start`), instead of serving it from one process (`flows.serve`).

    prefect work-pool create vad --type process
    python -m flows.deploy --pool vad --inbox /data/inbox --outbox /data/scores --model /models/demo --interval 60
    prefect worker start --pool vad

The worker runs the flow from this checkout (`flow.from_source` on its folder), so every
worker machine needs the project installed at the same path, or point `--source` at a git URL."""

from pathlib import Path
from typing import Optional

import typer

ROOT = Path(__file__).resolve().parents[1]


def deploy_scoring(  # noqa: PLR0913 - the deployment's settings, one per `main` option
    pool: str,
    inbox: str,
    outbox: str,
    model: str,
    sinks: list[str],
    interval: Optional[float],
    cron: Optional[str],
    name: str,
    source: str = str(ROOT),
    archive: Optional[str] = None,
) -> str:
    """Create or update the deployment; returns its id."""
    from prefect import flow

    remote = flow.from_source(source=source, entrypoint="flows/score.py:score_flow")
    schedule = {"cron": cron} if cron else {"interval": interval or 60}
    # sync_compatible methods: Flow and RunnerDeployment objects here, not coroutines.
    deployment = remote.to_deployment(  # type: ignore[union-attr]
        name=name,
        work_pool_name=pool,
        parameters={"inbox_path": inbox, "outbox": outbox, "model": model, "sinks": sinks, "archive": archive},
        **schedule,
    )
    # apply() registers it; `flow.deploy()` would also list the pool's workers, a call that
    # Prefect 3.8's client sends with null paging, which its own server rejects (422).
    return str(deployment.apply())  # type: ignore[union-attr]


def main(  # noqa: PLR0913 - a command's options are its signature
    pool: str = typer.Option(..., help="Work pool (type process) the runs go to."),
    inbox: str = typer.Option(..., help="Folder or glob the batches are dropped into."),
    outbox: str = typer.Option(..., help="Scores, ledger and alerts go here."),
    model: str = typer.Option(..., help="Model folder (its latest version) or a version folder."),
    sink: list[str] = typer.Option(["prefect-event"], help="Alert sink: prefect-event or a block slug."),
    interval: Optional[float] = typer.Option(60.0, help="Seconds between scheduled runs."),
    cron: Optional[str] = typer.Option(None, help="Cron schedule instead of an interval."),
    name: str = typer.Option("scheduled-scoring", help="Deployment name."),
    source: str = typer.Option(str(ROOT), help="Where workers get the code: this folder or a git URL."),
    archive: Optional[str] = typer.Option(None, help="Move each scored batch's file here (beside the inbox, not in it)."),
) -> None:
    """Create the scheduled scoring deployment on a work pool."""
    print(deploy_scoring(pool, inbox, outbox, model, sink, interval, cron, name, source, archive))


if __name__ == "__main__":
    typer.run(main)
