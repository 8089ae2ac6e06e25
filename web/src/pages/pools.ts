// Pools and agents: each pool's desired versus actual size, mode, spend against budget; a
// pool's agents by state over time, its scaling decisions with their rule (and forecast
// band), the agents' breakers and current tasks, and stopping an agent.
import { api, type AgentStatus, type Decision, type LoadMinute, type PoolsResponse, type PoolStatus } from "../api";
import { Chart, color } from "../charts";
import { fmtDuration, fmtMoney, fmtTime, h, num } from "../dom";
import { live } from "../live";
import type { Page } from "../router";
import { can, confirmAction, errorBox } from "../ui";

const actual = (p: PoolStatus) => (p.starting ?? 0) + (p.idle ?? 0) + (p.busy ?? 0) + (p.draining ?? 0);

function budget(p: PoolStatus): string {
  const burn = `${fmtMoney(p.burn_rate)}/h`;
  return p.hourly_budget ? `${burn} of ${fmtMoney(p.hourly_budget)}/h` : burn;
}

export const listPage: Page = {
  render(root) {
    const error = h("div");
    const body = h("tbody");
    const fleet = h("p", { class: "muted" });
    root.append(h("h1", {}, "Pools"), fleet, error,
      h("table", { class: "list", "data-testid": "pools-table" },
        h("thead", {}, h("tr", {}, ...["pool", "types", "mode", "desired", "actual", "starting/idle/busy/draining", "pending", "utilisation", "spend", "burn"].map((c) => h("th", {}, c)))),
        body));
    async function load(): Promise<void> {
      try {
        const r = await api.get<PoolsResponse>("/v1/pools");
        fleet.textContent = `fleet burn ${fmtMoney(r.fleet_burn_rate)}/h${r.fleet_hourly_budget ? ` of ${fmtMoney(r.fleet_hourly_budget)}/h` : ""}`;
        body.replaceChildren(...(r.pools ?? []).map((p) => h("tr", { "data-testid": `pool-row-${p.name}` },
          h("td", {}, h("a", { href: `/pools/${p.name}` }, p.name)),
          h("td", {}, (p.types ?? []).join(", ")),
          h("td", {}, p.mode || "reactive"),
          h("td", { class: "num" }, String(p.desired ?? 0)),
          h("td", { class: "num", "data-testid": `pool-actual-${p.name}` }, String(actual(p))),
          h("td", {}, `${p.starting ?? 0}/${p.idle ?? 0}/${p.busy ?? 0}/${p.draining ?? 0}`),
          h("td", { class: "num" }, String(num(p.pending))),
          h("td", { class: "num" }, `${Math.round((p.utilization ?? 0) * 100)} %`),
          h("td", { class: "num" }, fmtMoney(p.spend)),
          h("td", {}, budget(p)))));
        if (!r.pools?.length) body.append(h("tr", {}, h("td", { colspan: 10, class: "muted" }, "no pools (docs/pools.md)")));
        error.replaceChildren();
      } catch (e) {
        error.replaceChildren(errorBox(e));
      }
    }
    void load();
    return live.subscribe(["pools", "agents"], load);
  },
};

