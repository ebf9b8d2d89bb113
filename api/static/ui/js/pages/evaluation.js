// Evaluation: the list of a project's evaluations, the create form (experiment -> run -> checkpoint, split and
// subset) with progress, and one evaluation's detail: aggregate metrics, per-class table, confusion matrix heat map
// (each cell opens its images), PR curves, the worst mistakes and the per-image results with filters and paging.

import { api, imageUrl, query, seg } from "../api.js";
import { link, setQuery } from "../app.js";
import {
  confirmAction, errorBox, errorText, field, formatDate, formatNumber, formatPercent, h, pageHeader, poll,
  progressBar, replace, showFieldErrors, statusBadge, svg, table, toast, useStylesheet,
} from "../dom.js";
import { boxedImage, boxLegend } from "../boxes.js";
import { runPicker } from "../run_picker.js";

const FINISHED = new Set(["completed", "failed", "stopped", "interrupted", "cancelled"]);
const SUBSETS = ["test", "val", "train"];
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

function subsetText(subset) {
  return Array.isArray(subset) ? subset.join("+") : subset;
}

function isDetection(evaluation) {
  const metrics = evaluation.metrics || {};
  return metrics.map !== undefined || metrics.per_class_ap !== undefined;
}

// ----------------------------------------------------------------------------------------------- list page

async function createForm(projectId, initialRun, onStarted) {
  const base = seg(projectId);
  const [picker, splits] = await Promise.all([runPicker(projectId, { runId: initialRun }), api(`/api/splits/${base}`)]);
  const splitSelect = h("select", { name: "split_index" },
    h("option", { value: "" }, "The run's own split"),
    splits.map((s) => h("option", { value: String(s.split_index) }, `${s.split_index}: ${s.name}`)));
  const subsetSelect = h("select", { name: "split_subset" });
  const batch = h("input", { name: "batch_size", type: "number", min: 1, max: 4096, value: "32", required: true });
  const fillSubsets = () => {
    const chosen = splits.find((s) => String(s.split_index) === splitSelect.value) || splits[0];
    const stats = chosen ? chosen.stats : {};
    const previous = subsetSelect.value;
    replace(subsetSelect, SUBSETS.map((name) => h("option", { value: name, disabled: stats[name] === 0 },
      stats[name] !== undefined ? `${name} (${stats[name]} images)` : name)));
    const usable = SUBSETS.filter((name) => stats[name] !== 0);
    subsetSelect.value = usable.includes(previous) ? previous : (usable[0] || "test");
  };
  splitSelect.addEventListener("change", fillSubsets);
  fillSubsets();
  const submit = h("button", { type: "submit", class: "primary" }, "Evaluate");
  const form = h("form", { class: "card", "aria-labelledby": "new-eval-title", novalidate: true },
    h("h2", { id: "new-eval-title" }, "New evaluation"),
    picker.element,
    h("div", { class: "form-grid" }, field("Split", splitSelect), field("Subset", subsetSelect),
      field("Batch size", batch)),
    submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showFieldErrors(form, null);
    const body = { ...picker.value(), split_subset: subsetSelect.value, batch_size: Number(batch.value) };
    if (splitSelect.value !== "") body.split_index = Number(splitSelect.value);
    submit.disabled = true;
    try {
      const evaluation = await api(`/api/evaluation/${base}`, { method: "POST", json: body });
      onStarted(evaluation);
    } catch (error) {
      if (!showFieldErrors(form, error)) toast(errorText(error), "error");
    } finally {
      submit.disabled = false;
    }
  });
  if (!picker.hasRuns()) form.append(h("p", { class: "muted" }, "Train a run first: an evaluation needs a run's checkpoint."));
  return form;
}

function headline(summary, detail) {
  if (summary.accuracy !== null && summary.accuracy !== undefined) return `accuracy ${formatPercent(summary.accuracy)}`;
  if (detail && detail.metrics && detail.metrics.map !== undefined && detail.metrics.map !== null) {
    return `mAP ${formatNumber(detail.metrics.map)}`;
  }
  return "–";
}

