// Training: the project's experiments with their runs (status, queue position, progress, best metric), and the
// experiment form. The form is built from the OpenAPI document: the `config` object of the ExperimentCreate body
// gives the fields, their enums (selects), bounds (min/max) and, from the full config schemas, the defaults.
// Controls are named after the API field path (`training.max_epochs`), so a 422 lands next to its field.

import { api, openApi, seg } from "../api.js";
import { link } from "../app.js";
import {
  confirmAction, errorBox, errorText, field, formatDate, formatNumber, h, pageHeader, progressBar, replace,
  showFieldErrors, statusBadge, toast, uid, useStylesheet,
} from "../dom.js";

const ACTIVE = new Set(["pending", "running"]);

// -- schema helpers ---------------------------------------------------------------------------------------------

function lookup(doc, ref) {
  return ref.replace(/^#\//, "").split("/").reduce((node, key) => (node ? node[key] : undefined), doc);
}

/** A property schema with `$ref` followed and a `oneOf` wrapper unwrapped (bounds may sit on the wrapper). */
function resolve(doc, schema) {
  if (!schema) return {};
  let node = schema;
  const outer = { ...schema };
  delete outer.oneOf;
  delete outer.$ref;
  if (node.$ref) node = { ...lookup(doc, node.$ref), ...outer };
  if (node.oneOf) {
    const branches = node.oneOf.map((branch) => (branch.$ref ? lookup(doc, branch.$ref) : branch));
    const nonNull = branches.filter((branch) => branch.type !== "null");
    const nullable = nonNull.length < branches.length;
    if (nonNull.length === 1) return { ...resolve(doc, nonNull[0]), ...outer, nullable };
    return { ...outer, anyOf: nonNull, nullable }; // e.g. "auto" | integer
  }
  return node;
}

/** The full (non-partial) schema of a partial config section, for its defaults: PartialDataConfig -> DataConfig. */
function fullSchemaOf(doc, schema) {
  const title = schema && schema.title;
  if (!title) return null;
  return doc.components.schemas[title.replace(/^Partial/, "")] || null;
}

function defaultOf(doc, schema, key) {
  const full = fullSchemaOf(doc, schema);
  const prop = full && full.properties && full.properties[key];
  return prop && prop.default !== undefined ? prop.default : undefined;
}

function experimentConfigSchema(doc) {
  const create = doc.components.schemas.ExperimentCreate;
  return resolve(doc, create.properties.config);
}

// -- the form -----------------------------------------------------------------------------------------------------

const LABELS = {
  architecture: "Architecture", pretrained: "Pretrained weights", freeze_backbone: "Freeze the backbone",
  dropout: "Dropout", batch_size: "Batch size", max_epochs: "Max epochs", lr: "Learning rate",
  weight_decay: "Weight decay", warmup_epochs: "Warm-up epochs", step_size: "Step size", min_delta: "Min delta",
  split_index: "Split", "data.num_workers": "Data loader workers", cache_max_mb: "Cache limit (MiB)",
  batch_multiplier: "Gradient accumulation (batches)", label_smoothing: "Label smoothing", class_weights: "Class weights",
  num_processes: "Processes", cpu_threads: "CPU threads", weights_path: "Weights file (server path)",
};

/** Fields shown up front, per section; every other scalar of the schema goes under "More settings". */
const MAIN = {
  model: ["architecture", "pretrained", "freeze_backbone", "dropout"],
  data: ["image_size", "batch_size", "augmentations"],
  training: ["max_epochs", "optimizer.name", "optimizer.lr", "optimizer.weight_decay", "scheduler.name", "early_stopping",
    "precision", "seed"],
  hardware: ["devices"],
};
/** Free-form parts (plugin choices, option dicts): the "Extra config (JSON)" box covers them. */
const SKIP = new Set(["logging", "callbacks", "training.metrics", "training.loss.options", "scheduler.milestones",
  "training.scheduler.milestones"]);

function labelFor(path) {
  const keys = path.split(".");
  const key = keys[keys.length - 1];
  const words = (text) => text.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
  if (key === "name" && keys.length > 2) return words(keys[keys.length - 2]); // training.optimizer.name -> Optimizer
  const known = LABELS[path] || LABELS[key];
  if (keys.length > 2 && !known) return `${words(keys[keys.length - 2])} ${key.replace(/_/g, " ")}`;
  return known || words(key);
}

/** One control for a scalar schema; `read()` gives the value to send (undefined: leave it out). */
function scalarControl(path, schema, initial) {
  const name = path;
  const key = path.split(".").pop();
  const hintParts = [];
  if (schema.enum) {
    const select = h("select", { name },
      initial === undefined ? h("option", { value: "" }, "(default)") : null,
      schema.enum.filter((v, i, all) => all.findIndex((w) => String(w) === String(v)) === i)
        .map((value) => h("option", { value: String(value), selected: String(value) === String(initial) }, String(value))));
    const numeric = schema.enum.every((v) => typeof v === "number");
    return { node: field(labelFor(path), select), control: select,
      read: () => (select.value === "" ? undefined : numeric ? Number(select.value) : select.value) };
  }
  if (schema.type === "boolean") {
    const box = h("input", { type: "checkbox", name, checked: Boolean(initial) });
    const node = field(labelFor(path), box);
    node.classList.add("check");
    return { node, control: box, read: () => box.checked };
  }
  if (schema.type === "integer" || schema.type === "number") {
    const input = h("input", { type: "number", name, inputMode: schema.type === "integer" ? "numeric" : "decimal",
      step: schema.type === "integer" ? "1" : "any" });
    const min = schema.minimum ?? schema.exclusiveMinimum;
    const max = schema.maximum ?? schema.exclusiveMaximum;
    if (min !== undefined) input.min = String(min);
    if (max !== undefined) input.max = String(max);
    if (min !== undefined || max !== undefined) {
      hintParts.push(`${schema.exclusiveMinimum !== undefined ? ">" : "≥"} ${min ?? "–"}`
        + (max !== undefined ? `, ${schema.exclusiveMaximum !== undefined ? "<" : "≤"} ${max}` : ""));
    }
    if (initial !== undefined && initial !== null) input.value = String(initial);
    return { node: field(labelFor(path), input, hintParts.join(" ") || null), control: input,
      read: () => (input.value.trim() === "" ? undefined : Number(input.value)) };
  }
  if (schema.anyOf) { // "auto" | integer and the like
    const consts = schema.anyOf.map((b) => b.const).filter((v) => v !== undefined);
    const input = h("input", { type: "text", name, autocomplete: "off", value: initial === undefined || initial === null ? "" : String(initial) });
    return { node: field(labelFor(path), input, consts.length ? `${consts.join(" / ")} or a number` : null), control: input,
      read: () => {
        const text = input.value.trim();
        if (text === "") return undefined;
        return /^-?\d+(\.\d+)?$/.test(text) ? Number(text) : text;
      } };
  }
  const input = h("input", { type: "text", name, autocomplete: "off", value: initial === undefined || initial === null ? "" : String(initial) });
  return { node: field(labelFor(path), input), control: input,
    read: () => (input.value.trim() === "" ? (schema.nullable ? undefined : undefined) : input.value.trim()) };
}

function checkField(label, box) {
  const node = field(label, box);
  node.classList.add("check");
  return node;
}

function setPath(target, path, value) {
  if (value === undefined) return;
  const keys = path.split(".");
  let node = target;
  for (const key of keys.slice(0, -1)) node = node[key] = node[key] || {};
  node[keys[keys.length - 1]] = value;
}

function deepMerge(target, extra) {
  for (const [key, value] of Object.entries(extra)) {
    if (value && typeof value === "object" && !Array.isArray(value) && target[key] && typeof target[key] === "object"
        && !Array.isArray(target[key])) deepMerge(target[key], value);
    else target[key] = value;
  }
  return target;
}

/** A field-level error shown by the page itself (a client-side check such as JSON syntax). */
function localError(form, control, message) {
  showFieldErrors(form, { message, details: { errors: [{ field: control.name, message }] } });
}

function augmentationEditor(subset, schema) {
  const list = h("ol", { class: "augmentations" });
  const rows = [];
  const itemSchema = schema.items || {};
  const renumber = () => rows.forEach((row, index) => {
    for (const [control, part] of [[row.name, "name"], [row.params, "params"]]) {
      control.name = `data.augmentations.${subset}[${index}].${part}`;
      const wrapper = control.closest(".field");
      if (wrapper) wrapper.dataset.field = control.name;
    }
  });
  const add = (name = "", params = "") => {
    // the schema's allow-list as a select; a free name where the schema has none (the server checks it either way)
    const allowed = ((itemSchema.properties || {}).name || {}).enum;
    const required = (itemSchema.required || []).includes("name");
    const nameInput = allowed
      ? h("select", { required }, h("option", { value: "" }, "Choose a transform"),
        allowed.map((option) => h("option", { value: option, selected: option === name }, option)))
      : h("input", { type: "text", autocomplete: "off", value: name, placeholder: "RandomHorizontalFlip", required });
    const paramsInput = h("input", { type: "text", autocomplete: "off", value: params, placeholder: '{"p": 0.5}' });
    const row = { name: nameInput, params: paramsInput };
    const remove = h("button", { type: "button", class: "link-button", "aria-label": `Remove this ${subset} augmentation` }, "Remove");
    const item = h("li", { class: "augmentation" }, field("Transform", nameInput), field("Parameters (JSON)", paramsInput), remove);
    remove.addEventListener("click", () => { rows.splice(rows.indexOf(row), 1); item.remove(); renumber(); });
    rows.push(row);
    list.append(item);
    renumber();
    nameInput.focus();
  };
  const addButton = h("button", { type: "button", onclick: () => add() }, `Add a ${subset} augmentation`);
  const node = h("fieldset", { class: "augmentation-list" },
    h("legend", {}, subset === "train" ? "Train augmentations" : "Validation augmentations"),
    h("p", { class: "hint" }, "A torchvision.transforms.v2 class name and its keyword arguments as JSON; the server checks both."),
    list, addButton);
  return {
    node,
    read(form) {
      const out = [];
      for (const row of rows) {
        const name = row.name.value.trim();
        if (!name) continue;
        let params = {};
        if (row.params.value.trim()) {
          try { params = JSON.parse(row.params.value); } catch {
            localError(form, row.params, "Not valid JSON: write an object such as {\"p\": 0.5}");
            throw new Error("invalid");
          }
          if (!params || typeof params !== "object" || Array.isArray(params)) {
            localError(form, row.params, "Parameters must be a JSON object such as {\"p\": 0.5}");
            throw new Error("invalid");
          }
        }
        out.push({ name, params });
      }
      return out;
    },
  };
}

/** Build the whole form; resolves to {form, readConfig(), nameInput}. */
async function experimentForm(projectId, project, onSubmit) {
  const [doc, models, devices, splits] = await Promise.all([
    openApi(),
    api(`/api/training/models?task=${encodeURIComponent(project.task)}`),
    api("/api/system/devices"),
    api(`/api/splits/${seg(projectId)}`).catch(() => []),
  ]);
  const config = experimentConfigSchema(doc);
  const readers = []; // [path, read(form)]
  const sections = {};
  const more = [];

  const nameInput = h("input", { name: "name", required: true, maxLength: 200, autocomplete: "off", value: "experiment-1" });
  const description = h("input", { name: "description", maxLength: 5000, autocomplete: "off" });

  // split
  const splitSelect = h("select", { name: "split_index" },
    splits.map((split) => h("option", { value: String(split.split_index) },
      `${split.name} (${split.stats.train} train · ${split.stats.val} val · ${split.stats.test} test)`)));
  readers.push(["split_index", () => (splitSelect.value === "" ? undefined : Number(splitSelect.value))]);
  const splitField = field("Split", splitSelect, splits.length ? null : "No split yet: create one on the Splits page first.");

  const sectionNode = (key, title) => {
    const node = h("fieldset", { class: `section section-${key}` }, h("legend", {}, title));
    const grid = h("div", { class: "form-grid" });
    node.append(grid);
    sections[key] = { node, grid };
    return sections[key];
  };

  // generic walk over a section's properties
  const walk = (sectionSchema, prefix, mainList, target) => {
    for (const [key, raw] of Object.entries(sectionSchema.properties || {})) {
      const path = `${prefix}.${key}`;
      const relative = path.split(".").slice(1).join(".");
      if (SKIP.has(path) || SKIP.has(relative) || SKIP.has(key)) continue;
      const schema = resolve(doc, raw);
      const isMain = mainList.some((m) => m === relative || m.startsWith(`${relative}.`));
      if (special[path]) {
        if (isMain) special[path](target, schema, sectionSchema, key); else special[path](more, schema, sectionSchema, key);
        continue;
      }
      if (schema.type === "object" && schema.properties) {
        walk(schema, path, mainList, target);
        continue;
      }
      if (schema.type === "array" || (schema.type === "object" && !schema.properties)) continue;
      const initial = defaultOf(doc, sectionSchema, key);
      const control = scalarControl(path, schema, initial);
      readers.push([path, control.read]);
      (isMain ? target : more).push(control.node);
    }
  };

  // model.architecture: the task's architectures with their parameter counts
  const archSelect = h("select", { name: "model.architecture" });
  const archHint = h("p", { class: "hint", id: uid("arch-hint") });
  const sorted = [...models].sort((a, b) => (a.num_parameters ?? Infinity) - (b.num_parameters ?? Infinity) || a.name.localeCompare(b.name));
  let imageHeight = null;
  let imageWidth = null;
  let sizeTouched = false;
  let pretrainedBox = null;
  const onArchitecture = () => {
    const model = models.find((m) => m.name === archSelect.value);
    replace(archHint, model ? model.description || "" : "");
    if (pretrainedBox) {
      pretrainedBox.disabled = !(model && model.has_pretrained);
      if (pretrainedBox.disabled) pretrainedBox.checked = false;
    }
    if (model && !sizeTouched && imageHeight && model.default_input_size && model.default_input_size.length === 2) {
      [imageHeight.value, imageWidth.value] = model.default_input_size.map(String);
    }
  };
  const special = {
    "model.architecture": (target, schema, sectionSchema) => {
      const preferred = defaultOf(doc, sectionSchema, "architecture");
      for (const model of sorted) {
        const count = model.num_parameters === null || model.num_parameters === undefined ? "parameters unknown"
          : `${formatParams(model.num_parameters)} parameters`;
        archSelect.append(h("option", { value: model.name, dataset: { parameters: String(model.num_parameters ?? "") } },
          `${model.name} — ${count}`));
      }
      if (models.some((m) => m.name === preferred)) archSelect.value = preferred;
      archSelect.addEventListener("change", onArchitecture);
      readers.push(["model.architecture", () => archSelect.value || undefined]);
      const node = field(`Architecture (${models.length} for ${project.task.replace(/_/g, " ")})`, archSelect);
      node.insertBefore(archHint, node.querySelector(".field-error"));
      archSelect.setAttribute("aria-describedby", `${archHint.id} ${archSelect.getAttribute("aria-describedby")}`);
      target.push(h("div", { class: "field-wide" }, node));
    },
    "model.pretrained": (target, schema, sectionSchema, key) => {
      const control = scalarControl("model.pretrained", schema, defaultOf(doc, sectionSchema, key));
      pretrainedBox = control.control;
      readers.push(["model.pretrained", control.read]);
      target.push(control.node);
    },
    "data.image_size": (target, schema, sectionSchema) => {
      const initial = defaultOf(doc, sectionSchema, "image_size") || [64, 64];
      const side = (schema.prefixItems && schema.prefixItems[0]) || {};
      const make = (name, value) => h("input", { type: "number", name, min: side.minimum ?? 1, max: side.maximum ?? null,
        step: "1", inputMode: "numeric", value: String(value), oninput: () => { sizeTouched = true; } });
      imageHeight = make("data.image_size", initial[0]);
      imageWidth = make("data.image_size[1]", initial[1]);
      readers.push(["data.image_size", () => {
        if (imageHeight.value === "" && imageWidth.value === "") return undefined;
        return [Number(imageHeight.value), Number(imageWidth.value)];
      }]);
      target.push(field("Image height (px)", imageHeight), field("Image width (px)", imageWidth));
    },
    "data.augmentations": (target, schema) => {
      for (const subset of ["train", "val"]) {
        const listSchema = resolve(doc, (schema.properties || {})[subset]);
        const editor = augmentationEditor(subset, { items: resolve(doc, listSchema.items || {}) });
        readers.push([`data.augmentations.${subset}`, (form) => editor.read(form)]);
        target.push(h("div", { class: "field-wide" }, editor.node));
      }
    },
    "training.early_stopping": (target, schema, sectionSchema) => {
      const enabled = h("input", { type: "checkbox", name: "training.early_stopping", checked: defaultOf(doc, sectionSchema, "early_stopping") != null });
      const inner = h("div", { class: "form-grid nested" });
      const innerReaders = [];
      for (const [key, raw] of Object.entries(schema.properties || {})) {
        const sub = resolve(doc, raw);
        const control = scalarControl(`training.early_stopping.${key}`, sub, defaultOf(doc, schema, key));
        innerReaders.push([key, control.read]);
        inner.append(control.node);
      }
      const sync = () => { for (const control of inner.querySelectorAll("input, select")) control.disabled = !enabled.checked; };
      enabled.addEventListener("change", sync);
      sync();
      readers.push(["training.early_stopping", () => {
        if (!enabled.checked) return schema.nullable ? null : undefined;
        const out = {};
        for (const [key, read] of innerReaders) { const v = read(); if (v !== undefined) out[key] = v; }
        return out;
      }]);
      target.push(h("div", { class: "field-wide" }, h("fieldset", { class: "early-stopping" },
        h("legend", {}, "Early stopping"), checkField("Stop when the monitored metric stops improving", enabled), inner)));
    },
    "hardware.devices": (target) => {
      const boxes = devices.devices.map((device) => h("input", { type: "checkbox", name: "hardware.devices", value: device.id,
        id: uid("device"), checked: devices.default_selected.includes(device.id) }));
      const error = h("p", { class: "field-error", id: `${boxes[0] ? boxes[0].id : uid("device")}-error`, hidden: true });
      for (const box of boxes) box.setAttribute("aria-describedby", error.id);
      readers.push(["hardware.devices", () => boxes.filter((b) => b.checked).map((b) => b.value)]);
      target.push(h("div", { class: "field-wide" }, h("fieldset", { class: "devices", dataset: { field: "hardware.devices" } },
        h("legend", {}, "Devices"),
        h("div", { class: "inline" }, devices.devices.map((device, i) => h("span", { class: "device-choice" }, boxes[i],
          h("label", { for: boxes[i].id }, device.id === device.name.toLowerCase() ? device.name : `${device.name} (${device.id})`)))),
        devices.cuda_available ? null : h("p", { class: "hint" }, "CUDA is not available: training runs on the CPU."),
        error)));
    },
  };

  const TITLES = { model: "Model", data: "Data", training: "Training", hardware: "Hardware" };
  for (const key of ["model", "data", "training", "hardware"]) {
    const sectionSchema = resolve(doc, config.properties[key]);
    const { grid } = sectionNode(key, TITLES[key]);
    const target = [];
    walk(sectionSchema, key, MAIN[key] || [], target);
    grid.append(...target);
  }
  onArchitecture();

  const extra = h("textarea", { name: "extra", rows: 4, spellcheck: false, placeholder: '{"training": {"loss": {"label_smoothing": 0.1}}}' });
  const advanced = h("details", { class: "advanced" }, h("summary", {}, "More settings"),
    h("div", { class: "form-grid" }, more),
    field("Extra config (JSON, merged over the fields above)", extra,
      "Anything else the experiment config takes (logging, callbacks, metrics, loss options); the server validates it."));

  const createButton = h("button", { type: "submit", value: "create" }, "Create experiment");
  const trainButton = h("button", { type: "submit", value: "train", class: "primary" }, "Create and train");
  const formError = h("div", { class: "form-error" });
  const form = h("form", { class: "card experiment-form", "aria-labelledby": "experiment-form-title", noValidate: true },
    h("h2", { id: "experiment-form-title" }, "New experiment"),
    h("div", { class: "form-grid" }, field("Experiment name", nameInput), field("Description", description), splitField),
    Object.values(sections).map((section) => section.node),
    advanced, formError,
    h("div", { class: "actions" }, createButton, trainButton));

  const readConfig = () => {
    const out = {};
    for (const [path, read] of readers) setPath(out, path, read(form));
    if (extra.value.trim()) {
      let parsed;
      try { parsed = JSON.parse(extra.value); } catch {
        localError(form, extra, "Not valid JSON");
        throw new Error("invalid");
      }
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
        localError(form, extra, "The extra config must be a JSON object");
        throw new Error("invalid");
      }
      deepMerge(out, parsed);
    }
    return out;
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const train = event.submitter === trainButton;
    replace(formError);
    showFieldErrors(form, null);
    let configBody;
    try { configBody = readConfig(); } catch { return; }
    createButton.disabled = trainButton.disabled = true;
    try {
      await onSubmit({ name: nameInput.value.trim(), description: description.value, config: configBody }, train);
    } catch (error) {
      if (!showFieldErrors(form, error)) replace(formError, errorBox(error));
      else replace(formError, h("p", { class: "error", role: "alert" }, `Not saved: ${errorText(error)}`));
      const invalid = form.querySelector("[aria-invalid='true']");
      if (invalid) {
        const details = invalid.closest("details");
        if (details) details.open = true;
        invalid.focus();
      }
    } finally {
      createButton.disabled = trainButton.disabled = false;
    }
  });
  return { form, nameInput };
}

