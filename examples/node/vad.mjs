// Score, embed and sample with an exported vad model from Node.js: onnxruntime-node and the
// model's manifest.json, no Python. The manifest says everything the graphs need: the
// feature order (input_names), the one-hot vocabularies, the training medians for missing
// values, the scaler and the threshold. Only `scorer.onnx` is needed to score; it holds the
// scaling itself. Tabular and sensor (windowed) models are both supported; input is CSV.
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "csv-parse/sync";
import ort from "onnxruntime-node";

const SUPPORTED_SCHEMA = 3; // 3: the window rule `mean` (stepScores)
const CHUNK = 4096; // rows per onnxruntime call: any size gives the same scores

/** A version folder, or a model folder's `latest` version. */
export function resolveModelDir(path) {
  if (existsSync(join(path, "manifest.json"))) return path;
  const pointer = join(path, "latest");
  if (!existsSync(pointer)) throw new Error(`model folder '${path}' has no manifest.json and no 'latest' pointer`);
  const version = readFileSync(pointer, "utf8").trim();
  if (!/^\d+$/.test(version)) throw new Error(`'${pointer}' must hold a version number`);
  return join(path, version);
}

/** Load the manifest and open sessions on graph bytes whose sha256 matches the manifest. */
export async function loadModel(path) {
  const dir = resolveModelDir(path);
  let manifest;
  try {
    manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
  } catch (error) {
    throw new Error(`'${join(dir, "manifest.json")}' is not valid JSON: ${error.message}`);
  }
  if (!(manifest.schema_version <= SUPPORTED_SCHEMA)) {
    throw new Error(`manifest schema_version ${manifest.schema_version} is newer than this example reads`);
  }
  const threshold = manifest.threshold.value;
  if (!Number.isFinite(threshold)) throw new Error(`threshold ${threshold} is not a finite number`);
  if (manifest.feature_schema.resample) {
    throw new Error(`this model resamples each series to ${manifest.feature_schema.resample}, which this example `
      + "does not port: resample the rows first, or score with the Python runtime");
  }
  if (manifest.feature_schema.time_zone) {
    throw new Error(`this model reads local times of ${manifest.feature_schema.time_zone} and takes them to UTC, `
      + "which this example does not port: give UTC times, or score with the Python runtime");
  }
  checkGraph(dir, manifest, readFileSync(join(dir, "scorer.onnx")));
  const sessions = {};
  const session = async (graph) => {
    if (!sessions[graph]) {
      const file = `${graph}.onnx`;
      const bytes = readFileSync(join(dir, file));
      const digest = createHash("sha256").update(bytes).digest("hex");
      if (digest !== manifest.files[file]) throw new Error(`'${join(dir, file)}' fails its sha256 check`);
      sessions[graph] = await ort.InferenceSession.create(bytes);
    }
    return sessions[graph];
  };
  return { dir, manifest, session, threshold };
}

/** The scorer graph's own metadata must name this manifest's model, export and threshold, as
 * the Python runtime checks: an edited manifest threshold is refused, not used. */
function checkGraph(dir, manifest, bytes) {
  const meta = graphMetadata(bytes);
  const path = join(dir, "scorer.onnx");
  if (meta.model_name !== manifest.name || meta.created_at !== manifest.created_at) {
    throw new Error(`'${path}' is not this model's scorer graph (it says ${meta.model_name}, ${meta.created_at}): `
      + "files from different exports were mixed; re-export the model");
  }
  if (meta.threshold !== undefined && Number.parseFloat(meta.threshold) !== manifest.threshold.value) {
    throw new Error(`'${path}' was exported with threshold ${meta.threshold}, but the manifest says `
      + `${manifest.threshold.value}: the manifest was edited`);
  }
}

/** An ONNX model's metadata_props (ModelProto field 14: key 1, value 2), read from its
 * protobuf bytes; onnxruntime-node does not expose them. */
export function graphMetadata(bytes) {
  let pos = 0;
  const varint = () => {
    let value = 0;
    for (let shift = 0; ; shift += 7) {
      const byte = bytes[pos++];
      value += (byte & 0x7f) * 2 ** shift;
      if (!(byte & 0x80)) return value;
    }
  };
  const props = {};
  while (pos < bytes.length) {
    const tag = varint();
    const [field, wire] = [Math.floor(tag / 8), tag % 8];
    if (wire === 0) varint();
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      const end = varint() + pos;
      if (field === 14) {
        const entry = {};
        while (pos < end) {
          const key = Math.floor(varint() / 8);
          const length = varint();
          entry[key] = bytes.toString("utf8", pos, pos + length);
          pos += length;
        }
        props[entry[1]] = entry[2] ?? "";
      }
      pos = end;
    } else throw new Error("not an ONNX model (unknown protobuf wire type)");
  }
  return props;
}

