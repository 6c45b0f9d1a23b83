"""The manifest's digest written into every graph's metadata, at export and at re-threshold:
the scorer checks it at load (`pipeline.runtime.providers.check_graph`), so an edit of any
manifest field that changes a flag is caught. Here, not in `pipeline.artifact`, because
writing graphs needs `onnx`, which scoring never loads."""

from __future__ import annotations

from pathlib import Path

import onnx

from pipeline.artifact.manifest import DIGEST_KEY, Manifest, manifest_digest


def stamp_digest(folder: Path, manifest: Manifest) -> None:
    """Write the manifest's digest into the metadata of every graph in `folder` (staging)."""
    digest = manifest_digest(manifest)
    for path in sorted(folder.glob("*.onnx")):
        proto = onnx.load(str(path))
        props = {prop.key: prop.value for prop in proto.metadata_props} | {DIGEST_KEY: digest}
        del proto.metadata_props[:]
        for key, value in props.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(path))