export const poolPage: Page = {
  render(root, params) {
    const name = params[0];
    const error = h("div");
    const summary = h("div");
    const agentsChart = new Chart("Agents by state", "agents", [
      { label: "starting", color: color(3) },
      { label: "idle", color: color(6) },
      { label: "busy", color: color(1) },
      { label: "draining", color: color(2) },
      { label: "queue depth", color: color(0), dash: [4, 4] },
    ]);
    const decisions = h("tbody");
    const members = h("tbody");
    const agents = h("tbody");
    root.append(h("h1", {}, `Pool ${name}`), error, summary,
      h("div", { class: "grid" }, agentsChart.el),
      h("h2", {}, "Members"),
      h("table", { class: "list", "data-testid": "pool-members" },
        h("thead", {}, h("tr", {}, ...["member", "pid", "state", "agent", "breaker", "tasks", "started", ""].map((c) => h("th", {}, c)))), members),
      h("h2", {}, "Scaling decisions"),
      h("table", { class: "list", "data-testid": "pool-decisions" },
        h("thead", {}, h("tr", {}, ...["when", "current", "metric / target", "proposed", "stabilised", "desired", "rule", "mode", "forecast (p10–p90 agents)"].map((c) => h("th", {}, c)))), decisions),
      h("h2", {}, "Agents of its types"),
      h("table", { class: "list", "data-testid": "pool-agents" },
        h("thead", {}, h("tr", {}, ...["agent", "name", "types", "tasks", "breaker", "connected", "last seen"].map((c) => h("th", {}, c)))), agents));

    async function load(): Promise<void> {
      try {
        const [pools, dec, hist, ag] = await Promise.all([
          api.get<PoolsResponse>("/v1/pools"),
          api.get<{ decisions?: Decision[] }>(`/v1/pools/${name}/decisions`),
          api.get<{ minutes?: LoadMinute[] }>(`/v1/pools/${name}/history`),
          api.get<{ agents?: AgentStatus[] }>("/v1/agents"),
        ]);
        const p = (pools.pools ?? []).find((x) => x.name === name);
        if (!p) {
          summary.replaceChildren(h("p", {}, `no pool named ${name}`));
          return;
        }
        const byAgent = new Map((ag.agents ?? []).map((a) => [a.id, a]));
        summary.replaceChildren(h("p", { "data-testid": "pool-summary" },
          `${p.runtime || "process"} · ${p.mode || "reactive"} · desired ${p.desired ?? 0}, actual ${actual(p)} (min ${p.min ?? 0}, max ${p.max ?? 0}) · pending ${num(p.pending)} · spend ${fmtMoney(p.spend)}, burn ${budget(p)}`,
          p.acquire_warm?.count ? ` · acquire warm p50 ${fmtDuration(p.acquire_warm.p50_ms ?? 0)}` : "",
          p.acquire_cold?.count ? `, cold p50 ${fmtDuration(p.acquire_cold.p50_ms ?? 0)}` : ""));
        const mins = hist.minutes ?? [];
        agentsChart.set(mins.map((m) => num(m.unix_minute) * 60), [
          mins.map((m) => m.agents_starting ?? 0),
          mins.map((m) => m.agents_idle ?? 0),
          mins.map((m) => m.agents_busy ?? 0),
          mins.map((m) => m.agents_draining ?? 0),
          mins.map((m) => num(m.queue_depth)),
        ]);
        members.replaceChildren(...(p.members ?? []).map((m) => {
          const a = m.agent_id ? byAgent.get(m.agent_id) : undefined;
          return h("tr", { "data-testid": `member-${m.id}` },
            h("td", {}, m.id ?? ""), h("td", {}, String(m.pid ?? "")), h("td", {}, m.state ?? ""),
            h("td", {}, m.agent_id ?? "–"), h("td", {}, a?.breaker || "closed"), h("td", { class: "num" }, String(m.leased ?? 0)),
            h("td", {}, fmtTime(m.started_unix_ms)),
            h("td", {}, can.operate() ? h("button", {
              type: "button", "data-testid": `stop-agent-${m.id}`,
              onclick: async () => {
                if (!(await confirmAction(`Stop agent ${m.id} of pool ${name}? It hands back its tasks; the pool starts another if it needs one.`))) return;
                try {
                  await api.post("/v1/pools:stop-agent", { member: m.id });
                  await load();
                } catch (e) {
                  error.replaceChildren(errorBox(e));
                }
              },
            }, "Stop") : null));
        }));
        decisions.replaceChildren(...[...(dec.decisions ?? [])].reverse().slice(0, 50).map((d) => h("tr", {},
          h("td", {}, fmtTime(d.at_unix_ms)), h("td", { class: "num" }, String(d.current ?? 0)),
          h("td", {}, `${(d.metric ?? 0).toFixed(2)} / ${(d.target ?? 0).toFixed(2)}`),
          h("td", { class: "num" }, String(d.proposed ?? 0)), h("td", { class: "num" }, String(d.stabilized ?? 0)),
          h("td", { class: "num" }, String(d.desired ?? 0)), h("td", {}, d.rule ?? ""),
          h("td", {}, d.mode || "reactive"),
          h("td", {}, (d.forecast ?? []).map((f) => `${f.minutes} min: ${(f.p10 ?? 0).toFixed(1)}–${(f.p90 ?? 0).toFixed(1)} (${f.agents ?? 0})`).join("; ") || "–"))));
        const types = new Set(p.types ?? []);
        agents.replaceChildren(...(ag.agents ?? []).filter((a) => (a.types ?? []).some((t) => types.has(t))).map((a) => h("tr", {},
          h("td", {}, a.id), h("td", {}, a.name ?? ""), h("td", {}, (a.types ?? []).join(", ")),
          h("td", { class: "num" }, `${a.leased ?? 0}/${a.max_concurrency ?? 0}`),
          h("td", {}, h("span", { class: `badge b-${a.breaker || "closed"}` }, a.breaker || "closed")),
          h("td", {}, a.connected ? "yes" : "no"), h("td", {}, fmtTime(a.last_seen_unix_ms)))));
        error.replaceChildren();
      } catch (e) {
        error.replaceChildren(errorBox(e));
      }
    }
    void load();
    const unsub = live.subscribe(["pools", "agents"], load);
    return () => {
      unsub();
      agentsChart.destroy();
    };
  },
};
