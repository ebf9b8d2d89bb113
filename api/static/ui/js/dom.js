// Small DOM helpers shared by every page. Text always goes in as text nodes (never innerHTML), so names
// and filenames from the API cannot inject markup.

/**
 * `h("button", {class: "primary", onclick: fn}, "Save")`: an element with attributes and children.
 * Attributes starting with "on" become listeners; `null`/`false` attributes and children are skipped.
 */
const SVG_NS = "http://www.w3.org/2000/svg";

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      element.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(element.dataset, value);
    } else if (key in element && typeof value !== "string" && key !== "list") {
      element[key] = value;
    } else {
      element.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** `svg("rect", {x: 1, ...}, ...children)`: an SVG element (charts, box overlays); attributes always as strings. */
export function svg(tag, attrs = {}, ...children) {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined && value !== false) element.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** Replace an element's children. */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

let uniqueCounter = 0;

/** A page-unique id for label/for and aria links. */
export function uid(prefix = "f") {
  uniqueCounter += 1;
  return `${prefix}-${uniqueCounter}`;
}

/** A labelled control: `field("Name", input)` -> wrapper with <label for> and a slot for a field error. */
export function field(label, control, hint) {
  if (!control.id) control.id = uid("field");
  const error = h("p", { class: "field-error", id: `${control.id}-error`, hidden: true });
  const hintNode = hint ? h("p", { class: "hint", id: `${control.id}-hint` }, hint) : null;
  const describedBy = [hintNode ? hintNode.id : null, error.id].filter(Boolean).join(" ");
  control.setAttribute("aria-describedby", describedBy);
  return h("div", { class: "field", dataset: { field: control.name || "" } },
    h("label", { for: control.id }, label), control, hintNode, error);
}

/** Show validation errors from a 422 envelope next to the fields named in its details. */
export function showFieldErrors(form, error) {
  for (const node of form.querySelectorAll(".field-error")) { node.hidden = true; node.textContent = ""; }
  for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
  const details = (error && error.details) || {};
  // request validation: details.errors [{field, message}]; a domain VALIDATION_ERROR: details.field + the message
  const list = Array.isArray(details.errors) ? details.errors.filter((problem) => problem.field) : [];
  if (!list.length && details.field) list.push({ field: details.field, message: error.message });
  let shown = 0;
  for (const problem of list) {
    const path = String(problem.field || problem.key || problem.loc || "");
    const control = findControl(form, path);
    if (!control) continue;
    const slot = form.querySelector(`#${CSS.escape(control.id)}-error`);
    if (slot) {
      slot.textContent = problem.message || error.message;
      slot.hidden = false;
      control.setAttribute("aria-invalid", "true");
      shown += 1;
    }
  }
  return shown;
}

function findControl(form, path) {
  const candidates = [path, path.replace(/^(body|data|config)\./, ""), path.split(".").pop()];
  for (const name of candidates) {
    if (!name) continue;
    const control = form.querySelector(`[name="${CSS.escape(name)}"]`);
    if (control) return control;
  }
  return null;
}

/** A transient status message in the live region (errors stay until dismissed). */
export function toast(message, kind = "info") {
  const region = document.getElementById("toasts");
  const close = h("button", { type: "button", class: "link-button", "aria-label": "Dismiss" }, "×");
  const node = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : null }, h("span", {}, message), close);
  close.addEventListener("click", () => node.remove());
  region.append(node);
  if (kind !== "error") setTimeout(() => node.remove(), 5000);
  return node;
}

/** A readable message for any error (ApiError carries the server's message and code). */
export function errorText(error) {
  if (!error) return "Unknown error";
  if (error.code && error.message) return `${error.message} (${error.code})`;
  return error.message || String(error);
}

/** An inline error box for a page section. */
export function errorBox(error) {
  return h("div", { class: "error-box", role: "alert" }, errorText(error));
}

/** Ask before something destructive; resolves true when confirmed. */
export function confirmAction(message, confirmLabel = "Delete") {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-message").textContent = message;
  document.getElementById("confirm-ok").textContent = confirmLabel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    dialog.showModal();
  });
}

export function formatNumber(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (Number.isInteger(value)) return value.toLocaleString("en");
  return Number(value).toFixed(digits);
}

export function formatPercent(value) {
  if (value === null || value === undefined) return "–";
  return `${(value * 100).toFixed(1)} %`;
}

export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function formatDate(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

/** A status pill (`completed`, `running`, `failed`, ...). */
export function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

/** A <progress> with a text label (for screen readers and for the eye). */
export function progressBar(value, max, label) {
  const bar = h("progress", { value: value ?? 0, max: max || 1, "aria-label": label });
  if (value === null || value === undefined) bar.removeAttribute("value"); // indeterminate
  return bar;
}

/** A simple table from column definitions: [{label, value: row => node|text, class}]. */
export function table(columns, rows, { caption, empty = "Nothing yet." } = {}) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("div", { class: "table-wrap" },
    h("table", {},
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((column) => h("th", { scope: "col", class: column.class }, column.label)))),
      h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((column) => h("td", { class: column.class }, column.value(row))))))));
}

/** A page heading plus optional actions on the right. */
export function pageHeader(title, ...actions) {
  return h("div", { class: "page-header" }, h("h1", {}, title), h("div", { class: "actions" }, actions));
}

/** Poll `load()` every `intervalMs` until `done(result)`; returns a stop function. */
export function poll(load, onResult, { intervalMs = 1000, done = () => false } = {}) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try {
      const result = await load();
      if (stopped) return;
      onResult(result);
      if (done(result)) return;
    } catch (error) {
      if (stopped) return;
      onResult(null, error);
    }
    timer = setTimeout(tick, intervalMs);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

/** Load a page's own stylesheet (`/ui/css/<name>.css`) once; pages own their CSS file, app.css is shared. */
export function useStylesheet(name) {
  const href = `/ui/css/${name}.css`;
  if (document.querySelector(`link[rel="stylesheet"][href="${href}"]`)) return;
  document.head.append(h("link", { rel: "stylesheet", href }));
}
