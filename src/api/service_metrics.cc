// Service::Metrics: the Prometheus text of /metrics (engine figures on the engine thread,
// store and runtime figures on the store thread, pools' figures from the pool manager).
#include "absl/strings/str_cat.h"
#include "api/pool_metrics.h"
#include "api/service.h"
#include "api/service_internal.h"
#include "core/names.h"
#include "obs/metrics.h"

namespace drover::api {

using core::Engine;
using internal::Refused;

void Service::Metrics(const auth::Caller& caller, Reply<std::string> done) {
  auto shared = std::make_shared<Reply<std::string>>(std::move(done));
  store::Store& store = store_;
  Runtime& runtime = runtime_;
  pool::PoolManager* pools = pools_;
  obs::EventHub* hub = events_;
  obs::OtlpExporter* tracer = tracer_;
  const bool queued = runtime_.Post([shared, &store, &runtime, pools, hub, tracer](Engine& e,
                                                                                   Batch& batch) {
    obs::PromWriter w;
    w.Family("drover_tasks", "gauge", "Tasks known to the engine, by state.");
    for (int s = v1::TASK_STATE_WAITING; s <= v1::TASK_STATE_EXPIRED; ++s) {
      w.Sample({{"state", core::StateName(static_cast<v1::TaskState>(s))}},
               static_cast<double>(e.CountInState(static_cast<v1::TaskState>(s))));
    }
    w.Family("drover_queue_depth", "gauge", "Ready tasks by agent type and priority.");
    for (const auto& [key, depth] : e.queue_depths()) {
      w.Sample({{"type", key.first},
                {"priority", core::PriorityName(static_cast<v1::Priority>(key.second))}},
               static_cast<double>(depth));
    }
    w.Family("drover_oldest_ready_task_age_seconds", "gauge",
             "How long the oldest ready task of a type has waited for an agent.");
    for (const auto& [type, age] : e.OldestReadyAges()) {
      w.Sample({{"type", type}}, absl::ToDoubleSeconds(age));
    }
    w.Gauge("drover_outstanding_tasks", "Non-terminal tasks (admission control counts these).",
            static_cast<double>(e.outstanding()));
    w.Gauge("drover_capacity_tasks", "Configured capacity of outstanding tasks.",
            static_cast<double>(e.options().capacity));
    const core::EngineProbe& p = e.probe();
    w.Counter("drover_tasks_submitted_total", "Tasks accepted.", p.submitted);
    w.Counter("drover_tasks_deduplicated_total",
              "Submissions answered with an earlier task by idempotency key.", p.deduplicated);
    w.Family("drover_tasks_rejected_total", "counter", "Submissions refused, by reason.");
    w.Sample({{"reason", "queue_full"}}, p.rejected_full);
    w.Sample({{"reason", "load_shedding"}}, p.rejected_shed);
    w.Sample({{"reason", "invalid"}}, p.rejected_invalid);
    {
      int64_t rate = 0, out = 0;
      for (const auto& [tenant, r] : p.rejected_quota) {
        rate += r.rate;
        out += r.outstanding;
      }
      w.Sample({{"reason", "tenant_rate"}}, rate);
      w.Sample({{"reason", "tenant_outstanding"}}, out);
    }
    // Per tenant only for the tenants the config lists with quotas (the rest: tenant="*").
    w.Family("drover_tenant_quota_rejected_total", "counter",
             "Submissions refused by a tenant's quota, by tenant and quota.");
    for (const auto& [tenant, q] : e.options().tenant_quotas) {
      auto it = p.rejected_quota.find(tenant);
      const auto r =
          it == p.rejected_quota.end() ? core::EngineProbe::QuotaRejections() : it->second;
      w.Sample({{"tenant", tenant}, {"quota", "rate"}}, r.rate);
      w.Sample({{"tenant", tenant}, {"quota", "outstanding"}}, r.outstanding);
    }
    {
      auto it = p.rejected_quota.find("");
      const auto r =
          it == p.rejected_quota.end() ? core::EngineProbe::QuotaRejections() : it->second;
      w.Sample({{"tenant", "*"}, {"quota", "rate"}}, r.rate);
      w.Sample({{"tenant", "*"}, {"quota", "outstanding"}}, r.outstanding);
    }
    w.Counter("drover_tasks_dispatched_total", "Leases handed to agents.", p.dispatched);
    w.Counter("drover_tasks_succeeded_total", "Tasks completed successfully.", p.succeeded);
    w.Counter("drover_task_attempts_failed_total", "Attempts counted as failures.",
              p.failed_attempts);
    w.Counter("drover_task_retries_total", "Tasks queued again after a failed attempt.", p.retries);
    w.Counter("drover_leases_expired_total", "Leases that expired without a heartbeat.",
              p.leases_expired);
    w.Counter("drover_tasks_timed_out_total", "Attempts past their execution timeout.",
              p.timed_out);
    w.Counter("drover_tasks_dead_lettered_total", "Tasks moved to the dead-letter queue.",
              p.dead_lettered);
    w.Counter("drover_tasks_canceled_total", "Tasks canceled.", p.canceled);
    w.Counter("drover_tasks_expired_total", "Tasks not started by their deadline.", p.expired);
    w.Counter("drover_stale_reports_total",
              "Completions, failures, checkpoints and lease extensions refused for a stale "
              "lease token.",
              p.stale_reports);
    w.Counter("drover_dead_letters_purged_total", "Dead letters deleted for good.", p.purged);
    w.Counter("drover_dead_letters_reprocessed_total", "Dead letters queued again.", p.reprocessed);
    w.Counter("drover_workflows_evicted_total",
              "Finished workflows dropped from memory with their last task (still in the store).",
              p.workflows_evicted);
    w.Counter("drover_tasks_evicted_total",
              "Finished tasks dropped from memory after their retention (kept in the store).",
              p.evicted);
    w.Family("drover_workflows", "gauge",
             "Workflows (and map-reduce jobs) in memory by state (a finished one leaves with its "
             "last task).");
    const std::array<int64_t, 5> wf = e.WorkflowsByState();
    for (int s = v1::WORKFLOW_STATE_RUNNING; s <= v1::WORKFLOW_STATE_CANCELED; ++s) {
      w.Sample({{"state", core::WorkflowStateName(static_cast<v1::WorkflowState>(s))}},
               static_cast<double>(wf[s]));
    }
    w.Counter("drover_workflows_submitted_total", "Workflows and map-reduce jobs accepted.",
              p.workflows_submitted);
    w.Family("drover_workflow_critical_path_seconds", "gauge",
             "Expected time left on the longest remaining path of a running workflow (the 100 "
             "oldest running workflows).");
    core::WorkflowFilter running;
    running.state = v1::WORKFLOW_STATE_RUNNING;
    running.limit = 100;
    std::vector<core::WorkflowId> running_ids;
    for (const v1::Workflow* rw : e.ListWorkflows(running)) running_ids.push_back(rw->id());
    for (core::WorkflowId id : running_ids) {
      absl::StatusOr<v1::Workflow> d = e.DescribeWorkflow(id);
      if (d.ok()) {
        w.Sample({{"workflow", absl::StrCat(id)}},
                 static_cast<double>(d->critical_path_ms()) / 1000.0);
      }
    }
    w.Family("drover_tasks_canceled_by_dependency_total", "counter",
             "Tasks canceled because a parent did not succeed, or by their workflow's fail_fast.");
    w.Sample({{"cause", "parent_failed"}}, p.canceled_by_parent);
    w.Sample({{"cause", "fail_fast"}}, p.canceled_by_fail_fast);
    w.Family("drover_dispatch_latency_seconds", "histogram",
             "Time from a task becoming ready to its lease.");
    w.HistogramSample({}, p.dispatch_latency);
    w.Family("drover_completion_latency_seconds", "histogram", "Time from submission to success.");
    w.HistogramSample({}, p.completion_latency);
    w.Family("drover_task_run_seconds", "histogram", "Time an attempt held its lease.");
    w.HistogramSample({}, p.run_time);
    int64_t slots = 0, busy = 0, streams = 0;
    for (const auto& [id, a] : e.agents()) {
      slots += a.max_concurrency;
      busy += static_cast<int64_t>(a.leased.size());
      streams += a.stream_open ? 1 : 0;
    }
    w.Gauge("drover_agents", "Registered agents.", static_cast<double>(e.agents().size()));
    int64_t breakers[3] = {0, 0, 0};
    for (const auto& [id, a] : e.agents()) breakers[static_cast<int>(a.breaker)]++;
    w.Family("drover_agent_breakers", "gauge", "Registered agents by circuit breaker state.");
    for (core::Breaker b :
         {core::Breaker::kClosed, core::Breaker::kOpen, core::Breaker::kHalfOpen}) {
      w.Sample({{"state", core::BreakerName(b)}},
               static_cast<double>(breakers[static_cast<int>(b)]));
    }
    w.Family("drover_breaker_transitions_total", "counter",
             "Circuit breaker transitions of agents, by the state entered.");
    w.Sample({{"to", "open"}}, p.breaker_opened);
    w.Sample({{"to", "half_open"}}, p.breaker_half_opened);
    w.Sample({{"to", "closed"}}, p.breaker_closed);
    w.Counter("drover_agent_messages_sent_total", "SendMessage calls accepted.", p.messages_sent);
    w.Counter("drover_agent_messages_pushed_total",
              "Messages pushed to connected agents (one per agent reached).", p.messages_pushed);
    w.Counter("drover_task_failures_blamed_on_agent_total",
              "Failed attempts not counted against their task: the agent's breaker was at fault.",
              p.failures_blamed_on_agent);
    w.Counter("drover_tasks_preempted_total",
              "Low or background attempts stopped for a critical task (not counted).", p.preempted);
    w.Family("drover_tasks_held_total", "counter",
             "Times a ready task was held back: a named resource, or no agent within its cost "
             "budget.");
    w.Sample({{"reason", "resource"}}, p.resource_waits);
    w.Sample({{"reason", "cost_budget"}}, p.budget_waits);
    w.Gauge("drover_tasks_ready_held",
            "READY tasks held back now: waiting for a named resource or an agent within budget.",
            static_cast<double>(e.CountInState(v1::TASK_STATE_READY) - e.RunnableReadyAll()));
    w.Counter("drover_tasks_budget_exhausted_total",
              "Tasks dead-lettered because their attempts spent their cost budget.",
              p.budget_exhausted);
    const std::vector<core::ResourceUsage> resources = e.Resources();
    w.Family("drover_resource_capacity", "gauge", "Capacity of a named resource.");
    for (const core::ResourceUsage& u : resources) {
      w.Sample({{"resource", u.name}, {"kind", core::ResourceKindName(u.spec.kind)}},
               static_cast<double>(u.spec.capacity));
    }
    w.Family("drover_resource_in_use", "gauge",
             "Semaphore units held by running attempts (token buckets: 0).");
    for (const core::ResourceUsage& u : resources) {
      w.Sample({{"resource", u.name}}, static_cast<double>(u.in_use));
    }
    w.Family("drover_resource_available", "gauge",
             "Free semaphore units, or tokens in a bucket now.");
    for (const core::ResourceUsage& u : resources) w.Sample({{"resource", u.name}}, u.available);
    w.Family("drover_resource_waiting_tasks", "gauge", "Ready tasks held back for a resource.");
    for (const core::ResourceUsage& u : resources) {
      w.Sample({{"resource", u.name}}, static_cast<double>(u.waiting));
    }
    w.Family("drover_resource_acquired_total", "counter", "Attempts that took the resource.");
    for (const core::ResourceUsage& u : resources) {
      w.Sample({{"resource", u.name}}, static_cast<double>(u.acquired_total));
    }
    w.Family("drover_task_cost_total", "counter",
             "Actual cost of attempts (agent cost_factor x run seconds), by tenant and type.");
    for (const auto& [key, sum] : e.costs()) {
      w.Sample({{"tenant", key.first}, {"type", key.second}}, sum.cost);
    }
    w.Family("drover_task_attempt_seconds_total", "counter",
             "Run time of attempts, by tenant and type.");
    for (const auto& [key, sum] : e.costs()) {
      w.Sample({{"tenant", key.first}, {"type", key.second}}, sum.run_seconds);
    }
    const std::vector<core::TenantUsage> tenants = e.Tenants();
    w.Family("drover_tenant_ready_tasks", "gauge", "Ready tasks in the queues, by tenant.");
    for (const core::TenantUsage& t : tenants) {
      w.Sample({{"tenant", t.tenant}}, static_cast<double>(t.ready));
    }
    w.Family("drover_tenant_dispatched_total", "counter", "Leases handed out, by tenant.");
    for (const core::TenantUsage& t : tenants) {
      w.Sample({{"tenant", t.tenant}}, static_cast<double>(t.dispatched_total));
    }
    // For an external HPA or KEDA: the same inputs drover's autoscaler uses.
    w.Family("task_queue_depth", "gauge", "Ready tasks by priority (all types).");
    {
      std::array<int64_t, 6> by_priority{};
      for (const auto& [key, depth] : e.queue_depths()) by_priority[key.second] += depth;
      for (int p = v1::PRIORITY_CRITICAL; p <= v1::PRIORITY_BACKGROUND; ++p) {
        w.Sample({{"priority", core::PriorityName(static_cast<v1::Priority>(p))}},
                 static_cast<double>(by_priority[p]));
      }
    }
    if (pools != nullptr) {
      const v1::ListPoolsResponse ps = pools->ListPools();
      w.Family("drover_pool_agents", "gauge", "Agents of a pool by state.");
      for (const v1::PoolStatus& p : ps.pools()) {
        w.Sample({{"pool", p.name()}, {"state", "starting"}}, p.starting());
        w.Sample({{"pool", p.name()}, {"state", "idle"}}, p.idle());
        w.Sample({{"pool", p.name()}, {"state", "busy"}}, p.busy());
        w.Sample({{"pool", p.name()}, {"state", "draining"}}, p.draining());
      }
      w.Family("drover_pool_scaling_decisions_total", "counter",
               "Autoscaler decisions of a pool, by the rule that settled them.");
      for (const v1::PoolStatus& p : ps.pools()) {
        for (const auto& [rule, n] : p.decisions_by_rule()) {
          w.Sample({{"pool", p.name()}, {"rule", rule}}, static_cast<double>(n));
        }
      }
      w.Family("drover_pool_desired_agents", "gauge", "The autoscaler's last decision per pool.");
      for (const v1::PoolStatus& p : ps.pools()) w.Sample({{"pool", p.name()}}, p.desired());
      w.Family("pending_tasks_per_agent", "gauge",
               "Ready tasks of a pool's types per agent of the pool (the HPA metric).");
      for (const v1::PoolStatus& p : ps.pools()) {
        const int agents = p.starting() + p.idle() + p.busy();
        w.Sample({{"pool", p.name()}}, agents > 0 ? static_cast<double>(p.pending()) / agents
                                                  : static_cast<double>(p.pending()));
      }
      w.Family("agent_utilization_ratio", "gauge", "Busy slots over slots of a pool's agents.");
      for (const v1::PoolStatus& p : ps.pools()) w.Sample({{"pool", p.name()}}, p.utilization());
      w.Family("drover_pool_agents_started_total", "counter", "Agents a pool started.");
      for (const v1::PoolStatus& p : ps.pools()) w.Sample({{"pool", p.name()}}, p.started_total());
      w.Family("drover_pool_agents_crashed_total", "counter", "Pool agents that exited unasked.");
      for (const v1::PoolStatus& p : ps.pools()) w.Sample({{"pool", p.name()}}, p.crashed_total());
      w.Family("drover_pool_agents_retired_total", "counter",
               "Pool agents replaced after max_uses attempts.");
      for (const v1::PoolStatus& p : ps.pools()) w.Sample({{"pool", p.name()}}, p.retired_total());
      w.Family("drover_pool_agent_seconds_total", "counter",
               "Agent time a pool has run (paid), in seconds.");
      for (const v1::PoolStatus& p : ps.pools()) {
        w.Sample({{"pool", p.name()}}, p.agent_hours() * 3600);
      }
      w.Family("drover_pool_spend_total", "counter",
               "What a pool's agents have cost so far (agent-hours x price per agent-hour).");
      for (const v1::PoolStatus& p : ps.pools()) w.Sample({{"pool", p.name()}}, p.spend());
      w.Family("drover_pool_burn_rate", "gauge", "What a pool's agents cost per hour now.");
      for (const v1::PoolStatus& p : ps.pools()) w.Sample({{"pool", p.name()}}, p.burn_rate());
      w.Gauge("drover_fleet_burn_rate", "What every pool's agents cost per hour now.",
              ps.fleet_burn_rate());
      w.Family("drover_pool_cold_start_seconds", "gauge",
               "Mean time from starting a pool agent to its registration.");
      for (const v1::PoolStatus& p : ps.pools()) {
        w.Sample({{"pool", p.name()}}, p.cold_start_ms_avg() / 1000.0);
      }
      w.Family("drover_pool_unhealthy_total", "counter",
               "Pool agents replaced after failing their health command.");
      for (const v1::PoolStatus& p : ps.pools())
        w.Sample({{"pool", p.name()}}, p.unhealthy_total());
      WritePredictivePoolMetrics(ps, w);
      const std::vector<pool::PoolController::Latencies> lat = pools->Latencies();
      w.Family("drover_pool_acquire_seconds", "histogram",
               "From a task being ready to a pool agent taking it; start=\"warm\": the agent "
               "was running already, \"cold\": the task waited for an agent to start.");
      for (const auto& l : lat) {
        w.HistogramSample({{"pool", l.pool}, {"start", "warm"}}, l.acquire_warm);
        w.HistogramSample({{"pool", l.pool}, {"start", "cold"}}, l.acquire_cold);
      }
      w.Family("drover_pool_agent_start_seconds", "histogram",
               "From starting a pool agent to its registration (its cold start).");
      for (const auto& l : lat) w.HistogramSample({{"pool", l.pool}}, l.agent_start);
    }
    w.Gauge("drover_agents_connected", "Agents with an open work stream.",
            static_cast<double>(streams));
    w.Gauge("drover_agent_slots", "Task slots of registered agents.", static_cast<double>(slots));
    w.Gauge("drover_agent_slots_busy", "Task slots holding a lease.", static_cast<double>(busy));
    if (tracer != nullptr) {
      const obs::OtlpStats ts = tracer->stats();
      w.Counter("drover_trace_spans_exported_total", "Spans the OTLP receiver accepted.",
                static_cast<double>(ts.exported));
      w.Family("drover_trace_spans_dropped_total", "counter",
               "Spans not exported: the queue was full, or the receiver failed or was away.");
      w.Sample({{"reason", "queue_full"}}, static_cast<double>(ts.dropped_queue_full));
      w.Sample({{"reason", "export_failed"}}, static_cast<double>(ts.dropped_export_failed));
      w.Counter("drover_trace_export_failures_total", "OTLP export requests that failed.",
                static_cast<double>(ts.requests_failed));
    }
    if (hub != nullptr) {
      w.Gauge("drover_event_waiters", "Readers waiting for the next event (long polls).",
              static_cast<double>(hub->waiters()));
    }
    w.Gauge("drover_command_queue_depth", "Requests waiting for the engine thread.",
            static_cast<double>(runtime.queue_depth()));
    auto text = std::make_shared<std::string>(w.text());
    // Store and runtime figures are read on the store thread, which owns them.
    batch.AfterCommit([shared, text, &store, &runtime](const absl::Status&) {
      obs::PromWriter s;
      const store::StoreStats ss = store.Stats();
      const RuntimeStats rs = runtime.stats();
      s.Counter("drover_store_commits_total", "Store transactions committed.", ss.commits);
      s.Counter("drover_store_rows_written_total", "Task rows written.", ss.rows_written);
      s.Counter("drover_store_commit_failures_total", "Store transactions that failed.",
                rs.commit_failures);
      s.Counter("drover_store_commit_retries_total",
                "Commits sent again because the store was unavailable (PostgreSQL down).",
                rs.commit_retries);
      s.Gauge("drover_store_up", "1 while commits reach the store, 0 while it is unavailable.",
              runtime.store_status().ok() ? 1.0 : 0.0);
      s.Counter("drover_store_rows_pruned_total",
                "Finished task rows deleted from the store after store_retention_ms.",
                ss.rows_pruned);
      s.Counter("drover_store_prune_sweeps_total",
                "Sweeps of the store for finished rows past their retention, completed.",
                rs.sweeps_completed);
      s.Counter("drover_store_prune_failures_total", "Prune steps that failed.", rs.prune_failures);
      s.Counter("drover_load_history_rows_written_total",
                "Pools' per-minute load history rows written (recorded and imported).",
                ss.load_rows_written);
      s.Counter("drover_load_history_rows_pruned_total",
                "Load history rows deleted after load_history_retention_ms.", ss.load_rows_pruned);
      s.Counter("drover_load_history_prune_failures_total", "Load history prunes that failed.",
                rs.load_prune_failures);
      s.Counter("drover_events_written_total", "Events written to the event log.",
                rs.events_written);
      s.Counter("drover_events_dropped_total",
                "Events from pools and the API dropped: too many waited for the store.",
                rs.events_dropped);
      s.Counter("drover_event_rows_pruned_total", "Events deleted after events.retention_ms.",
                ss.event_rows_pruned);
      s.Family("drover_store_commit_seconds", "histogram", "Time to commit one group.");
      s.HistogramSample({}, rs.commit_seconds);
      s.Family("drover_engine_batch_commands", "histogram", "Commands per engine batch.");
      s.HistogramSample({}, rs.batch_commands);
      (*shared)(*text + s.text());
    });
  });
  if (!queued) (*shared)(Refused(runtime_));
}

}  // namespace drover::api

