"""VAE anomaly detection: polars ingest, PyTorch training, ONNX export, onnxruntime scoring.

The subpackages are the deployment profiles, each allowed to import only the ones below it
(README, "How the code is organised"; `make lint` checks the rules):
`demo` > `cli` | flows > `training` | `ops` > `model` | `runtime` > `artifact` > `data` > `core`
(a `|` joins siblings, which never import each other). Scoring (`runtime`, `ops`) never
imports torch, onnx or scikit-learn; training (`training`, `model`) does. Nothing is
imported here, so `import pipeline.runtime` stays light."""

__version__ = "0.1.0"
