// Predict: load a model (a run's checkpoint or a completed export), list the loaded models, choose the default,
// unload; drop or pick images and see each one's top-k classes as bars or its boxes drawn over it, with an optional
// Grad-CAM heat map over the image. Per-image errors are shown in place.

import { api, seg, upload } from "../api.js";
import {
  errorBox, errorText, field, formatBytes, formatNumber, formatPercent, h, pageHeader, replace, showFieldErrors,
  table, toast, useStylesheet,
} from "../dom.js";
import { boxedImage, boxLegend } from "../boxes.js";
import { runPicker } from "../run_picker.js";

function sourceText(model) {
  const s = model.source || {};
  return s.kind === "export" ? `export ${s.export_id} (${s.format}) of ${s.run_id}` : `${s.run_id} · ${s.checkpoint} checkpoint`;
}

export async function render(view, { params }) {
  useStylesheet("predict");
  const projectId = params.project;
  const base = seg(projectId);
  replace(view, pageHeader("Predict"));
  const objectUrls = [];

  const [picker, exports] = await Promise.all([runPicker(projectId), api(`/api/export/${base}`).catch(() => [])]);
  let models = [];

  // ---- load a model
  const loadCheckpoint = h("button", { type: "submit", class: "primary" }, "Load checkpoint");
  const checkpointForm = h("form", { class: "load-form", "aria-label": "Load a run's checkpoint", novalidate: true },
    h("h3", {}, "From a run's checkpoint (PyTorch)"), picker.element, loadCheckpoint);
  const completed = exports.filter((e) => e.status === "completed" && e.file);
  const exportSelect = h("select", { name: "export_id" }, completed.length
    ? completed.map((e) => h("option", { value: e.id }, `${e.id} · ${e.format} of ${e.run_id}${e.verification && !e.verification.passed ? " (verification failed)" : ""}`))
    : h("option", { value: "" }, "No completed export"));
  const loadExport = h("button", { type: "submit", class: "primary", disabled: !completed.length }, "Load export");
  const exportForm = h("form", { class: "load-form", "aria-label": "Load an export", novalidate: true },
    h("h3", {}, "From an export"), h("div", { class: "form-grid" }, field("Export", exportSelect)), loadExport);
  const modelsBody = h("div", {});

  const loadModel = async (form, button, body) => {
    showFieldErrors(form, null);
    button.disabled = true;
    const label = button.textContent;
    button.textContent = "Loading…";
    try {
      const model = await api(`/api/predict/${base}/models`, { method: "POST", json: body });
      toast(`Loaded ${model.id}`, "success");
      await refreshModels(model.id);
    } catch (error) {
      if (!showFieldErrors(form, error)) toast(errorText(error), "error");
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  };
  checkpointForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const { run_id: runId, checkpoint } = picker.value();
    loadModel(checkpointForm, loadCheckpoint, { run_id: runId, checkpoint });
  });
  exportForm.addEventListener("submit", (event) => {
    event.preventDefault();
    loadModel(exportForm, loadExport, { export_id: exportSelect.value });
  });

  // ---- predict
  const modelSelect = h("select", { name: "model", class: "model-select" });
  const topK = h("input", { type: "number", name: "top_k", min: 1, max: 1000, value: "5" });
  const threshold = h("input", { type: "number", name: "score_threshold", min: 0, max: 1, step: "0.05", value: "", placeholder: "the model's" });
  const explain = h("input", { type: "checkbox", name: "explain" });
  const fileInput = h("input", { type: "file", name: "files", multiple: true, accept: "image/*" });
  const dropZone = h("div", { class: "drop-zone" },
    h("p", {}, "Drop images here, or choose them:"), field("Images", fileInput));
  const progress = h("div", { "aria-live": "polite", class: "predict-status" });
  const results = h("div", { class: "predictions" });
  const explainField = field("Explain (Grad-CAM heat map)", explain, "Classification with a checkpoint model only.");
  explainField.classList.add("checkbox-field");
  const taskControls = h("div", { class: "form-grid" }, field("Model", modelSelect), field("Top k classes", topK, "Classification"),
    field("Score threshold", threshold, "Detection: empty keeps the model's"), explainField);
  const predictForm = h("form", { class: "card", "aria-labelledby": "predict-title", novalidate: true, onsubmit: (e) => e.preventDefault() },
    h("h2", { id: "predict-title" }, "Predict"), taskControls, dropZone, progress);

  const currentModel = () => models.find((m) => m.id === modelSelect.value);
  const syncControls = () => {
    const model = currentModel();
    const detection = model && model.task === "object_detection";
    topK.closest(".field").hidden = Boolean(detection);
    threshold.closest(".field").hidden = !detection;
    explain.closest(".field").hidden = Boolean(detection);
    fileInput.disabled = !model;
  };
  modelSelect.addEventListener("change", syncControls);

  const refreshModels = async (select) => {
    try {
      models = await api(`/api/predict/${base}/models`);
    } catch (error) {
      replace(modelsBody, errorBox(error));
      return;
    }
    const previous = select || modelSelect.value;
    replace(modelSelect, models.length ? models.map((m) => h("option", { value: m.id }, `${m.id}${m.is_default ? " (default)" : ""} · ${sourceText(m)}`))
      : h("option", { value: "" }, "Load a model first"));
    const fallback = models.find((m) => m.is_default) || models[0];
    modelSelect.value = models.some((m) => m.id === previous) ? previous : (fallback ? fallback.id : "");
    syncControls();
    replace(modelsBody, table([
      { label: "Model", value: (m) => h("span", {}, m.id, " ", m.is_default ? h("span", { class: "badge status-completed" }, "default") : null) },
      { label: "Source", value: sourceText },
      { label: "Task", value: (m) => m.task },
      { label: "Runtime", value: (m) => `${m.runtime} on ${m.device}` },
      { label: "Classes", class: "num", value: (m) => formatNumber(m.classes.length) },
      { label: "Memory", class: "num", value: (m) => formatBytes(m.memory_bytes) },
      { label: "Images", class: "num", value: (m) => formatNumber(m.images) },
      { label: "Actions", value: (m) => h("span", { class: "actions" },
        h("button", { type: "button", disabled: m.is_default, "aria-label": `Make ${m.id} the default`, onclick: async () => {
          try { await api(`/api/predict/${base}/default`, { method: "PUT", json: { model_id: m.id } }); toast(`${m.id} is the default`, "success"); refreshModels(); }
          catch (error) { toast(errorText(error), "error"); }
        } }, "Make default"),
        h("button", { type: "button", "aria-label": `Unload ${m.id}`, onclick: async () => {
          try { await api(`/api/predict/${base}/models/${seg(m.id)}`, { method: "DELETE" }); toast(`Unloaded ${m.id}`, "success"); refreshModels(); }
          catch (error) { toast(errorText(error), "error"); }
        } }, "Unload")) },
    ], models, { empty: "No model loaded." }));
  };

  const showResult = (file, url, result, task) => {
    const card = h("article", { class: "card prediction", dataset: { filename: file.name } }, h("h3", { class: "name", title: file.name }, file.name));
    if (result.error) {
      card.append(h("img", { src: url, alt: file.name, class: "preview" }),
        h("p", { class: "error", role: "alert" }, `${result.error.message} (${result.error.code})`));
      return card;
    }
    if (task === "object_detection") {
      card.append(boxedImage(url, [{ kind: "predicted", boxes: result.predictions.map((b) => ({ bbox: b.bbox, label: `${b.class_name} ${formatNumber(b.score, 2)}` })) }],
        { alt: file.name, width: result.width, height: result.height }),
      h("p", { class: "muted box-count" }, `${result.predictions.length} box${result.predictions.length === 1 ? "" : "es"}`),
      result.predictions.length ? table([
        { label: "Class", value: (b) => b.class_name, class: "class-name" },
        { label: "Score", class: "num", value: (b) => formatPercent(b.score) },
        { label: "Box (x, y, w, h)", value: (b) => b.bbox.map((v) => Math.round(v)).join(", ") },
      ], result.predictions) : null);
      return card;
    }
    const picture = h("div", { class: "explained" }, h("img", { src: url, alt: file.name, class: "preview" }));
    if (result.explanation) {
      const heat = h("img", { class: "heatmap", alt: `Grad-CAM heat map for ${result.explanation.class_name}`,
        src: `data:${result.explanation.media_type};base64,${result.explanation.png_base64}` });
      const toggle = h("input", { type: "checkbox", checked: true, "aria-label": `Show the heat map over ${file.name}` });
      toggle.addEventListener("change", () => { heat.hidden = !toggle.checked; });
      picture.append(heat);
      card.append(picture, h("label", { class: "inline heat-toggle" }, toggle, `Grad-CAM of ${result.explanation.class_name} (layer ${result.explanation.layer})`));
    } else {
      card.append(picture);
    }
    card.append(h("ol", { class: "bars" }, result.predictions.map((p) => {
      const fill = h("span", { class: "bar-fill" });
      fill.style.width = `${Math.max(0, Math.min(1, p.confidence)) * 100}%`;
      return h("li", { class: "bar" }, h("span", { class: "class-name" }, p.class_name),
        h("span", { class: "bar-track", role: "img", "aria-label": `${p.class_name}: ${formatPercent(p.confidence)}` }, fill),
        h("span", { class: "bar-value" }, formatPercent(p.confidence)));
    })));
    return card;
  };

  const predict = async (files) => {
    const model = currentModel();
    if (!model) { toast("Load a model first", "error"); return; }
    const images = [...files];
    if (!images.length) return;
    showFieldErrors(predictForm, null);
    const data = new FormData();
    for (const file of images) data.append("files", file, file.name);
    const detection = model.task === "object_detection";
    if (!detection && topK.value) data.append("top_k", topK.value);
    if (detection && threshold.value !== "") data.append("score_threshold", threshold.value);
    const explainIt = explain.checked && !detection;
    const bar = h("progress", { max: 1, value: 0, "aria-label": "Upload progress" });
    replace(progress, h("p", {}, `Sending ${images.length} image${images.length === 1 ? "" : "s"} to ${model.id}…`), bar);
    try {
      const answer = await upload(`/api/predict/${base}/models/${seg(model.id)}${explainIt ? "?explain=gradcam" : ""}`, data,
        (loaded, total) => { bar.max = total || 1; bar.value = loaded; });
      objectUrls.splice(0).forEach((u) => URL.revokeObjectURL(u));
      const cards = answer.results.map((result, index) => {
        const url = URL.createObjectURL(images[index]);
        objectUrls.push(url);
        return showResult(images[index], url, result, answer.task);
      });
      replace(progress, h("p", { class: "muted" }, `${answer.results.length} answered by ${answer.model_id}.`));
      replace(results, answer.task === "object_detection" ? boxLegend(null, "predicted box") : null, h("div", { class: "prediction-grid" }, cards));
    } catch (error) {
      replace(progress, errorBox(error));
      showFieldErrors(predictForm, error);
    } finally {
      fileInput.value = "";
    }
  };
  fileInput.addEventListener("change", () => predict(fileInput.files));
  dropZone.addEventListener("dragover", (event) => { event.preventDefault(); dropZone.classList.add("dragging"); });
  dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
  dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    dropZone.classList.remove("dragging");
    predict(event.dataTransfer.files);
  });

  view.append(
    h("section", { class: "card", "aria-labelledby": "load-title" }, h("h2", { id: "load-title" }, "Load a model"),
      h("div", { class: "load-forms" }, checkpointForm, exportForm)),
    h("section", { class: "card", "aria-labelledby": "models-title" }, h("h2", { id: "models-title" }, "Loaded models"), modelsBody),
    predictForm, results);
  await refreshModels();
  return () => { objectUrls.forEach((u) => URL.revokeObjectURL(u)); };
}

