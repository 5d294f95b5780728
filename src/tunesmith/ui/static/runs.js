// The runs table: one page at a time from the server, filtered by kind, status and command
// line; refreshed every 2 s so statuses change live. Fine-tunes can be picked to compare.

import { api, duration, h, message, runLink, statusBadge, when } from "./dom.js";

const PAGE = 50;
const STATUSES = ["running", "succeeded", "failed", "interrupted"];
const state = { kind: "", status: "", q: "", offset: 0, picked: new Set() };

export function renderRuns(view) {
  const ui = toolbar(() => reload(true));
  const body = h("tbody");
  const pager = h("div", { className: "pager" });
  const note = h("div");
  const headings = ["", "ID", "Kind", "Status", "Started", "Duration", "Summary", "Used"];
  view.append(
    h("h1", {}, "Runs"), ui.bar, note,
    h("table", { className: "runs" }, h("thead", {}, h("tr", {}, headings.map((c) => h("th", {}, c)))), body),
    pager,
  );

  async function reload(reset = false) {
    if (reset) state.offset = 0;
    const query = new URLSearchParams({ limit: PAGE, offset: state.offset });
    for (const key of ["kind", "status", "q"]) if (state[key]) query.set(key, state[key]);
    let page;
    try {
      page = await api(`/api/runs?${query}`);
    } catch (e) {
      note.replaceChildren(message(e.message));
      return;
    }
    note.replaceChildren();
    fillKinds(ui.kind, page.kinds);
    body.replaceChildren(...page.runs.map((run) => row(run, ui.compare)));
    if (!page.total) body.append(h("tr", {}, h("td", { colspan: 8, className: "empty" }, "no runs")));
    pager.replaceChildren(...pagerButtons(page.total, reload));
    ui.compare.disabled = state.picked.size < 2;
  }

  reload();
  const timer = setInterval(reload, 2000);
  return () => clearInterval(timer);
}

function toolbar(changed) {
  const kind = h("select", { "aria-label": "kind", onchange: () => { state.kind = kind.value; changed(); } },
    h("option", { value: "" }, "all kinds"));
  const status = h("select", { "aria-label": "status", onchange: () => { state.status = status.value; changed(); } },
    h("option", { value: "" }, "all statuses"), STATUSES.map((s) => h("option", { value: s }, s)));
  status.value = state.status;
  const search = h("input", { type: "search", placeholder: "search command lines", value: state.q, "aria-label": "search" });
  let typing;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.q = search.value; changed(); }, 250);
  });
  const compare = h("button", { type: "button", disabled: true, onclick: () => {
    location.hash = `#/compare?ids=${[...state.picked].sort((a, b) => a - b).join(",")}`;
  } }, "Compare selected");
  return { bar: h("div", { className: "toolbar" }, kind, status, search, compare), kind, compare };
}

function pagerButtons(total, reload) {
  const last = Math.min(state.offset + PAGE, total);
  return [
    h("button", { type: "button", disabled: state.offset === 0, onclick: () => { state.offset = Math.max(0, state.offset - PAGE); reload(); } }, "← newer"),
    h("span", { className: "count" }, total ? `${state.offset + 1}–${last} of ${total}` : "0 runs"),
    h("button", { type: "button", disabled: last >= total, onclick: () => { state.offset += PAGE; reload(); } }, "older →"),
  ];
}

function row(run, compare) {
  const box = run.kind === "finetune"
    ? h("input", { type: "checkbox", "aria-label": `pick run ${run.id}`, checked: state.picked.has(run.id), onchange: (e) => {
      if (e.target.checked) state.picked.add(run.id); else state.picked.delete(run.id);
      compare.disabled = state.picked.size < 2;
    } })
    : "";
  return h("tr", { "data-run": run.id, "data-status": run.status },
    h("td", {}, box),
    h("td", {}, runLink(run.id)),
    h("td", {}, run.kind),
    h("td", {}, statusBadge(run.status)),
    h("td", {}, when(run.started)),
    h("td", {}, duration(run.duration) + (run.status === "running" ? "…" : "")),
    h("td", { className: "summary", title: run.command.join(" ") }, run.summary),
    h("td", {}, run.used.flatMap((id, i) => [i ? ", " : "", runLink(id)])),
  );
}

function fillKinds(select, kinds) {
  const have = [...select.options].map((o) => o.value).filter(Boolean);
  if (have.join() === kinds.join()) return;
  select.replaceChildren(h("option", { value: "" }, "all kinds"), ...kinds.map((k) => h("option", { value: k }, k)));
  select.value = kinds.includes(state.kind) ? state.kind : "";
}
