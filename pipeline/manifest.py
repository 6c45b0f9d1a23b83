"""The model manifest: a versioned, validated JSON file that travels with the ONNX graphs.

It holds everything needed to score (feature schema, scaler, threshold, score definition)
and a sha256 per file, checked before any graph is loaded. Never pickle."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ValidationError

from pipeline.errors import ModelArtifactError
from pipeline.schema import FeatureSchema
from pipeline.threshold import Threshold

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
LATEST = "latest"
SCORE_DEFINITION = (
    "negative ELBO with z = mu: sum over inputs of -log p(x_i | z = mu) in raw feature units "
    "plus KL(q(z|x) || N(0, I)), averaged over the ensemble members (model.members); "
    "higher = more anomalous"
)


class ScalerSpec(BaseModel):
    mean: list[float]
    scale: list[float]


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
    model: dict
    training: dict
    threshold: Threshold
    feature_baseline: list[float]  # mean validation -log p(x_i|z) per input, for contributions
    training_data: dict
    validation: dict
    library_versions: dict[str, str]
    opset: int
    graphs: dict[str, dict]
    files: dict[str, str] = {}  # file name -> sha256

    @property
    def key(self) -> str:
        """`name/version`: the model version a scored batch or an alert belongs to."""
        return f"{self.name}/{self.version}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelArtifactError(f"'{path}' is not valid JSON: {exc}.") from exc
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
        field = ".".join(str(p) for p in first["loc"])
        raise ModelArtifactError(f"'{path}' is invalid at `{field}`: {first['msg']}.") from exc
    if verify:
        verify_files(folder, manifest)
    return manifest


def verify_files(folder: Path, manifest: Manifest) -> None:
    """Check every listed file exists and matches its sha256."""
    for name, expected in manifest.files.items():
        file = folder / name
        if not file.is_file():
            raise ModelArtifactError(f"model folder '{folder}' is missing '{name}', listed in its manifest.")
        actual = sha256_file(file)
        if actual != expected:
            raise ModelArtifactError(
                f"'{file}' fails its sha256 check (manifest {expected[:12]}…, file {actual[:12]}…): "
                "it was changed or truncated after export. Re-export the model."
            )
