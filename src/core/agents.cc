// The engine's agents (engine.h): registration, heartbeats, work streams, what agents
// report (completions, failures, checkpoints, lease extensions, undelivered leases),
// draining, removal, messages, and each agent's circuit breaker. The task side of an
// attempt's end (retries, dead letters) is engine.cc's FailAttempt and Finish.

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/engine.h"
#include "core/names.h"
#include "util/json.h"

namespace drover::core {
namespace {

using internal::NameError;
using internal::ValidName;

constexpr int kMaxConcurrency = 1024;

}  // namespace

// ---------------------------------------------------------------------------------------
// Circuit breakers

std::string BreakerName(Breaker b) {
  switch (b) {
    case Breaker::kClosed:
      return "closed";
    case Breaker::kOpen:
      return "open";
    case Breaker::kHalfOpen:
      return "half_open";
  }
  return "?";
}

bool Engine::BreakerAllows(const AgentInfo& agent) {
  switch (agent.breaker) {
    case Breaker::kClosed:
      return true;
    case Breaker::kHalfOpen:
      return agent.leased.empty();  // one probe at a time
    case Breaker::kOpen:
      return false;
  }
  return false;
}

void Engine::SetBreaker(AgentInfo& agent, Breaker to, const std::string& why) {
  const Breaker from = agent.breaker;
  agent.breaker = to;
  switch (to) {
    case Breaker::kOpen:
      probe_.breaker_opened++;
      agent.breaker_until = now() + options_.breaker_open_for;
      Arm(TimerKind::kBreaker, agent.id, 0, agent.breaker_until);
      break;
    case Breaker::kHalfOpen:
      probe_.breaker_half_opened++;
      break;
    case Breaker::kClosed:
      probe_.breaker_closed++;
      agent.consecutive_failures = 0;
      agent.failed_tasks.clear();
      break;
  }
  AgentEvent(
      agent, "agent.breaker",
      absl::StrCat("circuit breaker ", BreakerName(from), " -> ", BreakerName(to), ": ", why));
  v1::Event& ev = outbox_.events.back();
  (*ev.mutable_attrs())["from"] = BreakerName(from);
  (*ev.mutable_attrs())["to"] = BreakerName(to);
  RefreshIdle(agent);
}

bool Engine::RecordAgentFailure(AgentInfo& agent, TaskId task) {
  agent.consecutive_failures++;
  agent.failed_tasks.push_back(task);
  const int threshold = options_.breaker_failures;
  while (static_cast<int>(agent.failed_tasks.size()) > std::max(1, threshold)) {
    agent.failed_tasks.pop_front();
  }
  switch (agent.breaker) {
    case Breaker::kOpen:
      return true;  // a task it held when the breaker opened
    case Breaker::kHalfOpen:
      SetBreaker(agent, Breaker::kOpen, "the probe task failed");
      return true;
    case Breaker::kClosed:
      break;
  }
  if (threshold <= 0 || agent.consecutive_failures < threshold) return false;
  SetBreaker(agent, Breaker::kOpen,
             absl::StrCat(agent.consecutive_failures, " consecutive failed attempts"));
  // The agent is at fault when its run of failures spans different tasks; one task failing
  // again and again on it is the task's fault and counts.
  absl::flat_hash_set<uint64_t> distinct(agent.failed_tasks.begin(), agent.failed_tasks.end());
  return distinct.size() > 1;
}

void Engine::RecordAgentSuccess(AgentInfo& agent) {
  agent.consecutive_failures = 0;
  agent.failed_tasks.clear();
  if (agent.breaker == Breaker::kHalfOpen)
    SetBreaker(agent, Breaker::kClosed, "the probe succeeded");
}

// ---------------------------------------------------------------------------------------
// Agent commands

absl::StatusOr<AgentId> Engine::RegisterAgent(const v1::RegisterAgentRequest& req) {
  if (req.types_size() == 0) return absl::InvalidArgumentError("types: at least one agent type");
  for (int i = 0; i < req.types_size(); ++i) {
    if (!ValidName(req.types(i))) return NameError(absl::StrCat("types[", i, "]"), req.types(i));
  }
  if (req.max_concurrency() < 1 || req.max_concurrency() > kMaxConcurrency) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_concurrency: must be 1 to ", kMaxConcurrency, ", got ", req.max_concurrency()));
  }
  if (!std::isfinite(req.cost_factor()) || req.cost_factor() < 0) {
    return absl::InvalidArgumentError("cost_factor: must be a finite number >= 0");
  }
  if (req.max_uses() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_uses: must be >= 0, got ", req.max_uses()));
  }
  const AgentId id = next_agent_id_++;
  AgentInfo& a = agents_[id];
  a.id = id;
  for (const std::string& t : req.types()) {
    if (std::find(a.types.begin(), a.types.end(), t) == a.types.end()) a.types.push_back(t);
  }
  a.max_concurrency = req.max_concurrency();
  a.max_uses = req.max_uses();
  a.cost_factor = req.cost_factor() == 0 ? 1.0 : req.cost_factor();
  a.name = req.name().substr(0, 128);
  a.labels.insert(req.labels().begin(), req.labels().end());
  a.last_seen = now();
  a.idle_since = a.last_seen;
  a.registered = a.last_seen;
  a.record_acquired = a.labels.contains(kPoolAgentLabel);
  Arm(TimerKind::kAgent, id, 0, a.last_seen + options_.lease_ttl);
  AgentEvent(a, "agent.registered",
             absl::StrCat("serves ", absl::StrJoin(a.types, ", "), " (concurrency ",
                          a.max_concurrency, ")"));
  return id;
}

