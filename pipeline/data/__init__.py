"""Data in: reading files, globs and folders with polars, the feature schema learnt at training
and enforced at scoring (types, categories, missing values, sensor windows), and scaling.

May import `pipeline.core`, polars, pyarrow and numpy; never torch, onnx or
scikit-learn, because scoring reads its batches through it."""
