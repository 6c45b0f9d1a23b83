"""The exported model's contract, in one torch-free place: the graphs' names and their inputs
and outputs, the constants baked into them, and the columns a scores file holds.

Export writes graphs to this contract, the runtime and the CLI read it, the alert and report
code name their columns from it, and another runtime (examples/node) follows the same names.
Changing a value here changes the exported format: bump `manifest.SCHEMA_VERSION` with it."""

from __future__ import annotations

from typing import Any

# -- graphs -------------------------------------------------------------------------------
ENCODER = "encoder"  # scaled inputs -> latent mean and log-variance per ensemble member
DECODER = "decoder"  # latent draws -> output mean and log-variance, in scaled units
SCORER = "scorer"  # raw inputs -> score, per-input NLL, KL, latent mean, ranked explanation
SCORER_SAMPLED = "scorer_sampled"  # raw inputs and noise -> importance weights (mc, iwae)
SCORER_INT8 = "scorer_int8"  # the scorer with int8 weights ([export] int8 = true)

# Each graph's (inputs, outputs), in order. The int8 scorer has the scorer's signature.
GRAPH_IO: dict[str, tuple[list[str], list[str]]] = {
    ENCODER: (["x_scaled"], ["mu", "logvar"]),
    DECODER: (["z"], ["mean", "logvar"]),
    SCORER: (["x"], ["score", "feature_nll", "kl", "mu", "top_index", "top_share"]),
    SCORER_SAMPLED: (["x", "eps"], ["log_weight", "feature_nll"]),
}
ROW_GRAPHS = (SCORER, SCORER_INT8, SCORER_SAMPLED)  # graphs fed one row of raw inputs per score

INPUT_CLIP = 1e4  # scaled units; the scorer graphs clip to it, keeping squared errors finite
TOP_K = 3  # contributing source columns the scorer graph ranks per row

# -- a scores file's columns, after the row keys ---------------------------------------------
ROW = "row"  # the key of a table without key columns: the row's number in its file, from 1
SCORE = "score"  # negative ELBO, higher = more anomalous
IS_ANOMALY = "is_anomaly"  # score above the threshold (and, for sensors, the persistence rule)
ALARM = "alarm"  # the onset of an anomalous episode (sensors: after the hold-off; tables: is_anomaly)
# Sensors: False where a step was scored on a padded window (an entity's first `length - 1` rows,
# before a full window exists) and its score did not pass the wide margin: not judged, not normal.
JUDGED = "judged"
PERCENTILE = "percentile"  # where the score falls among the validation scores, 0-100
SOURCE_FILE = "source_file"  # the input file's name (score_files)
MODEL_VERSION = "model_version"  # name/version of the model that scored the row (score_files, partitions)
FEATURE_SUFFIX, SHARE_SUFFIX = "_feature", "_share"


def top_feature(rank: int) -> str:
    """The column naming the `rank`-th (1-based) most contributing source column."""
    return f"top{rank}{FEATURE_SUFFIX}"


def top_share(rank: int) -> str:
    """The column holding that source column's share of the excess −log p."""
    return f"top{rank}{SHARE_SUFFIX}"


def feature_columns(columns: list[str]) -> list[str]:
    """The ranked explanation's feature columns among `columns`, best first."""
    ranked = [c for c in columns if c.startswith("top") and c.endswith(FEATURE_SUFFIX)]
    return sorted(ranked, key=lambda c: int(c[3 : -len(FEATURE_SUFFIX)]))


def share_of(feature_column: str) -> str:
    """The share column that goes with a `topN_feature` column."""
    return feature_column[: -len(FEATURE_SUFFIX)] + SHARE_SUFFIX


def explanation(row: dict[str, Any]) -> str:
    """A scored row's top features with their shares of the excess −log p, as people read it
    ("vibration 98%, ambient_temp 1%"): the console table and the HTML report say it so."""
    ranked = [(row[k], row[share_of(k)]) for k in feature_columns(list(row))]
    return ", ".join(f"{name} {share:.0%}" for name, share in ranked if share >= 0.005)


def score_columns(columns: list[str]) -> set[str]:
    """The columns scoring added to the row keys (everything but the keys)."""
    ranked = feature_columns(columns)
    added = {
        SCORE,
        IS_ANOMALY,
        ALARM,
        JUDGED,
        PERCENTILE,
        SOURCE_FILE,
        MODEL_VERSION,
        *ranked,
        *(share_of(c) for c in ranked),
    }
    return added & set(columns)
