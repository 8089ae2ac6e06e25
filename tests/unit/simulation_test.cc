// Deterministic simulation of the engine.
//
// For each seed, one engine on a ManualClock runs a random schedule of client and agent
// behaviour: submissions (with deadlines, idempotency keys, invalid specs, load beyond the
// admission capacity), agents that register, open and close their work streams, complete,
// fail, report with stale tokens, heartbeat or crash, hold work for long stretches,
// deregister; cancels, reprocessing and purging of dead letters; and clock jumps, small
// and far past lease TTLs and deadlines. The agents are modelled here from the outbox
// pushes alone, so the test checks the engine against what agents actually saw.
//
// After every step the invariants below are checked; at the end, failures stop, healthy
// agents drain the queue, and every accepted task must have reached exactly one terminal
// state consistent with what happened to it.
//
// A failure names its seed and step; replay one seed with DROVER_SIM_SEED=N (and print
// its schedule with DROVER_SIM_VERBOSE=1). DROVER_SIM_SEEDS=N changes the number of seeds,
// DROVER_SIM_STEPS=N the schedule length.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "core/codec.h"
#include "core/engine.h"
#include "drover/v1/drover.pb.h"
#include "gtest/gtest.h"
#include "store/store.h"
#include "util/clock.h"

namespace drover::core {
namespace {

constexpr absl::Duration kTtl = absl::Seconds(30);
constexpr int kDefaultSeeds = 2000;
constexpr int kDefaultSteps = 200;
constexpr int kMaxLiveAgents = 6;
constexpr int kMaxDrainRounds = 5000;
const std::vector<std::string> kTypes = {"a", "b", "c"};

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  int n = 0;
  return v != nullptr && absl::SimpleAtoi(v, &n) ? n : fallback;
}

// Counters summed over all seeds, to show the schedules reach every corner.
struct Coverage {
  int64_t schedules = 0;
  int64_t steps = 0;
  int64_t submitted = 0;
  int64_t deduplicated = 0;
  int64_t shed = 0;
  int64_t full = 0;
  int64_t invalid = 0;
  int64_t succeeded = 0;
  int64_t dead = 0;
  int64_t expired = 0;
  int64_t canceled = 0;
  int64_t canceled_running = 0;
  int64_t leases_expired = 0;
  int64_t timed_out = 0;
  int64_t stale_refused = 0;
  int64_t reprocessed = 0;
  int64_t purged = 0;
  int64_t deregistered = 0;
  int64_t evicted = 0;
  int64_t undelivered = 0;
  int64_t restarts = 0;
  int64_t workflows = 0;
  int64_t workflows_succeeded = 0;
  int64_t workflows_failed = 0;
  int64_t workflows_canceled = 0;
  int64_t workflows_evicted = 0;
  int64_t cascaded = 0;  // tasks canceled because a parent did not succeed (or fail_fast)
  int64_t fail_fast = 0;
  int64_t breaker_opened = 0;  // (of the final engines; restarts reset breakers)
  int64_t breaker_closed = 0;
  int64_t breaker_blamed = 0;
  int64_t preempted = 0;  // (these four of the final engines too)
  int64_t resource_waits = 0;
  int64_t budget_waits = 0;
  int64_t budget_exhausted = 0;

  void Add(const EngineProbe& p) {
    submitted += p.submitted;
    deduplicated += p.deduplicated;
    shed += p.rejected_shed;
    full += p.rejected_full;
    invalid += p.rejected_invalid;
    succeeded += p.succeeded;
    dead += p.dead_lettered;
    expired += p.expired;
    canceled += p.canceled;
    leases_expired += p.leases_expired;
    timed_out += p.timed_out;
    stale_refused += p.stale_reports;
    reprocessed += p.reprocessed;
    purged += p.purged;
    evicted += p.evicted;
  }
};

class Simulation {
 public:
  // Counters of engines retired by restarts are added to `cov`.
  Simulation(uint64_t seed, int steps, bool verbose, Coverage* cov)
      : seed_(seed),
        steps_(steps),
        verbose_(verbose),
        cov_(cov),
        rng_(seed * 0x9E3779B97F4A7C15ULL + 1) {
    EngineOptions o;
    // A quarter of the schedules run against a small capacity, so admission control
    // (shedding at 90 %, refusal at 100 %) is exercised.
    o.capacity = Chance(0.25) ? Uniform(8, 40) : 100'000;
    o.lease_ttl = kTtl;
    o.defaults.retry = {absl::Milliseconds(200), absl::Seconds(10), 3};
    o.defaults.execution_timeout = absl::Minutes(10);
    TypeDefaults b;
    b.retry = {absl::Milliseconds(50), absl::Seconds(2), 4};
    b.execution_timeout = absl::Seconds(20);
    TypeDefaults c;
    c.retry = {absl::Seconds(1), absl::Seconds(60), 2};
    c.execution_timeout = absl::Minutes(2);
    o.per_type["b"] = b;
    o.per_type["c"] = c;
    // Some schedules keep finished tasks in memory only briefly, or only a few of them.
    if (Chance(0.4)) o.terminal_retention = absl::Seconds(Uniform(30, 600));
    if (Chance(0.3)) o.max_terminal_in_memory = Uniform(3, 30);
    // Breakers that open sooner and close within a schedule, so every transition happens.
    o.breaker_open_for = absl::Seconds(Uniform(5, 60));
    if (Chance(0.3)) o.breaker_failures = Uniform(2, 4);
    // Named resources (a small semaphore and a token bucket), tenant weights, preemption
    // that fires within a schedule, and a placement policy per type.
    o.resources["gpu"] = ResourceSpec{ResourceSpec::Kind::kSemaphore, Uniform(1, 3)};
    o.resources["tok"] =
        ResourceSpec{ResourceSpec::Kind::kTokenBucket, 10, absl::Seconds(Uniform(5, 60))};
    if (Chance(0.5)) o.tenant_weights["t1"] = Uniform(1, 4);
    o.preempt_after = Chance(0.2) ? absl::ZeroDuration() : absl::Seconds(Uniform(5, 60));
    const Placement kPlacements[] = {Placement::kLeastLoaded, Placement::kRoundRobin,
                                     Placement::kRandom, Placement::kCost};
    o.defaults.placement = kPlacements[Uniform(0, 3)];
    b.placement = kPlacements[Uniform(0, 3)];
    c.placement = kPlacements[Uniform(0, 3)];
    o.per_type["b"] = b;
    o.per_type["c"] = c;
    o.seed = seed;
    engine_ = std::make_unique<Engine>(std::move(o), clock_);
    rewalk_ = true;
  }

  // Runs the schedule and the drain; returns the first violation, or "" when none.
  std::string Run() {
    for (step_ = 1; step_ <= steps_; ++step_) {
      if (!RandomStep() || !CheckAll()) return failure_;
    }
    if (!Drain()) return failure_;
    return "";
  }

  const EngineProbe& probe() const { return engine_->probe(); }
  int64_t steps_run() const { return step_; }
  int64_t canceled_running() const { return canceled_running_; }
  int64_t deregistered() const { return deregistered_; }
  int64_t undelivered() const { return undelivered_; }
  int64_t restarts() const { return restarts_; }
  // Workflow outcomes, known after Run.
  int64_t workflows() const { return static_cast<int64_t>(workflows_.size()); }
  const std::map<v1::WorkflowState, int64_t>& workflow_ends() const { return workflow_ends_; }
  int64_t evicted_workflows() const { return evicted_workflows_; }
  int64_t cascaded() const { return cascaded_; }
  int64_t breaker_blamed() const { return breaker_blamed_; }
  int64_t fail_fast() const { return fail_fast_; }

 private:
  enum class Mode { kHealthy, kSlow, kFlaky, kCrashed };

  // An agent process as the test imagines it: it knows only what it was pushed and what
  // the engine answered.
  struct SimAgent {
    AgentId id = 0;  // 0 once the agent learned the engine dropped it
    std::vector<std::string> types;
    int slots = 1;
    Mode mode = Mode::kHealthy;
    bool stream_open = false;
    std::map<TaskId, uint64_t> held;  // leases pushed to it that it still works on
  };

  // What the test knows about one accepted task.
  struct TaskModel {
    v1::TaskState last_state = v1::TASK_STATE_UNSPECIFIED;  // at the end of the last step
    int64_t last_updated_ms = -1;                           // likewise
    int expected_max_attempts = 0;
    int successes = 0;      // Complete calls that returned OK
    std::string result;     // the result of the successful completion
    bool canceled = false;  // a Cancel returned OK
    int terminal_notices = 0;
    int reprocessed = 0;   // successful reprocesses that took it back
    int series_start = 0;  // history entries before the last reprocess
    bool purged = false;
    bool evicted = false;     // finished and dropped from memory (the store keeps it)
    int64_t finished_ms = 0;  // when last seen terminal
    int64_t deadline_ms = 0;
    bool has_children = false;  // its eviction waits for children that need its result
    WorkflowId workflow = 0;
  };
  static bool InMemory(const TaskModel& m) { return !m.purged && !m.evicted; }
  static bool Finished(v1::TaskState s) {
    return s == v1::TASK_STATE_SUCCEEDED || s == v1::TASK_STATE_CANCELED ||
           s == v1::TASK_STATE_EXPIRED;
  }

  struct PastLease {
    AgentId agent;
    TaskId task;
    uint64_t token;
  };

  // --- randomness -----------------------------------------------------------------------

  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool Chance(double p) { return std::bernoulli_distribution(p)(rng_); }
  template <typename T>
  T& Pick(std::vector<T>& v) {
    return v[static_cast<size_t>(Uniform(0, static_cast<int>(v.size()) - 1))];
  }

  // --- failure reporting ------------------------------------------------------------------

  // Records the first violation with its seed and step; always returns false.
  bool Violation(const std::string& what) {
    if (failure_.empty()) {
      failure_ = absl::StrCat("seed=", seed_, " step=", step_, " action=", action_, ": ", what,
                              "\n  last actions:\n    ", absl::StrJoin(log_, "\n    "),
                              "\n  replay with DROVER_SIM_SEED=", seed_, " DROVER_SIM_VERBOSE=1");
    }
    return false;
  }
  void Note(const std::string& what) {
    const std::string line = absl::StrCat("step ", step_, ": ", what);
    if (verbose_) std::cout << "seed=" << seed_ << " " << line << "\n";
    log_.push_back(line);
    if (log_.size() > 16) log_.pop_front();
  }

  int64_t NowMs() const { return ToUnixMs(clock_.Now()); }
  const v1::Task* Snap(TaskId id) const { return engine_->Snapshot(id); }

  // --- outbox -----------------------------------------------------------------------------

  // Does what drover serve does with the outbox: the store model takes the changed records
  // first, then pushes go to the agents' models. Now and then a push fails (the stream
  // breaks) and its lease is handed back; that may produce more to deliver.
  bool Deliver() {
    // Streams that break during this delivery stay broken for the outboxes it produces:
    // a lease the engine made before it heard of the break is handed back, as drover
    // serve's stream registry does for an agent with no stream.
    broken_.clear();
    for (Outbox out = engine_->TakeOutbox(); !out.empty(); out = engine_->TakeOutbox()) {
      if (!DeliverOne(out)) return false;
    }
    return true;
  }

