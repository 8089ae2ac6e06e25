#include "core/engine.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/names.h"
#include "google/protobuf/util/json_util.h"
#include "obs/trace.h"
#include "util/json.h"

namespace drover::core {
namespace {

using internal::kMaxParents;
using internal::NameError;
using internal::ValidName;

constexpr size_t kMaxLabels = 64;
constexpr size_t kMaxLabelKey = 63;
constexpr size_t kMaxLabelValue = 256;
constexpr size_t kMaxIdempotencyKey = 256;
constexpr int kMaxAttemptsLimit = 100;
constexpr int64_t kMaxTimeoutMs = 7LL * 24 * 3600 * 1000;
constexpr size_t kMaxErrorText = 16 * 1024;

}  // namespace

using internal::EffectivePriority;

bool IsTerminal(v1::TaskState s) {
  return s == v1::TASK_STATE_SUCCEEDED || s == v1::TASK_STATE_DEAD ||
         s == v1::TASK_STATE_CANCELED || s == v1::TASK_STATE_EXPIRED;
}

std::string StateName(v1::TaskState s) {
  std::string name = v1::TaskState_Name(s);
  if (name.rfind("TASK_STATE_", 0) == 0) name = name.substr(11);
  return absl::AsciiStrToLower(name);
}

std::string PriorityName(v1::Priority p) {
  std::string name = v1::Priority_Name(static_cast<v1::Priority>(EffectivePriority(p)));
  if (name.rfind("PRIORITY_", 0) == 0) name = name.substr(9);
  return absl::AsciiStrToLower(name);
}

Engine::Engine(EngineOptions options, const Clock& clock)
    : options_(std::move(options)),
      clock_(clock),
      rng_(options_.seed),
      // Agent ids carry the epoch too: an agent of an earlier run that still heartbeats
      // gets NOT_FOUND (and registers again) instead of borrowing a new agent's id.
      next_agent_id_((static_cast<uint64_t>(options_.epoch) << 32) + 1) {
  uint64_t index = 0;
  for (const auto& [name, spec] : options_.resources) {
    ResourceState& r = resources_[name];
    r.spec = spec;
    r.index = index++;
    r.tokens = static_cast<double>(spec.capacity);  // buckets start full
    r.refilled_at = clock_.Now();
  }
}

// ---------------------------------------------------------------------------------------
// Validation and admission

absl::Status Engine::ValidateSpec(const v1::TaskSpec& s, const std::string& f) const {
  auto bad = [&](const std::string& field, const std::string& msg) {
    return absl::InvalidArgumentError(absl::StrCat(f, ".", field, ": ", msg));
  };
  if (!ValidName(s.type())) return NameError(f + ".type", s.type());
  if (!s.tenant().empty() && !ValidName(s.tenant())) return NameError(f + ".tenant", s.tenant());
  if (s.payload().size() > options_.max_payload_bytes) {
    return bad("payload", absl::StrCat(s.payload().size(), " bytes exceeds the limit of ",
                                       options_.max_payload_bytes, " bytes"));
  }
  if (s.payload_json()) {
    if (absl::Status st = util::CheckJson(s.payload(), f + ".payload"); !st.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(st.message(), "; payload_json says the payload is JSON text"));
    }
  }
  if (!s.traceparent().empty() && !obs::ParseTraceparent(s.traceparent())) {
    return bad("traceparent",
               absl::StrCat("'", s.traceparent().substr(0, 64),
                            "' is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>, "
                            "lowercase, ids not all zeros)"));
  }
  if (!v1::Priority_IsValid(s.priority())) {
    return bad("priority", absl::StrCat("unknown value ", static_cast<int>(s.priority()),
                                        " (use critical, high, normal, low or background)"));
  }
  if (s.deadline_unix_ms() < 0) {
    return bad("deadline_unix_ms", absl::StrCat("must be >= 0, got ", s.deadline_unix_ms()));
  }
  if (s.deadline_unix_ms() > 0 && s.deadline_unix_ms() <= now_ms()) {
    return bad("deadline_unix_ms",
               absl::StrCat("is in the past (", s.deadline_unix_ms(), " <= now ", now_ms(), ")"));
  }
  if (!std::isfinite(s.estimated_complexity()) || s.estimated_complexity() < 0) {
    return bad("estimated_complexity", "must be a finite number >= 0");
  }
  if (!std::isfinite(s.cost_budget()) || s.cost_budget() < 0) {
    return bad("cost_budget", "must be a finite number >= 0");
  }
  if (s.idempotency_key().size() > kMaxIdempotencyKey) {
    return bad("idempotency_key", absl::StrCat(s.idempotency_key().size(),
                                               " bytes exceeds the limit of ", kMaxIdempotencyKey));
  }
  if (s.max_attempts() < 0 || s.max_attempts() > kMaxAttemptsLimit) {
    return bad("max_attempts", absl::StrCat("must be 0 (type default) to ", kMaxAttemptsLimit,
                                            ", got ", s.max_attempts()));
  }
  struct MsField {
    const char* name;
    int64_t value;
  };
  for (const MsField& m : {MsField{"execution_timeout_ms", s.execution_timeout_ms()},
                           MsField{"backoff_base_ms", s.backoff_base_ms()},
                           MsField{"backoff_cap_ms", s.backoff_cap_ms()}}) {
    if (m.value < 0) return bad(m.name, absl::StrCat("must be >= 0, got ", m.value));
    if (m.value > kMaxTimeoutMs) {
      return bad(m.name,
                 absl::StrCat("must be at most ", kMaxTimeoutMs, " (7 days), got ", m.value));
    }
  }
  if (s.labels_size() > static_cast<int>(kMaxLabels)) {
    return bad("labels", absl::StrCat(s.labels_size(), " labels exceed the limit of ", kMaxLabels));
  }
  for (const auto& [k, v] : s.labels()) {
    if (k.empty() || k.size() > kMaxLabelKey) {
      return bad("labels",
                 absl::StrCat("key '", k.substr(0, 80), "' must be 1 to ", kMaxLabelKey, " bytes"));
    }
    if (v.size() > kMaxLabelValue) {
      return bad("labels", absl::StrCat("value of '", k, "' exceeds ", kMaxLabelValue, " bytes"));
    }
  }
  if (s.depends_on_size() + s.depends_on_finished_size() > kMaxParents) {
    return bad("depends_on", absl::StrCat(s.depends_on_size() + s.depends_on_finished_size(),
                                          " parents exceed the limit of ", kMaxParents));
  }
  if (absl::Status r = ValidateResources(s, f); !r.ok()) return r;
  if (!s.pool().empty()) {
    return absl::UnimplementedError(absl::StrCat(f, ".pool: agent pools are not supported yet"));
  }
  return absl::OkStatus();
}

