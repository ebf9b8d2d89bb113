// Splits: the dataset's splits with their stats (per-class distribution on demand), delete, and a create form
// whose ratio sliders drive a live preview (GET /api/splits/{id}/preview, debounced) drawn as per-class bars.

import { api, query as qs, seg } from "../api.js";
import { link } from "../app.js";
import {
  confirmAction, errorBox, errorText, field, formatNumber, h, pageHeader, replace, showFieldErrors, toast,
  useStylesheet,
} from "../dom.js";

const SUBSETS = ["train", "val", "test", "none"];
const SUBSET_LABELS = { train: "train", val: "val", test: "test", none: "unassigned" };
const RATIOS = ["train", "val", "test"];
const DEFAULT_PERCENT = { train: 80, val: 10, test: 10 };
const PREVIEW_DEBOUNCE_MS = 250;

function total(stats) {
  return SUBSETS.reduce((sum, key) => sum + Number(stats[key] || 0), 0);
}

/** One stacked bar (train/val/test/none segments) with its counts as text. */
function stackRow(label, stats, key) {
  const all = total(stats);
  const bar = h("div", { class: "stack", role: "img", "aria-label": `${label}: ${SUBSETS.map((s) => `${SUBSET_LABELS[s]} ${stats[s] || 0}`).join(", ")}` });
  for (const subset of SUBSETS) {
    const count = Number(stats[subset] || 0);
    if (!count) continue;
    const segment = h("span", { class: `segment ${subset}`, title: `${SUBSET_LABELS[subset]}: ${count}` });
    segment.style.width = `${(100 * count) / Math.max(1, all)}%`;
    bar.append(segment);
  }
  const counts = h("span", { class: "counts" }, SUBSETS.filter((s) => s !== "none" || stats.none).map((subset) =>
    h("span", { class: `count ${subset}`, dataset: { subset } }, `${SUBSET_LABELS[subset]} `, h("b", {}, formatNumber(Number(stats[subset] || 0))))));
  return h("li", { class: `dist-row${key === "" ? " total" : ""}`, dataset: { class: key } },
    h("span", { class: "dist-label" }, label), bar, counts);
}

/** Per-class distribution: a legend, one bar for all images, one per class. */
function distribution(stats, perClass) {
  return h("div", { class: "distribution" },
    h("ul", { class: "legend", "aria-label": "Legend" }, SUBSETS.map((subset) =>
      h("li", {}, h("span", { class: `swatch ${subset}`, "aria-hidden": "true" }), SUBSET_LABELS[subset]))),
    h("ul", { class: "dist-rows" }, stackRow("All images", stats, ""),
      Object.entries(perClass || {}).map(([name, classStats]) => stackRow(name, classStats, name))));
}

