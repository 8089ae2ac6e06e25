// The engine test fixture, shared by engine_test.cc and workflow_test.cc.
//
// The fixture plays the part of drover serve and of the agents: after every command it
// drains the outbox into a model of the store (so restarts recover from what was persisted)
// and keeps the work items pushed to each agent; "live" agents heartbeat whenever time
// moves, so a test only mentions heartbeats when their absence is the point.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/optional.h"
#include "core/codec.h"
#include "core/engine.h"
#include "drover/v1/drover.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "store/store.h"
#include "util/clock.h"

namespace drover::core {
namespace testing_internal {

inline constexpr absl::Duration kTtl = absl::Seconds(30);

// Checks the status code and that the message contains `text` (usually the field name).
inline ::testing::AssertionResult HasError(const absl::Status& st, absl::StatusCode code,
                                           absl::string_view text) {
  if (st.code() != code) {
    return ::testing::AssertionFailure()
           << "expected " << absl::StatusCodeToString(code) << ", got " << st;
  }
  if (!absl::StrContains(st.message(), text)) {
    return ::testing::AssertionFailure()
           << "message '" << st.message() << "' lacks '" << text << "'";
  }
  return ::testing::AssertionSuccess();
}

// The retry-after hint of a RESOURCE_EXHAUSTED status, -1 when there is none.
inline int64_t RetryAfterMs(const absl::Status& st) {
  absl::optional<absl::Cord> payload = st.GetPayload(kRetryAfterPayload);
  int64_t ms = -1;
  if (!payload.has_value() || !absl::SimpleAtoi(std::string(*payload), &ms)) return -1;
  return ms;
}

class EngineTest : public ::testing::Test {
 protected:
  EngineTest() { Reset(BaseOptions()); }

  void TearDown() override { ExpectConsistent(); }

  // Short backoffs (100 ms doubling to at most 1 s) and three attempts, so retry scenarios
  // need little simulated time; a 1 KiB payload limit keeps the oversize case cheap.
  static EngineOptions BaseOptions() {
    EngineOptions o;
    o.lease_ttl = kTtl;
    o.defaults.retry.base = absl::Milliseconds(100);
    o.defaults.retry.cap = absl::Seconds(1);
    o.defaults.retry.max_attempts = 3;
    o.max_payload_bytes = 1024;
    o.seed = 7;
    return o;
  }

  // A fresh engine (the clock keeps running) with an empty store. Forgets agents and
  // undelivered pushes.
  void Reset(EngineOptions options) {
    store_.clear();
    workflow_store_.clear();
    stored_max_task_id_ = 0;
    stored_costs_.clear();
    NewEngine(std::move(options));
  }
  void NewEngine(EngineOptions options) {
    engine_ = std::make_unique<Engine>(std::move(options), clock_);
    pushes_.clear();
    live_.clear();
    terminal_.clear();
    purged_.clear();
    meta_.clear();
    dirty_.clear();
    terminal_workflows_.clear();
    events_.clear();
  }

  // What drover serve does after each command: take the outbox, write the changed records
  // to the store, then deliver the pushes. Also checks the engine's indexes, so every step
  // of every scenario is checked.
  void Settle() {
    Outbox out = engine_->TakeOutbox();
    for (TaskId id : out.dirty) {
      const v1::Task* t = engine_->Snapshot(id);
      EXPECT_NE(t, nullptr) << "task " << id << " changed but has no record to persist";
      if (t != nullptr) store_[id] = *t;
    }
    for (TaskId id : out.purged) store_.erase(id);
    for (const auto& [key, value] : out.meta) {
      if (key == "max_task_id") {
        EXPECT_TRUE(absl::SimpleAtoi(value, &stored_max_task_id_)) << value;
      }
      if (key == "costs") stored_costs_ = value;
    }
    for (WorkflowId id : out.dirty_workflows) {
      const v1::Workflow* w = engine_->WorkflowSnapshot(id);
      EXPECT_NE(w, nullptr) << "workflow " << id << " changed but has no record to persist";
      if (w != nullptr) workflow_store_[id] = *w;
    }
    terminal_workflows_.insert(terminal_workflows_.end(), out.terminal_workflows.begin(),
                               out.terminal_workflows.end());
    for (Outbox::Push& p : out.pushes) pushes_.push_back(std::move(p));
    terminal_.insert(terminal_.end(), out.terminal.begin(), out.terminal.end());
    purged_.insert(purged_.end(), out.purged.begin(), out.purged.end());
    meta_.insert(meta_.end(), out.meta.begin(), out.meta.end());
    dirty_.insert(dirty_.end(), out.dirty.begin(), out.dirty.end());
    for (v1::Event& e : out.events) events_.push_back(std::move(e));
    ExpectConsistent();
  }

  void ExpectConsistent() {
    const absl::Status st = engine_->CheckInvariants();
    EXPECT_TRUE(st.ok()) << st;
  }