int64_t Engine::outstanding() const {
  return static_cast<int64_t>(tasks_.size()) - state_counts_[v1::TASK_STATE_SUCCEEDED] -
         state_counts_[v1::TASK_STATE_DEAD] - state_counts_[v1::TASK_STATE_CANCELED] -
         state_counts_[v1::TASK_STATE_EXPIRED];
}

TypeDefaults Engine::DefaultsFor(const std::string& type) const {
  auto it = options_.per_type.find(type);
  return it == options_.per_type.end() ? options_.defaults : it->second;
}

absl::StatusOr<std::vector<Engine::SubmitResult>> Engine::Submit(
    const std::vector<v1::TaskSpec>& specs, const std::string& field_prefix) {
  if (specs.empty()) {
    probe_.rejected_invalid++;
    return absl::InvalidArgumentError(absl::StrCat(field_prefix, ": no tasks given"));
  }
  if (specs.size() > options_.max_batch) {
    probe_.rejected_invalid += static_cast<int64_t>(specs.size());
    return absl::InvalidArgumentError(absl::StrCat(
        field_prefix, ": ", specs.size(), " tasks exceed the batch limit of ", options_.max_batch));
  }
  const bool single = specs.size() == 1 && field_prefix == "task";
  std::vector<SubmitResult> results(specs.size());
  std::vector<const v1::TaskSpec*> fresh;
  absl::flat_hash_map<std::string, size_t> batch_keys;  // duplicates within the batch
  std::vector<int> dup_of(specs.size(), -1);
  for (size_t i = 0; i < specs.size(); ++i) {
    const std::string field = single ? field_prefix : absl::StrCat(field_prefix, "[", i, "]");
    if (absl::Status st = ValidateSpec(specs[i], field); !st.ok()) {
      probe_.rejected_invalid += static_cast<int64_t>(specs.size());  // all or none
      return st;
    }
    const v1::TaskSpec& s = specs[i];
    if (absl::Status st = ValidateParents(s, field, s.tenant().empty() ? "default" : s.tenant());
        !st.ok()) {
      probe_.rejected_invalid += static_cast<int64_t>(specs.size());
      return st;
    }
    if (!s.idempotency_key().empty()) {
      std::string k = absl::StrCat(s.tenant().empty() ? "default" : s.tenant(),
                                   std::string(1, '\0'), s.idempotency_key());
      if (auto it = idempotency_.find(k); it != idempotency_.end()) {
        results[i] = {it->second, true};
        continue;
      }
      if (auto [it, inserted] = batch_keys.emplace(k, i); !inserted) {
        dup_of[i] = static_cast<int>(it->second);
        continue;
      }
    }
    fresh.push_back(&s);
  }
  if (absl::Status st = Admit(fresh); !st.ok()) return st;

  const int64_t t_ms = now_ms();
  for (size_t i = 0; i < specs.size(); ++i) {
    if (results[i].id != 0) continue;
    if (dup_of[i] >= 0) continue;
    Entry& e = CreateTask(specs[i], t_ms);
    results[i] = {e.task.id(), false};
    Start(e);
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    if (dup_of[i] >= 0) results[i] = {results[dup_of[i]].id, true};
    if (results[i].deduplicated) probe_.deduplicated++;
  }
  return results;
}

Engine::Entry& Engine::CreateTask(const v1::TaskSpec& s, int64_t t_ms) {
  {
    auto e = std::make_unique<Entry>();
    v1::Task& task = e->task;
    const TaskId id = next_task_id_++;
    task.set_id(id);
    *task.mutable_spec() = s;
    if (s.tenant().empty()) task.mutable_spec()->set_tenant("default");
    if (s.priority() == v1::PRIORITY_UNSPECIFIED) {
      task.mutable_spec()->set_priority(v1::PRIORITY_NORMAL);
    }
    const TypeDefaults d = DefaultsFor(s.type());
    task.set_effective_max_attempts(s.max_attempts() > 0 ? s.max_attempts() : d.retry.max_attempts);
    task.set_effective_execution_timeout_ms(s.execution_timeout_ms() > 0
                                                ? s.execution_timeout_ms()
                                                : absl::ToInt64Milliseconds(d.execution_timeout));
    task.set_created_unix_ms(t_ms);
    task.set_updated_unix_ms(t_ms);
    if (!s.idempotency_key().empty()) {
      idempotency_[absl::StrCat(task.spec().tenant(), std::string(1, '\0'), s.idempotency_key())] =
          id;
    }
    Entry& ref = *e;
    tasks_.emplace(id, std::move(e));
    state_counts_[v1::TASK_STATE_UNSPECIFIED]++;  // SetState moves it out
    CountOutstanding(ref.task, +1);
    probe_.submitted++;
    type_load_[ref.task.spec().type()].arrived++;
    if (s.deadline_unix_ms() > 0) {
      Arm(TimerKind::kDeadline, id, 0, FromUnixMs(s.deadline_unix_ms()));
    }
    return ref;
  }
}