export async function render(view, { params }) {
  useStylesheet("splits");
  const projectId = params.project;
  const base = `/api/splits/${seg(projectId)}`;
  let disposed = false;
  const listSection = h("section", { class: "split-list", "aria-labelledby": "split-list-title" },
    h("h2", { id: "split-list-title" }, "Current splits"), h("p", { class: "muted", "aria-busy": "true" }, "Loading…"));

  // -- the list -------------------------------------------------------------------------------------------------
  async function loadList() {
    let splits;
    try {
      splits = await api(base);
    } catch (error) {
      if (!disposed) replace(listSection, h("h2", { id: "split-list-title" }, "Current splits"), errorBox(error));
      return;
    }
    if (disposed) return;
    if (!splits.length) {
      replace(listSection, h("h2", { id: "split-list-title" }, "Current splits"),
        h("p", { class: "muted empty" }, "No splits yet: create one below. Training needs a split to tell train, validation and test images apart."));
      return;
    }
    const rows = splits.flatMap((split) => splitRows(split));
    replace(listSection, h("h2", { id: "split-list-title" }, "Current splits"),
      h("div", { class: "table-wrap" }, h("table", { class: "splits-table" },
        h("thead", {}, h("tr", {},
          h("th", { scope: "col", class: "idx" }, "#"), h("th", { scope: "col" }, "Name"),
          SUBSETS.map((subset) => h("th", { scope: "col", class: "num" }, subset === "none"
            ? [h("span", { class: "long" }, "Unassigned"), h("span", { class: "short", "aria-hidden": "true" }, "none")] : subset)),
          h("th", { scope: "col" }, "Actions"))),
        h("tbody", {}, rows))));
  }

  function splitRows(split) {
    const detailId = `split-detail-${split.split_index}`;
    const detailCell = h("td", { colspan: 7 });
    const detailRow = h("tr", { class: "split-detail", id: detailId, hidden: true }, detailCell);
    const toggle = h("button", { type: "button", "aria-expanded": "false", "aria-controls": detailId, "aria-label": `Per-class distribution of ${split.name}` }, "Per class");
    toggle.addEventListener("click", async () => {
      const open = toggle.getAttribute("aria-expanded") === "true";
      toggle.setAttribute("aria-expanded", String(!open));
      detailRow.hidden = open;
      if (open || detailCell.dataset.loaded) return;
      replace(detailCell, h("p", { class: "muted", "aria-busy": "true" }, "Loading…"));
      try {
        const detail = await api(`${base}/${split.split_index}`);
        if (disposed) return;
        replace(detailCell, distribution(detail.stats, detail.per_class));
        detailCell.dataset.loaded = "true";
      } catch (error) {
        if (!disposed) replace(detailCell, errorBox(error));
      }
    });
    const remove = h("button", { type: "button", class: "danger", "aria-label": `Delete ${split.name}`, onclick: () => deleteSplit(split) }, "Delete");
    const row = h("tr", { class: "split-row", dataset: { splitIndex: String(split.split_index), name: split.name } },
      h("td", { class: "num idx" }, String(split.split_index)),
      h("th", { scope: "row" }, split.name),
      SUBSETS.map((subset) => h("td", { class: "num", dataset: { subset } }, formatNumber(split.stats[subset] || 0))),
      h("td", {}, h("div", { class: "actions" }, toggle, remove)));
    return [row, detailRow];
  }

  async function deleteSplit(split) {
    const message = `Delete the split “${split.name}”? Later splits move down by one (experiments on them follow); runs that used it keep their frozen copy.`;
    if (!(await confirmAction(message))) return;
    try {
      await api(`${base}/${split.split_index}`, { method: "DELETE" });
      toast(`Deleted the split ${split.name}`, "success");
      await loadList();
    } catch (error) {
      toast(errorText(error), "error");
    }
  }

  // -- the create form with its live preview ----------------------------------------------------------------------
  const percent = { ...DEFAULT_PERCENT };
  const sliders = {};
  const readouts = {};
  const sliderFields = RATIOS.map((key) => {
    const slider = h("input", { type: "range", name: `ratios.${key}`, min: key === "train" ? 1 : 0, max: 100, step: 1, value: percent[key], id: `ratio-${key}` });
    const readout = h("output", { for: slider.id, class: "readout" });
    sliders[key] = slider;
    readouts[key] = readout;
    slider.addEventListener("input", () => setShare(key, Number(slider.value)));
    const wrapper = field(`${key === "val" ? "Validation" : key === "train" ? "Training" : "Test"} share`, slider);
    wrapper.classList.add("ratio-field");
    wrapper.querySelector("label").after(readout);
    return wrapper;
  });
  const unassigned = h("p", { class: "unassigned", "aria-live": "polite" });
  const name = h("input", { name: "name", autocomplete: "off", maxLength: 100, required: true, placeholder: "80-10-10" });
  const seed = h("input", { type: "number", name: "seed", min: 0, step: 1, value: 42, inputMode: "numeric" });
  const stratified = h("input", { type: "checkbox", name: "stratified", id: "split-stratified", checked: true });
  const submit = h("button", { type: "submit", class: "primary" }, "Create split");
  const preview = h("div", { class: "preview", "aria-live": "polite" });
  const form = h("form", { class: "card create-split", "aria-labelledby": "create-split-title", novalidate: true },
    h("h2", { id: "create-split-title" }, "New split"),
    h("div", { class: "create-grid" },
      h("div", { class: "create-fields" },
        field("Name", name),
        h("fieldset", { class: "ratios" }, h("legend", {}, "Shares of each class"), sliderFields, unassigned),
        h("div", { class: "form-grid" },
          field("Seed", seed, "The same seed gives the same split."),
          h("div", { class: "field inline stratified" }, stratified, h("label", { for: "split-stratified" }, "Stratified (keep class proportions in each subset)"))),
        submit),
      h("section", { class: "preview-section", "aria-labelledby": "preview-title" },
        h("h3", { id: "preview-title" }, "Preview"), preview)));

  /** Move one slider; the others give way so the shares never sum above 100 %. */
  function setShare(key, value) {
    percent[key] = value;
    let over = RATIOS.reduce((sum, k) => sum + percent[k], 0) - 100;
    const giveWay = { train: ["test", "val"], val: ["test", "train"], test: ["val", "train"] }[key];
    for (const other of giveWay) {
      if (over <= 0) break;
      const floor = other === "train" ? 1 : 0;
      const take = Math.min(over, percent[other] - floor);
      percent[other] -= take;
      over -= take;
    }
    if (over > 0) percent[key] -= over; // the others are at their floor: this one stops where the total is 100 %
    showShares();
    schedulePreview();
  }

  function showShares() {
    for (const key of RATIOS) {
      sliders[key].value = String(percent[key]);
      readouts[key].value = `${percent[key]} %`;
      readouts[key].textContent = `${percent[key]} %`;
    }
    const rest = 100 - RATIOS.reduce((sum, k) => sum + percent[k], 0);
    unassigned.textContent = rest > 0 ? `Unassigned: ${rest} % (these images get “none” in this split)` : "Every image is assigned.";
    unassigned.classList.toggle("has-rest", rest > 0);
  }

  const shares = () => Object.fromEntries(RATIOS.map((key) => [key, percent[key] / 100]));
  let previewTimer = null;
  let previewController = null;
  let previewCount = 0;
  function schedulePreview() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(loadPreview, PREVIEW_DEBOUNCE_MS);
  }

  async function loadPreview() {
    if (previewController) previewController.abort();
    const controller = new AbortController();
    previewController = controller;
    preview.setAttribute("aria-busy", "true");
    const seedValue = Number.parseInt(seed.value, 10);
    const params = { ...shares(), seed: Number.isFinite(seedValue) && seedValue >= 0 ? seedValue : 42, stratified: stratified.checked };
    try {
      const result = await api(`${base}/preview${qs(params)}`, { signal: controller.signal });
      if (disposed || controller !== previewController) return;
      previewCount += 1;
      if (!total(result.stats)) {
        replace(preview, h("p", { class: "muted empty" }, "The dataset has no images yet, so there is nothing to split. ",
          h("a", { href: link(`/p/${seg(projectId)}/dataset`) }, "Import images on the dataset page")));
        preview.dataset.version = String(previewCount);
        return;
      }
      replace(preview, distribution(result.stats, result.per_class),
        result.warnings.length ? h("ul", { class: "warnings" }, result.warnings.map((warning) => h("li", {}, warning))) : null);
      preview.dataset.version = String(previewCount); // tests wait for a new preview
    } catch (error) {
      if (error.name === "AbortError" || disposed || controller !== previewController) return;
      replace(preview, errorBox(error),
        error.status === 409 ? h("p", {}, h("a", { href: link(`/p/${seg(projectId)}/dataset`) }, "Import images on the dataset page")) : null);
    } finally {
      if (controller === previewController) preview.removeAttribute("aria-busy");
    }
  }

  seed.addEventListener("input", schedulePreview);
  stratified.addEventListener("change", schedulePreview);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showFieldErrors(form, null);
    submit.disabled = true;
    const seedValue = seed.value.trim() === "" ? 42 : Number(seed.value);
    try {
      const created = await api(base, {
        method: "POST",
        json: { name: name.value, ratios: shares(), seed: seedValue, stratified: stratified.checked },
      });
      toast(`Created the split ${created.name}: ${created.stats.train} train, ${created.stats.val} val, ${created.stats.test} test`, "success");
      for (const warning of created.warnings || []) toast(warning, "info");
      name.value = "";
      await loadList();
    } catch (error) {
      // a name already taken is a 409 whose details name it: shown next to the name field like a 422
      const problem = error.status === 409 && error.details && "name" in error.details
        ? { message: error.message, details: { field: "name" } } : error;
      if (!showFieldErrors(form, problem)) toast(errorText(error), "error");
    } finally {
      submit.disabled = false;
    }
  });

  view.append(pageHeader("Splits"), listSection, form);
  showShares();
  await Promise.all([loadList(), loadPreview()]);
  return () => {
    disposed = true;
    clearTimeout(previewTimer);
    if (previewController) previewController.abort();
  };
}
