/* Usage of one meter as a card: its name, its total over the range and an
   SVG chart of its windows (customer detail and the customer portal). */

import { chart } from "./charts.js";
import { display, h } from "./dom.js";

// Gauges (a level at a time) read better as lines; counters as bars.
const LINE_AGGREGATIONS = new Set(["max", "min", "avg", "latest"]);

function dayLabel(start, timeZone) {
  return new Intl.DateTimeFormat("en", { timeZone, month: "short", day: "numeric" }).format(new Date(start));
}

/** "put 3 · get 1 · list 2": a meter's value per group of one property. */
function groupsLine(groups, property) {
  const parts = groups.map((entry) => {
    const value = entry.group ? entry.group[property] : null;
    return `${value === null || value === undefined ? "(none)" : value} ${display(entry.value)}`;
  });
  return h("p", { class: "groups muted", "data-group-by": property }, `By ${property.replace(/_/g, " ")}: `,
    parts.length ? parts.join(" · ") : "none yet");
}

/**
 * Append a card with the meter's total and its chart to `container`.
 * `entry` is one item of the usage answer's `usage` (with day `windows`);
 * `groups` (optional) the same meter's `groups` by `groupBy`.
 */
export function drawMeter(container, entry, { name, timeZone = "UTC", groups = null, groupBy = null } = {}) {
  const points = (entry.windows || []).map((window) => ({ label: dayLabel(window.start, timeZone), value: window.value }));
  const kind = LINE_AGGREGATIONS.has(entry.aggregation) ? "line" : "bar";
  const card = h("article", { class: "card meter-usage", "data-meter": entry.meter },
    h("header", {},
      h("h3", {}, name || entry.meter, name ? h("code", { class: "muted" }, ` ${entry.meter}`) : null),
      h("p", { class: "total" }, `${display(entry.value)} ${entry.unit}`,
        h("span", { class: "muted" }, ` · ${entry.aggregation} over the range`))),
    groups && groupBy ? groupsLine(groups, groupBy) : null);
  container.append(card);
  // Draw at the card's own width, so the text keeps its size on a phone.
  const style = getComputedStyle(card);
  const width = card.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  card.append(chart(points, { kind, unit: entry.unit, width: width || 640, title: `${name || entry.meter} per day (${entry.unit})` }));
  return card;
}