// ---------------------------------------------------------------------------------------
// State changes

void Engine::ForgetIdempotencyKey(const v1::Task& t) {
  if (t.spec().idempotency_key().empty()) return;
  auto it = idempotency_.find(
      absl::StrCat(t.spec().tenant(), std::string(1, '\0'), t.spec().idempotency_key()));
  // The key may name a newer task by now (this one was evicted once, the key reused, and a
  // restart restored both): leave that task's key alone.
  if (it != idempotency_.end() && it->second == t.id()) idempotency_.erase(it);
}

void Engine::PersistMaxTaskId() {
  persisted_max_task_id_ = next_task_id_ - 1;
  outbox_.meta.emplace_back("max_task_id", absl::StrCat(persisted_max_task_id_));
}

void Engine::MarkDirty(const Entry& e) {
  if (dirty_set_.insert(e.task.id()).second) outbox_.dirty.push_back(e.task.id());
}

void Engine::SetState(Entry& e, v1::TaskState s, bool persist) {
  const v1::TaskState from = e.task.state();
  state_counts_[from]--;
  state_counts_[s]++;
  if (IsTerminal(from) != IsTerminal(s)) CountOutstanding(e.task, IsTerminal(s) ? -1 : +1);
  if (e.task.workflow_id() != 0) CountInWorkflow(e.task, from, s);
  if (from == v1::TASK_STATE_DEAD && s != v1::TASK_STATE_DEAD && e.links &&
      !e.links->children.empty()) {
    ReopenForChildren(e);
  }
  e.task.set_state(s);
  e.task.set_updated_unix_ms(now_ms());
  e.gen++;
  if (persist) MarkDirty(e);
  if (options_.task_events != TaskEvents::kOff && from != s) TaskEvent(e, from);
}

void Engine::MakeReady(Entry& e) {
  // The deadline says when a task may last start. A task coming back to the queue after it
  // (a retry, a lost lease, a restart) expires instead of running late.
  const int64_t deadline = e.task.spec().deadline_unix_ms();
  if (deadline > 0 && deadline <= now_ms()) {
    Finish(e, v1::TASK_STATE_EXPIRED, "deadline passed before the task could start (again)");
    return;
  }
  SetState(e, v1::TASK_STATE_READY);
  e.task.set_not_before_unix_ms(0);
  Enqueue(e);
}

void Engine::Lease(Entry& e, AgentInfo& agent) {
  const int64_t ready_since_ms = e.task.updated_unix_ms();
  RemoveFromReady(e, /*dispatched=*/true);
  AcquireResources(e);
  const absl::Time t = now();
  const int64_t t_ms = ToUnixMs(t);
  // A lease is not written to the store by itself: after a crash a leased task goes back
  // to the queue anyway, and the fencing token's epoch voids the lost lease. The attempt
  // reaches the store with the task's next write (its outcome, a checkpoint). This saves
  // one row write per task.
  v1::Task& task = e.task;
  task.set_attempts(task.attempts() + 1);
  task.set_agent_id(agent.id);  // before SetState: its event names the agent
  SetState(e, v1::TASK_STATE_LEASED, /*persist=*/false);
  // 24 bits of epoch, 40 of counter: unique across restarts and for 2^40 leases per run.
  const uint64_t token = (static_cast<uint64_t>(options_.epoch) << 40) |
                         (++token_counter_ & ((uint64_t{1} << 40) - 1));
  task.set_lease_token(token);
  task.set_agent_id(agent.id);
  const absl::Time expires = t + options_.lease_ttl;
  task.set_lease_expires_unix_ms(ToUnixMs(expires));
  if (task.started_unix_ms() == 0) task.set_started_unix_ms(t_ms);
  v1::Attempt* a = task.add_history();
  a->set_number(task.attempts());
  a->set_agent_id(agent.id);
  a->set_started_unix_ms(t_ms);
  a->set_cost_factor(agent.cost_factor);
  agent.leased.insert(task.id());
  agent.attempts_started++;
  Arm(TimerKind::kLease, task.id(), e.gen, expires);
  Arm(TimerKind::kExecTimeout, task.id(), e.gen,
      t + absl::Milliseconds(task.effective_execution_timeout_ms()));
  probe_.dispatched++;
  type_load_[task.spec().type()].dispatched++;
  probe_.dispatch_latency.Observe(static_cast<double>(t_ms - ready_since_ms) / 1000.0);
  if (agent.record_acquired && agent.acquired.size() < kMaxAcquireSamples) {
    agent.acquired.push_back({static_cast<float>(t_ms - ready_since_ms) / 1000.0f,
                              ToUnixMs(agent.registered) > ready_since_ms});
  }

  Outbox::Push push;
  push.agent = agent.id;
  v1::TaskLease* l = push.item.mutable_lease();
  l->set_task_id(task.id());
  l->set_lease_token(token);
  l->set_attempt(task.attempts());
  l->set_type(task.spec().type());
  l->set_payload(task.spec().payload());
  l->set_payload_json(task.spec().payload_json());
  l->set_checkpoint(task.checkpoint());
  l->set_checkpoint_json(task.checkpoint_json());
  l->set_deadline_unix_ms(task.spec().deadline_unix_ms());
  l->set_lease_expires_unix_ms(task.lease_expires_unix_ms());
  l->set_execution_timeout_ms(task.effective_execution_timeout_ms());
  l->set_tenant(task.spec().tenant());
  l->set_priority(task.spec().priority());
  *l->mutable_labels() = task.spec().labels();
  if (task.workflow_id() != 0) {
    l->set_workflow_id(task.workflow_id());
    l->set_step(task.step());
  }
  l->set_traceparent(obs::AttemptTraceparent(task, task.attempts()));
  FillParents(task, l);
  outbox_.pushes.push_back(std::move(push));
  RefreshIdle(agent);
}

