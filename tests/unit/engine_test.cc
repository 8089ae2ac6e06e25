// Unit tests of the engine: one scenario each, on a ManualClock, no sleeps (the fixture is
// in engine_fixture.h).
#include <cstdint>
#include <string>
#include <vector>

#include "engine_fixture.h"
#include "gtest/gtest.h"

namespace drover::core {
namespace {

using testing_internal::EngineTest;
using testing_internal::HasError;
using testing_internal::kTtl;
using testing_internal::RetryAfterMs;

// ---------------------------------------------------------------------------------------
// Dispatch order

TEST_F(EngineTest, HigherPriorityOvertakesABacklog) {
  const AgentId agent = StartAgent("build");
  const TaskId running = Submit("build");
  const TaskId n1 = Submit("build", v1::PRIORITY_NORMAL);
  const TaskId n2 = Submit("build", v1::PRIORITY_NORMAL);
  const TaskId low = Submit("build", v1::PRIORITY_LOW);
  const TaskId background = Submit("build", v1::PRIORITY_BACKGROUND);
  // Submitted last, while the agent is busy: they must still run next.
  const TaskId high = Submit("build", v1::PRIORITY_HIGH);
  const TaskId critical = Submit("build", v1::PRIORITY_CRITICAL);

  EXPECT_EQ(RunAll(agent), (std::vector<TaskId>{running, critical, high, n1, n2, low, background}));
}

TEST_F(EngineTest, DispatchesEarliestDeadlineFirstWithinAPriority) {
  const TaskId none = Submit("build");
  const TaskId in_10m = SubmitWithDeadline("build", v1::PRIORITY_NORMAL, absl::Minutes(10));
  const TaskId in_5m = SubmitWithDeadline("build", v1::PRIORITY_NORMAL, absl::Minutes(5));
  // A more urgent priority wins over an earlier deadline, and a less urgent one loses.
  const TaskId high_in_1h = SubmitWithDeadline("build", v1::PRIORITY_HIGH, absl::Hours(1));
  const TaskId low_in_1m = SubmitWithDeadline("build", v1::PRIORITY_LOW, absl::Minutes(1));

  const AgentId agent = StartAgent("build");
  EXPECT_EQ(RunAll(agent), (std::vector<TaskId>{high_in_1h, in_5m, in_10m, none, low_in_1m}));
}

TEST_F(EngineTest, DispatchesInSubmissionOrderOtherwise) {
  std::vector<TaskId> submitted;
  for (int i = 0; i < 6; ++i) submitted.push_back(Submit("build"));
  // Equal deadlines fall back to submission order as well.
  const TaskId d1 = SubmitWithDeadline("build", v1::PRIORITY_LOW, absl::Minutes(1));
  const TaskId d2 = SubmitWithDeadline("build", v1::PRIORITY_LOW, absl::Minutes(1));
  submitted.push_back(d1);
  submitted.push_back(d2);

  const AgentId agent = StartAgent("build");
  EXPECT_EQ(RunAll(agent), submitted);
}

TEST_F(EngineTest, FillsEveryFreeSlotOfAMatchingAgentAndNoMore) {
  const AgentId other_type = StartAgent("render", 4);
  const AgentId agent = StartAgent("build", 2);
  const TaskId a = Submit("build");
  const TaskId b = Submit("build");
  const TaskId c = Submit("build");

  std::vector<v1::TaskLease> leases = TakeLeases(agent);
  ASSERT_EQ(leases.size(), 2u);
  EXPECT_EQ(leases[0].task_id(), a);
  EXPECT_EQ(leases[1].task_id(), b);
  EXPECT_TRUE(TakeLeases(other_type).empty()) << "render agent got build work";
  EXPECT_EQ(StateOf(c), v1::TASK_STATE_READY);

  // A freed slot takes the waiting task at once.
  ASSERT_TRUE(Complete(agent, leases[0]).ok());
  EXPECT_EQ(TakeOnlyLease(agent).task_id(), c);
}

TEST_F(EngineTest, PushesNothingWhileTheWorkStreamIsClosed) {
  const AgentId agent = RegisterAgent({"build"}, 1);
  const TaskId id = Submit("build");
  EXPECT_TRUE(TakePushes().empty());
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_READY);

  OpenStream(agent);
  EXPECT_EQ(TakeOnlyLease(agent).task_id(), id);
}

// ---------------------------------------------------------------------------------------
// Leases and fencing

TEST_F(EngineTest, RequeuesTaskWhenLeaseExpires) {
  const AgentId agent = StartAgent("build");
  const TaskId id = Submit("build");
  const v1::TaskLease lease = TakeOnlyLease(agent);
  AgentStopsHeartbeating(agent);

  Advance(kTtl - absl::Milliseconds(1));
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_LEASED) << "the lease ends only at its TTL";

  Advance(absl::Milliseconds(1));
  const v1::Task t = TaskOf(id);
  EXPECT_EQ(t.state(), v1::TASK_STATE_RETRY_WAIT);
  EXPECT_EQ(t.failures(), 1) << "an expired lease counts as a failed attempt";
  ASSERT_EQ(t.history_size(), 1);
  EXPECT_EQ(t.history(0).outcome(), "lease_expired");
  EXPECT_TRUE(t.history(0).counted());
  EXPECT_FALSE(IsRegistered(agent)) << "an agent silent for a whole TTL is removed";

  // Another agent picks the task up after the backoff (at most base = 100 ms for n = 1).
  const AgentId rescuer = StartAgent("build");
  Advance(absl::Milliseconds(100));
  const v1::TaskLease retry = TakeOnlyLease(rescuer);
  EXPECT_EQ(retry.task_id(), id);
  EXPECT_EQ(retry.attempt(), 2);
  EXPECT_NE(retry.lease_token(), lease.lease_token());
}

TEST_F(EngineTest, ExpiresOneLeaseWhileTheAgentStaysAlive) {
  const AgentId agent = StartAgent("build", 2);
  const TaskId kept = Submit("build");
  const TaskId forgotten = Submit("build");
  std::vector<v1::TaskLease> leases = TakeLeases(agent);
  ASSERT_EQ(leases.size(), 2u);
  AgentStopsHeartbeating(agent);

  // The agent extends one lease (which also shows it is alive) and forgets the other.
  Advance(kTtl / 2);
  ASSERT_TRUE(engine_->ExtendLease(agent, kept, leases[0].lease_token()).ok());
  Advance(kTtl / 2);

  EXPECT_TRUE(IsRegistered(agent));
  EXPECT_EQ(StateOf(kept), v1::TASK_STATE_LEASED);
  const v1::Task t = TaskOf(forgotten);
  EXPECT_EQ(t.state(), v1::TASK_STATE_RETRY_WAIT);
  EXPECT_EQ(t.failures(), 1);
  EXPECT_EQ(t.history(0).outcome(), "lease_expired");
  EXPECT_TRUE(t.history(0).counted());
  EXPECT_TRUE(
      HasError(Complete(agent, leases[1]), absl::StatusCode::kFailedPrecondition, "lease_token"));
}

TEST_F(EngineTest, HeartbeatKeepsLeaseAlivePastTheTtl) {
  const AgentId agent = StartAgent("build");
  const TaskId id = Submit("build");
  const v1::TaskLease lease = TakeOnlyLease(agent);

  Advance(3 * kTtl);  // the agent heartbeats every TTL/3

  const v1::Task t = TaskOf(id);
  EXPECT_EQ(t.state(), v1::TASK_STATE_LEASED);
  EXPECT_EQ(t.lease_token(), lease.lease_token());
  EXPECT_EQ(t.failures(), 0);
  EXPECT_EQ(t.lease_expires_unix_ms(), ToUnixMs(clock_.Now() - kTtl / 3 + kTtl))
      << "renewed by the last heartbeat, one step (TTL/3) ago";
  EXPECT_TRUE(Complete(agent, lease).ok());
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_SUCCEEDED);
}

TEST_F(EngineTest, ExtendLeaseRenewsOneLeaseWithoutHeartbeats) {
  const AgentId agent = StartAgent("build");
  const TaskId id = Submit("build");
  const v1::TaskLease lease = TakeOnlyLease(agent);
  AgentStopsHeartbeating(agent);

  Advance(kTtl / 2);
  absl::StatusOr<absl::Time> until = engine_->ExtendLease(agent, id, lease.lease_token());
  Settle();
  ASSERT_TRUE(until.ok()) << until.status();
  EXPECT_EQ(*until, clock_.Now() + kTtl);

  Advance(kTtl * 3 / 4);  // past the original expiry, before the extended one
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_LEASED);
  EXPECT_TRUE(Complete(agent, lease).ok());
}

