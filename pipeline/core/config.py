"""Validated configuration: what the user asks for, before any data is seen.

Defaults were chosen from measurements on the labelled benchmark sets (README, "Defaults")."""

from __future__ import annotations

import codecs
import copy
import math
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.core.errors import PipelineError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowSpec(_Strict):
    """Sliding windows over each entity's time series.

    Every time step is scored by `rule`, both causal: `end` takes the score of the window that
    ends at the step; `mean` the mean score of the windows ending at the step's last `length`
    steps (itself included), the causal form of scoring a step by the windows that cover it
    (TimeEval's reverse windowing). A window shows an anomaly for as long as it covers it, so
    the mean weighs that evidence together instead of one window's draw: it gained on both
    halves of every series suite (bench/NOTES.md, 2026-12-03). The first `length - 1` steps
    of an entity are scored on a window padded with its first row, and enter no mean."""

    length: int = Field(10, ge=1)
    stride: int = Field(1, ge=1)
    rule: Literal["end", "mean"] = "mean"

    @property
    def averaged(self) -> bool:
        """Whether a step's score is a mean over windows (`mean` with more than one step)."""
        return self.rule == "mean" and self.length > 1


class CsvReading(_Strict):
    """How CSV and TSV files are read, for exports that are not plain CSV (a plant historian's:
    3,14 with ';' between fields, a units row under the header, `#N/A` for a missing reading).
    Kept with the model, so scoring reads its files as training did (but the separator, which
    each file's header shows); `vad score` can change it for one run. polars' own CSV options."""

    separator: str | None = Field(None, min_length=1, max_length=1)  # None: sniffed from the header
    decimal_comma: bool = False  # 3,14 is 3.14; fields are then separated by another character (';', tab)
    skip_rows_after_header: int = Field(0, ge=0)  # rows under the header that are not data (units)
    null_values: list[str] = []  # markers of a missing value besides the empty cell ("NA", "-", "#N/A")
    # utf8, utf8-lossy (a bad byte becomes �), or an 8-bit codec Python knows (cp1252, latin-1):
    # polars scans UTF-8 only, so a file in another codec is decoded into memory first.
    encoding: str = "utf8"
    # The time column's format where it is text (strptime, "%d.%m.%Y %H:%M"): 03/04/2026 is
    # 3 April or 4 March by it. Set, polars guesses no dates, so the format alone decides.
    time_format: str | None = None

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        if value not in ("utf8", "utf8-lossy"):
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError(
                    f"unknown encoding {value!r}: utf8, utf8-lossy, or a codec such as cp1252 or latin-1"
                ) from None
        return value


