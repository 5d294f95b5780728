// A small SVG line chart: series of (x, y) points, axes with round ticks, one circle per point,
// values of the nearest step on hover. Redrawn whole on each update (a few thousand points).

import { h, svg } from "./dom.js";

const W = 560, H = 240, M = { left: 56, right: 16, top: 12, bottom: 34 };
export const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f"];
const MAX_CIRCLES = 4000; // beyond this a series is drawn as a line only

function ticks(lo, hi, count = 5) {
  // Round steps (1, 2 or 5 x 10^n) over a domain widened to whole steps around the data.
  if (lo === hi) { lo -= Math.abs(lo) * 0.1 || 1; hi += Math.abs(hi) * 0.1 || 1; }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const first = Math.floor(lo / step) * step, last = Math.ceil(hi / step) * step;
  const out = [];
  for (let v = first; v <= last + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

export function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "-";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  return String(+v.toPrecision(4));
}

export function lineChart({ title, xLabel = "step", yLabel = "" }) {
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img" });
  const tip = h("div", { className: "chart-tip", hidden: true });
  const legend = h("div", { className: "legend" });
  const el = h("figure", { className: "chart", "data-title": title },
    h("figcaption", {}, title, yLabel ? h("span", { className: "muted" }, ` (${yLabel})`) : ""), h("div", { className: "chart-area" }, root, tip), legend);
  let current = [];

  function draw(series) {
    current = series.filter((s) => s.points.length);
    root.replaceChildren();
    legend.replaceChildren(...series.map((s) => h("span", { className: "key" },
      h("i", { style: `background:${s.color}` }), s.name)));
    const all = current.flatMap((s) => s.points);
    if (!all.length) {
      const t = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" });
      t.textContent = "no points yet";
      root.append(t);
      return;
    }
    const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
    const xt = ticks(Math.min(...xs), Math.max(...xs)), yt = ticks(Math.min(...ys), Math.max(...ys));
    const [x0, x1, y0, y1] = [xt[0], xt.at(-1), yt[0], yt.at(-1)];
    const sx = (x) => M.left + ((x - x0) / (x1 - x0 || 1)) * (W - M.left - M.right);
    const sy = (y) => H - M.bottom - ((y - y0) / (y1 - y0 || 1)) * (H - M.top - M.bottom);
    for (const v of yt) {
      root.append(svg("line", { x1: M.left, x2: W - M.right, y1: sy(v), y2: sy(v), class: "grid" }));
      root.append(label(M.left - 6, sy(v) + 4, fmt(v), "end"));
    }
    for (const v of xt) root.append(label(sx(v), H - M.bottom + 16, fmt(v), "middle"));
    root.append(label((M.left + W - M.right) / 2, H - 4, xLabel, "middle", "axis-label"));
    for (const s of current) {
      const d = s.points.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
      root.append(svg("path", { d, stroke: s.color, class: "series", "data-series": s.name }));
      if (s.points.length > MAX_CIRCLES) continue;
      const g = svg("g", { class: "points", fill: s.color, "data-series": s.name });
      for (const [x, y] of s.points) {
        g.append(svg("circle", { cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: 2.2, "data-x": x, "data-y": y }));
      }
      root.append(g);
    }
    const cursor = svg("line", { y1: M.top, y2: H - M.bottom, class: "cursor", visibility: "hidden" });
    root.append(cursor);
    root.onmousemove = (event) => hover(event, sx, cursor);
    root.onmouseleave = () => { tip.hidden = true; cursor.setAttribute("visibility", "hidden"); };
  }

  function hover(event, sx, cursor) {
    const box = root.getBoundingClientRect();
    const px = ((event.clientX - box.left) / box.width) * W;
    let best = null;
    for (const s of current) for (const p of s.points) {
      const dist = Math.abs(sx(p[0]) - px);
      if (!best || dist < best.dist) best = { dist, x: p[0] };
    }
    if (!best) return;
    const rows = current.map((s) => {
      const p = s.points.find((q) => q[0] === best.x);
      return p ? `${s.name}: ${fmt(p[1])}` : null;
    }).filter(Boolean);
    tip.textContent = [`${xLabel} ${fmt(best.x)}`, ...rows].join("\n");
    tip.hidden = false;
    tip.style.left = `${Math.min(event.clientX - box.left + 12, box.width - 160)}px`;
    tip.style.top = `${event.clientY - box.top + 12}px`;
    cursor.setAttribute("x1", sx(best.x));
    cursor.setAttribute("x2", sx(best.x));
    cursor.setAttribute("visibility", "visible");
  }

  return { el, draw };
}

function label(x, y, text, anchor, cls = "tick") {
  const t = svg("text", { x, y, "text-anchor": anchor, class: cls });
  t.textContent = text;
  return t;
}
