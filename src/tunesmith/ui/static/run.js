// A run's page: what ran and where, lineage, charts and log (both following a running run),
// a data run's report, samples, the quality report and the outputs.

import { COLORS, fmt, lineChart } from "./chart.js";
import { api, duration, h, message, shellJoin, statusBadge, when } from "./dom.js";
import { dataReport, lineageGraph, outputsTable, samplesSection, sweepSection } from "./sections.js";

const CHARTS = [
  { title: "Loss", yLabel: "nats/token", series: [["train_loss", "train"], ["val_loss", "validation"]] },
  { title: "Validation perplexity", series: [["val_ppl", "validation"]] },
  { title: "Learning rate", series: [["lr", "lr"]] },
  { title: "Tokens/s", series: [["tokens_per_s", "tokens/s"]] },
];

export function seriesOf(records, key) {
  return records.filter((r) => typeof r[key] === "number" && typeof r.step === "number").map((r) => [r.step, r[key]]);
}

export function renderRun(view, id) {
  const head = h("div", { className: "run-head" });
  const details = h("div");
  const charts = h("section", { className: "charts" });
  const log = logFollower(id);
  const extras = h("div");
  view.append(head, charts, log.section, details, extras);  // what changes while it runs first
  const records = [];
  const drawn = new Map();
  let metricsOffset = 0, run = null, closed = false, busy = false, first = true;

  async function refreshMeta() {
    try {
      run = await api(`/api/runs/${id}`);
    } catch (e) {
      head.replaceChildren(h("h1", {}, `Run ${id}`), message(e.message));
      return false;
    }
    head.replaceChildren(...header(run, refreshMeta));
    details.replaceChildren(...about(run));
    showExtras(run);
    return true;
  }

  const showExtras = (r) => extras.replaceChildren(dataReport(r), sweepSection(r), samplesSection(r), outputsTable(r));

  async function follow() {
    const chunk = await api(`/api/runs/${id}/metrics?offset=${metricsOffset}`);
    metricsOffset = chunk.offset;
    if (chunk.records.length || !drawn.size) {
      records.push(...chunk.records);
      drawCharts(run, records, charts, drawn);
    }
    await log.more();
  }

  async function tick() {
    if (busy || closed) return;
    busy = true;
    try {
      const wasRunning = run?.status === "running";
      if (wasRunning || first) { first = false; await follow(); }
      if (wasRunning) {
        const now = await api(`/api/runs/${id}`);
        if (now.status !== "running") { await refreshMeta(); await follow(); }
        else showExtras(now);  // samples written during training
      }
    } catch (e) {
      /* the next tick tries again (a run being deleted, a server restarting) */
    } finally {
      busy = false;
    }
  }

  refreshMeta().then((ok) => { if (ok) tick(); else closed = true; });
  const timer = setInterval(tick, 1000);
  return () => { closed = true; clearInterval(timer); };
}

function logFollower(id) {
  const box = h("pre", { className: "log", "aria-label": "log" });
  let offset = 0;
  async function more() {
    const chunk = await api(`/api/runs/${id}/log?offset=${offset}`);
    if (chunk.skipped && offset === 0) box.append("… (the start of a long log is left out)\n");
    offset = chunk.offset;
    if (!chunk.text) return;
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    box.append(document.createTextNode(chunk.text));
    if (atBottom) box.scrollTop = box.scrollHeight;  // follow, unless the reader scrolled up
  }
  return { section: h("section", {}, h("h2", {}, "Log"), box), more };
}

function header(run, refresh) {
  const actions = h("div", { className: "actions" });
  const confirmBox = h("div", { className: "confirm" });
  const ask = (question, label, action) => {
    confirmBox.replaceChildren(
      h("span", {}, question),
      h("button", { type: "button", className: "danger", onclick: async () => {
        try {
          await action();
          confirmBox.replaceChildren(message("done", "info"));
        } catch (e) {
          confirmBox.replaceChildren(message(e.message));
        }
      } }, label),
      h("button", { type: "button", onclick: () => confirmBox.replaceChildren() }, "Cancel"),
    );
  };
  if (run.status === "running") {
    actions.append(h("button", { type: "button", onclick: () => ask(`Stop run ${run.id}?`, "Yes, stop it", async () => {
      await api(`/api/runs/${run.id}/stop`, { method: "POST" });
      setTimeout(refresh, 1500);
    }) }, "Stop"));
  }
  actions.append(h("button", { type: "button", onclick: () => ask(`Delete run ${run.id} and its folder?`, "Yes, delete it", async () => {
    await api(`/api/runs/${run.id}/delete`, { method: "POST" });
    location.hash = "#/";
  }) }, "Delete"));
  return [
    h("h1", {}, `Run ${run.id} `, h("span", { className: "kind" }, run.kind), " ", statusBadge(run.status)),
    run.summary ? h("p", { className: "summary" }, run.summary) : "",
    run.error ? message(run.error) : "",
    actions,
    confirmBox,
  ];
}

function about(run) {
  const params = Object.entries(run.params || {});
  const versions = Object.entries(run.versions || {}).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(", ");
  const facts = [
    ["Started", when(run.started_at)],
    ["Duration", run.status === "running" ? "running…" : duration(run.duration_s)],
    ["Exit code", run.exit_code ?? "-"],
    ["Host", run.host || "-"],
    ["Device", run.device || "-"],
    ["Versions", versions || "-"],
    ["Git commit", run.git_commit || "-"],
    ["Folder", run.folder],
  ];
  const metrics = Object.entries(run.metrics || {});
  return [
    h("section", {}, h("h2", {}, "Command"), h("pre", { className: "command" }, shellJoin(run.command))),
    h("div", { className: "columns" },
      h("section", {}, h("h2", {}, "Parameters"), params.length ? keyValues(params) : h("p", {}, "none")),
      h("section", {}, h("h2", {}, "Where it ran"), keyValues(facts)),
      h("section", {}, h("h2", {}, "Lineage"), lineageGraph(run)),
    ),
    metrics.length ? h("section", {}, h("h2", {}, "Final metrics"), keyValues(metrics)) : "",
  ];
}

export function keyValues(pairs) {
  return h("table", { className: "kv" }, h("tbody", {}, pairs.map(([k, v]) => h("tr", {},
    h("th", {}, k), h("td", {}, typeof v === "number" && !Number.isInteger(v) ? fmt(v) : typeof v === "object" && v !== null ? JSON.stringify(v) : String(v))))));
}

function drawCharts(run, records, box, drawn) {
  for (const spec of CHARTS) {
    const series = spec.series.map(([key, name], i) => ({ name, color: COLORS[i], points: seriesOf(records, key) }));
    const hasData = series.some((s) => s.points.length);
    // An empty chart is worth showing only while a fine-tune may still fill it.
    if (!hasData && !(run?.kind === "finetune" && run?.status === "running")) continue;
    if (!drawn.has(spec.title)) {
      const chart = lineChart({ title: spec.title, yLabel: spec.yLabel || "" });
      drawn.set(spec.title, chart);
      box.append(chart.el);
    }
    drawn.get(spec.title).draw(series);
  }
}
