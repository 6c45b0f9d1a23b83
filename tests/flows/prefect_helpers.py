"""Helpers for the flow tests: loopback ports, a webhook receiver, Prefect blocks, inbox drops."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
FAST_PREFECT = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebhookReceiver:
    """Records the JSON bodies POSTed to it, and answers each with `status` (a failing sink: 500)."""

    def __init__(self, status: int = 204) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args) -> None:  # keep test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def save_webhook_block(env: dict[str, str], url: str, name: str) -> str:
    """A Prefect Custom Webhook notification block on the server; returns its slug."""
    code = (
        "from prefect.blocks.notifications import CustomWebhookNotificationBlock as B; "
        f"B(name={name!r}, url={url!r}, json_data={{'subject': '{{{{subject}}}}', 'body': '{{{{body}}}}'}})"
        f".save({name!r}, overwrite=True)"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ROOT, timeout=120)
    return f"custom-webhook/{name}"


def score_command(inbox: Path, outbox: Path, model: Path, sinks: list[str], *options: str) -> list[str]:
    """`python -m flows.score` once, as an operator runs it, for these folders and sinks."""
    sink_args = [arg for name in sinks for arg in ("--sink", name)]
    return [
        sys.executable,
        "-m",
        "flows.score",
        "--inbox",
        str(inbox),
        "--outbox",
        str(outbox),
        "--model",
        str(model),
        *sink_args,
        *options,
    ]


def drop_into(inbox: Path, batch: Path) -> None:
    """Copy under a hidden name, then rename: the inbox never shows a half-written file."""
    inbox.mkdir(parents=True, exist_ok=True)
    hidden = inbox / f".{batch.name}.part"
    hidden.write_bytes(batch.read_bytes())
    hidden.rename(inbox / batch.name)


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextmanager
def served_deployment(
    env: dict[str, str], inbox: Path, outbox: Path, model: Path, sinks: list[str], interval: float, name: str
) -> Iterator[subprocess.Popen]:
    """`python -m flows.serve` in its own process group (its log beside the outbox), stopped
    with SIGTERM, then SIGKILL, on the way out. A name per test: a reused deployment would
    first work through runs the server scheduled ahead for another test's parameters."""
    inbox.mkdir(parents=True, exist_ok=True)
    outbox.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "flows.serve",
        "--inbox",
        str(inbox),
        "--outbox",
        str(outbox),
        "--model",
        str(model),
        "--interval",
        str(interval),
        "--name",
        name,
    ]
    for sink in sinks:
        command += ["--sink", sink]
    with (outbox.parent / f"serve-{name}.log").open("wb") as log:
        serve = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield serve
        finally:
            os.killpg(serve.pid, signal.SIGTERM)
            try:
                serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