/** CSV text → row objects (header names as keys), every value a string. */
export function readCsv(text) {
  return parse(text, { columns: true, skip_empty_lines: true, trim: true });
}

/** Rows → model inputs (Float32Array, rows × inputs) and the key columns of each scored row.
 * `state` (what the last `score` call returned) continues each entity's stream: its first rows'
 * windows are built on the rows before them, as Python's scheduled flow carries them in its ledger. */
export function toInputs(manifest, rows, state = {}) {
  const schema = manifest.feature_schema;
  const keyColumns = schema.mode === "sensor"
    ? [schema.entity_column, schema.time_column].filter(Boolean).concat(schema.id_columns ?? [])
    : schema.id_columns ?? [];
  if (schema.mode === "sensor") rows = sortForWindows(schema, rows);
  const spans = schema.mode === "sensor" ? seriesSpans(schema, rows) : [[0, rows.length]];
  const features = rows.map((row, i) => rowFeatures(schema, row, i));
  // A category never seen in training flags its row when the model says so (`unseen`), as in Python.
  const novel = rows.map((row) => schema.columns.some((col) => col.kind === "categorical" && row[col.name] !== ""
    && !col.categories.includes(row[col.name])));
  const width = manifest.input_names.length;
  let matrix = features;
  const window = schema.mode === "sensor" && schema.window ? schema.window.length : 1;
  const carried = schema.mode === "sensor" ? carriedStates(schema, rows, spans, state) : spans.map(() => null);
  if (window > 1) matrix = windows(spans, features, window, carried);
  const x = new Float32Array(rows.length * width);
  matrix.forEach((values, i) => x.set(values, i * width));
  const keys = rows.map((row) => Object.fromEntries(keyColumns.map((k) => [k, row[k]])));
  return { x, rows: rows.length, width, keys, spans, window, features, carried,
    entities: spans.map(([start]) => entityOf(schema, rows[start])),
    ends: spans.map(([, stop]) => seconds(rows[stop - 1][schema.time_column])),
    novel: (schema.unseen ?? "flag") === "flag" ? novel : novel.map(() => false) };
}

/** The entity a row belongs to (Python's `SERIES`, "*", for a series without an entity column). */
function entityOf(schema, row) {
  return schema.entity_column ? row[schema.entity_column] : "*";
}

/** For each span, the state it continues: its entity's, when it is the entity's first span, the
 * state ends before it, and no gap longer than `max_gap` lies between (after one the span
 * restarts and only the counts since the last alarm and flag go on, as in Python). A state
 * that ends at or after the span's first row (rows sent again, or late) is not continued. */
function carriedStates(schema, rows, spans, state) {
  const gap = schema.max_gap ? isoSeconds(schema.max_gap) : Infinity;
  return spans.map(([start], i) => {
    const entity = entityOf(schema, rows[start]);
    const held = state[entity];
    if (!held || (i > 0 && entityOf(schema, rows[spans[i - 1][0]]) === entity)) return null;
    const first = seconds(rows[start][schema.time_column]);
    if (!(held.end < first)) return null;
    if (first - held.end > gap) return { ...held, spanRows: 0, rows: [], windowScores: [], stepScores: [] };
    return held;
  });
}

function rowFeatures(schema, row, index) {
  const out = [];
  for (const col of schema.columns) {
    if (!(col.name in row)) throw new Error(`column '${col.name}' is missing; the model was trained with it`);
    const raw = row[col.name];
    if (col.kind === "categorical") {
      for (const category of col.categories) out.push(raw === category ? 1 : 0); // unseen → all zeros
      continue;
    }
    const value = raw === "" ? NaN : Number(raw);
    if (raw !== "" && Number.isNaN(value) && !/^nan$/i.test(raw)) {
      throw new Error(`column '${col.name}' must be numeric, got text '${raw}' (row ${index + 1})`);
    }
    if (!Number.isFinite(value)) {
      if (schema.missing !== "impute") throw new Error(`column '${col.name}' has a missing value (row ${index + 1})`);
      out.push(col.median);
    } else {
      out.push(value);
    }
  }
  return out;
}

/** A time value in seconds: a date's since the epoch, a numeric clock's as it is. */
function seconds(value) {
  return Number.isNaN(Number(value)) ? Date.parse(value) / 1000 : Number(value);
}

