// One run: status, progress (epoch/step, ETA), live loss and metric curves from the run's SSE stream, the event
// feed (log and status events), best metrics, and the actions the status allows (stop, resume, extend, delete).
// History comes from GET .../metrics; the stream (replayed from the start, then live) adds every new `epoch`
// record, so the curves grow while the run trains. A dropped stream reconnects with Last-Event-ID (js/sse.js).

import { api, seg } from "../api.js";
import { link } from "../app.js";
import { lineChart } from "../chart.js";
import {
  confirmAction, errorBox, errorText, formatDate, formatDuration, formatNumber, h, pageHeader, progressBar, replace,
  statusBadge, toast, useStylesheet,
} from "../dom.js";
import { follow } from "../sse.js";

const ACTIVE = new Set(["pending", "running"]);
const RESUMABLE = new Set(["stopped", "failed", "interrupted"]);
/** Keys of an epoch record that are not curves. */
const NOT_CURVES = new Set(["epoch", "lr", "time_s", "images_per_s"]);
const FEED_LIMIT = 300;

const STATE_TEXT = {
  connecting: "connecting…", open: "live", reconnecting: "reconnecting…", ended: "stream closed", idle: "not connected",
};

function isLoss(key) {
  return /(^|\/)loss$/.test(key);
}

/** Curves from the epoch records: {x, lossKeys, metricKeys}. */
function curveKeys(records) {
  const keys = new Set();
  for (const record of records) for (const key of Object.keys(record)) if (!NOT_CURVES.has(key)) keys.add(key);
  const ordered = [...keys].sort();
  return { loss: ordered.filter(isLoss), metrics: ordered.filter((k) => !isLoss(k)) };
}

function chartCard(title, yLabel) {
  const host = h("div", { class: "chart", dataset: { points: "0" } });
  const latest = h("p", { class: "latest muted", "aria-live": "off" });
  const card = h("figure", { class: "card chart-card" }, h("figcaption", {}, title), host, latest);
  let chart = null;
  let keys = [];
  return {
    card,
    host,
    set(records, wanted) {
      const sorted = [...records].sort((a, b) => a.epoch - b.epoch);
      if (!wanted.length) {
        if (chart) { chart.destroy(); chart = null; keys = []; }
        host.dataset.points = "0";
        replace(latest, "No values yet.");
        return;
      }
      const x = sorted.map((r) => r.epoch);
      const ys = wanted.map((key) => sorted.map((r) => (typeof r[key] === "number" ? r[key] : null)));
      if (!chart || keys.join() !== wanted.join()) {
        if (chart) chart.destroy();
        host.replaceChildren();
        chart = lineChart(host, { title: null, xLabel: "epoch", series: wanted.map((label) => ({ label, points: sorted.length < 30 })), x, ys });
        keys = wanted;
      } else {
        chart.update(x, ys);
      }
      host.dataset.points = String(sorted.length);
      host.setAttribute("aria-label", `${title}: ${sorted.length} epoch(s)`);
      const last = sorted[sorted.length - 1];
      replace(latest, last ? `Epoch ${last.epoch}: ${wanted.map((k) => `${k} ${formatNumber(last[k], 4)}`).join(" · ")}` : "");
      latest.dataset.epoch = last ? String(last.epoch) : "";
    },
    destroy() { if (chart) chart.destroy(); },
  };
}

function progressText(run) {
  const p = run.progress || {};
  const parts = [];
  if (p.total_epochs) parts.push(`Epoch ${p.epoch || 0} / ${p.total_epochs}`);
  if (p.steps_per_epoch && run.status === "running") parts.push(`step ${p.step || 0} / ${p.steps_per_epoch}`);
  if (run.status === "running" && p.eta_s !== null && p.eta_s !== undefined) parts.push(`ETA ${formatDuration(p.eta_s)}`);
  if (p.images_per_s) parts.push(`${formatNumber(p.images_per_s, 0)} images/s`);
  if (run.elapsed_s !== null && run.elapsed_s !== undefined) parts.push(`elapsed ${formatDuration(run.elapsed_s)}`);
  return parts.join(" · ");
}

function progressFraction(run) {
  const p = run.progress || {};
  if (run.status === "completed") return [1, 1];
  if (!p.total_epochs) return [null, 1];
  const spe = p.steps_per_epoch || 0;
  if (!spe) return [p.epoch || 0, p.total_epochs];
  const epochDone = run.status === "running" ? (p.epoch || 1) - 1 + Math.min(1, (p.step || 0) / spe) : (p.epoch || 0);
  return [Math.min(epochDone, p.total_epochs), p.total_epochs];
}

