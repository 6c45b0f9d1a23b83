"""A model folder that was truncated, tampered with, mixed from two exports or padded with
extra files is refused with a clear error before any graph runs; nothing is unpickled; an
export killed half-way leaves no version behind and `latest` keeps pointing at a whole one."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from common import DATA, ROOT

from pipeline.artifact.manifest import LATEST, MANIFEST, read_manifest, write_manifest
from pipeline.core.digest import sha256_file
from pipeline.core.errors import ModelArtifactError
from pipeline.core.faults import CRASH_ENV
from pipeline.data.scaling import QUANTILE_KNOTS
from pipeline.runtime import Scorer
from pipeline.training.export import load_checkpoint


@pytest.fixture
def model(tabular_model: Path, tmp_path: Path) -> Path:
    """A private copy of a trained version folder, safe to damage."""
    return Path(shutil.copytree(tabular_model, tmp_path / "model"))


def rehash(folder: Path) -> None:
    """What a careless (or hostile) hand does after editing files: recompute the manifest's sha256s."""
    write_manifest(folder, read_manifest(folder, verify=False))


def edit_manifest(folder: Path, **changes) -> None:
    raw = json.loads((folder / MANIFEST).read_text())
    for dotted, value in changes.items():
        node, *path = [raw, *dotted.split("__")]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    (folder / MANIFEST).write_text(json.dumps(raw))


def refused(folder: Path, *fragments: str) -> None:
    with pytest.raises(ModelArtifactError) as error:
        Scorer.load(folder)
    for fragment in fragments:
        assert fragment in str(error.value), str(error.value)


def test_intact_copy_loads_and_scores(model: Path) -> None:
    assert Scorer.load(model).score(pl.read_csv(DATA / "tabular" / "batch.csv")).height > 0