function sortForWindows(schema, rows) {
  const entity = schema.entity_column;
  const time = schema.time_column;
  const stamp = (row) => seconds(row[time]);
  return rows
    .map((row, i) => ({ row, i }))
    .sort((a, b) => (entity && a.row[entity] !== b.row[entity] ? (a.row[entity] < b.row[entity] ? -1 : 1) : 0)
      || (time ? stamp(a.row) - stamp(b.row) : 0) || a.i - b.i)
    .map(({ row }) => row);
}

/** The spans windows run over, as [start, stop) rows of the sorted rows: each entity's rows,
 * cut again where the time advances by more than the schema's `max_gap` (as Python's
 * `series_bounds`). */
function seriesSpans(schema, rows) {
  const entity = schema.entity_column;
  const gap = schema.max_gap ? isoSeconds(schema.max_gap) : Infinity;
  const spans = [];
  let start = 0;
  for (let i = 1; i <= rows.length; i++) {
    const cut = i === rows.length || (entity && rows[i][entity] !== rows[i - 1][entity])
      || seconds(rows[i][schema.time_column]) - seconds(rows[i - 1][schema.time_column]) > gap;
    if (cut) {
      spans.push([start, i]);
      start = i;
    }
  }
  return spans;
}

/** An ISO 8601 duration as pydantic writes a timedelta (`P1DT2H3M4.5S`), in seconds. */
function isoSeconds(text) {
  const match = /^P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$/.exec(text);
  if (!match) throw new Error(`max_gap '${text}' is not a duration this example reads`);
  const [days, hours, minutes, secs] = match.slice(1).map((part) => Number(part ?? 0));
  return ((days * 24 + hours) * 60 + minutes) * 60 + secs;
}

/** Each row gets the window ending at it (oldest step first), built on the rows its span
 * continues (`carried`); where there are too few, the span's first row is repeated before its
 * start, exactly as the Python runtime pads. */
function windows(spans, features, length, carried) {
  const out = [];
  spans.forEach(([start, stop], span) => {
    const series = (carried[span]?.rows ?? []).concat(features.slice(start, stop));
    const offset = series.length - (stop - start);
    for (let i = offset; i < series.length; i++) {
      const window = [];
      for (let k = length - 1; k >= 0; k--) window.push(...series[Math.max(0, i - k)]);
      out.push(window);
    }
  });
  return out;
}

// A padded step (a span's first `window - 1` rows) is flagged only past the threshold by this
// many times the threshold's margin over the normal score: Python's steps.PADDED_MARGIN.
const PADDED_MARGIN = 10;

/** Flags as the Python runtime raises them, per span continuing its carried state: above the
 * threshold; under a persistence rule, only with at least k of the last n steps of the span
 * above it; on a padded step (the span's first `window - 1` rows, a history that never
 * happened) only past the wide margin, and the step is judged only then; and any row holding a
 * category unseen in training when the model says so. */
export function flags(steps, threshold, normal, inputs, persistence = { k: 1, n: 1 }) {
  const { k, n } = persistence.k > 1 ? persistence : { k: 1, n: 1 }; // k of 1 is a plain threshold, whatever n
  const wide = threshold + PADDED_MARGIN * Math.max(threshold - normal, 1e-9);
  const flagged = new Array(steps.length).fill(false);
  const judged = new Array(steps.length).fill(true);
  inputs.spans.forEach(([start, stop], span) => {
    const held = inputs.carried[span];
    const seen = held?.spanRows ?? 0;
    const exceeds = (held?.stepScores ?? []).concat(Array.from(steps.subarray(start, stop))).map((s) => s > threshold);
    const before = exceeds.length - (stop - start);
    let run = 0;
    for (let j = 0; j < exceeds.length; j++) {
      run += exceeds[j] - (j - n >= 0 ? exceeds[j - n] : 0);
      if (j < before) continue;
      const i = start + j - before;
      if (seen + j - before < inputs.window - 1) {
        flagged[i] = steps[i] > wide;
        judged[i] = flagged[i];
      } else {
        flagged[i] = run >= k;
      }
    }
  });
  inputs.novel.forEach((novel, i) => {
    if (novel) flagged[i] = judged[i] = true;
  });
  return { flagged, judged };
}

/** The window rule (the manifest's `feature_schema.window.rule`), as the Python runtime applies it:
 * `mean` gives each row the mean score of the full windows ending at its span's last `length`
 * rows (those before the batch included), over running sums added in the same order as numpy's;
 * a span's first `length - 1` rows (padded windows) keep their own score and enter no mean. */
