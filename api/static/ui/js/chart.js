// Line charts with uPlot (vendored, MIT): small (~50 KB), fast on thousands of points, canvas-based.
// One helper so every page draws curves the same way and follows the light/dark scheme and the width.

import uPlot from "../vendor/uplot-1.6.32/uPlot.esm.js";

const INTEGER_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

function axisColor() {
  return getComputedStyle(document.documentElement).getPropertyValue("--fg-muted").trim() || "#666";
}

/**
 * lineChart(container, {title, xLabel, series: [{label}], x: [], ys: [[]]}) -> {update(x, ys), destroy()}.
 * Missing values are null (gaps). The chart resizes with its container.
 */
export function lineChart(container, { title, xLabel = "epoch", series, x = [], ys = [], yRange = null, height = 260,
  integerX = xLabel === "epoch" }) {
  const stroke = axisColor();
  const axis = { stroke, grid: { stroke: "rgba(128,128,128,0.2)" }, ticks: { stroke: "rgba(128,128,128,0.3)" } };
  const options = {
    title,
    width: Math.max(240, container.clientWidth || 600),
    height,
    scales: { x: { time: false }, y: yRange ? { range: yRange } : {} },
    // epochs are whole numbers: tick steps of 1, 2, 5, 10, ... (never 1.2, 1.4 on a short run)
    axes: [{ ...axis, label: xLabel, ...(integerX ? { incrs: INTEGER_STEPS } : {}) }, { ...axis }],
    series: [{ label: xLabel }, ...series.map((s, i) => ({
      label: s.label, stroke: s.color || PALETTE[i % PALETTE.length], width: 2, spanGaps: true,
      points: { show: s.points ?? false },
    }))],
    legend: { live: true },
  };
  const plot = new uPlot(options, [x, ...ys], container);
  const observer = new ResizeObserver(() => {
    const width = Math.max(240, container.clientWidth);
    if (Math.abs(width - plot.width) > 2) plot.setSize({ width, height });
  });
  observer.observe(container);
  return {
    plot,
    update(newX, newYs) { plot.setData([newX, ...newYs]); },
    destroy() { observer.disconnect(); plot.destroy(); },
  };
}
