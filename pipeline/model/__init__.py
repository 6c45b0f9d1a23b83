"""The model in PyTorch: the VAE and its ensemble (`vae`), the likelihoods and the ELBO
(`elbo`), the modules exported as ONNX graphs (`graphs`), and the training loop (`train`)
with its optimiser (`optim`).

May import torch, `pipeline.core`, `pipeline.data` and `pipeline.artifact`. Nothing that
scores imports this package."""
