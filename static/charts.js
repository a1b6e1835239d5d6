/* The dashboard's own small SVG charts: a bar or line chart of labelled
   values with a y axis, grid lines and x labels. Built with createElementNS
   and textContent only. */

const SVG_NS = "http://www.w3.org/2000/svg";
const HEIGHT = 220;
const MARGIN = { top: 26, right: 12, bottom: 30, left: 52 };
const X_LABEL_SPACING = 64; // pixels per x label, so labels never collide
const compact = new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 2 });

function svg(name, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A y scale from 0 with round steps: { max, step, ticks }. */
export function niceScale(maxValue, tickCount = 4) {
  if (!(maxValue > 0)) return { max: tickCount, step: 1, ticks: tickCount };
  const raw = maxValue / tickCount;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const normal = raw / magnitude;
  const factor = normal <= 1 ? 1 : normal <= 2 ? 2 : normal <= 2.5 ? 2.5 : normal <= 5 ? 5 : 10;
  const step = factor * magnitude;
  const ticks = Math.ceil(maxValue / step - 1e-9);
  return { max: step * ticks, step, ticks };
}

function toNumber(value) {
  if (value === null || value === undefined || value === "") return null;
  const number = Number(value);
  return Number.isFinite(number) ? number : null;
}

/**
 * An <svg> chart of `points` ([{ label, value, data? }]; value a number, a
 * numeric string, or null for "no value", which draws nothing; `data`, an
 * object whose entries become data-* attributes of the point's bar or dot,
 * e.g. { month: "2025-09", amount: "188.10" }, so a reader or a test can take
 * the exact figure a mark stands for).
 * Options: kind "bar" | "line", title (accessible name), unit, width in pixels,
 * max: the y axis reaches at least this (e.g. 100 for percentages).
 */
export function chart(points, { kind = "bar", title = "", unit = "", width = 640, max = 0 } = {}) {
  width = Math.max(280, Math.round(width));
  const plotWidth = width - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const values = points.map((point) => toNumber(point.value));
  const scale = niceScale(Math.max(0, max, ...values.filter((v) => v !== null)));
  const slot = plotWidth / Math.max(points.length, 1);
  const xOf = (index) => MARGIN.left + slot * (index + 0.5);
  const yOf = (value) => MARGIN.top + plotHeight - (value / scale.max) * plotHeight;

  const root = svg("svg", {
    class: `chart chart-${kind}`, viewBox: `0 0 ${width} ${HEIGHT}`, width, height: HEIGHT,
    role: "img", "aria-label": title,
  });
  root.append(svg("title", {}, title));
  root.append(yAxis(scale, yOf, width, unit));
  root.append(xAxis(points, xOf, plotWidth));
  const marks = kind === "line" ? lineMarks(points, values, xOf, yOf, unit)
    : barMarks(points, values, xOf, yOf, slot, unit);
  root.append(marks);
  return root;
}

function yAxis(scale, yOf, width, unit) {
  const group = svg("g", { class: "axis axis-y" });
  for (let i = 0; i <= scale.ticks; i += 1) {
    const value = scale.step * i;
    const y = yOf(value);
    group.append(svg("line", { class: i === 0 ? "baseline" : "grid", x1: MARGIN.left, x2: width - MARGIN.right, y1: y, y2: y }));
    group.append(svg("text", { x: MARGIN.left - 6, y: y + 4, "text-anchor": "end" }, compact.format(value)));
  }
  if (unit) group.append(svg("text", { class: "axis-unit", x: MARGIN.left - 6, y: 10, "text-anchor": "end" }, unit));
  return group;
}

function xAxis(points, xOf, plotWidth) {
  const group = svg("g", { class: "axis axis-x" });
  const every = Math.max(1, Math.ceil(points.length / Math.max(1, Math.floor(plotWidth / X_LABEL_SPACING))));
  points.forEach((point, index) => {
    // Always label the last point (the most recent window) and every n-th before it.
    if ((points.length - 1 - index) % every !== 0) return;
    const x = Math.min(xOf(index), plotWidth + MARGIN.left - 14); // keep the last label inside
    group.append(svg("text", { x, y: HEIGHT - MARGIN.bottom + 18, "text-anchor": "middle" }, point.label));
  });
  return group;
}

/** The point's `data` entries as data-* attributes of `mark`. */
function dataAttributes(mark, point) {
  for (const [name, value] of Object.entries(point.data || {})) {
    if (value !== null && value !== undefined) mark.setAttribute(`data-${name}`, String(value));
  }
}

function tooltip(point, unit) {
  const value = point.value === null || point.value === undefined ? "no value" : String(point.value);
  return svg("title", {}, `${point.label}: ${value}${unit ? ` ${unit}` : ""}`);
}

function barMarks(points, values, xOf, yOf, slot, unit) {
  const group = svg("g", { class: "marks" });
  const barWidth = Math.max(1, Math.min(slot * 0.7, 48));
  values.forEach((value, index) => {
    if (value === null) return;
    const top = yOf(value);
    const bar = svg("rect", {
      class: "bar", x: xOf(index) - barWidth / 2, y: top, width: barWidth,
      height: Math.max(0, yOf(0) - top), rx: Math.min(3, barWidth / 4),
    });
    dataAttributes(bar, points[index]);
    bar.append(tooltip(points[index], unit));
    group.append(bar);
  });
  return group;
}

function lineMarks(points, values, xOf, yOf, unit) {
  const group = svg("g", { class: "marks" });
  let path = "";
  let drawing = false;
  values.forEach((value, index) => {
    if (value === null) { drawing = false; return; } // a gap where there is no value
    path += `${drawing ? "L" : "M"}${xOf(index).toFixed(1)},${yOf(value).toFixed(1)} `;
    drawing = true;
  });
  if (path) group.append(svg("path", { class: "line", d: path.trim() }));
  values.forEach((value, index) => {
    if (value === null) return;
    const point = svg("circle", { class: "point", cx: xOf(index), cy: yOf(value), r: 3.5 });
    dataAttributes(point, points[index]);
    point.append(tooltip(points[index], unit));
    group.append(point);
  });
  return group;
}

/**
 * A horizontal gauge of `value` out of `max` (sessions in use of a capacity):
 * an SVG that stretches to its box's width (no inline style, which the CSP
 * forbids). Classes: "meter-bar", plus "full" at or above max.
 */
export function meterBar(value, max, title = "") {
  const ratio = max > 0 ? Math.min(1, Math.max(0, value / max)) : 0;
  const root = svg("svg", {
    class: `meter-bar${max > 0 && value >= max ? " full" : ""}`, viewBox: "0 0 100 10",
    preserveAspectRatio: "none", role: "img", "aria-label": title,
  });
  root.append(svg("title", {}, title));
  root.append(svg("rect", { class: "track", x: 0, y: 0, width: 100, height: 10 }));
  root.append(svg("rect", { class: "fill", x: 0, y: 0, width: (ratio * 100).toFixed(3), height: 10 }));
  return root;
}

/**
 * Tick marks across a meterBar at `marks` ([{ value, title, reached }] on the
 * bar's 0..max scale): thin lines that keep their width however the bar
 * stretches (non-scaling stroke). A mark at or past max is the bar's end and
 * draws no line.
 */
export function addTicks(bar, marks, max) {
  for (const { value, title, reached } of marks) {
    if (!(max > 0) || !(value > 0) || value >= max) continue;
    const x = ((value / max) * 100).toFixed(3);
    const line = svg("line", { class: `tick${reached ? " reached" : ""}`, x1: x, x2: x, y1: 0, y2: 10,
      "vector-effect": "non-scaling-stroke", "data-value": value });
    line.append(svg("title", {}, title));
    bar.append(line);
  }
  return bar;
}

/**
 * The labels of `marks` ([{ value, label }]) under a bar of the same width,
 * each at its place: an SVG without a viewBox whose x are percentages, so the
 * text keeps its shape at any width. Labels too close to the next one to the
 * right are left out (the last always shows).
 */
export function scaleLabels(marks, max, minGap = 12) {
  const root = svg("svg", { class: "bar-scale", "aria-hidden": "true", focusable: "false" });
  let right = Infinity;
  for (const { value, label } of [...marks].sort((a, b) => b.value - a.value)) {
    if (!(max > 0) || !(value > 0)) continue;
    const at = Math.min(100, (value / max) * 100);
    if (right - at < minGap) continue;
    right = at;
    const anchor = at >= 96 ? "end" : at <= 4 ? "start" : "middle";
    root.append(svg("text", { x: `${at.toFixed(3)}%`, y: 11, "text-anchor": anchor, "data-value": value }, label));
  }
  return root;
}
