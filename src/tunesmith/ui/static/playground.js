// Playground: pick a model (a run, a folder, a hub id), type a prompt, watch samples stream in.

import { api, h, message } from "./dom.js";

const FIELDS = [
  ["length", "tokens", 60, "1"], ["temperature", "temperature", 1.0, "0.05"], ["top_k", "top-k", 0, "1"],
  ["top_p", "top-p", 0.9, "0.05"], ["seed", "seed", "", "1"], ["samples", "samples", 1, "1"],
];

export function renderPlayground(view, params) {
  const source = h("input", { name: "source", list: "models", value: params.get("model") || "", placeholder: "runs/3, a folder, or gpt2", required: true, "aria-label": "model" });
  const models = h("datalist", { id: "models" });
  const prompt = h("textarea", { name: "prompt", rows: 3, placeholder: "prompt (empty: start from nothing)", "aria-label": "prompt" });
  const inputs = Object.fromEntries(FIELDS.map(([name, , value, step]) => [name, h("input", { type: "number", name, value, step, "aria-label": name })]));
  const go = h("button", { type: "submit" }, "Generate");
  const stop = h("button", { type: "button", disabled: true }, "Stop");
  const status = h("p", { className: "stats", "aria-live": "polite" });
  const outputs = h("div", { className: "generations" });
  const form = h("form", { className: "playground" },
    h("label", {}, "Model ", source), models, prompt,
    h("div", { className: "settings" }, FIELDS.map(([name, label]) => h("label", {}, `${label} `, inputs[name]))),
    h("div", {}, go, stop));
  view.append(h("h1", {}, "Playground"), form, status, outputs);
  let events = null;

  api("/api/runs?kind=finetune&status=succeeded&limit=100").then((page) => {
    models.replaceChildren(...page.runs.map((r) => h("option", { value: `runs/${r.id}` }, r.summary)));
  }).catch(() => {});

  const finish = () => { events?.close(); events = null; go.disabled = false; stop.disabled = true; };
  stop.addEventListener("click", () => { finish(); status.textContent = "stopped"; });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    finish();
    outputs.replaceChildren();
    const query = new URLSearchParams({ source: source.value, prompt: prompt.value });
    for (const [name] of FIELDS) if (inputs[name].value !== "") query.set(name, inputs[name].value);
    const boxes = [];
    go.disabled = true;
    stop.disabled = false;
    status.textContent = `loading ${source.value}…`;
    events = new EventSource(`/api/playground/stream?${query}`);
    events.onmessage = (msg) => {
      const e = JSON.parse(msg.data);
      if (e.error) { finish(); status.replaceChildren(message(e.error)); return; }
      if (e.finished) { finish(); return; }
      if (!boxes[e.sample]) {
        boxes[e.sample] = h("pre", { className: "generation", "data-sample": e.sample }, h("span", { className: "prompt" }, prompt.value));
        outputs.append(boxes[e.sample]);
      }
      if (e.text) boxes[e.sample].append(document.createTextNode(e.text));
      if (e.tokens_per_s !== undefined) {
        const rate = `${e.tokens_per_s.toFixed(1)} tokens/s`;
        status.textContent = e.done ? `sample ${e.sample + 1}: ${e.tokens} tokens, ${rate} (${e.finish_reason})` : `sample ${e.sample + 1}: ${rate}`;
      }
    };
    events.onerror = () => { if (events) { finish(); status.replaceChildren(message("the stream was cut off")); } };
  });
  return finish;
}
