"""Scheduled batch scoring: one command creates the `vad-score/scheduled-scoring` deployment
with an interval (or cron) schedule and serves it from this process.

    python -m flows.serve --inbox data/inbox --model exported/demo-sensors --interval 60

With no PREFECT_API_URL set, it first starts a local Prefect server (SQLite, on loopback)
and prints the UI address; with one set, it uses that server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Optional

import httpx
import typer

DEFAULT_PORT = 4200
DEPLOYMENT = "scheduled-scoring"


def wait_for_server(api_url: str, timeout: float = 120.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `/health` until the API answers (or the server process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {process.returncode}; see its log.")
        try:
            if httpx.get(f"{api_url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"no Prefect API at {api_url} after {timeout:.0f} s")


def start_local_server(
    port: int = DEFAULT_PORT, log_file: Path = Path("runs/prefect-server.log")
) -> tuple[subprocess.Popen[bytes], str]:
    """`prefect server start` on 127.0.0.1 in the background; returns (process, API URL)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    process = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log_file.open("ab"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    api_url = f"http://127.0.0.1:{port}/api"
    wait_for_server(api_url, process=process)
    return process, api_url


def check_inputs(model: str, inbox: str) -> None:
    """Refuse, before any server starts or any tick runs, a model that does not load and an inbox
    that does not exist (N7: serving started, and every tick failed with a traceback; a
    mistyped inbox was created and reported 0 batches for ever)."""
    from pipeline.artifact.manifest import read_manifest, resolve_model_dir  # here: `--help` stays fast
    from pipeline.core.errors import DataError
    from pipeline.data.ingest import is_glob

    read_manifest(resolve_model_dir(model))
    if not is_glob(inbox) and not Path(inbox).is_dir():
        raise DataError(f"the inbox '{inbox}' does not exist: create it first (mkdir -p {inbox}), or check its spelling.")


def serve_scoring(  # noqa: PLR0913 - the deployment's settings, one per `main` option
    inbox: str,
    outbox: str,
    model: str,
    sinks: list[str],
    interval: Optional[float],
    cron: Optional[str],
    name: str = DEPLOYMENT,
    archive: Optional[str] = None,
) -> None:
    """Create (or update) the deployment and run its scheduled flow runs until interrupted."""
    from flows.score import score_flow

    schedule = {"cron": cron} if cron else {"interval": timedelta(seconds=interval or 60)}
    parameters = {"inbox_path": inbox, "outbox": outbox, "model": model, "sinks": sinks, "archive": archive}
    score_flow.serve(name=name, parameters=parameters, limit=1, **schedule)


def main(  # noqa: PLR0913 - a command's options are its signature
    inbox: str = typer.Option("data/inbox", help="Folder or glob the batches are dropped into."),
    outbox: str = typer.Option("runs/scoring", help="Scores, ledger and alerts go here."),
    model: str = typer.Option("exported/demo-sensors", help="Model folder (its latest version) or a version folder."),
    sink: list[str] = typer.Option(["prefect-event"], help="Alert sink: prefect-event or a block slug (repeatable)."),
    interval: Optional[float] = typer.Option(60.0, help="Seconds between scheduled runs."),
    cron: Optional[str] = typer.Option(None, help="Cron schedule instead of an interval."),
    port: int = typer.Option(DEFAULT_PORT, help="Port of the local server started when PREFECT_API_URL is unset."),
    name: str = typer.Option(DEPLOYMENT, help="Deployment name: one per inbox when several are served."),
    archive: Optional[str] = typer.Option(None, help=("Move each scored batch's file here (beside the inbox, not in it).")),
) -> None:
    """Serve the scheduled scoring deployment (starting a local Prefect server if needed)."""
    check_inputs(model, inbox)
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        server, api_url = start_local_server(port)
        os.environ["PREFECT_API_URL"] = api_url
        print(f"Prefect UI: http://127.0.0.1:{port}  (runs: Runs; reports: Artifacts; alerts: Events)", flush=True)
    try:
        serve_scoring(inbox, outbox, model, sink, interval, cron, name, archive)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    from pipeline.core.errors import exit_on_user_error

    exit_on_user_error(lambda: typer.run(main))