void Engine::PushCancel(const v1::Task& task, const std::string& reason) {
  // Not to an agent being removed (its leases are being taken back as this happens, e.g.
  // when a fail_fast cascade starts among them): it is gone, and its runner stops its
  // commands when its work stream ends.
  auto it = agents_.find(task.agent_id());
  if (it == agents_.end() || it->second.leaving) return;
  Outbox::Push push;
  push.agent = task.agent_id();
  push.item.mutable_cancel()->set_task_id(task.id());
  push.item.mutable_cancel()->set_lease_token(task.lease_token());
  push.item.mutable_cancel()->set_reason(reason);
  outbox_.pushes.push_back(std::move(push));
}

void Engine::CloseAttempt(Entry& e, const std::string& outcome, const std::string& error,
                          bool counted) {
  v1::Task& task = e.task;
  if (task.history_size() == 0) return;
  v1::Attempt* a = task.mutable_history(task.history_size() - 1);
  if (a->ended_unix_ms() != 0) return;
  a->set_ended_unix_ms(now_ms());
  a->set_outcome(outcome);
  a->set_error(error.substr(0, kMaxErrorText));
  a->set_counted(counted);
  const double seconds = static_cast<double>(a->ended_unix_ms() - a->started_unix_ms()) / 1000.0;
  probe_.run_time.Observe(seconds);
  {
    TypeLoad& l = type_load_[task.spec().type()];
    l.ended++;
    l.run_seconds += seconds;
    if (l.runs.size() < kMaxAcquireSamples) l.runs.push_back(static_cast<float>(seconds));
  }
  a->set_cost(a->cost_factor() * seconds);
  ChargeAttempt(e, *a);
}

TypeLoad Engine::TakeTypeLoad(const std::string& type) {
  auto it = type_load_.find(type);
  if (it == type_load_.end()) return {};
  TypeLoad out = it->second;
  it->second.runs.clear();
  return out;
}

void Engine::ReleaseFromAgent(Entry& e) {
  v1::Task& task = e.task;
  if (task.agent_id() == 0) return;
  auto it = agents_.find(task.agent_id());
  task.set_lease_token(0);
  task.set_lease_expires_unix_ms(0);
  task.set_agent_id(0);
  if (it != agents_.end()) {
    it->second.leased.erase(task.id());
    it->second.attempts_ended++;
    if (it->second.leased.empty()) it->second.idle_since = now();
    RefreshIdle(it->second);
  }
  ReleaseResources(e);
}

void Engine::Finish(Entry& e, v1::TaskState terminal, const std::string& reason) {
  RemoveFromReady(e);
  e.task.set_reason(reason);  // before SetState: its event carries the reason
  SetState(e, terminal);
  e.task.set_finished_unix_ms(now_ms());
  e.task.set_not_before_unix_ms(0);
  outbox_.terminal.push_back(e.task.id());
  if (terminal != v1::TASK_STATE_DEAD) {
    finished_.emplace_back(FromUnixMs(e.task.finished_unix_ms()), e.task.id());
    // Recovery leaves finished tasks past their retention in the store only, so their ids
    // can be the highest nobody restores: the store's max_task_id must cover them.
    if (e.task.id() > persisted_max_task_id_) PersistMaxTaskId();
  }
  switch (terminal) {
    case v1::TASK_STATE_DEAD:
      probe_.dead_lettered++;
      dead_.insert(e.task.id());
      break;
    case v1::TASK_STATE_CANCELED:
      probe_.canceled++;
      break;
    case v1::TASK_STATE_EXPIRED:
      probe_.expired++;
      break;
    case v1::TASK_STATE_SUCCEEDED:
      probe_.succeeded++;
      probe_.completion_latency.Observe(
          static_cast<double>(e.task.finished_unix_ms() - e.task.created_unix_ms()) / 1000.0);
      break;
    default:
      break;
  }
  // Only a task with edges or a workflow has anything to propagate (the common standalone
  // task skips the queue and its lookups).
  const v1::TaskSpec& spec = e.task.spec();
  if ((e.links && !e.links->children.empty()) || e.task.workflow_id() != 0 ||
      spec.depends_on_size() > 0 || spec.depends_on_finished_size() > 0) {
    OnTaskEnded(e);
  }
}

absl::Duration Engine::Backoff(const Entry& e) {
  const v1::TaskSpec& s = e.task.spec();
  const TypeDefaults d = DefaultsFor(s.type());
  const absl::Duration base =
      s.backoff_base_ms() > 0 ? absl::Milliseconds(s.backoff_base_ms()) : d.retry.base;
  const absl::Duration cap =
      s.backoff_cap_ms() > 0 ? absl::Milliseconds(s.backoff_cap_ms()) : d.retry.cap;
  // Exponential with full jitter: uniform in [0, min(cap, base * 2^(failures-1))].
  const int exp = std::clamp(e.task.failures() - 1, 0, 40);
  absl::Duration ceiling = base * static_cast<double>(1ULL << std::min(exp, 30));
  if (exp > 30 || ceiling > cap) ceiling = cap;
  const int64_t max_ms = std::max<int64_t>(0, absl::ToInt64Milliseconds(ceiling));
  std::uniform_int_distribution<int64_t> dist(0, max_ms);
  return absl::Milliseconds(dist(rng_));
}