function progressCell(item) {
  if (FINISHED.has(item.status)) return null;
  const { done = 0, total = 0 } = item.progress || {};
  return h("span", { class: "eval-progress" }, progressBar(total ? done : null, total, `Progress of ${item.id}`),
    h("span", { class: "muted" }, total ? `${done} / ${total} images` : "waiting…"));
}

async function renderList(view, projectId, query0, navigate) {
  const base = seg(projectId);
  const listBox = h("section", { "aria-labelledby": "evals-title" }, h("h2", { id: "evals-title" }, "Evaluations"));
  const progressBox = h("div", { "aria-live": "polite" });
  const listBody = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  listBox.append(listBody);
  replace(view, pageHeader("Evaluation"));
  const details = new Map();
  let stops = [];

  const drawList = (items) => {
    const columns = [
      { label: "Evaluation", value: (e) => h("a", { href: link(`/p/${projectId}/evaluation/${e.id}`) }, e.id) },
      { label: "Status", value: (e) => h("span", { class: "inline" }, statusBadge(e.status), progressCell(e),
        e.error ? h("span", { class: "error" }, e.error.message) : null) },
      { label: "Run", value: (e) => h("a", { href: link(`/p/${projectId}/runs/${e.run_id}`) }, e.run_id) },
      { label: "Checkpoint", value: (e) => e.checkpoint },
      { label: "Split / subset", value: (e) => `${e.split_index} / ${subsetText(e.split_subset)}` },
      { label: "Images", class: "num", value: (e) => formatNumber(e.num_images) },
      { label: "Headline metric", value: (e) => headline(e, details.get(e.id)) },
      { label: "Created", value: (e) => formatDate(e.created_at) },
      { label: "Actions", value: (e) => h("button", { type: "button", class: "danger", "aria-label": `Delete ${e.id}`,
        onclick: async () => {
          if (!(await confirmAction(`Delete evaluation ${e.id} and its per-image results?`))) return;
          try { await api(`/api/evaluation/${base}/${seg(e.id)}`, { method: "DELETE" }); toast(`Deleted ${e.id}`, "success"); refresh(); }
          catch (error) { toast(errorText(error), "error"); }
        } }, "Delete") },
    ];
    replace(listBody, table(columns, items, { empty: "No evaluation yet: start one above." }));
  };

  let listTimer = null;
  const refresh = async () => {
    clearTimeout(listTimer);
    try {
      const items = await api(`/api/evaluation/${base}`);
      // detection summaries carry no accuracy: their headline (mAP) comes from the record
      await Promise.all(items.filter((e) => e.status === "completed" && e.accuracy === null && !details.has(e.id))
        .slice(0, 20).map(async (e) => { try { details.set(e.id, await api(`/api/evaluation/${base}/${seg(e.id)}`)); } catch { /* shown as – */ } }));
      drawList(items);
      if (items.some((e) => !FINISHED.has(e.status))) listTimer = setTimeout(refresh, 1500);
    } catch (error) {
      replace(listBody, errorBox(error));
    }
  };

  const follow = (evaluation) => {
    const bar = progressBar(null, 1, "Evaluation progress");
    const text = h("p", {}, `Evaluation ${evaluation.id}: ${evaluation.status}`);
    replace(progressBox, h("div", { class: "card", role: "status" }, h("h2", {}, "Evaluating"), text, bar));
    refresh();
    stops.push(poll(() => api(`/api/evaluation/${base}/${seg(evaluation.id)}`), (record, error) => {
      if (error) { replace(text, errorText(error)); return; }
      const { done = 0, total = 0 } = record.progress || {};
      if (total) { bar.max = total; bar.value = done; }
      text.textContent = `Evaluation ${record.id}: ${record.status}${total ? ` · ${done} / ${total} images` : ""}`;
      if (record.status === "completed") navigate(`/p/${projectId}/evaluation/${record.id}`);
      else if (FINISHED.has(record.status)) {
        replace(progressBox, errorBox({ message: `Evaluation ${record.id} ${record.status}: ${record.error ? record.error.message : "no result"}` }));
        refresh();
      }
    }, { intervalMs: 600, done: (record) => Boolean(record) && FINISHED.has(record.status) }));
  };

  try {
    view.append(await createForm(projectId, query0.run || "", follow));
  } catch (error) {
    view.append(errorBox(error));
  }
  view.append(progressBox, listBox);
  await refresh();
  return () => { clearTimeout(listTimer); stops.forEach((stop) => stop()); stops = []; };
}

