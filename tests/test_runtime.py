"""Scoring with onnxruntime: determinism, estimators, explanations, providers, no torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from common import DATA
from polars.testing import assert_frame_equal

from pipeline.core.errors import PipelineError
from pipeline.core.memory import available_memory
from pipeline.runtime import ScoreOptions, Scorer, score_files, select_providers
from pipeline.runtime.files import WHOLE_FILE_MAX_ROWS, series_row_cap
from pipeline.runtime.scorer import _log_mean_exp

ROOT = Path(__file__).resolve().parents[1]
BATCH = ROOT / "data" / "sensors" / "batch.parquet"
TABLE = ROOT / "data" / "tabular" / "batch.csv"


def test_runtime_never_imports_torch_or_scipy(sensor_model: Path, tmp_path: Path) -> None:
    """torch is not installed for scoring; scipy's import was 0.11 s of every `vad score` start."""
    code = (
        "import sys; from pipeline.runtime import Scorer, score_files;"
        f"s = Scorer.load(r'{sensor_model}');"
        f"score_files(s, r'{BATCH}', r'{tmp_path / 'o.parquet'}', estimator='iwae', samples=2);"
        "s.encode(__import__('polars').read_parquet(r'" + str(BATCH) + "')); s.sample(3);"
        "assert 'torch' not in sys.modules, 'torch was imported';"
        "assert 'scipy' not in sys.modules, 'scipy was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_log_mean_exp_matches_scipys_logsumexp_with_infinite_weights() -> None:
    from scipy.special import logsumexp

    weights = np.random.default_rng(0).normal(-300.0, 50.0, size=(40, 16, 5))
    weights[0, :, 0] = -np.inf  # every draw impossible: −inf, as scipy gives
    weights[1, 3, 1] = -np.inf
    ours, theirs = _log_mean_exp(weights, axis=1), logsumexp(weights, axis=1) - np.log(16)
    assert ours[0, 0] == theirs[0, 0] == -np.inf
    np.testing.assert_allclose(ours[1:], theirs[1:], rtol=1e-12)


def test_same_input_gives_byte_identical_output(sensor_model: Path, tmp_path: Path) -> None:
    scorer = Scorer.load(sensor_model)
    for estimator in ("elbo", "mc"):
        a = score_files(scorer, BATCH, tmp_path / f"a-{estimator}.parquet", estimator=estimator, seed=3).output
        b = score_files(scorer, BATCH, tmp_path / f"b-{estimator}.parquet", estimator=estimator, seed=3).output
        assert a.read_bytes() == b.read_bytes()
    other = score_files(scorer, BATCH, tmp_path / "c.parquet", estimator="mc", seed=4).output
    assert pl.read_parquet(other)["score"].to_list() != pl.read_parquet(tmp_path / "a-mc.parquet")["score"].to_list()


def test_every_time_step_gets_a_score_with_its_keys(sensor_model: Path) -> None:
    frame = pl.read_parquet(BATCH)
    scored = Scorer.load(sensor_model).score(frame)
    assert scored.height == frame.height
    assert scored.columns[:4] == ["machine", "timestamp", "score", "is_anomaly"]
    assert (
        scored.select("machine", "timestamp")
        .sort("machine", "timestamp")
        .equals(frame.select("machine", "timestamp").sort("machine", "timestamp"))
    )


def test_row_and_column_order_do_not_change_scores(tabular_model: Path) -> None:
    frame = pl.read_csv(TABLE)
    scorer = Scorer.load(tabular_model)
    base = scorer.score(frame).sort("batch_id")
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=1).select(list(reversed(frame.columns)))
    # Scores agree to float32 rounding; percentiles interpolate them, so compare both in points.
    assert_frame_equal(scorer.score(shuffled).sort("batch_id"), base, abs_tol=1e-3)


def test_iwae_bound_is_tighter_than_mc_elbo_with_the_same_draws(tabular_model: Path) -> None:
    scorer = Scorer.load(tabular_model)
    x, _, _ = scorer.prepare(pl.read_csv(TABLE))
    mc = scorer.score_array(x, "mc", samples=8, seed=5).score
    iwae = scorer.score_array(x, "iwae", samples=8, seed=5).score
    assert np.all(iwae <= mc + 1e-4)  # log-mean-exp ≥ mean, row by row
    det = scorer.score_array(x).score
    assert np.corrcoef(det, mc)[0, 1] > 0.9