  bool DeliverOne(Outbox& out) {
    for (TaskId id : out.dirty) {
      const v1::Task* t = Snap(id);
      if (t == nullptr) {
        return Violation(absl::StrCat("dirty task ", id, " is not in memory"));
      }
      if (store_.size() <= id) store_.resize(id + 1);
      store_[id] = *t;
    }
    for (TaskId id : out.purged) {
      if (id < store_.size()) store_[id].reset();
    }
    absl::flat_hash_set<AgentId>& broken = broken_;
    for (Outbox::Push& p : out.pushes) {
      auto it = agent_index_.find(p.agent);
      if (it == agent_index_.end()) {
        return Violation(absl::StrCat("push to agent ", p.agent, " which never registered"));
      }
      SimAgent& a = agents_[it->second];
      if (!broken.contains(p.agent) && a.stream_open && breakable_streams_ && Chance(0.01)) {
        Note(absl::StrCat("the work stream of agent ", p.agent, " breaks"));
        broken.insert(p.agent);
        engine_->CloseStream(p.agent);
        a.stream_open = false;
      }
      if (p.item.has_cancel()) cancel_notices_.insert(p.item.cancel().task_id());
      if (broken.contains(p.agent)) {
        if (p.item.has_lease()) {
          const v1::TaskLease& l = p.item.lease();
          Note(absl::StrCat("lease of task ", l.task_id(), " undelivered"));
          engine_->ReturnUndelivered(p.agent, l.task_id(), l.lease_token());
          undelivered_++;
        }
        continue;
      }
      if (p.item.has_lease()) {
        const v1::TaskLease& l = p.item.lease();
        if (a.id != p.agent) {
          return Violation(absl::StrCat("lease of task ", l.task_id(), " pushed to agent ", p.agent,
                                        " after the engine dropped it"));
        }
        if (!a.stream_open) {
          return Violation(absl::StrCat("lease of task ", l.task_id(), " pushed to agent ", p.agent,
                                        " whose work stream is closed"));
        }
        a.held[l.task_id()] = l.lease_token();
        past_leases_.push_back({p.agent, l.task_id(), l.lease_token()});
      } else if (p.item.has_cancel()) {
        const v1::CancelNotice& c = p.item.cancel();
        auto h = a.held.find(c.task_id());
        if (h == a.held.end() || h->second != c.lease_token()) {
          return Violation(absl::StrCat("cancel notice for task ", c.task_id(), " lease ",
                                        c.lease_token(), " went to agent ", p.agent,
                                        " which does not hold that lease"));
        }
        a.held.erase(h);
      }
    }
    for (const auto& [key, value] : out.meta) {
      if (key == "max_task_id" && !absl::SimpleAtoi(value, &stored_max_task_id_)) {
        return Violation(absl::StrCat("meta max_task_id='", value, "'"));
      }
    }
    for (WorkflowId id : out.dirty_workflows) {
      const v1::Workflow* w = engine_->WorkflowSnapshot(id);
      if (w == nullptr) return Violation(absl::StrCat("dirty workflow ", id, " is not in memory"));
      workflow_store_[id] = *w;
    }
    for (WorkflowId id : out.terminal_workflows) workflow_notices_[id]++;
    for (TaskId id : out.terminal) {
      if (id >= tasks_.size()) {
        return Violation(absl::StrCat("terminal notice for unknown task ", id));
      }
      tasks_[id].terminal_notices++;
    }
    return true;
  }

  // --- the schedule -------------------------------------------------------------------------

  bool RandomStep() {
    reprocessed_now_.clear();
    cancel_notices_.clear();
    after_tick_ = false;
    const int r = Uniform(1, 100);
    if (r <= 24) return Chance(0.25) ? StepSubmitWorkflow() : StepSubmit();
    if (r <= 46) return StepAgentWorks(/*allow_failures=*/true);
    if (r <= 51) return StepStaleReport();
    if (r <= 62) return StepHeartbeats();
    if (r <= 76) return StepAdvance(absl::Milliseconds(Uniform(10, 3000)), false);
    if (r <= 79) return StepBigJump();
    if (r <= 84) return StepRegister();
    if (r <= 87) return StepToggleStream();
    if (r <= 89) return StepCrash();
    if (r <= 91) return StepDeregister();
    if (r <= 96) return StepCancel();
    if (r <= 98) return StepReprocess();
    if (r <= 99) return StepPurge();
    return StepRestart();
  }

