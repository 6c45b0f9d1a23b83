"""Prefect's server on PostgreSQL (started here from the system's packages, on loopback), the
scheduled scoring deployment on a process work pool, and a worker that runs it: a dropped
batch is scored once, and the run is recorded in PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prefect_helpers import FAST_PREFECT, ROOT, drop_into, free_port, wait_until

from flows.serve import wait_for_server
from pipeline.ops.inbox import open_ledger

pytestmark = pytest.mark.slow
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def pg_command(name: str) -> str:
    found = shutil.which(name) or (str(PG_BIN / name) if (PG_BIN / name).exists() else None)
    if found is None:
        pytest.skip(f"PostgreSQL's `{name}` is not installed (apt install postgresql)")
    return found


def as_postgres_user(command: list[str]) -> list[str]:
    """initdb refuses to run as root: run the cluster as the `postgres` system user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1; yields its SQLAlchemy URL for Prefect."""
    initdb, pg_ctl = pg_command("initdb"), pg_command("pg_ctl")
    folder = Path(tempfile.mkdtemp(prefix="vad-pg-"))  # in /tmp: the postgres user must reach it
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(
        as_postgres_user([initdb, "-D", str(data), "-A", "trust", "-U", "postgres"]),
        check=True,
        capture_output=True,
        timeout=120,
    )
    subprocess.run(
        as_postgres_user(
            [
                pg_ctl,
                "-D",
                str(data),
                "-l",
                str(folder / "log"),
                "-w",
                "-o",
                f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={folder}",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_postgres_user([pg_ctl, "-D", str(data), "-m", "fast", "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_prefect(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("prefect-pg-home")
    port = free_port()
    env = {
        **os.environ,
        **FAST_PREFECT,
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": postgres,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
    }
    env.pop("PREFECT_API_URL", None)
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent)) or "prefect"
    with (home / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        wait_for_server(api_url, timeout=180, process=server)
        yield {**env, "PREFECT_API_URL": api_url, "PREFECT": prefect}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_deployment_on_a_process_pool_scores_with_postgres_behind_the_server(
    postgres: str, postgres_prefect: dict[str, str], inbox_batches: dict[str, Path], sensor_model: Path, tmp_path: Path
) -> None:
    env = postgres_prefect
    prefect = env["PREFECT"]
    subprocess.run(
        [prefect, "work-pool", "create", "vad-pool", "--type", "process"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    deployed = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.deploy",
            "--pool",
            "vad-pool",
            "--inbox",
            str(inbox),
            "--outbox",
            str(outbox),
            "--model",
            str(sensor_model),
            "--interval",
            "3",
            "--name",
            "pg-scoring",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    with (tmp_path / "worker.log").open("wb") as log:
        worker = subprocess.Popen(
            [prefect, "worker", "start", "--pool", "vad-pool", "--type", "process"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        drop_into(inbox, inbox_batches["faulty"])
        ledger = open_ledger(outbox)
        wait_until(
            lambda: [b["status"] for b in ledger.batches()] == ["done"],
            300,
            f"the batch scored by the worker (log: {tmp_path / 'worker.log'})",
        )
        # The ledger says done a moment before the run reports its final state: wait for that
        # state before stopping the worker, whose process group the run belongs to.
        wait_until(
            lambda: any(run["work_pool_name"] == "vad-pool" for run in completed_runs(env)),
            120,
            "a completed flow run from the vad-pool work pool",
        )
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=60)
    assert len(ledger.alerts()) == 1
    port = postgres.rsplit(":", 1)[1].split("/")[0]
    stored = subprocess.run(
        [
            pg_command("psql"),
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-U",
            "postgres",
            "-tAc",
            "SELECT count(*) FROM flow_run WHERE state_type = 'COMPLETED'",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert int(stored.stdout.strip()) >= 1  # the server's state lives in PostgreSQL


def completed_runs(env: dict[str, str]) -> list[dict]:
    """Flow runs the server lists as COMPLETED."""
    return httpx.post(
        f"{env['PREFECT_API_URL']}/flow_runs/filter",
        json={"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}},
        timeout=30,
    ).json()
