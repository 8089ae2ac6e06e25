// The event log (docs/events.md), newest first, filtered by type, followed live.
import { api, query, type Event } from "../api";
import { fmtTime, h } from "../dom";
import { live } from "../live";
import { navigate, type Page } from "../router";
import { errorBox } from "../ui";

const KEEP = 300;

export const page: Page = {
  render(root, _params, q) {
    const type = q.get("type") ?? "";
    const input = h("input", { placeholder: "type: task, task.dead, pool, agent.breaker…", value: type, "data-testid": "filter-event-type" });
    const form = h("form", { class: "filters" }, input, h("button", { type: "submit" }, "Apply"));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      navigate(`/events${query({ type: input.value.trim() })}`);
    });
    const error = h("div");
    const body = h("tbody");
    root.append(h("h1", {}, "Events"), form, error,
      h("table", { class: "list", "data-testid": "events-table" },
        h("thead", {}, h("tr", {}, ...["when", "type", "tenant", "subject", "what"].map((c) => h("th", {}, c)))), body));
    let events: Event[] = [];
    let token = "";
    const since = Date.now() - 3600_000;
    function subject(e: Event): Node | string {
      if (e.task_id) return h("a", { href: `/tasks/${e.task_id}` }, `task ${e.task_id}`);
      if (e.workflow_id) return h("a", { href: `/workflows/${e.workflow_id}` }, `workflow ${e.workflow_id}`);
      if (e.pool) return h("a", { href: `/pools/${e.pool}` }, `pool ${e.pool}`);
      if (e.agent_id) return `agent ${e.agent_id}`;
      return "";
    }
    async function load(): Promise<void> {
      try {
        // Follow the log from where the last read ended; keep the newest KEEP.
        for (let i = 0; i < 20; i++) {
          const r = await api.get<{ events?: Event[]; next_page_token?: string; more?: boolean }>(
            `/v1/events${query({ type, page_size: 1000, page_token: token, since_unix_ms: token ? undefined : since })}`);
          events = events.concat(r.events ?? []).slice(-KEEP);
          token = r.next_page_token ?? token;
          if (!r.more) break;
        }
        body.replaceChildren(...[...events].reverse().map((e) => h("tr", { "data-testid": "event-row" },
          h("td", {}, fmtTime(e.unix_ms)), h("td", {}, h("code", {}, e.type ?? "")), h("td", {}, e.tenant ?? ""),
          h("td", {}, subject(e)), h("td", {}, e.message ?? ""))));
        if (!events.length) body.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "no events in the last hour")));
        error.replaceChildren();
      } catch (e) {
        error.replaceChildren(errorBox(e));
      }
    }
    void load();
    return live.subscribe(["events"], load);
  },
};
