"""The exported model's contract and its files: graph names and signatures, output columns and
the constants baked into the graphs (`contract`), the validated manifest with its checksums,
versions and the `latest` pointer (`manifest`), and the threshold record (`threshold`).

May import `pipeline.core` and `pipeline.data`, pydantic and numpy; never torch, onnx or
scikit-learn: anything that reads a model (the runtime, the operations code, another
language's port) reads this."""
