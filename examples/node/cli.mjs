#!/usr/bin/env node
// node cli.mjs score  <model> <rows.csv> [state.json]
//                                          → CSV: key columns, score, is_anomaly (sensors: alarm, judged);
//                                            with state.json, each entity continues where the last call
//                                            left its stream (read if it exists, then written)
// node cli.mjs embed  <model> <rows.csv>   → JSON lines: the latent means of each row
// node cli.mjs sample <model> <n> [seed]   → JSON lines: synthetic rows (decoder alone)
// <model> is a version folder or a model folder (its `latest`), e.g. ../../exported/demo-tabular
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { embed, loadModel, readCsv, sample, score, stateFromJson, stateToJson, toInputs } from "./vad.mjs";

const [command, modelPath, arg, seed] = process.argv.slice(2);
const usage = "usage: node cli.mjs score <model> <rows.csv> [state.json]  |  node cli.mjs embed <model> <rows.csv>"
  + "  |  node cli.mjs sample <model> <n> [seed]";

async function main() {
  if (!command || !modelPath || !arg) throw new Error(usage);
  const model = await loadModel(modelPath);
  if (command === "sample") {
    for (const row of await sample(model, Number(arg), Number(seed ?? 0))) console.log(JSON.stringify(row));
    return;
  }
  const stateFile = command === "score" ? seed : undefined;
  const before = stateFile && existsSync(stateFile) ? stateFromJson(readFileSync(stateFile, "utf8")) : {};
  const inputs = toInputs(model.manifest, readCsv(readFileSync(arg, "utf8")), before);
  if (command === "embed") {
    (await embed(model, inputs)).forEach((mu, i) => console.log(JSON.stringify({ ...inputs.keys[i], mu })));
  } else if (command === "score") {
    const keys = Object.keys(inputs.keys[0] ?? {});
    const { rows, state } = await score(model, inputs);
    const columns = Object.keys(rows[0] ?? { score: 0, is_anomaly: false });
    console.log([...keys, ...columns].join(","));
    rows.forEach((row, i) => console.log([...keys.map((k) => inputs.keys[i][k]), ...columns.map((c) => row[c])].join(",")));
    if (stateFile) writeFileSync(stateFile, stateToJson({ ...before, ...state }));
  } else {
    throw new Error(usage);
  }
}

main().catch((error) => {
  console.error(`error: ${error.message}`);
  process.exit(2);
});
