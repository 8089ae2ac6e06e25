// Unit tests of dependencies and workflows in the engine, on a ManualClock (the fixture is
// in engine_fixture.h): WAITING tasks, parent results in leases, the cascade when a parent
// fails, run-anyway edges, workflow validation, progress, cancel, reprocess and restart.
#include <algorithm>
#include <string>
#include <vector>

#include "engine_fixture.h"
#include "gtest/gtest.h"

namespace drover::core {
namespace {

using testing_internal::EngineTest;
using testing_internal::HasError;

class WorkflowTest : public EngineTest {
 protected:
  static v1::WorkflowStep Step(const std::string& name, const std::string& type,
                               const std::vector<std::string>& after = {},
                               const std::vector<std::string>& after_any = {}) {
    v1::WorkflowStep s;
    s.set_name(name);
    *s.mutable_task() = Spec(type);
    s.mutable_task()->set_payload(name);
    for (const std::string& p : after) s.add_depends_on(p);
    for (const std::string& p : after_any) s.add_depends_on_finished(p);
    return s;
  }
  static v1::WorkflowSpec Workflow(const std::vector<v1::WorkflowStep>& steps) {
    v1::WorkflowSpec w;
    w.set_name("test");
    for (const v1::WorkflowStep& s : steps) *w.add_steps() = s;
    return w;
  }
  absl::StatusOr<v1::Workflow> TrySubmitWorkflow(const v1::WorkflowSpec& spec) {
    absl::StatusOr<const v1::Workflow*> w = engine_->SubmitWorkflow(spec);
    Settle();
    if (!w.ok()) return w.status();
    return **w;
  }
  v1::Workflow SubmitWorkflow(const v1::WorkflowSpec& spec) {
    absl::StatusOr<v1::Workflow> w = TrySubmitWorkflow(spec);
    EXPECT_TRUE(w.ok()) << w.status();
    return w.ok() ? *w : v1::Workflow();
  }
  v1::Workflow WorkflowOf(WorkflowId id) const {
    const v1::Workflow* w = engine_->WorkflowSnapshot(id);
    if (w == nullptr) {
      ADD_FAILURE() << "workflow " << id << " does not exist";
      return v1::Workflow();
    }
    return *w;
  }
  static TaskId IdOf(const v1::Workflow& w, const std::string& step) {
    for (const v1::WorkflowTaskRef& r : w.tasks()) {
      if (r.step() == step) return r.task_id();
    }
    ADD_FAILURE() << "no step " << step;
    return 0;
  }
  TaskId SubmitAfter(const std::string& type, const std::vector<TaskId>& parents,
                     const std::vector<TaskId>& after_any = {}) {
    v1::TaskSpec s = Spec(type);
    for (TaskId p : parents) s.add_depends_on(p);
    for (TaskId p : after_any) s.add_depends_on_finished(p);
    return Submit(s);
  }
};

// ---------------------------------------------------------------------------------------
// Plain tasks with depends_on

TEST_F(WorkflowTest, ChildWaitsForItsParentAndReceivesItsResult) {
  const AgentId agent = StartAgent("build");
  const TaskId parent = Submit("build");
  const TaskId child = SubmitAfter("build", {parent});
  EXPECT_EQ(StateOf(child), v1::TASK_STATE_WAITING);

  const v1::TaskLease first = TakeOnlyLease(agent);
  EXPECT_EQ(first.task_id(), parent);
  EXPECT_EQ(first.parents_size(), 0);
  ASSERT_TRUE(Complete(agent, first, "parent-out").ok());

  const v1::TaskLease second = TakeOnlyLease(agent);
  EXPECT_EQ(second.task_id(), child);
  ASSERT_EQ(second.parents_size(), 1);
  EXPECT_EQ(second.parents(0).task_id(), parent);
  EXPECT_EQ(second.parents(0).state(), v1::TASK_STATE_SUCCEEDED);
  EXPECT_EQ(second.parents(0).result(), "parent-out");
}

TEST_F(WorkflowTest, AFailedParentCancelsEveryWaitingDescendantNamingTheParent) {
  const AgentId agent = StartAgent("build");
  const TaskId a = Submit("build");
  const TaskId b = SubmitAfter("build", {a});
  const TaskId c = SubmitAfter("build", {b});
  const TaskId unrelated = Submit("build");
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "broken input", /*retryable=*/false).ok());

  EXPECT_EQ(StateOf(a), v1::TASK_STATE_DEAD);
  EXPECT_EQ(StateOf(b), v1::TASK_STATE_CANCELED);
  EXPECT_EQ(StateOf(c), v1::TASK_STATE_CANCELED);
  EXPECT_TRUE(absl::StrContains(TaskOf(b).reason(), absl::StrCat("parent task ", a, " ended dead")))
      << TaskOf(b).reason();
  EXPECT_TRUE(absl::StrContains(TaskOf(c).reason(), absl::StrCat("parent task ", b)))
      << TaskOf(c).reason();
  // The cascade touches only descendants.
  EXPECT_EQ(TakeOnlyLease(agent).task_id(), unrelated);
}

