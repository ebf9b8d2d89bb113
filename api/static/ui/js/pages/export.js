// Export: pick a run's checkpoint and a format, fill the format's options (a form generated from its JSON schema),
// follow the export to its verification result, list exports (status, size, verification), download the file or
// the deployment bundle, delete.

import { api, download, seg } from "../api.js";
import {
  confirmAction, errorBox, errorText, field, formatBytes, formatDate, formatNumber, formatPercent, h, pageHeader, poll,
  progressBar, replace, showFieldErrors, statusBadge, table, toast, useStylesheet,
} from "../dom.js";
import { runPicker } from "../run_picker.js";

const FINISHED = new Set(["completed", "failed", "stopped", "interrupted", "cancelled"]);

function types(schema) {
  const type = schema.type;
  return Array.isArray(type) ? type : type ? [type] : [];
}

/** One control per option of a format's JSON schema; `read()` parses them back (throws {field, message}). */
function optionsForm(format) {
  const properties = (format.options && format.options.properties) || {};
  const controls = [];
  const fields = [];
  for (const [name, schema] of Object.entries(properties)) {
    const kinds = types(schema);
    const nullable = kinds.includes("null");
    const fieldName = `options.${name}`;
    const label = name.replace(/_/g, " ");
    let control;
    let read;
    if (Array.isArray(schema.enum)) {
      control = h("select", { name: fieldName }, schema.enum.map((v) => h("option", { value: JSON.stringify(v) }, v === null ? "(none)" : String(v))));
      if (schema.default !== undefined) control.value = JSON.stringify(schema.default);
      read = () => JSON.parse(control.value);
    } else if (kinds.includes("boolean")) {
      control = h("input", { type: "checkbox", name: fieldName, checked: Boolean(schema.default) });
      read = () => control.checked;
    } else if (kinds.includes("integer") || kinds.includes("number")) {
      control = h("input", { type: "number", name: fieldName, min: schema.minimum, max: schema.maximum,
        step: kinds.includes("integer") ? 1 : "any", value: schema.default ?? "" });
      read = () => {
        if (control.value.trim() === "") {
          if (nullable || schema.default === undefined) return undefined;
          throw { field: fieldName, message: "A number is required" };
        }
        const value = Number(control.value);
        if (!Number.isFinite(value) || (kinds.includes("integer") && !kinds.includes("number") && !Number.isInteger(value))) {
          throw { field: fieldName, message: kinds.includes("integer") ? "Enter a whole number" : "Enter a number" };
        }
        return value;
      };
    } else if (kinds.includes("array")) {
      const itemTypes = types(schema.items || {});
      control = h("input", { type: "text", name: fieldName, inputmode: "numeric", autocomplete: "off",
        placeholder: nullable ? "empty: the default" : "comma-separated",
        value: Array.isArray(schema.default) ? schema.default.join(", ") : "" });
      read = () => {
        const text = control.value.trim().replace(/^\[|\]$/g, "");
        if (!text) return nullable ? undefined : [];
        const parts = text.split(/[\s,]+/).filter(Boolean);
        const numeric = itemTypes.includes("integer") || itemTypes.includes("number");
        const values = parts.map((part) => (numeric ? Number(part) : part));
        if (numeric && values.some((v) => !Number.isFinite(v) || (itemTypes.includes("integer") && !Number.isInteger(v)))) {
          throw { field: fieldName, message: `Enter ${itemTypes.includes("integer") ? "whole numbers" : "numbers"} separated by commas, e.g. 1, 3, 224, 224` };
        }
        return values;
      };
    } else if (kinds.includes("object")) {
      const initial = schema.default !== undefined ? JSON.stringify(schema.default) : "";
      control = h("textarea", { name: fieldName, rows: 2, spellcheck: false }, initial);
      read = () => {
        const text = control.value.trim();
        if (!text || text === initial) return undefined; // unchanged: the format's default
        try { return JSON.parse(text); } catch { throw { field: fieldName, message: "Enter a JSON object" }; }
      };
    } else {
      control = h("input", { type: "text", name: fieldName, value: schema.default ?? "", maxLength: schema.maxLength });
      read = () => (control.value === "" && (nullable || schema.default === undefined) ? undefined : control.value);
    }
    const range = schema.minimum !== undefined || schema.maximum !== undefined ? ` (${schema.minimum ?? "…"} to ${schema.maximum ?? "…"})` : "";
    const hint = `${schema.description || ""}${range}`;
    const wrapper = field(label, control, hint || null);
    if (control.type === "checkbox") wrapper.classList.add("checkbox-field");
    fields.push(wrapper);
    controls.push({ name, read });
  }
  return {
    element: fields.length ? h("fieldset", { class: "export-options" }, h("legend", {}, `${format.name} options`), h("div", { class: "form-grid" }, fields))
      : h("p", { class: "muted" }, "This format has no options."),
    read() {
      const options = {};
      const errors = [];
      for (const { name, read } of controls) {
        try {
          const value = read();
          if (value !== undefined) options[name] = value;
        } catch (problem) {
          errors.push(problem);
        }
      }
      if (errors.length) throw { message: "Some options are not valid", details: { errors } };
      return options;
    },
  };
}