absl::Status Engine::Heartbeat(AgentId id) {
  auto it = agents_.find(id);
  if (it == agents_.end()) {
    return absl::NotFoundError(absl::StrCat("agent_id: agent ", id, " not registered"));
  }
  AgentInfo& a = it->second;
  a.last_seen = now();
  // A heartbeat renews every lease the agent holds. Expiry is checked lazily by the
  // lease timer, so renewing costs no timer churn.
  const int64_t expires = ToUnixMs(a.last_seen + options_.lease_ttl);
  for (TaskId t : a.leased) {
    Entry* e = Find(t);
    if (e != nullptr) e->task.set_lease_expires_unix_ms(expires);
  }
  return absl::OkStatus();
}

absl::Status Engine::OpenStream(AgentId id) {
  auto it = agents_.find(id);
  if (it == agents_.end()) {
    return absl::NotFoundError(absl::StrCat("agent_id: agent ", id, " not registered"));
  }
  it->second.stream_open = true;
  it->second.last_seen = now();
  FillAgent(it->second);
  return absl::OkStatus();
}

void Engine::CloseStream(AgentId id) {
  auto it = agents_.find(id);
  if (it == agents_.end()) return;
  it->second.stream_open = false;
  RefreshIdle(it->second);
}

absl::StatusOr<Engine::Entry*> Engine::FindLeased(AgentId agent, TaskId id, uint64_t token,
                                                  const char* what) {
  Entry* e = Find(id);
  if (e == nullptr) return absl::NotFoundError(absl::StrCat("task_id: task ", id, " not found"));
  if (e->task.state() != v1::TASK_STATE_LEASED || e->task.lease_token() != token ||
      e->task.agent_id() != agent) {
    probe_.stale_reports++;
    return absl::FailedPreconditionError(absl::StrCat(
        "lease_token: ", what, " refused, lease ", token, " of agent ", agent,
        " is not the current lease of task ", id, " (task is ", StateName(e->task.state()), ")"));
  }
  return e;
}

