/* A resource card's utilization: the summary line (percent used, amount
   billed) and the chart of the last DAYS days, drawn at its box's width. */

import { chart } from "../charts.js";
import { h } from "../dom.js";
import { money } from "../format.js";

export const DAYS = 7; // the utilization chart's range

/** The summary and the chart box of one resource; `nameOf()` is the resource's current name. */
export function utilizationChart(nameOf) {
  let analytics = null;
  const box = h("div", { class: "utilization" });
  let drawnWidth = 0;
  // Draw at the box's own width (text keeps its size on a phone); again when that width changes.
  // (Redrawn in the next frame, not inside the observer: changing the layout there loops.)
  let frame = 0;
  const resized = new ResizeObserver(() => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(() => {
      if (Math.abs(box.clientWidth - drawnWidth) > 1) redraw();
    });
  });
  resized.observe(box);
  const summary = h("p", { class: "utilization-summary muted" });

  function redraw() {
    if (!analytics) {
      box.replaceChildren();
      summary.textContent = "";
      return;
    }
    summary.replaceChildren(h("strong", {}, `${analytics.utilization_percent}%`), " used · ",
      h("strong", {}, money(analytics.revenue, analytics.currency)), " billed");
    const points = (analytics.days || []).map((day) => ({ label: dayLabel(day.date), value: day.utilization_percent }));
    drawnWidth = box.clientWidth;
    const width = drawnWidth || 320;
    box.replaceChildren(chart(points, { kind: "bar", unit: "%", max: 100, width,
      title: `${nameOf()}: utilization per day, last ${DAYS} days (%)` }));
  }

  return {
    summary,
    box,
    /** The resource's entry of the analytics reply (or nothing: an empty chart). */
    set(entry) {
      analytics = entry || null;
      redraw();
    },
    dispose() {
      resized.disconnect();
      cancelAnimationFrame(frame);
    },
  };
}

function dayLabel(isoDate) {
  const [year, month, day] = isoDate.split("-").map(Number);
  return new Intl.DateTimeFormat("en", { timeZone: "UTC", month: "short", day: "numeric" })
    .format(new Date(Date.UTC(year, month - 1, day)));
}
