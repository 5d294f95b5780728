// Parts of a run's page that depend on what the run made: lineage, a data run's report,
// a sweep's trials, samples and the quality report, outputs with download links.

import { h, size, svg } from "./dom.js";

const NODE_W = 120, NODE_H = 28, GAP = 40, WIDTH = 560;

export function download(run, path) {
  return `/api/runs/${run.id}/download?path=${encodeURIComponent(path)}`;
}

export function lineageGraph(run) {
  const used = [...new Set((run.used || []).map((u) => u.run))];
  const usedBy = run.used_by || [];
  if (!used.length && !usedBy.length) return h("p", {}, "used no earlier run; no run used it");
  const rows = Math.max(used.length, usedBy.length, 1);
  const height = rows * GAP + 10;
  const root = svg("svg", { viewBox: `0 0 ${WIDTH} ${height}`, class: "lineage", role: "img" });
  const y = (i, n) => 5 + (height - 10) * (i + 0.5) / n - NODE_H / 2;
  const columns = [[used, 10], [[run.id], (WIDTH - NODE_W) / 2], [usedBy, WIDTH - NODE_W - 10]];
  const center = { x: (WIDTH - NODE_W) / 2, y: y(0, 1) };
  for (const [i, id] of used.entries()) edge(root, 10 + NODE_W, y(i, used.length), center.x, center.y);
  for (const [i, id] of usedBy.entries()) edge(root, center.x + NODE_W, center.y, WIDTH - NODE_W - 10, y(i, usedBy.length));
  for (const [ids, x] of columns) {
    for (const [i, id] of ids.entries()) root.append(node(id, x, y(i, ids.length), id === run.id));
  }
  return h("div", {}, root, h("p", { className: "hint" }, "left: runs it used · right: runs that used it"));
}

function edge(root, x1, y1, x2, y2) {
  root.append(svg("line", { x1, y1: y1 + NODE_H / 2, x2, y2: y2 + NODE_H / 2, class: "edge" }));
}

function node(id, x, y, self) {
  const text = svg("text", { x: x + NODE_W / 2, y: y + NODE_H / 2 + 4, "text-anchor": "middle" });
  text.textContent = `runs/${id}`;
  const rect = svg("rect", { x, y, width: NODE_W, height: NODE_H, rx: 6, class: self ? "node self" : "node" });
  if (self) {
    const g = svg("g", {});
    g.append(rect, text);
    return g;
  }
  const link = svg("a", { href: `#/runs/${id}`, "data-run": id });
  link.append(rect, text);
  return link;
}

export function dataReport(run) {
  const r = run.data_report;
  if (!r || !r.examples) return "";
  const ex = r.examples;
  const rows = [["read", ex.read]];
  const dropped = Object.entries(ex.dropped || {}).filter(([, n]) => n);
  for (const [reason, n] of dropped) rows.push([`dropped: ${reason.replaceAll("_", " ")}`, n]);
  rows.push(["kept", ex.kept], ["train", ex.train], ["validation", ex.val]);
  const lengths = [["characters", r.chars], [`tokens (${r.tokenizer || "-"})`, r.tokens]].filter(([, s]) => s);
  return h("section", { className: "data-report" },
    h("h2", {}, "Data report"),
    h("div", { className: "columns" },
      h("table", { className: "kv" }, h("tbody", {}, rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, Number(v).toLocaleString()))))),
      h("table", { className: "kv" },
        h("thead", {}, h("tr", {}, ["", "min", "median", "p95", "max", "total"].map((c) => h("th", {}, c)))),
        h("tbody", {}, lengths.map(([name, s]) => h("tr", {}, h("th", {}, name),
          [s.min, s.median, s.p95, s.max, s.total].map((v) => h("td", {}, Number(v).toLocaleString())))))),
    ),
    r.over_context ? h("p", {}, `${r.over_context} examples are longer than the ${r.context}-token context`) : "",
    (run.images || []).includes("lengths.png")
      ? h("img", { src: download(run, "lengths.png"), alt: "length histogram", className: "plot" }) : "",
    (r.longest || []).length ? h("div", {}, h("h3", {}, "Longest examples"),
      h("ol", { className: "longest" }, r.longest.map((item) => h("li", {},
        h("span", { className: "muted" }, `${item.length} · ${String(item.source).split("/").at(-1)}:${item.row} `), item.text)))) : "",
    (r.warnings || []).map((w) => h("p", { className: "message warning" }, w)),
  );
}

// A sweep: its trials best first (each linked to its run's page), then its two plots.
export function sweepSection(run) {
  const sweep = run.sweep;
  if (!sweep) return "";
  const runColumn = sweep.header.indexOf("run");
  const cell = (value, i) => {
    const match = i === runColumn && /^runs\/(\d+)$/.exec(value);
    return h("td", {}, match ? h("a", { href: `#/runs/${match[1]}`, "data-run": match[1] }, value) : value);
  };
  return h("section", { className: "sweep" }, h("h2", {}, `Sweep (${sweep.rows.length} trials)`),
    h("table", { className: "outputs" },
      h("thead", {}, h("tr", {}, sweep.header.map((c) => h("th", {}, c)))),
      h("tbody", {}, sweep.rows.map((row, n) => h("tr", { className: n === 0 ? "best" : "" }, row.map(cell))))),
    sweep.plots.map((name) => h("img", { src: download(run, name), alt: name.replace(".png", ""), className: "plot" })));
}

export function samplesSection(run) {
  const parts = [];
  const quality = run.quality;
  if (quality) {
    const head = quality.text.split("\n").filter((line) => line && !/^\s*\d+\. /.test(line));
    parts.push(h("section", { className: "quality" }, h("h2", {}, "Quality report"),
      h("pre", {}, head.join("\n")),
      h("ol", { className: "samples" }, quality.samples.map((s) => h("li", { className: s.copied ? "copied" : "" },
        h("span", { className: "sample-text" }, s.text),
        s.copied ? h("span", { className: "flag" }, "copies a training example") : "")))));
  }
  if ((run.samples || []).length) {
    parts.push(h("section", {}, h("h2", {}, "Samples during training"),
      h("dl", { className: "samples" }, run.samples.flatMap((rec) => [
        h("dt", {}, `step ${rec.step}`),
        ...rec.samples.map((text) => h("dd", { className: "sample-text" }, text)),
      ]))));
  }
  return h("div", {}, parts);
}

export function outputsTable(run) {
  const outputs = run.outputs || [];
  const total = outputs.reduce((sum, o) => sum + o.size, 0);
  return h("section", {}, h("h2", {}, `Outputs (${outputs.length} files, ${size(total)})`),
    outputs.length ? h("table", { className: "outputs" },
      h("thead", {}, h("tr", {}, ["Path", "Size", "sha256"].map((c) => h("th", {}, c)))),
      h("tbody", {}, outputs.map((o) => h("tr", {},
        h("td", {}, h("a", { href: download(run, o.path), download: o.path.split("/").at(-1) }, o.path)),
        h("td", { className: "num" }, size(o.size)),
        h("td", { className: "mono" }, o.sha256.slice(0, 16)))))) : h("p", {}, "none yet"));
}