TEST_F(EngineTest, RefusesStaleCompletionAfterTaskMovedToAnotherAgent) {
  const AgentId first = StartAgent("build");
  const TaskId id = Submit("build");
  const v1::TaskLease first_lease = TakeOnlyLease(first);

  // The first agent hangs; its lease expires and the task goes to a second agent.
  AgentStopsHeartbeating(first);
  const AgentId second = StartAgent("build");
  Advance(kTtl + absl::Seconds(1));
  const v1::TaskLease second_lease = TakeOnlyLease(second);
  ASSERT_EQ(second_lease.task_id(), id);

  // The first agent wakes up and reports: every kind of report is fenced off.
  EXPECT_TRUE(HasError(Complete(first, first_lease, "from first"),
                       absl::StatusCode::kFailedPrecondition, "lease_token"));
  EXPECT_TRUE(HasError(Fail(first, first_lease, "late failure"),
                       absl::StatusCode::kFailedPrecondition, "lease_token"));
  EXPECT_TRUE(HasError(engine_->Checkpoint(first, id, first_lease.lease_token(), "cp"),
                       absl::StatusCode::kFailedPrecondition, "lease_token"));
  EXPECT_TRUE(HasError(engine_->ExtendLease(first, id, first_lease.lease_token()).status(),
                       absl::StatusCode::kFailedPrecondition, "lease_token"));
  Settle();
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_LEASED);

  ASSERT_TRUE(Complete(second, second_lease, "from second").ok());
  // A repeated completion is refused too: the result is recorded exactly once.
  EXPECT_TRUE(HasError(Complete(second, second_lease, "again"),
                       absl::StatusCode::kFailedPrecondition, "lease_token"));
  const v1::Task t = TaskOf(id);
  EXPECT_EQ(t.state(), v1::TASK_STATE_SUCCEEDED);
  EXPECT_EQ(t.result(), "from second");
  EXPECT_EQ(engine_->probe().succeeded, 1);
  EXPECT_EQ(engine_->probe().stale_reports, 5);
}

TEST_F(EngineTest, RefusesReportsFromAnotherAgentOrWithAnotherToken) {
  const AgentId holder = StartAgent("build");
  const AgentId bystander = StartAgent("build");
  const TaskId id = Submit("build");
  std::vector<v1::TaskLease> leases = TakeLeases(holder);
  if (leases.empty()) leases = TakeLeases(bystander);
  ASSERT_EQ(leases.size(), 1u);
  const AgentId owner = TaskOf(id).agent_id();
  const AgentId other = owner == holder ? bystander : holder;

  v1::TaskLease forged = leases[0];
  EXPECT_TRUE(
      HasError(Complete(other, forged), absl::StatusCode::kFailedPrecondition, "lease_token"));
  forged.set_lease_token(forged.lease_token() + 1);
  EXPECT_TRUE(
      HasError(Complete(owner, forged), absl::StatusCode::kFailedPrecondition, "lease_token"));
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_LEASED);
  EXPECT_TRUE(Complete(owner, leases[0]).ok());
}

TEST_F(EngineTest, ReturnsUndeliveredLeaseToTheQueueUncounted) {
  const AgentId unreachable = StartAgent("build");
  const TaskId id = Submit("build");
  const v1::TaskLease lost = TakeOnlyLease(unreachable);
  const AgentId other = StartAgent("build");

  // The push could not be written: the stream is gone and the lease handed back.
  engine_->CloseStream(unreachable);
  engine_->ReturnUndelivered(unreachable, id, lost.lease_token());
  Settle();

  const v1::TaskLease moved = TakeOnlyLease(other);
  EXPECT_EQ(moved.task_id(), id);
  const v1::Task t = TaskOf(id);
  EXPECT_EQ(t.failures(), 0);
  ASSERT_EQ(t.history_size(), 2);
  EXPECT_EQ(t.history(0).outcome(), "undelivered");
  EXPECT_FALSE(t.history(0).counted());

  // Handing back a lease that has moved on changes nothing.
  engine_->ReturnUndelivered(unreachable, id, lost.lease_token());
  Settle();
  EXPECT_EQ(TaskOf(id).lease_token(), moved.lease_token());
  EXPECT_TRUE(Complete(other, moved).ok());
}

TEST_F(EngineTest, HandsTheLatestCheckpointToTheNextAttempt) {
  const AgentId agent = StartAgent("build");
  const TaskId id = Submit("build");
  const v1::TaskLease lease = TakeOnlyLease(agent);
  ASSERT_TRUE(engine_->Checkpoint(agent, id, lease.lease_token(), "step 3 of 5").ok());
  Settle();
  ASSERT_TRUE(Fail(agent, lease, "disk full").ok());

  Advance(absl::Milliseconds(100));
  const v1::TaskLease retry = TakeOnlyLease(agent);
  EXPECT_EQ(retry.attempt(), 2);
  EXPECT_EQ(retry.checkpoint(), "step 3 of 5");
}

// ---------------------------------------------------------------------------------------
// Retries and dead letters

TEST_F(EngineTest, BackoffGrowsExponentiallyWithinFullJitterBounds) {
  constexpr int64_t kBaseMs = 100;
  constexpr int64_t kCapMs = 1600;
  constexpr int kFailures = 7;  // ceilings 100, 200, 400, 800, 1600, then capped at 1600
  auto ceiling = [&](int n) { return std::min(kCapMs, kBaseMs << (n - 1)); };
  std::vector<int64_t> max_delay(kFailures + 1, 0);
  std::vector<int64_t> min_delay(kFailures + 1, std::numeric_limits<int64_t>::max());

  for (uint64_t seed = 1; seed <= 200; ++seed) {
    SCOPED_TRACE(testing::Message() << "seed " << seed);
    EngineOptions o = BaseOptions();
    o.seed = seed;
    o.breaker_failures = 0;  // one agent fails the task 7 times: keep its breaker out of it
    Reset(o);
    const AgentId agent = StartAgent("flaky");
    v1::TaskSpec spec = Spec("flaky");
    spec.set_backoff_base_ms(kBaseMs);
    spec.set_backoff_cap_ms(kCapMs);
    spec.set_max_attempts(kFailures + 1);
    const TaskId id = Submit(spec);

    for (int n = 1; n <= kFailures; ++n) {
      const v1::TaskLease lease = TakeOnlyLease(agent);
      ASSERT_EQ(lease.task_id(), id);
      ASSERT_TRUE(Fail(agent, lease, "boom").ok());
      const v1::Task t = TaskOf(id);
      ASSERT_EQ(t.state(), v1::TASK_STATE_RETRY_WAIT);
      ASSERT_EQ(t.failures(), n);
      const int64_t delay = t.not_before_unix_ms() - NowMs();
      ASSERT_GE(delay, 0) << "failure " << n;
      ASSERT_LE(delay, ceiling(n)) << "failure " << n;
      max_delay[n] = std::max(max_delay[n], delay);
      min_delay[n] = std::min(min_delay[n], delay);

      // Not a millisecond early: the task waits out its whole backoff.
      if (delay > 0) {
        Advance(absl::Milliseconds(delay - 1));
        ASSERT_EQ(StateOf(id), v1::TASK_STATE_RETRY_WAIT) << "failure " << n;
        Advance(absl::Milliseconds(1));
      } else {
        Advance(absl::ZeroDuration());
      }
    }
  }

  for (int n = 2; n <= kFailures; ++n) {
    SCOPED_TRACE(testing::Message() << "failure " << n);
    // The jitter is full: some retry comes almost at once whatever n is...
    EXPECT_LT(min_delay[n], ceiling(n) / 10);
    if (ceiling(n) > ceiling(n - 1)) {
      // ...while the longest wait grows past the previous ceiling as long as the cap allows.
      EXPECT_GT(max_delay[n], ceiling(n - 1));
      EXPECT_GT(max_delay[n], max_delay[n - 1]);
    } else {
      EXPECT_GT(max_delay[n], ceiling(n) / 2) << "the capped range is used in full";
    }
  }
}

TEST_F(EngineTest, UsesPerTypeRetryDefaultsUnlessTheTaskOverridesThem) {
  EngineOptions o = BaseOptions();
  TypeDefaults slow;
  slow.retry.base = absl::Hours(1);
  slow.retry.cap = absl::Hours(1);
  slow.retry.max_attempts = 2;
  slow.execution_timeout = absl::Minutes(7);
  o.per_type["slow"] = slow;
  Reset(o);

  const TaskId by_type = Submit("slow");
  v1::TaskSpec spec = Spec("slow");
  spec.set_max_attempts(4);
  spec.set_backoff_base_ms(10);
  spec.set_backoff_cap_ms(10);
  spec.set_execution_timeout_ms(5000);
  const TaskId overridden = Submit(spec);
  const TaskId other_type = Submit("build");

  EXPECT_EQ(TaskOf(by_type).effective_max_attempts(), 2);
  EXPECT_EQ(TaskOf(by_type).effective_execution_timeout_ms(), 7 * 60 * 1000);
  EXPECT_EQ(TaskOf(overridden).effective_max_attempts(), 4);
  EXPECT_EQ(TaskOf(overridden).effective_execution_timeout_ms(), 5000);
  EXPECT_EQ(TaskOf(other_type).effective_max_attempts(), 3);

  // The override's 10 ms backoff applies, not the type's hour.
  const AgentId agent = StartAgent("slow", 2);
  for (const v1::TaskLease& l : TakeLeases(agent)) ASSERT_TRUE(Fail(agent, l, "boom").ok());
  EXPECT_LE(TaskOf(overridden).not_before_unix_ms() - NowMs(), 10);
  ASSERT_TRUE(engine_->Cancel(overridden, "seen enough").ok());
  Settle();

  // The type's task waits up to its hour, then two failures are enough to dead-letter it.
  Advance(FromUnixMs(TaskOf(by_type).not_before_unix_ms()) - clock_.Now());
  std::vector<v1::TaskLease> leases = TakeLeases(agent);
  ASSERT_FALSE(leases.empty());
  ASSERT_EQ(leases.back().task_id(), by_type);
  ASSERT_TRUE(Fail(agent, leases.back(), "boom").ok());
  EXPECT_EQ(StateOf(by_type), v1::TASK_STATE_DEAD);
}