// --------------------------------------------------------------------------------------------- detail page

function stat(label, value, key) {
  return h("div", { class: "stat", dataset: { metric: key || label } }, h("span", { class: "muted" }, label), h("span", { class: "value" }, value));
}

function metricsSection(evaluation) {
  const m = evaluation.metrics;
  const stats = [];
  if (isDetection(evaluation)) {
    stats.push(stat("mAP@50:95", formatNumber(m.map), "map"), stat("mAP@50", formatNumber(m.map_50), "map_50"),
      stat("mAP@75", formatNumber(m.map_75), "map_75"), stat("Precision", formatPercent(m.precision), "precision"),
      stat("Recall", formatPercent(m.recall), "recall"),
      stat("Score / IoU threshold", `${formatNumber(m.score_threshold, 2)} / ${formatNumber(m.iou_threshold, 2)}`, "thresholds"));
  } else {
    stats.push(stat("Accuracy", formatPercent(m.accuracy), "accuracy"));
    if (m.top5_accuracy !== undefined && m.top5_accuracy !== null) stats.push(stat("Top-5 accuracy", formatPercent(m.top5_accuracy), "top5_accuracy"));
    if (m.loss !== undefined && m.loss !== null) stats.push(stat("Loss", formatNumber(m.loss), "loss"));
  }
  stats.push(stat("Images", formatNumber(m.num_images), "num_images"));
  const averages = [];
  for (const [name, values] of [["Macro", m.macro], ["Weighted", m.weighted]]) {
    if (values) averages.push({ name, ...values });
  }
  return h("section", { class: "card", "aria-labelledby": "metrics-title" }, h("h2", { id: "metrics-title" }, "Metrics"),
    h("div", { class: "stats" }, stats),
    averages.length ? table([
      { label: "Average", value: (a) => a.name },
      { label: "Precision", class: "num", value: (a) => formatNumber(a.precision) },
      { label: "Recall", class: "num", value: (a) => formatNumber(a.recall) },
      { label: "F1", class: "num", value: (a) => formatNumber(a.f1) },
    ], averages, { caption: "Averages over classes" }) : null);
}

function perClassSection(evaluation) {
  const m = evaluation.metrics;
  const perClass = m.per_class || {};
  const rows = Object.entries(perClass).map(([name, values]) => ({ name, ...values }));
  return h("section", { class: "card", "aria-labelledby": "per-class-title" }, h("h2", { id: "per-class-title" }, "Per class"),
    table([
      { label: "Class", value: (r) => r.name },
      { label: "Precision", class: "num", value: (r) => formatNumber(r.precision) },
      { label: "Recall", class: "num", value: (r) => formatNumber(r.recall) },
      { label: "F1", class: "num", value: (r) => formatNumber(r.f1) },
      { label: "AP", class: "num", value: (r) => formatNumber(r.ap) },
      { label: "Support", class: "num", value: (r) => formatNumber(r.support) },
    ], rows, { empty: "No per-class metrics." }));
}

