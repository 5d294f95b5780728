// Compare: fine-tune runs' curves overlaid, and a table of the parameters that differ.

import { COLORS, lineChart } from "./chart.js";
import { api, h, message, runLink, statusBadge } from "./dom.js";
import { seriesOf } from "./run.js";

const METRICS = [["train_loss", "Training loss"], ["val_loss", "Validation loss"], ["val_ppl", "Validation perplexity"], ["lr", "Learning rate"]];

export function renderCompare(view, params) {
  const ids = (params.get("ids") || "").split(",").filter(Boolean);
  view.append(h("h1", {}, "Compare"));
  if (ids.length < 2) picker(view);
  else overlay(view, ids);
  return () => {};
}

async function picker(view) {
  const list = h("tbody");
  const go = h("button", { type: "button", disabled: true }, "Compare");
  const picked = new Set();
  go.addEventListener("click", () => { location.hash = `#/compare?ids=${[...picked].sort((a, b) => a - b).join(",")}`; });
  view.append(h("p", {}, "Pick two or more fine-tune runs."), h("table", { className: "runs" }, list), go);
  try {
    const page = await api("/api/runs?kind=finetune&limit=200");
    list.replaceChildren(...page.runs.map((run) => h("tr", {},
      h("td", {}, h("input", { type: "checkbox", "aria-label": `pick run ${run.id}`, onchange: (e) => {
        if (e.target.checked) picked.add(run.id); else picked.delete(run.id);
        go.disabled = picked.size < 2;
      } })),
      h("td", {}, runLink(run.id)), h("td", {}, statusBadge(run.status)), h("td", {}, run.summary))));
    if (!page.runs.length) list.append(h("tr", {}, h("td", {}, "no fine-tune runs yet")));
  } catch (e) {
    view.append(message(e.message));
  }
}

async function overlay(view, ids) {
  let data;
  try {
    data = await api(`/api/compare?ids=${ids.join(",")}`);
  } catch (e) {
    view.append(message(e.message));
    return;
  }
  view.append(h("p", {}, "Runs ", data.runs.flatMap((r, i) => [i ? ", " : "", runLink(r.id)])));
  const charts = h("section", { className: "charts" });
  view.append(charts);
  for (const [key, title] of METRICS) {
    const series = data.runs.map((r, i) => ({ name: `runs/${r.id}`, color: COLORS[i % COLORS.length], points: seriesOf(r.metrics, key) }));
    if (!series.some((s) => s.points.length)) continue;
    const chart = lineChart({ title });
    charts.append(chart.el);
    chart.draw(series);
  }
  const show = (v) => (v === undefined ? "—" : typeof v === "object" && v !== null ? JSON.stringify(v) : String(v));
  view.append(h("section", {}, h("h2", {}, "Parameters that differ"),
    data.differing.length ? h("table", { className: "kv diff" },
      h("thead", {}, h("tr", {}, h("th", {}, "parameter"), data.runs.map((r) => h("th", {}, `runs/${r.id}`)))),
      h("tbody", {}, data.differing.map((k) => h("tr", {}, h("th", {}, k), data.runs.map((r) => h("td", {}, show(r.params[k])))))))
      : h("p", {}, "none: the runs share every parameter")));
}