TEST_F(EngineTest, DeadLettersAfterMaxAttemptsThenReprocessRunsItAgain) {
  const AgentId agent = StartAgent("build");
  const TaskId id = Submit("build");  // the default: 3 attempts

  for (int n = 1; n <= 3; ++n) {
    const v1::TaskLease lease = TakeOnlyLease(agent);
    ASSERT_EQ(lease.attempt(), n);
    ASSERT_TRUE(Fail(agent, lease, "boom " + std::to_string(n)).ok());
    Advance(absl::Seconds(1));  // the cap: any backoff is over
  }

  const v1::Task dead = TaskOf(id);
  EXPECT_EQ(dead.state(), v1::TASK_STATE_DEAD);
  EXPECT_EQ(dead.failures(), 3);
  EXPECT_EQ(dead.attempts(), 3);
  ASSERT_EQ(dead.history_size(), dead.attempts());
  for (const v1::Attempt& a : dead.history()) {
    EXPECT_EQ(a.outcome(), "failed");
    EXPECT_TRUE(a.counted());
    EXPECT_GT(a.ended_unix_ms(), 0);
  }
  EXPECT_EQ(dead.last_error(), "boom 3");
  EXPECT_TRUE(absl::StrContains(dead.reason(), "attempts exhausted")) << dead.reason();
  EXPECT_TRUE(TakePushes().empty()) << "a dead letter is not dispatched";
  ListFilter dead_only;
  dead_only.dead_only = true;
  ASSERT_EQ(engine_->List(dead_only).tasks.size(), 1u);
  EXPECT_EQ(std::count(terminal_.begin(), terminal_.end(), id), 1);

  absl::StatusOr<std::vector<TaskId>> back = engine_->Reprocess({id}, false, "");
  Settle();
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, std::vector<TaskId>{id});
  // The agent was idle, so the task went straight from READY to the agent.
  const v1::TaskLease again = TakeOnlyLease(agent);
  EXPECT_EQ(again.task_id(), id);
  EXPECT_EQ(TaskOf(id).failures(), 0) << "reprocess starts a fresh attempt series";
  EXPECT_TRUE(engine_->List(dead_only).tasks.empty());
  ASSERT_TRUE(Complete(agent, again, "finally").ok());
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_SUCCEEDED);
  EXPECT_EQ(TaskOf(id).result(), "finally");
}

TEST_F(EngineTest, ReprocessMovesDeadLetterToReadyWhenNoAgentIsFree) {
  const AgentId agent = StartAgent("build");
  v1::TaskSpec spec = Spec("build");
  spec.set_max_attempts(1);
  const TaskId id = Submit(spec);
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "boom").ok());
  ASSERT_EQ(StateOf(id), v1::TASK_STATE_DEAD);
  AgentCrashes(agent);

  // Only dead letters may be reprocessed; the error names the offending id.
  const TaskId ready = Submit("build");
  EXPECT_TRUE(HasError(engine_->Reprocess({id, ready}, false, "").status(),
                       absl::StatusCode::kFailedPrecondition, absl::StrCat("task ", ready)));
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_DEAD) << "a refused reprocess changes nothing";

  ASSERT_TRUE(engine_->Reprocess({}, true, "").ok());
  Settle();
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_READY);
  EXPECT_EQ(TaskOf(id).failures(), 0);
}

TEST_F(EngineTest, ReprocessExpiresDeadLetterWhoseDeadlinePassed) {
  v1::TaskSpec spec = Spec("build");
  spec.set_max_attempts(1);
  spec.set_deadline_unix_ms(NowMs() + 10'000);
  const TaskId id = Submit(spec);
  const AgentId agent = StartAgent("build");
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "boom").ok());
  Advance(absl::Seconds(10));

  // It could never start before its deadline now: queueing it would break the deadline.
  ASSERT_TRUE(engine_->Reprocess({id}, false, "").ok());
  Settle();
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_EXPIRED);
  EXPECT_TRUE(TakeLeases(agent).empty());
}

// Regression: a dead letter restored after a restart had no deadline timer, so once
// reprocessed it stayed READY past its deadline.
TEST_F(EngineTest, ReprocessedDeadLetterExpiresAtItsDeadlineAfterARestart) {
  v1::TaskSpec spec = Spec("build");
  spec.set_max_attempts(1);
  spec.set_deadline_unix_ms(NowMs() + 60'000);
  const TaskId id = Submit(spec);
  const AgentId agent = StartAgent("build");
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "boom").ok());
  ASSERT_EQ(StateOf(id), v1::TASK_STATE_DEAD);

  Restart(BaseOptions());
  ASSERT_TRUE(engine_->Reprocess({id}, false, "").ok());
  Settle();
  ASSERT_EQ(StateOf(id), v1::TASK_STATE_READY);  // no agent to run it

  Advance(absl::Minutes(1));
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_EXPIRED);
}

TEST_F(EngineTest, PurgeDeletesDeadLettersOnly) {
  const AgentId agent = StartAgent("build");
  v1::TaskSpec spec = Spec("build");
  spec.set_max_attempts(1);
  const TaskId dead = Submit(spec);
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "boom").ok());
  const TaskId live = Submit("build");  // leased to the agent

  EXPECT_TRUE(HasError(engine_->Purge({live}, false, "").status(),
                       absl::StatusCode::kFailedPrecondition, "not dead-lettered"));
  Settle();
  EXPECT_TRUE(purged_.empty());

  absl::StatusOr<int64_t> n = engine_->Purge({}, true, "");
  Settle();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 1);
  EXPECT_EQ(engine_->Snapshot(dead), nullptr);
  EXPECT_EQ(purged_, std::vector<TaskId>{dead});
  EXPECT_EQ(engine_->Snapshot(live)->state(), v1::TASK_STATE_LEASED);
  // The highest id ever given is persisted, so ids are never reused.
  ASSERT_FALSE(meta_.empty());
  EXPECT_EQ(meta_.back(), (std::pair<std::string, std::string>{"max_task_id", "2"}));
  EXPECT_TRUE(HasError(engine_->Get(dead).status(), absl::StatusCode::kNotFound, "id"));
}

TEST_F(EngineTest, NonRetryableFailureGoesStraightToDead) {
  const AgentId agent = StartAgent("build");
  const TaskId id = Submit("build");
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "bad input", /*retryable=*/false).ok());

  const v1::Task t = TaskOf(id);
  EXPECT_EQ(t.state(), v1::TASK_STATE_DEAD);
  EXPECT_EQ(t.failures(), 1) << "two attempts were left";
  EXPECT_EQ(t.last_error(), "bad input");
  EXPECT_TRUE(absl::StrContains(t.reason(), "non-retryable")) << t.reason();
  Advance(absl::Minutes(10));
  EXPECT_TRUE(TakePushes().empty());
}

TEST_F(EngineTest, DeadLettersTaskWhoseLeasesKeepExpiring) {
  v1::TaskSpec spec = Spec("build");
  spec.set_max_attempts(2);
  const TaskId id = Submit(spec);
  for (int n = 1; n <= 2; ++n) {
    const AgentId agent = StartAgent("build");
    ASSERT_EQ(TakeOnlyLease(agent).task_id(), id);
    AgentCrashes(agent);
    Advance(kTtl + absl::Seconds(1));
  }
  const v1::Task t = TaskOf(id);
  EXPECT_EQ(t.state(), v1::TASK_STATE_DEAD);
  EXPECT_EQ(t.failures(), 2);
  EXPECT_TRUE(absl::StrContains(t.last_error(), "lease expired")) << t.last_error();
}

// ---------------------------------------------------------------------------------------
// Cancel

TEST_F(EngineTest, CancelsQueuedTasks) {
  // One task waits out a retry backoff, another is READY with no agent to take it.
  const AgentId agent = StartAgent("build");
  const TaskId backing_off = Submit("build");
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "boom").ok());
  ASSERT_EQ(StateOf(backing_off), v1::TASK_STATE_RETRY_WAIT);
  AgentCrashes(agent);
  const TaskId queued = Submit("build");
  ASSERT_EQ(StateOf(queued), v1::TASK_STATE_READY);

  for (TaskId id : {queued, backing_off}) {
    absl::StatusOr<const v1::Task*> t = engine_->Cancel(id, "no longer needed");
    Settle();
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ((*t)->state(), v1::TASK_STATE_CANCELED);
    EXPECT_EQ((*t)->reason(), "no longer needed");
  }
  EXPECT_EQ(engine_->queue_depths().size(), 0u) << "nothing is left queued";

  // The backoff ends, and an agent appears: neither task comes back.
  const AgentId fresh = StartAgent("build");
  Advance(absl::Seconds(5));
  EXPECT_TRUE(TakeLeases(fresh).empty());
  EXPECT_TRUE(HasError(engine_->Cancel(queued, "").status(), absl::StatusCode::kFailedPrecondition,
                       "already canceled"));
}