class DataConfig(_Strict):
    """Which columns are features, keys and labels, and how bad values are handled."""

    mode: Literal["tabular", "sensor"] = "tabular"
    features: list[str] | None = None  # None: every numeric (and, in tabular mode, string) column left
    id_columns: list[str] = []  # passed through to the output, never features
    label_column: str | None = None  # kept for evaluation, never a feature
    ignore_columns: list[str] = []  # neither features nor keys (other labels, free text)
    time_column: str | None = None
    entity_column: str | None = None  # sensor mode: windows never cross entities
    window: WindowSpec = WindowSpec()
    missing: Literal["error", "impute"] = "error"  # impute: training median, counts reported
    # Sensor mode: a time that repeats within an entity (a clock change, a resent reading).
    # error: refuse the batch, naming both rows; last: keep the reading that came last in the
    # input; mean: one row per time, numeric features averaged (others from the last reading).
    # Stored with the model and applied when scoring; merged rows are counted in the report.
    duplicates: Literal["error", "last", "mean"] = "error"
    # Sensor mode: a window never spans a gap in time longer than this; the series restarts
    # after it, scored by the padded rule as an entity's first steps are. None: windows count
    # rows, whatever time lies between them. ISO 8601 ("PT15M"), "HH:MM:SS" or seconds; for
    # a numeric time column, compared with its differences in its own units as seconds.
    max_gap: timedelta | None = None
    # Sensor mode: readings taken onto a fixed time step before windowing (a datetime time
    # column): each entity's readings in one step become one row at the step's start, numeric
    # features averaged, others from the last reading. Irregular clocks then give windows of a
    # fixed span. Repeated times fall into one step, so `duplicates` no longer applies. A step
    # with no reading is no row: with `max_gap` the series restarts after it. None: as read.
    resample: timedelta | None = None
    # A category never seen in training (a new production line): `flag` marks its row anomalous
    # whatever its score (encoded as no known category, a row scores like the others); `ignore`
    # leaves the decision to the score. Counted in the report either way.
    unseen: Literal["flag", "ignore"] = "flag"
    separator: str | None = None  # CSV separator; None sniffs it from the header (also `csv.separator`)
    csv: CsvReading = CsvReading()
    # Sensor mode: the time column holds local wall-clock times of this IANA zone
    # ("Europe/Berlin"); they are taken to UTC before anything else, so the hour that repeats
    # when clocks go back is two hours, not repeated readings (a time seen again within an
    # entity in that hour is the later one), and the skipped hour is an error. None: as read.
    time_zone: str | None = None
    max_categories: int = Field(50, ge=2)  # string columns with more distinct values are skipped

    @model_validator(mode="before")
    @classmethod
    def _one_separator(cls, values: object) -> object:
        """`separator` (older configs) and `csv.separator` name one setting: the CSV reading's."""
        if isinstance(values, dict) and values.get("separator") is not None:
            reading = dict(values.get("csv") or {})
            if reading.get("separator") is None:
                values = {**values, "csv": {**reading, "separator": values["separator"]}}
        return values

    @model_validator(mode="after")
    def _sensor_needs_time(self) -> DataConfig:
        if self.mode == "sensor" and not self.time_column:
            raise ValueError("sensor mode needs `time_column`")
        # Options of series given to a table would be silently dropped: refused, with the reason.
        for name in ("window", "max_gap", "resample", "entity_column", "time_zone"):
            if self.mode == "tabular" and name in self.model_fields_set and getattr(self, name) is not None:
                raise ValueError(
                    f"`{name}` applies to sensor series (mode = 'sensor', with a time_column); a table's "
                    "rows are scored one by one"
                )
        if self.time_zone is not None:
            try:
                ZoneInfo(self.time_zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"time_zone {self.time_zone!r} is not an IANA zone (such as 'Europe/Berlin')") from None
        for name in ("max_gap", "resample"):
            value = getattr(self, name)
            if value is not None and value <= timedelta(0):
                raise ValueError(f"{name} must be a positive duration, got {value}")
        return self


class ModelConfig(_Strict):
    """MLP VAE shape and likelihood. `None` sizes scale with the number of inputs."""

    hidden: list[int] | None = None  # default: [clip(2d, 16, 128), clip(d, 8, 64)]
    # default: 2 for tables; for sensor windows 4 (2 below 8 inputs). Chosen by the half-and-half
    # protocol over three seeds (bench/NOTES.md, session 6): a 2-D code lifted 26_optdigits from
    # 0.38 to 0.70–0.81 and moved the other 23 ADBench sets by ±0.03; SKAB lost 0.04 with it.
    latent: int | None = Field(None, ge=1)
    # bernoulli: Bernoulli on columns that are 0/1 in training (one-hot included), fixed-variance
    # Gaussian on the rest; student: Bernoulli likewise, Student-t with `student_df` degrees of
    # freedom (unit scale) on the rest; fixed: Gaussian with unit variance everywhere; gaussian:
    # learned per-feature variance. The t is not the default (bench/NOTES.md, session 15): it
    # lifted both ADBench halves (mean 0.767 → 0.774 at ν 4) but flagged fewer rows whose one
    # column is far out (the demo's overheated batches 0.89 → 0.68; bench/time_to_model.py's
    # rows ROC-AUC 0.912 → 0.841), and sensor windows fell (SKAB 0.873 → 0.471).
    likelihood: Literal["fixed", "gaussian", "bernoulli", "student"] = "bernoulli"
    # The t's degrees of freedom: heavier tails as it falls, 1 is the Cauchy. Past about 1,000 the t
    # is a Gaussian, and the exported graph's float32 loses its digits (R21b: 1e4 failed the
    # export's parity check at 8e-5, 2,000 passed): use a Gaussian likelihood instead.
    student_df: float = Field(4.0, gt=0, le=1000)
    # Independently initialised VAEs trained side by side in one network; the score is the
    # mean of their negative ELBOs. Measured: 5 members lift 32_shuttle from 0.93–0.99 (one
    # model, by seed) to 0.988–0.991 (README, "Defaults").
    members: int = Field(5, ge=1, le=64)
    # standard: (x - mean) / std; robust: (x - median) / (IQR / 1.349); quantile: each column
    # with |skewness| > 1 through its rank-Gauss curve (piecewise linear, linear beyond the
    # training range), then standard. auto: quantile for tables, standard for sensor windows,
    # each chosen by the half-and-half protocol (bench/NOTES.md, 2026-11-27): the map lifts
    # the tabular mean, but on windows of one skewed series it compresses the spikes and
    # shifts that are the anomalies (NAB 0.537 → 0.569 without it, SKAB unchanged). Windows of
    # one signal take robust (pipeline.model.defaults.SERIES_SCALING) with β 1: NAB 0.571 → 0.587 over three seeds, both
    # halves up (bench/NOTES.md, session 8); on SKAB's 8 sensors robust fell from 0.874 to 0.716.
    scaling: Literal["auto", "quantile", "robust", "standard"] = "auto"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # families: when the 0/1 inputs (Bernoulli) and the continuous ones both occur, each input of
    # the larger family weighs (smaller / larger) in the ELBO, so the families have equal say;
    # none: every input weighs 1. auto: families for sensor windows, none for tables, chosen on
    # NASA telemetry by the half-and-half protocol (bench/NOTES.md, session 12): one telemetry
    # value beside 54 command flags was drowned by the flags (VUS-PR 0.184 → 0.298, both halves
    # up); a table's columns are the record the user chose, and one 0/1 column of 21
    # (7_Cardiotocography) would weigh as much as the other twenty.
    balance: Literal["auto", "families", "none"] = "auto"