def test_contributions_are_shares_over_source_columns(tabular_model: Path) -> None:
    scorer = Scorer.load(tabular_model)
    scored = scorer.score(pl.read_csv(TABLE), top_k=3)
    totals = scored.select(pl.sum_horizontal("top1_share", "top2_share", "top3_share"))
    assert totals.to_series().max() <= 1.0 + 1e-6
    assert set(scored["top1_feature"].unique()) <= {c.name for c in scorer.schema.columns}
    # the labelled overheated batches are flagged and explained by their temperature
    truth = pl.read_csv(TABLE).filter(pl.col("anomaly_kind") == "overheat")["batch_id"]
    overheated = scored.filter(pl.col("batch_id").is_in(truth.implode()))
    assert overheated.height >= 10
    assert (overheated["top1_feature"] == "temperature").mean() >= 0.9
    assert overheated["is_anomaly"].mean() >= 0.7


def test_graph_ranks_contributions_as_numpy_does(tabular_model: Path) -> None:
    """The scorer graph's own top-k (one-hot groups summed per column) equals the ranking
    computed in numpy from its per-input terms: the fast path explains rows identically."""
    scorer = Scorer.load(tabular_model)
    x, _, _ = scorer.prepare(pl.read_csv(TABLE))
    ranked = scorer.score_array(x, top_k=3)
    full = scorer.score_array(x)
    shares = scorer.contributions(full.feature_nll)
    assert len(scorer.source_names) < x.shape[1]  # the model has one-hot groups to sum
    expected = np.take_along_axis(shares, np.argsort(-shares, axis=1, kind="stable")[:, :3], axis=1)
    np.testing.assert_allclose(ranked.top_share, expected, atol=1e-6)
    clear = (expected[:, 0] - expected[:, 1] > 1e-5) & (expected[:, 1] - expected[:, 2] > 1e-5)
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(ranked.top_index[clear], np.argsort(-shares, axis=1, kind="stable")[clear, :3])
    np.testing.assert_array_equal(ranked.score, full.score)


def test_chunks_scored_in_parallel_match_one_call_per_row(tabular_model: Path) -> None:
    """Rows spread over the per-core sessions (several chunks) score as they do alone."""
    scorer = Scorer.load(tabular_model)
    x, _, _ = scorer.prepare(pl.read_csv(TABLE))
    kernel = scorer.kernel()
    kernel.chunk = 7  # many chunks from a small table, so every session takes some
    many = np.tile(x, (5, 1))
    together = scorer.score_array(many).score
    alone = np.array([scorer.score_array(row[None]).score[0] for row in many[::37]])
    np.testing.assert_allclose(together[::37], alone, rtol=1e-6)
    assert len(together) == len(many)