/** Row-normalised heat map; each cell is a button that shows its images. */
function confusionSection(evaluation, onCell) {
  const { labels, matrix } = evaluation.metrics.confusion_matrix;
  const detection = isDetection(evaluation);
  const rowTotals = matrix.map((row) => row.reduce((a, b) => a + b, 0));
  const body = matrix.map((row, i) => h("tr", {},
    h("th", { scope: "row" }, labels[i]),
    row.map((count, j) => {
      const share = rowTotals[i] ? count / rowTotals[i] : 0;
      const button = h("button", {
        type: "button", class: `cm-cell${i === j ? " diagonal" : ""}`, disabled: count === 0,
        dataset: { true: labels[i], predicted: labels[j] },
        "aria-label": `${count} images of ${labels[i]} predicted as ${labels[j]} (${(share * 100).toFixed(0)} % of the row)`,
        onclick: () => onCell(labels[i], labels[j]),
      }, String(count));
      const cell = h("td", { class: "cm-td" }, button);
      cell.style.setProperty("--share", String(share));
      if (share > 0.55) cell.classList.add("dark-cell");
      return cell;
    })));
  const legendBar = h("span", { class: "cm-legend-bar", "aria-hidden": "true" });
  return h("section", { class: "card", "aria-labelledby": "cm-title" }, h("h2", { id: "cm-title" }, "Confusion matrix"),
    h("p", { class: "muted" }, detection
      ? "Rows: true boxes, columns: predicted boxes (background: a missed box or a false detection). Select a cell to see its images."
      : "Rows: true class, columns: predicted class. The number is the image count; the colour its share of the row. Select a cell to see its images."),
    h("div", { class: "table-wrap" }, h("table", { class: "confusion" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "true \\ predicted"), labels.map((l) => h("th", { scope: "col" }, l)))),
      h("tbody", {}, body))),
    h("p", { class: "cm-legend muted" }, "0 %", legendBar, "100 % of the true class"));
}

function prCurvesSection(evaluation) {
  const curves = evaluation.metrics.curves;
  const section = h("section", { class: "card", "aria-labelledby": "pr-title" }, h("h2", { id: "pr-title" }, "Precision-recall curves"));
  if (!curves || !Object.keys(curves).length) {
    section.append(h("p", { class: "muted" }, isDetection(evaluation)
      ? "The evaluation computes no PR curves for object detection; the per-class AP is in the table above."
      : "This evaluation has no curves."));
    return section;
  }
  const size = 300;
  const pad = 36;
  const scale = (v, flip) => (flip ? size - pad - v * (size - 2 * pad) : pad + v * (size - 2 * pad));
  const plot = svg("svg", { viewBox: `0 0 ${size} ${size}`, class: "pr-chart", role: "img", "aria-label": "Precision (y) against recall (x), one line per class" });
  plot.append(svg("rect", { x: pad, y: pad, width: size - 2 * pad, height: size - 2 * pad, class: "pr-frame" }));
  for (const tick of [0, 0.5, 1]) {
    plot.append(svg("text", { x: scale(tick), y: size - pad + 14, class: "pr-tick", "text-anchor": "middle" }, tick),
      svg("text", { x: pad - 6, y: scale(tick, true) + 4, class: "pr-tick", "text-anchor": "end" }, tick));
  }
  plot.append(svg("text", { x: size / 2, y: size - 4, class: "pr-axis", "text-anchor": "middle" }, "recall"),
    svg("text", { x: 12, y: size / 2, class: "pr-axis", "text-anchor": "middle", transform: `rotate(-90 12 ${size / 2})` }, "precision"));
  const legend = h("ul", { class: "pr-legend" });
  Object.entries(curves).forEach(([name, curve], index) => {
    const { precision = [], recall = [] } = curve.pr || {};
    const points = recall.map((r, i) => [r, precision[i]]).filter(([r, p]) => r !== null && p !== null);
    const color = PALETTE[index % PALETTE.length];
    const line = svg("polyline", { points: points.map(([r, p]) => `${scale(r).toFixed(1)},${scale(p, true).toFixed(1)}`).join(" "),
      class: "pr-line", stroke: color });
    line.setAttribute("data-class", name);
    plot.append(line);
    const ap = evaluation.metrics.per_class && evaluation.metrics.per_class[name] ? evaluation.metrics.per_class[name].ap : null;
    const swatch = h("span", { class: "swatch", "aria-hidden": "true" });
    swatch.style.setProperty("background", color);
    legend.append(h("li", {}, swatch, `${name}${ap !== null && ap !== undefined ? ` (AP ${formatNumber(ap)})` : ""}`));
  });
  section.append(h("div", { class: "pr-wrap" }, plot, legend));
  return section;
}