  v1::TaskSpec RandomSpec() {
    static const std::vector<std::string> kTenants = {"", "default", "t1", "t2"};
    v1::TaskSpec s;
    s.set_type(kTypes[static_cast<size_t>(Uniform(0, 2))]);
    s.set_priority(static_cast<v1::Priority>(Uniform(0, 5)));  // 0: read as normal
    s.set_payload(absl::StrCat("p", Uniform(0, 1000)));
    if (Chance(0.5)) s.set_tenant(kTenants[static_cast<size_t>(Uniform(0, 3))]);
    if (Chance(0.25)) s.set_deadline_unix_ms(NowMs() + Uniform(500, 120'000));
    if (Chance(0.3)) s.set_idempotency_key(absl::StrCat("k", Uniform(0, 7)));
    if (Chance(0.7)) s.set_max_attempts(Uniform(1, 4));
    if (Chance(0.2)) s.set_execution_timeout_ms(Uniform(2000, 60'000));
    if (Chance(0.2)) {
      const int base = Uniform(1, 2000);
      s.set_backoff_base_ms(base);
      s.set_backoff_cap_ms(Uniform(base, 30'000));
    }
    if (Chance(0.15)) {
      v1::ResourceNeed* n = s.add_resources();
      n->set_name("gpu");
      n->set_amount(Uniform(1, static_cast<int>(engine_->options().resources.at("gpu").capacity)));
    }
    if (Chance(0.1)) {
      v1::ResourceNeed* n = s.add_resources();
      n->set_name("tok");
      n->set_amount(Uniform(1, 10));
    }
    if (Chance(0.1)) {
      // A budget may be beyond every agent's reach: such a task waits, so it has a deadline.
      s.set_cost_budget(Uniform(1, 400));
      if (s.deadline_unix_ms() == 0) s.set_deadline_unix_ms(NowMs() + Uniform(500, 300'000));
    }
    return s;
  }

  int TypeMaxAttempts(const std::string& type) const {
    auto it = engine_->options().per_type.find(type);
    return (it == engine_->options().per_type.end() ? engine_->options().defaults : it->second)
        .retry.max_attempts;
  }

  int64_t BackoffCeilingMs(const v1::Task& t) const {
    const EngineOptions& o = engine_->options();
    auto it = o.per_type.find(t.spec().type());
    const RetryPolicy& r = (it == o.per_type.end() ? o.defaults : it->second).retry;
    const int64_t base = t.spec().backoff_base_ms() > 0 ? t.spec().backoff_base_ms()
                                                        : absl::ToInt64Milliseconds(r.base);
    const int64_t cap = t.spec().backoff_cap_ms() > 0 ? t.spec().backoff_cap_ms()
                                                      : absl::ToInt64Milliseconds(r.cap);
    const int n = std::min(t.failures() - 1, 30);
    return std::min(cap, base << n);
  }

  static std::string IdemKey(const v1::TaskSpec& s) {
    return absl::StrCat(s.tenant().empty() ? "default" : s.tenant(), "/", s.idempotency_key());
  }

  bool StepSubmit() {
    const int n = Chance(0.7) ? 1 : Uniform(2, 4);
    std::vector<v1::TaskSpec> specs;
    for (int i = 0; i < n; ++i) specs.push_back(RandomSpec());
    int invalid = -1;
    if (Chance(0.04)) {
      invalid = Uniform(0, n - 1);
      switch (Uniform(0, 2)) {
        case 0:
          specs[static_cast<size_t>(invalid)].set_type("no spaces");
          break;
        case 1:
          specs[static_cast<size_t>(invalid)].set_priority(static_cast<v1::Priority>(9));
          break;
        default:
          specs[static_cast<size_t>(invalid)].set_execution_timeout_ms(-1);
          break;
      }
    }
    const std::string prefix = n == 1 ? "task" : "tasks";
    action_ = absl::StrCat("submit ", n, invalid >= 0 ? " (one invalid)" : "");

    // What the spec says should happen, worked out before asking the engine.
    std::vector<std::optional<TaskId>> expect_dedup(specs.size());
    std::vector<int> dup_in_batch(specs.size(), -1);
    std::map<std::string, int> batch_keys;
    int fresh = 0;
    bool fresh_low = false;
    for (size_t i = 0; i < specs.size(); ++i) {
      const v1::TaskSpec& s = specs[i];
      if (!s.idempotency_key().empty()) {
        const std::string k = IdemKey(s);
        if (auto it = idem_.find(k); it != idem_.end()) {
          expect_dedup[i] = it->second;
          continue;
        }
        if (auto [it, inserted] = batch_keys.emplace(k, static_cast<int>(i)); !inserted) {
          dup_in_batch[i] = it->second;
          continue;
        }
      }
      fresh++;
      const int p = s.priority() == v1::PRIORITY_UNSPECIFIED ? v1::PRIORITY_NORMAL : s.priority();
      if (p > v1::PRIORITY_HIGH) fresh_low = true;
    }
    const int64_t capacity = engine_->options().capacity;
    const int64_t shed_at = capacity * 9 / 10;  // floor(0.9 * C)
    const int64_t after = model_outstanding_ + fresh;
    std::string expect_error;
    if (invalid >= 0) {
      expect_error = "invalid";
    } else if (fresh > 0 && after > capacity) {
      expect_error = "queue full";
    } else if (fresh > 0 && after > shed_at && fresh_low) {
      expect_error = "load shedding";
    }

    const size_t count_before = engine_->task_count();
    absl::StatusOr<std::vector<Engine::SubmitResult>> r = engine_->Submit(specs, prefix);
    if (!Deliver()) return false;
    Note(absl::StrCat(action_, " -> ", r.ok() ? "ok" : r.status().ToString()));
    if (verbose_ && r.ok()) {
      for (size_t i = 0; i < specs.size(); ++i) {
        Note(absl::StrCat("  task ", (*r)[i].id, (*r)[i].deduplicated ? " (deduplicated)" : "",
                          " key '", IdemKey(specs[i]), "'"));
      }
    }

    if (expect_error == "invalid") {
      const std::string field = n == 1 ? "task." : absl::StrCat("tasks[", invalid, "].");
      if (r.ok() || r.status().code() != absl::StatusCode::kInvalidArgument ||
          !absl::StrContains(r.status().message(), field)) {
        return Violation(absl::StrCat("expected INVALID_ARGUMENT naming ", field, ", got ",
                                      r.ok() ? "OK" : r.status().ToString()));
      }
    } else if (!expect_error.empty()) {
      if (r.ok() || r.status().code() != absl::StatusCode::kResourceExhausted ||
          !absl::StrContains(r.status().message(), expect_error)) {
        return Violation(absl::StrCat("expected RESOURCE_EXHAUSTED (", expect_error, ") with ",
                                      model_outstanding_, " outstanding + ", fresh, " of capacity ",
                                      capacity, ", got ", r.ok() ? "OK" : r.status().ToString()));
      }
      if (!r.status().GetPayload(kRetryAfterPayload).has_value()) {
        return Violation("RESOURCE_EXHAUSTED without the retry-after payload");
      }
    }
    if (!r.ok()) {
      if (expect_error.empty()) {
        return Violation(absl::StrCat("submission refused: ", r.status().ToString()));
      }
      if (engine_->task_count() != count_before) {
        return Violation("a refused batch created tasks");
      }
      return true;
    }
    if (r->size() != specs.size()) return Violation("result count differs from spec count");
    for (size_t i = 0; i < specs.size(); ++i) {
      const Engine::SubmitResult& res = (*r)[i];
      if (expect_dedup[i].has_value() || dup_in_batch[i] >= 0) {
        const TaskId want = expect_dedup[i].has_value()
                                ? *expect_dedup[i]
                                : (*r)[static_cast<size_t>(dup_in_batch[i])].id;
        if (!res.deduplicated || res.id != want) {
          const v1::Task* w = Snap(want);
          return Violation(absl::StrCat("spec ", i, " should have deduplicated to task ", want,
                                        " (",
                                        w == nullptr ? "not in memory" : StateName(w->state()),
                                        "), got id ", res.id, " deduplicated=", res.deduplicated));
        }
        continue;
      }
      if (res.deduplicated || res.id != tasks_.size()) {
        return Violation(absl::StrCat("spec ", i, " should be a new task, got id ", res.id,
                                      " deduplicated=", res.deduplicated));
      }
      if (res.id <= max_id_seen_) {
        return Violation(absl::StrCat("task id ", res.id, " is not above ", max_id_seen_));
      }
      max_id_seen_ = res.id;
      TaskModel m;
      m.expected_max_attempts =
          specs[i].max_attempts() > 0 ? specs[i].max_attempts() : TypeMaxAttempts(specs[i].type());
      m.deadline_ms = specs[i].deadline_unix_ms();
      m.last_state = v1::TASK_STATE_READY;
      tasks_.push_back(m);
      task_ids_.push_back(res.id);
      if (!specs[i].idempotency_key().empty()) idem_[IdemKey(specs[i])] = res.id;
    }
    if (engine_->task_count() != count_before + static_cast<size_t>(fresh)) {
      return Violation(absl::StrCat("expected ", fresh, " new tasks, the engine has ",
                                    engine_->task_count() - count_before));
    }
    return true;
  }

  // A random DAG of 2 to 7 steps (edges only from earlier to later steps, some of them
  // run-anyway), now and then with an edge to an existing task, or a cycle (refused).
  bool StepSubmitWorkflow() {
    const int n = Uniform(2, 7);
    v1::WorkflowSpec w;
    w.set_name("sim");
    if (Chance(0.5)) w.set_tenant("t1");
    const std::string tenant = w.tenant().empty() ? "default" : w.tenant();
    int low = 0;
    for (int i = 0; i < n; ++i) {
      v1::WorkflowStep* step = w.add_steps();
      step->set_name(absl::StrCat("s", i));
      v1::TaskSpec spec = RandomSpec();
      spec.clear_tenant();
      spec.clear_idempotency_key();
      const int p = spec.priority() == v1::PRIORITY_UNSPECIFIED ? 3 : spec.priority();
      low += p > v1::PRIORITY_HIGH;
      *step->mutable_task() = spec;
      for (int j = 0; j < i; ++j) {
        if (!Chance(0.4)) continue;
        if (Chance(0.8)) {
          step->add_depends_on(absl::StrCat("s", j));
        } else {
          step->add_depends_on_finished(absl::StrCat("s", j));
        }
      }
      if (Chance(0.1) && !task_ids_.empty()) {
        const TaskId other = Pick(task_ids_);
        const v1::Task* t = InMemory(tasks_[other]) ? Snap(other) : nullptr;
        if (t != nullptr && t->spec().tenant() == tenant) {
          const v1::TaskState ts = t->state();
          const bool bad = ts == v1::TASK_STATE_DEAD || ts == v1::TASK_STATE_CANCELED ||
                           ts == v1::TASK_STATE_EXPIRED;
          if (bad) {
            step->mutable_task()->add_depends_on_finished(other);
          } else {
            step->mutable_task()->add_depends_on(other);
          }
        }
      }
    }
    if (Chance(0.4)) w.set_max_parallel(Uniform(1, 3));
    if (Chance(0.3)) w.set_fail_fast(true);
    const bool cycle = Chance(0.03);
    if (cycle) {
      w.mutable_steps(0)->add_depends_on(absl::StrCat("s", n - 1));
      v1::WorkflowStep* last = w.mutable_steps(n - 1);
      const auto& strict = last->depends_on();
      const auto& any = last->depends_on_finished();
      if (std::find(strict.begin(), strict.end(), "s0") == strict.end() &&
          std::find(any.begin(), any.end(), "s0") == any.end()) {
        last->add_depends_on("s0");
      }
    }
    action_ = absl::StrCat("submit workflow of ", n, " steps", cycle ? " (cycle)" : "");
    const int64_t capacity = engine_->options().capacity;
    const int64_t after = model_outstanding_ + n;
    std::string expect_error;
    if (cycle) {
      expect_error = "cycle";
    } else if (after > capacity) {
      expect_error = "queue full";
    } else if (after > capacity * 9 / 10 && low > 0) {
      expect_error = "load shedding";
    }
    const size_t count_before = engine_->task_count();
    absl::StatusOr<const v1::Workflow*> r = engine_->SubmitWorkflow(w);
    if (!Deliver()) return false;
    Note(absl::StrCat(action_, " -> ",
                      r.ok() ? absl::StrCat("workflow ", (*r)->id()) : r.status().ToString()));
    if (!expect_error.empty()) {
      if (r.ok() || !absl::StrContains(r.status().message(), expect_error)) {
        return Violation(absl::StrCat("expected an error with '", expect_error, "', got ",
                                      r.ok() ? "OK" : r.status().ToString()));
      }
      if (engine_->task_count() != count_before) return Violation("a refused workflow made tasks");
      return true;
    }
    if (!r.ok()) return Violation(absl::StrCat("workflow refused: ", r.status().ToString()));
    const v1::Workflow& wf = **r;
    workflows_.push_back(wf.id());
    // Tasks were created in dependency order with dense ids from the next one.
    std::map<TaskId, int> step_of;
    for (int i = 0; i < wf.tasks_size(); ++i) step_of[wf.tasks(i).task_id()] = i;
    for (const auto& [id, i] : step_of) {
      if (id != tasks_.size())
        return Violation(absl::StrCat("workflow task id ", id, " not dense"));
      const v1::TaskSpec& spec = w.steps(i).task();
      TaskModel m;
      m.expected_max_attempts =
          spec.max_attempts() > 0 ? spec.max_attempts() : TypeMaxAttempts(spec.type());
      m.deadline_ms = spec.deadline_unix_ms();
      m.last_state = Snap(id)->state();
      m.workflow = wf.id();
      tasks_.push_back(m);
      task_ids_.push_back(id);
      max_id_seen_ = id;
      for (TaskId pid : Snap(id)->spec().depends_on()) tasks_[pid].has_children = true;
      for (TaskId pid : Snap(id)->spec().depends_on_finished()) tasks_[pid].has_children = true;
    }
    return true;
  }

  SimAgent* PickActiveAgent(bool with_work) {
    std::vector<SimAgent*> pool;
    for (SimAgent& a : agents_) {
      if (a.id != 0 && a.mode != Mode::kCrashed && (!with_work || !a.held.empty())) {
        pool.push_back(&a);
      }
    }
    return pool.empty() ? nullptr : Pick(pool);
  }

  // One agent reports on one of its leases. `allow_failures` is false while draining.
  bool StepAgentWorks(bool allow_failures) {
    SimAgent* a = PickActiveAgent(/*with_work=*/true);
    if (a == nullptr) return StepHeartbeats();
    if (a->mode == Mode::kSlow && allow_failures && Chance(0.85)) {
      action_ = "slow agent holds on";
      return true;
    }
    auto it = a->held.begin();
    std::advance(it, Uniform(0, static_cast<int>(a->held.size()) - 1));
    const TaskId id = it->first;
    const uint64_t token = it->second;
    int what = 0;  // 0 complete, 1 retryable failure, 2 non-retryable, 3 checkpoint, 4 extend
    if (allow_failures) {
      const int r = Uniform(1, 100);
      const int fail_share = a->mode == Mode::kFlaky ? 50 : 20;
      if (r <= fail_share) {
        what = 1;
      } else if (r <= fail_share + 5) {
        what = 2;
      } else if (r <= fail_share + 15) {
        what = 3;
      } else if (r <= fail_share + 25) {
        what = 4;
      }
    }
    return Report(*a, id, token, what);
  }

  // An agent reports on (id, token). The engine must accept exactly the current lease.
  bool Report(SimAgent& a, TaskId id, uint64_t token, int what) {
    static const char* kWhat[] = {"complete", "fail", "fail-permanent", "checkpoint", "extend"};
    action_ = absl::StrCat("agent ", a.id, " ", kWhat[what], " task ", id, " token ", token);
    const v1::Task* before = Snap(id);
    const bool current = before != nullptr && before->state() == v1::TASK_STATE_LEASED &&
                         before->lease_token() == token && before->agent_id() == a.id;
    const int failures_before = before == nullptr ? 0 : before->failures();
    const int attempts_before = before == nullptr ? 0 : before->attempts();
    const std::string result = absl::StrCat("result of ", id, " by ", a.id, " token ", token);
    absl::Status st;
    switch (what) {
      case 0:
        st = engine_->Complete(a.id, id, token, result);
        break;
      case 1:
      case 2:
        st = engine_->Fail(a.id, id, token, "simulated failure", what == 1);
        break;
      case 3:
        st = engine_->Checkpoint(a.id, id, token, absl::StrCat("cp", step_));
        break;
      default:
        st = engine_->ExtendLease(a.id, id, token).status();
        break;
    }
    if (!Deliver()) return false;
    Note(absl::StrCat(action_, " -> ", st.ok() ? "ok" : st.ToString()));
    if (!CheckAnswer(st, current)) return false;
    // The agent forgets this lease; a newer lease of the same task that reached it while
    // it reported a stale one (the report's Deliver above) stays held.
    if (what <= 2 || !st.ok()) {
      auto h = a.held.find(id);
      if (h != a.held.end() && h->second == token) a.held.erase(h);
    }
    if (!st.ok()) return true;

    const v1::Task* t = Snap(id);
    TaskModel& m = tasks_[id];
    if (what == 0) {
      if (++m.successes > 1) return Violation(absl::StrCat("task ", id, " completed twice"));
      m.result = result;
      if (t->state() != v1::TASK_STATE_SUCCEEDED || t->result() != result) {
        return Violation(absl::StrCat("task ", id, " is ", StateName(t->state()), " with result '",
                                      t->result(), "' after completion"));
      }
    } else if (what <= 2 && attempts_before > 0 && attempts_before <= t->history_size() &&
               t->history(attempts_before - 1).outcome() == "agent_fault") {
      // The agent's circuit breaker was to blame: requeued at once, uncounted (and perhaps
      // leased again, or expired past its deadline).
      if (t->failures() != failures_before ||
          (t->state() != v1::TASK_STATE_READY && t->state() != v1::TASK_STATE_LEASED &&
           t->state() != v1::TASK_STATE_EXPIRED && t->state() != v1::TASK_STATE_WAITING &&
           !(t->state() == v1::TASK_STATE_DEAD &&
             absl::StartsWith(t->reason(), "cost budget exhausted")))) {
        return Violation(absl::StrCat("an agent-fault failure left task ", id, " ",
                                      StateName(t->state()), " with ", t->failures(),
                                      " failures (had ", failures_before, ")"));
      }
      const auto it = agent_index_.find(a.id);
      if (it != agent_index_.end() && engine_->agents().contains(a.id) &&
          engine_->agents().at(a.id).breaker == Breaker::kClosed) {
        return Violation(absl::StrCat("agent ", a.id, " was blamed but its breaker is closed"));
      }
      breaker_blamed_++;
    } else if (what <= 2) {
      if (t->failures() != failures_before + 1) {
        return Violation(absl::StrCat("a failure report took task ", id, " from ", failures_before,
                                      " to ", t->failures(), " failures"));
      }
      const bool exhausted = t->failures() >= m.expected_max_attempts ||
                             (t->spec().cost_budget() > 0 && t->cost() >= t->spec().cost_budget());
      const v1::TaskState want =
          what == 2 || exhausted ? v1::TASK_STATE_DEAD : v1::TASK_STATE_RETRY_WAIT;
      if (t->state() != want) {
        return Violation(absl::StrCat("task ", id, " is ", StateName(t->state()),
                                      " after a failure, expected ", StateName(want)));
      }
      if (want == v1::TASK_STATE_RETRY_WAIT) {
        // Full jitter: the wait lies in [0, min(cap, base * 2^(failures - 1))].
        const int64_t wait = t->not_before_unix_ms() - NowMs();
        const int64_t ceiling = BackoffCeilingMs(*t);
        if (wait < 0 || wait > ceiling) {
          return Violation(absl::StrCat("task ", id, " waits ", wait, " ms after failure ",
                                        t->failures(), ", outside [0, ", ceiling, "]"));
        }
      }
      if (want == v1::TASK_STATE_DEAD && t->last_error() != "simulated failure") {
        return Violation(absl::StrCat("dead letter ", id, " lacks its last error"));
      }
    }
    return true;
  }

  // A report with `current` lease must succeed; any other must be refused, naming the token.
  bool CheckAnswer(const absl::Status& st, bool current) {
    if (current) {
      if (!st.ok()) return Violation(absl::StrCat("current lease refused: ", st.ToString()));
      return true;
    }
    if (st.code() == absl::StatusCode::kNotFound) return true;  // purged since
    if (st.code() != absl::StatusCode::kFailedPrecondition ||
        !absl::StrContains(st.message(), "lease_token")) {
      return Violation(absl::StrCat("stale report answered ", st.ToString()));
    }
    return true;
  }

  // Replays an old lease, possibly of an agent long gone or of an earlier server epoch, or
  // has an agent report on another agent's current lease; either must change nothing.
  bool StepStaleReport() {
    if (past_leases_.empty()) return true;
    PastLease p = Pick(past_leases_);
    const v1::Task* before = Snap(p.task);
    const char* kind = "stale";
    if (before != nullptr && before->state() == v1::TASK_STATE_LEASED &&
        before->lease_token() == p.token) {
      // Still current: another registered agent forges a report with the right token.
      std::vector<AgentId> others;
      for (const auto& [id, info] : engine_->agents()) {
        if (id != before->agent_id()) others.push_back(id);
      }
      if (others.empty()) return true;
      p.agent = Pick(others);
      kind = "forged";
    }
    const std::string image = before == nullptr ? "" : before->SerializeAsString();
    const int what = Uniform(0, 3);
    action_ = absl::StrCat(kind, " report ", what, " by agent ", p.agent, " on task ", p.task,
                           " token ", p.token);
    absl::Status st;
    switch (what) {
      case 0:
        st = engine_->Complete(p.agent, p.task, p.token, "stale result");
        break;
      case 1:
        st = engine_->Fail(p.agent, p.task, p.token, "stale failure", Chance(0.5));
        break;
      case 2:
        st = engine_->Checkpoint(p.agent, p.task, p.token, "stale checkpoint");
        break;
      default:
        st = engine_->ExtendLease(p.agent, p.task, p.token).status();
        break;
    }
    if (!Deliver()) return false;
    Note(absl::StrCat(action_, " -> ", st.ToString()));
    if (!CheckAnswer(st, false)) return false;
    const v1::Task* after = Snap(p.task);
    if ((after == nullptr ? "" : after->SerializeAsString()) != image) {
      return Violation(absl::StrCat("a refused ", kind, " report changed task ", p.task));
    }
    return true;
  }

  bool Heartbeat(SimAgent& a) {
    const absl::Status st = engine_->Heartbeat(a.id);
    if (st.ok()) return true;
    if (st.code() != absl::StatusCode::kNotFound || engine_->agents().contains(a.id)) {
      return Violation(absl::StrCat("heartbeat of agent ", a.id, ": ", st.ToString()));
    }
    // The engine dropped the agent (silent for a TTL): it gives up its work.
    Note(absl::StrCat("agent ", a.id, " learns it was dropped"));
    a.id = 0;
    a.held.clear();
    return true;
  }

  bool StepHeartbeats() {
    action_ = "heartbeats";
    for (SimAgent& a : agents_) {
      if (a.id == 0 || a.mode == Mode::kCrashed || Chance(0.1)) continue;
      if (!Heartbeat(a)) return false;
    }
    Note(action_);
    return Deliver();
  }

  // Time passes; when `agents_alive` the non-crashed agents keep heartbeating on the way.
  bool StepAdvance(absl::Duration d, bool agents_alive) {
    action_ =
        absl::StrCat("advance ", absl::FormatDuration(d), agents_alive ? " with heartbeats" : "");
    Note(action_);
    do {
      if (agents_alive) {
        for (SimAgent& a : agents_) {
          if (a.id != 0 && a.mode != Mode::kCrashed && !Heartbeat(a)) return false;
        }
      }
      const absl::Duration step = agents_alive ? std::min(d, kTtl / 3) : d;
      clock_.Advance(step);
      d -= step;
      engine_->Tick();
      if (!Deliver()) return false;
      after_tick_ = true;
      if (agents_alive && d > absl::ZeroDuration() && !CheckAll()) return false;
    } while (d > absl::ZeroDuration());
    return true;
  }

  bool StepBigJump() {
    switch (Uniform(0, 3)) {
      case 0:  // past every lease TTL, agents silent
        return StepAdvance(kTtl + absl::Milliseconds(Uniform(0, 10'000)), false);
      case 1:  // past many deadlines, agents silent
        return StepAdvance(absl::Seconds(Uniform(30, 150)), false);
      case 2:  // a long stretch with live agents: slow work hits execution timeouts
        return StepAdvance(absl::Seconds(Uniform(20, 180)), true);
      default:  // minutes of silence
        return StepAdvance(absl::Minutes(Uniform(3, 10)), false);
    }
  }

  int LiveAgents() const {
    int n = 0;
    for (const SimAgent& a : agents_) n += a.id != 0 && a.mode != Mode::kCrashed;
    return n;
  }

  bool RegisterAgent(std::vector<std::string> types, int slots, Mode mode, bool open) {
    v1::RegisterAgentRequest req;
    for (const std::string& t : types) req.add_types(t);
    req.set_max_concurrency(slots);
    const double kFactors[] = {0, 0.5, 2, 5};
    req.set_cost_factor(kFactors[Uniform(0, 3)]);
    absl::StatusOr<AgentId> id = engine_->RegisterAgent(req);
    if (!id.ok()) return Violation(absl::StrCat("registration refused: ", id.status().ToString()));
    if (agent_index_.contains(*id)) return Violation(absl::StrCat("agent id ", *id, " reused"));
    SimAgent a;
    a.id = *id;
    a.types = std::move(types);
    a.slots = slots;
    a.mode = mode;
    agents_.push_back(std::move(a));
    agent_index_[*id] = agents_.size() - 1;
    Note(absl::StrCat("register agent ", *id, " types ", absl::StrJoin(req.types(), ","), " slots ",
                      slots, " mode ", static_cast<int>(mode)));
    if (!Deliver()) return false;
    if (open) return OpenStream(agents_.back());
    return true;
  }

  bool OpenStream(SimAgent& a) {
    a.stream_open = true;  // the agent listens from the moment it asks
    const absl::Status st = engine_->OpenStream(a.id);
    if (!Deliver()) return false;
    if (st.code() == absl::StatusCode::kNotFound && !engine_->agents().contains(a.id)) {
      a.id = 0;  // dropped while it was away
      a.held.clear();
      a.stream_open = false;
      return true;
    }
    if (!st.ok()) return Violation(absl::StrCat("open stream: ", st.ToString()));
    return true;
  }

  bool StepRegister() {
    action_ = "register";
    if (LiveAgents() >= kMaxLiveAgents) return true;
    std::vector<std::string> types;
    for (const std::string& t : kTypes) {
      if (Chance(0.5)) types.push_back(t);
    }
    if (types.empty()) types.push_back(kTypes[static_cast<size_t>(Uniform(0, 2))]);
    const int r = Uniform(1, 100);
    const Mode mode = r <= 55 ? Mode::kHealthy : r <= 75 ? Mode::kSlow : Mode::kFlaky;
    return RegisterAgent(std::move(types), Uniform(1, 3), mode, Chance(0.75));
  }

  bool StepToggleStream() {
    SimAgent* a = PickActiveAgent(false);
    if (a == nullptr) return true;
    action_ = absl::StrCat(a->stream_open ? "close" : "open", " stream of agent ", a->id);
    Note(action_);
    if (a->stream_open) {
      engine_->CloseStream(a->id);
      a->stream_open = false;
      return Deliver();
    }
    return OpenStream(*a);
  }

  bool StepCrash() {
    SimAgent* a = PickActiveAgent(false);
    if (a == nullptr) return true;
    action_ = absl::StrCat("agent ", a->id, " crashes");
    Note(action_);
    a->mode = Mode::kCrashed;
    // Half the time the broken connection is noticed; otherwise it just goes silent.
    if (Chance(0.5)) {
      engine_->CloseStream(a->id);
      a->stream_open = false;
    }
    return Deliver();
  }

  bool StepDeregister() {
    SimAgent* a = PickActiveAgent(false);
    if (a == nullptr) return true;
    action_ = absl::StrCat("agent ", a->id, " deregisters");
    Note(action_);
    std::map<TaskId, int> failures;  // its leases, with their failure counts
    if (auto it = engine_->agents().find(a->id); it != engine_->agents().end()) {
      for (TaskId t : it->second.leased) failures[t] = Snap(t)->failures();
    }
    const AgentId id = a->id;
    const absl::Status st = engine_->Deregister(id);
    a->id = 0;
    a->held.clear();
    if (!Deliver()) return false;
    if (st.code() == absl::StatusCode::kNotFound && failures.empty() &&
        !engine_->agents().contains(id)) {
      return true;  // the engine had dropped it already
    }
    if (!st.ok()) return Violation(absl::StrCat("deregister: ", st.ToString()));
    deregistered_++;
    for (const auto& [t, f] : failures) {
      const v1::Task* task = Snap(t);
      // Back in the queue (and perhaps at once with another agent), or expired when it
      // comes back after its deadline.
      const bool past = tasks_[t].deadline_ms > 0 && tasks_[t].deadline_ms <= NowMs();
      // (Or canceled by fail_fast when another of its workflow's tasks expired so; or
      // held, when its workflow is at max_parallel.)
      const bool requeued = task->state() == v1::TASK_STATE_READY ||
                            (task->state() == v1::TASK_STATE_LEASED && task->agent_id() != id) ||
                            (task->state() == v1::TASK_STATE_EXPIRED && past) ||
                            (task->state() == v1::TASK_STATE_CANCELED &&
                             absl::StartsWith(task->reason(), "fail_fast: ")) ||
                            (task->state() == v1::TASK_STATE_WAITING && tasks_[t].workflow != 0) ||
                            // (or dead: the attempt spent what was left of its cost budget)
                            (task->state() == v1::TASK_STATE_DEAD &&
                             absl::StartsWith(task->reason(), "cost budget exhausted"));
      if (!requeued || task->failures() != f) {
        return Violation(absl::StrCat("task ", t, " of the leaving agent is ",
                                      StateName(task->state()), " with ", task->failures(),
                                      " failures (had ", f, "); expected requeued, uncounted"));
      }
    }
    return true;
  }

  bool StepCancelWorkflow() {
    const WorkflowId id = Pick(workflows_);
    const v1::Workflow* before = engine_->WorkflowSnapshot(id);
    if (before == nullptr) {
      // It left memory with its last task: it must have ended, and the store has it.
      if (!CheckEvictedWorkflow(id)) return false;
      action_ = absl::StrCat("cancel evicted workflow ", id);
      absl::StatusOr<const v1::Workflow*> r = engine_->CancelWorkflow(id, "simulated");
      if (!Deliver()) return false;
      if (r.ok() || r.status().code() != absl::StatusCode::kNotFound) {
        return Violation("cancel of a workflow no longer in memory was not refused as unknown");
      }
      return true;
    }
    const bool running = before->state() == v1::WORKFLOW_STATE_RUNNING;
    std::vector<TaskId> open;
    for (const v1::WorkflowTaskRef& ref : before->tasks()) {
      const v1::Task* t = InMemory(tasks_[ref.task_id()]) ? Snap(ref.task_id()) : nullptr;
      if (t != nullptr && !IsTerminal(t->state())) open.push_back(ref.task_id());
    }
    action_ = absl::StrCat("cancel workflow ", id);
    absl::StatusOr<const v1::Workflow*> r = engine_->CancelWorkflow(id, "simulated");
    if (!Deliver()) return false;
    Note(absl::StrCat(action_, " -> ", r.ok() ? "ok" : r.status().ToString()));
    if (!running) {
      if (r.ok()) return Violation("cancel of an ended workflow was not refused");
      return true;
    }
    if (!r.ok()) return Violation(absl::StrCat("workflow cancel refused: ", r.status().ToString()));
    for (TaskId t : open) {
      if (Snap(t)->state() != v1::TASK_STATE_CANCELED) {
        return Violation(absl::StrCat("task ", t, " of canceled workflow ", id, " is ",
                                      StateName(Snap(t)->state())));
      }
      tasks_[t].canceled = true;
    }
    if (engine_->WorkflowSnapshot(id)->state() != v1::WORKFLOW_STATE_CANCELED) {
      return Violation(absl::StrCat("workflow ", id, " is not canceled after a cancel"));
    }
    return true;
  }

  bool StepCancel() {
    if (!workflows_.empty() && Chance(0.2)) return StepCancelWorkflow();
    if (task_ids_.empty()) return true;
    const TaskId id = Pick(task_ids_);
    TaskModel& m = tasks_[id];
    if (!InMemory(m)) return true;
    const v1::Task* before = Snap(id);
    const v1::TaskState s = before->state();
    const uint64_t token = before->lease_token();
    action_ = absl::StrCat("cancel task ", id, " (", StateName(s), ")");
    absl::StatusOr<const v1::Task*> r = engine_->Cancel(id, "simulated cancel");
    if (!Deliver()) return false;
    Note(absl::StrCat(action_, " -> ", r.ok() ? "ok" : r.status().ToString()));
    if (IsTerminal(s)) {
      if (r.ok() || r.status().code() != absl::StatusCode::kFailedPrecondition) {
        return Violation("cancel of a terminal task was not refused");
      }
      return true;
    }
    if (!r.ok()) return Violation(absl::StrCat("cancel refused: ", r.status().ToString()));
    m.canceled = true;
    if (Snap(id)->state() != v1::TASK_STATE_CANCELED) return Violation("cancel did not cancel");
    if (s == v1::TASK_STATE_LEASED) {
      canceled_running_++;
      if (!cancel_notices_.contains(id)) {
        return Violation(absl::StrCat("no cancel notice for running task ", id, " token ", token));
      }
    }
    return true;
  }

  std::vector<TaskId> DeadTasks() const {
    std::vector<TaskId> dead;
    for (TaskId id : task_ids_) {
      const TaskModel& m = tasks_[id];
      if (InMemory(m) && Snap(id)->state() == v1::TASK_STATE_DEAD) dead.push_back(id);
    }
    return dead;
  }

  bool StepReprocess() {
    std::vector<TaskId> dead = DeadTasks();
    const bool all = Chance(0.4);
    std::vector<TaskId> ids;
    if (!all) {
      if (dead.empty()) return true;
      std::shuffle(dead.begin(), dead.end(), rng_);
      ids.assign(dead.begin(), dead.begin() + Uniform(1, std::min<int>(3, dead.size())));
      // Sometimes slip in a task that is not dead: the whole request must be refused.
      if (Chance(0.2)) {
        for (TaskId id : task_ids_) {
          if (InMemory(tasks_[id]) && Snap(id)->state() != v1::TASK_STATE_DEAD) {
            ids.push_back(id);
            break;
          }
        }
      }
    }
    const std::vector<TaskId>& chosen = all ? dead : ids;
    const bool bad = !all && ids.size() > 0 && Snap(ids.back())->state() != v1::TASK_STATE_DEAD;
    const bool too_many =
        model_outstanding_ + static_cast<int64_t>(chosen.size()) > engine_->options().capacity;
    action_ = absl::StrCat("reprocess ", all ? "all" : absl::StrJoin(ids, ","));
    absl::StatusOr<std::vector<TaskId>> r = engine_->Reprocess(ids, all, "");
    if (!Deliver()) return false;
    Note(absl::StrCat(action_, " -> ", r.ok() ? "ok" : r.status().ToString()));
    if (bad || too_many) {
      const absl::StatusCode want =
          bad ? absl::StatusCode::kFailedPrecondition : absl::StatusCode::kResourceExhausted;
      if (r.ok() || r.status().code() != want) {
        return Violation(absl::StrCat("reprocess should fail with ", absl::StatusCodeToString(want),
                                      ", got ", r.ok() ? "OK" : r.status().ToString()));
      }
      for (TaskId id : dead) {
        if (Snap(id)->state() != v1::TASK_STATE_DEAD) {
          return Violation(absl::StrCat("a refused reprocess moved task ", id));
        }
      }
      return true;
    }
    if (!r.ok()) return Violation(absl::StrCat("reprocess refused: ", r.status().ToString()));
    std::vector<TaskId> got = *r;
    std::vector<TaskId> want = chosen;
    std::sort(got.begin(), got.end());
    std::sort(want.begin(), want.end());
    if (got != want) {
      return Violation(absl::StrCat("reprocess took [", absl::StrJoin(got, ","), "], expected [",
                                    absl::StrJoin(want, ","), "]"));
    }
    for (TaskId id : got) {
      reprocessed_now_.insert(id);
      tasks_[id].reprocessed++;
      // Every earlier attempt is closed; one may already run if an agent was free.
      const v1::Task* t = Snap(id);
      const bool running = t->state() == v1::TASK_STATE_LEASED;
      tasks_[id].series_start = t->history_size() - (running ? 1 : 0);
      if (Snap(id)->failures() != 0) return Violation("reprocess kept the failure count");
    }
    return true;
  }

  bool StepPurge() {
    std::vector<TaskId> dead = DeadTasks();
    if (dead.empty()) return true;
    std::shuffle(dead.begin(), dead.end(), rng_);
    dead.resize(static_cast<size_t>(Uniform(1, std::min<int>(2, dead.size()))));
    action_ = absl::StrCat("purge ", absl::StrJoin(dead, ","));
    absl::StatusOr<int64_t> r = engine_->Purge(dead, false, "");
    rewalk_ = true;
    if (!Deliver()) return false;
    Note(absl::StrCat(action_, " -> ", r.ok() ? "ok" : r.status().ToString()));
    if (!r.ok() || *r != static_cast<int64_t>(dead.size())) {
      return Violation(absl::StrCat("purge of dead letters: ",
                                    r.ok() ? absl::StrCat(*r) : r.status().ToString()));
    }
    for (TaskId id : dead) {
      if (Snap(id) != nullptr) return Violation(absl::StrCat("purged task ", id, " still exists"));
      tasks_[id].purged = true;
      for (auto it = idem_.begin(); it != idem_.end();) {
        it = it->second == id ? idem_.erase(it) : std::next(it);
      }
    }
    return true;
  }

  // drover serve restarts. As its recovery does: a new engine of the next epoch reads the
  // store's rows back through the codec, leaving out finished tasks past their retention,
  // then ticks before the first command. Agents lose their registrations and come back.
  bool StepRestart() {
    action_ = "server restart";
    Note(action_);
    restarts_++;
    cov_->Add(engine_->probe());
    EngineOptions o = engine_->options();
    o.epoch++;
    const int64_t keep_after_ms = ToUnixMs(clock_.Now() - o.terminal_retention);
    engine_ = std::make_unique<Engine>(std::move(o), clock_);
    rewalk_ = true;
    for (const auto& [id, w] : workflow_store_) {
      store::WorkflowRow row;
      WorkflowToRow(w, row);
      absl::StatusOr<v1::Workflow> back = RowToWorkflow(row);
      if (!back.ok()) return Violation(back.status().ToString());
      engine_->RestoreWorkflow(*std::move(back));
    }
    std::map<TaskId, v1::Task> stored;
    for (TaskId id = 1; id < store_.size(); ++id) {
      if (!store_[id].has_value()) continue;
      store::TaskRow row;
      TaskToRow(*store_[id], row);
      if (Finished(static_cast<v1::TaskState>(row.state)) && row.updated_unix_ms < keep_after_ms) {
        continue;
      }
      absl::StatusOr<v1::Task> t = RowToTask(row);
      if (!t.ok()) return Violation(t.status().ToString());
      stored[id] = *t;
      engine_->Restore(*std::move(t));
    }
    // As RecoverEngine: parents that children still need come back from the store.
    for (TaskId id : engine_->MissingParents()) {
      if (id >= store_.size() || !store_[id].has_value()) continue;
      stored[id] = *store_[id];
      engine_->Restore(*store_[id]);
    }
    engine_->FinishRecovery(stored_max_task_id_);

    std::vector<SimAgent> returning;
    for (SimAgent& a : agents_) {
      if (a.id != 0 && a.mode != Mode::kCrashed) returning.push_back(std::move(a));
    }
    agents_.clear();
    agent_index_.clear();
    if (!Deliver()) return false;

    // What was restored is what the store held, except that leased tasks are queued again
    // uncounted, and queued tasks past their deadline expire. Keys come back with their
    // tasks (a later task with the same key wins, as restoring goes by id).
    idem_.clear();
    for (TaskId id : task_ids_) {
      TaskModel& m = tasks_[id];
      if (m.purged) continue;
      auto it = stored.find(id);
      m.evicted = it == stored.end();
      if (m.evicted) {
        if (store_[id].has_value() && !Finished(store_[id]->state())) {
          return Violation(absl::StrCat("unfinished task ", id, " was not restored"));
        }
        continue;
      }
      const v1::Task& old = it->second;
      const v1::Task* t = Snap(id);
      if (t == nullptr) return Violation(absl::StrCat("task ", id, " lost in the restart"));
      if (!old.spec().idempotency_key().empty()) idem_[IdemKey(old.spec())] = id;
      // (A READY task past its deadline expires at the tick below.)
      v1::TaskState want = old.state();
      if (want == v1::TASK_STATE_LEASED) {
        const bool past = m.deadline_ms > 0 && m.deadline_ms <= NowMs();
        want = past ? v1::TASK_STATE_EXPIRED : v1::TASK_STATE_READY;
      }
      // A parent that expires in recovery cancels a waiting task over a depends_on edge
      // (the final check judges the cascade) or lets it go over a depends_on_finished one
      // (CheckInvariants judges the edges).
      if (want == v1::TASK_STATE_WAITING && ((t->state() == v1::TASK_STATE_CANCELED &&
                                              absl::StartsWith(t->reason(), "parent task ")) ||
                                             t->state() == v1::TASK_STATE_READY)) {
        want = t->state();
      }
      // fail_fast: a task of its workflow expired in recovery and canceled the rest.
      if (t->state() == v1::TASK_STATE_CANCELED && absl::StartsWith(t->reason(), "fail_fast: ")) {
        want = t->state();
      }
      if (t->state() != want || t->failures() != old.failures() ||
          t->attempts() != old.attempts()) {
        return Violation(absl::StrCat("task ", id, " was ", StateName(old.state()), " with ",
                                      old.failures(), " failures in the store, after the restart ",
                                      StateName(t->state()), " with ", t->failures(), " (",
                                      t->reason(), ")"));
      }
      if (old.state() == v1::TASK_STATE_LEASED) {
        const v1::Attempt& a = t->history(t->history_size() - 1);
        if (a.outcome() != "interrupted" || a.counted() || t->lease_token() != 0) {
          return Violation(absl::StrCat("task ", id,
                                        " leased at the restart closed its attempt "
                                        "as '",
                                        a.outcome(), "' counted=", a.counted()));
        }
      }
    }
    engine_->Tick();
    if (!Deliver()) return false;
    after_tick_ = true;
    if (!CheckAll()) return false;
    for (SimAgent& a : returning) {
      if (!RegisterAgent(std::move(a.types), a.slots, a.mode, a.stream_open)) return false;
    }
    return true;
  }

  // --- invariants ---------------------------------------------------------------------------

  bool CheckAll() {
    if (absl::Status st = engine_->CheckInvariants(); !st.ok()) {
      return Violation(absl::StrCat("CheckInvariants: ", st.ToString()));
    }
    const int64_t now_ms = NowMs();
    // Records leave memory only in a tick (eviction), a purge or a restart; otherwise the
    // pointers of the last walk stay valid and only new tasks need a lookup. The count
    // shows anything else; then (as after those steps) one ordered walk over the engine's
    // records, cheaper than a lookup per task.
    size_t known = 0;
    if (!rewalk_ && !after_tick_) {
      for (TaskId id = snap_.size(); id < tasks_.size(); ++id) snap_.push_back(Snap(id));
      for (const v1::Task* t : snap_) known += t != nullptr;
    }
    if (rewalk_ || after_tick_ || known != engine_->task_count()) {
      rewalk_ = false;
      snap_.assign(tasks_.size(), nullptr);
      ListFilter page;
      page.limit = 1000;
      size_t listed = 0;
      for (ListPage l = engine_->List(page);; page.after = l.next, l = engine_->List(page)) {
        for (const v1::Task* t : l.tasks) {
          if (t->id() >= tasks_.size() || !InMemory(tasks_[t->id()])) {
            return Violation(absl::StrCat("the engine holds task ", t->id(),
                                          " which was never accepted, purged or evicted"));
          }
          snap_[t->id()] = t;
        }
        listed += l.tasks.size();
        if (l.next == 0) break;
      }
      if (listed != engine_->task_count()) return Violation("List misses tasks");
    }
    int64_t outstanding = 0;
    int64_t finished_in_memory = 0;
    int64_t finished_before_now = 0;
    for (TaskId id : task_ids_) {
      TaskModel& m = tasks_[id];
      if (!InMemory(m)) continue;
      const v1::Task* t = snap_[id];
      const v1::Task* row = id < store_.size() && store_[id].has_value() ? &*store_[id] : nullptr;
      if (row == nullptr) return Violation(absl::StrCat("task ", id, " is not in the store"));
      if (t == nullptr) {
        // Only Tick evicts, and only finished tasks (dead letters stay), which the store has.
        if (!after_tick_ || !Finished(row->state())) {
          return Violation(absl::StrCat("task ", id, " (", StateName(row->state()),
                                        " in the store) vanished from memory"));
        }
        m.evicted = true;
        if (verbose_) Note(absl::StrCat("task ", id, " evicted"));
        for (auto it = idem_.begin(); it != idem_.end();) {
          it = it->second == id ? idem_.erase(it) : std::next(it);
        }
        continue;
      }
      const v1::TaskState s = t->state();
      if (!IsTerminal(s)) outstanding++;
      // (Parents may stay past the limits while children need their results.)
      if (Finished(s) && !m.has_children) {
        finished_in_memory++;
        finished_before_now += t->finished_unix_ms() < now_ms;
      }
      if (Finished(s)) {
        m.finished_ms = t->finished_unix_ms();
        if (after_tick_ && !m.has_children &&
            t->finished_unix_ms() +
                    absl::ToInt64Milliseconds(engine_->options().terminal_retention) <=
                now_ms) {
          return Violation(absl::StrCat("task ", id, " finished at ", t->finished_unix_ms(),
                                        " is still in memory past its retention"));
        }
      }

      // The store is never behind: every record is persisted as it is, except that a lease
      // alone is not written (a restart voids leases anyway).
      if (s == v1::TASK_STATE_LEASED) {
        if (row->state() != v1::TASK_STATE_READY && row->state() != v1::TASK_STATE_LEASED) {
          return Violation(
              absl::StrCat("leased task ", id, " is ", StateName(row->state()), " in the store"));
        }
      } else if (row->state() != s || row->failures() != t->failures() ||
                 row->attempts() != t->attempts() ||
                 row->updated_unix_ms() != t->updated_unix_ms() ||
                 row->history_size() != t->history_size() || row->result() != t->result()) {
        return Violation(absl::StrCat("task ", id, " is ", StateName(s), " (updated ",
                                      t->updated_unix_ms(), ") but the store has ",
                                      StateName(row->state()), " (updated ", row->updated_unix_ms(),
                                      ")"));
      }

      // Attempts never exceed the maximum.
      if (t->effective_max_attempts() != m.expected_max_attempts ||
          t->failures() > t->effective_max_attempts() || t->failures() < 0) {
        return Violation(absl::StrCat("task ", id, " has ", t->failures(), " failures of ",
                                      t->effective_max_attempts(), " (expected max ",
                                      m.expected_max_attempts, ")"));
      }
      if (t->history_size() != t->attempts()) {
        return Violation(absl::StrCat("task ", id, " has ", t->attempts(), " attempts but ",
                                      t->history_size(), " history entries"));
      }
      // The history check is the costliest; a terminal record that did not change since the
      // last step was checked then (the final check looks at everything again).
      const bool unchanged = IsTerminal(s) && s == m.last_state &&
                             t->updated_unix_ms() == m.last_updated_ms && !full_check_;
      m.last_updated_ms = t->updated_unix_ms();
      // Attempts that ended by the task's fault count, others do not; the failure count is
      // the number of counted attempts since the last reprocess.
      int counted = unchanged ? t->failures() : 0;
      for (int i = 0; !unchanged && i < t->history_size(); ++i) {
        const v1::Attempt& a = t->history(i);
        if (a.ended_unix_ms() == 0) continue;  // running
        const std::string& o = a.outcome();
        const bool fault = o == "failed" || o == "lease_expired" || o == "timed_out";
        const bool no_fault = o == "succeeded" || o == "canceled" || o == "agent_deregistered" ||
                              o == "interrupted" || o == "undelivered" || o == "agent_fault" ||
                              o == "preempted";
        if (o == "preempted" && t->spec().priority() != v1::PRIORITY_LOW &&
            t->spec().priority() != v1::PRIORITY_BACKGROUND) {
          return Violation(absl::StrCat("task ", id, " of priority ",
                                        PriorityName(t->spec().priority()), " was preempted"));
        }
        if ((!fault && !no_fault) || a.counted() != fault) {
          return Violation(absl::StrCat("task ", id, " attempt ", a.number(), " ended '", o,
                                        "' counted=", a.counted()));
        }
        if (i >= m.series_start) counted += a.counted();
      }
      if (counted != t->failures()) {
        return Violation(absl::StrCat("task ", id, " has ", t->failures(), " failures but ",
                                      counted, " counted attempts"));
      }

      // A terminal state is final, except DEAD -> READY by reprocess (which may also find
      // the deadline passed and expire the task instead, or dispatch it at once).
      if (IsTerminal(m.last_state) && s != m.last_state) {
        const bool reprocess = m.last_state == v1::TASK_STATE_DEAD &&
                               reprocessed_now_.contains(id) &&
                               (s == v1::TASK_STATE_READY || s == v1::TASK_STATE_LEASED ||
                                s == v1::TASK_STATE_EXPIRED ||
                                // held: its workflow is at max_parallel
                                (s == v1::TASK_STATE_WAITING && m.workflow != 0));
        if (!reprocess) {
          return Violation(absl::StrCat("task ", id, " left terminal state ",
                                        StateName(m.last_state), " for ", StateName(s)));
        }
      }
      if (reprocessed_now_.contains(id) && s == v1::TASK_STATE_EXPIRED &&
          (m.deadline_ms == 0 || m.deadline_ms > now_ms)) {
        return Violation(absl::StrCat("reprocess expired task ", id, " before its deadline"));
      }
      m.last_state = s;

      // The holder of a lease is the agent the engine pushed that very lease to.
      if (s == v1::TASK_STATE_LEASED) {
        auto it = agent_index_.find(t->agent_id());
        if (it == agent_index_.end()) {
          return Violation(absl::StrCat("task ", id, " leased to unknown agent ", t->agent_id()));
        }
        const SimAgent& a = agents_[it->second];
        auto h = a.held.find(id);
        if (a.id != t->agent_id() || h == a.held.end() || h->second != t->lease_token()) {
          return Violation(absl::StrCat("task ", id, " is leased to agent ", t->agent_id(),
                                        " under token ", t->lease_token(),
                                        " but that agent was never pushed that lease"));
        }
      }

      if (after_tick_) {
        // Every timer due by now has fired.
        if (s == v1::TASK_STATE_LEASED) {
          if (t->lease_expires_unix_ms() <= now_ms) {
            return Violation(absl::StrCat("task ", id, " still leased after its lease expired"));
          }
          const int64_t started = t->history(t->history_size() - 1).started_unix_ms();
          if (started + t->effective_execution_timeout_ms() <= now_ms) {
            return Violation(absl::StrCat("task ", id, " still leased past its timeout"));
          }
        }
        if (s == v1::TASK_STATE_RETRY_WAIT && t->not_before_unix_ms() <= now_ms) {
          return Violation(absl::StrCat("task ", id, " still waiting after its backoff"));
        }
        // A task queued at its deadline expires, and one queued again after it expires
        // instead. One may still wait for a retry after the deadline only if it was running
        // when the deadline came: its last attempt ended after it.
        const bool past = m.deadline_ms > 0 && m.deadline_ms <= now_ms;
        const bool ended_before = t->history_size() == 0 ||
                                  t->history(t->history_size() - 1).ended_unix_ms() < m.deadline_ms;
        if (past && (s == v1::TASK_STATE_READY || s == v1::TASK_STATE_WAITING ||
                     (s == v1::TASK_STATE_RETRY_WAIT && ended_before))) {
          return Violation(
              absl::StrCat("task ", id, " is still ", StateName(s), " past its deadline"));
        }
      }
    }
    // Beyond the limit, the oldest finished tasks leave first; only those finished at this
    // very instant may stay over it (they are not in the store yet, or finished after the
    // tick, e.g. a handed-back lease whose deadline had passed).
    if (after_tick_ && finished_in_memory > engine_->options().max_terminal_in_memory &&
        finished_before_now > engine_->options().max_terminal_in_memory) {
      return Violation(absl::StrCat(finished_in_memory, " finished tasks in memory, at most ",
                                    engine_->options().max_terminal_in_memory));
    }
    model_outstanding_ = outstanding;
    if (engine_->outstanding() != outstanding) {
      return Violation(absl::StrCat("engine counts ", engine_->outstanding(),
                                    " outstanding tasks, the records say ", outstanding));
    }
    if (outstanding > engine_->options().capacity) {
      return Violation(absl::StrCat(outstanding, " outstanding tasks exceed the capacity"));
    }

    // No task is held under its current token by two agents (tokens would have to repeat).
    absl::flat_hash_map<TaskId, AgentId> current_holder;
    for (const SimAgent& a : agents_) {
      if (a.id == 0) continue;
      for (const auto& [id, token] : a.held) {
        const v1::Task* t = snap_[id];
        if (t == nullptr || t->state() != v1::TASK_STATE_LEASED || t->lease_token() != token) {
          continue;
        }
        if (t->agent_id() != a.id) {
          return Violation(absl::StrCat("agent ", a.id, " holds the current lease of task ", id,
                                        " which the engine gives to agent ", t->agent_id()));
        }
        if (auto [it, inserted] = current_holder.emplace(id, a.id); !inserted) {
          return Violation(absl::StrCat("task ", id, " leased to agents ", it->second, " and ",
                                        a.id, " at once"));
        }
      }
    }

    // No work waits while an agent of its type has a free slot and an open stream.
    // (Ready tasks held back for a resource, or for an agent within their cost budget, say
    // so in waiting_for; one an agent could take within its budget must not wait.)
    std::vector<const v1::Task*> ready;
    if (engine_->CountInState(v1::TASK_STATE_READY) > 0) {
      for (TaskId id = 1; id < tasks_.size(); ++id) {
        const v1::Task* t = Snap(id);
        if (t != nullptr && t->state() == v1::TASK_STATE_READY &&
            (t->waiting_for().empty() || absl::StartsWith(t->waiting_for(), "an agent within"))) {
          ready.push_back(t);
        }
      }
    }
    for (const auto& [aid, info] : engine_->agents()) {
      if (after_tick_ && info.last_seen + kTtl <= clock_.Now()) {
        return Violation(absl::StrCat("agent ", aid, " silent for a TTL is still registered"));
      }
      if (!info.stream_open || static_cast<int>(info.leased.size()) >= info.max_concurrency) {
        continue;
      }
      // An open breaker takes nothing; a half-open one takes one probe at a time.
      if (info.breaker == Breaker::kOpen ||
          (info.breaker == Breaker::kHalfOpen && !info.leased.empty())) {
        continue;
      }
      for (const v1::Task* t : ready) {
        if (std::find(info.types.begin(), info.types.end(), t->spec().type()) == info.types.end()) {
          continue;
        }
        const bool over_budget = !t->waiting_for().empty();
        const double expected_s =
            static_cast<double>(engine_->ExpectedDurationMs(t->spec())) / 1000.0;
        if (over_budget &&
            info.cost_factor * expected_s > t->spec().cost_budget() - t->cost() + 1e-9) {
          continue;
        }
        return Violation(absl::StrCat("task ", t->id(), " of type ", t->spec().type(), " waits (",
                                      t->waiting_for(), ") while agent ", aid, " has a free slot"));
      }
    }
    return true;
  }

  // --- the end of a schedule -----------------------------------------------------------

  // Failures stop; surviving agents turn healthy and a fresh agent serving every type
  // joins; time runs until every accepted task is terminal.
  bool Drain() {
    step_ = steps_ + 1;
    action_ = "drain: setup";
    breakable_streams_ = false;
    reprocessed_now_.clear();
    after_tick_ = false;
    for (SimAgent& a : agents_) {
      if (a.id == 0 || a.mode == Mode::kCrashed) continue;
      a.mode = Mode::kHealthy;
      if (!Heartbeat(a)) return false;
      if (a.id != 0 && !a.stream_open && !OpenStream(a)) return false;
    }
    if (!RegisterAgent(kTypes, 4, Mode::kHealthy, true) || !CheckAll()) return false;

    for (int round = 0; round < kMaxDrainRounds; ++round, ++step_) {
      action_ = absl::StrCat("drain round ", round);
      reprocessed_now_.clear();
      after_tick_ = false;
      for (size_t i = 0; i < agents_.size(); ++i) {
        if (agents_[i].id == 0 || agents_[i].mode == Mode::kCrashed) continue;
        if (!Heartbeat(agents_[i])) return false;
        // Copy: completing may push new leases to the same agent.
        const std::map<TaskId, uint64_t> held = agents_[i].held;
        for (const auto& [id, token] : held) {
          if (agents_[i].id != 0 && !Report(agents_[i], id, token, 0)) return false;
        }
      }
      if (!Deliver() || !CheckAll()) return false;
      if (model_outstanding_ == 0) {
        full_check_ = true;
        return CheckAll() && CheckFinalStates();
      }

      const std::optional<absl::Time> next = engine_->NextWakeup();
      absl::Duration d = kTtl / 3;
      if (next.has_value()) d = std::clamp(*next - clock_.Now(), absl::Milliseconds(1), d);
      clock_.Advance(d);
      engine_->Tick();
      if (!Deliver()) return false;
      after_tick_ = true;
      if (!CheckAll()) return false;
    }
    std::vector<std::string> left;
    for (TaskId id : task_ids_) {
      if (!InMemory(tasks_[id])) continue;
      const v1::Task* t = Snap(id);
      if (!IsTerminal(t->state())) {
        left.push_back(absl::StrCat(id, ":", StateName(t->state()),
                                    t->waiting_for().empty() ? "" : " waiting for ",
                                    t->waiting_for()));
      }
    }
    for (const ResourceUsage& u : engine_->Resources()) {
      left.push_back(absl::StrCat("[resource ", u.name, ": ", u.in_use, " in use, ", u.available,
                                  " available, ", u.waiting, " waiting]"));
    }
    return Violation(absl::StrCat("tasks not terminal after ", kMaxDrainRounds,
                                  " drain rounds: ", absl::StrJoin(left, " ")));
  }

  // A task's last record: in memory, or in the store once evicted (null once purged).
  const v1::Task* FinalRecord(TaskId id) const {
    if (id >= tasks_.size() || tasks_[id].purged) return nullptr;
    if (tasks_[id].evicted) return id < store_.size() && store_[id] ? &*store_[id] : nullptr;
    return Snap(id);
  }

  // Every workflow ended, its progress agrees with its tasks' final states, and its end
  // was reported.
  // A workflow missing from memory ended, is in the store as ended, and none of its tasks
  // is in memory (it leaves with the last one).
  bool CheckEvictedWorkflow(WorkflowId id) {
    auto it = workflow_store_.find(id);
    if (it == workflow_store_.end()) {
      return Violation(absl::StrCat("workflow ", id, " vanished: not in memory nor stored"));
    }
    if (it->second.state() == v1::WORKFLOW_STATE_RUNNING) {
      return Violation(absl::StrCat("workflow ", id, " left memory while running"));
    }
    for (const v1::WorkflowTaskRef& ref : it->second.tasks()) {
      if (engine_->Snapshot(ref.task_id()) != nullptr) {
        return Violation(
            absl::StrCat("workflow ", id, " left memory before its task ", ref.task_id()));
      }
    }
    evicted_workflows_++;
    return true;
  }

  bool CheckFinalWorkflows() {
    for (WorkflowId id : workflows_) {
      const v1::Workflow* w = engine_->WorkflowSnapshot(id);
      if (w == nullptr) {
        if (!CheckEvictedWorkflow(id)) return false;
        w = &workflow_store_.at(id);
      }
      if (w->state() == v1::WORKFLOW_STATE_RUNNING) {
        return Violation(absl::StrCat("workflow ", id, " still running after the drain"));
      }
      int succeeded = 0, done = 0;
      for (const v1::WorkflowTaskRef& ref : w->tasks()) {
        const v1::Task* t = FinalRecord(ref.task_id());
        if (t == nullptr) {
          done++;  // purged: it was a dead letter
          continue;
        }
        done += IsTerminal(t->state());
        succeeded += t->state() == v1::TASK_STATE_SUCCEEDED;
      }
      if (done != w->done() || succeeded != w->succeeded()) {
        return Violation(absl::StrCat("workflow ", id, " says ", w->succeeded(), " of ", w->done(),
                                      " done succeeded; its tasks say ", succeeded, " of ", done));
      }
      const bool all_ok = succeeded == w->total();
      if ((w->state() == v1::WORKFLOW_STATE_SUCCEEDED) != all_ok) {
        return Violation(absl::StrCat("workflow ", id, " ended ", w->state(), " with ", succeeded,
                                      " of ", w->total(), " tasks succeeded"));
      }
      workflow_ends_[w->state()]++;
      if (workflow_notices_[id] < 1) {
        return Violation(absl::StrCat("workflow ", id, " ended without a notice"));
      }
      if (!workflow_store_.contains(id) || workflow_store_[id].state() != w->state() ||
          workflow_store_[id].done() != w->done()) {
        return Violation(absl::StrCat("workflow ", id, " is not persisted as it ended"));
      }
    }
    return true;
  }

  // Every accepted task ended in one terminal state that agrees with its history.
  bool CheckFinalStates() {
    if (!CheckFinalWorkflows()) return false;
    action_ = "final check";
    for (TaskId id : task_ids_) {
      const TaskModel& m = tasks_[id];
      if (m.purged) continue;
      // An evicted task is judged by its last record in the store.
      const v1::Task* t = m.evicted ? &*store_[id] : Snap(id);
      const v1::TaskState s = t->state();
      if (!IsTerminal(s)) return Violation(absl::StrCat("task ", id, " is not terminal"));
      if ((s == v1::TASK_STATE_SUCCEEDED) != (m.successes == 1)) {
        return Violation(absl::StrCat("task ", id, " is ", StateName(s), " after ", m.successes,
                                      " successful completions"));
      }
      if (s == v1::TASK_STATE_SUCCEEDED && t->result() != m.result) {
        return Violation(absl::StrCat("task ", id, " recorded result '", t->result(),
                                      "', the accepted completion sent '", m.result, "'"));
      }
      // Canceled by request, or by the cascade from a parent over a depends_on edge that
      // ended without success.
      bool cascaded = false;
      if (s == v1::TASK_STATE_CANCELED && !m.canceled) {
        for (TaskId pid : t->spec().depends_on()) {
          const v1::Task* p = FinalRecord(pid);
          // (A dead parent may have been reprocessed and succeeded since.)
          // (Or purged, which only a dead letter can be.)
          const bool ended_badly = tasks_[pid].purged || tasks_[pid].reprocessed > 0 ||
                                   (p != nullptr && (p->state() == v1::TASK_STATE_DEAD ||
                                                     p->state() == v1::TASK_STATE_CANCELED ||
                                                     p->state() == v1::TASK_STATE_EXPIRED));
          if (ended_badly && absl::StartsWith(t->reason(), absl::StrCat("parent task ", pid))) {
            cascaded = true;
          }
        }
      }
      // Or by fail_fast, after a task of its workflow ended without success.
      if (s == v1::TASK_STATE_CANCELED && !m.canceled && !cascaded &&
          absl::StartsWith(t->reason(), "fail_fast: ") && m.workflow != 0) {
        const v1::Workflow* w = engine_->WorkflowSnapshot(m.workflow);
        if (w == nullptr && workflow_store_.contains(m.workflow)) {
          w = &workflow_store_.at(m.workflow);  // it left memory with its last task
        }
        cascaded = w != nullptr && w->fail_fast() && w->failed() + w->canceled() > 0;
        fail_fast_ += cascaded;
      }
      cascaded_ += cascaded;
      if (!cascaded && (s == v1::TASK_STATE_CANCELED) != m.canceled) {
        return Violation(absl::StrCat("task ", id, " is ", StateName(s),
                                      m.canceled ? " though it was canceled" : "",
                                      " (reason: ", t->reason(), ")"));
      }
      if (s == v1::TASK_STATE_EXPIRED && m.deadline_ms == 0) {
        return Violation(absl::StrCat("task ", id, " expired without a deadline"));
      }
      const bool budget_spent = absl::StartsWith(t->reason(), "cost budget exhausted");
      if (s == v1::TASK_STATE_DEAD &&
          ((t->failures() == 0 && !budget_spent) || t->last_error().empty())) {
        return Violation(absl::StrCat("dead letter ", id, " without a counted failure"));
      }
      // Waiters are woken once per terminal state reached.
      if (m.terminal_notices != 1 + m.reprocessed) {
        return Violation(absl::StrCat("task ", id, " reported terminal ", m.terminal_notices,
                                      " times, reprocessed ", m.reprocessed, " times"));
      }
    }
    return true;
  }

  const uint64_t seed_;
  const int steps_;
  const bool verbose_;
  Coverage* const cov_;
  std::mt19937_64 rng_;
  ManualClock clock_;
  std::unique_ptr<Engine> engine_;

  int64_t step_ = 0;
  std::string action_;
  std::string failure_;
  std::deque<std::string> log_;

  std::vector<SimAgent> agents_;
  absl::flat_hash_map<AgentId, size_t> agent_index_;  // engine id -> agents_ index
  std::vector<TaskModel> tasks_{1};                   // by task id (ids are dense, from 1)
  std::vector<TaskId> task_ids_;                      // accepted tasks in submission order
  std::vector<const v1::Task*> snap_;                 // by task id, refreshed by CheckAll
  bool rewalk_ = true;                                // records left memory: refresh snap_ in full
  std::map<std::string, TaskId> idem_;                // tenant/key -> task
  std::vector<PastLease> past_leases_;                // every lease ever pushed
  TaskId max_id_seen_ = 0;
  uint64_t stored_max_task_id_ = 0;                    // the store's meta, as the outbox wrote it
  std::vector<std::optional<v1::Task>> store_;         // the store's rows by task id
  std::map<WorkflowId, v1::Workflow> workflow_store_;  // the store's workflow rows
  std::vector<WorkflowId> workflows_;                  // accepted workflows
  int64_t evicted_workflows_ = 0;                      // seen gone from memory (checked)
  std::map<WorkflowId, int> workflow_notices_;         // ends reported in outboxes
  std::map<v1::WorkflowState, int64_t> workflow_ends_;
  int64_t cascaded_ = 0;
  int64_t breaker_blamed_ = 0;
  int64_t fail_fast_ = 0;
  bool breakable_streams_ = true;        // pushes may fail (off while draining)
  absl::flat_hash_set<AgentId> broken_;  // streams broken during the current Deliver()
  int64_t undelivered_ = 0;
  int64_t restarts_ = 0;
  int64_t model_outstanding_ = 0;
  int64_t canceled_running_ = 0;
  int64_t deregistered_ = 0;

  // Per step.
  std::set<TaskId> reprocessed_now_;
  std::set<TaskId> cancel_notices_;
  bool after_tick_ = false;
  bool full_check_ = false;  // check every record in full, changed or not
};

TEST(SimulationTest, RandomSchedulesKeepEveryInvariant) {
  const int replay = EnvInt("DROVER_SIM_SEED", -1);
  const int seeds = EnvInt("DROVER_SIM_SEEDS", kDefaultSeeds);
  const int steps = EnvInt("DROVER_SIM_STEPS", kDefaultSteps);
  const bool verbose = EnvInt("DROVER_SIM_VERBOSE", 0) != 0;
  const uint64_t first = replay >= 0 ? static_cast<uint64_t>(replay) : 1;
  const uint64_t last = replay >= 0 ? first : static_cast<uint64_t>(seeds);

  const auto start = std::chrono::steady_clock::now();
  Coverage cov;
  int failed = 0;
  for (uint64_t seed = first; seed <= last; ++seed) {
    Simulation sim(seed, steps, verbose, &cov);
    const std::string failure = sim.Run();
    cov.schedules++;
    cov.steps += sim.steps_run();
    cov.Add(sim.probe());
    cov.canceled_running += sim.canceled_running();
    cov.deregistered += sim.deregistered();
    cov.undelivered += sim.undelivered();
    cov.restarts += sim.restarts();
    cov.workflows += sim.workflows();
    auto ends = sim.workflow_ends();
    cov.workflows_succeeded += ends[v1::WORKFLOW_STATE_SUCCEEDED];
    cov.workflows_failed += ends[v1::WORKFLOW_STATE_FAILED];
    cov.workflows_canceled += ends[v1::WORKFLOW_STATE_CANCELED];
    cov.workflows_evicted += sim.evicted_workflows();
    cov.cascaded += sim.cascaded();
    cov.breaker_blamed += sim.breaker_blamed();
    cov.breaker_opened += sim.probe().breaker_opened;
    cov.breaker_closed += sim.probe().breaker_closed;
    cov.fail_fast += sim.fail_fast();
    cov.preempted += sim.probe().preempted;
    cov.resource_waits += sim.probe().resource_waits;
    cov.budget_waits += sim.probe().budget_waits;
    cov.budget_exhausted += sim.probe().budget_exhausted;
    if (!failure.empty()) {
      ADD_FAILURE() << failure;
      if (++failed >= 5) {
        ADD_FAILURE() << "stopping after 5 failing seeds";
        break;
      }
    }
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "simulated " << cov.schedules << " schedules, " << cov.steps << " steps in " << secs
            << " s: " << cov.submitted << " tasks (" << cov.deduplicated << " deduplicated, "
            << cov.shed << " shed, " << cov.full << " refused full, " << cov.invalid
            << " invalid), " << cov.succeeded << " succeeded, " << cov.dead << " dead-lettered, "
            << cov.expired << " expired, " << cov.canceled << " canceled (" << cov.canceled_running
            << " running), " << cov.leases_expired << " leases expired, " << cov.timed_out
            << " timed out, " << cov.stale_refused << " stale reports refused, " << cov.reprocessed
            << " reprocessed, " << cov.purged << " purged, " << cov.evicted << " evicted, "
            << cov.deregistered << " deregistrations, " << cov.undelivered
            << " undelivered leases, " << cov.restarts << " restarts; " << cov.workflows
            << " workflows (" << cov.workflows_succeeded << " succeeded, " << cov.workflows_failed
            << " failed, " << cov.workflows_canceled << " canceled; " << cov.workflows_evicted
            << " seen gone from memory), " << cov.cascaded
            << " tasks canceled by a parent's failure (" << cov.fail_fast
            << " by fail_fast); circuit breakers opened " << cov.breaker_opened << ", closed "
            << cov.breaker_closed << " times, " << cov.breaker_blamed
            << " failures blamed on the agent; " << cov.preempted << " preempted, "
            << cov.resource_waits << " waits for a resource, " << cov.budget_waits
            << " for an agent within budget, " << cov.budget_exhausted << " budgets spent\n";

  // A simulation that never reaches a behaviour cannot find its bugs: over a full run
  // every behaviour must occur.
  if (replay < 0 && seeds >= 200) {
    EXPECT_GT(cov.deduplicated, 0);
    EXPECT_GT(cov.shed, 0);
    EXPECT_GT(cov.full, 0);
    EXPECT_GT(cov.invalid, 0);
    EXPECT_GT(cov.succeeded, 0);
    EXPECT_GT(cov.dead, 0);
    EXPECT_GT(cov.expired, 0);
    EXPECT_GT(cov.canceled_running, 0);
    EXPECT_GT(cov.leases_expired, 0);
    EXPECT_GT(cov.timed_out, 0);
    EXPECT_GT(cov.stale_refused, 0);
    EXPECT_GT(cov.reprocessed, 0);
    EXPECT_GT(cov.purged, 0);
    EXPECT_GT(cov.deregistered, 0);
    EXPECT_GT(cov.evicted, 0);
    EXPECT_GT(cov.undelivered, 0);
    EXPECT_GT(cov.restarts, 0);
    EXPECT_GT(cov.workflows_succeeded, 0);
    EXPECT_GT(cov.workflows_failed, 0);
    EXPECT_GT(cov.workflows_canceled, 0);
    EXPECT_GT(cov.cascaded, 0);
    EXPECT_GT(cov.fail_fast, 0);
    EXPECT_GT(cov.breaker_opened, 0);
    EXPECT_GT(cov.breaker_closed, 0);
    EXPECT_GT(cov.breaker_blamed, 0);
    EXPECT_GT(cov.preempted, 0);
    EXPECT_GT(cov.resource_waits, 0);
    EXPECT_GT(cov.budget_waits, 0);
    EXPECT_GT(cov.budget_exhausted, 0);
  }
}

}  // namespace
}  // namespace drover::core