  int64_t NowMs() const { return ToUnixMs(clock_.Now()); }

  // drover serve restarts with `options`: a new engine of the next epoch recovers from the
  // store the way api::RecoverEngine does (rows through the codec, finished tasks past
  // their retention left out, max_task_id from the meta), then ticks before the first
  // command.
  void Restart(EngineOptions options) {
    options.epoch = engine_->options().epoch + 1;
    const int64_t keep_after_ms = ToUnixMs(clock_.Now() - options.terminal_retention);
    NewEngine(std::move(options));
    if (!stored_costs_.empty()) {
      v1::CostTotals totals;
      ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(stored_costs_, &totals).ok())
          << stored_costs_;
      engine_->RestoreCosts(totals);
    }
    for (const auto& [id, w] : workflow_store_) {
      store::WorkflowRow row;
      WorkflowToRow(w, row);
      absl::StatusOr<v1::Workflow> back = RowToWorkflow(row);
      ASSERT_TRUE(back.ok()) << back.status();
      engine_->RestoreWorkflow(*std::move(back));
    }
    for (const auto& [id, task] : store_) {
      store::TaskRow row;
      TaskToRow(task, row);
      const bool finished = row.state == v1::TASK_STATE_SUCCEEDED ||
                            row.state == v1::TASK_STATE_CANCELED ||
                            row.state == v1::TASK_STATE_EXPIRED;
      if (finished && row.updated_unix_ms < keep_after_ms) continue;
      absl::StatusOr<v1::Task> back = RowToTask(row);
      ASSERT_TRUE(back.ok()) << back.status();
      engine_->Restore(*std::move(back));
    }
    // Parents of tasks that may still run are read back even when past their retention.
    for (TaskId id : engine_->MissingParents()) {
      if (auto it = store_.find(id); it != store_.end()) engine_->Restore(it->second);
    }
    engine_->FinishRecovery(stored_max_task_id_);
    Settle();
    engine_->Tick();
    Settle();
  }

  // --- tasks -------------------------------------------------------------------------------

  static v1::TaskSpec Spec(const std::string& type, v1::Priority p = v1::PRIORITY_NORMAL) {
    v1::TaskSpec s;
    s.set_type(type);
    s.set_priority(p);
    s.set_payload("{}");
    return s;
  }

  absl::StatusOr<Engine::SubmitResult> TrySubmit(const v1::TaskSpec& spec) {
    absl::StatusOr<std::vector<Engine::SubmitResult>> r = engine_->Submit({spec}, "task");
    Settle();
    if (!r.ok()) return r.status();
    EXPECT_EQ(r->size(), 1u);
    return r->front();
  }

  absl::StatusOr<std::vector<Engine::SubmitResult>> TrySubmitBatch(
      const std::vector<v1::TaskSpec>& specs) {
    absl::StatusOr<std::vector<Engine::SubmitResult>> r = engine_->Submit(specs, "tasks");
    Settle();
    return r;
  }

  // Submits a spec that must be accepted as a new task; returns its id (0 on failure).
  TaskId Submit(const v1::TaskSpec& spec) {
    absl::StatusOr<Engine::SubmitResult> r = TrySubmit(spec);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return 0;
    EXPECT_FALSE(r->deduplicated);
    return r->id;
  }
  TaskId Submit(const std::string& type, v1::Priority p = v1::PRIORITY_NORMAL) {
    return Submit(Spec(type, p));
  }
  TaskId SubmitWithDeadline(const std::string& type, v1::Priority p, absl::Duration in) {
    v1::TaskSpec s = Spec(type, p);
    s.set_deadline_unix_ms(ToUnixMs(clock_.Now() + in));
    return Submit(s);
  }

  v1::Task TaskOf(TaskId id) const {
    const v1::Task* t = engine_->Snapshot(id);
    if (t == nullptr) {
      ADD_FAILURE() << "task " << id << " does not exist";
      return v1::Task();
    }
    return *t;
  }
  v1::TaskState StateOf(TaskId id) const { return TaskOf(id).state(); }

  // --- agents ------------------------------------------------------------------------------

  // A registered agent that heartbeats whenever time moves; its work stream is closed.
  AgentId RegisterAgent(const std::vector<std::string>& types, int slots, double cost_factor = 0) {
    v1::RegisterAgentRequest req;
    for (const std::string& t : types) req.add_types(t);
    req.set_max_concurrency(slots);
    req.set_cost_factor(cost_factor);
    absl::StatusOr<AgentId> id = engine_->RegisterAgent(req);
    Settle();
    EXPECT_TRUE(id.ok()) << id.status();
    if (!id.ok()) return 0;
    live_.insert(*id);
    return *id;
  }
  void OpenStream(AgentId agent) {
    EXPECT_TRUE(engine_->OpenStream(agent).ok());
    Settle();
  }
  // A registered agent with its work stream open: it receives work at once.
  AgentId StartAgent(const std::string& type, int slots = 1) {
    const AgentId id = RegisterAgent({type}, slots);
    OpenStream(id);
    return id;
  }
  // The agent is partitioned away: it keeps its stream but its heartbeats stop arriving.
  void AgentStopsHeartbeating(AgentId agent) { live_.erase(agent); }
  // The agent process dies: no more heartbeats and its work stream breaks.
  void AgentCrashes(AgentId agent) {
    live_.erase(agent);
    engine_->CloseStream(agent);
    Settle();
  }
  // The agent leaves cleanly.
  absl::Status Deregister(AgentId agent) {
    live_.erase(agent);
    absl::Status st = engine_->Deregister(agent);
    Settle();
    return st;
  }
  bool IsRegistered(AgentId agent) const { return engine_->agents().contains(agent); }

