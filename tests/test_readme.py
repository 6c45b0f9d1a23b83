"""Every code block of the README is run by a test (newcomer review, must-show 5).

Blocks of commands run as written, through bash, in a user's checkout after `make demo`: the
bundled data, `.venv` (this venv) and the demo's exported models, with what a command names
but the README leaves to the user (`data/recent/`, `big.parquet`, `exported/plant`) made
first. A command that needs what no test machine has (a Dask scheduler at `scheduler:8786`,
a PostgreSQL host, a GPU) or that another test already runs as written names that test, and
that test is checked to still run it. A new block, or a new command in a block, fails
`test_every_block_is_run_somewhere` until it is given a way to run."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from common import DATA, ROOT

from pipeline.core import config

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    text: str

    @property
    def commands(self) -> list[str]:
        """Its shell commands, a `\\` continuation joined to its line, comments and blank lines left out."""
        joined = re.sub(r"\\\n\s*", " ", self.text)
        return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def readme_blocks() -> list[Block]:
    text = (ROOT / "README.md").read_text()
    return [
        Block(text[: match.start()].count("\n") + 1, match.group(1), match.group(2))
        for match in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M)
    ]


def block_starting(prefix: str) -> Block:
    (block,) = [b for b in readme_blocks() if b.text.startswith(prefix)]
    return block


# A command (by its start) run by a test here, or by another test file that must still hold
# the given strings (what it runs), or by the Makefile (its recipe holds them).
HERE = {
    "make demo": "test_make_demo_builds_what_the_readme_says",
    "vad train data/sensors/history.parquet --config": "test_the_command_line_block_runs_as_written",
    "vad score exported/demo-sensors": "test_the_command_line_block_runs_as_written",
    "vad threshold": "test_the_command_line_block_runs_as_written",
    "vad promote": "test_the_command_line_block_runs_as_written",
    "vad inspect exported/demo-sensors": "test_the_command_line_block_runs_as_written",
    "vad sample": "test_the_command_line_block_runs_as_written",
    "vad encode": "test_the_command_line_block_runs_as_written",
    "vad runtime": "test_the_command_line_block_runs_as_written",
    ".venv/bin/python -m flows.train": "test_the_flows_block_runs_as_written",
    ".venv/bin/python -m flows.score": "test_the_flows_block_runs_as_written",
    "python -m flows.retrain": "test_the_retraining_blocks_run_as_written",
    "vad versions": "test_the_retraining_blocks_run_as_written",
    "vad train new-history.csv --like": "test_the_retraining_blocks_run_as_written",
    "python -m flows.score_partitions": "test_the_dask_block_runs_with_its_placeholders_filled",
    "name = ": "test_the_config_block_loads_and_names_every_field",
    "pipeline/": "test_the_layout_block_names_what_is_there",
    "from pipeline.runtime import Scorer": "test_the_python_block_runs_as_written",
}
POSTGRES = "tests/flows/test_postgres_server.py"  # the server, work pool, deployment and worker, on loopback
ELSEWHERE = {
    "make test": ("Makefile", ["test: lint", "$(BIN)/python -m pytest"]),  # CI runs it: .ci/run
    "vad train mine.csv": ("tests/test_own_data.py", ["README.md", "Your own data in ten minutes"]),
    "vad score exported/mine": ("tests/test_own_data.py", ["readme_commands()"]),
    "vad inspect exported/mine": ("tests/test_own_data.py", ["readme_commands()"]),
    "error: column 'a' must be numeric": ("tests/test_own_data.py", ["readme_error_line()"]),
    "cd examples/node": ("tests/test_node.py", ["NODE_DIR"]),
    "ONNXRUNTIME_NODE_INSTALL=skip npm ci": ("tests/test_node.py", ['"ONNXRUNTIME_NODE_INSTALL": "skip"', '"npm", "ci"']),
    "node cli.mjs score": ("tests/test_node.py", ['"score"', "state"]),
    "node cli.mjs embed": ("tests/test_node.py", ['"embed"']),
    "node cli.mjs sample": ("tests/test_node.py", ['"sample"']),
    "export PREFECT_API_DATABASE_CONNECTION_URL": (
        "tests/flows/test_postgres_server.py",
        ["PREFECT_API_DATABASE_CONNECTION_URL"],
    ),
    "prefect server start": ("tests/flows/test_postgres_server.py", ['"server", "start"']),
    "export PREFECT_API_URL": ("tests/flows/test_postgres_server.py", ["PREFECT_API_URL"]),
    "prefect work-pool create": ("tests/flows/test_postgres_server.py", ['"work-pool", "create"']),
    "python -m flows.deploy": ("tests/flows/test_postgres_server.py", ["flows.deploy"]),
    "prefect worker start": ("tests/flows/test_postgres_server.py", ['"worker", "start"']),
    # The GPU build's swap: the Makefile does it for every venv `make` builds (this one too).
    "pip install '.[gpu]'": ("Makefile", [",gpu,"]),
    "pip uninstall -y onnxruntime": ("Makefile", ["pip uninstall --quiet --yes onnxruntime"]),
    "pip install --force-reinstall --no-deps onnxruntime-gpu": ("Makefile", ["--force-reinstall --no-deps"]),
}


def runner_of(command: str) -> str | tuple[str, list[str]] | None:
    for prefix, test in HERE.items():
        if command.startswith(prefix):
            return test
    return next((ELSEWHERE[prefix] for prefix in ELSEWHERE if command.startswith(prefix)), None)


def test_every_block_is_run_somewhere() -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 15, "the README's code blocks were not found"
    for block in blocks:
        commands = block.commands if block.language == "bash" else [block.text]
        for command in commands:
            runner = runner_of(command)
            assert runner is not None, f"README line {block.line}: no test runs `{command}`"
            if isinstance(runner, str):
                assert runner in globals(), runner
            else:
                file, holds = runner
                text = (ROOT / file).read_text()
                missing = [h for h in holds if h not in text]
                assert not missing, f"README line {block.line}: {file} no longer holds {missing} (`{command}`)"


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's checkout after `make demo`: the bundled data, `.venv`, and the demo's job run."""
    home = tmp_path_factory.mktemp("checkout")
    shutil.copytree(DATA, home / "data", ignore=shutil.ignore_patterns("__pycache__", "inbox"))
    (home / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    demo = shell(".venv/bin/python -m pipeline.demo", home)
    assert demo.returncode == 0, demo.stderr[-3000:]
    return home


def shell(script: str, cwd: Path, home: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `script` as a user's shell would, with `.venv` activated and Prefect's embedded server
    (HOME: the checkout, or `home`; never this repository, where caches would land in the tree)."""
    env = {
        "PATH": f"{cwd / '.venv' / 'bin'}:/usr/bin:/bin",
        "HOME": str(home or cwd),
        "PREFECT_HOME": str(cwd / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "MPLBACKEND": "Agg",
    }
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def run_block(block: Block, cwd: Path, only: int | None = None) -> None:
    script = block.commands[only] if only is not None else block.text
    result = shell(script, cwd)
    assert result.returncode == 0, f"README line {block.line}:\n{script}\n{result.stderr[-3000:]}"


def test_make_demo_builds_what_the_readme_says(checkout: Path) -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "demo: $(STAMP)\n\t$(BIN)/python -m pipeline.demo\n" in makefile  # what the fixture ran
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    for model in ("demo-sensors", "demo-tabular"):
        assert (checkout / "exported" / model / "latest").is_file()
    assert list((checkout / "runs").glob("*.report.html")), "the demo writes the HTML report"


def test_the_command_line_block_runs_as_written(checkout: Path) -> None:
    run_block(block_starting("vad train data/sensors/history.parquet"), checkout)
    assert pl.read_parquet(checkout / "runs" / "latent.parquet").height > 0


def test_the_python_block_runs_as_written(checkout: Path) -> None:
    given = (
        "import numpy as np, polars as pl\n"
        "frame = pl.read_parquet('data/sensors/batch.parquet')\n"
        "X = np.random.default_rng(0).normal(size=(300, 4))\n"
    )
    code = given + block_starting("from pipeline.runtime import Scorer").text + "assert scores.height == frame.height\n"
    result = shell(f".venv/bin/python -c {shlex.quote(code)}", checkout)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (checkout / "exported" / "my-model" / "latest").is_file()


def test_the_flows_block_runs_as_written(checkout: Path) -> None:
    (checkout / "data" / "inbox").mkdir(exist_ok=True)  # a batch dropped in, as the README's next lines say
    shutil.copy(DATA / "sensors" / "batch.parquet", checkout / "data" / "inbox" / "batch-001.parquet")
    run_block(block_starting(".venv/bin/python -m flows.train"), checkout)
    assert list((checkout / "runs" / "scoring").rglob("batch-001*")), "the flow wrote the batch's scores"


def test_the_retraining_blocks_run_as_written(checkout: Path) -> None:
    (checkout / "data" / "recent").mkdir()
    shutil.copy(DATA / "sensors" / "batch.parquet", checkout / "data" / "recent" / "batch.parquet")
    run_block(block_starting("python -m flows.retrain"), checkout)
    plant = shell("vad train data/sensors/history.parquet --config data/sensors.toml --name plant --json", checkout)
    assert plant.returncode == 0, plant.stderr[-2000:]
    pl.read_parquet(DATA / "sensors" / "history.parquet").write_csv(checkout / "new-history.csv")
    run_block(block_starting("vad train new-history.csv --like"), checkout)
    assert (checkout / "exported" / "plant" / "2").is_dir() and (checkout / "exported" / "plant-b" / "1").is_dir()


def test_the_dask_block_runs_with_its_placeholders_filled(checkout: Path) -> None:
    """The first command as written (a local cluster); the second against a running scheduler,
    its `/shared` paths and `scheduler:8786` replaced by this machine's."""
    from distributed import LocalCluster

    block = block_starting("python -m flows.score_partitions big.parquet")
    rows = pl.read_csv(DATA / "tabular" / "batch.csv")
    rows.write_parquet(checkout / "big.parquet")
    run_block(block, checkout, only=0)
    assert pl.read_parquet(checkout / "runs" / "big-scores.parquet").height == rows.height
    (checkout / "batches").mkdir()
    rows.write_parquet(checkout / "batches" / "one.parquet")
    with LocalCluster(n_workers=1, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        filled = block.commands[1]
        for placeholder, here in {
            "/shared/batches/": f"{checkout}/batches/",
            "/shared/scores.parquet": f"{checkout}/scores.parquet",
            "/shared/models/demo-tabular": f"{checkout}/exported/demo-tabular",
            "tcp://scheduler:8786": cluster.scheduler_address,
        }.items():
            assert placeholder in filled
            filled = filled.replace(placeholder, here)
        result = shell(filled, checkout)
    assert result.returncode == 0, result.stderr[-3000:]
    assert pl.read_parquet(checkout / "scores.parquet").height == rows.height


def test_the_config_block_loads_and_names_every_field(tmp_path: Path) -> None:
    text = block_starting('name = "line-7"').text
    (tmp_path / "line-7.toml").write_text(text)
    config.load_config(tmp_path / "line-7.toml")  # refuses an unknown key
    sections = {"data": config.DataConfig, "model": config.ModelConfig, "train": config.TrainConfig}
    sections |= {"threshold": config.ThresholdConfig, "export": config.ExportConfig, "promotion": config.PromotionRules}
    given = tomllib.loads(text)
    for name, model in sections.items():
        also = re.search(rf"^\[{name}\]\s*# also: (.*)$", text, re.M)
        named = set(given[name]) | (set(also.group(1).split(", ")) if also else set())
        assert named == set(model.model_fields), f"[{name}]: {set(model.model_fields) ^ named}"


def test_the_layout_block_names_what_is_there() -> None:
    for line in block_starting("pipeline/").text.splitlines():
        folder = line.split()[0] if line and not line.startswith(" ") else None
        assert folder is None or (ROOT / folder).is_dir(), folder


def test_the_gpu_swap_leaves_one_onnxruntime_build(tmp_path: Path) -> None:
    """What the swap is for, in the venv `make` built with it: `vad runtime` sees one build."""
    facts = json.loads(shell("vad runtime --json", ROOT, home=tmp_path).stdout)
    assert not facts["both_installed"] and list(facts["installed"]) == [facts["active"]]