class TrainConfig(_Strict):
    """Optimisation, early stopping and reproducibility."""

    epochs: int = Field(100, ge=1)
    # None: chosen for the device (pipeline.model.train.training_plan): 256 and 1e-3 on the CPU, larger
    # batches with a scaled learning rate on CUDA, where a step of 256 rows is launch-bound.
    batch_size: int | None = Field(None, ge=1)
    learning_rate: float | None = Field(None, gt=0)
    # Weight of the KL term at the end of warm-up. None: 3, or 1 for a table of at most 16
    # inputs (pipeline.model.defaults.settled_train), chosen by the half-and-half protocol over three seeds (bench/NOTES.md,
    # session 7): with a few inputs the reconstruction has a few terms to weigh against the KL,
    # and β 3 squeezed the code until local structure was lost (33_skin 0.55 → 0.68 at β 1,
    # 44_Wilt +0.04, 22_magic +0.03; 23_mammography −0.03). Wide tables lost with β 1.
    # Windows of one signal take β 1 too (pipeline.model.defaults.SERIES_BETA, with robust scaling).
    beta: float | None = Field(None, ge=0)
    warmup_epochs: int = Field(10, ge=0)  # KL weight rises linearly from 0 to beta
    free_bits: float = Field(0.0, ge=0)  # KL floor per latent dimension (nats), against posterior collapse
    # Share of each batch's highest-loss rows left out of the gradient (trimmed likelihood):
    # unlabelled training data holds anomalies. Measured: 0.05 lifts the ADBench mean from
    # 0.775 to 0.815 over 3 seeds (README, "Defaults"). None: 0.05, or 0.10 for a table of at most
    # 16 inputs, whose freer β-1 code otherwise learned 32_shuttle's 7% contamination when
    # trained on all 34,000 rows (0.978 against 0.990; bench/NOTES.md, session 7).
    trim_fraction: float | None = Field(None, ge=0, lt=0.5)
    clip_inputs: float = Field(10.0, gt=0)  # scaled training inputs are clipped to ±this
    patience: int = Field(10, ge=1)  # epochs without validation improvement before stopping
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    max_rows: int | None = Field(None, ge=100)  # sample at most this many training rows
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool | None = None  # bf16 autocast, CUDA only; None: the measured choice (training_plan)
    compile: bool = False  # torch.compile the loss terms: 1.2× per step on a CPU, after ~20 s of compiling
    progress: bool = True  # bars on a terminal only (tqdm's disable=None): pipes and logs stay clean (N19)


class Persistence(_Strict):
    """Alarm persistence: a row is anomalous when at least `k` of the last `n` rows of its
    own series (itself included) score above the threshold, the rule published SKAB methods
    use against one-off spikes. k = n = 1 (the default) flags every exceedance. Sensor mode only."""

    k: int = Field(1, ge=1)
    n: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _k_within_n(self) -> Persistence:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) cannot exceed n ({self.n})")
        return self