TEST_F(WorkflowTest, ARunAnywayEdgeRunsTheChildAfterAFailureWithTheParentsError) {
  const AgentId agent = StartAgent("build");
  const TaskId a = Submit("build");
  const TaskId cleanup = SubmitAfter("build", {}, {a});
  EXPECT_EQ(StateOf(cleanup), v1::TASK_STATE_WAITING);
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "disk full", /*retryable=*/false).ok());

  const v1::TaskLease lease = TakeOnlyLease(agent);
  EXPECT_EQ(lease.task_id(), cleanup);
  ASSERT_EQ(lease.parents_size(), 1);
  EXPECT_EQ(lease.parents(0).state(), v1::TASK_STATE_DEAD);
  EXPECT_TRUE(absl::StrContains(lease.parents(0).error(), "disk full")) << lease.parents(0).error();
  EXPECT_TRUE(lease.parents(0).result().empty());
}

TEST_F(WorkflowTest, CancelingAParentCancelsItsChildren) {
  const TaskId a = Submit("build");
  const TaskId b = SubmitAfter("build", {a});
  ASSERT_TRUE(engine_->Cancel(a, "not needed").ok());
  Settle();
  EXPECT_EQ(StateOf(b), v1::TASK_STATE_CANCELED);
  EXPECT_TRUE(absl::StrContains(TaskOf(b).reason(), "ended canceled: not needed"))
      << TaskOf(b).reason();
}

TEST_F(WorkflowTest, AWaitingTaskExpiresAtItsDeadlineAndCancelsItsChildren) {
  const TaskId never_runs = Submit("nobody");
  v1::TaskSpec s = Spec("build");
  s.add_depends_on(never_runs);
  s.set_deadline_unix_ms(NowMs() + 60'000);
  const TaskId waiting = Submit(s);
  const TaskId grandchild = SubmitAfter("build", {waiting});
  Advance(absl::Seconds(61));
  EXPECT_EQ(StateOf(waiting), v1::TASK_STATE_EXPIRED);
  EXPECT_EQ(StateOf(grandchild), v1::TASK_STATE_CANCELED);
  EXPECT_EQ(StateOf(never_runs), v1::TASK_STATE_READY);
}

TEST_F(WorkflowTest, RefusesParentsThatAreUnknownDeadOrAnotherTenants) {
  const AgentId agent = StartAgent("build");
  const TaskId dead = Submit("build");
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "no", false).ok());
  v1::TaskSpec other = Spec("build");
  other.set_tenant("other");
  const TaskId foreign = Submit(other);
  const size_t before = engine_->task_count();

  v1::TaskSpec s = Spec("build");
  s.add_depends_on(424242);
  EXPECT_TRUE(HasError(TrySubmit(s).status(), absl::StatusCode::kInvalidArgument,
                       "task.depends_on[0]: task 424242 is not a task of tenant \"default\""));
  s.clear_depends_on();
  s.add_depends_on(dead);
  EXPECT_TRUE(
      HasError(TrySubmit(s).status(), absl::StatusCode::kInvalidArgument, "already ended dead"));
  s.clear_depends_on();
  s.add_depends_on(foreign);
  EXPECT_TRUE(HasError(TrySubmit(s).status(), absl::StatusCode::kInvalidArgument,
                       "is not a task of tenant \"default\""));
  // Over a run-anyway edge a dead parent is fine: the child runs at once.
  s.clear_depends_on();
  s.add_depends_on_finished(dead);
  const TaskId after_dead = Submit(s);
  EXPECT_EQ(StateOf(after_dead), v1::TASK_STATE_READY);  // the agent is busy with `foreign`
  EXPECT_EQ(engine_->task_count(), before + 1);
}

// ---------------------------------------------------------------------------------------
// Workflows

TEST_F(WorkflowTest, FanOutAndFanInRunInDependencyOrderAndTheWorkflowSucceeds) {
  const AgentId agent = StartAgent("build", 4);
  const v1::Workflow w = SubmitWorkflow(Workflow({
      Step("merge", "build", {"a", "b", "c"}),  // listed first: ids still follow the edges
      Step("plan", "build"),
      Step("a", "build", {"plan"}),
      Step("b", "build", {"plan"}),
      Step("c", "build", {"plan"}),
  }));
  EXPECT_EQ(w.state(), v1::WORKFLOW_STATE_RUNNING);
  EXPECT_EQ(w.total(), 5);
  EXPECT_LT(IdOf(w, "plan"), IdOf(w, "a"));
  EXPECT_LT(IdOf(w, "c"), IdOf(w, "merge"));
  EXPECT_EQ(StateOf(IdOf(w, "merge")), v1::TASK_STATE_WAITING);

  const v1::TaskLease plan = TakeOnlyLease(agent);
  EXPECT_EQ(plan.step(), "plan");
  EXPECT_EQ(plan.workflow_id(), w.id());
  ASSERT_TRUE(Complete(agent, plan, "the plan").ok());
  std::vector<v1::TaskLease> fan = TakeLeases(agent);
  ASSERT_EQ(fan.size(), 3u);
  for (const v1::TaskLease& l : fan) {
    ASSERT_EQ(l.parents_size(), 1);
    EXPECT_EQ(l.parents(0).step(), "plan");
    EXPECT_EQ(l.parents(0).result(), "the plan");
  }
  ASSERT_TRUE(Complete(agent, fan[0], "out-0").ok());
  ASSERT_TRUE(Complete(agent, fan[1], "out-1").ok());
  EXPECT_TRUE(TakeLeases(agent).empty()) << "merge ran before all its parents succeeded";
  EXPECT_EQ(WorkflowOf(w.id()).done(), 3);
  ASSERT_TRUE(Complete(agent, fan[2], "out-2").ok());

  const v1::TaskLease merge = TakeOnlyLease(agent);
  EXPECT_EQ(merge.step(), "merge");
  ASSERT_EQ(merge.parents_size(), 3);
  std::vector<std::string> results;
  for (const v1::ParentResult& p : merge.parents()) results.push_back(p.result());
  std::sort(results.begin(), results.end());
  EXPECT_EQ(results, (std::vector<std::string>{"out-0", "out-1", "out-2"}));
  EXPECT_TRUE(terminal_workflows_.empty());
  ASSERT_TRUE(Complete(agent, merge).ok());

  const v1::Workflow done = WorkflowOf(w.id());
  EXPECT_EQ(done.state(), v1::WORKFLOW_STATE_SUCCEEDED);
  EXPECT_EQ(done.done(), 5);
  EXPECT_EQ(done.succeeded(), 5);
  EXPECT_GT(done.finished_unix_ms(), 0);
  EXPECT_EQ(terminal_workflows_, (std::vector<WorkflowId>{w.id()}));
  EXPECT_EQ(workflow_store_[w.id()].state(), v1::WORKFLOW_STATE_SUCCEEDED) << "not persisted";
}

