// Projects: the list (task, images, latest run and its best metric), create, rename, delete.

import { api, seg } from "../api.js";
import { projectRenamed } from "../app.js";
import {
  confirmAction, errorBox, errorText, field, formatDate, formatNumber, h, pageHeader, replace, showFieldErrors,
  statusBadge, toast,
} from "../dom.js";

/** The tasks registered by plugins (`GET /api/system/plugins`), for the create form. */
async function registeredTasks() {
  const plugins = await api("/api/system/plugins");
  const tasks = plugins.filter((p) => p.status === "loaded").flatMap((p) => (p.registered && p.registered.tasks) || []);
  return tasks.length ? [...new Set(tasks)] : ["classification"];
}

/** What the list shows per project beyond project.json: image count and the most recent run. */
async function summary(project) {
  const base = seg(project.id);
  const [dataset, experiments] = await Promise.all([
    api(`/api/datasets/${base}`).catch(() => null),
    api(`/api/training/${base}/experiments`).catch(() => []),
  ]);
  let latest = null;
  for (const experiment of experiments) {
    const run = experiment.latest_run;
    if (run && (!latest || String(run.created_at || "") > String(latest.run.created_at || ""))) {
      latest = { run, experiment };
    }
  }
  return { numImages: dataset ? dataset.num_images : null, latest };
}

function bestMetricText(latest) {
  if (!latest) return "–";
  const metric = latest.experiment.best_metric;
  if (metric && typeof metric === "object") {
    const name = metric.name || metric.monitor || Object.keys(metric)[0];
    const value = metric.value ?? metric[name];
    return `${name} ${formatNumber(value)}`;
  }
  if (typeof metric === "number") return formatNumber(metric);
  const best = latest.run.best_metrics || {};
  const key = Object.keys(best)[0];
  return key ? `${key} ${formatNumber(best[key])}` : "–";
}

function createForm(tasks, onCreated) {
  const name = h("input", { name: "name", required: true, maxLength: 200, autocomplete: "off" });
  const task = h("select", { name: "task" }, tasks.map((t) => h("option", { value: t }, t.replace(/_/g, " "))));
  const submit = h("button", { type: "submit", class: "primary" }, "Create project");
  const form = h("form", { class: "card", "aria-labelledby": "create-project-title" },
    h("h2", { id: "create-project-title" }, "New project"),
    h("div", { class: "form-grid" }, field("Name", name), field("Task", task)),
    submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      const project = await api("/api/projects", { method: "POST", json: { name: name.value, task: task.value } });
      toast(`Created ${project.name}`, "success");
      onCreated(project);
    } catch (error) {
      if (!showFieldErrors(form, error)) toast(errorText(error), "error");
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

async function renameProject(project, onDone) {
  const input = h("input", { name: "name", value: project.name, required: true, maxLength: 200 });
  const form = h("form", { method: "dialog" },
    h("h2", {}, "Rename project"), field("New name", input),
    h("div", { class: "actions" },
      h("button", { type: "button", value: "cancel", onclick: () => dialog.close() }, "Cancel"),
      h("button", { type: "submit", class: "primary" }, "Rename")));
  const dialog = h("dialog", { "aria-label": "Rename project" }, form);
  document.body.append(dialog);
  dialog.addEventListener("close", () => dialog.remove());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api(`/api/projects/${seg(project.id)}`, { method: "PATCH", json: { name: input.value } });
      projectRenamed(project.id);
      dialog.close();
      toast("Renamed", "success");
      onDone();
    } catch (error) {
      if (!showFieldErrors(form, error)) toast(errorText(error), "error");
    }
  });
  dialog.showModal();
  input.select();
}

async function deleteProject(project, onDone) {
  const message = `Delete project “${project.name}” with its dataset, runs, evaluations and exports? This cannot be undone.`;
  if (!(await confirmAction(message))) return;
  try {
    await api(`/api/projects/${seg(project.id)}`, { method: "DELETE" });
    toast(`Deleted ${project.name}`, "success");
    onDone();
  } catch (error) {
    toast(errorText(error), "error");
  }
}

function projectRow({ project, numImages, latest }, refresh) {
  const base = `#/p/${seg(project.id)}`;
  const latestRun = latest
    ? h("a", { href: `${base}/runs/${seg(latest.run.id)}` }, latest.run.id, " ", statusBadge(latest.run.status))
    : "–";
  const actions = h("div", { class: "actions" },
    h("button", { type: "button", "aria-label": `Rename ${project.name}`, onclick: () => renameProject(project, refresh) }, "Rename"),
    h("button", { type: "button", class: "danger", "aria-label": `Delete ${project.name}`, onclick: () => deleteProject(project, refresh) }, "Delete"));
  return h("tr", { dataset: { projectId: project.id } },
    h("td", {}, h("a", { href: `${base}/dataset` }, project.name)),
    h("td", {}, project.task.replace(/_/g, " ")),
    h("td", { class: "num" }, formatNumber(numImages)),
    h("td", {}, latestRun),
    h("td", {}, bestMetricText(latest)),
    h("td", {}, formatDate(project.created_at)),
    h("td", {}, actions));
}

export async function render(view, { navigate }) {
  const list = h("section", { "aria-labelledby": "projects-title" });
  const refresh = async () => {
    let projects;
    try {
      projects = await api("/api/projects");
    } catch (error) {
      replace(list, errorBox(error));
      return;
    }
    if (!projects.length) {
      replace(list, h("h2", { id: "projects-title" }, "Your projects"),
        h("p", { class: "muted" }, "No projects yet. Create one above, then import a dataset."));
      return;
    }
    const summaries = await Promise.all(projects.map(summary));
    const rows = projects.map((project, i) => projectRow({ project, ...summaries[i] }, refresh));
    replace(list, h("h2", { id: "projects-title" }, "Your projects"),
      h("div", { class: "table-wrap" }, h("table", { class: "projects" },
        h("thead", {}, h("tr", {},
          ["Name", "Task", "Images", "Latest run", "Best metric", "Created", "Actions"].map((label) =>
            h("th", { scope: "col", class: label === "Images" ? "num" : null }, label)))),
        h("tbody", {}, rows))));
  };
  const tasks = await registeredTasks().catch(() => ["classification"]);
  replace(view, pageHeader("Projects"),
    createForm(tasks, (project) => navigate(`/p/${encodeURIComponent(project.id)}/dataset`)),
    list);
  await refresh();
}
