// Named resources in use, token buckets, and tenants' shares and costs (GET /v1/usage).
import { api, type Usage } from "../api";
import { fmtInt, fmtMoney, h, num } from "../dom";
import { live } from "../live";
import type { Page } from "../router";
import { errorBox } from "../ui";

export const page: Page = {
  render(root) {
    const error = h("div");
    const res = h("tbody");
    const tenants = h("tbody");
    const types = h("tbody");
    root.append(h("h1", {}, "Resources and tenants"), error,
      h("h2", {}, "Named resources"),
      h("table", { class: "list", "data-testid": "resources-table" },
        h("thead", {}, h("tr", {}, ...["resource", "kind", "in use", "capacity", "available", "waiting tasks", "acquired"].map((c) => h("th", {}, c)))), res),
      h("h2", {}, "Tenants"),
      h("table", { class: "list", "data-testid": "tenants-table" },
        h("thead", {}, h("tr", {}, ...["tenant", "share weight", "ready", "dispatched", "cost"].map((c) => h("th", {}, c)))), tenants),
      h("h2", {}, "Cost by task type"),
      h("table", { class: "list" }, h("thead", {}, h("tr", {}, h("th", {}, "type"), h("th", {}, "cost"))), types));
    async function load(): Promise<void> {
      try {
        const u = await api.get<Usage>("/v1/usage");
        res.replaceChildren(...(u.resources ?? []).map((r) => {
          const cap = num(r.capacity), used = num(r.in_use);
          return h("tr", { "data-testid": `resource-${r.name}` }, h("td", {}, r.name ?? ""), h("td", {}, r.kind ?? ""),
            h("td", {}, h("meter", { min: 0, max: Math.max(1, cap), value: used }), ` ${fmtInt(used)}`),
            h("td", { class: "num" }, fmtInt(cap)), h("td", { class: "num" }, (r.available ?? 0).toFixed(1)),
            h("td", { class: "num" }, fmtInt(r.waiting)), h("td", { class: "num" }, fmtInt(r.acquired_total)));
        }));
        if (!u.resources?.length) res.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "no named resources (docs/scheduling.md)")));
        const costs = u.cost_by_tenant ?? {};
        const seen = new Set<string>();
        tenants.replaceChildren(...(u.tenants ?? []).map((t) => {
          seen.add(t.tenant ?? "");
          return h("tr", {}, h("td", {}, t.tenant || "default"), h("td", { class: "num" }, String(t.weight ?? 1)),
            h("td", { class: "num" }, fmtInt(t.ready)), h("td", { class: "num" }, fmtInt(t.dispatched_total)),
            h("td", { class: "num" }, fmtMoney(costs[t.tenant ?? ""])));
        }), ...Object.entries(costs).filter(([t]) => !seen.has(t)).map(([t, c]) =>
          h("tr", {}, h("td", {}, t || "default"), h("td", {}, "–"), h("td", {}, "–"), h("td", {}, "–"), h("td", { class: "num" }, fmtMoney(c)))));
        types.replaceChildren(...Object.entries(u.cost_by_type ?? {}).map(([t, c]) => h("tr", {}, h("td", {}, t), h("td", { class: "num" }, fmtMoney(c)))));
        error.replaceChildren();
      } catch (e) {
        error.replaceChildren(errorBox(e));
      }
    }
    void load();
    return live.subscribe(["stats", "tasks"], load);
  },
};