TEST_F(WorkflowTest, RefusesACycleNamingTheStepsOnIt) {
  const absl::StatusOr<v1::Workflow> w = TrySubmitWorkflow(Workflow({
      Step("start", "build"),
      Step("a", "build", {"start", "c"}),
      Step("b", "build", {"a"}),
      Step("c", "build", {"b"}),
  }));
  EXPECT_TRUE(HasError(w.status(), absl::StatusCode::kInvalidArgument,
                       "workflow.steps: dependency cycle \"a\" -> \"b\" -> \"c\" -> \"a\""))
      << w.status();
  EXPECT_EQ(engine_->task_count(), 0u);
  EXPECT_EQ(engine_->workflow_count(), 0u);
}

TEST_F(WorkflowTest, RefusesBadStepsNamingTheStep) {
  struct Case {
    std::vector<v1::WorkflowStep> steps;
    std::string error;
  };
  v1::WorkflowStep foreign = Step("x", "build");
  foreign.mutable_task()->set_tenant("other");
  v1::WorkflowStep bad_type = Step("x", "no spaces");
  const std::vector<Case> cases = {
      {{Step("a", "build"), Step("b", "build", {"nope"})},
       "workflow.steps[1] (\"b\").depends_on[0]: no step named \"nope\""},
      {{Step("a", "build", {"a"})}, "depends on itself"},
      {{Step("a", "build"), Step("a", "build")},
       "workflow.steps[1].name: \"a\" is already the name of workflow.steps[0]"},
      {{Step("", "build")}, "workflow.steps[0].name: required"},
      {{foreign}, "workflow.steps[0] (\"x\").task.tenant: \"other\" differs"},
      {{bad_type}, "workflow.steps[0] (\"x\").task.type"},
      {{Step("a", "build"), Step("b", "build", {"a", "a"})}, "is listed twice"},
      {{}, "workflow.steps: no steps given"},
  };
  for (const Case& c : cases) {
    EXPECT_TRUE(HasError(TrySubmitWorkflow(Workflow(c.steps)).status(),
                         absl::StatusCode::kInvalidArgument, c.error));
  }
  EXPECT_EQ(engine_->task_count(), 0u);
}

TEST_F(WorkflowTest, RefusesADependencyOnAnotherTenantsTask) {
  v1::TaskSpec other = Spec("build");
  other.set_tenant("other");
  const TaskId foreign = Submit(other);
  v1::WorkflowStep step = Step("a", "build");
  step.mutable_task()->add_depends_on(foreign);
  EXPECT_TRUE(HasError(TrySubmitWorkflow(Workflow({step})).status(),
                       absl::StatusCode::kInvalidArgument,
                       "workflow.steps[0] (\"a\").task.depends_on[0]"));
  EXPECT_EQ(engine_->task_count(), 1u);
}

TEST_F(WorkflowTest, AFailedBranchFailsTheWorkflowOnceEveryTaskHasEnded) {
  const AgentId agent = StartAgent("build", 2);
  const v1::Workflow w = SubmitWorkflow(Workflow({
      Step("x", "build"), Step("x-next", "build", {"x"}), Step("y", "build"),
      Step("report", "build", {}, {"x-next", "y"}),  // runs anyway
  }));
  std::vector<v1::TaskLease> leases = TakeLeases(agent);
  ASSERT_EQ(leases.size(), 2u);
  const v1::TaskLease& x = leases[0].step() == "x" ? leases[0] : leases[1];
  const v1::TaskLease& y = leases[0].step() == "x" ? leases[1] : leases[0];
  ASSERT_TRUE(Fail(agent, x, "bad", false).ok());
  EXPECT_EQ(StateOf(IdOf(w, "x-next")), v1::TASK_STATE_CANCELED);
  EXPECT_EQ(WorkflowOf(w.id()).state(), v1::WORKFLOW_STATE_RUNNING);
  ASSERT_TRUE(Complete(agent, y).ok());
  const v1::TaskLease report = TakeOnlyLease(agent);
  EXPECT_EQ(report.step(), "report");
  EXPECT_EQ(report.parents_size(), 2);
  ASSERT_TRUE(Complete(agent, report).ok());

  const v1::Workflow done = WorkflowOf(w.id());
  EXPECT_EQ(done.state(), v1::WORKFLOW_STATE_FAILED);
  EXPECT_EQ(done.done(), 4);
  EXPECT_EQ(done.succeeded(), 2);
  EXPECT_EQ(done.failed(), 1);
  EXPECT_EQ(done.canceled(), 1);
}

