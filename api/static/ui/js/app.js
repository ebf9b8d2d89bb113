// The UI's entry point: hash routes -> page modules, the project navigation, the token dialog.
// Routes live in the URL fragment (`#/p/proj-1/dataset?class=cat`), so every view has a link that survives a
// reload and the server serves one static shell. Each page module exports
// `render(view, {params, query, navigate})` and may return a cleanup function (stop polling, close streams).

import { api, ApiError, forgetToken, onTokenNeeded, storedToken } from "./api.js";
import { errorBox, h, replace } from "./dom.js";

/** [pattern, page module, project tab]; `:name` segments become params. */
const ROUTES = [
  ["/", "./pages/projects.js", null],
  ["/system", "./pages/system.js", null],
  ["/p/:project/dataset", "./pages/dataset.js", "dataset"],
  ["/p/:project/splits", "./pages/splits.js", "splits"],
  ["/p/:project/training", "./pages/training.js", "training"],
  ["/p/:project/runs/:run", "./pages/run.js", "training"],
  ["/p/:project/evaluation", "./pages/evaluation.js", "evaluation"],
  ["/p/:project/evaluation/:evaluation", "./pages/evaluation.js", "evaluation"],
  ["/p/:project/export", "./pages/export.js", "export"],
  ["/p/:project/predict", "./pages/predict.js", "predict"],
];

const PROJECT_TABS = [
  ["dataset", "Dataset"], ["splits", "Splits"], ["training", "Training"],
  ["evaluation", "Evaluation"], ["export", "Export"], ["predict", "Predict"],
];

/** Parse `location.hash` into {path, query}. */
export function currentRoute() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, search = ""] = raw.split("?");
  return { path: path || "/", query: Object.fromEntries(new URLSearchParams(search)) };
}

/** Build a hash link: `link("/p/x/dataset", {class: "cat"})`. */
export function link(path, query = {}) {
  const search = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined && v !== null && v !== ""));
  const text = search.toString();
  return `#${path}${text ? `?${text}` : ""}`;
}

/** Change the route; `replace: true` keeps the history entry (filters, paging). */
export function navigate(path, query = {}, { replace: replaceEntry = false } = {}) {
  const target = link(path, query);
  if (replaceEntry) {
    history.replaceState(null, "", target);
    render();
  } else {
    location.hash = target;
  }
}

function match(pattern, path) {
  const want = pattern.split("/").filter(Boolean);
  const got = path.split("/").filter(Boolean);
  if (want.length !== got.length) return null;
  const params = {};
  for (let i = 0; i < want.length; i++) {
    if (want[i].startsWith(":")) params[want[i].slice(1)] = decodeURIComponent(got[i]);
    else if (want[i] !== got[i]) return null;
  }
  return params;
}

/** Record in-page state (filters, page number) in the URL without re-rendering the page. */
export function setQuery(query) {
  history.replaceState(null, "", link(currentRoute().path, query));
}

const projectNames = new Map();

async function renderProjectNav(projectId, activeTab) {
  const nav = document.getElementById("project-nav");
  if (!projectId) { nav.hidden = true; nav.replaceChildren(); return; }
  nav.hidden = false;
  const name = h("span", { class: "project-name" }, projectNames.get(projectId) || projectId);
  replace(nav, name, h("ul", {}, PROJECT_TABS.map(([tab, label]) => h("li", {},
    h("a", { href: link(`/p/${encodeURIComponent(projectId)}/${tab}`), "aria-current": tab === activeTab ? "page" : null }, label)))));
  if (!projectNames.has(projectId)) {
    try {
      const project = await api(`/api/projects/${encodeURIComponent(projectId)}`);
      projectNames.set(projectId, `${project.name} · ${project.task}`);
      name.textContent = projectNames.get(projectId);
    } catch { /* the page shows the error */ }
  }
}

/** Forget a cached project name (after a rename). */
export function projectRenamed(projectId) {
  projectNames.delete(projectId);
}

let cleanup = null;
let renderCount = 0;

async function render() {
  const { path, query } = currentRoute();
  const view = document.getElementById("view");
  if (typeof cleanup === "function") { try { cleanup(); } catch { /* ignore */ } }
  cleanup = null;
  const thisRender = ++renderCount;
  for (const anchor of document.querySelectorAll("[data-nav]")) {
    const active = (anchor.dataset.nav === "system" && path === "/system") || (anchor.dataset.nav === "projects" && path !== "/system");
    if (active) anchor.setAttribute("aria-current", "page"); else anchor.removeAttribute("aria-current");
  }
  for (const [pattern, module, tab] of ROUTES) {
    const params = match(pattern, path);
    if (!params) continue;
    renderProjectNav(params.project, tab);
    replace(view, h("p", { class: "muted", "aria-busy": "true" }, "Loading…"));
    try {
      const page = await import(module);
      if (thisRender !== renderCount) return;
      // each render gets its own container: a page still finishing requests after the user moved on writes
      // into a detached element, never over the next page
      const container = h("div", { class: "page" });
      view.replaceChildren(container);
      const result = await page.render(container, { params, query, navigate });
      if (thisRender !== renderCount) {
        if (typeof result === "function") result(); // superseded while it rendered: stop what it started
        return;
      }
      cleanup = result;
    } catch (error) {
      if (thisRender !== renderCount) return;
      if (!(error instanceof ApiError)) console.error("modelyard UI: the page failed to render", error); // a bug: tests fail on it
      replace(view, h("h1", {}, "Something went wrong"), errorBox(error));
    }
    document.title = `${view.querySelector("h1")?.textContent || "modelyard"} · modelyard`;
    view.dataset.ready = String(thisRender); // browser tests wait for this
    return;
  }
  renderProjectNav(null);
  replace(view, h("h1", {}, "Page not found"), h("p", {}, h("a", { href: "#/" }, "Back to the projects")));
  view.dataset.ready = String(thisRender);
}

function setUpTokenDialog() {
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const error = document.getElementById("token-error");
  const forget = document.getElementById("forget-token");
  forget.hidden = !storedToken();
  forget.addEventListener("click", () => { forgetToken(); forget.hidden = true; location.reload(); });
  onTokenNeeded((wasWrong) => new Promise((resolve) => {
    error.hidden = !wasWrong;
    error.textContent = wasWrong ? "That token was not accepted. Try again." : "";
    input.value = "";
    dialog.addEventListener("cancel", (event) => event.preventDefault()); // no way around it but a token
    form.onsubmit = () => {
      const token = input.value.trim();
      if (!token) return false;
      forget.hidden = false;
      resolve(token);
      return true;
    };
    if (!dialog.open) dialog.showModal();
    input.focus();
  }));
}

setUpTokenDialog();
window.addEventListener("hashchange", () => {
  render().then(() => document.getElementById("view").focus({ preventScroll: true }));
});
render();
