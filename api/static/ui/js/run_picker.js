// The experiment -> run -> checkpoint picker of the Evaluation, Export and Predict forms.

import { api, seg } from "./api.js";
import { field, formatNumber, h, replace } from "./dom.js";

/** A run's label for pickers and tables. */
function runLabel(run) {
  const best = run.best_metrics || {};
  const metric = run.monitor && best[run.monitor] !== undefined ? ` · ${run.monitor} ${formatNumber(best[run.monitor])}` : "";
  return `${run.id} · ${run.status}${metric}`;
}

/**
 * Experiment -> run -> checkpoint selects (names experiment_id, run_id, checkpoint, as the API's bodies).
 * Only runs with a checkpoint are offered. `runId` preselects a run (its experiment is looked up).
 * Resolves to {element, value(), onChange(fn)}.
 */
export async function runPicker(projectId, { runId = "", checkpointLabel = "Checkpoint" } = {}) {
  const base = seg(projectId);
  const experiments = await api(`/api/training/${base}/experiments`);
  let wantedExperiment = "";
  if (runId) {
    try { wantedExperiment = (await api(`/api/training/${base}/runs/${seg(runId)}`)).experiment_id; } catch { runId = ""; }
  }
  const experimentSelect = h("select", { name: "experiment_id", required: true },
    experiments.map((e) => h("option", { value: e.id }, `${e.name} (${e.id})`)));
  const runSelect = h("select", { name: "run_id", required: true });
  const checkpointSelect = h("select", { name: "checkpoint" });
  const listeners = [];
  let runs = [];
  const changed = () => listeners.forEach((fn) => fn());

  const fillCheckpoints = () => {
    const run = runs.find((r) => r.id === runSelect.value);
    const available = run ? ["best", "last"].filter((name) => run.checkpoints && run.checkpoints[name]) : [];
    const previous = checkpointSelect.value;
    replace(checkpointSelect, available.map((name) => h("option", { value: name }, name)));
    if (available.includes(previous)) checkpointSelect.value = previous;
  };
  const fillRuns = async (wanted) => {
    replace(runSelect, h("option", { value: "" }, "Loading…"));
    runs = [];
    if (experimentSelect.value) {
      const all = await api(`/api/training/${base}/experiments/${seg(experimentSelect.value)}/runs`);
      runs = all.filter((r) => r.checkpoints && (r.checkpoints.best || r.checkpoints.last));
    }
    replace(runSelect, runs.length ? runs.map((r) => h("option", { value: r.id }, runLabel(r)))
      : h("option", { value: "" }, "No run with a checkpoint"));
    if (wanted && runs.some((r) => r.id === wanted)) runSelect.value = wanted;
    fillCheckpoints();
  };
  experimentSelect.addEventListener("change", async () => { await fillRuns(); changed(); });
  runSelect.addEventListener("change", () => { fillCheckpoints(); changed(); });
  checkpointSelect.addEventListener("change", changed);
  if (wantedExperiment) experimentSelect.value = wantedExperiment;
  if (experiments.length) await fillRuns(runId);
  else replace(runSelect, h("option", { value: "" }, "No experiment yet"));

  const element = h("div", { class: "form-grid" },
    field("Experiment", experimentSelect), field("Run", runSelect), field(checkpointLabel, checkpointSelect));
  return {
    element,
    hasRuns: () => runs.length > 0,
    value: () => ({ experiment_id: experimentSelect.value, run_id: runSelect.value, checkpoint: checkpointSelect.value || "best" }),
    onChange: (fn) => listeners.push(fn),
  };
}