TEST_F(WorkflowTest, CancelingAWorkflowStopsRunningTasksAndCancelsTheRest) {
  const AgentId agent = StartAgent("build");
  const v1::Workflow w = SubmitWorkflow(Workflow({
      Step("first", "build"),
      Step("second", "build", {"first"}),
      Step("side", "other"),
  }));
  const v1::TaskLease first = TakeOnlyLease(agent);
  absl::StatusOr<const v1::Workflow*> c = engine_->CancelWorkflow(w.id(), "user gave up");
  ASSERT_TRUE(c.ok()) << c.status();
  Settle();
  const std::vector<v1::CancelNotice> notices = TakeCancels(agent);
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_EQ(notices[0].task_id(), first.task_id());
  for (const char* step : {"first", "second", "side"}) {
    EXPECT_EQ(StateOf(IdOf(w, step)), v1::TASK_STATE_CANCELED) << step;
  }
  const v1::Workflow done = WorkflowOf(w.id());
  EXPECT_EQ(done.state(), v1::WORKFLOW_STATE_CANCELED);
  EXPECT_EQ(done.reason(), "user gave up");
  EXPECT_EQ(done.canceled(), 3);
  EXPECT_TRUE(HasError(engine_->CancelWorkflow(w.id(), "").status(),
                       absl::StatusCode::kFailedPrecondition, "already ended canceled"));
  EXPECT_TRUE(HasError(engine_->CancelWorkflow(999, "").status(), absl::StatusCode::kNotFound,
                       "workflow 999 not found"));
}

TEST_F(WorkflowTest, ReprocessingADeadTaskReopensItsWorkflow) {
  const AgentId agent = StartAgent("build");
  const v1::Workflow w = SubmitWorkflow(Workflow({Step("only", "build")}));
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "flaky", false).ok());
  EXPECT_EQ(WorkflowOf(w.id()).state(), v1::WORKFLOW_STATE_FAILED);
  ASSERT_TRUE(engine_->Reprocess({IdOf(w, "only")}, false, "").ok());
  Settle();
  EXPECT_EQ(WorkflowOf(w.id()).state(), v1::WORKFLOW_STATE_RUNNING);
  EXPECT_EQ(WorkflowOf(w.id()).finished_unix_ms(), 0);
  ASSERT_TRUE(Complete(agent, TakeOnlyLease(agent)).ok());
  EXPECT_EQ(WorkflowOf(w.id()).state(), v1::WORKFLOW_STATE_SUCCEEDED);
  EXPECT_EQ(WorkflowOf(w.id()).failed(), 0);
  EXPECT_EQ(terminal_workflows_.size(), 2u) << "each end is reported";
}

TEST_F(WorkflowTest, ReprocessingADeadParentMakesARunAnywayChildWaitForItAgain) {
  const AgentId agent = StartAgent("build");
  const TaskId a = Submit("build");
  const TaskId slow = Submit("slow");
  const TaskId child = SubmitAfter("build", {slow}, {a});
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "x", false).ok());
  EXPECT_EQ(StateOf(child), v1::TASK_STATE_WAITING);  // still waits for `slow`
  ASSERT_TRUE(engine_->Reprocess({a}, false, "").ok());
  Settle();
  const v1::TaskLease again = TakeOnlyLease(agent);
  EXPECT_EQ(again.task_id(), a);
  const AgentId slow_agent = StartAgent("slow");
  ASSERT_TRUE(Complete(slow_agent, TakeOnlyLease(slow_agent)).ok());
  EXPECT_EQ(StateOf(child), v1::TASK_STATE_WAITING) << "ran while its parent ran again";
  ASSERT_TRUE(Complete(agent, again, "second try").ok());
  const v1::TaskLease lease = TakeOnlyLease(agent);
  EXPECT_EQ(lease.task_id(), child);
}

TEST_F(WorkflowTest, AParentStaysInMemoryWhileAChildStillNeedsItsResult) {
  EngineOptions o = BaseOptions();
  o.terminal_retention = absl::Minutes(1);
  Reset(o);
  const AgentId agent = StartAgent("build");
  const TaskId fast = Submit("build");
  const TaskId slow = Submit("slow");
  const TaskId child = SubmitAfter("build", {fast, slow});
  ASSERT_TRUE(Complete(agent, TakeOnlyLease(agent), "fast-out").ok());
  Advance(absl::Minutes(5));
  ASSERT_NE(engine_->Snapshot(fast), nullptr) << "evicted while its child waits";

  const AgentId slow_agent = StartAgent("slow");
  ASSERT_TRUE(Complete(slow_agent, TakeOnlyLease(slow_agent)).ok());
  const v1::TaskLease lease = TakeOnlyLease(agent);
  ASSERT_EQ(lease.task_id(), child);
  EXPECT_EQ(lease.parents(0).result(), "fast-out");
  ASSERT_TRUE(Complete(agent, lease).ok());
  Advance(absl::Minutes(2));
  EXPECT_EQ(engine_->Snapshot(fast), nullptr) << "kept after its last child ended";
}