def test_truncated_graph(model: Path) -> None:
    data = (model / "scorer.onnx").read_bytes()
    (model / "scorer.onnx").write_bytes(data[: len(data) // 2])
    refused(model, "scorer.onnx", "sha256")


def test_one_flipped_byte_in_a_graph(model: Path) -> None:
    data = bytearray((model / "decoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (model / "decoder.onnx").write_bytes(bytes(data))
    refused(model, "decoder.onnx", "sha256")


def test_truncated_graph_with_rehashed_manifest_is_refused_by_onnxruntime(model: Path) -> None:
    data = (model / "scorer.onnx").read_bytes()
    (model / "scorer.onnx").write_bytes(data[: len(data) // 2])
    rehash(model)
    refused(model, "onnxruntime cannot load", "scorer.onnx")


def test_graphs_swapped_between_roles_are_refused_even_when_rehashed(model: Path) -> None:
    scorer, sampled = (model / "scorer.onnx").read_bytes(), (model / "scorer_sampled.onnx").read_bytes()
    (model / "scorer.onnx").write_bytes(sampled)
    (model / "scorer_sampled.onnx").write_bytes(scorer)
    rehash(model)
    refused(model, "is not this model's scorer graph")


def test_graph_from_another_export_is_refused_even_when_rehashed(model: Path, sensor_model: Path) -> None:
    shutil.copy(sensor_model / "scorer.onnx", model / "scorer.onnx")
    rehash(model)
    refused(model, "is not this model's scorer graph", "demo-sensors")


def test_unlisted_side_file_is_refused(model: Path) -> None:
    (model / "scorer.onnx.data").write_bytes(b"\0" * 64)  # external weights a graph could be pointed at
    refused(model, "does not list", "scorer.onnx.data")


def test_a_graph_with_external_weights_is_refused_even_when_rehashed(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights moved out of the graph into a side file (in the model folder, or relative to
    the working directory) would be read unverified: rewriting it once moved 42 anomalies to
    1000. The graph is refused, saying why."""
    import onnx

    proto = onnx.load(str(model / "scorer.onnx"))
    onnx.save(proto, str(model / "scorer.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=0)
    shutil.copy(model / "weights.bin", tmp_path / "weights.bin")
    rehash(model)  # the side file is listed and hashed too: only its use is refused
    monkeypatch.chdir(tmp_path)
    refused(model, "onnxruntime cannot load", "scorer.onnx", "external data")


def test_symlinked_graph_is_refused(model: Path, tabular_model: Path) -> None:
    (model / "scorer.onnx").unlink()
    (model / "scorer.onnx").symlink_to(tabular_model / "scorer.onnx")  # same bytes, but it could change under us
    refused(model, "symbolic link")


@pytest.mark.parametrize("name", ["../escape.onnx", "/etc/passwd", "sub/scorer.onnx"])
def test_manifest_file_names_cannot_leave_the_folder(model: Path, name: str) -> None:
    raw = json.loads((model / MANIFEST).read_text())
    raw["files"][name] = "0" * 64
    (model / MANIFEST).write_text(json.dumps(raw))
    refused(model, "invalid at `files`", "plain file name")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"schema_version": 99}, "schema_version 99"),
        ({"scaler__mean": [0.0]}, "scaler.mean has 1 values"),
        ({"scaler__scale": None}, "invalid at `scaler.scale`"),
        ({"scaler__tail": None}, "knots, levels and tail come together"),  # the tabular model maps 2 skewed columns
        ({"scaler__levels": [[1.0, 0.0]] * 7}, "knots and levels need the same number"),
        ({"scaler__levels": [[float(QUANTILE_KNOTS - k) for k in range(QUANTILE_KNOTS)]] * 7}, "levels must not decrease"),
        ({"input_names": ["a", "b"]}, "input_names do not match"),
        ({"threshold": "high"}, "invalid at `threshold`"),
        ({"version": "../../../../escaped"}, "is not a version number"),  # it names output files
        ({"name": "../escaped"}, "is not a model name"),
        ({"threshold__value": float("nan")}, "is not a finite number"),
        ({"feature_schema__resample": "PT0S"}, "must be a positive duration"),  # N07: a polars panic, uncaught
        ({"feature_schema__max_gap": "-PT5M"}, "must be a positive duration"),
    ],
)
def test_manifest_edited_out_of_shape(model: Path, change: dict, fragment: str) -> None:
    edit_manifest(model, **change)
    refused(model, fragment)


def test_manifest_threshold_that_its_graphs_do_not_carry_is_refused(model: Path) -> None:
    """1e300 is a number, but each graph's metadata holds the threshold it was exported with."""
    edit_manifest(model, threshold__value=1e300)
    refused(model, "was exported with threshold", "the manifest was edited")


def test_manifest_with_a_number_too_long_to_read(model: Path) -> None:
    raw = (model / MANIFEST).read_text()
    threshold = json.dumps(json.loads(raw)["threshold"]["value"])
    (model / MANIFEST).write_text(raw.replace(threshold, "1" + "0" * 5000, 1))  # past Python's 4,300 digits
    refused(model, "is not valid JSON", "5001 digits")


def test_manifest_that_is_not_json(model: Path) -> None:
    (model / MANIFEST).write_text('{"schema_version": 1, "name": ')
    refused(model, "not valid JSON")


def test_latest_pointer_cannot_leave_the_model_folder(model: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / LATEST).write_text("../model\n")
    refused(root, "must hold a version number")


def test_checkpoint_with_a_code_payload_is_not_unpickled(model: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (model / "checkpoint.pt").write_bytes(pickle.dumps({"state_dict": Payload()}, protocol=2))
    with pytest.raises(ModelArtifactError, match="not a plain-tensor checkpoint"):
        load_checkpoint(model / "checkpoint.pt")
    assert not marker.exists()


def test_no_pickle_load_path_in_the_library() -> None:
    """Only comments may mention pickle: no module imports it, joblib or dill."""
    for source in [*(ROOT / "pipeline").glob("*.py"), *(ROOT / "flows").glob("*.py")]:
        for line in source.read_text().splitlines():
            code = line.split("#", 1)[0]
            assert not any(f"import {m}" in code or f"{m}.load" in code for m in ("pickle", "joblib", "dill")), line


@pytest.mark.slow
def test_export_killed_half_way_leaves_no_version_and_latest_intact(tmp_path: Path) -> None:
    root = tmp_path / "exported"
    train = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "train",
        str(DATA / "tabular" / "history.csv"),
        "--config",
        str(DATA / "tabular.toml"),
        "--out",
        str(root),
        "--epochs",
        "2",
        "--no-progress",
    ]
    first = subprocess.run(train, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    killed = subprocess.run(
        train, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, CRASH_ENV: "export"}
    )
    assert killed.returncode == -9
    model_root = root / "demo-tabular"
    assert sorted(p.name for p in model_root.iterdir() if not p.name.startswith(".")) == ["1", LATEST]
    assert (model_root / LATEST).read_text().strip() == "1"
    assert len(list(model_root.glob(".staging-*"))) == 1  # the killed export's, never a version
    Scorer.load(model_root)  # latest is whole

    again = subprocess.run(train, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert (model_root / LATEST).read_text().strip() == "2"
    assert not list(model_root.glob(".staging-*"))  # the dead export's leftovers were removed


@pytest.fixture
def sensors(sensor_model: Path, tmp_path: Path) -> Path:
    """A private copy of the sensor model, in a folder named by its version as exports are."""
    version = read_manifest(sensor_model).version
    return Path(shutil.copytree(sensor_model, tmp_path / "demo-sensors" / version))


@pytest.mark.parametrize(
    "changes",
    [
        {"threshold__persistence": {"k": 50, "n": 50}},  # N04: 1,040 anomalies became 395, silently
        {"threshold__alarm": {"hold_off": 100000, "quiet": 0}},
        {"validation__score_quantiles__0.5": 0.0},  # N05: severity measured from an edited median
        {"feature_schema__resample": "P36500D"},  # N06: each machine's batch merged into one step
        {"lineage": {"change": "approved by QA board"}},  # N03: a forged audit trail
        {"reviewed_by": "QA board"},  # a key no release reads is an edit too: the file's own values are hashed
    ],
    ids=["persistence", "alarm-rule", "median", "resample", "lineage", "added-key"],
)
def test_n03_n06_any_edit_that_changes_a_flag_or_a_record_is_refused(sensors: Path, changes: dict) -> None:
    """N03-N06: only the threshold and the name were cross-checked against the graphs; every
    other field (persistence, percentiles, drift reference, resample, lineage) could be edited
    and change the flags with no error. The graphs now carry the manifest's sha256."""
    Scorer.load(sensors)  # intact: loads
    edit_manifest(sensors, **changes)
    refused(sensors, "manifest_sha256 differs", "manifest was edited")


def test_n01_a_manifest_that_names_another_version_than_its_folder_is_refused(sensors: Path) -> None:
    """N01: `version: "7"` in folder 1 loaded as demo-sensors/7, so its scores, ledger keys and
    alert ids collided with a real version 7 (whose batches would then read as done)."""
    edit_manifest(sensors, version="7")
    refused(sensors, "says version 7", f"folder of version {sensors.name}")


def test_a_model_exported_before_a_release_added_a_field_still_loads_and_scores_the_same(sensors: Path) -> None:
    """The digest was computed on the manifest as this release validates it, defaults of new
    fields included: adding the CSV reading options to the schema made every model exported
    before them fail its check ("manifest_sha256 differs"). The file's own values are hashed."""
    import onnx

    from pipeline.artifact.manifest import DIGEST_KEY, content_digest

    batch = pl.read_parquet(DATA / "sensors" / "batch.parquet")
    expected = Scorer.load(sensors).score(batch)
    raw = json.loads((sensors / MANIFEST).read_text())
    del raw["feature_schema"]["csv"], raw["feature_schema"]["time_zone"]  # as the release before them wrote it
    for path in sensors.glob("*.onnx"):  # and stamped its graphs: with the digest of what it wrote
        proto = onnx.load(str(path))
        for prop in proto.metadata_props:
            if prop.key == DIGEST_KEY:
                prop.value = content_digest(raw)
        onnx.save(proto, str(path))
    raw["files"] = {name: sha256_file(sensors / name) for name in raw["files"]}
    (sensors / MANIFEST).write_text(json.dumps(raw))
    assert Scorer.load(sensors).score(batch).equals(expected)
