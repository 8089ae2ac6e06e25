// Overview: tasks by state, the flow per second, queue depth by priority, dispatch latency
// and cost per hour, over a chosen window (GET /v1/stats/series), and the current figures
// (GET /v1/stats).
import { api, query, type StatsResponse, type StatsSeries, type StatsSample } from "../api";
import { Chart, color } from "../charts";
import { fmtDuration, fmtInt, h, num } from "../dom";
import { live } from "../live";
import type { Page } from "../router";
import { errorBox } from "../ui";

const WINDOWS: [string, number][] = [
  ["5 min", 300],
  ["1 h", 3600],
  ["6 h", 21600],
  ["24 h", 86400],
];
const STATES = ["waiting", "ready", "leased", "retry_wait", "succeeded", "dead", "canceled", "expired"];
const PRIORITIES = ["critical", "high", "normal", "low", "background"];

function rate(samples: StatsSample[], pick: (s: StatsSample) => number, perS = 1): (number | null)[] {
  return samples.map((s, i) => {
    if (i === 0) return null;
    const dt = (num(s.unix_ms) - num(samples[i - 1].unix_ms)) / 1000;
    const d = pick(s) - pick(samples[i - 1]);
    return dt > 0 && d >= 0 ? (d / dt) * perS : null;
  });
}

export const page: Page = {
  render(root, _params, q) {
    let windowS = Number(q.get("window") ?? 300);
    if (!WINDOWS.some(([, s]) => s === windowS)) windowS = 300;
    const counters = h("div", { class: "counters", "data-testid": "counters" });
    const error = h("div");
    const picker = h("div", { class: "picker" },
      ...WINDOWS.map(([label, s]) =>
        h("button", {
          type: "button",
          class: s === windowS ? "on" : "",
          "data-testid": `window-${s}`,
          onclick: () => {
            windowS = s;
            history.replaceState(null, "", `/?window=${s}`);
            for (const b of picker.querySelectorAll("button")) b.classList.toggle("on", b.dataset.testid === `window-${s}`);
            void refreshSeries();
          },
        }, label)));
    const flow = new Chart("Tasks per second", "tasks/s", [
      { label: "submitted", color: color(0) },
      { label: "succeeded", color: color(1) },
      { label: "failed attempts", color: color(2) },
      { label: "dead-lettered", color: color(4) },
    ]);
    const states = new Chart("Tasks by state", "tasks", [
      { label: "waiting", color: color(6) },
      { label: "ready", color: color(0) },
      { label: "leased", color: color(1) },
      { label: "retry_wait", color: color(3) },
    ]);
    const queue = new Chart("Queue depth by priority", "ready tasks",
      PRIORITIES.map((p, i) => ({ label: p, color: color(i) })));
    const latency = new Chart("Dispatch latency", "ms", [
      { label: "p50", color: color(0) },
      { label: "p99", color: color(2) },
    ]);
    const cost = new Chart("Cost per hour", "cost/h", [{ label: "cost", color: color(4) }]);
    const charts = [flow, states, queue, latency, cost];
    root.append(
      h("h1", {}, "Overview"),
      counters,
      error,
      h("div", { class: "row" }, h("h2", {}, "Over the last"), picker),
      h("div", { class: "grid" }, ...charts.map((c) => c.el)),
    );

    async function refreshStats(): Promise<void> {
      try {
        const s = await api.get<StatsResponse>("/v1/stats");
        const byState = s.tasks_by_state ?? {};
        const card = (id: string, label: string, value: string) =>
          h("div", { class: "card" }, h("div", { class: "value", "data-testid": id }, value), h("div", { class: "label" }, label));
        counters.replaceChildren(
          card("count-submitted", "submitted", fmtInt(s.submitted_total)),
          card("count-succeeded", "succeeded", fmtInt(s.succeeded_total)),
          card("count-dead-lettered", "dead-lettered", fmtInt(s.dead_lettered_total)),
          card("count-retries", "retries", fmtInt(s.retries_total)),
          card("count-rejected", "rejected", fmtInt(s.rejected_total)),
          card("count-outstanding", "outstanding", fmtInt(s.outstanding)),
          card("count-agents", "agents (busy/slots)", `${fmtInt(s.agents)} (${fmtInt(s.agent_slots_busy)}/${fmtInt(s.agent_slots)})`),
          card("uptime", "up", fmtDuration(num(s.uptime_ms))),
          ...STATES.map((st) => card(`count-state-${st}`, st, fmtInt(byState[st]))),
        );
        error.replaceChildren();
      } catch (e) {
        error.replaceChildren(errorBox(e));
      }
    }

    async function refreshSeries(): Promise<void> {
      try {
        const r = await api.get<StatsSeries>(`/v1/stats/series${query({ window_s: windowS })}`);
        const ss = r.samples ?? [];
        const x = ss.map((s) => num(s.unix_ms) / 1000);
        flow.set(x, [
          rate(ss, (s) => num(s.submitted_total)),
          rate(ss, (s) => num(s.succeeded_total)),
          rate(ss, (s) => num(s.failed_attempts_total)),
          rate(ss, (s) => num(s.dead_lettered_total)),
        ]);
        states.set(x, ["waiting", "ready", "leased", "retry_wait"].map((st) => ss.map((s) => num(s.tasks_by_state?.[st]))));
        queue.set(x, PRIORITIES.map((p) => ss.map((s) => num(s.queue_by_priority?.[p]))));
        latency.set(x, [ss.map((s) => s.dispatch_p50_ms ?? 0), ss.map((s) => s.dispatch_p99_ms ?? 0)]);
        cost.set(x, [rate(ss, (s) => s.cost_total ?? 0, 3600)]);
      } catch (e) {
        error.replaceChildren(errorBox(e));
      }
    }

    void refreshStats();
    void refreshSeries();
    const unsub = live.subscribe(["stats", "tasks", "agents"], refreshStats);
    // The series has a new sample every 5 s whatever the notices say.
    const timer = window.setInterval(() => void refreshSeries(), 5000);
    return () => {
      unsub();
      window.clearInterval(timer);
      for (const c of charts) c.destroy();
    };
  },
};
