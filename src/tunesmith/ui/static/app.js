// The page's router: #/ runs, #/runs/N a run, #/compare?ids=1,2, #/playground. Each view
// returns a function that stops its polling when the page moves on.

import { renderCompare } from "./compare.js";
import { renderPlayground } from "./playground.js";
import { renderRun } from "./run.js";
import { renderRuns } from "./runs.js";

const view = document.getElementById("view");
let stop = () => {};

function route() {
  stop();
  view.replaceChildren();
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  const match = path.match(/^\/runs\/(\d+)$/);
  let section = "runs";
  if (match) stop = renderRun(view, Number(match[1]));
  else if (path === "/compare") { section = "compare"; stop = renderCompare(view, params); }
  else if (path === "/playground") { section = "playground"; stop = renderPlayground(view, params); }
  else stop = renderRuns(view, params);
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === section);
  }
}

window.addEventListener("hashchange", route);
route();