export async function render(view, { params }) {
  useStylesheet("run");
  const projectId = params.project;
  const runId = params.run;
  const runPath = `/api/training/${seg(projectId)}/runs/${seg(runId)}`;
  const projectBase = `/p/${encodeURIComponent(projectId)}`;

  let run = await api(runPath);
  const experiment = await api(`/api/training/${seg(projectId)}/experiments/${seg(run.experiment_id)}`).catch(() => null);
  let records = await api(`${runPath}/metrics`).catch(() => []);

  const badge = h("span", { class: "run-status" });
  const connection = h("span", { class: "connection", role: "status", dataset: { state: "idle" } }, STATE_TEXT.idle);
  const progressSlot = h("div", { class: "progress-slot" });
  const progressLabel = h("p", { class: "progress-text" });
  const errorSlot = h("div", {});
  const queueSlot = h("p", { class: "muted queue" });
  const lossChart = chartCard("Loss", "loss");
  const metricChart = chartCard("Metrics", "metric");
  const bestSlot = h("div", { class: "best" });
  const feed = h("ol", { class: "event-feed", role: "log", "aria-label": "Run events", tabindex: "0" });
  const feedCount = h("span", { class: "muted" });
  const infoSlot = h("dl", { class: "run-info" });

  const stopButton = h("button", { type: "button", class: "danger" }, "Stop");
  const resumeButton = h("button", { type: "button", class: "primary" }, "Resume");
  const extendInput = h("input", { type: "number", name: "max_epochs", min: "1", max: "100000", step: "1", inputMode: "numeric",
    id: "extend-epochs", "aria-describedby": "extend-hint extend-epochs-error" });
  const extendButton = h("button", { type: "button" }, "Resume with these epochs");
  const extendHint = h("p", { class: "hint", id: "extend-hint" });
  const extendError = h("p", { class: "field-error", id: "extend-epochs-error", hidden: true });
  const deleteButton = h("button", { type: "button", class: "danger" }, "Delete run");
  const evaluateLink = h("a", { class: "button", href: link(`${projectBase}/evaluation`, { run: runId }) }, "Evaluate this run");
  const exportLink = h("a", { class: "button", href: link(`${projectBase}/export`, { run: runId }) }, "Export this run");

  const header = pageHeader(`Run ${runId}`, badge, connection);
  const crumbs = h("p", { class: "crumbs" }, h("a", { href: link(`${projectBase}/training`) }, "Training"), " › ",
    experiment ? experiment.name : run.experiment_id, " › ", runId);

  replace(view, header, crumbs,
    h("section", { class: "card run-overview", "aria-labelledby": "progress-title" },
      h("h2", { id: "progress-title" }, "Progress"), progressSlot, progressLabel, queueSlot, errorSlot,
      h("div", { class: "actions run-actions" }, stopButton, resumeButton, deleteButton, evaluateLink, exportLink),
      h("form", { class: "extend", "aria-labelledby": "extend-title", noValidate: true, onsubmit: (e) => { e.preventDefault(); extend(); } },
        h("h3", { id: "extend-title" }, "Extend"),
        h("div", { class: "inline" }, h("label", { for: "extend-epochs" }, "Max epochs"), extendInput, extendButton),
        extendHint, extendError)),
    h("section", { "aria-labelledby": "curves-title" }, h("h2", { id: "curves-title" }, "Curves"),
      h("div", { class: "charts" }, lossChart.card, metricChart.card)),
    h("div", { class: "run-columns" },
      h("section", { class: "card", "aria-labelledby": "best-title" }, h("h2", { id: "best-title" }, "Best"), bestSlot, infoSlot),
      h("section", { class: "card", "aria-labelledby": "events-title" },
        h("h2", { id: "events-title" }, "Events ", feedCount), feed)));

  let extendedFor = null;

  // -- rendering -------------------------------------------------------------------------------------------
  const drawCurves = () => {
    const keys = curveKeys(records);
    lossChart.set(records, keys.loss);
    metricChart.set(records, keys.metrics);
  };

  const drawRun = () => {
    replace(badge, statusBadge(run.status), run.stop_requested && ACTIVE.has(run.status) ? h("span", { class: "hint" }, " stopping…") : null);
    view.dataset.status = run.status;
    const [value, max] = progressFraction(run);
    replace(progressSlot, progressBar(value, max, `Training progress of ${runId}`));
    progressLabel.textContent = progressText(run) || (run.status === "pending" ? "Waiting to start" : "");
    if (run.status === "pending") {
      queueSlot.hidden = false;
      queueSlot.textContent = `${run.queue_position ? `#${run.queue_position} in the queue` : "Queued"}${run.waiting_reason ? `: ${run.waiting_reason}` : ""}`;
    } else {
      queueSlot.hidden = true;
    }
    replace(errorSlot, run.error ? errorBox({ message: `${run.error.type}: ${run.error.message}` }) : null);

    const best = run.best_metrics || {};
    const keys = Object.keys(best).filter((k) => !NOT_CURVES.has(k));
    replace(bestSlot, keys.length
      ? h("table", { class: "best-table" },
        h("caption", {}, `Best epoch ${run.best_epoch ?? "–"} (monitor ${run.monitor})`),
        h("tbody", {}, keys.map((key) => h("tr", { class: key === run.monitor ? "monitor" : null },
          h("th", { scope: "row" }, key), h("td", { class: "num" }, formatNumber(best[key], 4))))))
      : h("p", { class: "muted" }, "No finished epoch yet."));
    const info = [
      ["Experiment", experiment ? h("a", { href: link(`${projectBase}/training`) }, experiment.name) : run.experiment_id],
      ["Devices", (run.devices || []).join(", ") || "–"],
      ["Created", formatDate(run.created_at)],
      ["Started", formatDate(run.started_at)],
      ["Finished", formatDate(run.finished_at)],
      ["Queued", formatDuration(run.timings && run.timings.queued_s)],
      ["Training time", formatDuration(run.timings && run.timings.train_s)],
      run.precision ? ["Precision", `${run.precision.precision} (${run.precision.reason})`] : null,
      run.stopped_early ? ["Stopped early", `epoch ${run.stopped_early.epoch} (${run.stopped_early.monitor}, patience ${run.stopped_early.patience})`] : null,
      run.resumes && run.resumes.length ? ["Resumed", `${run.resumes.length}×, last from epoch ${run.resumes[run.resumes.length - 1].from_epoch}`] : null,
    ].filter(Boolean);
    replace(infoSlot, info.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));

    const active = ACTIVE.has(run.status);
    const resumable = RESUMABLE.has(run.status);
    stopButton.disabled = !active || run.stop_requested;
    resumeButton.disabled = !resumable;
    extendButton.disabled = !resumable;
    extendInput.disabled = !resumable;
    deleteButton.disabled = run.status === "running";
    const total = (run.progress && run.progress.total_epochs) || 1;
    if (!extendInput.value || extendedFor !== total) extendInput.value = String(total + Math.max(1, Math.round(total / 2)));
    extendedFor = total;
    extendHint.textContent = resumable
      ? `Continues from the last checkpoint (epoch ${run.progress ? run.progress.epoch : 0}) up to this many epochs.`
      : run.status === "completed"
        ? "A completed run cannot be resumed or extended: start a new run with more epochs."
        : "Available once the run is stopped, failed or interrupted.";
    const hasModel = Boolean(run.checkpoints && (run.checkpoints.best || run.checkpoints.last)) || run.status === "completed";
    for (const anchor of [evaluateLink, exportLink]) {
      if (hasModel) anchor.removeAttribute("aria-disabled"); else anchor.setAttribute("aria-disabled", "true");
    }
  };

  const feedLine = (event) => {
    const data = event.data || {};
    let text = "";
    let level = "info";
    if (event.event === "log") { text = data.message; level = data.level || "info"; }
    else if (event.event === "status") text = `status: ${data.status}${data.resumed ? " (resumed)" : ""}${data.error ? ` — ${data.error.message}` : ""}`;
    else if (event.event === "end") text = `end: ${data.status}${data.best_epoch ? `, best epoch ${data.best_epoch}` : ""}`;
    else if (event.event === "epoch") {
      const keys = Object.keys(data).filter((k) => !NOT_CURVES.has(k));
      text = `epoch ${data.epoch}: ${keys.map((k) => `${k} ${formatNumber(data[k], 4)}`).join(", ")}`;
    } else return;
    const at = typeof event.id === "number" ? `#${event.id}` : "";
    const item = h("li", { class: `event level-${level}`, dataset: { id: String(event.id ?? ""), event: event.event } },
      h("span", { class: "event-id muted" }, at), " ", text);
    const stick = feed.scrollHeight - feed.scrollTop - feed.clientHeight < 24;
    feed.append(item);
    while (feed.childElementCount > FEED_LIMIT) feed.firstElementChild.remove();
    feedCount.textContent = `(${feed.childElementCount}${feed.childElementCount >= FEED_LIMIT ? "+" : ""})`;
    if (stick) feed.scrollTop = feed.scrollHeight;
  };

  // -- live data ------------------------------------------------------------------------------------------
  let lastId = 0;
  let stopStream = null;
  let refreshing = null;
  let closed = false;
  const seen = new Set();

  const refreshRun = async () => {
    if (refreshing) return refreshing;
    refreshing = (async () => {
      try {
        run = await api(runPath);
        if (!closed) drawRun();
      } catch (error) {
        if (!closed && error.status === 404) replace(errorSlot, errorBox(error));
      } finally {
        refreshing = null;
      }
    })();
    return refreshing;
  };

  const onEvent = (event) => {
    if (typeof event.id === "number") {
      if (seen.has(event.id)) return; // replayed after a reconnect or a restart: already shown
      seen.add(event.id);
      lastId = Math.max(lastId, event.id);
    }
    connection.dataset.lastEventId = String(lastId);
    const data = event.data || {};
    if (event.event === "progress") {
      run = { ...run, status: run.status === "pending" ? "running" : run.status, progress: { ...run.progress, ...data } };
      drawRun();
    } else if (event.event === "epoch") {
      records = records.filter((r) => r.epoch !== data.epoch).concat([data]); // replayed or retrained: the newest wins
      drawCurves();
      refreshRun();
    } else if (event.event === "status" || event.event === "end") {
      refreshRun();
    }
    feedLine(event);
  };

  let reconnects = 0;
  const onState = (state) => {
    if (state === "reconnecting") reconnects += 1;
    connection.dataset.state = state;
    connection.dataset.reconnects = String(reconnects);
    connection.textContent = STATE_TEXT[state] || state;
    connection.title = reconnects ? `The stream was dropped ${reconnects}× and resumed where it left off` : "";
    if (state === "ended") stopStream = null;
  };

  const startStream = () => {
    if (stopStream) return;
    const path = lastId ? `${runPath}/stream?last_event_id=${lastId}` : `${runPath}/stream`;
    stopStream = follow(path, onEvent, { onState });
  };

  const post = async (path, json, button) => {
    button.disabled = true;
    try {
      run = await api(`${runPath}/${path}`, { method: "POST", json });
      drawRun();
      return true;
    } catch (error) {
      toast(errorText(error), "error");
      await refreshRun();
      return false;
    }
  };

  stopButton.addEventListener("click", async () => {
    if (await post("stop", undefined, stopButton)) toast(`Stopping ${runId}: it saves last.ckpt and exits`, "info");
  });
  resumeButton.addEventListener("click", async () => {
    if (await post("resume", {}, resumeButton)) { toast(`Resumed ${runId}`, "success"); startStream(); }
  });
  const extend = async () => {
    extendError.hidden = true;
    extendInput.removeAttribute("aria-invalid");
    const value = Number(extendInput.value);
    if (!extendInput.value.trim() || !Number.isInteger(value)) {
      extendError.textContent = "Enter a whole number of epochs.";
      extendError.hidden = false;
      extendInput.setAttribute("aria-invalid", "true");
      return;
    }
    extendButton.disabled = true;
    try {
      run = await api(`${runPath}/resume`, { method: "POST", json: { max_epochs: value } });
      toast(`Resumed ${runId} up to ${value} epochs`, "success");
      drawRun();
      startStream();
    } catch (error) {
      if (error.status === 422) {
        extendError.textContent = error.message;
        extendError.hidden = false;
        extendInput.setAttribute("aria-invalid", "true");
        extendInput.focus();
      } else {
        toast(errorText(error), "error");
      }
      await refreshRun();
    }
  };
  extendButton.addEventListener("click", extend);
  deleteButton.addEventListener("click", async () => {
    if (!(await confirmAction(`Delete run ${runId} with its checkpoints, metrics and events? This cannot be undone.`))) return;
    try {
      await api(runPath, { method: "DELETE" });
      toast(`Deleted ${runId}`, "success");
      location.hash = link(`${projectBase}/training`);
    } catch (error) {
      toast(errorText(error), "error");
    }
  });
  for (const anchor of [evaluateLink, exportLink]) {
    anchor.addEventListener("click", (event) => {
      if (anchor.getAttribute("aria-disabled") === "true") { event.preventDefault(); toast("This run has no checkpoint yet", "info"); }
    });
  }

  drawRun();
  drawCurves();
  startStream();
  // the stream carries progress and epochs; a slow poll keeps the queue position, elapsed time and heartbeat fresh
  const timer = setInterval(() => { if (ACTIVE.has(run.status)) { refreshRun(); if (!stopStream) startStream(); } }, 3000);

  return () => {
    closed = true;
    clearInterval(timer);
    if (stopStream) stopStream();
    lossChart.destroy();
    metricChart.destroy();
  };
}