def test_a_read_error_mid_file_stops_scoring_and_leaves_nothing(tabular_model: Path, tmp_path: Path) -> None:
    """The reading thread's error reaches the caller, and no output or temporary remains."""
    frame = pl.read_csv(TABLE)
    good = tmp_path / "batch.parquet"
    frame.write_parquet(good, row_group_size=50)
    data = bytearray(good.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64  # a later row group is damaged
    good.write_bytes(bytes(data))
    with pytest.raises(PipelineError, match="batch.parquet"):
        score_files(Scorer.load(tabular_model), good, tmp_path / "out.parquet", chunk_rows=50)
    assert [p.name for p in tmp_path.iterdir()] == ["batch.parquet"]


def test_threshold_override_without_reexport(tabular_model: Path) -> None:
    scorer = Scorer.load(tabular_model)
    frame = pl.read_csv(TABLE)
    assert scorer.score(frame, threshold=-1e9)["is_anomaly"].all()
    assert not scorer.score(frame, threshold=1e9)["is_anomaly"].any()


def test_score_options_are_checked_once_and_the_threshold_settled_once(tabular_model: Path, tmp_path: Path) -> None:
    scorer = Scorer.load(tabular_model)
    assert scorer.resolve(ScoreOptions()).threshold == scorer.threshold  # None: the model's own
    assert scorer.resolve(ScoreOptions(threshold=1.5)).threshold == 1.5
    for bad, message in [
        ({"estimator": "vi"}, "estimator must be one of"),
        ({"samples": 0}, "samples must be"),
        ({"top_k": -1}, "top_k must be"),
        ({"threshold": float("nan")}, "finite number"),
    ]:
        with pytest.raises(PipelineError, match=message):
            scorer.score(pl.read_csv(TABLE), **bad)
    report = score_files(scorer, TABLE, tmp_path / "scores.parquet", threshold=1e9)
    assert report.threshold == 1e9 and report.anomalies == 0  # the summary carries the threshold used


def test_dynamic_batch_one_row_matches_full_batch(tabular_model: Path) -> None:
    scorer = Scorer.load(tabular_model)
    x, _, _ = scorer.prepare(pl.read_csv(TABLE))
    full = scorer.score_array(x).score
    single = np.array([scorer.score_array(x[i : i + 1]).score[0] for i in range(5)])
    np.testing.assert_allclose(single, full[:5], rtol=1e-5)


def test_sample_and_encode_shapes(tabular_model: Path) -> None:
    scorer = Scorer.load(tabular_model)
    samples = scorer.sample(20, seed=1)
    assert samples.columns == [c.name for c in scorer.schema.columns]
    assert set(samples["line"].unique()) <= {"L1", "L2", "L3"}
    assert_frame_equal(samples, scorer.sample(20, seed=1))
    latent = scorer.encode(pl.read_csv(TABLE).head(7))
    members, size = scorer.manifest.model["members"], scorer.manifest.model["latent"]
    assert latent.columns[0] == "batch_id" and latent.width == 1 + members * size
    assert latent.columns[-1] == f"m{members - 1}_z{size - 1}"


def test_providers_fall_back_to_cpu_and_explicit_gpu_is_checked() -> None:
    assert select_providers("cpu") == ["CPUExecutionProvider"]
    assert select_providers("auto")[-1] == "CPUExecutionProvider"
    if not Path("/dev/nvidiactl").exists():
        assert select_providers("auto") == ["CPUExecutionProvider"]


def test_explicit_cuda_without_gpu_fails_clearly(tabular_model: Path) -> None:
    if Path("/dev/nvidiactl").exists():
        pytest.skip("a GPU is present")
    with pytest.raises(PipelineError, match="provider 'cuda'"):  # at load: the scorer graph opens eagerly
        Scorer.load(tabular_model, provider="cuda")
    for provider in ("cuda", "tensorrt"):  # from the CLI: one line, no screens of onnxruntime's probing log
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline.cli",
                "score",
                str(tabular_model),
                str(TABLE),
                "--provider",
                provider,
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2 and json.loads(result.stdout)["kind"] == "PipelineError"  # --json: the error as JSON
        assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: provider '{provider}' failed")


def test_prefetching_stops_cleanly_and_hands_errors_on() -> None:
    """A consumer that stops early does not leave the reading thread blocked (closing
    returns), and an error raised while reading reaches the consumer after the good items."""
    from pipeline.runtime.prefetch import prefetched

    items = prefetched(iter(range(1000)), depth=1)
    assert next(items) == 0
    items.close()  # joins the reading thread: would hang if its put could block for ever

    def failing():
        yield 1
        raise PipelineError("row group 2 is damaged")

    got = []
    with pytest.raises(PipelineError, match="damaged"):
        for item in prefetched(failing()):
            got.append(item)
    assert got == [1]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak memory from /proc (Linux only)")
def test_a_large_file_streams_with_flat_memory(tmp_path: Path) -> None:
    """4 M rows × 32 floats (512 MB once read) are scored in a fresh process whose resident
    memory grows by less than that: the reader holds chunks, never the file. Measured
    growth: about 200 MB at 2 M rows and at 4 M alike."""
    from pipeline.training.detector import VAEDetector

    rng = np.random.default_rng(0)
    names = [f"x{i}" for i in range(32)]
    detector = VAEDetector(hidden=[16], latent=2, members=1, epochs=2, progress=False)
    model = detector.fit(rng.standard_normal((2000, 32), dtype=np.float32)).export(tmp_path / "models", "stream")
    block = rng.standard_normal((250_000, 32), dtype=np.float32)
    table = pa.table({name: block[:, i] for i, name in enumerate(names)})
    with pq.ParquetWriter(tmp_path / "big.parquet", table.schema) as writer:
        for _ in range(16):
            writer.write_table(table, row_group_size=65536)
    code = (
        f"from pipeline.runtime import Scorer, score_files; s = Scorer.load({str(model)!r});"
        "kb = lambda key: int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith(key)));"
        f"before = kb('VmRSS:'); report = score_files(s, {str(tmp_path / 'big.parquet')!r}, "
        f"{str(tmp_path / 'scores.parquet')!r}); print(report.rows, before, kb('VmHWM:'))"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    rows, before, peak = (int(v) for v in done.stdout.split()[-3:])
    assert rows == 4_000_000
    assert (peak - before) / 1024 < 350, f"resident memory grew by {(peak - before) / 1024:.0f} MB"


def test_output_that_is_one_of_the_inputs_is_refused_before_anything_is_written(tabular_model: Path, tmp_path: Path) -> None:
    victim = tmp_path / "batch.parquet"
    pl.read_csv(TABLE).write_parquet(victim)
    before = victim.read_bytes()
    with pytest.raises(PipelineError, match="is one of the inputs"):
        score_files(Scorer.load(tabular_model), tmp_path, tmp_path / "." / "batch.parquet")
    assert victim.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["batch.parquet"]


@pytest.mark.parametrize("estimator", ["elbo", "iwae"])
def test_zero_rows_score_to_an_empty_frame_with_every_column(
    tabular_model: Path, sensor_model: Path, estimator: str
) -> None:
    """onnxruntime cannot broadcast over zero rows: a batch with none gets empty outputs, not its error."""
    for model, data in ((tabular_model, pl.read_csv(TABLE)), (sensor_model, pl.read_parquet(BATCH))):
        scorer = Scorer.load(model)
        empty = scorer.score(data.head(0), estimator=estimator)
        assert empty.height == 0 and empty.columns == scorer.score(data.head(50), estimator=estimator).columns
    assert scorer.encode(data.head(0)).height == 0


def test_sampling_no_rows_is_refused_clearly(tabular_model: Path) -> None:
    with pytest.raises(PipelineError, match="at least 1"):
        Scorer.load(tabular_model).sample(0)


def test_an_overflowed_reading_scores_as_extreme_under_impute(tmp_path: Path) -> None:
    """Under `missing = "impute"`, NaN takes the training median; inf (1e309 in a CSV) did too,
    and scored as normal while 1e300 was flagged. An overflow is the most extreme reading."""
    from common import DATA, FAST_TRAIN

    from pipeline.core.config import load_config
    from pipeline.training.fit import fit_model

    config = load_config(DATA / "tabular.toml", data={"missing": "impute"}, train=FAST_TRAIN)
    scorer = Scorer.load(fit_model(DATA / "tabular" / "history.csv", config, tmp_path).version_dir)
    batch = pl.read_csv(TABLE).head(4).with_columns(temperature=pl.Series([float("inf"), 1e300, float("nan"), 180.0]))
    scored, report = scorer.score_with_report(batch)
    score = scored["score"].to_numpy()
    # inf as far out as 1e300 (both clipped alike; the rows' other readings differ by a few
    # nats against 2.9e8, so the two scores match to float32's precision, not exactly)
    assert scored["is_anomaly"][0] and score[0] == pytest.approx(score[1], rel=1e-5) and score[1] > score[3]
    assert report.imputed == {"temperature": 1}  # the NaN alone


def test_progress_hears_every_chunk(tabular_model: Path, tmp_path: Path) -> None:
    heard: list[pl.DataFrame] = []
    output = tmp_path / "scores.parquet"
    report = score_files(Scorer.load(tabular_model), TABLE, output, chunk_rows=256, on_chunk=heard.append)
    assert [chunk.height for chunk in heard] == [256, 256, 256, 232] and report.rows == 1000
    assert pl.concat(heard).equals(pl.read_parquet(output))  # what the file holds, chunk by chunk


def test_a_batch_over_the_row_cap_is_refused_before_it_is_decoded(
    sensor_model: Path, tabular_model: Path, tmp_path: Path
) -> None:
    """A few KB of Parquet can decode to a million sensor rows (read whole, 0.8 GB): over the
    cap it is refused from the footer's row count, before reading; a table, streamed, as
    soon as its stream passes the cap. Nothing is written either way."""
    batch = pl.read_parquet(BATCH)
    repeated = pl.concat([batch] * 4).with_columns(  # distinct times, same readings
        timestamp=pl.col("timestamp") + pl.duration(days=pl.int_range(pl.len()) // batch.height * 400)
    )
    repeated.write_parquet(tmp_path / "big.parquet", compression="zstd")
    with pytest.raises(PipelineError, match=f"holds more than {2 * batch.height:,} rows"):
        score_files(Scorer.load(sensor_model), tmp_path / "big.parquet", tmp_path / "s.parquet", max_rows=2 * batch.height)
    report = score_files(Scorer.load(sensor_model), tmp_path / "big.parquet", tmp_path / "s.parquet")
    assert report.rows == repeated.height  # under the default cap
    with pytest.raises(PipelineError, match="holds more than 300 rows"):
        score_files(Scorer.load(tabular_model), TABLE, tmp_path / "t.parquet", chunk_rows=256, max_rows=300)
    assert not (tmp_path / "t.parquet").exists()


def test_a_repeated_reading_policy_is_kept_with_the_model_and_applied_when_scoring(tmp_path: Path) -> None:
    """A clock change repeats an hour in one machine's series. With `duplicates = "mean"`
    chosen at training, the model trains on the merged series, its manifest keeps the policy,
    and a batch with the same kind of repeat is scored one row per time, the merge counted."""
    from pipeline.core.config import load_config
    from pipeline.training.fit import fit_model

    history = pl.read_parquet(DATA / "sensors" / "history.parquet").head(2000)
    repeat = history.filter(pl.col("machine") == history["machine"][0]).slice(100, 1)
    pl.concat([history, repeat.with_columns(pl.col("load") * 2)]).write_parquet(tmp_path / "history.parquet")
    config = load_config(
        DATA / "sensors.toml", train={"epochs": 2, "patience": 1, "progress": False}, data={"duplicates": "mean"}
    )
    outcome = fit_model(tmp_path / "history.parquet", config, tmp_path / "models")
    assert outcome.data.merged == 1
    scorer = Scorer.load(outcome.version_dir)
    assert scorer.schema.duplicates == "mean"
    batch = history.tail(300)
    doubled = pl.concat([batch, batch.slice(50, 1).with_columns(pl.col("load") + 1.0)])
    scored, report = scorer.score_with_report(doubled)
    assert report.merged == 1 and "1 repeated readings merged" in report.summary()
    assert scored.height == batch.height
    assert scored.select("machine", "timestamp").is_duplicated().sum() == 0


def test_after_a_gap_longer_than_max_gap_the_series_restarts(tmp_path: Path) -> None:
    """With `max_gap`, no window spans an outage: the steps after it score exactly as the
    same steps scored alone (the padded start of a series), and the model keeps the setting."""
    from datetime import timedelta

    from pipeline.core.config import load_config
    from pipeline.training.fit import fit_model

    history = pl.read_parquet(DATA / "sensors" / "history.parquet").head(2000)
    history.write_parquet(tmp_path / "history.parquet")
    config = load_config(
        DATA / "sensors.toml", train={"epochs": 2, "patience": 1, "progress": False}, data={"max_gap": "PT1H"}
    )
    scorer = Scorer.load(fit_model(tmp_path / "history.parquet", config, tmp_path / "models").version_dir)
    assert scorer.schema.max_gap == timedelta(hours=1)
    machine = history.filter(pl.col("machine") == history["machine"][0]).head(120)
    before, after = machine.head(60), machine.tail(60).with_columns(pl.col("timestamp") + timedelta(hours=3))
    joined = scorer.score(pl.concat([before, after]))["score"].to_numpy()
    np.testing.assert_allclose(joined[60:], scorer.score(after)["score"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(joined[:60], scorer.score(before)["score"].to_numpy(), rtol=1e-6)
    spanning = scorer.score(pl.concat([before, machine.tail(60)]))["score"].to_numpy()  # no gap: windows span
    assert not np.allclose(spanning[60:71], joined[60:71])


def test_resampling_to_a_fixed_step_is_kept_with_the_model_and_applied_when_scoring(tmp_path: Path) -> None:
    """With `resample = "PT10M"`, two five-minute readings make one ten-minute step, in
    training and in scoring: an irregular clock (readings a few seconds late, one step
    missing a reading) scores as the step averages computed by hand."""
    from datetime import timedelta

    from pipeline.core.config import load_config
    from pipeline.training.fit import fit_model

    history = pl.read_parquet(DATA / "sensors" / "history.parquet").head(3000)
    history.write_parquet(tmp_path / "history.parquet")
    config = load_config(
        DATA / "sensors.toml",
        train={"epochs": 2, "patience": 1, "progress": False},
        data={"resample": "PT10M", "max_gap": "PT30M"},
    )
    outcome = fit_model(tmp_path / "history.parquet", config, tmp_path / "models")
    assert outcome.data.merged == history.height // 2  # pairs of readings became steps
    scorer = Scorer.load(outcome.version_dir)
    assert scorer.schema.resample == timedelta(minutes=10)
    machine = history.filter(pl.col("machine") == history["machine"][0]).head(200).drop("label", "anomaly_kind")
    late = machine.with_columns(pl.col("timestamp") + pl.duration(seconds=pl.int_range(pl.len()) % 7))
    late = late.filter(pl.int_range(pl.len()) != 101)  # the step starting at reading 100 has one reading
    scored, report = scorer.score_with_report(late)
    steps = late.group_by_dynamic("timestamp", every="10m", group_by="machine").agg(
        pl.exclude("timestamp", "machine").mean()
    )
    assert scored.height == steps.height == 100 and report.merged == late.height - 100
    assert scored["timestamp"].to_list() == steps["timestamp"].to_list()
    expected = scorer.score(steps.with_columns(pl.col("timestamp")))["score"].to_numpy()
    np.testing.assert_allclose(scored["score"].to_numpy(), expected, rtol=1e-6)
    with pytest.raises(PipelineError, match="resample must be a positive duration"):
        load_config(DATA / "sensors.toml", data={"resample": "PT0S"})


def test_n43_the_default_row_cap_is_what_the_memory_available_holds() -> None:
    """N43: the fixed 10 M-row default let a 180 KB file of one machine decode to 4 M rows and
    2.3 GB; on a small scoring host that was an out-of-memory kill of the whole run. The default
    is now what half the available memory holds (about 100 bytes per row and signal), at most
    10 M rows."""
    gib = 1 << 30
    assert series_row_cap(6, available=2 * gib) == gib // 600  # a 2 GiB host: 1.8 M rows of 6 signals
    assert series_row_cap(60, available=2 * gib) == gib // 6000  # ten times the signals, a tenth the rows
    assert series_row_cap(6, available=512 * gib) == WHOLE_FILE_MAX_ROWS  # a large host keeps the ceiling
    here = available_memory()
    assert 0 < here <= psutil.virtual_memory().total


def test_a_tensorrt_request_where_there_is_none_leaves_the_version_folder_alone(tabular_model: Path, tmp_path: Path) -> None:
    """Asking for TensorRT on a machine without it failed, as it should, but left an empty
    `.tensorrt-cache` folder in the version folder, whose listing is hashed and compared."""
    import onnxruntime

    from pipeline.runtime.providers import TENSORRT_CACHE

    if "TensorrtExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has no TensorRT provider to ask for")
    model = Path(shutil.copytree(tabular_model, tmp_path / "model"))
    with pytest.raises(PipelineError):
        Scorer.load(model, provider="tensorrt")
    assert not (model / TENSORRT_CACHE).exists()