class AlarmRule(_Strict):
    """When a sensor series raises an alarm (the `alarm` column): at the onset of an anomalous
    episode. An episode starts at a flagged row (`is_anomaly`, after persistence) that follows
    more than `quiet` rows without a flag, and alarms unless its entity alarmed in the
    `hold_off` rows before it. Flags say which rows are anomalous; alarms say when to look, once
    per episode, as an operator is paged: a drift that keeps flagging rows alarms once, not
    every `hold_off` rows. `hold_off = quiet = 0`: every flagged row alarms. Tables: each flagged
    row is its own episode. Both chosen by the halves protocol on NAB's alarm score
    (bench/alarms.py, bench/NOTES.md 2026-12-02)."""

    hold_off: int = Field(400, ge=0)
    quiet: int = Field(200, ge=0)


class ThresholdConfig(_Strict):
    """How the alarm threshold is fitted on calibration scores (higher score = more anomalous)."""

    method: Literal["quantile", "contamination", "pot", "best-f1"] = "quantile"
    quantile: float = Field(0.99, gt=0, lt=1)
    contamination: float = Field(0.01, gt=0, lt=0.5)
    pot_initial_quantile: float = Field(0.98, gt=0.5, lt=1)
    pot_risk: float = Field(1e-3, gt=0, lt=0.5)  # target false-alarm rate
    persistence: Persistence = Persistence()
    alarm: AlarmRule = AlarmRule()


class DriftRules(_Strict):
    """When a batch has drifted from the model's training data (pipeline/artifact/drift.py):
    a table's column whose population stability index over the batch passes `psi` (by its
    usual reading, above 0.25 is a major shift), or, per entity of a sensor fleet, a column
    whose median moved more than `shift` times the spread that medians of as many readings
    showed in training."""

    psi: float = Field(0.25, gt=0)
    shift: float = Field(3.0, gt=0)


class AlertRules(_Strict):
    """When a scored batch raises an alert (one per batch and model version).

    An entity (or, in tabular mode, the whole batch) alarms when `min_anomalous` rows above
    the threshold fall within `within` consecutive rows, and, in sensor mode, from the onset of
    an anomalous episode (an `alarm` row: AlarmRule) on, counting rows of earlier batches too,
    so an episode pages once, in the batch where it is confirmed, however its rows are cut. In
    sensor mode an entity that alarmed less than `cooldown_minutes` earlier (in the data's own
    time) is suppressed, so one fault pages once. Severity grows with the peak score's distance
    past the threshold, in units of (threshold − median validation score)."""

    min_anomalous: int = Field(3, ge=1)
    # Counted across batches through each entity's stream state, which keeps its last 256 flags.
    within: int = Field(10, ge=1, le=256)
    cooldown_minutes: float = Field(60.0, ge=0)
    high_at: float = Field(1.0, gt=0)
    critical_at: float = Field(3.0, gt=0)
    top_rows: int = Field(10, ge=1, le=1000)
    drift: DriftRules = DriftRules()

    @model_validator(mode="after")
    def _can_fire(self) -> AlertRules:
        """Rules that could never raise an alert, or never lift one, are refused when given
        (reliability review N12: 20 of 10 rows was accepted, and no alert ever came)."""
        if self.min_anomalous > self.within:
            raise ValueError(
                f"min_anomalous ({self.min_anomalous}) cannot exceed within ({self.within}): no alert could ever be raised"
            )
        if self.high_at > self.critical_at:
            raise ValueError(f"high_at ({self.high_at}) cannot exceed critical_at ({self.critical_at})")
        if not math.isfinite(self.cooldown_minutes):
            raise ValueError("cooldown_minutes must be a finite number: an infinite one silences an entity for good")
        return self