function policyText(policy) {
  if (!policy) return "";
  const parts = [`${policy.source} policy`];
  if (policy.lossy) parts.push("lossy: agreement only");
  else if (policy.atol !== undefined) parts.push(`atol ${policy.atol}, rtol ${policy.rtol}`);
  if (policy.min_top1_agreement !== undefined) parts.push(`top-1 agreement ≥ ${formatPercent(policy.min_top1_agreement)}`);
  return parts.join(" · ");
}

function verificationBadge(exportRecord) {
  const v = exportRecord.verification;
  if (!v) return h("span", { class: "muted" }, exportRecord.status === "completed" ? "not verified" : "–");
  return h("span", { class: `badge verification ${v.passed ? "status-completed" : "status-failed"}` }, v.passed ? "verified" : "verification failed");
}

/** Everything the verification record holds, as a definition list (base formats nest). */
function verificationDetails(v) {
  const rows = [
    ["Result", h("span", { class: `badge ${v.passed ? "status-completed" : "status-failed"}`, dataset: { verification: v.passed ? "passed" : "failed" } }, v.passed ? "passed" : "failed")],
    ["Images compared", formatNumber(v.images)],
  ];
  const optional = [
    ["max_abs_diff", "Max abs difference", (x) => (x === null ? "–" : x.toExponential(2))],
    ["tolerance", "Tolerance", (x) => String(x)],
    ["top1_agreement", "Top-1 agreement", formatPercent],
    ["box_agreement", "Box agreement", formatPercent],
    ["boxes", "Boxes", formatNumber], ["matched", "Matched boxes", formatNumber], ["excused", "Excused boxes", formatNumber],
    ["min_iou", "Smallest IoU", (x) => formatNumber(x)], ["max_score_diff", "Max score difference", (x) => formatNumber(x, 4)],
    ["count_mismatches", "Count mismatches", formatNumber], ["label_mismatches", "Label mismatches", formatNumber],
    ["score_threshold", "Score threshold", (x) => formatNumber(x, 2)],
    ["problem", "Problem", (x) => x || "–"],
  ];
  for (const [key, label, show] of optional) {
    if (v[key] !== undefined && !(key === "problem" && !v[key])) rows.push([label, show(v[key])]);
  }
  if (v.policy) rows.push(["Policy", policyText(v.policy)]);
  const list = h("dl", { class: "facts verification-facts" }, rows.map(([label, value]) => [h("dt", {}, label), h("dd", {}, value)]));
  if (v.base) return h("div", {}, list, h("h4", {}, `Base file (${v.base.format || "base format"})`), verificationDetails(v.base));
  return list;
}

function exportDetail(projectId, record) {
  const section = h("div", { class: "export-detail" },
    h("p", {}, statusBadge(record.status), " ", `${record.format} of ${record.run_id} (${record.checkpoint})`,
      record.file ? ` · ${record.file.name} · ${formatBytes(record.file.size)}` : ""));
  if (record.error) section.append(errorBox({ message: `${record.error.type}: ${record.error.message}` }));
  if (record.verification) section.append(h("h3", {}, "Verification against PyTorch"), verificationDetails(record.verification));
  if (record.file) section.append(downloadButtons(projectId, record));
  return section;
}

function downloadButtons(projectId, record) {
  const path = `/api/export/${seg(projectId)}/${seg(record.id)}/download`;
  const run = async (button, url) => {
    button.disabled = true;
    try { await download(url); } catch (error) { toast(errorText(error), "error"); } finally { button.disabled = false; }
  };
  const file = h("button", { type: "button", "aria-label": `Download the file of ${record.id}` }, "Download file");
  const bundle = h("button", { type: "button", "aria-label": `Download the bundle of ${record.id}` }, "Download bundle (ZIP)");
  file.addEventListener("click", () => run(file, path));
  bundle.addEventListener("click", () => run(bundle, `${path}?bundle=zip`));
  return h("span", { class: "actions" }, file, bundle);
}

