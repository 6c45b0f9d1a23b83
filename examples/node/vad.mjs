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

const SUPPORTED_SCHEMA = 2;
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
  const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
  if (!(manifest.schema_version <= SUPPORTED_SCHEMA)) {
    throw new Error(`manifest schema_version ${manifest.schema_version} is newer than this example reads`);
  }
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
  return { dir, manifest, session, threshold: manifest.threshold.value };
}

/** CSV text → row objects (header names as keys), every value a string. */
export function readCsv(text) {
  return parse(text, { columns: true, skip_empty_lines: true, trim: true });
}

/** Rows → model inputs (Float32Array, rows × inputs) and the key columns of each scored row. */
export function toInputs(manifest, rows) {
  const schema = manifest.feature_schema;
  const keyColumns = schema.mode === "sensor"
    ? [schema.entity_column, schema.time_column].filter(Boolean).concat(schema.id_columns ?? [])
    : schema.id_columns ?? [];
  if (schema.mode === "sensor") rows = sortForWindows(schema, rows);
  const features = rows.map((row, i) => rowFeatures(schema, row, i));
  // A category never seen in training flags its row when the model says so (`unseen`), as in Python.
  const novel = rows.map((row) => schema.columns.some((col) => col.kind === "categorical" && row[col.name] !== ""
    && !col.categories.includes(row[col.name])));
  const width = manifest.input_names.length;
  let matrix = features;
  const window = schema.mode === "sensor" && schema.window ? schema.window.length : 1;
  if (window > 1) matrix = windows(schema, rows, features, window);
  const x = new Float32Array(rows.length * width);
  matrix.forEach((values, i) => x.set(values, i * width));
  const keys = rows.map((row) => Object.fromEntries(keyColumns.map((k) => [k, row[k]])));
  return { x, rows: rows.length, width, keys, novel: (schema.unseen ?? "flag") === "flag" ? novel : novel.map(() => false) };
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

function sortForWindows(schema, rows) {
  const entity = schema.entity_column;
  const time = schema.time_column;
  const stamp = (row) => (Number.isNaN(Number(row[time])) ? Date.parse(row[time]) : Number(row[time]));
  return rows
    .map((row, i) => ({ row, i }))
    .sort((a, b) => (entity && a.row[entity] !== b.row[entity] ? (a.row[entity] < b.row[entity] ? -1 : 1) : 0)
      || (time ? stamp(a.row) - stamp(b.row) : 0) || a.i - b.i)
    .map(({ row }) => row);
}

/** Each row gets the window ending at it (oldest step first); an entity's first row is
 * repeated before its start, exactly as the Python runtime pads. */
function windows(schema, rows, features, length) {
  const entity = schema.entity_column;
  const out = [];
  let start = 0;
  for (let i = 0; i < rows.length; i++) {
    if (i > 0 && entity && rows[i][entity] !== rows[i - 1][entity]) start = i;
    const window = [];
    for (let k = length - 1; k >= 0; k--) window.push(...features[Math.max(start, i - k)]);
    out.push(window);
  }
  return out;
}

/** Negative ELBO per row (higher = more anomalous), and whether it passes the threshold. */
export async function score(model, inputs) {
  const session = await model.session("scorer");
  const scores = new Float32Array(inputs.rows);
  for (let start = 0; start < inputs.rows; start += CHUNK) {
    const n = Math.min(CHUNK, inputs.rows - start);
    const x = new ort.Tensor("float32", inputs.x.subarray(start * inputs.width, (start + n) * inputs.width), [n, inputs.width]);
    const { score: out } = await session.run({ x }, ["score"]);
    scores.set(out.data, start);
  }
  return Array.from(scores, (s, i) => ({ score: s, is_anomaly: s > model.threshold || inputs.novel[i] }));
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