function formatParams(count) {
  if (count >= 1e9) return `${(count / 1e9).toFixed(1)} B`;
  if (count >= 1e6) return `${(count / 1e6).toFixed(1)} M`;
  if (count >= 1e3) return `${(count / 1e3).toFixed(1)} k`;
  return String(count);
}

// -- experiments and runs -------------------------------------------------------------------------------------

function bestText(run) {
  const best = run.best_metrics || {};
  const monitor = run.monitor && best[run.monitor] !== undefined ? run.monitor : Object.keys(best).find((k) => k !== "epoch");
  if (!monitor) return "–";
  return `${monitor} ${formatNumber(best[monitor])}${run.best_epoch ? ` (epoch ${run.best_epoch})` : ""}`;
}

function progressCell(run) {
  const p = run.progress || {};
  if (run.status === "pending") {
    const position = run.queue_position;
    return h("span", { class: "queue", dataset: { queuePosition: position ?? "" } },
      position ? `#${position} in the queue` : "queued", run.waiting_reason ? h("span", { class: "hint" }, ` · ${run.waiting_reason}`) : null);
  }
  if (!p.total_epochs) return "–";
  const spe = p.steps_per_epoch || 0;
  const done = spe ? ((p.epoch || 1) - 1) * spe + (p.step || 0) : p.epoch || 0;
  const total = spe ? p.total_epochs * spe : p.total_epochs;
  const epochsDone = run.status === "running" ? Math.max(0, (p.epoch || 1) - 1) : p.epoch || 0;
  return h("div", { class: "run-progress" },
    progressBar(run.status === "completed" ? total : Math.min(done, total), total, `Progress of ${run.id}`),
    h("span", { class: "hint" }, `epoch ${run.status === "running" ? p.epoch : epochsDone} / ${p.total_epochs}`));
}

