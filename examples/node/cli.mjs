#!/usr/bin/env node
// node cli.mjs score  <model> <rows.csv>   → CSV: key columns, score, is_anomaly
// node cli.mjs embed  <model> <rows.csv>   → JSON lines: the latent means of each row
// node cli.mjs sample <model> <n> [seed]   → JSON lines: synthetic rows (decoder alone)
// <model> is a version folder or a model folder (its `latest`), e.g. ../../exported/demo-tabular
import { readFileSync } from "node:fs";
import { embed, loadModel, readCsv, sample, score, toInputs } from "./vad.mjs";

const [command, modelPath, arg, seed] = process.argv.slice(2);
const usage = "usage: node cli.mjs score|embed <model> <rows.csv>  |  node cli.mjs sample <model> <n> [seed]";

async function main() {
  if (!command || !modelPath || !arg) throw new Error(usage);
  const model = await loadModel(modelPath);
  if (command === "sample") {
    for (const row of await sample(model, Number(arg), Number(seed ?? 0))) console.log(JSON.stringify(row));
    return;
  }
  const inputs = toInputs(model.manifest, readCsv(readFileSync(arg, "utf8")));
  if (command === "embed") {
    (await embed(model, inputs)).forEach((mu, i) => console.log(JSON.stringify({ ...inputs.keys[i], mu })));
  } else if (command === "score") {
    const keys = Object.keys(inputs.keys[0] ?? {});
    console.log([...keys, "score", "is_anomaly"].join(","));
    (await score(model, inputs)).forEach((s, i) =>
      console.log([...keys.map((k) => inputs.keys[i][k]), s.score, s.is_anomaly].join(",")));
  } else {
    throw new Error(usage);
  }
}

main().catch((error) => {
  console.error(`error: ${error.message}`);
  process.exit(2);
});