function resultsPath(projectId, evalId, params) {
  return `/api/evaluation/${seg(projectId)}/${seg(evalId)}/results${query(params)}`;
}

function imageTile(projectId, item, detection, signal) {
  const holder = h("div", { class: "tile-image" }, h("div", { class: "placeholder" }));
  const path = detection ? `/api/datasets/${seg(projectId)}/images/${seg(item.filename)}` : `/api/datasets/${seg(projectId)}/thumbnails/${seg(item.filename)}`;
  imageUrl(path, { signal }).then((url) => {
    if (detection) {
      replace(holder, boxedImage(url, [
        { kind: "truth", boxes: item.ground_truth.map((b) => ({ bbox: b.bbox, label: b.class_name })) },
        { kind: "predicted", boxes: item.predictions.map((b) => ({ bbox: b.bbox, label: `${b.class_name} ${formatNumber(b.score, 2)}` })) },
      ], { alt: item.filename }));
    } else {
      replace(holder, h("img", { src: url, alt: item.filename }));
    }
  }).catch((error) => { if (error.name !== "AbortError") replace(holder, h("p", { class: "error" }, errorText(error))); });
  return holder;
}

async function mistakesSection(projectId, evaluation, signal) {
  const detection = isDetection(evaluation);
  const section = h("section", { class: "card", "aria-labelledby": "mistakes-title" },
    h("h2", { id: "mistakes-title" }, "Worst mistakes"),
    h("p", { class: "muted" }, detection ? "Images with the most errors (false and missed boxes)." : "Wrong predictions, most confident first."));
  try {
    const page = await api(resultsPath(projectId, evaluation.id, { filter_correct: false, sort_by: detection ? "error" : "confidence", page: 1, page_size: 12 }), { signal });
    if (!page.items.length) { section.append(h("p", { class: "muted" }, "No mistakes in this evaluation.")); return section; }
    if (detection) section.append(boxLegend());
    section.append(h("ul", { class: "thumb-grid mistakes" }, page.items.map((item) => h("li", { class: "thumb mistake", dataset: { filename: item.filename } },
      imageTile(projectId, item, detection, signal),
      h("span", { class: "name", title: item.filename }, item.filename),
      detection
        ? h("span", {}, `${item.tp} TP · ${item.fp} FP · ${item.fn} missed`)
        : [h("span", { class: "predicted" }, `predicted ${item.prediction.class_name} (${formatPercent(item.prediction.confidence)})`),
          h("span", { class: "truth" }, `true ${item.ground_truth.class_name}`)]))));
  } catch (error) {
    section.append(errorBox(error));
  }
  return section;
}