function runsTable(projectId, experiment, runs, refresh) {
  if (!runs.length) return h("p", { class: "muted" }, "No runs yet.");
  const base = `/p/${encodeURIComponent(projectId)}`;
  return h("div", { class: "table-wrap" }, h("table", { class: "runs" },
    h("caption", { class: "visually-hidden" }, `Runs of ${experiment.name}`),
    h("thead", {}, h("tr", {}, ["Run", "Status", "Progress", "Best", "Started", ""].map((label) =>
      h("th", { scope: "col" }, label)))),
    h("tbody", {}, runs.map((run) => h("tr", { dataset: { runId: run.id, status: run.status } },
      h("td", {}, h("a", { href: link(`${base}/runs/${encodeURIComponent(run.id)}`), dataset: { focusKey: `open-${run.id}` } }, run.id)),
      h("td", {}, statusBadge(run.status), run.stop_requested && ACTIVE.has(run.status) ? h("span", { class: "hint" }, " stopping…") : null),
      h("td", {}, progressCell(run)),
      h("td", {}, bestText(run)),
      h("td", {}, formatDate(run.started_at || run.created_at)),
      h("td", {}, h("button", { type: "button", class: "danger small", dataset: { focusKey: `delete-${run.id}` },
        disabled: run.status === "running", title: run.status === "running" ? "Stop the run before deleting it" : null,
        "aria-label": `Delete run ${run.id}`, onclick: () => deleteRun(projectId, run, refresh) }, "Delete")))))));
}

