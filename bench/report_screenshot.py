"""The HTML scoring report of the demo, opened in headless Chromium (issue 48):

    python bench/report_screenshot.py        # writes runs/demo-sensors-scores.report.html and runs/report.png

Scores the demo batch with `vad score --report` (the demo model, trained first if missing) and
takes a full-page screenshot. Chromium comes from the system's package manager
(`apt-get install chromium`); where it is missing the script says so and stops."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str | None:
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def screenshot(page: Path, png: Path, height: int = 2600) -> subprocess.CompletedProcess:
    """Chromium, headless, loads the page and writes a screenshot; its log (console messages
    included) is on stderr."""
    command = [browser() or "chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    command += [f"--window-size=1200,{height}", "--enable-logging=stderr", "--v=0", f"--screenshot={png}"]
    return subprocess.run([*command, page.resolve().as_uri()], capture_output=True, text=True, timeout=120)


def main() -> None:
    if browser() is None:
        sys.exit("no Chromium here: install it with the system's package manager (apt-get install chromium)")
    vad = [sys.executable, "-m", "pipeline.cli"]
    model = ROOT / "exported" / "demo-sensors"
    if not (model / "latest").is_file():
        subprocess.run([sys.executable, "-m", "pipeline.demo"], cwd=ROOT, check=True)
    scores = ROOT / "runs" / "demo-sensors-scores.parquet"
    batch = ROOT / "data" / "sensors" / "batch.parquet"
    subprocess.run([*vad, "score", model, batch, "--output", scores, "--report", "--show", "0"], cwd=ROOT, check=True)
    page, png = scores.with_name(f"{scores.stem}.report.html"), ROOT / "runs" / "report.png"
    done = screenshot(page, png)
    if done.returncode != 0 or not png.is_file():
        sys.exit(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    print(f"{page}\n{png}")


if __name__ == "__main__":
    main()