TEST_F(EngineTest, CancelsRunningTaskAndFreesTheAgentSlot) {
  const AgentId a = StartAgent("build");
  const AgentId b = StartAgent("build");
  const TaskId on_a = Submit("build");  // both idle: the lowest id gets the first task
  const TaskId on_b = Submit("build");
  const TaskId waiting = Submit("build");
  const v1::TaskLease lease_a = TakeOnlyLease(a);
  const v1::TaskLease lease_b = TakeOnlyLease(b);
  ASSERT_EQ(lease_a.task_id(), on_a);
  ASSERT_EQ(lease_b.task_id(), on_b);

  ASSERT_TRUE(engine_->Cancel(on_a, "user asked").ok());
  Settle();

  // Only the holder hears of it, with the token of the lease it holds.
  const std::vector<v1::CancelNotice> notices = TakeCancels(a);
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_EQ(notices[0].task_id(), on_a);
  EXPECT_EQ(notices[0].lease_token(), lease_a.lease_token());
  EXPECT_EQ(notices[0].reason(), "user asked");
  EXPECT_TRUE(TakeCancels(b).empty());
  const v1::Task t = TaskOf(on_a);
  EXPECT_EQ(t.state(), v1::TASK_STATE_CANCELED);
  EXPECT_EQ(t.history(0).outcome(), "canceled");
  EXPECT_FALSE(t.history(0).counted());

  // The freed slot takes the waiting task, and the canceled run's result is refused.
  EXPECT_EQ(TakeOnlyLease(a).task_id(), waiting);
  EXPECT_TRUE(HasError(Complete(a, lease_a), absl::StatusCode::kFailedPrecondition, "lease_token"));
  EXPECT_EQ(StateOf(on_a), v1::TASK_STATE_CANCELED);
  EXPECT_EQ(TaskOf(on_a).result(), "");
}

// ---------------------------------------------------------------------------------------
// Deadlines and timeouts

TEST_F(EngineTest, ExpiresQueuedTaskAtItsDeadline) {
  const TaskId id = SubmitWithDeadline("build", v1::PRIORITY_NORMAL, absl::Seconds(10));
  Advance(absl::Seconds(10) - absl::Milliseconds(1));
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_READY);

  Advance(absl::Milliseconds(1));
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_EXPIRED);
  EXPECT_EQ(std::count(terminal_.begin(), terminal_.end(), id), 1);

  const AgentId agent = StartAgent("build");
  EXPECT_TRUE(TakeLeases(agent).empty()) << "an expired task never starts";
}

TEST_F(EngineTest, ExpiresTaskWaitingForRetryAtItsDeadline) {
  v1::TaskSpec spec = Spec("build");
  spec.set_deadline_unix_ms(NowMs() + 2000);
  spec.set_backoff_base_ms(60'000);  // the retry most likely comes after the deadline
  spec.set_backoff_cap_ms(60'000);
  const TaskId id = Submit(spec);
  const AgentId agent = StartAgent("build");
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "boom").ok());
  ASSERT_EQ(StateOf(id), v1::TASK_STATE_RETRY_WAIT);
  // Nobody may take it again: whether the jitter ends the wait before the deadline (then it
  // waits READY) or not, it is still queued when the deadline comes.
  AgentCrashes(agent);

  Advance(absl::Seconds(2) - absl::Milliseconds(1));
  const v1::TaskState before = StateOf(id);
  EXPECT_TRUE(before == v1::TASK_STATE_RETRY_WAIT || before == v1::TASK_STATE_READY)
      << v1::TaskState_Name(before);
  Advance(absl::Milliseconds(1));
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_EXPIRED);
  EXPECT_EQ(TaskOf(id).not_before_unix_ms(), 0);
}

TEST_F(EngineTest, RunningTaskIsNotExpiredByItsDeadline) {
  const AgentId agent = StartAgent("build");
  const TaskId id = SubmitWithDeadline("build", v1::PRIORITY_NORMAL, absl::Seconds(5));
  const v1::TaskLease lease = TakeOnlyLease(agent);
  Advance(absl::Seconds(20));
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_LEASED) << "the deadline bounds the start only";
  EXPECT_TRUE(Complete(agent, lease).ok());
}

TEST_F(EngineTest, TaskComingBackAfterItsDeadlineExpiresInstead) {
  const AgentId leaving = StartAgent("build");
  const TaskId id = SubmitWithDeadline("build", v1::PRIORITY_NORMAL, absl::Seconds(5));
  ASSERT_EQ(TakeOnlyLease(leaving).task_id(), id);
  Advance(absl::Seconds(10));  // started in time, still running at the deadline
  ASSERT_EQ(StateOf(id), v1::TASK_STATE_LEASED);

  // Requeued after the deadline, it may not start late: it expires.
  const AgentId standby = StartAgent("build");
  ASSERT_TRUE(Deregister(leaving).ok());
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_EXPIRED);
  EXPECT_TRUE(TakeLeases(standby).empty());
}

TEST_F(EngineTest, TimesOutAttemptRunningPastItsExecutionTimeout) {
  v1::TaskSpec spec = Spec("build");
  spec.set_execution_timeout_ms(5000);
  const TaskId id = Submit(spec);
  const AgentId agent = StartAgent("build");
  const v1::TaskLease lease = TakeOnlyLease(agent);
  EXPECT_EQ(lease.execution_timeout_ms(), 5000);

  Advance(absl::Seconds(5) - absl::Milliseconds(1));
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_LEASED);
  Advance(absl::Milliseconds(1));

  // The agent is told to stop, and the attempt counts as failed.
  const std::vector<v1::CancelNotice> notices = TakeCancels(agent);
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_EQ(notices[0].task_id(), id);
  EXPECT_EQ(notices[0].lease_token(), lease.lease_token());
  const v1::Task t = TaskOf(id);
  EXPECT_NE(t.state(), v1::TASK_STATE_LEASED);
  EXPECT_EQ(t.failures(), 1);
  ASSERT_GE(t.history_size(), 1);
  EXPECT_EQ(t.history(0).outcome(), "timed_out");
  EXPECT_TRUE(t.history(0).counted());
  EXPECT_TRUE(
      HasError(Complete(agent, lease), absl::StatusCode::kFailedPrecondition, "lease_token"));

  // The retry runs on the same (still healthy) agent with a fresh lease.
  Advance(absl::Milliseconds(100));
  const v1::TaskLease retry = TakeOnlyLease(agent);
  EXPECT_EQ(retry.task_id(), id);
  EXPECT_EQ(retry.attempt(), 2);
  EXPECT_TRUE(Complete(agent, retry).ok());
}

// ---------------------------------------------------------------------------------------
// Idempotency

TEST_F(EngineTest, ReturnsOriginalTaskForRepeatedIdempotencyKey) {
  v1::TaskSpec spec = Spec("build");
  spec.set_tenant("acme");
  spec.set_idempotency_key("order-42");
  const TaskId original = Submit(spec);

  spec.set_payload("a different payload");  // the key decides, not the content
  absl::StatusOr<Engine::SubmitResult> again = TrySubmit(spec);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->id, original);
  EXPECT_TRUE(again->deduplicated);
  EXPECT_EQ(engine_->task_count(), 1u);
  EXPECT_EQ(TaskOf(original).spec().payload(), "{}");

  spec.set_tenant("globex");
  absl::StatusOr<Engine::SubmitResult> other = TrySubmit(spec);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_NE(other->id, original) << "keys are scoped by tenant";
  EXPECT_FALSE(other->deduplicated);
  EXPECT_EQ(engine_->probe().deduplicated, 1);
}

TEST_F(EngineTest, DeduplicatesRepeatedKeysInsideOneBatch) {
  std::vector<v1::TaskSpec> batch(3, Spec("build"));
  batch[0].set_idempotency_key("k1");
  batch[1].set_idempotency_key("k2");
  batch[2].set_idempotency_key("k1");

  absl::StatusOr<std::vector<Engine::SubmitResult>> r = TrySubmitBatch(batch);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 3u);
  EXPECT_FALSE((*r)[0].deduplicated);
  EXPECT_FALSE((*r)[1].deduplicated);
  EXPECT_NE((*r)[0].id, (*r)[1].id);
  EXPECT_EQ((*r)[2].id, (*r)[0].id);
  EXPECT_TRUE((*r)[2].deduplicated);
  EXPECT_EQ(engine_->task_count(), 2u);
}

// ---------------------------------------------------------------------------------------
// Admission

class AdmissionTest : public EngineTest {
 protected:
  // Capacity 20: shedding starts when a submission would take outstanding past 18.
  AdmissionTest() {
    EngineOptions o = BaseOptions();
    o.capacity = 20;
    Reset(o);
  }
  void Fill(int n) {
    for (int i = 0; i < n; ++i) ASSERT_NE(Submit("build", v1::PRIORITY_LOW), 0u);
  }
};

TEST_F(AdmissionTest, ShedsAllButHighAndCriticalAboveNinetyPercent) {
  Fill(18);  // exactly at floor(0.9 * 20): still admitted
  ASSERT_EQ(engine_->outstanding(), 18);

  for (v1::Priority p :
       {v1::PRIORITY_NORMAL, v1::PRIORITY_LOW, v1::PRIORITY_BACKGROUND, v1::PRIORITY_UNSPECIFIED}) {
    const absl::Status st = TrySubmit(Spec("build", p)).status();
    EXPECT_TRUE(HasError(st, absl::StatusCode::kResourceExhausted, "load shedding"))
        << v1::Priority_Name(p);
    EXPECT_GE(RetryAfterMs(st), 1000) << "the hint is at least min_retry_after";
  }
  EXPECT_NE(Submit("build", v1::PRIORITY_HIGH), 0u);
  EXPECT_NE(Submit("build", v1::PRIORITY_CRITICAL), 0u);
  EXPECT_EQ(engine_->outstanding(), 20);
  EXPECT_EQ(engine_->probe().rejected_shed, 4);
}

