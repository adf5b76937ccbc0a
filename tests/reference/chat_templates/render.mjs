// Renders every chat template of tests/fixtures/chat_templates (*.jinja) with every message set of
// tests/fixtures/chat_templates/messages (*.json), with and without the generation prompt, using
// @huggingface/jinja (the renderer of transformers.js) as the oracle, and writes
// tests/golden/chat_templates.json, which ChatTemplateGoldenTests compares eMoE's renderer with.
//
// Setup once, outside the repository:
//     mkdir -p /tmp/jinja-oracle && cd /tmp/jinja-oracle && npm init -y && npm install @huggingface/jinja@0.5.11
// Regenerate, from the repository root:
//     JINJA_ORACLE=/tmp/jinja-oracle node tests/reference/chat_templates/render.mjs
//
// A message set is an array of messages, or {"messages": [...], ...}: its other keys (tools,
// enable_thinking) are template variables too. bos_token and eos_token are fixed, and the clock of
// strftime_now is frozen at NOW in UTC, so the output is reproducible. A render that throws is
// recorded as {"error": message, "raised": true when the template called raise_exception}.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const VERSION = "0.5.11";
const BOS = "<s>";
const EOS = "</s>";
const NOW = "2025-07-10T12:00:00.000Z";

process.env.TZ = "UTC";
const RealDate = Date;
globalThis.Date = class extends RealDate {
  constructor(...args) {
    super(...(args.length === 0 ? [NOW] : args));
  }
  static now() {
    return new RealDate(NOW).getTime();
  }
};

const oracleDir = process.env.JINJA_ORACLE ?? "/tmp/jinja-oracle";
const packageDir = path.join(oracleDir, "node_modules", "@huggingface", "jinja");
const installed = JSON.parse(fs.readFileSync(path.join(packageDir, "package.json"), "utf8")).version;
if (installed !== VERSION) {
  throw new Error(`expected @huggingface/jinja ${VERSION} in ${oracleDir}, found ${installed}`);
}
const { Template, Environment } = await import(pathToFileURL(path.join(packageDir, "dist", "index.js")).href);

// Mark the errors raise_exception throws, to tell them from the renderer's own.
class RaisedError extends Error {}
const originalSet = Environment.prototype.set;
Environment.prototype.set = function (name, value) {
  if (name === "raise_exception") {
    value = (message) => {
      throw new RaisedError(message);
    };
  }
  return originalSet.call(this, name, value);
};

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "..", "..");
const fixtures = path.join(root, "tests", "fixtures", "chat_templates");
const byName = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
const templates = fs.readdirSync(fixtures).filter((f) => f.endsWith(".jinja")).sort(byName);
const messageSets = fs.readdirSync(path.join(fixtures, "messages")).filter((f) => f.endsWith(".json")).sort(byName);

const cases = [];
for (const templateFile of templates) {
  const source = fs.readFileSync(path.join(fixtures, templateFile), "utf8");
  const template = new Template(source);
  for (const setFile of messageSets) {
    const data = JSON.parse(fs.readFileSync(path.join(fixtures, "messages", setFile), "utf8"));
    const variables = Array.isArray(data) ? { messages: data } : data;
    for (const addGenerationPrompt of [true, false]) {
      const item = {
        template: templateFile.replace(/\.jinja$/, ""),
        messages: setFile.replace(/\.json$/, ""),
        add_generation_prompt: addGenerationPrompt,
      };
      try {
        item.output = template.render({ ...variables, add_generation_prompt: addGenerationPrompt, bos_token: BOS, eos_token: EOS });
      } catch (e) {
        item.error = e.message;
        item.raised = e instanceof RaisedError;
      }
      cases.push(item);
    }
  }
}

const golden = {
  generator: "tests/reference/chat_templates/render.mjs",
  oracle: `@huggingface/jinja ${VERSION}`,
  bos_token: BOS,
  eos_token: EOS,
  now: NOW,
  cases,
};
const out = path.join(root, "tests", "golden", "chat_templates.json");
fs.writeFileSync(out, JSON.stringify(golden, null, 1) + "\n");
const errors = cases.filter((c) => "error" in c);
console.log(`${cases.length} cases (${errors.length} errors, ${errors.filter((c) => c.raised).length} raised by templates) -> ${path.relative(root, out)}`);