absl::Status Engine::Complete(AgentId agent, TaskId id, uint64_t token, const std::string& result,
                              bool json) {
  if (result.size() > options_.max_result_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("result: ", result.size(),
                                                   " bytes exceeds the limit of ",
                                                   options_.max_result_bytes, " bytes"));
  }
  if (json) {
    if (absl::Status st = util::CheckJson(result, "result"); !st.ok()) return st;
  }
  absl::StatusOr<Entry*> found = FindLeased(agent, id, token, "completion");
  if (!found.ok()) return found.status();
  Entry& e = **found;
  CloseAttempt(e, "succeeded", "", false);
  if (auto it = agents_.find(agent); it != agents_.end()) RecordAgentSuccess(it->second);
  {
    // Learn the type's duration (exponential moving average, alpha 0.2) from the run
    // time per unit of complexity.
    const v1::Attempt& a = e.task.history(e.task.history_size() - 1);
    const double c =
        e.task.spec().estimated_complexity() > 0 ? e.task.spec().estimated_complexity() : 1.0;
    const double ms = static_cast<double>(a.ended_unix_ms() - a.started_unix_ms()) / c;
    auto [it, fresh] = duration_ms_.try_emplace(e.task.spec().type(), ms);
    if (!fresh) it->second += 0.2 * (ms - it->second);
    // The expected cost of tasks waiting for an agent within their budget changed with it.
    RecheckOverBudget(e.task.spec().type());
  }
  ReleaseFromAgent(e);
  e.task.set_result(result);
  e.task.set_result_json(json);
  Finish(e, v1::TASK_STATE_SUCCEEDED, "");
  if (auto it = agents_.find(agent); it != agents_.end()) {
    it->second.last_seen = now();
    FillAgent(it->second);
  }
  return absl::OkStatus();
}

absl::Status Engine::Fail(AgentId agent, TaskId id, uint64_t token, const std::string& error,
                          bool retryable) {
  absl::StatusOr<Entry*> found = FindLeased(agent, id, token, "failure report");
  if (!found.ok()) return found.status();
  const std::string why = error.empty() ? "failed without a message" : error;
  bool agent_fault = false;
  if (auto it = agents_.find(agent); it != agents_.end()) {
    agent_fault = RecordAgentFailure(it->second, id);
  }
  if (agent_fault) {
    // The agent, not the task, is failing: retried elsewhere, at once and uncounted.
    probe_.failures_blamed_on_agent++;
    FailAttempt(
        **found, "agent_fault",
        absl::StrCat(why, " (not counted: the circuit breaker of agent ", agent, " is open)"), true,
        false);
  } else {
    FailAttempt(**found, "failed", why, retryable, true);
  }
  if (auto it = agents_.find(agent); it != agents_.end()) {
    it->second.last_seen = now();
    FillAgent(it->second);
  }
  return absl::OkStatus();
}

absl::Status Engine::Checkpoint(AgentId agent, TaskId id, uint64_t token, const std::string& data,
                                bool json) {
  if (data.size() > options_.max_checkpoint_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint: ", data.size(),
                                                   " bytes exceeds the limit of ",
                                                   options_.max_checkpoint_bytes, " bytes"));
  }
  if (json) {
    if (absl::Status st = util::CheckJson(data, "checkpoint"); !st.ok()) return st;
  }
  absl::StatusOr<Entry*> found = FindLeased(agent, id, token, "checkpoint");
  if (!found.ok()) return found.status();
  (*found)->task.set_checkpoint(data);
  (*found)->task.set_checkpoint_json(json);
  (*found)->task.set_updated_unix_ms(now_ms());
  MarkDirty(**found);
  return absl::OkStatus();
}

absl::StatusOr<absl::Time> Engine::ExtendLease(AgentId agent, TaskId id, uint64_t token) {
  absl::StatusOr<Entry*> found = FindLeased(agent, id, token, "lease extension");
  if (!found.ok()) return found.status();
  const absl::Time expires = now() + options_.lease_ttl;
  (*found)->task.set_lease_expires_unix_ms(ToUnixMs(expires));
  if (auto it = agents_.find(agent); it != agents_.end()) it->second.last_seen = now();
  return expires;
}