TEST_F(AdmissionTest, RefusesEverythingAtCapacity) {
  Fill(18);
  ASSERT_NE(Submit("build", v1::PRIORITY_CRITICAL), 0u);
  ASSERT_NE(Submit("build", v1::PRIORITY_CRITICAL), 0u);

  for (v1::Priority p : {v1::PRIORITY_CRITICAL, v1::PRIORITY_HIGH, v1::PRIORITY_NORMAL}) {
    const absl::Status st = TrySubmit(Spec("build", p)).status();
    EXPECT_TRUE(HasError(st, absl::StatusCode::kResourceExhausted, "queue full"))
        << v1::Priority_Name(p);
    EXPECT_GE(RetryAfterMs(st), 1000);
  }
  EXPECT_EQ(engine_->task_count(), 20u);

  // A finished task makes room again (for urgent work: 19 of 20 is still above 90 %).
  const AgentId agent = StartAgent("build");
  ASSERT_TRUE(Complete(agent, TakeOnlyLease(agent)).ok());
  EXPECT_NE(Submit("build", v1::PRIORITY_CRITICAL), 0u);
}

// Per-tenant quotas: a flooding tenant is refused on its own quota, with a hint, while the
// others go on; batches are all or none; the default quota covers unlisted tenants.
class QuotaTest : public EngineTest {
 protected:
  QuotaTest() {
    EngineOptions o = BaseOptions();
    o.tenant_quotas["noisy"] = {10, 5, 0};  // 10 tasks/s, bursts of 5
    o.tenant_quotas["capped"] = {0, 0, 3};  // 3 unfinished tasks at most
    o.default_quota = {0, 0, 4};            // everyone else: 4 unfinished
    Reset(o);
  }
  static v1::TaskSpec Of(const std::string& tenant) {
    v1::TaskSpec s = Spec("build");
    s.set_tenant(tenant);
    return s;
  }
};

TEST_F(QuotaTest, ARateQuotaRefusesPastTheBurstAndRefillsOverTime) {
  for (int i = 0; i < 5; ++i) ASSERT_NE(Submit(Of("noisy")), 0u) << i;
  const absl::Status st = TrySubmit(Of("noisy")).status();
  EXPECT_TRUE(
      HasError(st, absl::StatusCode::kResourceExhausted,
               "tenant \"noisy\" may submit 10 tasks/s (tenants.noisy.max_submits_per_second)"));
  EXPECT_EQ(RetryAfterMs(st), 100);  // one token at 10/s
  EXPECT_NE(Submit(Of("quiet")), 0u) << "another tenant is not held back";
  Advance(absl::Milliseconds(250));  // 2.5 tokens back
  EXPECT_NE(Submit(Of("noisy")), 0u);
  EXPECT_NE(Submit(Of("noisy")), 0u);
  EXPECT_FALSE(TrySubmit(Of("noisy")).ok());
  EXPECT_EQ(engine_->probe().rejected_quota.at("noisy").rate, 2);
  // A batch over the burst can never fit: it says so.
  std::vector<v1::TaskSpec> six(6, Of("noisy"));
  Advance(absl::Seconds(10));
  EXPECT_TRUE(HasError(TrySubmitBatch(six).status(), absl::StatusCode::kResourceExhausted,
                       "exceed tenant \"noisy\"'s burst of 5"));
  // A batch that fits takes its tokens together; a refused one takes none.
  std::vector<v1::TaskSpec> four(4, Of("noisy"));
  EXPECT_TRUE(TrySubmitBatch(four).ok());
  std::vector<v1::TaskSpec> two(2, Of("noisy"));
  EXPECT_FALSE(TrySubmitBatch(two).ok());
  EXPECT_NE(Submit(Of("noisy")), 0u) << "the refused batch took no token";
}

TEST_F(QuotaTest, AnOutstandingQuotaCountsUnfinishedTasksOnly) {
  for (int i = 0; i < 3; ++i) ASSERT_NE(Submit(Of("capped")), 0u);
  EXPECT_TRUE(HasError(TrySubmit(Of("capped")).status(), absl::StatusCode::kResourceExhausted,
                       "tenant \"capped\" has 3 of 3 outstanding tasks, 1 more do not fit "
                       "(tenants.capped.max_outstanding)"));
  EXPECT_EQ(engine_->outstanding("capped"), 3);
  const AgentId agent = StartAgent("build");
  ASSERT_TRUE(Complete(agent, TakeOnlyLease(agent)).ok());
  EXPECT_EQ(engine_->outstanding("capped"), 2);
  EXPECT_NE(Submit(Of("capped")), 0u) << "a finished task makes room";
  // A batch across tenants is refused whole when one tenant is over.
  std::vector<v1::TaskSpec> mixed = {Of("other"), Of("capped")};
  EXPECT_FALSE(TrySubmitBatch(mixed).ok());
  EXPECT_EQ(engine_->outstanding("other"), 0);
}

TEST_F(QuotaTest, UnlistedTenantsShareTheDefaultQuotaEachOnItsOwn) {
  for (int i = 0; i < 4; ++i) ASSERT_NE(Submit(Of("a")), 0u);
  for (int i = 0; i < 4; ++i) ASSERT_NE(Submit(Of("b")), 0u);
  EXPECT_TRUE(HasError(TrySubmit(Of("a")).status(), absl::StatusCode::kResourceExhausted,
                       "tenants.\"*\" (every tenant not listed).max_outstanding"));
  EXPECT_EQ(engine_->probe().rejected_quota.at("").outstanding, 1);
  EXPECT_FALSE(engine_->probe().rejected_quota.contains("a"));  // not a metric label
}

TEST_F(QuotaTest, ABatchNamingManyNewTenantsTakesEachOnesTokens) {
  EngineOptions o = BaseOptions();
  o.default_quota = {10, 10, 0};
  Reset(o);
  std::vector<v1::TaskSpec> many;
  for (int i = 0; i < 40; ++i) many.push_back(Of(absl::StrCat("t", i)));  // the map grows
  ASSERT_TRUE(TrySubmitBatch(many).ok());
  std::vector<v1::TaskSpec> ten(10, Of("t7"));
  EXPECT_FALSE(TrySubmitBatch(ten).ok()) << "t7 has 9 tokens left";
  std::vector<v1::TaskSpec> nine(9, Of("t7"));
  EXPECT_TRUE(TrySubmitBatch(nine).ok());
}

TEST_F(QuotaTest, AWorkflowCountsAgainstItsOwnTenant) {
  v1::WorkflowSpec wf;
  wf.set_tenant("capped");
  for (int i = 0; i < 4; ++i) {
    v1::WorkflowStep* step = wf.add_steps();
    step->set_name(absl::StrCat("s", i));
    step->mutable_task()->set_type("build");
  }
  EXPECT_TRUE(HasError(engine_->SubmitWorkflow(wf).status(), absl::StatusCode::kResourceExhausted,
                       "tenants.capped.max_outstanding"));
  wf.mutable_steps()->RemoveLast();
  EXPECT_TRUE(engine_->SubmitWorkflow(wf).ok());
  EXPECT_EQ(engine_->outstanding("capped"), 3);
}

TEST_F(QuotaTest, OutstandingCountsSurviveARestartAndReprocessing) {
  for (int i = 0; i < 3; ++i) ASSERT_NE(Submit(Of("capped")), 0u);
  Restart(engine_->options());
  EXPECT_EQ(engine_->outstanding("capped"), 3);
  EXPECT_FALSE(TrySubmit(Of("capped")).ok());
}

TEST_F(AdmissionTest, AdmitsOrRefusesABatchAsAWhole) {
  Fill(17);
  // 17 + 2 > 18: a batch holding one normal task is shed, its high task included.
  std::vector<v1::TaskSpec> mixed = {Spec("build", v1::PRIORITY_HIGH),
                                     Spec("build", v1::PRIORITY_NORMAL)};
  EXPECT_TRUE(HasError(TrySubmitBatch(mixed).status(), absl::StatusCode::kResourceExhausted,
                       "load shedding"));
  // 17 + 4 > 20: too many even for critical work.
  std::vector<v1::TaskSpec> big(4, Spec("build", v1::PRIORITY_CRITICAL));
  const absl::Status st = TrySubmitBatch(big).status();
  EXPECT_TRUE(HasError(st, absl::StatusCode::kResourceExhausted, "queue full"));
  EXPECT_GT(RetryAfterMs(st), 0);
  EXPECT_EQ(engine_->task_count(), 17u);

  // Resubmissions of known keys take no room: a full queue still answers them.
  v1::TaskSpec keyed = Spec("build", v1::PRIORITY_CRITICAL);
  keyed.set_idempotency_key("k");
  const TaskId id = Submit(keyed);
  ASSERT_NE(Submit("build", v1::PRIORITY_CRITICAL), 0u);
  ASSERT_NE(Submit("build", v1::PRIORITY_CRITICAL), 0u);
  ASSERT_EQ(engine_->outstanding(), 20);
  absl::StatusOr<Engine::SubmitResult> again = TrySubmit(keyed);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->id, id);
}

// ---------------------------------------------------------------------------------------
// Validation