TEST_F(WorkflowTest, ARestartKeepsWaitingChildrenTheirEdgesAndOldParentResults) {
  EngineOptions o = BaseOptions();
  o.terminal_retention = absl::Minutes(1);
  Reset(o);
  const AgentId agent = StartAgent("build");
  const v1::Workflow w = SubmitWorkflow(Workflow({
      Step("early", "build"),
      Step("late", "slow"),
      Step("join", "build", {"early", "late"}),
  }));
  ASSERT_TRUE(Complete(agent, TakeOnlyLease(agent), "early-out").ok());
  Advance(absl::Minutes(5));  // "early" is past its retention: recovery skips it at first
  Restart(o);

  EXPECT_EQ(StateOf(IdOf(w, "join")), v1::TASK_STATE_WAITING);
  EXPECT_EQ(WorkflowOf(w.id()).done(), 1);
  const AgentId slow_agent = StartAgent("slow");
  ASSERT_TRUE(Complete(slow_agent, TakeOnlyLease(slow_agent), "late-out").ok());
  const AgentId again = StartAgent("build");
  const v1::TaskLease join = TakeOnlyLease(again);
  EXPECT_EQ(join.step(), "join");
  ASSERT_EQ(join.parents_size(), 2);
  EXPECT_EQ(join.parents(0).result(), "early-out");
  EXPECT_EQ(join.parents(1).result(), "late-out");
  ASSERT_TRUE(Complete(again, join).ok());
  EXPECT_EQ(WorkflowOf(w.id()).state(), v1::WORKFLOW_STATE_SUCCEEDED);
  // A new workflow after the restart gets a new id.
  EXPECT_GT(SubmitWorkflow(Workflow({Step("n", "build")})).id(), w.id());
}

TEST_F(WorkflowTest, AFinishedWorkflowLeavesMemoryWithItsLastTaskAndTheStoreKeepsIt) {
  const AgentId agent = StartAgent("build");
  const v1::Workflow w = SubmitWorkflow(Workflow({Step("a", "build"), Step("b", "build", {"a"})}));
  ASSERT_TRUE(Complete(agent, TakeOnlyLease(agent)).ok());
  Advance(absl::Minutes(30));
  ASSERT_TRUE(Complete(agent, TakeOnlyLease(agent)).ok());
  ASSERT_EQ(WorkflowOf(w.id()).state(), v1::WORKFLOW_STATE_SUCCEEDED);
  // "a" leaves after its hour; "b" still holds the workflow in memory.
  Advance(absl::Minutes(30));
  EXPECT_EQ(engine_->Snapshot(IdOf(w, "a")), nullptr);
  EXPECT_NE(engine_->WorkflowSnapshot(w.id()), nullptr);
  Advance(absl::Minutes(30));
  EXPECT_EQ(engine_->Snapshot(IdOf(w, "b")), nullptr);
  EXPECT_EQ(engine_->WorkflowSnapshot(w.id()), nullptr) << "left with its last task";
  EXPECT_EQ(engine_->probe().workflows_evicted, 1);
  EXPECT_EQ(workflow_store_.at(w.id()).state(), v1::WORKFLOW_STATE_SUCCEEDED)
      << "the store keeps it";
  EXPECT_TRUE(engine_->ListWorkflows({}).empty());
  // Ids are not reused.
  EXPECT_GT(SubmitWorkflow(Workflow({Step("n", "build")})).id(), w.id());
}

TEST_F(WorkflowTest, AWorkflowWithADeadLetterStaysInMemoryUntilItIsPurged) {
  const AgentId agent = StartAgent("build");
  v1::WorkflowStep once = Step("once", "build");
  once.mutable_task()->set_max_attempts(1);
  const v1::Workflow w = SubmitWorkflow(Workflow({Step("ok", "build"), once}));
  ASSERT_TRUE(Complete(agent, TakeOnlyLease(agent)).ok());
  ASSERT_TRUE(Fail(agent, TakeOnlyLease(agent), "boom").ok());
  ASSERT_EQ(WorkflowOf(w.id()).state(), v1::WORKFLOW_STATE_FAILED);
  Advance(absl::Hours(2));
  EXPECT_EQ(engine_->Snapshot(IdOf(w, "ok")), nullptr);
  EXPECT_NE(engine_->WorkflowSnapshot(w.id()), nullptr)
      << "its dead letter may be reprocessed, reopening it";
  ASSERT_TRUE(engine_->Purge({IdOf(w, "once")}, false, "").ok());
  Settle();
  EXPECT_EQ(engine_->WorkflowSnapshot(w.id()), nullptr);
  EXPECT_EQ(workflow_store_.at(w.id()).state(), v1::WORKFLOW_STATE_FAILED);
}

TEST_F(WorkflowTest, ARestartLeavesFinishedWorkflowsWhoseTasksArePastRetentionInTheStore) {
  EngineOptions o = BaseOptions();
  o.terminal_retention = absl::Minutes(1);
  Reset(o);
  const AgentId agent = StartAgent("build");
  const v1::Workflow done = SubmitWorkflow(Workflow({Step("x", "build")}));
  ASSERT_TRUE(Complete(agent, TakeOnlyLease(agent)).ok());
  const v1::Workflow running = SubmitWorkflow(Workflow({Step("y", "slow")}));
  Restart(o);  // within the retention: both in memory
  EXPECT_NE(engine_->WorkflowSnapshot(done.id()), nullptr);
  Advance(absl::Minutes(5));
  Restart(o);  // "x" is past its retention: not loaded, nor is its workflow
  EXPECT_EQ(engine_->WorkflowSnapshot(done.id()), nullptr);
  EXPECT_EQ(WorkflowOf(running.id()).state(), v1::WORKFLOW_STATE_RUNNING);
  EXPECT_GT(SubmitWorkflow(Workflow({Step("n", "build")})).id(), running.id());
}