void Engine::FailAttempt(Entry& e, const std::string& outcome, const std::string& error,
                         bool retryable, bool counted) {
  CloseAttempt(e, outcome, error, counted);
  ReleaseFromAgent(e);
  v1::Task& task = e.task;
  task.set_last_error(error.substr(0, kMaxErrorText));
  if (counted) {
    task.set_failures(task.failures() + 1);
    probe_.failed_attempts++;
  }
  if (!retryable) {
    Finish(e, v1::TASK_STATE_DEAD, absl::StrCat("non-retryable failure: ", error.substr(0, 200)));
    return;
  }
  if (task.spec().cost_budget() > 0 && task.cost() >= task.spec().cost_budget()) {
    probe_.budget_exhausted++;
    Finish(e, v1::TASK_STATE_DEAD,
           absl::StrCat("cost budget exhausted (spent ", task.cost(), " of ",
                        task.spec().cost_budget(), "): ", error.substr(0, 200)));
    return;
  }
  if (task.failures() >= task.effective_max_attempts()) {
    Finish(e, v1::TASK_STATE_DEAD,
           absl::StrCat("attempts exhausted (", task.failures(), " of ",
                        task.effective_max_attempts(), "): ", error.substr(0, 200)));
    return;
  }
  probe_.retries++;
  if (!counted) {
    MakeReady(e);  // not the task's fault: no backoff
    return;
  }
  const absl::Time at = now() + Backoff(e);
  SetState(e, v1::TASK_STATE_RETRY_WAIT);
  task.set_not_before_unix_ms(ToUnixMs(at));
  Arm(TimerKind::kRetry, task.id(), e.gen, at);
}

// ---------------------------------------------------------------------------------------
// Dispatch