async function deleteRun(projectId, run, refresh) {
  if (!(await confirmAction(`Delete run ${run.id} with its checkpoints and metrics? This cannot be undone.`))) return;
  try {
    await api(`/api/training/${seg(projectId)}/runs/${seg(run.id)}`, { method: "DELETE" });
    toast(`Deleted ${run.id}`, "success");
  } catch (error) {
    toast(errorText(error), "error");
  }
  refresh();
}

async function deleteExperiment(projectId, experiment, refresh) {
  const message = `Delete experiment “${experiment.name}” and its ${experiment.run_count} run(s)? This cannot be undone.`;
  if (!(await confirmAction(message))) return;
  try {
    await api(`/api/training/${seg(projectId)}/experiments/${seg(experiment.id)}`, { method: "DELETE" });
    toast(`Deleted ${experiment.name}`, "success");
  } catch (error) {
    toast(errorText(error), "error");
  }
  refresh();
}

async function startRun(projectId, experimentId) {
  return api(`/api/training/${seg(projectId)}/experiments/${seg(experimentId)}/run`, { method: "POST" });
}

function experimentCard(projectId, experiment, runs, refresh) {
  const best = experiment.best_metric;
  const start = async () => {
    try {
      const started = await startRun(projectId, experiment.id);
      toast(started.queue_position ? `Run ${started.run_id} queued (#${started.queue_position})` : `Run ${started.run_id} started`, "success");
    } catch (error) {
      toast(errorText(error), "error");
    }
    refresh();
  };
  const busy = runs.some((run) => ACTIVE.has(run.status)); // the API refuses (409) while a run is pending or running
  return h("article", { class: "card experiment", dataset: { experimentId: experiment.id } },
    h("div", { class: "experiment-head" },
      h("h3", {}, experiment.name),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "primary", dataset: { focusKey: `start-${experiment.id}` }, onclick: start,
          "aria-label": `Start a run of ${experiment.name}` }, "Start run"),
        h("button", { type: "button", class: "danger", dataset: { focusKey: `delete-${experiment.id}` }, disabled: busy,
          title: busy ? "Stop or delete its pending and running runs first" : null, "aria-label": `Delete experiment ${experiment.name}`,
          onclick: () => deleteExperiment(projectId, experiment, refresh) }, "Delete"))),
    experiment.description ? h("p", {}, experiment.description) : null,
    h("p", { class: "muted summary" }, `${experiment.run_count} run${experiment.run_count === 1 ? "" : "s"}`,
      best ? ` · best ${best.name} ${formatNumber(best.value)}${best.run_id ? ` (${best.run_id}, epoch ${best.epoch ?? "–"})` : ""}` : ""),
    runsTable(projectId, experiment, runs, refresh));
}