namespace drover::api {

void Service::SampleStats() {
  obs::StatsSeries* series = series_;
  if (series == nullptr) return;
  // On the engine thread (control lane); nothing to commit, the sample goes straight
  // into the ring.
  runtime_.Post(
      [series](Engine& e, Batch&) {
        v1::StatsSample s;
        s.set_unix_ms(absl::ToUnixMillis(absl::Now()));
        const core::EngineProbe& p = e.probe();
        s.set_submitted_total(p.submitted);
        s.set_succeeded_total(p.succeeded);
        s.set_dead_lettered_total(p.dead_lettered);
        s.set_retries_total(p.retries);
        int64_t quota = 0;
        for (const auto& [tenant, q] : p.rejected_quota) quota += q.rate + q.outstanding;
        s.set_rejected_total(p.rejected_full + p.rejected_shed + p.rejected_invalid + quota);
        s.set_failed_attempts_total(p.failed_attempts);
        double cost = 0;
        for (const auto& [key, sum] : e.costs()) cost += sum.cost;
        s.set_cost_total(cost);
        for (int st = v1::TASK_STATE_WAITING; st <= v1::TASK_STATE_EXPIRED; ++st) {
          (*s.mutable_tasks_by_state())[core::StateName(static_cast<v1::TaskState>(st))] =
              e.CountInState(static_cast<v1::TaskState>(st));
        }
        auto& by_priority = *s.mutable_queue_by_priority();
        for (int pr = v1::PRIORITY_CRITICAL; pr <= v1::PRIORITY_BACKGROUND; ++pr) {
          by_priority[core::PriorityName(static_cast<v1::Priority>(pr))] = 0;
        }
        for (const auto& [key, depth] : e.queue_depths()) {
          by_priority[core::PriorityName(static_cast<v1::Priority>(key.second))] += depth;
        }
        const Histogram& h = p.dispatch_latency;
        std::vector<uint64_t>& before = series->last_dispatch_counts();
        s.set_dispatch_p50_ms(1000 * obs::DeltaQuantile(h.bounds(), h.counts(), before, 0.5));
        s.set_dispatch_p99_ms(1000 * obs::DeltaQuantile(h.bounds(), h.counts(), before, 0.99));
        before = h.counts();
        int64_t slots = 0, busy = 0;
        for (const auto& [id, a] : e.agents()) {
          slots += a.max_concurrency;
          busy += static_cast<int64_t>(a.leased.size());
        }
        s.set_agents(static_cast<int64_t>(e.agents().size()));
        s.set_agent_slots(slots);
        s.set_agent_slots_busy(busy);
        series->Add(std::move(s));
      },
      Runtime::kControl);
}

void Service::GetStatsSeries(const auth::Caller&, const v1::StatsSeriesRequest& req,
                             Reply<v1::StatsSeriesResponse> done) {
  const int64_t window = req.window_s() == 0 ? 900 : req.window_s();
  if (window < 60 || window > 86'400) {
    return done(absl::InvalidArgumentError(
        absl::StrCat("window_s: must be 0 (900) or 60 to 86400 seconds, got ", req.window_s())));
  }
  if (series_ == nullptr) return done(absl::UnavailableError("stats series: not sampled"));
  done(series_->Query(absl::Seconds(window), absl::Now()));
}

}  // namespace drover::api