TEST_F(WorkflowTest, AWaitingChildWhoseParentIsNoLongerStoredIsCanceledAtRestart) {
  const TaskId parent = Submit("build");
  const TaskId child = SubmitAfter("build", {parent});
  store_.erase(parent);  // pruned from the store (should never happen while the child waits)
  Restart(BaseOptions());
  EXPECT_EQ(StateOf(child), v1::TASK_STATE_CANCELED);
  EXPECT_TRUE(absl::StrContains(TaskOf(child).reason(), "no longer stored"));
}

TEST_F(WorkflowTest, ListsWorkflowsByStateAndTenantWithPages) {
  const AgentId agent = StartAgent("build", 8);
  std::vector<WorkflowId> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(SubmitWorkflow(Workflow({Step("s", "build")})).id());
  ASSERT_TRUE(Complete(agent, TakeLeases(agent).front()).ok());
  WorkflowFilter f;
  f.limit = 2;
  std::vector<const v1::Workflow*> page = engine_->ListWorkflows(f);
  ASSERT_EQ(page.size(), 2u);
  f.after = page.back()->id();
  EXPECT_EQ(engine_->ListWorkflows(f).front()->id(), ids[2]);
  WorkflowFilter done;
  done.state = v1::WORKFLOW_STATE_SUCCEEDED;
  ASSERT_EQ(engine_->ListWorkflows(done).size(), 1u);
  EXPECT_EQ(engine_->ListWorkflows(done).front()->id(), ids[0]);
  WorkflowFilter other;
  other.tenant = "other";
  EXPECT_TRUE(engine_->ListWorkflows(other).empty());
}

// ---------------------------------------------------------------------------------------
// max_parallel, fail_fast and map-reduce

TEST_F(WorkflowTest, MaxParallelHoldsTheRestUntilASlotFrees) {
  const AgentId agent = StartAgent("build", 10);
  v1::WorkflowSpec spec =
      Workflow({Step("a", "build"), Step("b", "build"), Step("c", "build"), Step("d", "build")});
  spec.set_max_parallel(2);
  const v1::Workflow w = SubmitWorkflow(spec);
  std::vector<v1::TaskLease> first = TakeLeases(agent);
  ASSERT_EQ(first.size(), 2u) << "an agent with 10 free slots got more than max_parallel";
  EXPECT_EQ(StateOf(IdOf(w, "c")), v1::TASK_STATE_WAITING);
  ASSERT_TRUE(Complete(agent, first[0]).ok());
  const v1::TaskLease third = TakeOnlyLease(agent);
  EXPECT_EQ(third.step(), "c");                         // released in submission order
  ASSERT_TRUE(Fail(agent, first[1], "x", false).ok());  // a failed task frees its slot too
  const v1::TaskLease fourth = TakeOnlyLease(agent);
  EXPECT_EQ(fourth.step(), "d");
  ASSERT_TRUE(Complete(agent, third).ok());
  ASSERT_TRUE(Complete(agent, fourth).ok());
  EXPECT_EQ(WorkflowOf(w.id()).state(), v1::WORKFLOW_STATE_FAILED);
}

TEST_F(WorkflowTest, FailFastCancelsTheRestAndTheWorkflowFails) {
  const AgentId agent = StartAgent("build", 2);
  v1::WorkflowSpec spec =
      Workflow({Step("a", "build"), Step("b", "build"), Step("c", "other", {"a"})});
  spec.set_fail_fast(true);
  const v1::Workflow w = SubmitWorkflow(spec);
  std::vector<v1::TaskLease> leases = TakeLeases(agent);
  ASSERT_EQ(leases.size(), 2u);
  const v1::TaskLease& a = leases[0].step() == "a" ? leases[0] : leases[1];
  const v1::TaskLease& b = leases[0].step() == "a" ? leases[1] : leases[0];
  ASSERT_TRUE(Fail(agent, b, "broken", false).ok());
  const std::vector<v1::CancelNotice> notices = TakeCancels(agent);
  ASSERT_EQ(notices.size(), 1u) << "the running sibling is told to stop";
  EXPECT_EQ(notices[0].task_id(), a.task_id());
  EXPECT_EQ(StateOf(IdOf(w, "c")), v1::TASK_STATE_CANCELED);
  const v1::Workflow done = WorkflowOf(w.id());
  EXPECT_EQ(done.state(), v1::WORKFLOW_STATE_FAILED);
  EXPECT_TRUE(absl::StrContains(done.reason(), "fail_fast: task")) << done.reason();
  EXPECT_TRUE(absl::StrContains(TaskOf(a.task_id()).reason(), "(step \"b\") ended dead"))
      << TaskOf(a.task_id()).reason();
}

v1::MapReduceSpec Job(int items, v1::MapReduceErrorStrategy on_error, int parallelism = 0) {
  v1::MapReduceSpec job;
  job.set_name("job");
  job.mutable_mapper()->set_type("map");
  job.mutable_reducer()->set_type("reduce");
  job.mutable_reducer()->set_payload("sum");
  for (int i = 1; i <= items; ++i) job.add_items(absl::StrCat("item-", i));
  job.set_on_error(on_error);
  job.set_parallelism(parallelism);
  return job;
}

