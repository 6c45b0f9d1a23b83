"""The scoring flow under faults, as a schedule runs it (issue 33's soak), in one command:

    python bench/soak.py            # prints the table, writes the "Soak" section of BENCHMARKS.md

200 batches of the demo fleet arrive in 8 waves; after each wave `python -m flows.score` runs
once against a real local Prefect server (a schedule's tick), then two more runs drain what is
left. Two scenarios, on the same batches, in one run:

- clean: two working sinks (a Prefect event and a webhook);
- faulty: the same, plus a webhook that always answers 500, a webhook that hangs past its
  timeout, a batch that kills its scoring process every time (`VAD_CRASH_AT=read@<its name>`,
  the out-of-memory killer), and, where the host lets it mount a tmpfs, the outbox's disk
  (the ledger's) filled before one wave and freed before the next.

It checks what the issue asks (every good batch scored once, every alert delivered once to each
working sink, the poison batch set aside after its budget) and reports the faulty run's wall
time against the clean one's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import typer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sections import markdown_blocks, print_blocks, replace_section  # noqa: E402

from flows.serve import start_local_server  # noqa: E402
from pipeline.ops.inbox import open_ledger  # noqa: E402
from pipeline.ops.ledger import MAX_ATTEMPTS  # noqa: E402

DATA = ROOT / "data"
BATCHES, WAVES, ROWS = 200, 8, 120
POISON = "batch-017.parquet"  # in the first wave: every run that reaches it dies
FULL_WAVE = 4  # the outbox's disk is full while this wave is scored, and freed for the next
PREFECT = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}


class Receiver:
    """A webhook on loopback that answers `status` (or never, `hang`), keeping the alert ids."""

    def __init__(self, status: int = 204, hang: float = 0.0) -> None:
        self.alert_ids: list[str] = []
        self.posts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                receiver.posts += 1
                if hang:
                    time.sleep(hang)
                if status < 300:
                    receiver.alert_ids += [
                        line.removeprefix("alert id: ")
                        for line in body["body"].splitlines()
                        if line.startswith("alert id: ")
                    ]
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def save_webhook(env: dict[str, str], url: str, name: str, timeout: float = 5.0) -> str:
    code = (
        "from prefect.blocks.notifications import CustomWebhookNotificationBlock as B; "
        f"B(name={name!r}, url={url!r}, timeout={timeout}, "
        f"json_data={{'subject': '{{{{subject}}}}', 'body': '{{{{body}}}}'}}).save({name!r}, overwrite=True)"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=ROOT, timeout=120)
    return f"custom-webhook/{name}"


def cut_batches(folder: Path) -> list[Path]:
    """BATCHES distinct batches of the demo fleet's history; every 10th with a pressure
    sensor stuck high, so about a tenth of them alert."""
    history = pl.read_parquet(DATA / "sensors" / "history.parquet").drop("label", "anomaly_kind")
    machines = history.partition_by("machine", maintain_order=True)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(BATCHES):
        start = (i // len(machines)) * (ROWS // 2) % (machines[0].height - ROWS)
        batch = (
            machines[i % len(machines)].slice(start, ROWS).with_columns(pl.col("timestamp") + pl.duration(days=7 * i))
        )  # a week apart: no cooldown joins two alerts
        if i % 10 == 3:
            batch = (
                batch.with_row_index()
                .with_columns(
                    pressure=pl.when(pl.col("index") >= 40)
                    .then(pl.col("pressure").max() * 1.5)
                    .otherwise(pl.col("pressure"))
                )
                .drop("index")
            )
        paths.append(folder / f"batch-{i:03d}.parquet")
        batch.write_parquet(paths[-1])
    return paths


def tiny_disk(folder: Path) -> bool:
    """Mount a 64 MiB tmpfs on `folder` (root only); False where the host does not allow it."""
    folder.mkdir(parents=True, exist_ok=True)
    done = (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)], capture_output=True, check=False)
        if shutil.which("mount")
        else None
    )
    return done is not None and done.returncode == 0


def scenario(env: dict[str, str], model: Path, batches: list[Path], work: Path, sinks: list[str], faulty: bool) -> dict:
    """Deliver the batches in waves, one flow run per wave, two more to drain; what happened."""
    inbox, outbox = work / "inbox", work / "outbox"
    inbox.mkdir(parents=True)
    mounted = faulty and tiny_disk(outbox)
    per_wave = -(-len(batches) // WAVES)
    runs, killed, started = [], 0, time.perf_counter()
    for wave in range(WAVES + 2):
        for path in batches[wave * per_wave : (wave + 1) * per_wave]:
            shutil.copy(path, inbox / f".{path.name}.part")
            (inbox / f".{path.name}.part").rename(inbox / path.name)
        filler = outbox / "filler"
        if mounted and wave == FULL_WAVE:
            filler.write_bytes(b"\0" * max(shutil.disk_usage(outbox).free - 8192, 0))
        elif mounted and wave == FULL_WAVE + 1:
            filler.unlink(missing_ok=True)
        command = [
            sys.executable,
            "-m",
            "flows.score",
            "--inbox",
            str(inbox),
            "--outbox",
            str(outbox),
            "--model",
            str(model),
            *[arg for sink in sinks for arg in ("--sink", sink)],
        ]
        run_env = env | ({"VAD_CRASH_AT": f"read@{POISON}"} if faulty else {})
        done = subprocess.run(command, env=run_env, cwd=ROOT, capture_output=True, text=True, timeout=900)
        killed += done.returncode == -9
        runs.append(done.returncode)
    wall = time.perf_counter() - started
    ledger = open_ledger(outbox)
    batches_seen = {Path(b["file"]).name: b for b in ledger.batches()}
    alerts = [a["alert_id"] for a in ledger.alerts()]
    result = {
        "wall": wall,
        "runs": runs,
        "killed": killed,
        "mounted": mounted,
        "batches": batches_seen,
        "alerts": alerts,
        "outbox": outbox,
    }
    return result


def verdicts(clean: dict, faulty: dict, good: list[str], receivers: dict[str, Receiver]) -> list[tuple[str, str, str]]:
    rows = []
    for name, result in (("clean", clean), ("faulty", faulty)):
        done = [n for n in good if result["batches"].get(n, {}).get("status") == "done"]
        once = [n for n in done if result["batches"][n]["claims"] == 1]
        rows.append(
            (
                f"{name}: good batches scored",
                f"{len(done)} of {len(good)}",
                f"{len(once)} on their first claim; runs' exit codes {sorted(set(result['runs']))}",
            )
        )
    poison = faulty["batches"].get(POISON, {})
    rows.append(
        (
            "faulty: the poison batch",
            f"{poison.get('status')} after {poison.get('claims')} claims",
            f"budget {MAX_ATTEMPTS}; {faulty['killed']} runs killed by it",
        )
    )
    notes = {
        "hanging webhook": "answers after 30 s, past the sink's 5 s timeout: each counts as failed, the breaker pauses it",
        "failing webhook (500)": "the breaker pauses it",
    }
    for name, receiver in receivers.items():
        ids = receiver.alert_ids
        rows.append(
            (
                f"{name}: alerts received",
                f"{len(set(ids))} distinct of {len(ids)}",
                f"{receiver.posts} posts in all" + (f"; {notes[name]}" if name in notes else ""),
            )
        )
    rows.append(("alerts recorded", f"clean {len(clean['alerts'])}, faulty {len(faulty['alerts'])}", ""))
    rows.append(
        (
            "the ledger's disk filled before one wave and freed",
            "yes" if faulty["mounted"] else "not tried (no tmpfs mount here)",
            f"wave {FULL_WAVE}",
        )
    )
    rows.append(
        ("wall time, faulty / clean", f"{faulty['wall'] / clean['wall']:.2f}x", f"bar: at most 1.5x ({WAVES + 2} runs each)")
    )
    return rows


def main(write: bool = typer.Option(True, help="Write the Soak section of BENCHMARKS.md.")) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vad-soak-") as tmp:
        work = Path(tmp)
        home = work / "prefect-home"
        os.environ.update(PREFECT | {"PREFECT_HOME": str(home)})
        server, api_url = start_local_server(8265, log_file=home / "server.log")
        env = {**os.environ, "PREFECT_API_URL": api_url}
        receivers = {
            "clean webhook": Receiver(),
            "faulty run's working webhook": Receiver(),
            "failing webhook (500)": Receiver(status=500),
            "hanging webhook": Receiver(hang=30.0),
        }
        try:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pipeline.cli",
                    "train",
                    str(DATA / "sensors" / "history.parquet"),
                    "--config",
                    str(DATA / "sensors.toml"),
                    "--out",
                    str(work / "models"),
                    "--epochs",
                    "5",
                    "--no-progress",
                ],
                env=env,
                cwd=ROOT,
                check=True,
                capture_output=True,
                timeout=900,
            )
            model = work / "models" / "demo-sensors"
            batches = cut_batches(work / "batches")
            good = [p.name for p in batches if p.name != POISON]
            clean_sinks = ["prefect-event", save_webhook(env, receivers["clean webhook"].url, "soak-clean")]
            faulty_sinks = [
                "prefect-event",
                save_webhook(env, receivers["faulty run's working webhook"].url, "soak-ok"),
                save_webhook(env, receivers["failing webhook (500)"].url, "soak-failing"),
                save_webhook(env, receivers["hanging webhook"].url, "soak-hanging"),
            ]
            clean = scenario(env, model, [b for b in batches if b.name != POISON], work / "clean", clean_sinks, False)
            faulty = scenario(env, model, batches, work / "faulty", faulty_sinks, True)
            if faulty["mounted"]:
                subprocess.run(["umount", str(faulty["outbox"])], check=False)
        finally:
            for receiver in receivers.values():
                receiver.close()
            server.terminate()
            server.wait(timeout=30)
        blocks = {
            f"{BATCHES} batches in {WAVES} waves, one scoring run per wave (+2 to drain)": verdicts(
                clean, faulty, good, receivers
            )
        }
    print_blocks(blocks)
    if write:
        replace_section(
            ROOT / "BENCHMARKS.md",
            "soak",
            f"""## Soak (issue 33)

Command: `python bench/soak.py` ({(time.perf_counter() - started) / 60:.1f} min, one run, 2 cores).
Each run is `python -m flows.score` against one local Prefect server, as a schedule's tick.

{markdown_blocks(blocks)}
""",
        )


if __name__ == "__main__":
    typer.run(main)