void Engine::RemoveAgent(AgentInfo& agent, const std::string& outcome, bool counted) {
  const AgentId id = agent.id;
  std::vector<TaskId> leased(agent.leased.begin(), agent.leased.end());
  std::sort(leased.begin(), leased.end());
  agent.stream_open = false;
  agent.leaving = true;
  RefreshIdle(agent);
  for (TaskId t : leased) {
    Entry* e = Find(t);
    if (e == nullptr || e->task.state() != v1::TASK_STATE_LEASED) continue;
    if (outcome == "lease_expired") probe_.leases_expired++;
    FailAttempt(*e, outcome,
                outcome == "lease_expired" ? "lease expired: no heartbeat from agent"
                                           : "agent deregistered",
                true, counted);
  }
  for (const std::string& type : agent.types) queues_[type].idle_agents.erase(id);
  AgentEvent(agent, "agent.removed",
             outcome == "lease_expired" ? "no heartbeat within the lease TTL" : "deregistered");
  if (!leased.empty()) {
    (*outbox_.events.back().mutable_attrs())["tasks_returned"] = absl::StrCat(leased.size());
  }
  agents_.erase(id);
}

absl::StatusOr<v1::SendMessageResponse> Engine::SendMessage(const v1::SendMessageRequest& req) {
  constexpr size_t kMaxBody = 64 * 1024;
  constexpr size_t kMaxTopic = 64;
  const int targets = (req.agent_id() != 0) + !req.agent_type().empty() + req.all();
  if (targets != 1) {
    return absl::InvalidArgumentError(
        "agent_id, agent_type, all: give exactly one target (an agent, a type, or all)");
  }
  if (req.body().size() > kMaxBody) {
    return absl::InvalidArgumentError(
        absl::StrCat("body: ", req.body().size(), " bytes exceeds the limit of ", kMaxBody));
  }
  if (req.body_json()) {
    if (absl::Status st = util::CheckJson(req.body(), "body"); !st.ok()) return st;
  }
  if (req.topic().size() > kMaxTopic) {
    return absl::InvalidArgumentError(
        absl::StrCat("topic: ", req.topic().size(), " bytes exceeds the limit of ", kMaxTopic));
  }
  if (!req.agent_type().empty() && !ValidName(req.agent_type())) {
    return NameError("agent_type", req.agent_type());
  }
  if (req.agent_id() != 0 && !agents_.contains(req.agent_id())) {
    return absl::NotFoundError(absl::StrCat("agent_id: agent ", req.agent_id(), " not found"));
  }
  v1::SendMessageResponse resp;
  resp.set_message_id(next_message_id_++);
  Outbox::Push push;
  v1::AgentMessage* m = push.item.mutable_message();
  m->set_id(resp.message_id());
  m->set_topic(req.topic());
  m->set_body(req.body());
  m->set_body_json(req.body_json());
  m->set_sent_unix_ms(now_ms());
  for (const auto& [id, a] : agents_) {
    if (!a.stream_open || a.leaving) continue;
    const bool match = req.all() || id == req.agent_id() ||
                       std::find(a.types.begin(), a.types.end(), req.agent_type()) != a.types.end();
    if (!match) continue;
    push.agent = id;
    outbox_.pushes.push_back(push);
    resp.add_delivered_to(id);
    probe_.messages_pushed++;
  }
  probe_.messages_sent++;
  return resp;
}

void Engine::ReturnUndelivered(AgentId agent, TaskId id, uint64_t token) {
  Entry* e = Find(id);
  if (e == nullptr || e->task.state() != v1::TASK_STATE_LEASED || e->task.lease_token() != token ||
      e->task.agent_id() != agent) {
    return;  // the lease ended some other way meanwhile
  }
  FailAttempt(*e, "undelivered", "the lease could not be delivered to the agent", true, false);
}

absl::Status Engine::DrainAgent(AgentId id) {
  auto it = agents_.find(id);
  if (it == agents_.end()) {
    return absl::NotFoundError(absl::StrCat("agent_id: agent ", id, " not registered"));
  }
  it->second.draining = true;
  RefreshIdle(it->second);
  return absl::OkStatus();
}

std::vector<AcquireSample> Engine::TakeAcquired(AgentId id) {
  auto it = agents_.find(id);
  if (it == agents_.end()) return {};
  return std::exchange(it->second.acquired, {});
}

absl::Status Engine::Deregister(AgentId id) {
  auto it = agents_.find(id);
  if (it == agents_.end()) {
    return absl::NotFoundError(absl::StrCat("agent_id: agent ", id, " not registered"));
  }
  RemoveAgent(it->second, "agent_deregistered", false);
  return absl::OkStatus();
}

}  // namespace drover::core
