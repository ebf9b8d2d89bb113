// Detection boxes drawn over an image (an SVG in the image's own pixel space, stretched with it), and their legend:
// the Evaluation page's mistakes and the Predict page's results.

import { h, svg, useStylesheet } from "./dom.js";

/**
 * An image with boxes drawn over it (SVG in the image's pixel space): `groups` = [{boxes: [{bbox:[x,y,w,h], label}],
 * kind: "truth"|"predicted"}]. Resolves when the image is loaded; returns the wrapper element at once.
 */
export function boxedImage(src, groups, { alt = "", width = null, height = null } = {}) {
  useStylesheet("boxes");
  const img = h("img", { alt, src });
  const overlay = svg("svg", { class: "box-overlay", "aria-hidden": "true", preserveAspectRatio: "none" });
  const draw = (w, hgt) => {
    overlay.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
    const stroke = Math.max(1, Math.round(Math.max(w, hgt) / 160));
    const font = Math.max(8, Math.round(Math.max(w, hgt) / 18));
    overlay.replaceChildren();
    for (const group of groups) {
      for (const box of group.boxes) {
        const [x, y, bw, bh] = box.bbox;
        overlay.append(svg("g", { class: `box box-${group.kind}` },
          svg("rect", { x, y, width: bw, height: bh, "stroke-width": stroke }),
          box.label ? svg("text", { x: x + stroke, y: Math.max(font, y - stroke), "font-size": font }, box.label) : null));
      }
    }
  };
  if (width && height) draw(width, height);
  img.addEventListener("load", () => draw(img.naturalWidth, img.naturalHeight), { once: true });
  return h("div", { class: "boxed-image" }, img, overlay);
}

/** A legend for boxedImage's two kinds. */
export function boxLegend(truthLabel = "true box", predictedLabel = "predicted box") {
  useStylesheet("boxes");
  return h("p", { class: "box-legend muted" },
    truthLabel ? [h("span", { class: "swatch swatch-truth", "aria-hidden": "true" }), truthLabel, " "] : null,
    h("span", { class: "swatch swatch-predicted", "aria-hidden": "true" }), predictedLabel);
}
