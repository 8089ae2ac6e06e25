// Scheduling rules on a manual clock: placement policies, cost budgets and actual cost,
// named resources (semaphores and token buckets), weighted fair queueing between tenants,
// and preemption. Figures in the comments are worked out by hand.
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "engine_fixture.h"
#include "gtest/gtest.h"

namespace drover::core {
namespace {

using testing_internal::EngineTest;
using testing_internal::HasError;
using testing_internal::kTtl;

class SchedulingTest : public EngineTest {
 protected:
  // An agent with its stream open and the given cost factor.
  AgentId StartAgentCosting(const std::string& type, int slots, double cost_factor) {
    const AgentId id = RegisterAgent({type}, slots, cost_factor);
    OpenStream(id);
    return id;
  }
  std::map<AgentId, int> LeasesPerAgent(const std::vector<AgentId>& agents) {
    std::map<AgentId, int> out;
    for (AgentId a : agents) out[a] = static_cast<int>(TakeLeases(a).size());
    return out;
  }
  static EngineOptions WithPlacement(Placement p) {
    EngineOptions o = BaseOptions();
    o.defaults.placement = p;
    return o;
  }
  static v1::TaskSpec Needing(const std::string& type, const std::string& resource,
                              int64_t amount) {
    v1::TaskSpec s = Spec(type);
    v1::ResourceNeed* n = s.add_resources();
    n->set_name(resource);
    n->set_amount(amount);
    return s;
  }
  const ResourceUsage UsageOf(const std::string& name) {
    for (const ResourceUsage& u : engine_->Resources()) {
      if (u.name == name) return u;
    }
    ADD_FAILURE() << "no resource " << name;
    return ResourceUsage{};
  }
  // The first lease pushed to any of `agents` (in order), or nothing.
  std::vector<TaskId> DispatchOrder(AgentId agent, int n) {
    std::vector<TaskId> order;
    for (int i = 0; i < n; ++i) {
      std::vector<v1::TaskLease> leases = TakeLeases(agent);
      if (leases.empty()) break;
      for (const v1::TaskLease& l : leases) {
        order.push_back(l.task_id());
        EXPECT_TRUE(Complete(agent, l).ok());
      }
    }
    return order;
  }
};

// --- placement ---------------------------------------------------------------------------

TEST_F(SchedulingTest, LeastLoadedFillsTheEmptiestAgentFirst) {
  // Agents of 4 slots: six tasks land 1,1,1 (every agent at 1/4), then 2,2,2.
  const AgentId a = StartAgent("t", 4), b = StartAgent("t", 4), c = StartAgent("t", 4);
  for (int i = 0; i < 6; ++i) Submit("t");
  std::map<AgentId, int> got = LeasesPerAgent({a, b, c});
  EXPECT_EQ(got[a], 2);
  EXPECT_EQ(got[b], 2);
  EXPECT_EQ(got[c], 2);
}

TEST_F(SchedulingTest, RoundRobinTakesAgentsInTurn) {
  Reset(WithPlacement(Placement::kRoundRobin));
  const AgentId a = StartAgent("t", 4), b = StartAgent("t", 4), c = StartAgent("t", 4);
  std::vector<AgentId> order;
  for (int i = 0; i < 6; ++i) {
    const TaskId id = Submit("t");
    order.push_back(TaskOf(id).agent_id());
  }
  EXPECT_EQ(order, (std::vector<AgentId>{a, b, c, a, b, c}));
}

TEST_F(SchedulingTest, RandomPlacementSpreadsOverEveryAgent) {
  Reset(WithPlacement(Placement::kRandom));
  const AgentId a = StartAgent("t", 100), b = StartAgent("t", 100), c = StartAgent("t", 100);
  for (int i = 0; i < 90; ++i) Submit("t");
  std::map<AgentId, int> got = LeasesPerAgent({a, b, c});
  // Uniform over three agents: each gets 30 on average; below 10 has odds under 1e-6.
  EXPECT_GT(got[a], 10);
  EXPECT_GT(got[b], 10);
  EXPECT_GT(got[c], 10);
  EXPECT_EQ(got[a] + got[b] + got[c], 90);
}

TEST_F(SchedulingTest, CostPlacementWeighsPriceByUtilisation) {
  // Score = cost_factor x expected duration (1 s before anything is learned) x (1 + busy
  // share). Cheap (factor 1, 4 slots): 1.00, 1.25, 1.50, 1.75 as it fills; dear (factor 1.5):
  // 1.5 when empty. Task 1 -> cheap (1 < 1.5), task 2 -> cheap (1.25), task 3 -> cheap
  // (1.5 = 1.5, a tie goes to the lower id), task 4 -> dear (1.75 > 1.5).
  Reset(WithPlacement(Placement::kCost));
  const AgentId cheap = StartAgentCosting("t", 4, 1.0);
  const AgentId dear = StartAgentCosting("t", 4, 1.5);
  std::vector<AgentId> order;
  for (int i = 0; i < 4; ++i) order.push_back(TaskOf(Submit("t")).agent_id());
  EXPECT_EQ(order, (std::vector<AgentId>{cheap, cheap, cheap, dear}));
}

TEST_F(SchedulingTest, PlacementIsPerType) {
  EngineOptions o = BaseOptions();
  TypeDefaults rr;
  rr.placement = Placement::kRoundRobin;
  o.per_type["rr"] = rr;
  Reset(o);
  const AgentId a = RegisterAgent({"rr", "ll"}, 4);
  OpenStream(a);
  const AgentId b = RegisterAgent({"rr", "ll"}, 4);
  OpenStream(b);
  // Least loaded (the default) keeps the empty agent a for "ll" while b is as empty.
  EXPECT_EQ(TaskOf(Submit("ll")).agent_id(), a);
  EXPECT_EQ(TaskOf(Submit("ll")).agent_id(), b);
  // Round robin for "rr" continues from its own last choice (none yet: a).
  EXPECT_EQ(TaskOf(Submit("rr")).agent_id(), a);
  EXPECT_EQ(TaskOf(Submit("rr")).agent_id(), b);
}

// --- cost budgets and actual cost ---------------------------------------------------------

TEST_F(SchedulingTest, ABudgetKeepsATaskOffAgentsItCannotAfford) {
  // Expected duration 1 s: on the dear agent (factor 5) a run costs about 5, over the
  // budget of 2; on the cheap one (factor 1) about 1.
  const AgentId cheap = StartAgentCosting("t", 1, 1.0);
  const TaskId busy = Submit("t");  // occupies the cheap agent
  const AgentId dear = StartAgentCosting("t", 1, 5.0);
  v1::TaskSpec s = Spec("t");
  s.set_cost_budget(2);
  const TaskId budgeted = Submit(s);
  EXPECT_EQ(StateOf(budgeted), v1::TASK_STATE_READY);
  EXPECT_TRUE(absl::StrContains(TaskOf(budgeted).waiting_for(), "cost budget"))
      << TaskOf(budgeted).waiting_for();
  EXPECT_TRUE(TakeLeases(dear).empty());
  // An unbudgeted task behind it is not held up: the dear agent takes it.
  const TaskId plain = Submit("t");
  EXPECT_EQ(TaskOf(plain).agent_id(), dear);
  // The cheap agent frees up and takes the budgeted task.
  ASSERT_TRUE(Complete(cheap, TakeOnlyLease(cheap)).ok());
  EXPECT_EQ(StateOf(busy), v1::TASK_STATE_SUCCEEDED);
  EXPECT_EQ(StateOf(budgeted), v1::TASK_STATE_LEASED);
  EXPECT_EQ(TaskOf(budgeted).agent_id(), cheap);
  EXPECT_EQ(TaskOf(budgeted).waiting_for(), "");
}

TEST_F(SchedulingTest, ActualCostIsRecordedPerAttemptTaskTenantTypeAndWorkflow) {
  const AgentId agent = StartAgentCosting("t", 1, 2.0);
  v1::TaskSpec s = Spec("t");
  s.set_tenant("acme");
  const TaskId id = Submit(s);
  v1::TaskLease first = TakeOnlyLease(agent);
  Advance(absl::Seconds(3));
  ASSERT_TRUE(Fail(agent, first, "flaky").ok());  // 3 s x 2 = 6
  Advance(absl::Seconds(2));                      // past the backoff (at most 100 ms)
  v1::TaskLease second = TakeOnlyLease(agent);
  Advance(absl::Milliseconds(1500));
  ASSERT_TRUE(Complete(agent, second).ok());  // 1.5 s x 2 = 3
  const v1::Task t = TaskOf(id);
  ASSERT_EQ(t.history_size(), 2);
  EXPECT_DOUBLE_EQ(t.history(0).cost_factor(), 2.0);
  EXPECT_DOUBLE_EQ(t.history(0).cost(), 6.0);
  EXPECT_DOUBLE_EQ(t.history(1).cost(), 3.0);
  EXPECT_DOUBLE_EQ(t.cost(), 9.0);
  const CostSum& sum = engine_->costs().at({"acme", "t"});
  EXPECT_DOUBLE_EQ(sum.cost, 9.0);
  EXPECT_DOUBLE_EQ(sum.run_seconds, 4.5);
  EXPECT_EQ(sum.attempts, 2);
  // The sums survive a restart (store meta "costs").
  Restart(engine_->options());
  EXPECT_DOUBLE_EQ(engine_->costs().at({"acme", "t"}).cost, 9.0);
}

TEST_F(SchedulingTest, AWorkflowSumsItsTasksCost) {
  const AgentId agent = StartAgentCosting("t", 2, 0.5);
  v1::WorkflowSpec w;
  for (const char* name : {"a", "b"}) {
    v1::WorkflowStep* step = w.add_steps();
    step->set_name(name);
    *step->mutable_task() = Spec("t");
  }
  absl::StatusOr<const v1::Workflow*> wf = engine_->SubmitWorkflow(w);
  Settle();
  ASSERT_TRUE(wf.ok()) << wf.status();
  const WorkflowId wid = (*wf)->id();
  std::vector<v1::TaskLease> leases = TakeLeases(agent);
  ASSERT_EQ(leases.size(), 2u);
  Advance(absl::Seconds(4));
  for (const v1::TaskLease& l : leases) ASSERT_TRUE(Complete(agent, l).ok());
  // Two runs of 4 s at factor 0.5.
  EXPECT_DOUBLE_EQ(engine_->WorkflowSnapshot(wid)->cost(), 4.0);
  EXPECT_DOUBLE_EQ(workflow_store_.at(wid).cost(), 4.0);
}

TEST_F(SchedulingTest, SpendingTheBudgetDeadLettersTheTask) {
  // Budget 5 at factor 1: the first attempt runs 3 s (cost 3, 2 left; the next run is
  // expected to cost 1, so it may start), the second 3 s more: 6 >= 5, dead.
  const AgentId agent = StartAgentCosting("t", 1, 1.0);
  v1::TaskSpec s = Spec("t");
  s.set_cost_budget(5);
  s.set_max_attempts(10);
  const TaskId id = Submit(s);
  v1::TaskLease first = TakeOnlyLease(agent);
  Advance(absl::Seconds(3));
  ASSERT_TRUE(Fail(agent, first, "slow").ok());
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_RETRY_WAIT);
  Advance(absl::Seconds(1));
  v1::TaskLease second = TakeOnlyLease(agent);
  Advance(absl::Seconds(3));
  ASSERT_TRUE(Fail(agent, second, "slow again").ok());
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_DEAD);
  EXPECT_TRUE(absl::StartsWith(TaskOf(id).reason(), "cost budget exhausted (spent 6 of 5)"))
      << TaskOf(id).reason();
  EXPECT_EQ(engine_->probe().budget_exhausted, 1);
}

// --- named resources ------------------------------------------------------------------

class ResourceTest : public SchedulingTest {
 protected:
  ResourceTest() {
    EngineOptions o = BaseOptions();
    o.resources["gpu"] = ResourceSpec{ResourceSpec::Kind::kSemaphore, 2};
    o.resources["llm_tokens"] =
        ResourceSpec{ResourceSpec::Kind::kTokenBucket, 10, absl::Minutes(1)};
    Reset(o);
  }
};

TEST_F(ResourceTest, ASemaphoreLimitsHowManyRunAtOnce) {
  const AgentId agent = StartAgent("t", 5);
  const TaskId a = Submit(Needing("t", "gpu", 1));
  const TaskId b = Submit(Needing("t", "gpu", 1));
  const TaskId c = Submit(Needing("t", "gpu", 1));
  EXPECT_EQ(StateOf(a), v1::TASK_STATE_LEASED);
  EXPECT_EQ(StateOf(b), v1::TASK_STATE_LEASED);
  EXPECT_EQ(StateOf(c), v1::TASK_STATE_READY);
  EXPECT_EQ(TaskOf(c).waiting_for(), "resource \"gpu\" (needs 1, 0 of 2 available)");
  EXPECT_EQ(UsageOf("gpu").in_use, 2);
  EXPECT_EQ(UsageOf("gpu").waiting, 1);
  // A task without the resource is not held up behind it.
  const TaskId plain = Submit("t");
  EXPECT_EQ(StateOf(plain), v1::TASK_STATE_LEASED);
  // One ends; the waiter goes.
  std::vector<v1::TaskLease> leases = TakeLeases(agent);
  ASSERT_EQ(leases.size(), 3u);
  ASSERT_TRUE(Complete(agent, leases[0]).ok());
  EXPECT_EQ(StateOf(c), v1::TASK_STATE_LEASED);
  EXPECT_EQ(UsageOf("gpu").in_use, 2);
  EXPECT_EQ(UsageOf("gpu").waiting, 0);
  EXPECT_EQ(UsageOf("gpu").acquired_total, 3);
}