TEST_F(WorkflowTest, MapReduceRunsEveryItemWithinItsParallelismThenTheReducer) {
  const AgentId mapper = StartAgent("map", 8);
  const AgentId reducer = StartAgent("reduce");
  absl::StatusOr<const v1::Workflow*> r = engine_->SubmitMapReduce(Job(5, v1::FAIL_FAST, 2));
  ASSERT_TRUE(r.ok()) << r.status();
  Settle();
  const WorkflowId id = (*r)->id();
  EXPECT_EQ(WorkflowOf(id).total(), 6);
  int mapped = 0;
  for (std::vector<v1::TaskLease> l = TakeLeases(mapper); !l.empty(); l = TakeLeases(mapper)) {
    EXPECT_LE(l.size(), 2u) << "more map tasks at once than the parallelism";
    for (const v1::TaskLease& lease : l) {
      EXPECT_EQ(lease.payload(), absl::StrCat("item-", lease.step().substr(4)));
      ASSERT_TRUE(Complete(mapper, lease, absl::StrCat("r", lease.step().substr(4))).ok());
      ++mapped;
    }
  }
  EXPECT_EQ(mapped, 5);
  const v1::TaskLease reduce = TakeOnlyLease(reducer);
  EXPECT_EQ(reduce.payload(), "sum");
  ASSERT_EQ(reduce.parents_size(), 5);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(reduce.parents(i).step(), absl::StrCat("map-", i + 1)) << "parents in item order";
    EXPECT_EQ(reduce.parents(i).result(), absl::StrCat("r", i + 1));
  }
  ASSERT_TRUE(Complete(reducer, reduce, "15").ok());
  EXPECT_EQ(WorkflowOf(id).state(), v1::WORKFLOW_STATE_SUCCEEDED);
}

TEST_F(WorkflowTest, MapReduceFailFastStopsAtTheFirstFailedItem) {
  const AgentId mapper = StartAgent("map", 8);
  const AgentId reducer = StartAgent("reduce");
  absl::StatusOr<const v1::Workflow*> r = engine_->SubmitMapReduce(Job(4, v1::FAIL_FAST));
  ASSERT_TRUE(r.ok()) << r.status();
  Settle();
  std::vector<v1::TaskLease> l = TakeLeases(mapper);
  ASSERT_EQ(l.size(), 4u);
  ASSERT_TRUE(Complete(mapper, l[0]).ok());
  ASSERT_TRUE(Fail(mapper, l[1], "bad item", false).ok());
  EXPECT_EQ(TakeCancels(mapper).size(), 2u);
  EXPECT_TRUE(TakeLeases(reducer).empty());
  const v1::Workflow w = WorkflowOf((*r)->id());
  EXPECT_EQ(w.state(), v1::WORKFLOW_STATE_FAILED);
  EXPECT_EQ(w.succeeded(), 1);
  EXPECT_EQ(w.failed(), 1);
  EXPECT_EQ(w.canceled(), 3);  // two map tasks and the reducer
}

TEST_F(WorkflowTest, MapReduceContinueOnPartialTellsTheReducerWhichItemsFailed) {
  const AgentId mapper = StartAgent("map", 8);
  const AgentId reducer = StartAgent("reduce");
  absl::StatusOr<const v1::Workflow*> r = engine_->SubmitMapReduce(Job(3, v1::CONTINUE_ON_PARTIAL));
  ASSERT_TRUE(r.ok()) << r.status();
  Settle();
  std::vector<v1::TaskLease> l = TakeLeases(mapper);
  ASSERT_EQ(l.size(), 3u);
  ASSERT_TRUE(Complete(mapper, l[0], "ok-1").ok());
  ASSERT_TRUE(Fail(mapper, l[1], "unparseable", false).ok());
  ASSERT_TRUE(Complete(mapper, l[2], "ok-3").ok());
  const v1::TaskLease reduce = TakeOnlyLease(reducer);
  ASSERT_EQ(reduce.parents_size(), 3);
  EXPECT_EQ(reduce.parents(1).state(), v1::TASK_STATE_DEAD);
  EXPECT_TRUE(absl::StrContains(reduce.parents(1).error(), "unparseable"));
  EXPECT_EQ(reduce.parents(2).result(), "ok-3");
  ASSERT_TRUE(Complete(reducer, reduce).ok());
  // Some items failed: the job as a whole did not fully succeed.
  EXPECT_EQ(WorkflowOf((*r)->id()).state(), v1::WORKFLOW_STATE_FAILED);
  EXPECT_EQ(TaskOf(reduce.task_id()).state(), v1::TASK_STATE_SUCCEEDED);
}

TEST_F(WorkflowTest, MapReduceErrorsNameTheJobsFields) {
  v1::MapReduceSpec job = Job(0, v1::FAIL_FAST);
  EXPECT_TRUE(HasError(engine_->SubmitMapReduce(job).status(), absl::StatusCode::kInvalidArgument,
                       "mapreduce.items: no items given"));
  job = Job(2, v1::FAIL_FAST);
  job.mutable_mapper()->set_type("");
  EXPECT_TRUE(HasError(engine_->SubmitMapReduce(job).status(), absl::StatusCode::kInvalidArgument,
                       "mapreduce.mapper.type: required"));
  job = Job(2, v1::FAIL_FAST, -1);
  EXPECT_TRUE(HasError(engine_->SubmitMapReduce(job).status(), absl::StatusCode::kInvalidArgument,
                       "mapreduce.parallelism: must be >= 0"));
  job = Job(2, v1::FAIL_FAST);
  job.set_items(1, std::string(2000, 'x'));  // the fixture's payload limit is 1 KiB
  EXPECT_TRUE(HasError(engine_->SubmitMapReduce(job).status(), absl::StatusCode::kInvalidArgument,
                       "mapreduce.mapper.payload: 2000 bytes exceeds the limit of 1024 bytes "
                       "(item 1)"));
  job = Job(2, v1::FAIL_FAST);
  job.mutable_reducer()->set_max_attempts(-1);
  EXPECT_TRUE(HasError(engine_->SubmitMapReduce(job).status(), absl::StatusCode::kInvalidArgument,
                       "mapreduce.reducer.max_attempts"));
  Settle();
  EXPECT_EQ(engine_->task_count(), 0u);
}