TEST_F(EngineTest, RejectsWholeBatchWhenOneSpecIsInvalid) {
  std::vector<v1::TaskSpec> batch = {Spec("build"), Spec("build"), Spec("")};
  batch[0].set_idempotency_key("first");

  EXPECT_TRUE(HasError(TrySubmitBatch(batch).status(), absl::StatusCode::kInvalidArgument,
                       "tasks[2].type: required"));
  EXPECT_EQ(engine_->task_count(), 0u);
  EXPECT_TRUE(dirty_.empty());

  // Nothing of the failed batch was remembered, not even its idempotency key.
  absl::StatusOr<Engine::SubmitResult> r = TrySubmit(batch[0]);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->deduplicated);
  EXPECT_EQ(r->id, 1u);
}

TEST_F(EngineTest, ValidationErrorsNameTheirField) {
  struct Case {
    const char* what;
    std::function<void(v1::TaskSpec&)> mutate;
    absl::StatusCode code;
    std::vector<std::string> expected;  // all must appear in the message
  };
  const int64_t now_ms = NowMs();
  const std::vector<Case> cases = {
      {"oversize payload",
       [](v1::TaskSpec& s) { s.set_payload(std::string(1025, 'x')); },
       absl::StatusCode::kInvalidArgument,
       {"task.payload: ", "exceeds the limit"}},
      {"unknown priority",
       [](v1::TaskSpec& s) { s.set_priority(static_cast<v1::Priority>(9)); },
       absl::StatusCode::kInvalidArgument,
       {"task.priority: unknown value 9"}},
      {"negative timeout",
       [](v1::TaskSpec& s) { s.set_execution_timeout_ms(-1); },
       absl::StatusCode::kInvalidArgument,
       {"task.execution_timeout_ms: must be >= 0"}},
      {"bad type name",
       [](v1::TaskSpec& s) { s.set_type("build jobs!"); },
       absl::StatusCode::kInvalidArgument,
       {"task.type: ", "build jobs!"}},
      {"missing type",
       [](v1::TaskSpec& s) { s.set_type(""); },
       absl::StatusCode::kInvalidArgument,
       {"task.type: required"}},
      {"type too long",
       [](v1::TaskSpec& s) { s.set_type(std::string(65, 'a')); },
       absl::StatusCode::kInvalidArgument,
       {"task.type: "}},
      {"past deadline",
       [&](v1::TaskSpec& s) { s.set_deadline_unix_ms(now_ms - 1); },
       absl::StatusCode::kInvalidArgument,
       {"task.deadline_unix_ms: ", "in the past"}},
      {"deadline now",
       [&](v1::TaskSpec& s) { s.set_deadline_unix_ms(now_ms); },
       absl::StatusCode::kInvalidArgument,
       {"task.deadline_unix_ms: ", "in the past"}},
      {"bad tenant",
       [](v1::TaskSpec& s) { s.set_tenant("a/b"); },
       absl::StatusCode::kInvalidArgument,
       {"task.tenant: "}},
      {"too many attempts",
       [](v1::TaskSpec& s) { s.set_max_attempts(101); },
       absl::StatusCode::kInvalidArgument,
       {"task.max_attempts: "}},
      {"negative backoff",
       [](v1::TaskSpec& s) { s.set_backoff_base_ms(-5); },
       absl::StatusCode::kInvalidArgument,
       {"task.backoff_base_ms: must be >= 0"}},
      {"oversize key",
       [](v1::TaskSpec& s) { s.set_idempotency_key(std::string(257, 'k')); },
       absl::StatusCode::kInvalidArgument,
       {"task.idempotency_key: "}},
      {"unknown parent",
       [](v1::TaskSpec& s) { s.add_depends_on(12345); },
       absl::StatusCode::kInvalidArgument,
       {"task.depends_on[0]: task 12345 is not a task of tenant"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    v1::TaskSpec spec = Spec("build");
    c.mutate(spec);
    const absl::Status st = TrySubmit(spec).status();
    for (const std::string& text : c.expected) EXPECT_TRUE(HasError(st, c.code, text));
  }
  EXPECT_EQ(engine_->task_count(), 0u);

  // The payload limit is inclusive.
  v1::TaskSpec at_limit = Spec("build");
  at_limit.set_payload(std::string(1024, 'x'));
  EXPECT_NE(Submit(at_limit), 0u);
}

TEST_F(EngineTest, RejectsInvalidAgentRegistration) {
  v1::RegisterAgentRequest req;
  EXPECT_TRUE(
      HasError(engine_->RegisterAgent(req).status(), absl::StatusCode::kInvalidArgument, "types"));
  req.add_types("build");
  req.add_types("no spaces");
  req.set_max_concurrency(1);
  EXPECT_TRUE(HasError(engine_->RegisterAgent(req).status(), absl::StatusCode::kInvalidArgument,
                       "types[1]"));
  req.set_types(1, "render");
  req.set_max_concurrency(0);
  EXPECT_TRUE(HasError(engine_->RegisterAgent(req).status(), absl::StatusCode::kInvalidArgument,
                       "max_concurrency"));
  EXPECT_TRUE(engine_->agents().empty());
}

// ---------------------------------------------------------------------------------------
// Agents leaving

TEST_F(EngineTest, DeregisterRequeuesLeasedTasksAtOnceUncounted) {
  const AgentId leaving = StartAgent("build", 2);
  const TaskId t1 = Submit("build");
  const TaskId t2 = Submit("build");
  const std::vector<v1::TaskLease> leases = TakeLeases(leaving);
  ASSERT_EQ(leases.size(), 2u);
  const AgentId standby = StartAgent("build", 2);

  ASSERT_TRUE(Deregister(leaving).ok());

  // No backoff and no timer: the standby agent has both tasks within the same command.
  const std::vector<v1::TaskLease> moved = TakeLeases(standby);
  ASSERT_EQ(moved.size(), 2u);
  for (TaskId id : {t1, t2}) {
    const v1::Task t = TaskOf(id);
    EXPECT_EQ(t.state(), v1::TASK_STATE_LEASED);
    EXPECT_EQ(t.agent_id(), standby);
    EXPECT_EQ(t.failures(), 0) << "leaving is not the task's fault";
    ASSERT_EQ(t.history_size(), 2);
    EXPECT_EQ(t.history(0).outcome(), "agent_deregistered");
    EXPECT_FALSE(t.history(0).counted());
  }
  EXPECT_FALSE(IsRegistered(leaving));
  EXPECT_TRUE(
      HasError(Complete(leaving, leases[0]), absl::StatusCode::kFailedPrecondition, "lease_token"));
  EXPECT_TRUE(HasError(engine_->Heartbeat(leaving), absl::StatusCode::kNotFound, "agent_id"));
}

TEST_F(EngineTest, DeregisterWithNobodyElseLeavesTasksReady) {
  const AgentId leaving = StartAgent("build");
  const TaskId id = Submit("build");
  ASSERT_EQ(TakeOnlyLease(leaving).task_id(), id);
  ASSERT_TRUE(Deregister(leaving).ok());
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_READY);
  EXPECT_EQ(TaskOf(id).not_before_unix_ms(), 0);
  EXPECT_EQ(TaskOf(id).failures(), 0);
}

// ---------------------------------------------------------------------------------------
// Recovery

TEST_F(EngineTest, RecoveryRequeuesLeasedTasksUncountedAndNeverReusesIds) {
  const AgentId agent = StartAgent("build");
  const AgentId doomed_agent = StartAgent("doomed");
  // Submitted to an idle agent: leased within the same command, so the store has the lease.
  const TaskId leased = Submit("build");
  const TaskId queued = Submit("build", v1::PRIORITY_HIGH);
  v1::TaskSpec doomed = Spec("doomed");
  doomed.set_max_attempts(1);
  doomed.set_idempotency_key("once");
  const TaskId purged = Submit(doomed);
  const v1::TaskLease old_lease = TakeOnlyLease(agent);
  ASSERT_EQ(old_lease.task_id(), leased);
  ASSERT_EQ(store_.at(leased).state(), v1::TASK_STATE_LEASED);
  ASSERT_TRUE(Fail(doomed_agent, TakeOnlyLease(doomed_agent), "boom").ok());
  ASSERT_TRUE(engine_->Purge({purged}, false, "").ok());
  Settle();
  ASSERT_EQ(stored_max_task_id_, purged) << "the highest id, purged, is remembered";

  Restart(BaseOptions());

  const v1::Task t = TaskOf(leased);
  EXPECT_EQ(t.state(), v1::TASK_STATE_READY);
  EXPECT_EQ(t.failures(), 0) << "a restart is not the task's fault";
  EXPECT_EQ(t.lease_token(), 0u);
  EXPECT_EQ(t.agent_id(), 0u);
  ASSERT_EQ(t.history_size(), 1);
  EXPECT_EQ(t.history(0).outcome(), "interrupted");
  EXPECT_FALSE(t.history(0).counted());
  EXPECT_GT(t.history(0).ended_unix_ms(), 0);
  EXPECT_EQ(store_.at(leased).state(), v1::TASK_STATE_READY) << "the requeue is persisted";
  EXPECT_EQ(StateOf(queued), v1::TASK_STATE_READY);

  // The purged task's id stays retired, and its idempotency key is free again.
  const TaskId next = Submit(doomed);
  EXPECT_EQ(next, purged + 1);

  // The old lease is dead for good: the new agent gets the task under a new token.
  const AgentId new_agent = StartAgent("build", 2);
  std::vector<v1::TaskLease> leases = TakeLeases(new_agent);
  ASSERT_EQ(leases.size(), 2u);
  EXPECT_EQ(leases[0].task_id(), queued) << "priority still rules after a restart";
  EXPECT_EQ(leases[1].task_id(), leased);
  EXPECT_EQ(leases[1].attempt(), 2);
  EXPECT_NE(leases[1].lease_token(), old_lease.lease_token());
  EXPECT_TRUE(HasError(engine_->Complete(new_agent, leased, old_lease.lease_token(), "x"),
                       absl::StatusCode::kFailedPrecondition, "lease_token"));
  EXPECT_TRUE(Complete(new_agent, leases[1]).ok());
}

TEST_F(EngineTest, RecoveryRearmsRetryAndDeadlineTimers) {
  v1::TaskSpec spec = Spec("build");
  spec.set_deadline_unix_ms(NowMs() + 60'000);
  const TaskId deadline = Submit(spec);
  const AgentId agent = StartAgent("retry");
  const TaskId retrying = Submit("retry");
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "boom").ok());
  ASSERT_EQ(StateOf(retrying), v1::TASK_STATE_RETRY_WAIT);

  Restart(BaseOptions());
  ASSERT_EQ(StateOf(retrying), v1::TASK_STATE_RETRY_WAIT);
  const AgentId after = StartAgent("retry");
  Advance(absl::Seconds(1));
  EXPECT_EQ(TakeOnlyLease(after).task_id(), retrying);
  Advance(absl::Minutes(1));
  EXPECT_EQ(StateOf(deadline), v1::TASK_STATE_EXPIRED);
}