export async function render(view, { params, navigate }) {
  useStylesheet("training");
  const projectId = params.project;
  const base = `/api/training/${seg(projectId)}`;
  const list = h("section", { "aria-labelledby": "experiments-title", class: "experiments" },
    h("h2", { id: "experiments-title" }, "Experiments"), h("p", { class: "muted" }, "Loading…"));
  const formSlot = h("section", { class: "form-slot" });
  replace(view, pageHeader("Training"), list, formSlot);

  let stopped = false;
  let timer = null;
  let shown = null;
  const refresh = async () => {
    clearTimeout(timer);
    if (stopped) return;
    let experiments;
    let runsByExperiment;
    try {
      experiments = await api(`${base}/experiments`);
      runsByExperiment = await Promise.all(experiments.map((e) => api(`${base}/experiments/${seg(e.id)}/runs`).catch(() => [])));
      // the list leaves out the queue position (it plans the queue); a pending run's own record has it
      runsByExperiment = await Promise.all(runsByExperiment.map((runs) => Promise.all(runs.map((run) => (run.status === "pending"
        ? api(`${base}/runs/${seg(run.id)}`).catch(() => run) : run)))));
    } catch (error) {
      if (!stopped) replace(list, h("h2", { id: "experiments-title" }, "Experiments"), errorBox(error));
      return;
    }
    if (stopped) return;
    const active = runsByExperiment.flat().some((run) => ACTIVE.has(run.status));
    const signature = JSON.stringify([experiments, runsByExperiment]);
    if (signature === shown) { // nothing changed: keep the DOM (and the keyboard focus) as it is
      timer = setTimeout(refresh, active ? 2000 : 10_000);
      return;
    }
    shown = signature;
    const focusKey = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.focusKey : null;
    replace(list, h("h2", { id: "experiments-title" }, "Experiments"),
      experiments.length
        ? experiments.map((experiment, i) => experimentCard(projectId, experiment,
          [...runsByExperiment[i]].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at))), refresh))
        : h("p", { class: "muted" }, "No experiments yet: create one below."));
    if (focusKey) {
      const again = list.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`);
      if (again) again.focus();
    }
    timer = setTimeout(refresh, active ? 2000 : 10_000);
  };

  const project = await api(`/api/projects/${seg(projectId)}`);
  await refresh();
  try {
    const { form } = await experimentForm(projectId, project, async (body, train) => {
      const experiment = await api(`${base}/experiments`, { method: "POST", json: body });
      if (!train) {
        toast(`Created ${experiment.name}`, "success");
        refresh();
        return;
      }
      let started;
      try {
        started = await startRun(projectId, experiment.id);
      } catch (error) {
        refresh(); // the experiment exists: it is listed, and its run can be started from there
        throw error;
      }
      navigate(`/p/${encodeURIComponent(projectId)}/runs/${encodeURIComponent(started.run_id)}`);
    });
    replace(formSlot, form);
  } catch (error) {
    replace(formSlot, h("h2", {}, "New experiment"), errorBox(error));
  }
  return () => { stopped = true; clearTimeout(timer); };
}
