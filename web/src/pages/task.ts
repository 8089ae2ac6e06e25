// One task: its spec, payload and result (JSON pretty-printed), checkpoint size, parents and
// children, every attempt on a timeline that splits time queued from time running, and the
// actions (cancel; reprocess a dead letter), each confirmed.
import { api, type Task, type TaskPage } from "../api";
import { badge, decodePayload, enumName, fmtBytes, fmtDuration, fmtMoney, fmtTime, h, num, replace, svg } from "../dom";
import { live } from "../live";
import type { Page } from "../router";
import { can, confirmAction, errorBox } from "../ui";

const TERMINAL = new Set(["succeeded", "dead", "canceled", "expired"]);

function bytesBlock(title: string, value: unknown, json: boolean | undefined, testid: string, hidden: boolean): HTMLElement {
  if (hidden) return h("section", {}, h("h3", {}, title), h("p", { class: "muted" }, "hidden from viewers of this tenant"));
  const d = decodePayload(value, json);
  return h("section", {},
    h("h3", {}, title, h("span", { class: "muted" }, ` ${d.kind}, ${fmtBytes(d.size)}`)),
    d.size ? h("pre", { class: "code", "data-testid": testid }, d.text) : h("p", { class: "muted" }, "empty"));
}

// Each attempt as a queued stretch (grey) then a running one (coloured by outcome).
function timeline(t: Task): SVGElement {
  const attempts = [...(t.history ?? [])].sort((a, b) => (a.number ?? 0) - (b.number ?? 0));
  const start = num(t.created_unix_ms);
  const end = Math.max(num(t.finished_unix_ms) || Date.now(), ...attempts.map((a) => num(a.ended_unix_ms)));
  const span = Math.max(1, end - start);
  const W = 800, rowH = 22;
  const root = svg("svg", { viewBox: `0 0 ${W} ${rowH * Math.max(1, attempts.length) + 24}`, class: "timeline", "data-testid": "attempt-timeline" });
  const x = (ms: number) => ((ms - start) / span) * (W - 120) + 110;
  let prevEnd = start;
  attempts.forEach((a, i) => {
    const y = i * rowH + 4;
    const s = num(a.started_unix_ms) || prevEnd;
    const e = num(a.ended_unix_ms) || Date.now();
    const label = svg("text", { x: 0, y: y + 14, class: "tl-label" });
    label.textContent = `attempt ${a.number ?? i + 1}`;
    const queued = svg("rect", { x: x(prevEnd), y, width: Math.max(1, x(s) - x(prevEnd)), height: 16, class: "tl-queued" });
    const qt = svg("title");
    qt.textContent = `queued ${fmtDuration(s - prevEnd)}`;
    queued.append(qt);
    const run = svg("rect", { x: x(s), y, width: Math.max(2, x(e) - x(s)), height: 16, class: `tl-run o-${a.outcome || "running"}` });
    const rt = svg("title");
    rt.textContent = `running ${fmtDuration(e - s)} on agent ${a.agent_id ?? "?"}: ${a.outcome || "running"}`;
    run.append(rt);
    root.append(label, queued, run);
    prevEnd = e;
  });
  const axis = svg("text", { x: 110, y: rowH * Math.max(1, attempts.length) + 20, class: "tl-label" });
  axis.textContent = `${fmtTime(start)} → ${fmtDuration(span)}`;
  root.append(axis);
  return root;
}

