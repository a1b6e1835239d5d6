/* A customer's recommendations (GET /v1/analytics/recommendations): what
   to change, the estimated monthly savings per currency, and the evidence
   the server computed them from, so anyone can redo the arithmetic. */

import * as api from "./api.js";
import { h, messageLine, showMessage } from "./dom.js";

const TITLES = {
  cheaper_plan: "A cheaper plan",
  unused_commitment: "Unused commitment",
  scale_down: "Scale down",
};

export function recommendationsCard(customerId) {
  const list = h("div", { class: "recommendations" });
  const status = messageLine();
  const card = h("section", { class: "card", id: "recommendations" }, h("h2", {}, "Recommendations"), status, list);
  api.get("/v1/analytics/recommendations", { customer_id: customerId }).then((reply) => {
    if (!reply.data.length) {
      list.append(h("p", { class: "empty" }, "Nothing to recommend: the plan fits the usage."));
      return;
    }
    for (const item of reply.data) list.append(recommendation(item));
  }).catch((error) => showMessage(status, `Could not load recommendations: ${error.message}`, "error"));
  return card;
}

function recommendation(item) {
  const savings = Object.entries(item.estimated_monthly_savings)
    .map(([currency, amount]) => `${amount} ${currency}`).join(" · ");
  return h("article", { class: "recommendation", "data-type": item.type },
    h("h3", {}, TITLES[item.type] || item.type, h("span", { class: "savings" }, `saves about ${savings} a month`)),
    h("p", {}, item.message),
    h("details", {}, h("summary", {}, "Evidence"), evidence(item.evidence)));
}

function evidence(value) {
  if (Array.isArray(value)) {
    return h("ol", {}, value.map((entry) => h("li", {}, evidence(entry))));
  }
  if (value && typeof value === "object") {
    return h("dl", { class: "evidence" }, Object.entries(value).map(([key, inner]) =>
      h("div", {}, h("dt", {}, key.replace(/_/g, " ")), h("dd", {}, evidence(inner)))));
  }
  return String(value);
}