export function stepScores(scores, inputs, rule) {
  const out = Float64Array.from(scores);
  const length = inputs.window;
  if (rule !== "mean" || length < 2) return out;
  inputs.spans.forEach(([start, stop], span) => {
    const held = inputs.carried[span];
    const values = (held?.windowScores ?? []).concat(Array.from(scores.subarray(start, stop)));
    const before = values.length - (stop - start);
    const first = Math.max(0, length - 1 - ((held?.spanRows ?? 0) - before)); // the first full window
    const total = [0], infinite = [0], invalid = [0];
    for (let j = first; j < values.length; j++) {
      const s = values[j];
      const finite = Number.isFinite(s);
      total.push(total[total.length - 1] + (finite ? s : 0));
      infinite.push(infinite[infinite.length - 1] + (s === Infinity ? 1 : 0));
      invalid.push(invalid[invalid.length - 1] + (!finite && s !== Infinity ? 1 : 0));
    }
    for (let j = Math.max(first, before); j < values.length; j++) {
      const high = j - first + 1, low = Math.max(0, j - length + 1 - first);
      let mean = (total[high] - total[low]) / (high - low);
      if (infinite[high] > infinite[low]) mean = Infinity;
      if (invalid[high] > invalid[low]) mean = NaN;
      out[start + j - before] = mean;
    }
  });
  return out;
}

/** The onsets of anomalous episodes, per entity (Python's `onsets`): an episode starts at a
 * flagged row after more than `quiet` rows without a flag, and alarms unless the entity alarmed
 * in the `hold_off` rows before it; counts since the last alarm and flag carry over calls. */
function onsets(flagged, bounds, since, { hold_off: holdOff, quiet }) {
  const alarms = new Array(flagged.length).fill(false);
  const after = bounds.map(([start, stop], b) => {
    let lastAlarm = since[b].sinceAlarm == null ? null : -since[b].sinceAlarm - 1;
    let lastFlag = since[b].sinceFlag == null ? null : -since[b].sinceFlag - 1;
    for (let j = 0; j < stop - start; j++) {
      if (!flagged[start + j]) continue;
      if ((lastFlag === null || j - lastFlag > quiet) && (lastAlarm === null || j > lastAlarm + holdOff)) {
        alarms[start + j] = true;
        lastAlarm = j;
      }
      lastFlag = j;
    }
    const rows = stop - start;
    return { sinceAlarm: lastAlarm === null ? null : rows - 1 - lastAlarm, sinceFlag: lastFlag === null ? null : rows - 1 - lastFlag };
  });
  return { alarms, after };
}

/** Negative ELBO per row (higher = more anomalous), its flag, alarm and whether it was judged,
 * and each entity's state for the next call (`toInputs(manifest, rows, state)`). */
export async function score(model, inputs) {
  const session = await model.session("scorer");
  const scores = new Float32Array(inputs.rows);
  for (let start = 0; start < inputs.rows; start += CHUNK) {
    const n = Math.min(CHUNK, inputs.rows - start);
    const x = new ort.Tensor("float32", inputs.x.subarray(start * inputs.width, (start + n) * inputs.width), [n, inputs.width]);
    const { score: out } = await session.run({ x }, ["score"]);
    scores.set(out.data, start);
  }
  const { manifest } = model;
  const sensor = manifest.feature_schema.mode === "sensor";
  const steps = sensor ? stepScores(scores, inputs, manifest.feature_schema.window?.rule ?? "end") : Float64Array.from(scores);
  const normal = manifest.validation.score_quantiles["0.5"];
  const { persistence } = manifest.threshold;
  const { flagged, judged } = sensor
    ? flags(steps, model.threshold, normal, inputs, persistence)
    : { flagged: Array.from(steps, (s, i) => s > model.threshold || inputs.novel[i]), judged: null };
  if (!sensor) return { rows: Array.from(steps, (s, i) => ({ score: s, is_anomaly: flagged[i] })), state: {} };
  const { alarms, state } = streamState(manifest, inputs, scores, steps, flagged);
  const rows = Array.from(steps, (s, i) => ({ score: s, is_anomaly: flagged[i], alarm: alarms[i], judged: judged[i] }));
  return { rows, state };
}

/** Alarms per entity, and where each entity's stream stands after its last row (Python's
 * `EntityState`): its span's last rows, their window and step scores, the counts since its last
 * alarm and flag. */
