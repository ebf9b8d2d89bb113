// System: devices (memory, utilisation), workspace disk use, loaded plugins and their status.

import { api } from "../api.js";
import { errorBox, formatBytes, formatNumber, h, pageHeader, poll, progressBar, replace, statusBadge, table } from "../dom.js";

function deviceCard(device) {
  const rows = [h("p", { class: "muted" }, `${device.id} · ${device.type.toUpperCase()}`)];
  if (device.memory_total_mb) {
    const used = device.memory_total_mb - (device.memory_free_mb ?? 0);
    rows.push(h("p", {}, `Memory: ${formatNumber(used)} / ${formatNumber(device.memory_total_mb)} MiB used`),
      progressBar(used, device.memory_total_mb, `${device.name} memory used`));
  }
  if (device.utilization_percent !== undefined && device.utilization_percent !== null) {
    rows.push(h("p", {}, `Utilisation: ${device.utilization_percent} %`),
      progressBar(device.utilization_percent, 100, `${device.name} utilisation`));
  }
  return h("article", { class: "card device", dataset: { deviceId: device.id } }, h("h3", {}, device.name), rows);
}

function pluginsTable(plugins) {
  return table([
    { label: "Plugin", value: (p) => p.name },
    { label: "Version", value: (p) => p.version || "–" },
    { label: "Source", value: (p) => p.source },
    { label: "Status", value: (p) => statusBadge(p.status) },
    {
      label: "Registers",
      value: (p) => Object.entries(p.registered || {}).filter(([, names]) => names && names.length)
        .map(([kind, names]) => `${kind}: ${names.length > 6 ? `${names.slice(0, 6).join(", ")} … (+${names.length - 6})` : names.join(", ")}`)
        .join("; ") || "–",
    },
    { label: "Error", value: (p) => (p.error ? h("span", { class: "error" }, p.error) : "–") },
  ], plugins, { empty: "No plugins loaded." });
}

export async function render(view) {
  const devices = h("section", { "aria-labelledby": "devices-title" }, h("h2", { id: "devices-title" }, "Devices"));
  const workspace = h("section", { "aria-labelledby": "workspace-title" });
  const plugins = h("section", { "aria-labelledby": "plugins-title" });
  replace(view, pageHeader("System"), devices, workspace, plugins);

  const stopPolling = poll(() => api("/api/system/devices"), (data, error) => {
    if (error) { replace(devices, h("h2", { id: "devices-title" }, "Devices"), errorBox(error)); return; }
    replace(devices, h("h2", { id: "devices-title" }, "Devices"),
      h("p", { class: "muted" }, data.cuda_available ? `CUDA ${data.cuda_version}` : "CUDA not available: training runs on the CPU."),
      h("div", { class: "cards" }, data.devices.map(deviceCard)));
  }, { intervalMs: 5000 });

  try {
    const stats = await api("/api/system/workspace");
    const used = stats.disk.used_bytes;
    replace(workspace, h("h2", { id: "workspace-title" }, "Workspace"),
      h("p", {}, h("code", {}, stats.path)),
      h("div", { class: "stats" },
        h("div", { class: "stat" }, h("span", { class: "muted" }, "Projects"), h("span", { class: "value" }, formatNumber(stats.project_count))),
        h("div", { class: "stat" }, h("span", { class: "muted" }, "Workspace size"), h("span", { class: "value" }, formatBytes(stats.workspace_bytes))),
        h("div", { class: "stat" }, h("span", { class: "muted" }, "Disk free"), h("span", { class: "value" }, formatBytes(stats.disk.free_bytes)))),
      progressBar(used, stats.disk.total_bytes, "Disk used"));
  } catch (error) {
    replace(workspace, h("h2", { id: "workspace-title" }, "Workspace"), errorBox(error));
  }
  try {
    replace(plugins, h("h2", { id: "plugins-title" }, "Plugins"), pluginsTable(await api("/api/system/plugins")));
  } catch (error) {
    replace(plugins, h("h2", { id: "plugins-title" }, "Plugins"), errorBox(error));
  }
  return stopPolling;
}
