"""Data in: reading files, globs and folders with polars, the feature schema learnt at training
and enforced at scoring (types, categories, missing values, sensor windows), and scaling.

May import `pipeline.core`, polars, numpy and flatbuffers (an Arrow file's header); never
pyarrow, torch, onnx or scikit-learn, because the scoring install reads its batches through it."""
