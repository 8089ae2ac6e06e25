// Workflows and map-reduce jobs: state, progress, cost (GET /v1/workflows).
import { api, query, type Workflow } from "../api";
import { badge, enumName, fmtAge, fmtMoney, h } from "../dom";
import { live } from "../live";
import { navigate, type Page } from "../router";
import { errorBox } from "../ui";

const STATES = ["", "running", "succeeded", "failed", "canceled"];

export const page: Page = {
  render(root, _params, q) {
    const state = q.get("state") ?? "";
    const sel = h("select", { "data-testid": "filter-workflow-state" },
      ...STATES.map((s) => h("option", { value: s, selected: s === state }, s || "any state")));
    sel.addEventListener("change", () => navigate(`/workflows${query({ state: sel.value })}`));
    const error = h("div");
    const body = h("tbody");
    root.append(h("h1", {}, "Workflows"), h("div", { class: "filters" }, sel), error,
      h("table", { class: "list", "data-testid": "workflows-table" },
        h("thead", {}, h("tr", {}, ...["id", "name", "state", "progress", "failed", "cost", "age"].map((c) => h("th", {}, c)))),
        body));
    const tokens: string[] = [""];
    async function load(): Promise<void> {
      try {
        const r = await api.get<{ workflows?: Workflow[]; next_page_token?: string }>(
          `/v1/workflows${query({ state, page_size: 50, page_token: tokens[tokens.length - 1] })}`);
        body.replaceChildren(...(r.workflows ?? []).map((w) => {
          const st = enumName(w.state, "WORKFLOW_STATE_");
          const pct = w.total ? Math.round(((w.done ?? 0) / w.total) * 100) : 0;
          return h("tr", { "data-testid": `workflow-row-${w.id}` },
            h("td", {}, h("a", { href: `/workflows/${w.id}` }, w.id)),
            h("td", {}, w.name ?? ""),
            h("td", {}, badge(st)),
            h("td", {}, h("progress", { max: 100, value: pct }), ` ${w.done ?? 0}/${w.total ?? 0}`),
            h("td", { class: "num" }, String(w.failed ?? 0)),
            h("td", { class: "num" }, fmtMoney(w.cost)),
            h("td", {}, fmtAge(w.created_unix_ms)));
        }));
        if (!r.workflows?.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "no workflows")));
        error.replaceChildren();
      } catch (e) {
        error.replaceChildren(errorBox(e));
      }
    }
    void load();
    return live.subscribe(["workflows", "tasks"], load);
  },
};
