"""The scoring flow under faults, as a schedule runs it (issue 33's soak), in one command:

    python bench/soak.py            # prints the table, writes the "Soak" section of BENCHMARKS.md

200 batches of the demo fleet arrive in 8 waves; after each wave `python -m flows.score` runs
once against a real local Prefect server (a schedule's tick), then two more runs drain what is
left. Two scenarios, on the same batches, in one run:

- clean: two working sinks (a Prefect event and a webhook);
- faulty: the same, plus a webhook that always answers 500, a webhook that hangs past its
  timeout, a webhook that refuses one alert (HTTP 400, every time) and takes the rest, a batch
  that kills its scoring process every time (`VAD_CRASH_AT=read@<its name>`, the out-of-memory
  killer), where the host lets it mount a tmpfs the outbox's disk (the ledger's) filled before
  one wave and freed before the next, where `faketime` is installed the host clock a day ahead
  for one run and back for the next, and a new version promoted (`vad threshold --activate`)
  while a wave's files wait in the inbox, with the full-disk wave's batches still to retry.

Both archive what they scored (`--archive`), as a schedule that keeps its inbox small does. It
checks what issues 33 and 47 ask (every good batch scored once, every deliverable alert
delivered once to each working sink and none sent twice, the refused one dead-lettered, the
poison batch set aside after its budget) and reports the faulty scenario's time in its flow runs
against the clean one's.
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
CLOCK_WAVE = 2  # this wave's run sees the host clock a day ahead; the next one sees it back
PROMOTE_WAVE = FULL_WAVE + 1  # a new version becomes `latest` just before this wave's run
FAKETIME = shutil.which("faketime")
PREFECT = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}


class Receiver:
    """A webhook on loopback that answers `status` (or never, `hang`), keeping the alert ids."""

    def __init__(self, status: int = 204, hang: float = 0.0, refuse_one: bool = False) -> None:
        self.alert_ids: list[str] = []
        self.posts = 0
        self.refused: list[str] = []  # refuse_one: the first alert it was sent, answered 400 each time
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                receiver.posts += 1
                if hang:
                    time.sleep(hang)
                ids = [
                    line.removeprefix("alert id: ") for line in body["body"].splitlines() if line.startswith("alert id: ")
                ]
                answer = status
                if refuse_one and (not receiver.refused or receiver.refused[0] in ids):
                    receiver.refused += ids
                    answer = 400
                if answer < 300:
                    receiver.alert_ids += ids
                self.send_response(answer)
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


def promote_new_version(env: dict[str, str], model: Path) -> str:
    """An operator's promotion: the threshold re-fitted on the history, made `latest`."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "threshold", str(model), str(DATA / "sensors" / "history.parquet")]
        + ["--target", "0.995", "--activate", "--json"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return str(json.loads(done.stdout)["version_dir"])


def scenario(env: dict[str, str], model: Path, batches: list[Path], work: Path, sinks: list[str], faulty: bool) -> dict:
    """Deliver the batches in waves, one flow run per wave, two more to drain; what happened."""
    inbox, outbox = work / "inbox", work / "outbox"
    inbox.mkdir(parents=True)
    mounted = faulty and tiny_disk(outbox)
    per_wave = -(-len(batches) // WAVES)
    runs, killed, wall, promoted = [], 0, 0.0, None
    for wave in range(WAVES + 2):
        for path in batches[wave * per_wave : (wave + 1) * per_wave]:
            shutil.copy(path, inbox / f".{path.name}.part")
            (inbox / f".{path.name}.part").rename(inbox / path.name)
        filler = outbox / "filler"
        if mounted and wave == FULL_WAVE:
            filler.write_bytes(b"\0" * max(shutil.disk_usage(outbox).free - 8192, 0))
        elif mounted and wave == FULL_WAVE + 1:
            filler.unlink(missing_ok=True)
        if faulty and wave == PROMOTE_WAVE:
            promoted = promote_new_version(env, model)
        clock = ["faketime", "-f", "+1d"] if faulty and FAKETIME and wave == CLOCK_WAVE else []
        command = [*clock, sys.executable, "-m", "flows.score", "--inbox", str(inbox), "--outbox", str(outbox)]
        command += ["--archive", str(work / "archive"), "--model", str(model)]
        command += [arg for sink in sinks for arg in ("--sink", sink)]
        run_env = env | ({"VAD_CRASH_AT": f"read@{POISON}"} if faulty else {})
        started = time.perf_counter()
        done = subprocess.run(command, env=run_env, cwd=ROOT, capture_output=True, text=True, timeout=900)
        wall += time.perf_counter() - started  # the flow runs only: not the waves' copies or the promotion
        killed += done.returncode == -9
        runs.append(done.returncode)
    ledger = open_ledger(outbox)
    done: dict[str, list[dict]] = {}
    for row in ledger.batches():
        done.setdefault(Path(row["file"]).name, []).append(row)
    return {
        "wall": wall,
        "runs": runs,
        "killed": killed,
        "mounted": mounted,
        "batches": done,
        "alerts": [a["alert_id"] for a in ledger.alerts()],
        "dead_letters": ledger.dead_letters(),
        "promoted": promoted,
        "outbox": outbox,
    }


def verdicts(clean: dict, faulty: dict, good: list[str], receivers: dict[str, Receiver]) -> list[tuple[str, str, str]]:
    rows = []
    for name, result in (("clean", clean), ("faulty", faulty)):
        done = {n: [r for r in result["batches"].get(n, []) if r["status"] == "done"] for n in good}
        once = [n for n, rows_done in done.items() if len(rows_done) == 1]
        first = [n for n in once if done[n][0]["claims"] == 1 and len(result["batches"][n]) == 1]
        by_version: dict[str, int] = {}
        for rows_done in done.values():
            for row in rows_done:
                by_version[row["model"]] = by_version.get(row["model"], 0) + 1
        rows.append(
            (
                f"{name}: good batches scored once",
                f"{len(once)} of {len(good)}",
                f"{len(first)} on their first claim; by version {dict(sorted(by_version.items()))}; "
                f"runs' exit codes {sorted(set(result['runs']))}",
            )
        )
    poison = faulty["batches"].get(POISON, [{}])[-1]
    rows.append(
        (
            "faulty: the poison batch",
            f"{poison.get('status')} after {poison.get('claims')} claims",
            f"budget {MAX_ATTEMPTS}; {faulty['killed']} runs killed by it",
        )
    )
    notes = {
        "hanging webhook": "answers after 30 s, past the sink's 5 s timeout: each counts as failed (it may have "
        "the alert: a timeout cannot tell), the breaker pauses it",
        "failing webhook (500)": "the breaker pauses it",
    }
    for name, receiver in receivers.items():
        ids, scenario_alerts = receiver.alert_ids, clean["alerts"] if name == "clean webhook" else faulty["alerts"]
        owed = set(scenario_alerts) - set(receiver.refused)
        if name in notes:
            rows.append(
                (
                    f"{name}: alerts received",
                    f"{len(set(ids))} distinct of {len(ids)}",
                    f"{receiver.posts} posts; {notes[name]}",
                )
            )
            continue
        rows.append(
            (
                f"{name}: every deliverable alert once",
                "yes" if sorted(ids) == sorted(owed) else f"no: {len(set(ids))} distinct of {len(ids)}, {len(owed)} owed",
                f"{len(ids)} received, {receiver.posts} posts"
                + (
                    f"; refused {sorted(set(receiver.refused))} in {len(receiver.refused)} posts" if receiver.refused else ""
                ),
            )
        )
    dead = [f"{d['alert_id']} to {d['sink']} after {d['attempts']} refusals" for d in faulty["dead_letters"]]
    rows.append(("faulty: dead letters in the ledger", str(len(dead)), "; ".join(dead) or "-"))
    rows.append(("alerts recorded", f"clean {len(clean['alerts'])}, faulty {len(faulty['alerts'])}", "each by one version"))
    rows.append(
        (
            "the ledger's disk filled before one wave and freed",
            "yes" if faulty["mounted"] else "not tried (no tmpfs mount here)",
            f"wave {FULL_WAVE}",
        )
    )
    rows.append(
        (
            "the host clock a day ahead for one run, then back",
            "yes" if FAKETIME else "not tried (faketime is not installed)",
            f"wave {CLOCK_WAVE}, libfaketime on the flow run's process",
        )
    )
    rows.append(
        (
            "a new version promoted with a wave waiting in the inbox",
            Path(faulty["promoted"]).name if faulty["promoted"] else "no",
            f"before wave {PROMOTE_WAVE}'s run, the full-disk wave's batches still to retry",
        )
    )
    rows.append(
        (
            "flow runs' time, faulty / clean",
            f"{faulty['wall'] / clean['wall']:.2f}x",
            f"bar: at most 1.5x ({WAVES + 2} runs each)",
        )
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
            "webhook refusing one alert (400)": Receiver(refuse_one=True),
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
                save_webhook(env, receivers["webhook refusing one alert (400)"].url, "soak-refusing"),
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
            f"""## Soak (issues 33 and 47)

Command: `python bench/soak.py` ({(time.perf_counter() - started) / 60:.1f} min, one run, 2 cores).
Each run is `python -m flows.score` against one local Prefect server, as a schedule's tick.

{markdown_blocks(blocks)}
""",
        )


if __name__ == "__main__":
    typer.run(main)
