// One workflow: its DAG (each step's state, the critical path highlighted), progress and
// cost; a map-reduce job's items are its map steps. Cancel, confirmed.
import { api, type Task, type TaskPage, type Workflow } from "../api";
import { drawDag, type DagEdge, type DagNode } from "../dag";
import { badge, enumName, fmtDuration, fmtMoney, h, num, replace } from "../dom";
import { live } from "../live";
import { navigate, type Page } from "../router";
import { can, confirmAction, errorBox } from "../ui";

const MAX_TASKS = 2000;

async function workflowTasks(id: string): Promise<Task[]> {
  const out: Task[] = [];
  let token = "";
  do {
    const r = await api.get<TaskPage>(`/v1/tasks?workflow_id=${id}&page_size=1000${token ? `&page_token=${token}` : ""}`);
    out.push(...(r.tasks ?? []));
    token = r.next_page_token ?? "";
  } while (token && out.length < MAX_TASKS);
  return out;
}

export const page: Page = {
  render(root, params) {
    const id = params[0];
    const body = h("div");
    root.append(h("h1", {}, `Workflow ${id}`), body);
    async function load(): Promise<void> {
      let w: Workflow;
      let tasks: Task[];
      try {
        [w, tasks] = await Promise.all([api.get<Workflow>(`/v1/workflows/${id}`), workflowTasks(id)]);
      } catch (e) {
        body.replaceChildren(errorBox(e));
        return;
      }
      const st = enumName(w.state, "WORKFLOW_STATE_");
      const critical = new Set(w.critical_path ?? []);
      const nodes: DagNode[] = tasks.map((t) => ({
        id: t.id,
        label: t.step || t.id,
        state: enumName(t.state, "TASK_STATE_"),
        critical: critical.has(t.id),
        href: `/tasks/${t.id}`,
      }));
      const edges: DagEdge[] = [];
      for (const t of tasks) {
        for (const p of [...(t.spec?.depends_on ?? []), ...(t.spec?.depends_on_finished ?? [])]) {
          edges.push({ from: p, to: t.id, critical: critical.has(p) && critical.has(t.id) });
        }
      }
      const actions = h("div", { class: "actions" });
      if (st === "running" && can.cancel()) {
        actions.append(h("button", {
          type: "button", class: "danger", "data-testid": "cancel-workflow-button",
          onclick: async () => {
            if (!(await confirmAction(`Cancel workflow ${id} and every task of it not finished?`))) return;
            try {
              await api.post(`/v1/workflows/${id}:cancel`, { reason: "canceled from the dashboard" });
              await load();
            } catch (e) {
              actions.append(errorBox(e));
            }
          },
        }, "Cancel workflow"));
      }
      const pct = w.total ? Math.round(((w.done ?? 0) / w.total) * 100) : 0;
      replace(body,
        h("div", { class: "row" }, badge(st), h("strong", {}, w.name ?? ""), actions),
        h("p", {},
          h("progress", { max: 100, value: pct, "data-testid": "workflow-progress" }),
          ` ${w.done ?? 0} of ${w.total ?? 0} done (${w.succeeded ?? 0} succeeded, ${w.failed ?? 0} failed, ${w.canceled ?? 0} canceled)`,
          ` · cost ${fmtMoney(w.cost)} · critical path ${fmtDuration(num(w.critical_path_ms))}`),
        w.reason ? h("p", { class: "muted" }, w.reason) : null,
        tasks.length >= MAX_TASKS ? h("p", { class: "muted" }, `the first ${MAX_TASKS} tasks are drawn`) : null,
        h("div", { class: "dag-wrap" }, drawDag(nodes, edges, (href) => navigate(href))),
        h("p", { class: "muted" }, "Click a step for its task. The critical path is drawn thick."),
      );
    }
    void load();
    return live.subscribe(["workflows", "tasks"], load);
  },
};