class PromotionRules(_Strict):
    """When a retrained challenger may replace the champion (`flows/retrain.py`). It trains on
    the recent data less the rows the champion flags, at most `max_left_out` of them (the
    highest-scoring): after a drift the champion flags most new rows, and leaving them all out
    left a demo challenger a quarter of its data. Both are judged on the same recent rows, the
    latest `holdout` share of the new data, held out of the challenger's training (its label
    column's normal rows, when it has one):
    - the challenger's false-alarm rate at its own threshold is at most the champion's there
      plus `max_false_alarm_rise` (half a point by default; None turns the rule off), and at
      most `max_false_alarms` whatever the champion did. The relative rule is the default
      because an absolute one promoted a challenger with 2.9x the champion's false alarms
      (newcomer review N9: 4.6% against 1.6%, under a 5% cap);
    - its scores there are stable: their PSI against its own validation scores is at most
      `max_score_psi`;
    - it ranks those rows like the champion (Spearman correlation of the scores) at least
      `min_rank_agreement`: a challenger that orders normal rows unlike anything before is
      suspect even when quiet;
    - on labelled rows with both classes, its ROC-AUC is at most `max_auc_loss` below the
      champion's, and, when `max_recall_loss` is set, its recall (the share of anomalous rows
      it flags) at most that much below the champion's. Recall is off by default: a champion
      that drifted flags nearly every row, so its recall is high for the wrong reason (the
      retrain flow's test: 71% false alarms), and "recall no lower" would keep it in service."""

    holdout: float = Field(0.3, gt=0, lt=1)
    max_left_out: float = Field(0.1, ge=0, lt=1)  # of the challenger's rows, at most this share flagged ones left out
    max_false_alarm_rise: float | None = Field(0.005, ge=0, le=1)
    max_false_alarms: float = Field(0.05, ge=0, le=1)
    max_score_psi: float = Field(0.25, gt=0)
    min_rank_agreement: float = Field(0.0, ge=-1, le=1)
    max_auc_loss: float = Field(0.01, ge=0)
    max_recall_loss: float | None = Field(None, ge=0, le=1)


class ExportConfig(_Strict):
    """What is exported besides the fp32 graphs."""

    int8: bool = False  # also write scorer_int8.onnx (dynamic quantisation; `vad score --precision int8`)


class PipelineConfig(_Strict):
    """Everything `vad train` needs, loadable from a TOML file."""

    name: str = Field("model", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    threshold: ThresholdConfig = ThresholdConfig()
    export: ExportConfig = ExportConfig()
    promotion: PromotionRules = PromotionRules()

    @model_validator(mode="after")
    def _threshold_fits_the_data(self) -> PipelineConfig:
        """Settings that cannot work are refused here, before any data is read or trained on."""
        if self.threshold.method == "best-f1" and not self.data.label_column:
            raise ValueError("threshold method 'best-f1' needs labels: set data.label_column")
        if self.threshold.persistence.n > 1 and self.data.mode != "sensor":
            raise ValueError("alarm persistence counts rows of a series: it needs data.mode = 'sensor'")
        return self


def remembered_config(training: dict, origin: str) -> dict:
    """The configuration a model was trained with, from its manifest's `training` record
    (every option given and every default settled, beside what the run measured), as the
    sections `load_config` starts from: `vad train --like` and the retrain flow."""
    sections = {name: training[name] for name in PipelineConfig.model_fields if name in training}
    try:
        PipelineConfig.model_validate(sections)
    except ValidationError as exc:
        field, message, _ = _first_error(exc)
        raise PipelineError(
            f"the training configuration kept by '{origin}' no longer loads (`{field}`: {message}); "
            "give the options again with --config."
        ) from exc
    return sections


def load_config(path: str | Path | None = None, *, base: dict | None = None, **overrides: object) -> PipelineConfig:
    """Read a TOML config (sections data, model, train, threshold, export) over `base` (a
    remembered configuration: `remembered_config`), then apply overrides, section by section."""
    raw: dict = copy.deepcopy(base) if base else {}
    if path is not None:
        try:
            _merge_into(raw, tomllib.loads(Path(path).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PipelineError(f"config file '{path}' cannot be read: {exc}") from exc
    _merge_into(raw, overrides)
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        field, message, given = _first_error(exc)
        raise PipelineError(f"config `{field}` is invalid: {message} (got {given!r}).") from exc


def _first_error(exc: ValidationError) -> tuple[str, str, object]:
    """The first failing field of a validation error: its dotted name, the message, the value given."""
    first = exc.errors()[0]
    return ".".join(str(p) for p in first["loc"]), first["msg"], first.get("input")


def _merge_into(raw: dict, overrides: dict) -> None:
    """Each section's keys set over `raw`'s, a nested table merged a level down (`--window`
    keeps the file's stride); a None leaves the value as it was (an option not given)."""
    for section, values in overrides.items():
        if isinstance(values, dict):
            target = raw.setdefault(section, {})
            for key, value in values.items():
                if isinstance(value, dict) and isinstance(target.get(key), dict):
                    target[key] = {**target[key], **value}
                elif value is not None:
                    target[key] = value
        elif values is not None:
            raw[section] = values
