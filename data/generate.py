"""Deterministic generator for the bundled demo data (run: `make data`).

sensors/: four machines sampled every 5 minutes with daily cycles, correlated sensors and
noise; `history.parquet` (10 days, clean) is for training and `batch.parquet` (the next
4 days) carries labelled injected faults of five kinds: spike, level_shift, drift, stuck,
broken_correlation. tabular/: production batches with numeric and categorical columns;
`history.csv` is lightly contaminated (as real training data is), `batch.csv` more so.
Labels (`label`, `anomaly_kind`) are for tests and examples, never features."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).parent
SEED = 20261122
STEP_MINUTES = 5
STEPS_PER_DAY = 24 * 60 // STEP_MINUTES
HISTORY_DAYS, BATCH_DAYS = 10, 4
SENSORS = ["ambient_temp", "load", "current", "vibration", "motor_temp", "pressure"]


def simulate_machine(rng: np.random.Generator, index: int, steps: int) -> dict[str, np.ndarray]:
    """One machine's normal behaviour: physics-like couplings between sensors."""
    t = np.arange(steps) / STEPS_PER_DAY  # days
    ambient = 18 + index + 4 * np.sin(2 * np.pi * (t - 0.35)) + rng.normal(0, 0.3, steps)
    # Production load: high in the day shift, low at night, AR(1) wander on top.
    wander = np.zeros(steps)
    for i in range(1, steps):
        wander[i] = 0.97 * wander[i - 1] + rng.normal(0, 0.02)
    load = np.clip(0.55 + 0.3 * np.sin(2 * np.pi * (t - 0.3)) + wander, 0.05, 1.0)
    current = 8 + 2 * index + 24 * load + rng.normal(0, 0.4, steps)
    vibration = 0.4 + 1.6 * load**2 + rng.normal(0, 0.05, steps)
    # Motor temperature follows load with a lag (exponential smoothing) and the ambient.
    heat = np.zeros(steps)
    for i in range(1, steps):
        heat[i] = 0.9 * heat[i - 1] + 0.1 * load[i]
    motor = 35 + 0.6 * ambient + 22 * heat + rng.normal(0, 0.3, steps)
    pressure = 4.5 + 0.3 * index + 1.8 * load + rng.normal(0, 0.05, steps)
    return dict(zip(SENSORS, [ambient, load, current, vibration, motor, pressure], strict=True))