export async function render(view, { params, query }) {
  useStylesheet("evaluation"); // facts and shared bits
  useStylesheet("export");
  const projectId = params.project;
  const base = seg(projectId);
  replace(view, pageHeader("Export"));
  const stops = [];
  let listTimer = null;

  const project = await api(`/api/projects/${base}`);
  const [formats, picker] = await Promise.all([api(`/api/export/formats?task=${encodeURIComponent(project.task)}`),
    runPicker(projectId, { runId: query.run || "" })]);

  const formatSelect = h("select", { name: "format" }, formats.map((f) => h("option", { value: f.id }, f.name)));
  if (query.format && formats.some((f) => f.id === query.format)) formatSelect.value = query.format;
  const about = h("p", { class: "muted format-about" });
  const optionsBox = h("div", {});
  let options = null;
  const showFormat = () => {
    const format = formats.find((f) => f.id === formatSelect.value);
    if (!format) { replace(optionsBox, h("p", { class: "muted" }, "No export format serves this task.")); return; }
    replace(about, format.description, format.verification ? ` Verified under the ${policyText(format.verification)}.` : "",
      format.base_format ? ` Built on ${format.base_format}.` : "");
    options = optionsForm(format);
    replace(optionsBox, options.element);
  };
  formatSelect.addEventListener("change", showFormat);
  showFormat();

  const submit = h("button", { type: "submit", class: "primary" }, "Export");
  const form = h("form", { class: "card", "aria-labelledby": "new-export-title", novalidate: true },
    h("h2", { id: "new-export-title" }, "New export"), picker.element,
    h("div", { class: "form-grid" }, field("Format", formatSelect)), about, optionsBox, submit);
  const progressBox = h("div", { "aria-live": "polite" });
  const listBody = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  view.append(form, progressBox, h("section", { "aria-labelledby": "exports-title" }, h("h2", { id: "exports-title" }, "Exports"), listBody));

  const detailDialog = h("dialog", { class: "wide", "aria-label": "Export details" });
  document.body.append(detailDialog);
  const showDetails = async (record) => {
    try { record = await api(`/api/export/${base}/${seg(record.id)}`); } catch { /* show what the list had */ }
    replace(detailDialog, h("h2", {}, `Export ${record.id}`), exportDetail(projectId, record),
      h("div", { class: "actions" }, h("button", { type: "button", onclick: () => detailDialog.close() }, "Close")));
    detailDialog.showModal();
  };

  const refresh = async () => {
    clearTimeout(listTimer);
    try {
      const items = await api(`/api/export/${base}`);
      items.sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
      replace(listBody, table([
        { label: "Export", value: (e) => e.id },
        { label: "Format", value: (e) => e.format },
        { label: "Run", value: (e) => `${e.run_id} (${e.checkpoint})` },
        { label: "Status", value: (e) => h("span", { class: "inline" }, statusBadge(e.status),
          !FINISHED.has(e.status) ? progressBar(e.progress.total ? e.progress.done : null, e.progress.total, `Progress of ${e.id}`) : null) },
        { label: "Size", class: "num", value: (e) => (e.file ? formatBytes(e.file.size) : "–") },
        { label: "Verification", value: verificationBadge },
        { label: "Created", value: (e) => formatDate(e.created_at) },
        { label: "Actions", value: (e) => h("span", { class: "actions" },
          h("button", { type: "button", "aria-label": `Details of ${e.id}`, onclick: () => showDetails(e) }, "Details"),
          e.file ? downloadButtons(projectId, e) : null,
          h("button", { type: "button", class: "danger", "aria-label": `Delete ${e.id}`, onclick: async () => {
            if (!(await confirmAction(`Delete export ${e.id} and its file?`))) return;
            try { await api(`/api/export/${base}/${seg(e.id)}`, { method: "DELETE" }); toast(`Deleted ${e.id}`, "success"); refresh(); }
            catch (error) { toast(errorText(error), "error"); }
          } }, "Delete")) },
      ], items, { empty: "No export yet." }));
      if (items.some((e) => !FINISHED.has(e.status))) listTimer = setTimeout(refresh, 2000);
    } catch (error) {
      replace(listBody, errorBox(error));
    }
  };

  const follow = (record) => {
    const bar = progressBar(null, 1, "Export progress");
    const text = h("p", {}, `${record.id}: ${record.status}`);
    const card = h("section", { class: "card export-job", "aria-labelledby": "export-job-title" },
      h("h2", { id: "export-job-title" }, `Export ${record.id}`), text, bar);
    replace(progressBox, card);
    refresh();
    stops.push(poll(() => api(`/api/export/${base}/${seg(record.id)}`), (current, error) => {
      if (error) { text.textContent = errorText(error); return; }
      const { done = 0, total = 0 } = current.progress || {};
      if (total) { bar.max = total; bar.value = done; }
      text.textContent = `${current.status}${total ? ` · step ${done} of ${total}` : ""}${current.waiting_reason ? ` · ${current.waiting_reason}` : ""}`;
      if (FINISHED.has(current.status)) {
        replace(card, h("h2", { id: "export-job-title" }, `Export ${current.id}`), exportDetail(projectId, current));
        refresh();
      }
    }, { intervalMs: 700, done: (current) => Boolean(current) && FINISHED.has(current.status) }));
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showFieldErrors(form, null);
    let body;
    try {
      body = { ...picker.value(), format: formatSelect.value, options: options ? options.read() : {} };
    } catch (problem) {
      showFieldErrors(form, problem);
      return;
    }
    submit.disabled = true;
    try {
      follow(await api(`/api/export/${base}`, { method: "POST", json: body }));
    } catch (error) {
      if (!showFieldErrors(form, error)) toast(errorText(error), "error");
    } finally {
      submit.disabled = false;
    }
  });
  if (!picker.hasRuns()) form.append(h("p", { class: "muted" }, "Train a run first: an export needs a run's checkpoint."));

  await refresh();
  return () => { clearTimeout(listTimer); stops.forEach((stop) => stop()); detailDialog.remove(); };
}