/** The per-image results with filters, sort and paging; `state` is kept in the URL. */
function resultsSection(projectId, evaluation, state, signal) {
  const detection = isDetection(evaluation);
  const labels = evaluation.metrics.confusion_matrix.labels;
  const classes = evaluation.classes || labels;
  const correct = h("select", { name: "filter_correct" },
    h("option", { value: "" }, "All"), h("option", { value: "true" }, "Correct only"), h("option", { value: "false" }, "Errors only"));
  const trueClass = h("select", { name: "filter_class" }, h("option", { value: "" }, "Any"), classes.map((c) => h("option", { value: c }, c)));
  const predicted = h("select", { name: "filter_predicted" }, h("option", { value: "" }, "Any"), classes.map((c) => h("option", { value: c }, c)));
  const sort = h("select", { name: "sort_by" }, [["filename", "Filename"], ["confidence", "Confidence"], ["error", detection ? "Errors" : "Loss"]]
    .map(([value, text]) => h("option", { value }, text)));
  const body = h("div", { "aria-live": "polite" });
  const pager = h("div", { class: "actions pager" });
  const heading = h("h2", { id: "results-title", tabindex: "-1" }, "Per-image results");
  const section = h("section", { class: "card", "aria-labelledby": "results-title", id: "results" }, heading,
    h("form", { class: "form-grid results-filters", onsubmit: (e) => e.preventDefault() },
      field("Correct", correct), field("True class", trueClass), field("Predicted class", predicted), field("Sort by", sort)),
    body, pager);
  const setControls = () => {
    correct.value = state.correct || ""; trueClass.value = state.class || ""; predicted.value = state.predicted || ""; sort.value = state.sort || "filename";
  };
  let controller = null;
  const load = async () => {
    setQuery(Object.fromEntries(Object.entries(state).filter(([, v]) => v !== "" && v !== undefined && v !== null)));
    if (controller) controller.abort();
    controller = new AbortController();
    const mine = controller;
    signal.addEventListener("abort", () => mine.abort(), { once: true });
    replace(body, h("p", { class: "muted", "aria-busy": "true" }, "Loading…"));
    try {
      const page = await api(resultsPath(projectId, evaluation.id, {
        page: state.page || 1, page_size: 25, sort_by: state.sort || "filename", filter_correct: state.correct,
        filter_class: state.class, filter_predicted: state.predicted,
      }), { signal: mine.signal });
      const columns = [
        { label: "Image", value: (r) => h("div", { class: "row-thumb" }, imageTile(projectId, r, false, mine.signal)) },
        { label: "Filename", value: (r) => r.filename },
      ];
      if (detection) {
        columns.push(
          { label: "True boxes", value: (r) => r.ground_truth.map((b) => b.class_name).join(", ") || "–", class: "truth" },
          { label: "Predicted boxes", value: (r) => r.predictions.map((b) => `${b.class_name} ${formatNumber(b.score, 2)}`).join(", ") || "–", class: "predicted" },
          { label: "TP / FP / missed", class: "num", value: (r) => `${r.tp} / ${r.fp} / ${r.fn}` });
      } else {
        columns.push(
          { label: "True", value: (r) => r.ground_truth.class_name, class: "truth" },
          { label: "Predicted", value: (r) => r.prediction.class_name, class: "predicted" },
          { label: "Confidence", class: "num", value: (r) => formatPercent(r.prediction.confidence) },
          { label: "Loss", class: "num", value: (r) => formatNumber(r.loss) });
      }
      columns.push({ label: "Correct", value: (r) => h("span", { class: `badge ${r.correct ? "status-completed" : "status-failed"}` }, r.correct ? "correct" : "wrong") });
      replace(body, h("p", { class: "muted results-count" }, `${page.total} image${page.total === 1 ? "" : "s"}`),
        table(columns, page.items, { empty: "No image matches these filters." }));
      const current = page.page;
      replace(pager,
        h("button", { type: "button", disabled: current <= 1, onclick: () => { state.page = current - 1; load(); } }, "Previous"),
        h("span", {}, `Page ${current} of ${Math.max(1, page.pages)}`),
        h("button", { type: "button", disabled: current >= page.pages, onclick: () => { state.page = current + 1; load(); } }, "Next"));
    } catch (error) {
      if (error.name !== "AbortError") replace(body, errorBox(error));
    }
  };
  for (const [control, key] of [[correct, "correct"], [trueClass, "class"], [predicted, "predicted"], [sort, "sort"]]) {
    control.addEventListener("change", () => { state[key] = control.value; state.page = 1; load(); });
  }
  setControls();
  load();
  return {
    element: section,
    show(trueLabel, predictedLabel) {
      // detection's background row/column is not a class: it means "missed" or "false detection", i.e. errors
      const background = detection && (trueLabel === "background" || predictedLabel === "background");
      Object.assign(state, {
        class: trueLabel === "background" ? "" : trueLabel, predicted: predictedLabel === "background" ? "" : predictedLabel,
        correct: background ? "false" : "", page: 1,
      });
      setControls();
      load().then(() => { section.scrollIntoView({ block: "start" }); heading.focus({ preventScroll: true }); });
    },
  };
}

