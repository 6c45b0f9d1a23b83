"""The model manifest: a versioned, validated JSON file that travels with the ONNX graphs.

It holds everything needed to score (feature schema, scaler, threshold, score definition)
and a sha256 per file, checked before any graph is loaded. Never pickle."""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, PrivateAttr, ValidationError, field_validator, model_validator

from pipeline.artifact.drift import DriftReference
from pipeline.artifact.threshold import Threshold, ValidationRecord
from pipeline.core.atomic import atomic_output
from pipeline.core.digest import sha256_file
from pipeline.core.errors import ModelArtifactError, PipelineError
from pipeline.core.faults import pid_alive
from pipeline.data.scaling import Scaler
from pipeline.data.schema import FeatureSchema

SCHEMA_VERSION = 3  # 2: optional monotone input map in `scaler` (knots, levels, tail); 3: window rule `mean`
MANIFEST = "manifest.json"
LATEST = "latest"
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # as PipelineConfig.name
SCORE_DEFINITION = (
    "negative ELBO with z = mu: sum over inputs of -log p(x_i | z = mu) in the units of the "
    "scaler's input map (raw feature units when it has none) "
    "plus KL(q(z|x) || N(0, I)), averaged over the ensemble members (model.members); "
    "higher = more anomalous"
)


class ScalerSpec(BaseModel):
    """scaled = (map(raw) − mean) / scale. The map (absent: the identity) is piecewise linear
    per input through the points (knots[i][k], levels[i][k]), with slope tail[i] beyond the
    first and the last knot; see pipeline/data/scaling.py."""

    mean: list[float]
    scale: list[float]
    knots: list[list[float]] | None = None
    levels: list[list[float]] | None = None
    tail: list[float] | None = None

    @model_validator(mode="after")
    def _monotone_map(self) -> ScalerSpec:
        parts = (self.knots, self.levels, self.tail)
        if all(p is None for p in parts):
            return self
        if any(p is None for p in parts):
            raise ValueError("knots, levels and tail come together or not at all")
        assert self.knots is not None and self.levels is not None and self.tail is not None
        if len({len(r) for r in self.knots + self.levels}) != 1 or len(self.knots[0]) < 2:
            raise ValueError("knots and levels need the same number (≥ 2) of points for every input")
        for name, rows in (("knots", self.knots), ("levels", self.levels)):
            if not all(math.isfinite(v) for row in rows for v in row):
                raise ValueError(f"{name} hold a value that is not finite")
            if any(b < a for row in rows for a, b in pairwise(row)):
                raise ValueError(f"{name} must not decrease along an input")
        if any(not t > 0 for t in self.tail):
            raise ValueError("tail holds a slope that is not > 0")
        return self

    @classmethod
    def of(cls, scaler: Scaler) -> ScalerSpec:
        def as_list(a: np.ndarray | None) -> list[Any] | None:
            return None if a is None else list(a.tolist())

        return cls(
            mean=scaler.mean.tolist(),
            scale=scaler.scale.tolist(),
            knots=as_list(scaler.knots),
            levels=as_list(scaler.levels),
            tail=as_list(scaler.tail),
        )

    def build(self) -> Scaler:
        def as_array(v: list[Any] | None) -> np.ndarray | None:
            return None if v is None else np.asarray(v, np.float32)

        return Scaler(
            np.asarray(self.mean, np.float32),
            np.asarray(self.scale, np.float32),
            as_array(self.knots),
            as_array(self.levels),
            as_array(self.tail),
        )


