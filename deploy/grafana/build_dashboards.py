#!/usr/bin/env python3
"""Writes drover's Grafana dashboards (deploy/grafana/*.json) from the panel lists below.

Every query uses only metrics drover serve exports (docs/http-api.md#admin) and the
dashboard's Prometheus data-source variable `datasource`; the pool dashboards add a
`pool` variable. tests/integration/grafana.sh validates the files against
dashboard.schema.json and runs every query on a real Prometheus scraping a real drover
serve. Regenerate after a change:

    python3 deploy/grafana/build_dashboards.py
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
DS = {"type": "prometheus", "uid": "${datasource}"}
R = "$__rate_interval"


def q(expr, legend=""):
    return {"expr": expr, "legendFormat": legend}


def quantiles(metric, by="", extra=""):
    """p50 and p99 of a histogram over the rate interval."""
    group = f"le{', ' + by if by else ''}"
    sel = f"{metric}_bucket{extra}"
    prefix = "{{" + by + "}} " if by else ""
    return [
        q(f"histogram_quantile(0.5, sum by ({group}) (rate({sel}[{R}])))", prefix + "p50"),
        q(f"histogram_quantile(0.99, sum by ({group}) (rate({sel}[{R}])))", prefix + "p99"),
    ]


DASHBOARDS = {
    "overview": {
        "title": "drover: overview",
        "pool_var": False,
        "panels": [
            ("Tasks by state", "timeseries", "short", [q("sum by (state) (drover_tasks)", "{{state}}")]),
            ("Submitted, succeeded, failed per second", "timeseries", "ops", [
                q(f"sum(rate(drover_tasks_submitted_total[{R}]))", "submitted"),
                q(f"sum(rate(drover_tasks_succeeded_total[{R}]))", "succeeded"),
                q(f"sum(rate(drover_task_attempts_failed_total[{R}]))", "failed attempts"),
                q(f"sum(rate(drover_tasks_dead_lettered_total[{R}]))", "dead-lettered"),
            ]),
            ("Ready tasks by priority", "timeseries", "short",
             [q("sum by (priority) (drover_queue_depth)", "{{priority}}")]),
            ("Dispatch latency (ready to leased)", "timeseries", "s",
             quantiles("drover_dispatch_latency_seconds")),
            ("Oldest ready task by type", "timeseries", "s",
             [q("max by (type) (drover_oldest_ready_task_age_seconds)", "{{type}}")]),
            ("Outstanding over capacity", "stat", "percentunit",
             [q("sum(drover_outstanding_tasks) / sum(drover_capacity_tasks)")]),
            ("Dead letters", "stat", "short", [q('sum(drover_tasks{state="dead"})')]),
            ("Cost per hour (pools)", "stat", "currencyUSD", [q("sum(drover_fleet_burn_rate)")]),
            ("Agents and busy slots", "timeseries", "short", [
                q("sum(drover_agents_connected)", "agents connected"),
                q("sum(drover_agent_slots)", "slots"),
                q("sum(drover_agent_slots_busy)", "busy slots"),
            ]),
        ],
    },
    "scaling": {
        "title": "drover: scaling",
        "pool_var": True,
        "panels": [
            ("Agents by state", "timeseries", "short",
             [q('sum by (pool, state) (drover_pool_agents{pool=~"$pool"})', "{{pool}} {{state}}")]),
            ("Desired versus actual", "timeseries", "short", [
                q('sum by (pool) (drover_pool_desired_agents{pool=~"$pool"})', "{{pool}} desired"),
                q('sum by (pool) (drover_pool_agents{pool=~"$pool",state!="draining"})',
                  "{{pool}} actual"),
            ]),
            ("Ready tasks per agent (the HPA metric)", "timeseries", "short",
             [q('max by (pool) (pending_tasks_per_agent{pool=~"$pool"})', "{{pool}}")]),
            ("Scaling decisions by rule", "timeseries", "short",
             [q(f'sum by (pool, rule) (increase(drover_pool_scaling_decisions_total{{pool=~"$pool"}}[{R}]))',
                "{{pool}} {{rule}}")]),
            ("Time to acquire an agent (p90)", "timeseries", "s",
             [q(f'histogram_quantile(0.9, sum by (le, pool, start) (rate(drover_pool_acquire_seconds_bucket{{pool=~"$pool"}}[{R}])))',
                "{{pool}} {{start}}")]),
            ("Agent start time (cold start, mean)", "timeseries", "s",
             [q('max by (pool) (drover_pool_cold_start_seconds{pool=~"$pool"})', "{{pool}}")]),
            ("Agents started, crashed, retired per minute", "timeseries", "short", [
                q(f'sum by (pool) (rate(drover_pool_agents_started_total{{pool=~"$pool"}}[{R}])) * 60', "{{pool}} started"),
                q(f'sum by (pool) (rate(drover_pool_agents_crashed_total{{pool=~"$pool"}}[{R}])) * 60', "{{pool}} crashed"),
                q(f'sum by (pool) (rate(drover_pool_agents_retired_total{{pool=~"$pool"}}[{R}])) * 60', "{{pool}} retired"),
            ]),
        ],
    },
    "performance": {
        "title": "drover: performance",
        "pool_var": False,
        "panels": [
            ("Store commit time", "timeseries", "s", quantiles("drover_store_commit_seconds")),
            ("Commits and task rows written per second", "timeseries", "ops", [
                q(f"sum(rate(drover_store_commits_total[{R}]))", "commits"),
                q(f"sum(rate(drover_store_rows_written_total[{R}]))", "task rows"),
                q(f"sum(rate(drover_events_written_total[{R}]))", "events"),
            ]),
            ("Commands per engine batch", "timeseries", "short",
             quantiles("drover_engine_batch_commands")),
            ("Submitted to succeeded", "timeseries", "s",
             quantiles("drover_completion_latency_seconds")),
            ("Run time of attempts", "timeseries", "s", quantiles("drover_task_run_seconds")),
            ("Requests waiting for the engine", "timeseries", "short",
             [q("sum(drover_command_queue_depth)")]),
            ("Dispatches per second by tenant", "timeseries", "ops",
             [q(f"sum by (tenant) (rate(drover_tenant_dispatched_total[{R}]))", "{{tenant}}")]),
        ],
    },
    "resilience": {
        "title": "drover: resilience",
        "pool_var": False,
        "panels": [
            ("Agents by circuit breaker state", "timeseries", "short",
             [q("sum by (state) (drover_agent_breakers)", "{{state}}")]),
            ("Retries, lost leases, timeouts per second", "timeseries", "ops", [
                q(f"sum(rate(drover_task_retries_total[{R}]))", "retries"),
                q(f"sum(rate(drover_leases_expired_total[{R}]))", "leases expired"),
                q(f"sum(rate(drover_tasks_timed_out_total[{R}]))", "timed out"),
                q(f"sum(rate(drover_breaker_transitions_total[{R}]))", "breaker transitions"),
            ]),
            ("Submissions refused per second by reason", "timeseries", "ops",
             [q(f"sum by (reason) (rate(drover_tasks_rejected_total[{R}]))", "{{reason}}")]),
            ("Error ratio of attempts", "timeseries", "percentunit", [
                q(f"sum(rate(drover_task_attempts_failed_total[{R}])) / "
                  f"(sum(rate(drover_task_attempts_failed_total[{R}])) + sum(rate(drover_tasks_succeeded_total[{R}])))")]),
            ("Store up", "stat", "short", [q("min(drover_store_up)")]),
            ("Commit retries and failures", "timeseries", "short", [
                q(f"sum(increase(drover_store_commit_retries_total[{R}]))", "retries"),
                q(f"sum(increase(drover_store_commit_failures_total[{R}]))", "failures"),
            ]),
            ("Pool agents crashed", "timeseries", "short",
             [q(f"sum by (pool) (increase(drover_pool_agents_crashed_total[{R}]))", "{{pool}}")]),
        ],
    },
    "cost": {
        "title": "drover: cost",
        "pool_var": True,
        "panels": [
            ("Burn rate per pool (per hour)", "timeseries", "currencyUSD",
             [q('sum by (pool) (drover_pool_burn_rate{pool=~"$pool"})', "{{pool}}")]),
            ("Fleet burn rate (per hour)", "stat", "currencyUSD", [q("sum(drover_fleet_burn_rate)")]),
            ("Spend over the last hour", "timeseries", "currencyUSD",
             [q('sum by (pool) (increase(drover_pool_spend_total{pool=~"$pool"}[1h]))', "{{pool}}")]),
            ("Agent-hours per hour", "timeseries", "short",
             [q(f'sum by (pool) (rate(drover_pool_agent_seconds_total{{pool=~"$pool"}}[{R}]))', "{{pool}}")]),
            ("Task cost per hour by tenant", "timeseries", "short",
             [q(f"sum by (tenant) (rate(drover_task_cost_total[{R}])) * 3600", "{{tenant}}")]),
            ("Task cost per hour by type", "timeseries", "short",
             [q(f"sum by (type) (rate(drover_task_cost_total[{R}])) * 3600", "{{type}}")]),
        ],
    },
}


def dashboard(key, spec):
    templating = [{
        "name": "datasource", "label": "Prometheus", "type": "datasource",
        "query": "prometheus", "current": {}, "hide": 0, "refresh": 1,
    }]
    if spec["pool_var"]:
        templating.append({
            "name": "pool", "label": "Pool", "type": "query", "datasource": DS,
            "query": {"query": "label_values(drover_pool_agents, pool)", "refId": "pools"},
            "definition": "label_values(drover_pool_agents, pool)",
            "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2,
            "current": {"text": "All", "value": "$__all"}, "hide": 0,
        })
    panels = []
    for i, (title, kind, unit, targets) in enumerate(spec["panels"]):
        w = 8 if kind == "stat" else 12
        panels.append({
            "id": i + 1, "type": kind, "title": title, "datasource": DS,
            "gridPos": {"h": 8, "w": w, "x": (i % 2) * 12, "y": (i // 2) * 8},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {},
            "targets": [dict(t, refId=chr(ord("A") + j), datasource=DS) for j, t in enumerate(targets)],
        })
    return {
        "uid": f"drover-{key}", "title": spec["title"], "tags": ["drover"],
        "schemaVersion": 38, "version": 1, "editable": True, "timezone": "browser",
        "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": templating}, "annotations": {"list": []},
        "links": [{"title": "drover dashboards", "type": "dashboards", "tags": ["drover"]}],
        "panels": panels,
    }


if __name__ == "__main__":
    for key, spec in DASHBOARDS.items():
        path = os.path.join(HERE, f"drover-{key}.json")
        with open(path, "w") as f:
            json.dump(dashboard(key, spec), f, indent=2)
            f.write("\n")
        print(path)
