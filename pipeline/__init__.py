"""VAE anomaly detection: polars ingest, PyTorch training, ONNX export, onnxruntime scoring.

Scoring (`pipeline.runtime`) never imports torch; training (`pipeline.fit`,
`pipeline.detector`) does. Nothing is imported here, so `import pipeline.runtime` stays light."""

__version__ = "0.1.0"