class Manifest(BaseModel):
    """Everything a scorer needs besides the graphs themselves."""

    schema_version: int = SCHEMA_VERSION
    name: str
    version: str
    created_at: str
    score_definition: str = SCORE_DEFINITION
    score_direction: str = "higher is more anomalous"
    feature_schema: FeatureSchema
    input_names: list[str]
    scaler: ScalerSpec
    model: dict[str, Any]
    training: dict[str, Any]
    threshold: Threshold
    feature_baseline: list[float]  # mean validation -log p(x_i|z) per input, for contributions
    training_data: dict[str, Any]
    validation: ValidationRecord
    library_versions: dict[str, str]
    opset: int
    graphs: dict[str, dict[str, Any]]
    files: dict[str, str] = {}  # file name -> sha256
    lineage: dict[str, Any] = {}  # a version made from another (a re-fitted threshold): its parent and why
    drift: DriftReference | None = None  # the training data's histograms (absent in older models)
    _digest_as_read: str | None = PrivateAttr(default=None)  # set by read_manifest, from the file's values

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        """The model's name names folders and output files: a name, never a path."""
        if not MODEL_NAME.fullmatch(name):
            raise ValueError(f"name {name!r} is not a model name (letters, digits, '.', '_', '-')")
        return name

    @field_validator("version")
    @classmethod
    def _plain_version(cls, version: str) -> str:
        """Versions are numbers (`pending` while an export assembles it): never a path."""
        if not (version.isdigit() and version.isascii()) and version != "pending":
            raise ValueError(f"version {version!r} is not a version number")
        return version

    @field_validator("threshold")
    @classmethod
    def _finite_threshold(cls, threshold: Threshold) -> Threshold:
        if not math.isfinite(threshold.value):
            raise ValueError(f"threshold {threshold.value!r} is not a finite number")
        return threshold

    @field_validator("files")
    @classmethod
    def _plain_file_names(cls, files: dict[str, str]) -> dict[str, str]:
        """Names inside the version folder only: no path can point a loader elsewhere."""
        for name, digest in files.items():
            if name in ("", ".", "..") or "/" in name or "\\" in name or name == MANIFEST:
                raise ValueError(f"file name {name!r} is not a plain file name inside the version folder")
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"sha256 of {name!r} is not 64 hex digits")
        return files

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        """Every per-input list describes the same inputs, in the schema's order."""
        expected = self.feature_schema.input_names
        if self.input_names != expected:
            raise ValueError("input_names do not match the feature schema")
        scaler = self.scaler
        for name, values in [
            ("scaler.mean", scaler.mean),
            ("scaler.scale", scaler.scale),
            ("scaler.knots", scaler.knots or expected),
            ("scaler.levels", scaler.levels or expected),
            ("scaler.tail", scaler.tail or expected),
            ("feature_baseline", self.feature_baseline),
        ]:
            if len(values) != len(expected):
                raise ValueError(f"{name} has {len(values)} values for {len(expected)} inputs")
        if any(not v > 0 for v in self.scaler.scale):
            raise ValueError("scaler.scale holds a value that is not > 0")
        return self

    @property
    def key(self) -> str:
        """`name/version`: the model version a scored batch or an alert belongs to."""
        return f"{self.name}/{self.version}"


DIGEST_KEY = "manifest_sha256"  # the graphs' metadata key holding `manifest_digest`


def manifest_digest(manifest: Manifest) -> str:
    """The sha256 of everything in the manifest that changes a score, a flag, an alarm or a key
    (the threshold, persistence, alarm rule, percentiles, drift reference, schema, lineage…):
    all of it but `files` (the graphs' own hashes, which hold this digest) and `version` (given
    when the version is published; checked against the folder's name instead), as its JSON
    file will hold it. A manifest read from a file is checked by `digest_as_read`."""
    return content_digest(json.loads(json.dumps(manifest.model_dump(mode="json"))))


def digest_as_read(manifest: Manifest) -> str:
    """The digest of a manifest as its file holds it (read_manifest keeps it), else of its
    content. Hashing the file's own values, not the values a newer release validates them
    into, keeps a model valid when a release adds a field with a default: hashed as this
    release dumps it, every model exported before the CSV reading options was refused."""
    return manifest._digest_as_read or manifest_digest(manifest)


def content_digest(content: dict[str, Any]) -> str:
    kept = {key: value for key, value in content.items() if key not in ("files", "version")}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Hash every other file in the folder into the manifest and write it."""
    manifest.files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    return path


def resolve_model_dir(path: str | Path) -> Path:
    """A version folder, or a model folder (its `latest` version), to a version folder."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    pointer = path / LATEST
    if pointer.is_file():
        version = pointer.read_text().strip()
        if not version.isdigit():
            raise ModelArtifactError(f"'{pointer}' must hold a version number, not {version[:40]!r}.")
        if (path / version / MANIFEST).is_file():
            return path / version
        raise ModelArtifactError(f"model folder '{path}' points to version '{version}', which has no {MANIFEST}.")
    if not path.exists():
        raise ModelArtifactError(f"model folder '{path}' does not exist.")
    raise ModelArtifactError(f"model folder '{path}' has no {MANIFEST} and no '{LATEST}' pointer.")