// Regression: recovery leaves finished tasks past their retention in the store only, so
// when the newest tasks were all finished (and nothing was purged), the next start handed
// out their ids again.
TEST_F(EngineTest, RecoveryNeverReusesIdsOfFinishedTasksLeftInTheStore) {
  const AgentId agent = StartAgent("build");
  Submit("build");
  const TaskId last = Submit("build");
  for (const v1::TaskLease& l : TakeLeases(agent)) ASSERT_TRUE(Complete(agent, l).ok());
  Advance(absl::Seconds(1));
  ASSERT_TRUE(Complete(agent, TakeOnlyLease(agent)).ok());
  ASSERT_EQ(StateOf(last), v1::TASK_STATE_SUCCEEDED);

  Advance(absl::Hours(2));  // past the retention: both stay in the store only
  Restart(BaseOptions());
  EXPECT_EQ(engine_->task_count(), 0u);
  EXPECT_EQ(Submit("build"), last + 1);
}

// Regression: a finished task evicted again after a restart dropped the idempotency key
// that a newer task with the same key held by then.
TEST_F(EngineTest, EvictionKeepsTheKeyOfANewerTaskWithTheSameKey) {
  EngineOptions o = BaseOptions();
  o.max_terminal_in_memory = 1;
  Reset(o);
  const AgentId agent = StartAgent("build");
  v1::TaskSpec keyed = Spec("build");
  keyed.set_idempotency_key("nightly");
  const TaskId old = Submit(keyed);
  ASSERT_TRUE(Complete(agent, TakeOnlyLease(agent)).ok());
  Submit("build");
  ASSERT_TRUE(Complete(agent, TakeOnlyLease(agent)).ok());
  Advance(absl::Seconds(1));  // two finished tasks, room for one: `old` leaves memory
  ASSERT_EQ(engine_->Snapshot(old), nullptr);
  const TaskId newer = Submit(keyed);  // the key was freed with it
  ASSERT_NE(newer, old);

  // Both finished tasks come back within their retention; `old` is evicted once more.
  Restart(o);
  ASSERT_EQ(engine_->Snapshot(old), nullptr);
  absl::StatusOr<Engine::SubmitResult> again = TrySubmit(keyed);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->id, newer);
  EXPECT_TRUE(again->deduplicated);
}

// ---------------------------------------------------------------------------------------
// Retention of finished tasks

TEST_F(EngineTest, EvictsFinishedTasksAfterTheirRetentionButKeepsDeadLetters) {
  const AgentId agent = StartAgent("build");
  const TaskId done = Submit("build");
  ASSERT_TRUE(Complete(agent, TakeOnlyLease(agent)).ok());
  v1::TaskSpec once = Spec("build");
  once.set_max_attempts(1);
  const TaskId dead = Submit(once);
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "boom").ok());

  Advance(absl::Hours(1) - absl::Seconds(1));
  EXPECT_NE(engine_->Snapshot(done), nullptr) << "kept for the retention period";
  Advance(absl::Seconds(1));
  EXPECT_EQ(engine_->Snapshot(done), nullptr);
  EXPECT_EQ(store_.at(done).state(), v1::TASK_STATE_SUCCEEDED) << "the store keeps it";
  EXPECT_EQ(engine_->probe().evicted, 1);
  EXPECT_EQ(StateOf(dead), v1::TASK_STATE_DEAD) << "dead letters wait for an operator";
}

// Regression: with more finished tasks than max_terminal_in_memory, tasks that finished
// within a tick were evicted in that same tick, before the caller could persist them; the
// store kept them READY.
TEST_F(EngineTest, KeepsAFinishedTaskInMemoryUntilItIsPersisted) {
  EngineOptions o = BaseOptions();
  o.max_terminal_in_memory = 1;
  Reset(o);
  const TaskId a = SubmitWithDeadline("build", v1::PRIORITY_NORMAL, absl::Seconds(5));
  const TaskId b = SubmitWithDeadline("build", v1::PRIORITY_NORMAL, absl::Seconds(5));

  Advance(absl::Seconds(5));  // both expire in one tick; Settle checks every dirty record
  EXPECT_EQ(store_.at(a).state(), v1::TASK_STATE_EXPIRED);
  EXPECT_EQ(store_.at(b).state(), v1::TASK_STATE_EXPIRED);

  Advance(absl::Seconds(1));  // persisted now: the limit applies again, oldest first
  EXPECT_EQ(engine_->Snapshot(a), nullptr);
  EXPECT_NE(engine_->Snapshot(b), nullptr);
}

// ---------------------------------------------------------------------------------------
// Outbox and codec

TEST_F(EngineTest, TakeOutboxReturnsEachItemOnce) {
  const AgentId agent = RegisterAgent({"build"}, 1);
  const TaskId id = Submit("build");
  ASSERT_TRUE(engine_->OpenStream(agent).ok());
  Outbox first = engine_->TakeOutbox();
  ASSERT_EQ(first.pushes.size(), 1u);
  EXPECT_EQ(first.pushes[0].agent, agent);
  EXPECT_TRUE(engine_->TakeOutbox().empty());

  ASSERT_TRUE(engine_->Complete(agent, id, first.pushes[0].item.lease().lease_token(), "r").ok());
  Outbox second = engine_->TakeOutbox();
  EXPECT_EQ(second.terminal, std::vector<TaskId>{id});
  EXPECT_EQ(second.dirty, std::vector<TaskId>{id});
  EXPECT_TRUE(engine_->TakeOutbox().empty());
}

TEST_F(EngineTest, CodecRoundTripsATask) {
  const AgentId agent = StartAgent("build");
  v1::TaskSpec spec = Spec("build", v1::PRIORITY_HIGH);
  spec.set_tenant("acme");
  spec.set_payload(std::string("\0binary\xff", 8));
  (*spec.mutable_labels())["team"] = "infra";
  const TaskId id = Submit(spec);
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "flaky").ok());
  Advance(absl::Seconds(1));
  ASSERT_TRUE(Complete(agent, TakeOnlyLease(agent), "result").ok());
  const v1::Task task = TaskOf(id);

  store::TaskRow row;
  row.blob = "left over from an earlier row";
  TaskToRow(task, row);
  EXPECT_EQ(row.id, id);
  EXPECT_EQ(row.tenant, "acme");
  EXPECT_EQ(row.type, "build");
  EXPECT_EQ(row.state, v1::TASK_STATE_SUCCEEDED);
  EXPECT_EQ(row.priority, v1::PRIORITY_HIGH);
  EXPECT_EQ(row.updated_unix_ms, task.updated_unix_ms());

  absl::StatusOr<v1::Task> back = RowToTask(row);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*back, task))
      << back->DebugString() << "\nvs\n"
      << task.DebugString();
  EXPECT_EQ(back->history_size(), 2);
}

TEST_F(EngineTest, CodecRejectsAnUnreadableRow) {
  store::TaskRow row;
  row.id = 42;
  row.blob = "\xff\xff\xff\xff";
  EXPECT_TRUE(HasError(RowToTask(row).status(), absl::StatusCode::kDataLoss, "task 42"));
}

// ---------------------------------------------------------------------------------------
// Circuit breakers (defaults: 5 consecutive failures, open for 60 s)