async function renderDetail(view, projectId, evalId, query0, navigate) {
  const base = seg(projectId);
  const controller = new AbortController();
  let stopPoll = null;
  const back = h("a", { href: link(`/p/${projectId}/evaluation`), class: "button" }, "All evaluations");
  replace(view, pageHeader(`Evaluation ${evalId}`, back));
  const content = h("div", { class: "eval-detail" });
  view.append(content);

  const full = async (evaluation) => {
    const detection = isDetection(evaluation);
    const state = { correct: query0.correct || "", class: query0.class || "", predicted: query0.predicted || "", sort: query0.sort || "filename", page: Number(query0.page) || 1 };
    const results = resultsSection(projectId, evaluation, state, controller.signal);
    replace(content,
      summaryCard(projectId, evaluation),
      h("div", { class: "eval-grid" },
        metricsSection(evaluation),
        confusionSection(evaluation, (t, p) => results.show(t, p)),
        perClassSection(evaluation),
        prCurvesSection(evaluation)));
    const mistakes = await mistakesSection(projectId, evaluation, controller.signal);
    content.append(mistakes, results.element);
    if (detection) content.dataset.task = "object_detection";
  };

  const evaluation = await api(`/api/evaluation/${base}/${seg(evalId)}?include=curves`);
  if (evaluation.status === "completed") {
    await full(evaluation);
  } else {
    const bar = progressBar(null, 1, "Evaluation progress");
    const text = h("p", {}, evaluation.status);
    replace(content, summaryCard(projectId, evaluation), h("div", { class: "card", role: "status" }, h("h2", {}, "Progress"), text, bar));
    stopPoll = poll(() => api(`/api/evaluation/${base}/${seg(evalId)}?include=curves`), (record, error) => {
      if (error) { replace(text, errorText(error)); return; }
      const { done = 0, total = 0 } = record.progress || {};
      if (total) { bar.max = total; bar.value = done; }
      text.textContent = `${record.status}${total ? ` · ${done} / ${total} images` : ""}${record.waiting_reason ? ` · ${record.waiting_reason}` : ""}`;
      if (record.status === "completed") full(record);
      else if (FINISHED.has(record.status)) replace(content, summaryCard(projectId, record));
    }, { intervalMs: 800, done: (record) => Boolean(record) && FINISHED.has(record.status) });
  }
  return () => { controller.abort(); if (stopPoll) stopPoll(); };
}

function summaryCard(projectId, evaluation) {
  return h("section", { class: "card eval-summary", "aria-label": "Evaluation summary" },
    h("dl", { class: "facts" },
      h("dt", {}, "Status"), h("dd", {}, statusBadge(evaluation.status)),
      h("dt", {}, "Run"), h("dd", {}, h("a", { href: link(`/p/${projectId}/runs/${evaluation.run_id}`) }, evaluation.run_id), ` · ${evaluation.checkpoint} checkpoint`),
      h("dt", {}, "Split"), h("dd", {}, `${evaluation.split_name} (${evaluation.split_index}) · ${subsetText(evaluation.split_subset)}`),
      h("dt", {}, "Images"), h("dd", {}, `${formatNumber(evaluation.num_images)}${evaluation.skipped ? ` (${evaluation.skipped} skipped)` : ""}`),
      h("dt", {}, "Finished"), h("dd", {}, formatDate(evaluation.finished_at))),
    evaluation.error ? errorBox({ message: `${evaluation.error.type}: ${evaluation.error.message}` }) : null);
}

export async function render(view, { params, query: query0, navigate }) {
  useStylesheet("evaluation");
  if (params.evaluation) return renderDetail(view, params.project, params.evaluation, query0, navigate);
  return renderList(view, params.project, query0, navigate);
}
