"""VAE anomaly detection: polars ingest, PyTorch training, ONNX export, onnxruntime scoring.

The subpackages are the deployment profiles, each allowed to import only the ones below it
(README, "How the code is organised"; `make lint` checks the rules):
`cli`/`demo` > `build` > `model` | `ops` > `runtime` > `artifact` > `data` > `core`.
Scoring (`runtime`, `ops`) never imports torch, onnx or scikit-learn; training (`build`,
`model`) does. Nothing is imported here, so `import pipeline.runtime` stays light."""

__version__ = "0.1.0"
