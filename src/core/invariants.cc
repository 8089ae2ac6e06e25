// Engine::CheckInvariants (engine.h): the engine's indexes and counters agree with its
// task and agent records. Tests and the simulation call it after every step; it walks
// everything, so nothing on a hot path does.

#include <array>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/engine.h"

namespace drover::core {

absl::Status Engine::CheckInvariants() const {
  std::array<int64_t, 9> counts{};
  for (const auto& [id, ptr] : tasks_) {
    const v1::Task& t = ptr->task;
    counts[t.state()]++;
    if (t.failures() > t.effective_max_attempts()) {
      return absl::InternalError(absl::StrCat("task ", id, " has ", t.failures(),
                                              " counted failures, max ",
                                              t.effective_max_attempts()));
    }
    if (t.state() == v1::TASK_STATE_LEASED) {
      auto it = agents_.find(t.agent_id());
      if (it == agents_.end()) {
        return absl::InternalError(
            absl::StrCat("task ", id, " leased to unknown agent ", t.agent_id()));
      }
      if (!it->second.leased.contains(id)) {
        return absl::InternalError(
            absl::StrCat("task ", id, " leased to agent ", t.agent_id(), " which lacks it"));
      }
    }
    if (t.state() == v1::TASK_STATE_READY) {
      auto q = queues_.find(t.spec().type());
      bool found = false;
      if (q != queues_.end()) {
        switch (ptr->parked) {
          case Entry::Parked::kNo: {
            const Level& level = q->second.levels[ptr->key.priority() - 1];
            auto tq = level.tenants.find(t.spec().tenant());
            found = tq != level.tenants.end() && tq->second.ready.contains(ptr->key);
            break;
          }
          case Entry::Parked::kResource:
            for (const auto& [name, r] : resources_) found = found || r.waiters.contains(ptr->key);
            break;
          case Entry::Parked::kBudget:
            for (const auto& [f, key] : q->second.over_budget) found = found || key == ptr->key;
            break;
        }
      }
      if (!found) {
        return absl::InternalError(absl::StrCat("ready task ", id, " missing from its queue"));
      }
    }
  }
  for (int s = 0; s < 9; ++s) {
    if (counts[s] != state_counts_[s]) {
      return absl::InternalError(
          absl::StrCat("state count ", s, " is ", state_counts_[s], ", records say ", counts[s]));
    }
  }
  {
    absl::flat_hash_map<std::string, int64_t> by_tenant;
    for (const auto& [id, e] : tasks_) {
      if (!IsTerminal(e->task.state())) by_tenant[e->task.spec().tenant()]++;
    }
    if (by_tenant != tenant_outstanding_) {
      return absl::InternalError("outstanding tasks per tenant disagree with the records");
    }
  }
  for (const auto& [id, a] : agents_) {
    // Breakers: an open one takes no task, a half-open one at most one probe at a time,
    // and a closed one has not reached its threshold.
    for (const std::string& type : a.types) {
      auto q = queues_.find(type);
      const bool idle = q != queues_.end() && q->second.idle_agents.contains(id);
      if (idle && !BreakerAllows(a)) {
        return absl::InternalError(absl::StrCat("agent ", id, " with a ", BreakerName(a.breaker),
                                                " breaker is offered work"));
      }
    }
    if (a.breaker == Breaker::kClosed && options_.breaker_failures > 0 &&
        a.consecutive_failures >= options_.breaker_failures) {
      return absl::InternalError(absl::StrCat("agent ", id, " failed ", a.consecutive_failures,
                                              " times in a row with a closed breaker"));
    }
    if (static_cast<int>(a.leased.size()) > a.max_concurrency) {
      return absl::InternalError(absl::StrCat("agent ", id, " holds ", a.leased.size(),
                                              " leases, max ", a.max_concurrency));
    }
    for (TaskId t : a.leased) {
      const Entry* e = Find(t);
      if (e == nullptr || e->task.state() != v1::TASK_STATE_LEASED || e->task.agent_id() != id) {
        return absl::InternalError(
            absl::StrCat("agent ", id, " lists task ", t, " that it does not hold"));
      }
    }
  }
  int64_t ready = 0;
  for (const auto& [type, q] : queues_) {
    int64_t in_levels = 0;
    for (const Level& level : q.levels) {
      size_t active = 0;
      for (const auto& [tenant, tq] : level.tenants) {
        in_levels += static_cast<int64_t>(tq.ready.size());
        if (tq.ready.empty()) continue;
        active++;
        if (!level.order.contains({tq.vtime, tq.ordinal, const_cast<TenantQueue*>(&tq)})) {
          return absl::InternalError(
              absl::StrCat("tenant ", tenant, " has ready ", type, " tasks but no fair turn"));
        }
      }
      if (active != level.order.size()) {
        return absl::InternalError(absl::StrCat("type ", type, ": ", level.order.size(),
                                                " tenants in fair order, ", active, " active"));
      }
    }
    if (in_levels != q.ready) {
      return absl::InternalError(
          absl::StrCat("type ", type, " counts ", q.ready, " ready, queues hold ", in_levels));
    }
    ready += in_levels + static_cast<int64_t>(q.over_budget.size());
  }
  // Resources: semaphores never over-allocated; units held = needs of running attempts.
  absl::flat_hash_map<std::string, int64_t> held;
  for (const auto& [id, ptr] : tasks_) {
    if (ptr->task.state() != v1::TASK_STATE_LEASED) continue;
    for (const v1::ResourceNeed& n : ptr->task.spec().resources()) held[n.name()] += n.amount();
  }
  for (const auto& [name, r] : resources_) {
    ready += static_cast<int64_t>(r.waiters.size());
    if (r.spec.kind == ResourceSpec::Kind::kSemaphore) {
      if (r.in_use != held[name] || r.in_use > r.spec.capacity || r.in_use < 0) {
        return absl::InternalError(absl::StrCat("resource ", name, ": ", r.in_use, " of ",
                                                r.spec.capacity, " in use, running attempts hold ",
                                                held[name]));
      }
    } else if (r.tokens < -1e-6) {
      return absl::InternalError(absl::StrCat("token bucket ", name, " is overdrawn: ", r.tokens));
    }
  }
  if (ready != counts[v1::TASK_STATE_READY]) {
    return absl::InternalError(absl::StrCat("queues hold ", ready, " tasks, ",
                                            counts[v1::TASK_STATE_READY], " are ready"));
  }
  return CheckDependencyInvariants();
}

}  // namespace drover::core