export const page: Page = {
  render(root, params) {
    const id = params[0];
    const body = h("div");
    root.append(h("h1", {}, `Task ${id}`), body);

    async function load(): Promise<void> {
      let t: Task;
      try {
        t = await api.get<Task>(`/v1/tasks/${id}`);
      } catch (e) {
        body.replaceChildren(errorBox(e));
        return;
      }
      const state = enumName(t.state, "TASK_STATE_");
      const spec = t.spec ?? {};
      const actions = h("div", { class: "actions" });
      if (!TERMINAL.has(state) && can.cancel()) {
        actions.append(h("button", {
          type: "button", class: "danger", "data-testid": "cancel-button",
          onclick: async () => {
            if (!(await confirmAction(`Cancel task ${id}?`))) return;
            try {
              await api.post(`/v1/tasks/${id}:cancel`, { reason: "canceled from the dashboard" });
              await load();
            } catch (e) {
              actions.append(errorBox(e));
            }
          },
        }, "Cancel"));
      }
      if (state === "dead" && can.operate()) {
        actions.append(h("button", {
          type: "button", "data-testid": "reprocess-button",
          onclick: async () => {
            if (!(await confirmAction(`Reprocess dead letter ${id}? It goes back to the queue with a fresh series of attempts.`))) return;
            try {
              await api.post("/v1/dlq:reprocess", { ids: [id] });
              await load();
            } catch (e) {
              actions.append(errorBox(e));
            }
          },
        }, "Reprocess"));
      }
      const kv = (k: string, v: Node | string) => h("tr", {}, h("th", {}, k), h("td", {}, v));
      const parents = [...(spec.depends_on ?? []), ...(spec.depends_on_finished ?? [])];
      const children = h("span", { class: "muted" }, "–");
      const attempts = [...(t.history ?? [])].sort((a, b) => (b.number ?? 0) - (a.number ?? 0));
      replace(body,
        h("div", { class: "row" }, badge(state), h("span", { "data-testid": "task-state" }, state), actions),
        h("table", { class: "kv", "data-testid": "task-spec" },
          kv("type", spec.type ?? ""),
          kv("tenant", spec.tenant || "default"),
          kv("priority", enumName(spec.priority, "PRIORITY_")),
          kv("created", fmtTime(t.created_unix_ms)),
          kv("deadline", spec.deadline_unix_ms ? fmtTime(spec.deadline_unix_ms) : "none"),
          kv("attempts", `${t.attempts ?? 0} started, ${t.failures ?? 0} counted failures (max ${t.effective_max_attempts ?? spec.max_attempts ?? "?"})`),
          kv("cost", `${fmtMoney(t.cost)}${spec.cost_budget ? ` of budget ${fmtMoney(spec.cost_budget)}` : ""}`),
          kv("labels", Object.entries(spec.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(", ") || "none"),
          kv("workflow", t.workflow_id ? h("a", { href: `/workflows/${t.workflow_id}` }, `${t.workflow_id} (step ${t.step ?? ""})`) : "none"),
          kv("parents", parents.length ? h("span", {}, ...parents.flatMap((p, i) => [i ? ", " : "", h("a", { href: `/tasks/${p}` }, p)])) : "none"),
          kv("children", children),
          kv("waiting for", t.waiting_for || "–"),
          kv("reason", t.reason || "–"),
          kv("last error", t.last_error || "–"),
          kv("checkpoint", t.checkpoint !== undefined ? fmtBytes(decodePayload(t.checkpoint, t.checkpoint_json).size) : "none"),
        ),
        h("h2", {}, "Attempts"),
        attempts.length ? timeline(t) : h("p", { class: "muted" }, "not started yet"),
        attempts.length ? h("table", { class: "list", "data-testid": "attempts-table" },
          h("thead", {}, h("tr", {}, ...["#", "agent", "started", "ran", "outcome", "cost", "error"].map((c) => h("th", {}, c)))),
          h("tbody", {}, ...attempts.map((a) => h("tr", {},
            h("td", {}, String(a.number ?? "")),
            h("td", {}, a.agent_id ?? ""),
            h("td", {}, fmtTime(a.started_unix_ms)),
            h("td", {}, a.ended_unix_ms ? fmtDuration(num(a.ended_unix_ms) - num(a.started_unix_ms)) : "running"),
            h("td", {}, a.outcome || "running"),
            h("td", { class: "num" }, fmtMoney(a.cost)),
            h("td", { class: "err" }, a.error ?? ""))))) : null,
        bytesBlock("Payload", spec.payload, spec.payload_json, "task-payload", !!t.contents_hidden),
        bytesBlock("Result", t.result, t.result_json, "task-result", !!t.contents_hidden),
      );
      if (t.workflow_id) {
        // Children: the workflow's tasks that depend on this one.
        try {
          const r = await api.get<TaskPage>(`/v1/tasks?workflow_id=${t.workflow_id}&page_size=1000`);
          const kids = (r.tasks ?? []).filter((c) => [...(c.spec?.depends_on ?? []), ...(c.spec?.depends_on_finished ?? [])].includes(id));
          children.replaceChildren(kids.length ? h("span", {}, ...kids.flatMap((c, i) => [i ? ", " : "", h("a", { href: `/tasks/${c.id}` }, `${c.id} (${c.step ?? ""})`)])) : "none");
        } catch {
          children.textContent = "–";
        }
      } else {
        children.textContent = "none";
      }
    }
    void load();
    return live.subscribe(["tasks"], load);
  },
};