def inject_faults(rng: np.random.Generator, series: dict[str, np.ndarray], offset: int) -> np.ndarray:
    """Inject one fault of each kind at random places after `offset`; return the kind per step."""
    steps = len(series["load"])
    kind = np.full(steps, "", dtype=object)
    hour = STEPS_PER_DAY // 24
    slots = np.sort(rng.choice(np.arange(offset + 2 * hour, steps - 26 * hour, 12 * hour), 5, replace=False))
    start = slots[0]  # spike: a few single-step vibration bursts
    for s in start + rng.choice(6 * hour, 4, replace=False):
        series["vibration"][s] += rng.uniform(2.0, 3.5)
        kind[s] = "spike"
    start, length = slots[1], 6 * hour  # level shift in pressure
    series["pressure"][start : start + length] += 1.2
    kind[start : start + length] = "level_shift"
    start, length = slots[2], 24 * hour  # slow drift of motor temperature
    series["motor_temp"][start : start + length] += np.linspace(0, 12, length)
    kind[start + length // 4 : start + length] = "drift"  # the first quarter is not yet visible
    start, length = slots[3], 8 * hour  # stuck current sensor
    series["current"][start : start + length] = series["current"][start]
    kind[start : start + length] = "stuck"
    start, length = slots[4], 6 * hour  # current decouples from load
    base = series["current"][start : start + length].mean()
    series["current"][start : start + length] = base + rng.normal(0, 0.4, length)[::-1].cumsum() * 0.8
    kind[start : start + length] = "broken_correlation"
    return kind


def sensors(rng: np.random.Generator) -> tuple[pl.DataFrame, pl.DataFrame]:
    steps = (HISTORY_DAYS + BATCH_DAYS) * STEPS_PER_DAY
    split = HISTORY_DAYS * STEPS_PER_DAY
    start = datetime(2026, 10, 1)
    times = [start + timedelta(minutes=STEP_MINUTES * i) for i in range(steps)]
    frames = []
    for index in range(4):
        series = simulate_machine(rng, index, steps)
        kind = inject_faults(rng, series, split)
        frame = pl.DataFrame(
            {
                "machine": f"press-{index + 1:02d}",
                "timestamp": times,
                **{k: np.round(v, 4) for k, v in series.items()},
                "label": (kind != "").astype(np.int8),
                "anomaly_kind": kind.astype(str),
            }
        )
        frames.append(frame)
    both = pl.concat(frames)
    return both.filter(pl.col("timestamp") < times[split]), both.filter(pl.col("timestamp") >= times[split])


def tabular(rng: np.random.Generator, rows: int, rate: float, first_id: int) -> pl.DataFrame:
    """Production batches: energy, yield and defects depend on line, product and process values."""
    line = rng.choice(["L1", "L2", "L3"], rows, p=[0.5, 0.3, 0.2])
    product = rng.choice(["bolt", "nut", "washer"], rows)
    shift = rng.choice(["day", "night"], rows, p=[0.6, 0.4])
    size = {"bolt": 1.6, "nut": 1.0, "washer": 0.6}
    mass = np.array([size[p] for p in product]) * rng.uniform(80, 120, rows)
    temperature = 180 + 8 * (line == "L2") + rng.normal(0, 3, rows)
    pressure = 60 + 0.2 * mass + rng.normal(0, 2, rows)
    duration = 20 + 0.15 * mass + rng.normal(0, 1.5, rows)
    energy = 0.9 * duration + 0.05 * temperature + 3 * (line == "L3") + rng.normal(0, 0.8, rows)
    yield_pct = np.clip(97 - 0.5 * (shift == "night") - 0.05 * np.abs(temperature - 182) + rng.normal(0, 0.6, rows), 80, 100)
    defects = rng.poisson(np.clip(100 - yield_pct, 0.1, None) * 0.6)
    kind = np.full(rows, "", dtype=object)
    bad = np.flatnonzero(rng.random(rows) < rate)
    for i, k in zip(bad, rng.choice(["energy_leak", "low_yield", "overheat", "mismatch"], len(bad)), strict=True):
        kind[i] = k
        if k == "energy_leak":
            energy[i] += rng.uniform(8, 15)
        elif k == "low_yield":
            yield_pct[i] -= rng.uniform(5, 9)
            defects[i] += rng.integers(4, 9)
        elif k == "overheat":
            temperature[i] += rng.uniform(18, 30)
        else:  # a washer-sized run that took a bolt's time and pressure
            duration[i] += rng.uniform(12, 18)
            pressure[i] += rng.uniform(15, 25)
    return pl.DataFrame(
        {
            "batch_id": np.arange(first_id, first_id + rows),
            "line": line,
            "product": product,
            "shift": shift,
            "temperature": temperature.round(2),
            "pressure": pressure.round(2),
            "duration_min": duration.round(2),
            "energy_kwh": energy.round(2),
            "yield_pct": yield_pct.round(2),
            "defects": defects,
            "label": (kind != "").astype(np.int8),
            "anomaly_kind": kind.astype(str),
        }
    )


def main() -> None:
    rng = np.random.default_rng(SEED)
    (HERE / "sensors").mkdir(exist_ok=True)
    (HERE / "tabular").mkdir(exist_ok=True)
    history, batch = sensors(rng)
    history.write_parquet(HERE / "sensors" / "history.parquet", compression="zstd", statistics=False)
    batch.write_parquet(HERE / "sensors" / "batch.parquet", compression="zstd", statistics=False)
    tabular(rng, 5000, 0.02, 1).write_csv(HERE / "tabular" / "history.csv")
    tabular(rng, 1000, 0.05, 5001).write_csv(HERE / "tabular" / "batch.csv")
    for path in sorted(HERE.glob("*/*.*")):
        print(f"{path.relative_to(HERE)}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