def read_manifest(folder: Path, verify: bool = True) -> Manifest:
    """Load and validate a manifest; with `verify`, refuse any missing or altered file."""
    path = folder / MANIFEST
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelArtifactError(f"model folder '{folder}' is missing {MANIFEST}.") from exc
    except (OSError, ValueError) as exc:  # ValueError: bad JSON, or a number too long to read
        raise ModelArtifactError(f"'{path}' is not valid JSON: {str(exc).split(';')[0]}.") from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ModelArtifactError(
            f"'{path}' has manifest schema_version {version!r}; this release reads up to {SCHEMA_VERSION}. "
            "Upgrade the package to load it."
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ModelArtifactError(f"'{path}' is invalid at `{field}`: {first['msg']}.") from exc
    manifest._digest_as_read = content_digest(raw)
    if verify:
        verify_files(folder, manifest)
        if folder.name.isdigit() and manifest.version != folder.name:  # N01: keys and ledger entries name it
            raise ModelArtifactError(
                f"'{path}' says version {manifest.version}, but it is the folder of version "
                f"{folder.name}: the manifest was edited or moved. Re-export the model."
            )
    return manifest


def verify_files(folder: Path, manifest: Manifest) -> None:
    """Check every listed file exists and matches its sha256, and that nothing was added: an
    unlisted file (say, a side `.onnx.data` weights file) could change what a graph loads."""
    for name in manifest.files:
        verified_bytes(folder, manifest, name)
    listed = set(manifest.files) | {MANIFEST}
    extra = sorted(p.name for p in folder.iterdir() if p.name not in listed and not p.name.startswith("."))
    if extra:
        raise ModelArtifactError(
            f"model folder '{folder}' holds files its manifest does not list: {extra}. Remove them, or re-export the model."
        )


def verified_bytes(folder: Path, manifest: Manifest, name: str) -> bytes:
    """A listed file's bytes, read once and checked against its sha256: what is checked is
    exactly what gets used (no window for the file to change in between)."""
    expected = manifest.files.get(name)
    if expected is None:
        raise ModelArtifactError(f"'{folder / name}' is not listed in the manifest, so it cannot be trusted.")
    file = folder / name
    if file.is_symlink():
        raise ModelArtifactError(f"model folder '{folder}': '{name}' is a symbolic link; a version holds its own files.")
    if not file.is_file():
        raise ModelArtifactError(f"model folder '{folder}' is missing '{name}', listed in its manifest.")
    data = file.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ModelArtifactError(
            f"'{file}' fails its sha256 check (manifest {expected[:12]}…, file {actual[:12]}…): "
            "it was changed or truncated after export. Re-export the model."
        )
    return data


# -- versions: assembled in a private folder, then renamed into place -------------------
STAGING_PREFIX = ".staging-"  # then the writing pid: a killed writer's folder is recognised
RETRAIN_PREFIX = ".retrain-"  # a retraining's copies of the recent data (flows/retrain.py), then its pid


def new_staging(model_root: Path) -> Path:
    """A private folder under `model_root` in which a version is assembled; dead writers'
    folders are removed first."""
    model_root.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(model_root)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=model_root))
    staging.chmod(0o755)  # mkdtemp makes it private; a published version is readable by all
    return staging


def remove_dead_staging(model_root: Path) -> None:
    """Delete the private folders of processes that were killed (their pid is gone): exports'
    staging, never versions (only a complete folder is ever renamed to a version number), and
    retrainings' copies of the recent data, which must not travel with the model folder
    (reliability review N22)."""
    for prefix in (STAGING_PREFIX, RETRAIN_PREFIX):
        for folder in model_root.glob(f"{prefix}*"):
            pid = folder.name.removeprefix(prefix).split("-", 1)[0]
            if folder.is_dir() and (not pid.isdigit() or not pid_alive(int(pid))):
                shutil.rmtree(folder, ignore_errors=True)


def publish_version(staging: Path, model_root: Path, manifest: Manifest, make_latest: bool = True) -> Path:
    """Rename the staged folder to the next free version number, then (`make_latest`) move
    `latest` to it; a challenger is published without moving it (`set_latest` promotes it)."""
    for _ in range(100):
        taken = [int(p.name) for p in model_root.iterdir() if p.is_dir() and p.name.isdigit()]
        version = str(max(taken, default=0) + 1)
        manifest.version = version
        write_manifest(staging, manifest)
        try:
            os.rename(staging, model_root / version)  # fails if another export took the number
        except OSError:
            continue
        if make_latest:
            set_latest(model_root, version)
        return model_root / version
    raise PipelineError(f"could not claim a version number under '{model_root}'.")


class LatestMoved(PipelineError):
    """`latest` no longer names the version a change started from: someone else moved it."""


def set_latest(model_root: Path, version: str, expected: str | None = None) -> None:
    """Point the model's `latest` at `version` (atomically: a reader sees the old or the new).
    With `expected`, only if `latest` still names that version (compare-and-swap, under a lock
    on the model folder): a promotion or a threshold change decided against version 1 must not
    overwrite the version 2 an operator made `latest` meanwhile (N21)."""
    check_version(model_root, version)
    with _locked(model_root):
        pointer = model_root / LATEST
        current = pointer.read_text().strip() if pointer.is_file() else None
        if expected is not None and current != expected:
            raise LatestMoved(
                f"'{pointer}' moved from version {expected} to {current} since this change started; "
                f"version {version} was published but not made latest."
            )
        with atomic_output(pointer) as temporary:
            temporary.write_text(version + "\n")


def check_version(model_root: Path, version: str) -> Manifest:
    """A version that may become `latest`: a version number of this model folder (R01: `../b/1`
    and `1/` were written as they were, and every later scoring run failed), a folder of its
    own, not a link to another model's (R41), whose manifest and every file verify (R02: a
    half-copied version went live)."""
    if not version.isdigit():
        raise ModelArtifactError(
            f"version must be a version number of '{model_root}' (such as 1 or 2), got {version[:40]!r}."
        )
    folder = model_root / version
    if folder.is_symlink() or not (folder / MANIFEST).is_file():
        why = "is a link to another folder" if folder.is_symlink() else "does not exist or has no manifest"
        raise ModelArtifactError(
            f"version {version} of '{model_root}' {why}: only a version published here can be made latest."
        )
    return read_manifest(folder)


@contextmanager
def _locked(model_root: Path) -> Iterator[None]:
    """An exclusive lock on the model folder itself (flock on the directory: no lock file left
    behind, and released when its holder dies)."""
    descriptor = os.open(model_root, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock
