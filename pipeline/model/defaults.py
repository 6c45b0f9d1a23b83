"""The choices a config leaves to the data (`scaling = "auto"`, an open `latent`, `balance`,
`beta` and `trim_fraction`), made by the data's mode and size. Each default was chosen by the
half-and-half protocol (bench/NOTES.md names the session); the model package applies them, so
training from a PipelineConfig (`resolve`) and `train_vae` called alone agree."""

from __future__ import annotations

from pipeline.core.config import PipelineConfig, TrainConfig

TABLE_LATENT = 2  # a table's latent size when the config leaves it open (ModelConfig.latent)
BETA, TRIM = 3.0, 0.05  # the KL's weight and the trimmed share when the config leaves them open ...
NARROW_TABLE_BETA, NARROW_TABLE_TRIM = 1.0, 0.10  # ... but for a table of at most NARROW_TABLE_INPUTS
NARROW_TABLE_INPUTS = 16
# Windows of one signal (a univariate series) are scaled by median and IQR and trained with
# β 1: the series' own spikes, the anomalies sought, set its standard deviation (ModelConfig.scaling).
SERIES_SCALING, SERIES_BETA = "robust", 1.0


def resolve(config: PipelineConfig, inputs: int | None = None) -> PipelineConfig:
    """`config` with the choices left to the data's mode made (`scaling = "auto"`, a table's
    latent size and, given the model's number of `inputs`, a sensor's scaling, the KL's weight
    and the trimmed share), so what is trained and what the manifest records say the same.
    A config with nothing left open is returned as it is."""
    data, model = config.data, config.model
    signals = inputs // data.window.length if inputs and data.mode == "sensor" else inputs  # per step
    settled = {
        "scaling": settled_scaling(model.scaling, data.mode, signals),
        "latent": settled_latent(model.latent, data.mode),
        "balance": settled_balance(model.balance, data.mode),
    }
    train = config.train if signals is None else settled_train(config.train, data.mode, signals)
    if all(getattr(model, k) == v for k, v in settled.items()) and train == config.train:
        return config
    return config.model_copy(update={"model": model.model_copy(update=settled), "train": train})


def settled_scaling(scaling: str, mode: str, signals: int | None = None) -> str:
    """`scaling` with `auto` settled by the data's mode: the rank-Gauss map for tables; for
    sensor windows, robust over one signal and standard over several, left open until the
    number of `signals` per step is known (ModelConfig.scaling says why)."""
    if scaling != "auto":
        return scaling
    if mode != "sensor":
        return "quantile"
    if signals is None:
        return scaling
    return SERIES_SCALING if signals == 1 else "standard"


def settled_balance(balance: str, mode: str) -> str:
    """`balance` with `auto` settled by the data's mode (ModelConfig.balance says why)."""
    if balance != "auto":
        return balance
    return "families" if mode == "sensor" else "none"


def settled_latent(latent: int | None, mode: str) -> int | None:
    """`latent` with the tables' default settled (TABLE_LATENT); sensor windows keep None, the
    rule by inputs (VAEShape.for_inputs: 4, or 2 below 8 inputs)."""
    return TABLE_LATENT if latent is None and mode == "tabular" else latent


def settled_train(train: TrainConfig, mode: str, signals: int) -> TrainConfig:
    """`train` with an open `beta` and `trim_fraction` settled: NARROW_TABLE_BETA and
    NARROW_TABLE_TRIM for a table of at most NARROW_TABLE_INPUTS inputs, SERIES_BETA for
    windows of one signal, BETA and TRIM otherwise (TrainConfig says why); a value the config
    sets stands. `signals`: a table's inputs, or a window's inputs per time step."""
    narrow = mode == "tabular" and signals <= NARROW_TABLE_INPUTS
    series = mode == "sensor" and signals == 1
    beta = train.beta if train.beta is not None else NARROW_TABLE_BETA if narrow else SERIES_BETA if series else BETA
    trim = train.trim_fraction if train.trim_fraction is not None else NARROW_TABLE_TRIM if narrow else TRIM
    if (beta, trim) == (train.beta, train.trim_fraction):
        return train
    return train.model_copy(update={"beta": beta, "trim_fraction": trim})