  // --- what agents received -------------------------------------------------------------

  std::vector<Outbox::Push> TakePushes() { return std::exchange(pushes_, {}); }

  // The leases pushed to `agent` since the last take, in push order.
  std::vector<v1::TaskLease> TakeLeases(AgentId agent) {
    std::vector<v1::TaskLease> out;
    std::vector<Outbox::Push> rest;
    for (Outbox::Push& p : pushes_) {
      if (p.agent == agent && p.item.has_lease()) {
        out.push_back(p.item.lease());
      } else {
        rest.push_back(std::move(p));
      }
    }
    pushes_ = std::move(rest);
    return out;
  }
  std::vector<v1::CancelNotice> TakeCancels(AgentId agent) {
    std::vector<v1::CancelNotice> out;
    std::vector<Outbox::Push> rest;
    for (Outbox::Push& p : pushes_) {
      if (p.agent == agent && p.item.has_cancel()) {
        out.push_back(p.item.cancel());
      } else {
        rest.push_back(std::move(p));
      }
    }
    pushes_ = std::move(rest);
    return out;
  }
  // Exactly one lease must have been pushed to `agent`.
  v1::TaskLease TakeOnlyLease(AgentId agent) {
    std::vector<v1::TaskLease> leases = TakeLeases(agent);
    EXPECT_EQ(leases.size(), 1u) << "leases pushed to agent " << agent;
    return leases.empty() ? v1::TaskLease() : leases.front();
  }

  // --- what agents report -------------------------------------------------------------

  absl::Status Complete(AgentId agent, const v1::TaskLease& lease,
                        const std::string& result = "done") {
    absl::Status st = engine_->Complete(agent, lease.task_id(), lease.lease_token(), result);
    Settle();
    return st;
  }
  absl::Status Fail(AgentId agent, const v1::TaskLease& lease, const std::string& error,
                    bool retryable = true) {
    absl::Status st = engine_->Fail(agent, lease.task_id(), lease.lease_token(), error, retryable);
    Settle();
    return st;
  }
  // The agent runs whatever it is pushed, one lease at a time, until nothing is pushed;
  // returns the task ids in the order they were dispatched.
  std::vector<TaskId> RunAll(AgentId agent) {
    std::vector<TaskId> order;
    for (std::vector<v1::TaskLease> leases = TakeLeases(agent); !leases.empty();
         leases = TakeLeases(agent)) {
      for (const v1::TaskLease& l : leases) {
        order.push_back(l.task_id());
        EXPECT_TRUE(Complete(agent, l).ok());
      }
    }
    return order;
  }

  // --- time --------------------------------------------------------------------------------

  // Moves time forward in steps of at most a third of the lease TTL; live agents heartbeat
  // before each step (as the real client does), then due timers fire. Ticks even for d = 0.
  void Advance(absl::Duration d) {
    const absl::Duration max_step = engine_->options().lease_ttl / 3;
    do {
      for (AgentId a : live_) EXPECT_TRUE(engine_->Heartbeat(a).ok()) << "agent " << a;
      const absl::Duration step = std::min(d, max_step);
      clock_.Advance(step);
      d -= step;
      engine_->Tick();
      Settle();
    } while (d > absl::ZeroDuration());
  }

  ManualClock clock_;
  std::unique_ptr<Engine> engine_;
  std::vector<Outbox::Push> pushes_;  // delivered to agents, not yet looked at
  std::set<AgentId> live_;            // agents that heartbeat when time moves
  std::vector<TaskId> terminal_;
  std::vector<TaskId> purged_;
  std::vector<std::pair<std::string, std::string>> meta_;
  std::vector<TaskId> dirty_;
  std::map<TaskId, v1::Task> store_;  // the store's rows, as Settle wrote them
  std::map<WorkflowId, v1::Workflow> workflow_store_;
  std::vector<WorkflowId> terminal_workflows_;
  std::vector<v1::Event> events_;    // for the event log, in emission order
  uint64_t stored_max_task_id_ = 0;  // the store's max_task_id meta
  std::string stored_costs_;         // the store's costs meta
};

}  // namespace testing_internal
}  // namespace drover::core
