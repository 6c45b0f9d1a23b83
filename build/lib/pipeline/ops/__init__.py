"""Running scoring as an operation: the SQLite ledger of batches and alerts (`ledger`), the
inbox that claims and scores new files (`inbox`), alert rules (`alerts`), delivery through
Prefect notification blocks (`delivery`) and run reports with plots (`reports`).

May import `pipeline.runtime` and what lies below it, polars, matplotlib and Prefect; never
torch, onnx or scikit-learn: the scheduled scoring flow loads it on scoring-only machines."""