TEST_F(ResourceTest, UnitsComeBackHoweverTheAttemptEnds) {
  const AgentId agent = StartAgent("t", 5);
  const TaskId failed = Submit(Needing("t", "gpu", 1));
  const TaskId canceled = Submit(Needing("t", "gpu", 1));
  std::vector<v1::TaskLease> leases = TakeLeases(agent);
  ASSERT_EQ(leases.size(), 2u);
  ASSERT_TRUE(Fail(agent, leases[0], "boom", /*retryable=*/false).ok());
  EXPECT_EQ(StateOf(failed), v1::TASK_STATE_DEAD);
  EXPECT_EQ(UsageOf("gpu").in_use, 1);
  ASSERT_TRUE(engine_->Cancel(canceled, "").ok());
  Settle();
  EXPECT_EQ(UsageOf("gpu").in_use, 0);
  // A lost lease (the agent goes silent) gives its units back too.
  const TaskId lost = Submit(Needing("t", "gpu", 2));
  EXPECT_EQ(StateOf(lost), v1::TASK_STATE_LEASED);
  EXPECT_EQ(UsageOf("gpu").in_use, 2);
  AgentStopsHeartbeating(agent);
  Advance(kTtl + absl::Seconds(1));
  EXPECT_NE(StateOf(lost), v1::TASK_STATE_LEASED);
  EXPECT_EQ(UsageOf("gpu").in_use, 0);
}

TEST_F(ResourceTest, ALargeNeedIsNotOvertakenBySmallerOnes) {
  const AgentId agent = StartAgent("t", 5);
  const TaskId one = Submit(Needing("t", "gpu", 1));
  const TaskId two = Submit(Needing("t", "gpu", 2));    // waits: 1 of 2 free
  const TaskId small = Submit(Needing("t", "gpu", 1));  // would fit, but waits its turn
  EXPECT_EQ(StateOf(one), v1::TASK_STATE_LEASED);
  EXPECT_EQ(StateOf(two), v1::TASK_STATE_READY);
  EXPECT_EQ(StateOf(small), v1::TASK_STATE_READY);
  ASSERT_TRUE(Complete(agent, TakeOnlyLease(agent)).ok());  // 2 free: "two" goes
  EXPECT_EQ(StateOf(two), v1::TASK_STATE_LEASED);
  EXPECT_EQ(StateOf(small), v1::TASK_STATE_READY);
  ASSERT_TRUE(Complete(agent, TakeOnlyLease(agent)).ok());
  EXPECT_EQ(StateOf(small), v1::TASK_STATE_LEASED);
}

TEST_F(ResourceTest, ATokenBucketRefillsAtItsRate) {
  // 10 tokens per minute: one every 6 s. The first task takes 6 of 10; the second needs
  // 6 and finds 4, so it waits for 2 more tokens: 12 s.
  const AgentId agent = StartAgent("t", 5);
  const TaskId first = Submit(Needing("t", "llm_tokens", 6));
  const TaskId second = Submit(Needing("t", "llm_tokens", 6));
  EXPECT_EQ(StateOf(first), v1::TASK_STATE_LEASED);
  EXPECT_EQ(StateOf(second), v1::TASK_STATE_READY);
  EXPECT_NEAR(UsageOf("llm_tokens").available, 4.0, 1e-9);
  // Tokens are spent, not returned: finishing the first task gives nothing back.
  ASSERT_TRUE(Complete(agent, TakeOnlyLease(agent)).ok());
  EXPECT_EQ(StateOf(second), v1::TASK_STATE_READY);
  Advance(absl::Milliseconds(11'900));
  EXPECT_EQ(StateOf(second), v1::TASK_STATE_READY);
  Advance(absl::Milliseconds(100));
  EXPECT_EQ(StateOf(second), v1::TASK_STATE_LEASED);
  EXPECT_NEAR(UsageOf("llm_tokens").available, 0.0, 1e-6);
}

TEST_F(ResourceTest, UnknownResourcesAndImpossibleAmountsAreRefused) {
  EXPECT_TRUE(HasError(TrySubmit(Needing("t", "tpu", 1)).status(),
                       absl::StatusCode::kInvalidArgument,
                       "task.resources[0].name: unknown resource \"tpu\" (configured: gpu, "
                       "llm_tokens)"));
  EXPECT_TRUE(
      HasError(TrySubmit(Needing("t", "gpu", 3)).status(), absl::StatusCode::kInvalidArgument,
               "task.resources[0].amount: must be 1 to 2 (the capacity of \"gpu\"), got 3"));
  EXPECT_TRUE(HasError(TrySubmit(Needing("t", "gpu", 0)).status(),
                       absl::StatusCode::kInvalidArgument, "task.resources[0].amount"));
  v1::TaskSpec twice = Needing("t", "gpu", 1);
  *twice.add_resources() = twice.resources(0);
  EXPECT_TRUE(HasError(TrySubmit(twice).status(), absl::StatusCode::kInvalidArgument,
                       "task.resources[1].name: \"gpu\" is listed twice"));
}

TEST_F(ResourceTest, WaitersSurviveARestart) {
  const AgentId agent = StartAgent("t", 5);
  Submit(Needing("t", "gpu", 2));
  const TaskId waiting = Submit(Needing("t", "gpu", 2));
  EXPECT_EQ(StateOf(waiting), v1::TASK_STATE_READY);
  (void)agent;
  Restart(engine_->options());
  // The leased task went back to the queue; with no agent yet, both wait for one.
  const AgentId again = StartAgent("t", 5);
  std::vector<v1::TaskLease> leases = TakeLeases(again);
  ASSERT_EQ(leases.size(), 1u);
  EXPECT_EQ(UsageOf("gpu").in_use, 2);
  ASSERT_TRUE(Complete(again, leases[0]).ok());
  EXPECT_EQ(TakeLeases(again).size(), 1u);
}

// --- weighted fair queueing -------------------------------------------------------------

v1::TaskSpec TenantSpec(const std::string& tenant) {
  v1::TaskSpec s;
  s.set_type("t");
  s.set_tenant(tenant);
  s.set_priority(v1::PRIORITY_NORMAL);
  return s;
}

TEST_F(SchedulingTest, AFloodingTenantDoesNotDelayASmallOne) {
  // Equal weights. "flood" queues 1,000 tasks; one agent with one slot works through them.
  // After 100 of them, "small" submits 10. Bound (stated in docs/scheduling.md): with n
  // tenants of equal weight active, a tenant's k-th queued task starts within n x k
  // dispatches of its submission; here 2k.
  const AgentId agent = StartAgent("t", 1);
  std::vector<v1::TaskSpec> flood(1000, TenantSpec("flood"));
  ASSERT_TRUE(TrySubmitBatch(flood).ok());
  std::vector<TaskId> order = DispatchOrder(agent, 100);
  ASSERT_EQ(order.size(), 100u);
  std::vector<TaskId> small;
  for (int i = 0; i < 10; ++i) small.push_back(Submit(TenantSpec("small")));
  // (The agent holds the 101st flood task already.)
  std::vector<TaskId> next = DispatchOrder(agent, 40);
  ASSERT_GE(next.size(), 21u);
  for (int k = 1; k <= 10; ++k) {
    auto at = std::find(next.begin(), next.end(), small[static_cast<size_t>(k - 1)]);
    ASSERT_NE(at, next.end()) << "small task " << k << " not dispatched";
    const int position = static_cast<int>(at - next.begin()) + 1;
    EXPECT_LE(position, 2 * k + 1) << "small task " << k;  // +1: the lease already held
  }
}

TEST_F(SchedulingTest, TenantsShareDispatchByWeight) {
  // Weights 3 and 1, both with a backlog: of every 4 dispatches, 3 go to "gold".
  EngineOptions o = BaseOptions();
  o.tenant_weights["gold"] = 3;
  Reset(o);
  std::vector<v1::TaskSpec> specs;
  for (int i = 0; i < 300; ++i) {
    specs.push_back(TenantSpec("gold"));
    specs.push_back(TenantSpec("basic"));
  }
  ASSERT_TRUE(TrySubmitBatch(specs).ok());
  const AgentId agent = StartAgent("t", 1);
  std::vector<TaskId> order = DispatchOrder(agent, 400);
  ASSERT_EQ(order.size(), 400u);
  int gold = 0;
  for (TaskId id : order) gold += TaskOf(id).spec().tenant() == "gold";
  EXPECT_NEAR(gold, 300, 2);
  bool shares_shown = false;
  for (const TenantUsage& t : engine_->Tenants()) {
    if (t.tenant == "gold") {
      EXPECT_EQ(t.weight, 3);
      EXPECT_EQ(t.dispatched_total, gold);
      shares_shown = true;
    }
  }
  EXPECT_TRUE(shares_shown);
}

TEST_F(SchedulingTest, PriorityStillComesBeforeFairness) {
  const AgentId agent = RegisterAgent({"t"}, 1);
  std::vector<v1::TaskSpec> flood(50, TenantSpec("flood"));
  for (v1::TaskSpec& s : flood) s.set_priority(v1::PRIORITY_HIGH);
  ASSERT_TRUE(TrySubmitBatch(flood).ok());
  const TaskId low = Submit(TenantSpec("small"));  // normal priority
  OpenStream(agent);
  std::vector<TaskId> order = DispatchOrder(agent, 60);
  ASSERT_EQ(order.size(), 51u);
  EXPECT_EQ(order.back(), low);
}

TEST_F(SchedulingTest, AnIdleTenantSavesNoCredit) {
  // "early" ran alone for 100 dispatches; when "late" arrives it starts at the current
  // virtual time, so the two alternate instead of "late" taking 100 in a row.
  const AgentId agent = StartAgent("t", 1);
  std::vector<v1::TaskSpec> early(200, TenantSpec("early"));
  ASSERT_TRUE(TrySubmitBatch(early).ok());
  ASSERT_EQ(DispatchOrder(agent, 100).size(), 100u);
  std::vector<v1::TaskSpec> late(50, TenantSpec("late"));
  ASSERT_TRUE(TrySubmitBatch(late).ok());
  std::vector<TaskId> next = DispatchOrder(agent, 20);
  int late_count = 0;
  for (TaskId id : next) late_count += TaskOf(id).spec().tenant() == "late";
  EXPECT_NEAR(late_count, 10, 1);
}

// --- preemption --------------------------------------------------------------------------

TEST_F(SchedulingTest, ACriticalTaskPreemptsLowWorkAfterItsWait) {
  const AgentId agent = StartAgent("t", 1);
  const TaskId low = Submit("t", v1::PRIORITY_LOW);
  v1::TaskLease low_lease = TakeOnlyLease(agent);
  ASSERT_TRUE(engine_->Checkpoint(agent, low, low_lease.lease_token(), "halfway").ok());
  Settle();
  const TaskId critical = Submit("t", v1::PRIORITY_CRITICAL);
  Advance(absl::Seconds(29));
  EXPECT_EQ(StateOf(critical), v1::TASK_STATE_READY);
  Advance(absl::Seconds(1));  // preempt_after: 30 s
  std::vector<v1::CancelNotice> cancels = TakeCancels(agent);
  ASSERT_EQ(cancels.size(), 1u);
  EXPECT_EQ(cancels[0].task_id(), low);
  EXPECT_TRUE(absl::StartsWith(cancels[0].reason(), "preempted by critical task"));
  EXPECT_EQ(StateOf(critical), v1::TASK_STATE_LEASED);
  EXPECT_EQ(TaskOf(critical).agent_id(), agent);
  const v1::Task l = TaskOf(low);
  EXPECT_EQ(l.state(), v1::TASK_STATE_READY);
  EXPECT_EQ(l.failures(), 0);
  ASSERT_EQ(l.history_size(), 1);
  EXPECT_EQ(l.history(0).outcome(), "preempted");
  EXPECT_FALSE(l.history(0).counted());
  // The stale report of the stopped attempt is refused; after the critical task, the low
  // one resumes from its checkpoint.
  EXPECT_FALSE(Complete(agent, low_lease).ok());
  ASSERT_TRUE(Complete(agent, TakeOnlyLease(agent)).ok());
  v1::TaskLease resumed = TakeOnlyLease(agent);
  EXPECT_EQ(resumed.task_id(), low);
  EXPECT_EQ(resumed.checkpoint(), "halfway");
  EXPECT_EQ(engine_->probe().preempted, 1);
}

TEST_F(SchedulingTest, NormalWorkIsNeverPreempted) {
  const AgentId agent = StartAgent("t", 1);
  Submit("t", v1::PRIORITY_NORMAL);
  TakeOnlyLease(agent);
  const TaskId critical = Submit("t", v1::PRIORITY_CRITICAL);
  Advance(absl::Minutes(2));
  EXPECT_TRUE(TakeCancels(agent).empty());
  EXPECT_EQ(StateOf(critical), v1::TASK_STATE_READY);
  EXPECT_EQ(engine_->probe().preempted, 0);
}

TEST_F(SchedulingTest, PreemptionPicksBackgroundBeforeLowAndCanBeTurnedOff) {
  const AgentId a = StartAgent("t", 1);
  const AgentId b = StartAgent("t", 1);
  const TaskId low = Submit("t", v1::PRIORITY_LOW);
  const TaskId background = Submit("t", v1::PRIORITY_BACKGROUND);
  (void)a;
  (void)b;
  Submit("t", v1::PRIORITY_CRITICAL);
  Advance(absl::Seconds(30));
  EXPECT_EQ(StateOf(low), v1::TASK_STATE_LEASED);
  EXPECT_EQ(StateOf(background), v1::TASK_STATE_READY);

  EngineOptions off = BaseOptions();
  off.preempt_after = absl::ZeroDuration();
  Reset(off);
  const AgentId c = StartAgent("t", 1);
  Submit("t", v1::PRIORITY_BACKGROUND);
  TakeOnlyLease(c);
  const TaskId critical = Submit("t", v1::PRIORITY_CRITICAL);
  Advance(absl::Minutes(5));
  EXPECT_EQ(StateOf(critical), v1::TASK_STATE_READY);
}

}  // namespace
}  // namespace drover::core