function streamState(manifest, inputs, scores, steps, flagged) {
  const bounds = [], spansOf = [];
  inputs.spans.forEach(([start, stop], span) => {
    if (span > 0 && inputs.entities[span] === inputs.entities[span - 1]) {
      bounds[bounds.length - 1][1] = stop;
      spansOf[spansOf.length - 1].push(span);
    } else {
      bounds.push([start, stop]);
      spansOf.push([span]);
    }
  });
  const since = spansOf.map((spans) => inputs.carried[spans[0]] ?? {});
  const { alarms, after } = onsets(flagged, bounds, since, manifest.threshold.alarm);
  const keepRows = inputs.window - 1, keepSteps = manifest.threshold.persistence.n - 1;
  const state = {};
  spansOf.forEach((spans, b) => {
    const span = spans[spans.length - 1];
    const [start, stop] = inputs.spans[span];
    const held = spans.length === 1 ? inputs.carried[span] : null;
    const spanRows = (held?.spanRows ?? 0) + stop - start;
    const tail = (before, values, keep) => before.concat(values).slice(before.length + values.length - Math.min(keep, spanRows));
    state[inputs.entities[span]] = {
      end: inputs.ends[span],
      spanRows,
      rows: tail(held?.rows ?? [], inputs.features.slice(start, stop), keepRows),
      windowScores: tail(held?.windowScores ?? [], Array.from(scores.subarray(start, stop)), keepRows),
      stepScores: tail(held?.stepScores ?? [], Array.from(steps.subarray(start, stop)), keepSteps),
      ...after[b],
    };
  });
  return { alarms, state };
}

/** A state as JSON text and back: scores can be ±Infinity or NaN, which JSON cannot hold. */
export function stateToJson(state) {
  return JSON.stringify(state, (_, v) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v));
}

export function stateFromJson(text) {
  return JSON.parse(text, (_, v) => (v === "Infinity" || v === "-Infinity" || v === "NaN" ? Number(v) : v));
}

/** Latent means [rows][members][latent], read from the scorer graph's `mu` output as the Python
 * runtime does: the graph scales and clips the raw inputs itself, so nothing is ported here. */
export async function embed(model, inputs) {
  const session = await model.session("scorer");
  const x = new ort.Tensor("float32", inputs.x, [inputs.rows, inputs.width]);
  const { mu } = await session.run({ x }, ["mu"]);
  const [, members, latent] = mu.dims;
  return Array.from({ length: inputs.rows }, (_, r) => Array.from({ length: members }, (_, m) =>
    Array.from(mu.data.subarray((r * members + m) * latent, (r * members + m + 1) * latent))));
}

/** The decoder graph alone: synthetic rows in raw units from z ~ N(0, I) (seeded), one
 * member per row. Returns the draws too, so another runtime can check the decoding. */
export async function sample(model, n, seed = 0) {
  const { members, latent } = model.manifest.model;
  const random = mulberry32(seed);
  const z = new Float32Array(n * members * latent);
  for (let i = 0; i < z.length; i++) z[i] = gaussian(random);
  const session = await model.session("decoder");
  const { mean } = await session.run({ z: new ort.Tensor("float32", z, [n, members, latent]) }, ["mean"]);
  const width = model.manifest.input_names.length;
  const { mean: center, scale, knots, levels, tail } = model.manifest.scaler;
  const raw = (value, j) => knots ? piecewise(value, levels[j], knots[j], 1 / tail[j]) : value;
  const rows = [];
  for (let r = 0; r < n; r++) {
    const member = r % members;
    const offset = (r * members + member) * width;
    rows.push({ member, z: Array.from(z.subarray(r * members * latent, (r + 1) * members * latent)),
      values: Array.from({ length: width }, (_, j) => raw(mean.data[offset + j] * scale[j] + center[j], j)) });
  }
  return rows;
}

/** The manifest's monotone input map for one input: linear between the points (xs[k], ys[k]),
 * slope `tail` beyond the ends. With the axes swapped (and 1 / tail) it is its own inverse. */
export function piecewise(value, xs, ys, tail) {
  const last = xs.length - 1;
  if (value <= xs[0]) return ys[0] + tail * (value - xs[0]);
  if (value >= xs[last]) return ys[last] + tail * (value - xs[last]);
  let k = 1;
  while (xs[k] < value) k++; // xs[k - 1] < value <= xs[k], so the segment has width
  return ys[k - 1] + (ys[k] - ys[k - 1]) * (value - xs[k - 1]) / (xs[k] - xs[k - 1]);
}

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussian(random) { // Box–Muller
  const u = 1 - random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}