// ---------------------------------------------------------------------------------------
// Critical path

TEST_F(WorkflowTest, WithinAPriorityTheTaskOnTheLongerCriticalPathGoesFirst) {
  const AgentId agent = StartAgent("build");
  Submit("build");  // holds the agent while the others queue
  const v1::TaskLease blocker = TakeOnlyLease(agent);
  const v1::Workflow short_wf = SubmitWorkflow(Workflow({Step("only", "build")}));
  const v1::Workflow long_wf = SubmitWorkflow(
      Workflow({Step("a", "build"), Step("b", "build", {"a"}), Step("c", "build", {"b"})}));
  const TaskId standalone = Submit("build");
  v1::TaskSpec urgent = Spec("build", v1::PRIORITY_HIGH);
  const TaskId high = Submit(urgent);
  ASSERT_TRUE(Complete(agent, blocker).ok());
  // Priority first; then, with default durations (1 s each), "a" has 3 s ahead of it,
  // "only" 1 s, and the standalone task none (it is not in a workflow).
  // Once "b" is done, "c" and "only" both have 1 s ahead: the tie goes to the older.
  EXPECT_EQ(RunAll(agent),
            (std::vector<TaskId>{high, IdOf(long_wf, "a"), IdOf(long_wf, "b"),
                                 IdOf(short_wf, "only"), IdOf(long_wf, "c"), standalone}));
}

TEST_F(WorkflowTest, WithoutCriticalPathFirstTheOrderIsFifo) {
  EngineOptions o = BaseOptions();
  o.critical_path_first = false;
  Reset(o);
  const AgentId agent = StartAgent("build");
  const v1::Workflow short_wf = SubmitWorkflow(Workflow({Step("only", "build")}));
  const v1::Workflow long_wf = SubmitWorkflow(
      Workflow({Step("a", "build"), Step("b", "build", {"a"}), Step("c", "build", {"b"})}));
  EXPECT_EQ(RunAll(agent), (std::vector<TaskId>{IdOf(short_wf, "only"), IdOf(long_wf, "a"),
                                                IdOf(long_wf, "b"), IdOf(long_wf, "c")}));
}

TEST_F(WorkflowTest, LearnsDurationsAndReportsTheCriticalPath) {
  const AgentId fast = StartAgent("fast");
  const AgentId slow = StartAgent("slow");
  // Teach it: "slow" tasks take 10 s, "fast" ones 1 s (per unit of complexity).
  Submit("slow");
  Submit("fast");
  const v1::TaskLease s1 = TakeOnlyLease(slow);
  const v1::TaskLease f1 = TakeOnlyLease(fast);
  Advance(absl::Seconds(1));
  ASSERT_TRUE(Complete(fast, f1).ok());
  Advance(absl::Seconds(9));
  ASSERT_TRUE(Complete(slow, s1).ok());
  EXPECT_EQ(engine_->ExpectedDurationMs(Spec("slow")), 10'000);
  v1::TaskSpec twice = Spec("fast");
  twice.set_estimated_complexity(2.5);
  EXPECT_EQ(engine_->ExpectedDurationMs(twice), 2'500);

  // start -> {slow-branch (10 s), f1 -> f2 -> f3 (3 s)} -> end
  const v1::Workflow w = SubmitWorkflow(Workflow({
      Step("start", "fast"),
      Step("slow-branch", "slow", {"start"}),
      Step("f1", "fast", {"start"}),
      Step("f2", "fast", {"f1"}),
      Step("f3", "fast", {"f2"}),
      Step("end", "fast", {"slow-branch", "f3"}),
  }));
  absl::StatusOr<v1::Workflow> d = engine_->DescribeWorkflow(w.id());
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->critical_path_ms(), 12'000);  // start 1 + slow 10 + end 1
  EXPECT_EQ(std::vector<uint64_t>(d->critical_path().begin(), d->critical_path().end()),
            (std::vector<uint64_t>{IdOf(w, "start"), IdOf(w, "slow-branch"), IdOf(w, "end")}));
  EXPECT_EQ(std::vector<uint64_t>(d->runnable().begin(), d->runnable().end()),
            (std::vector<uint64_t>{IdOf(w, "start")}));
  const v1::TaskLease start = TakeOnlyLease(fast);
  Advance(absl::Seconds(1));  // as long as the learned 1 s: the average stays
  ASSERT_TRUE(Complete(fast, start).ok());
  d = engine_->DescribeWorkflow(w.id());
  EXPECT_EQ(d->critical_path_ms(), 11'000);
  EXPECT_EQ(d->runnable_size(), 2) << "slow-branch and f1 can run in parallel now";
}

}  // namespace
}  // namespace drover::core
