// Tasks: a filtered, paged list (GET /v1/tasks), the filters in the URL so a view can be
// shared. Pages go on by token: a narrow filter over a large store may answer a short page
// that still has a next one (the server caps how far one call looks).
import { api, query, type TaskPage } from "../api";
import { badge, enumName, fmtAge, h, truncate } from "../dom";
import { live } from "../live";
import { navigate, type Page } from "../router";
import { errorBox } from "../ui";

const STATES = ["", "waiting", "ready", "leased", "retry_wait", "succeeded", "dead", "canceled", "expired"];
const PRIORITIES = ["", "critical", "high", "normal", "low", "background"];
const FIELDS = ["state", "type", "tenant", "priority", "label", "error"] as const;
const PAGE_SIZE = 50;

function select(name: string, values: string[], current: string): HTMLSelectElement {
  const s = h("select", { name, "data-testid": `filter-${name}` },
    ...values.map((v) => h("option", { value: v, selected: v === current }, v || `any ${name}`)));
  return s;
}

export const page: Page = {
  render(root, _params, q) {
    const form = h("form", { class: "filters", "data-testid": "task-filters" },
      select("state", STATES, q.get("state") ?? ""),
      h("input", { name: "type", placeholder: "type", value: q.get("type") ?? "", "data-testid": "filter-type" }),
      h("input", { name: "tenant", placeholder: "tenant", value: q.get("tenant") ?? "", "data-testid": "filter-tenant" }),
      select("priority", PRIORITIES, q.get("priority") ?? ""),
      h("input", { name: "label", placeholder: "label key=value", value: q.get("label") ?? "", "data-testid": "filter-label" }),
      h("input", { name: "error", placeholder: "text in last error", value: q.get("error") ?? "", "data-testid": "filter-error" }),
      h("label", {}, h("input", { type: "checkbox", name: "newest", checked: q.get("order") !== "oldest", "data-testid": "filter-newest" }), " newest first"),
      h("button", { type: "submit", "data-testid": "filter-apply" }, "Apply"),
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const data = new FormData(form);
      const params: Record<string, string> = {};
      for (const f of FIELDS) {
        const v = String(data.get(f) ?? "").trim();
        if (v) params[f] = v;
      }
      if (!data.get("newest")) params.order = "oldest";
      navigate(`/tasks${query(params)}`);
    });
    const error = h("div");
    const body = h("tbody");
    const table = h("table", { class: "list", "data-testid": "tasks-table" },
      h("thead", {}, h("tr", {}, ...["id", "type", "state", "priority", "tenant", "attempts", "age", "last error"].map((c) => h("th", {}, c)))),
      body);
    const prev = h("button", { type: "button", "data-testid": "page-prev", disabled: true }, "← Previous");
    const next = h("button", { type: "button", "data-testid": "page-next", disabled: true }, "Next →");
    const info = h("span", { class: "muted" });
    root.append(h("h1", {}, "Tasks"), form, error, table, h("div", { class: "pager" }, prev, next, info));

    const filters: Record<string, string | undefined> = {};
    for (const f of FIELDS) filters[f] = q.get(f) ?? undefined;
    filters.order = q.get("order") === "oldest" ? "oldest" : "newest";
    const tokens: string[] = [""];  // the token of each page seen, for Previous
    let nextToken = "";

    async function load(): Promise<void> {
      const token = tokens[tokens.length - 1];
      try {
        const r = await api.get<TaskPage>(`/v1/tasks${query({ ...filters, page_size: PAGE_SIZE, page_token: token })}`);
        const tasks = r.tasks ?? [];
        body.replaceChildren(...tasks.map((t) => {
          const state = enumName(t.state, "TASK_STATE_");
          return h("tr", { "data-testid": `task-row-${t.id}`, "data-state": state },
            h("td", {}, h("a", { href: `/tasks/${t.id}` }, t.id)),
            h("td", {}, t.spec?.type ?? ""),
            h("td", {}, badge(state)),
            h("td", {}, enumName(t.spec?.priority, "PRIORITY_")),
            h("td", {}, t.spec?.tenant || "default"),
            h("td", { class: "num" }, String(t.attempts ?? 0)),
            h("td", {}, fmtAge(t.created_unix_ms)),
            h("td", { class: "err", title: t.last_error ?? "" }, truncate(t.last_error, 80)));
        }));
        if (tasks.length === 0) body.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, r.next_page_token ? "none in this stretch; go on with Next" : "no tasks match")));
        nextToken = r.next_page_token ?? "";
        next.disabled = !nextToken;
        prev.disabled = tokens.length <= 1;
        info.textContent = `page ${tokens.length}`;
        error.replaceChildren();
      } catch (e) {
        body.replaceChildren();
        error.replaceChildren(errorBox(e));
      }
    }
    next.addEventListener("click", () => {
      if (!nextToken) return;
      tokens.push(nextToken);
      void load();
    });
    prev.addEventListener("click", () => {
      if (tokens.length > 1) tokens.pop();
      void load();
    });
    void load();
    return live.subscribe(["tasks"], load);
  },
};