TEST_F(EngineTest, FiveFailuresInARowOpenTheBreakerAndTheLastTaskRetriesElsewhereUncounted) {
  EngineOptions o = BaseOptions();
  o.defaults.retry.max_attempts = 10;
  Reset(o);
  const AgentId bad = StartAgent("build");
  std::vector<TaskId> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(Submit("build"));
  for (int i = 0; i < 4; ++i) {
    const v1::TaskLease l = TakeOnlyLease(bad);
    ASSERT_TRUE(Fail(bad, l, "crashed").ok());
    EXPECT_EQ(TaskOf(l.task_id()).failures(), 1) << "failures before the breaker opens count";
  }
  const v1::TaskLease fifth = TakeOnlyLease(bad);
  ASSERT_TRUE(Fail(bad, fifth, "crashed").ok());
  EXPECT_EQ(engine_->agents().at(bad).breaker, Breaker::kOpen);
  const v1::Task t = TaskOf(fifth.task_id());
  EXPECT_EQ(t.failures(), 0) << "the failure that opened the breaker is the agent's";
  EXPECT_EQ(t.state(), v1::TASK_STATE_READY) << "requeued at once, no backoff";
  EXPECT_EQ(t.history(0).outcome(), "agent_fault");
  EXPECT_TRUE(TakeLeases(bad).empty()) << "an open breaker takes no work";
  const AgentId good = StartAgent("build");
  // The blamed task keeps its place in line: ahead of the one submitted after it.
  std::vector<v1::TaskLease> leases = TakeLeases(good);
  ASSERT_EQ(leases.size(), 1u);
  EXPECT_EQ(leases[0].task_id(), ids[4]);
  EXPECT_EQ(engine_->probe().breaker_opened, 1);
}

TEST_F(EngineTest, AfterItsOpenTimeTheBreakerLetsOneProbeThroughAndASuccessClosesIt) {
  const AgentId agent = StartAgent("build", 4);
  for (int i = 0; i < 5; ++i) {
    Submit("build");
  }
  for (const v1::TaskLease& l : TakeLeases(agent)) ASSERT_TRUE(Fail(agent, l, "x").ok());
  // Four failed with slots free; the fifth task was leased after, and fails too.
  for (const v1::TaskLease& l : TakeLeases(agent)) ASSERT_TRUE(Fail(agent, l, "x").ok());
  ASSERT_EQ(engine_->agents().at(agent).breaker, Breaker::kOpen);
  Advance(absl::Seconds(59));
  EXPECT_TRUE(TakeLeases(agent).empty());
  Advance(absl::Seconds(2));
  EXPECT_EQ(engine_->agents().at(agent).breaker, Breaker::kHalfOpen);
  std::vector<v1::TaskLease> probe = TakeLeases(agent);
  ASSERT_EQ(probe.size(), 1u) << "half-open: exactly one probe, though 4 slots are free";
  ASSERT_TRUE(Complete(agent, probe[0]).ok());
  EXPECT_EQ(engine_->agents().at(agent).breaker, Breaker::kClosed);
  EXPECT_GE(TakeLeases(agent).size(), 1u) << "closed: work flows again";
}

TEST_F(EngineTest, AFailedProbeOpensTheBreakerAgainWithoutCountingAgainstTheTask) {
  EngineOptions o = BaseOptions();
  o.breaker_failures = 2;
  o.breaker_open_for = absl::Seconds(10);
  Reset(o);
  const AgentId agent = StartAgent("build");
  Submit("build");
  Submit("build");
  Submit("build");
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "x").ok());
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "x").ok());
  ASSERT_EQ(engine_->agents().at(agent).breaker, Breaker::kOpen);
  Advance(absl::Seconds(11));
  const v1::TaskLease probe = TakeOnlyLease(agent);
  const int failures_before = TaskOf(probe.task_id()).failures();
  ASSERT_TRUE(Fail(agent, probe, "still broken").ok());
  EXPECT_EQ(engine_->agents().at(agent).breaker, Breaker::kOpen);
  EXPECT_EQ(TaskOf(probe.task_id()).failures(), failures_before);
  EXPECT_EQ(engine_->probe().breaker_opened, 2);
  EXPECT_EQ(engine_->probe().breaker_half_opened, 1);
}

TEST_F(EngineTest, OneTaskFailingAgainAndAgainOnOneAgentIsTheTasksFault) {
  EngineOptions o = BaseOptions();
  o.breaker_failures = 2;
  o.defaults.retry.max_attempts = 2;
  Reset(o);
  const AgentId agent = StartAgent("build");
  const TaskId id = Submit("build");
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "bad input").ok());
  Advance(absl::Seconds(2));  // past the backoff
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "bad input").ok());
  EXPECT_EQ(engine_->agents().at(agent).breaker, Breaker::kOpen);
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_DEAD) << "both failures counted: the same task failed";
}

// ---------------------------------------------------------------------------------------
// Agent messages

TEST_F(EngineTest, MessagesGoToTheTargetedConnectedAgentsOnly) {
  const AgentId b1 = StartAgent("build");
  const AgentId b2 = StartAgent("build");
  const AgentId r1 = StartAgent("render");
  const AgentId offline = RegisterAgent({"build"}, 1);  // no open work stream
  auto send = [&](v1::SendMessageRequest req) {
    req.set_body("reload your config");
    absl::StatusOr<v1::SendMessageResponse> r = engine_->SendMessage(req);
    Settle();
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? std::vector<uint64_t>(r->delivered_to().begin(), r->delivered_to().end())
                  : std::vector<uint64_t>{};
  };
  auto received = [&](AgentId a) {
    int n = 0;
    for (const Outbox::Push& p : TakePushes()) {
      if (p.agent == a && p.item.has_message()) ++n;
    }
    return n;
  };
  v1::SendMessageRequest by_type;
  by_type.set_agent_type("build");
  EXPECT_EQ(send(by_type), (std::vector<uint64_t>{b1, b2}));
  v1::SendMessageRequest one;
  one.set_agent_id(r1);
  EXPECT_EQ(send(one), (std::vector<uint64_t>{r1}));
  EXPECT_EQ(received(r1), 1);
  v1::SendMessageRequest all;
  all.set_all(true);
  EXPECT_EQ(send(all).size(), 3u) << "the agent without a stream is skipped";
  (void)offline;
  v1::SendMessageRequest none;
  none.set_body("x");
  EXPECT_TRUE(HasError(engine_->SendMessage(none).status(), absl::StatusCode::kInvalidArgument,
                       "give exactly one target"));
  v1::SendMessageRequest big;
  big.set_all(true);
  big.set_body(std::string(70'000, 'x'));
  EXPECT_TRUE(HasError(engine_->SendMessage(big).status(), absl::StatusCode::kInvalidArgument,
                       "body: 70000 bytes exceeds the limit of 65536"));
  v1::SendMessageRequest unknown;
  unknown.set_agent_id(424242);
  EXPECT_TRUE(HasError(engine_->SendMessage(unknown).status(), absl::StatusCode::kNotFound,
                       "agent_id: agent 424242 not found"));
}

// Listing: every filter, both orders, and pages that go on from their token, also when one
// call's scan cap cuts a page short.
TEST_F(EngineTest, ListFiltersByLabelAndErrorInBothOrdersAndPagesByToken) {
  std::vector<TaskId> ids;
  for (int i = 0; i < 6; ++i) {
    v1::TaskSpec s = Spec("build");
    (*s.mutable_labels())["team"] = i % 2 == 0 ? "red" : "blue";
    if (i == 5) s.mutable_labels()->clear();
    ids.push_back(Submit(s));
  }
  auto listed = [&](const ListFilter& f) {
    std::vector<TaskId> out;
    for (const v1::Task* t : engine_->List(f).tasks) out.push_back(t->id());
    return out;
  };
  ListFilter red;
  red.label = "team=red";
  EXPECT_EQ(listed(red), (std::vector<TaskId>{ids[0], ids[2], ids[4]}));
  ListFilter any_team;
  any_team.label = "team";
  EXPECT_EQ(listed(any_team).size(), 5u);
  ListFilter newest;
  newest.newest_first = true;
  newest.limit = 4;
  const ListPage first = engine_->List(newest);
  ASSERT_EQ(first.tasks.size(), 4u);
  EXPECT_EQ(first.tasks[0]->id(), ids[5]);
  EXPECT_EQ(first.next, ids[2]);
  newest.after = first.next;
  const ListPage second = engine_->List(newest);
  EXPECT_EQ(second.tasks.size(), 2u);
  EXPECT_EQ(second.tasks[1]->id(), ids[0]);
  EXPECT_EQ(second.next, 0u) << "the oldest task was listed: nothing more";
  // A filter matching one task near the end, with a scan cap of 2: short pages, each with
  // a token, until it is found.
  ListFilter capped;
  capped.label = "team=blue";
  capped.max_scan = 2;
  capped.limit = 1;
  std::vector<TaskId> found;
  int calls = 0;
  for (ListPage p = engine_->List(capped);; capped.after = p.next, p = engine_->List(capped)) {
    ++calls;
    for (const v1::Task* t : p.tasks) found.push_back(t->id());
    if (p.next == 0) break;
  }
  EXPECT_EQ(found, (std::vector<TaskId>{ids[1], ids[3]}));
  EXPECT_GE(calls, 3);
}

TEST_F(EngineTest, ListFiltersByTextInTheLastError) {
  const AgentId agent = StartAgent("build", 1);
  const TaskId a = Submit("build");
  const TaskId b = Submit("build");
  const v1::TaskLease lease = TakeOnlyLease(agent);
  ASSERT_EQ(lease.task_id(), a);
  ASSERT_TRUE(Fail(agent, lease, "disk full on /var", false).ok());
  ListFilter f;
  f.error_contains = "disk full";
  const ListPage p = engine_->List(f);
  ASSERT_EQ(p.tasks.size(), 1u);
  EXPECT_EQ(p.tasks[0]->id(), a);
  f.error_contains = "Disk full";
  EXPECT_TRUE(engine_->List(f).tasks.empty()) << "case-sensitive";
  (void)b;
}

}  // namespace
}  // namespace drover::core