void Engine::RefreshIdle(AgentInfo& agent) {
  const bool idle = agent.stream_open && !agent.draining &&
                    (agent.max_uses == 0 || agent.attempts_started < agent.max_uses) &&
                    static_cast<int>(agent.leased.size()) < agent.max_concurrency &&
                    BreakerAllows(agent);
  for (const std::string& type : agent.types) {
    TypeQueue& q = queues_[type];
    if (idle) {
      q.idle_agents.insert(agent.id);
    } else {
      q.idle_agents.erase(agent.id);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Task commands

Engine::Entry* Engine::Find(TaskId id) {
  auto it = tasks_.find(id);
  return it == tasks_.end() ? nullptr : it->second.get();
}
const Engine::Entry* Engine::Find(TaskId id) const {
  auto it = tasks_.find(id);
  return it == tasks_.end() ? nullptr : it->second.get();
}

const v1::Task* Engine::Snapshot(TaskId id) const {
  const Entry* e = Find(id);
  return e == nullptr ? nullptr : &e->task;
}

absl::StatusOr<const v1::Task*> Engine::Get(TaskId id) const {
  const Entry* e = Find(id);
  if (e == nullptr) return absl::NotFoundError(absl::StrCat("id: task ", id, " not found"));
  return &e->task;
}

namespace {

bool HasLabel(const v1::Task& t, absl::string_view label) {
  const size_t eq = label.find('=');
  const auto& labels = t.spec().labels();
  auto it = labels.find(std::string(label.substr(0, eq)));
  if (it == labels.end()) return false;
  return eq == absl::string_view::npos || it->second == label.substr(eq + 1);
}

// Walks ids from `after` (exclusive) up, or down with `newest_first` (0: from the newest),
// over an ordered container of ids (the keys of `c`, through `id_of`), collecting the
// matches: at most f.limit of them, looking at no more than f.max_scan.
template <typename C, typename IdOf, typename TaskOf, typename Match>
ListPage Walk(const C& c, const ListFilter& f, IdOf id_of, TaskOf task_of, Match matches) {
  ListPage page;
  const int limit = std::clamp(f.limit, 1, 1000);
  const int max_scan = std::max(f.max_scan, limit);
  int scanned = 0;
  auto visit = [&](auto it) {
    const v1::Task* t = task_of(it);
    ++scanned;
    if (t != nullptr && matches(*t)) page.tasks.push_back(t);
    if (static_cast<int>(page.tasks.size()) >= limit || scanned >= max_scan) {
      page.next = id_of(it);
      return false;
    }
    return true;
  };
  if (!f.newest_first) {
    for (auto it = c.upper_bound(f.after); it != c.end(); ++it) {
      if (!visit(it)) break;
    }
    // The last id looked at is the next page's start; nothing more when it was the last.
    if (page.next != 0 && std::next(c.find(page.next)) == c.end()) page.next = 0;
    return page;
  }
  auto it = f.after == 0 ? c.end() : c.lower_bound(f.after);
  while (it != c.begin()) {
    --it;
    if (!visit(it)) break;
  }
  if (page.next != 0 && c.find(page.next) == c.begin()) page.next = 0;
  return page;
}

}  // namespace

ListPage Engine::List(const ListFilter& f) const {
  auto matches = [&](const v1::Task& t) {
    if (f.state != v1::TASK_STATE_UNSPECIFIED && t.state() != f.state) return false;
    if (!f.type.empty() && t.spec().type() != f.type) return false;
    if (!f.tenant.empty() && t.spec().tenant() != f.tenant) return false;
    if (f.priority != v1::PRIORITY_UNSPECIFIED && t.spec().priority() != f.priority) return false;
    if (!f.label.empty() && !HasLabel(t, f.label)) return false;
    if (!f.error_contains.empty() && !absl::StrContains(t.last_error(), f.error_contains)) {
      return false;
    }
    return true;
  };
  if (f.workflow_id != 0) {
    // Only the workflow's own tasks are looked through.
    std::set<TaskId> ids;
    if (auto w = GetWorkflow(f.workflow_id); w.ok()) {
      for (const v1::WorkflowTaskRef& ref : (*w)->tasks()) ids.insert(ref.task_id());
    }
    return Walk(
        ids, f, [](auto it) { return *it; },
        [this](auto it) -> const v1::Task* {
          const Entry* e = Find(*it);
          return e == nullptr ? nullptr : &e->task;
        },
        matches);
  }
  if (f.dead_only) {
    return Walk(
        dead_, f, [](auto it) { return *it; },
        [this](auto it) -> const v1::Task* {
          const Entry* e = Find(*it);
          return e == nullptr ? nullptr : &e->task;
        },
        matches);
  }
  return Walk(
      tasks_, f, [](auto it) { return it->first; },
      [](auto it) -> const v1::Task* { return &it->second->task; }, matches);
}

absl::StatusOr<const v1::Task*> Engine::Cancel(TaskId id, const std::string& reason) {
  Entry* e = Find(id);
  if (e == nullptr) return absl::NotFoundError(absl::StrCat("id: task ", id, " not found"));
  const v1::TaskState s = e->task.state();
  if (IsTerminal(s)) {
    return absl::FailedPreconditionError(
        absl::StrCat("id: task ", id, " is already ", StateName(s)));
  }
  const std::string why = reason.empty() ? "canceled by request" : reason.substr(0, 1024);
  if (s == v1::TASK_STATE_LEASED) {
    PushCancel(e->task, why);
    CloseAttempt(*e, "canceled", why, false);
    const AgentId agent = e->task.agent_id();
    ReleaseFromAgent(*e);
    Finish(*e, v1::TASK_STATE_CANCELED, why);
    if (auto it = agents_.find(agent); it != agents_.end()) FillAgent(it->second);
  } else {
    Finish(*e, v1::TASK_STATE_CANCELED, why);
  }
  return &e->task;
}

absl::StatusOr<std::vector<TaskId>> Engine::SelectDeadLetters(const std::vector<TaskId>& ids,
                                                              bool all,
                                                              const std::string& type) const {
  std::vector<TaskId> chosen;
  if (all) {
    for (TaskId id : dead_) {
      if (type.empty() || Find(id)->task.spec().type() == type) chosen.push_back(id);
    }
  } else {
    if (ids.empty()) return absl::InvalidArgumentError("ids: give task ids, or all");
    for (TaskId id : ids) {
      const Entry* e = Find(id);
      if (e == nullptr) return absl::NotFoundError(absl::StrCat("ids: task ", id, " not found"));
      if (e->task.state() != v1::TASK_STATE_DEAD) {
        return absl::FailedPreconditionError(absl::StrCat(
            "ids: task ", id, " is ", StateName(e->task.state()), ", not dead-lettered"));
      }
      chosen.push_back(id);
    }
  }
  return chosen;
}

absl::StatusOr<std::vector<TaskId>> Engine::Reprocess(const std::vector<TaskId>& ids, bool all,
                                                      const std::string& type) {
  absl::StatusOr<std::vector<TaskId>> selected = SelectDeadLetters(ids, all, type);
  if (!selected.ok()) return selected.status();
  const std::vector<TaskId>& chosen = *selected;
  const int64_t needed = static_cast<int64_t>(chosen.size());
  if (outstanding() + needed > options_.capacity) {
    absl::Status st = absl::ResourceExhaustedError(
        absl::StrCat("queue full: ", outstanding(), " of ", options_.capacity,
                     " outstanding; cannot take ", needed, " dead letters back"));
    st.SetPayload(kRetryAfterPayload,
                  absl::Cord(absl::StrCat(absl::ToInt64Milliseconds(options_.min_retry_after))));
    return st;
  }
  for (TaskId id : chosen) {
    Entry& e = *Find(id);
    dead_.erase(id);
    e.task.set_failures(0);
    e.task.set_reason("");
    e.task.set_finished_unix_ms(0);
    probe_.reprocessed++;
    if (e.task.spec().deadline_unix_ms() > 0 && e.task.spec().deadline_unix_ms() <= now_ms()) {
      // Its deadline has passed: it can never start, say so rather than requeue.
      Finish(e, v1::TASK_STATE_EXPIRED, "deadline passed before reprocess");
      continue;
    }
    if (e.task.spec().deadline_unix_ms() > 0) {
      // Queued again before its deadline: make sure a deadline timer is armed. The one from
      // submission is gone when the task was restored while dead (FinishRecovery arms none
      // for terminal tasks); a second timer is harmless, it rechecks state and time.
      Arm(TimerKind::kDeadline, id, 0, FromUnixMs(e.task.spec().deadline_unix_ms()));
    }
    Release(e);  // READY, or held while its workflow is at max_parallel
  }
  return chosen;
}

absl::StatusOr<int64_t> Engine::Purge(const std::vector<TaskId>& ids, bool all,
                                      const std::string& type) {
  absl::StatusOr<std::vector<TaskId>> selected = SelectDeadLetters(ids, all, type);
  if (!selected.ok()) return selected.status();
  const std::vector<TaskId>& chosen = *selected;
  for (TaskId id : chosen) {
    auto it = tasks_.find(id);
    const v1::Task& t = it->second->task;
    ReleaseParents(*it->second);  // a dead task held its parents for a reprocess
    ForgetIdempotencyKey(t);
    state_counts_[t.state()]--;
    dead_.erase(id);
    const v1::Task task = std::move(it->second->task);
    tasks_.erase(it);
    outbox_.purged.push_back(id);
    probe_.purged++;
    TaskLeftMemory(task);
  }
  EvictWorkflows();
  if (!chosen.empty()) {
    // Ids are never reused, even when the highest ones are purged.
    PersistMaxTaskId();
  }
  return static_cast<int64_t>(chosen.size());
}

// ---------------------------------------------------------------------------------------
// Time

void Engine::Arm(TimerKind kind, uint64_t id, uint32_t gen, absl::Time at) {
  timers_.push(Timer{at, next_timer_seq_++, id, gen, kind});
}

std::optional<absl::Time> Engine::NextWakeup() const {
  std::optional<absl::Time> wake;
  if (!timers_.empty()) wake = timers_.top().at;
  if (!finished_.empty()) {
    const absl::Time evict_at = finished_.front().first + options_.terminal_retention;
    wake = wake ? std::min(*wake, evict_at) : evict_at;
  }
  if (!refusals_.empty()) {
    const absl::Time flush_at = refusals_since_ + kRefusalWindow;
    wake = wake ? std::min(*wake, flush_at) : flush_at;
  }
  return wake;
}

void Engine::Tick() {
  const absl::Time t = now();
  while (!timers_.empty() && timers_.top().at <= t) {
    Timer timer = timers_.top();
    timers_.pop();
    FireTimer(timer);
  }
  Evict();
  FlushRefusals(false);
}

void Engine::Evict() {
  const absl::Time t = now();
  while (!finished_.empty()) {
    const auto [finished_at, id] = finished_.front();
    auto it = tasks_.find(id);
    // Skip entries for tasks that were purged or reprocessed since they finished.
    // (An entry older than the task's finish is stale: the task was reprocessed and
    // finished again. A deferred one is re-queued later than its finish.)
    if (it == tasks_.end() || !IsTerminal(it->second->task.state()) ||
        it->second->task.state() == v1::TASK_STATE_DEAD ||
        ToUnixMs(finished_at) < it->second->task.finished_unix_ms()) {
      finished_.pop_front();
      continue;
    }
    const bool too_many = static_cast<int64_t>(finished_.size()) > options_.max_terminal_in_memory;
    if (!too_many && finished_at + options_.terminal_retention > t) break;
    // Not yet persisted (it finished in this Tick): the caller must still read it through
    // Snapshot for the store, or the store keeps its old state. Evict it on a later Tick.
    if (dirty_set_.contains(id)) break;
    if (it->second->Lc().live_children > 0) {
      // Unfinished children still need its result: keep it until the last one ends
      // (PropagateEnd queues it again then).
      it->second->L().evict_deferred = true;
      finished_.pop_front();
      continue;
    }
    const v1::Task task = std::move(it->second->task);
    ForgetIdempotencyKey(task);
    state_counts_[task.state()]--;
    tasks_.erase(it);
    finished_.pop_front();
    probe_.evicted++;
    TaskLeftMemory(task);
  }
  EvictWorkflows();
}

void Engine::TaskLeftMemory(const v1::Task& t) {
  if (t.workflow_id() == 0) return;
  auto w = workflows_.find(t.workflow_id());
  if (w == workflows_.end()) return;
  WorkflowEntry& we = w->second;
  if (we.resident < 0) {
    // Counted once, when the first task leaves; a workflow gains no task afterwards.
    we.resident = 0;
    for (const v1::WorkflowTaskRef& ref : we.record.tasks())
      we.resident += tasks_.contains(ref.task_id());
  } else {
    we.resident--;
  }
  if (we.resident == 0) workflow_candidates_.push_back(t.workflow_id());
}

void Engine::EvictWorkflows() {
  std::erase_if(workflow_candidates_, [this](WorkflowId id) {
    auto w = workflows_.find(id);
    if (w == workflows_.end() || w->second.resident != 0) return true;
    if (w->second.record.state() == v1::WORKFLOW_STATE_RUNNING) return true;  // (cannot be)
    if (dirty_workflow_set_.contains(id)) return false;  // not yet persisted: a later Tick
    workflows_.erase(w);
    probe_.workflows_evicted++;
    return true;
  });
}

void Engine::FireTimer(const Timer& t) {
  if (t.kind == TimerKind::kBreaker) {
    auto it = agents_.find(t.id);
    if (it == agents_.end() || it->second.breaker != Breaker::kOpen ||
        it->second.breaker_until > now()) {
      return;  // gone, closed meanwhile, or opened again later (a newer timer is armed)
    }
    SetBreaker(it->second, Breaker::kHalfOpen,
               absl::StrCat("open for ", absl::FormatDuration(options_.breaker_open_for),
                            ": one probe task may run"));
    FillAgent(it->second);
    return;
  }
  if (t.kind == TimerKind::kRefill) {
    if (t.id >= resources_.size()) return;
    auto it = std::next(resources_.begin(), static_cast<std::ptrdiff_t>(t.id));
    if (it->second.wakeup != t.at) return;  // a newer wake-up replaced it
    it->second.wakeup = absl::InfinitePast();
    WakeResourceWaiters(it->first);
    return;
  }
  if (t.kind == TimerKind::kAgent) {
    auto it = agents_.find(t.id);
    if (it == agents_.end()) return;
    const absl::Time due = it->second.last_seen + options_.lease_ttl;
    if (due > now()) {
      Arm(TimerKind::kAgent, t.id, 0, due);
      return;
    }
    RemoveAgent(it->second, "lease_expired", true);
    return;
  }
  Entry* e = Find(t.id);
  if (e == nullptr) return;
  v1::Task& task = e->task;
  if (t.kind == TimerKind::kDeadline) {
    const v1::TaskState s = task.state();
    if ((s == v1::TASK_STATE_READY || s == v1::TASK_STATE_RETRY_WAIT ||
         s == v1::TASK_STATE_WAITING) &&
        task.spec().deadline_unix_ms() <= now_ms()) {
      Finish(*e, v1::TASK_STATE_EXPIRED, "deadline passed before the task started");
    }
    return;
  }
  if (t.gen != e->gen) return;  // the task moved on since the timer was armed
  switch (t.kind) {
    case TimerKind::kRetry:
      if (task.state() == v1::TASK_STATE_RETRY_WAIT) MakeReady(*e);
      break;
    case TimerKind::kPreempt:
      if (task.state() == v1::TASK_STATE_READY) Preempt(*e);
      break;
    case TimerKind::kLease: {
      if (task.state() != v1::TASK_STATE_LEASED) break;
      const absl::Time expires = FromUnixMs(task.lease_expires_unix_ms());
      if (expires > now()) {
        Arm(TimerKind::kLease, task.id(), e->gen, expires);
        break;
      }
      probe_.leases_expired++;
      const AgentId agent = task.agent_id();
      FailAttempt(*e, "lease_expired", "lease expired: no heartbeat from agent", true, true);
      if (auto it = agents_.find(agent); it != agents_.end()) FillAgent(it->second);
      break;
    }
    case TimerKind::kExecTimeout: {
      if (task.state() != v1::TASK_STATE_LEASED) break;
      probe_.timed_out++;
      PushCancel(task, "execution timeout");
      const AgentId agent = task.agent_id();
      bool agent_fault = false;
      if (auto it = agents_.find(agent); it != agents_.end()) {
        agent_fault = RecordAgentFailure(it->second, task.id());
      }
      if (agent_fault) probe_.failures_blamed_on_agent++;
      FailAttempt(
          *e, agent_fault ? "agent_fault" : "timed_out",
          absl::StrCat("execution timeout of ", task.effective_execution_timeout_ms(),
                       " ms exceeded",
                       agent_fault ? " (not counted: the agent's circuit breaker is open)" : ""),
          true, !agent_fault);
      if (auto it = agents_.find(agent); it != agents_.end()) FillAgent(it->second);
      break;
    }
    default:
      break;
  }
}

// ---------------------------------------------------------------------------------------
// Recovery

void Engine::Restore(v1::Task task) {
  auto e = std::make_unique<Entry>();
  const TaskId id = task.id();
  e->task = std::move(task);
  state_counts_[e->task.state()]++;
  if (!IsTerminal(e->task.state())) CountOutstanding(e->task, +1);
  next_task_id_ = std::max(next_task_id_, id + 1);
  const v1::Task& t = e->task;
  if (!t.spec().idempotency_key().empty()) {
    idempotency_[absl::StrCat(t.spec().tenant(), std::string(1, '\0'),
                              t.spec().idempotency_key())] = id;
  }
  if (t.state() == v1::TASK_STATE_DEAD) dead_.insert(id);
  if (IsTerminal(t.state()) && t.state() != v1::TASK_STATE_DEAD) {
    finished_.emplace_back(FromUnixMs(t.finished_unix_ms()), id);
  }
  tasks_.emplace(id, std::move(e));
}

void Engine::FinishRecovery(uint64_t max_task_id) {
  next_task_id_ = std::max(next_task_id_, max_task_id + 1);
  persisted_max_task_id_ = max_task_id;
  std::sort(finished_.begin(), finished_.end());
  // Dependencies: children lists and counters from the stored edges (in id order, so
  // parents are linked before their children are judged below).
  for (auto& [id, ptr] : tasks_) LinkParents(*ptr);
  // Critical paths (from the default durations: nothing is learned yet).
  for (const auto& [wid, we] : workflows_) ComputeCriticalPaths(we, nullptr);
  // Workflows' active tasks (their max_parallel counts them).
  for (auto& [id, ptr] : tasks_) {
    const v1::TaskState st = ptr->task.state();
    if (ptr->task.workflow_id() == 0) continue;
    if (st != v1::TASK_STATE_READY && st != v1::TASK_STATE_LEASED &&
        st != v1::TASK_STATE_RETRY_WAIT) {
      continue;
    }
    if (auto w = workflows_.find(ptr->task.workflow_id()); w != workflows_.end())
      w->second.active++;
  }
  // The states as stored: a task ending below (expiring) may move its waiting children on
  // before the loop reaches them; those are then handled already and skipped.
  std::vector<std::pair<Entry*, v1::TaskState>> stored;
  for (auto& [id, ptr] : tasks_) {
    if (!IsTerminal(ptr->task.state())) stored.emplace_back(ptr.get(), ptr->task.state());
  }
  for (auto [entry, stored_state] : stored) {
    Entry& e = *entry;
    v1::Task& t = e.task;
    const TaskId id = t.id();
    if (t.spec().deadline_unix_ms() > 0) {
      // (Harmless for a task that ended meanwhile: the timer rechecks state and time.)
      Arm(TimerKind::kDeadline, id, 0, FromUnixMs(t.spec().deadline_unix_ms()));
    }
    if (t.state() != stored_state) continue;
    switch (t.state()) {
      case v1::TASK_STATE_LEASED:
        // The server stopped while an agent held it. The agent's lease died with the
        // server: close the attempt, uncounted, and queue the task again.
        CloseAttempt(e, "interrupted", "server restarted while the task was leased", false);
        t.set_lease_token(0);
        t.set_lease_expires_unix_ms(0);
        t.set_agent_id(0);
        MakeReady(e);
        break;
      case v1::TASK_STATE_RETRY_WAIT:
        e.gen++;
        Arm(TimerKind::kRetry, id, e.gen, FromUnixMs(t.not_before_unix_ms()));
        break;
      case v1::TASK_STATE_READY:
        // Unchanged by recovery: queued again without rewriting its row, so a restart
        // with a million queued tasks writes nothing.
        Enqueue(e);
        break;
      case v1::TASK_STATE_WAITING:
        Reevaluate(e);
        break;
      case v1::TASK_STATE_UNSPECIFIED:
        MakeReady(e);
        break;
      default:
        break;
    }
  }
  // Finished workflows none of whose tasks came back into memory stay in the store only.
  for (auto it = workflows_.begin(); it != workflows_.end();) {
    const v1::Workflow& w = it->second.record;
    const bool resident =
        std::any_of(w.tasks().begin(), w.tasks().end(),
                    [this](const v1::WorkflowTaskRef& r) { return tasks_.contains(r.task_id()); });
    if (w.state() != v1::WORKFLOW_STATE_RUNNING && !resident &&
        !dirty_workflow_set_.contains(it->first)) {
      it = workflows_.erase(it);
    } else {
      ++it;
    }
  }
}

Outbox Engine::TakeOutbox() {
  if (costs_dirty_ && options_.persist_costs) {
    std::string json;
    (void)google::protobuf::util::MessageToJsonString(CostTotalsRecord(), &json);
    outbox_.meta.emplace_back("costs", std::move(json));
    costs_dirty_ = false;
  }
  Outbox out = std::move(outbox_);
  outbox_ = Outbox{};
  dirty_set_.clear();
  dirty_workflow_set_.clear();
  return out;
}

}  // namespace drover::core
