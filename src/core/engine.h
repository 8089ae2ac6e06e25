// core: drover's deterministic engine.
//
// The engine owns every task and agent record in memory. It is driven only by commands
// (the public methods below) and by time (an injected Clock, read once per command). It
// never does I/O: each command returns its answer and leaves, in the Outbox, what the
// caller must do next — persist the tasks that changed, push work items to agents, wake
// waiters of tasks that became terminal.
//
// The caller (drover serve's engine loop, a unit test, the simulator) must:
//   1. call TakeOutbox() after each command or group of commands,
//   2. persist outbox.dirty (Snapshot(id) gives the record) and outbox.purged,
//   3. only after that commit: deliver outbox.pushes and answer the requests.
// Answers are thereby never ahead of the store.
//
// Threading: thread-compatible, owned by one thread. Nothing here blocks.
//
// Delivery to agents is at-least-once: a task whose agent dies or loses its lease is
// dispatched again. Each task's result is recorded exactly once: every lease carries a
// fencing token and a completion with a stale token is refused.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/node_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "drover/v1/drover.pb.h"
#include "util/clock.h"
#include "util/histogram.h"

namespace drover::core {

namespace v1 = ::drover::v1;

using TaskId = uint64_t;
using AgentId = uint64_t;
using WorkflowId = uint64_t;

// The key under which a RESOURCE_EXHAUSTED status carries its retry-after hint
// (milliseconds, decimal text). api maps it to gRPC metadata and HTTP Retry-After.
inline constexpr char kRetryAfterPayload[] = "drover.retry_after_ms";

struct RetryPolicy {
  absl::Duration base = absl::Seconds(1);
  absl::Duration cap = absl::Minutes(5);
  int max_attempts = 5;
};

// How an idle agent is chosen for a task of a type (scheduling.cc).
enum class Placement : uint8_t {
  kLeastLoaded,  // the lowest share of busy slots; ties to the lowest id
  kRoundRobin,   // the next agent after the last one chosen, by id
  kRandom,       // uniformly among the idle agents
  kCost,         // the lowest cost_factor x expected duration x (1 + utilisation)
};
std::string PlacementName(Placement p);
// "least_loaded", "round_robin", "random", "cost"; nullopt for anything else.
std::optional<Placement> ParsePlacement(const std::string& name);

struct TypeDefaults {
  RetryPolicy retry;
  absl::Duration execution_timeout = absl::Hours(1);
  Placement placement = Placement::kLeastLoaded;
};

// A named resource tasks declare in TaskSpec.resources.
struct ResourceSpec {
  enum class Kind : uint8_t {
    kSemaphore,    // `capacity` units, held by an attempt until it ends
    kTokenBucket,  // `capacity` tokens, refilled continuously over `refill_period`; an
                   // attempt takes its tokens when it starts and never gives them back
  };
  Kind kind = Kind::kSemaphore;
  int64_t capacity = 1;
  absl::Duration refill_period = absl::Minutes(1);
};
std::string ResourceKindName(ResourceSpec::Kind k);

// Which task state changes go to the event log (docs/events.md).
enum class TaskEvents {
  kOff,
  // Retries, dead letters, cancellations, expiries, tasks back in the queue from an agent
  // (a lost lease, a preemption, a restart) or from the dead-letter queue.
  kNotable,
  kAll,  // every change, leases and successes too
};

struct EngineOptions {
  TaskEvents task_events = TaskEvents::kNotable;
  int64_t capacity = 1'000'000;  // outstanding (non-terminal) tasks admitted at most
  double shed_fraction = 0.9;    // at this share of capacity only high and critical enter
  absl::Duration lease_ttl = absl::Seconds(30);
  TypeDefaults defaults;
  absl::flat_hash_map<std::string, TypeDefaults> per_type;
  size_t max_payload_bytes = 1 << 20;
  size_t max_result_bytes = 4 << 20;
  size_t max_checkpoint_bytes = 4 << 20;
  size_t max_batch = 10'000;
  absl::Duration min_retry_after = absl::Seconds(1);
  // Finished tasks (succeeded, canceled, expired) leave memory after this long, or sooner
  // when more than max_terminal_in_memory are kept. The store keeps them; Get reads them
  // back from there. Dead letters stay until reprocessed or purged.
  absl::Duration terminal_retention = absl::Hours(1);
  int64_t max_terminal_in_memory = 200'000;
  // Within a priority level, workflow tasks on a longer remaining critical path go first
  // (off: deadline, then FIFO, as for standalone tasks). dag_bench compares the two.
  bool critical_path_first = true;
  // Circuit breaker per agent: this many consecutive failed attempts open it (0: never);
  // it stays open (no tasks) for breaker_open_for, then lets one probe task through.
  int breaker_failures = 5;
  absl::Duration breaker_open_for = absl::Seconds(60);
  // A type's duration before any of its tasks succeeded, for critical paths.
  absl::Duration default_task_duration = absl::Seconds(1);
  // Named resources by name (TaskSpec.resources may only name these).
  absl::btree_map<std::string, ResourceSpec> resources;
  // Weighted fair queueing within a priority level: a tenant's share of dispatch is its
  // weight over the weights of the tenants with ready tasks. Unlisted tenants weigh 1.
  absl::flat_hash_map<std::string, double> tenant_weights;
  // Per-tenant quotas (docs/security.md#quotas): a tenant's submissions per second (a token
  // bucket) and its outstanding tasks. `tenant_quotas` by tenant; `default_quota` for every
  // tenant not listed (config key tenants."*"). Zero fields: no limit.
  struct TenantQuota {
    double submits_per_second = 0;
    double burst = 0;  // bucket size; 0: one second's worth (at least 1)
    int64_t max_outstanding = 0;
  };
  absl::flat_hash_map<std::string, TenantQuota> tenant_quotas;
  TenantQuota default_quota;
  // A critical task ready this long while no agent of its type is free preempts one low
  // or background task of that type (zero: never).
  absl::Duration preempt_after = absl::Seconds(30);
  // Write the cost sums to the store's meta ("costs") with every outbox that changed them
  // (off in the simulator, which has no store).
  bool persist_costs = true;
  uint32_t epoch = 1;  // start-up counter (24 bits used); fencing tokens differ across restarts
  uint64_t seed = 1;   // jitter randomness
};

// Counters and histograms of the engine, read by the metrics exporter.
// Per task type, counted since the engine started: what a pool's load history is made of
// (pool/controller.cc turns differences of these into per-minute rows).
struct TypeLoad {
  int64_t arrived = 0;      // tasks submitted
  int64_t dispatched = 0;   // attempts started
  int64_t ended = 0;        // attempts ended, however
  double run_seconds = 0;   // their run times, summed
  std::vector<float> runs;  // run times of attempts ended since TakeTypeLoad (<= 4096)
};

struct EngineProbe {
  int64_t submitted = 0;
  int64_t deduplicated = 0;
  int64_t rejected_full = 0;
  int64_t rejected_shed = 0;
  // Tasks refused by a tenant's quota, by tenant: the tenants listed in tenant_quotas by
  // name, every other one under "" (metrics stay per tenant only where the operator asked).
  struct QuotaRejections {
    int64_t rate = 0, outstanding = 0;
  };
  std::map<std::string, QuotaRejections> rejected_quota;
  int64_t rejected_invalid = 0;
  int64_t dispatched = 0;
  int64_t succeeded = 0;
  int64_t failed_attempts = 0;
  int64_t retries = 0;
  int64_t leases_expired = 0;
  int64_t timed_out = 0;
  int64_t dead_lettered = 0;
  int64_t canceled = 0;
  int64_t expired = 0;
  int64_t stale_reports = 0;
  int64_t reprocessed = 0;
  int64_t purged = 0;
  int64_t evicted = 0;            // finished tasks dropped from memory (still in the store)
  int64_t workflows_evicted = 0;  // finished workflows whose last task left memory
  int64_t workflows_submitted = 0;
  int64_t canceled_by_parent = 0;  // a parent over a depends_on edge did not succeed
  int64_t canceled_by_fail_fast = 0;
  int64_t breaker_opened = 0;
  int64_t breaker_half_opened = 0;
  int64_t breaker_closed = 0;
  int64_t failures_blamed_on_agent = 0;  // attempts not counted: the breaker was at fault
  int64_t messages_sent = 0;             // SendMessage calls accepted
  int64_t messages_pushed = 0;           // pushes to agents (one per agent reached)
  int64_t preempted = 0;                 // low/background attempts stopped for a critical task
  int64_t resource_waits = 0;            // a ready task held back for a resource
  int64_t budget_waits = 0;              // a ready task held back: no agent within its budget
  int64_t budget_exhausted = 0;          // dead-lettered: its cost budget was spent
  Histogram dispatch_latency{Histogram::LatencyBounds()};    // ready -> leased, seconds
  Histogram completion_latency{Histogram::LatencyBounds()};  // submitted -> succeeded
  Histogram run_time{Histogram::LatencyBounds()};            // leased -> reported
};

// What a command left for the caller to do (see the file comment).
struct Outbox {
  struct Push {
    AgentId agent = 0;
    v1::WorkItem item;
  };
  std::vector<TaskId> dirty;                              // tasks whose durable record changed
  std::vector<TaskId> purged;                             // tasks removed for good
  std::vector<std::pair<std::string, std::string>> meta;  // store meta to write
  std::vector<Push> pushes;                               // work items for agents' work streams
  std::vector<TaskId> terminal;                           // tasks that reached a terminal state
  std::vector<WorkflowId> dirty_workflows;                // workflows whose record changed
  std::vector<WorkflowId> terminal_workflows;             // workflows that reached an end
  std::vector<v1::Event> events;  // for the event log, in order (seq not yet given)
  bool empty() const {
    return dirty.empty() && purged.empty() && meta.empty() && pushes.empty() && terminal.empty() &&
           dirty_workflows.empty() && terminal_workflows.empty() && events.empty();
  }
};

struct ListFilter {
  v1::TaskState state = v1::TASK_STATE_UNSPECIFIED;
  std::string type;
  std::string tenant;
  v1::Priority priority = v1::PRIORITY_UNSPECIFIED;
  bool dead_only = false;
  // A label: "key=value" matches that value, "key" any value; "" matches every task.
  std::string label;
  std::string error_contains;  // a substring of last_error; "" matches every task
  uint64_t workflow_id = 0;    // the tasks of one workflow (0: any)
  bool newest_first = false;   // descending ids
  // Page token: list ids greater than this (less than it with newest_first; 0 starts at
  // the newest).
  TaskId after = 0;
  int limit = 100;
  // How many tasks one call looks through at most, so a filter that matches little does
  // not hold the engine thread over a large store.
  int max_scan = 100'000;
};
// A page of List: the tasks, and where the next call goes on (0: nothing more to see).
struct ListPage {
  std::vector<const v1::Task*> tasks;
  TaskId next = 0;
};

struct WorkflowFilter {
  v1::WorkflowState state = v1::WORKFLOW_STATE_UNSPECIFIED;
  std::string tenant;
  WorkflowId after = 0;  // page token
  int limit = 100;
};

enum class Breaker { kClosed, kOpen, kHalfOpen };
std::string BreakerName(Breaker b);

// Actual cost summed per tenant and type (cost units: cost_factor x run seconds).
struct CostSum {
  double cost = 0;
  double run_seconds = 0;
  int64_t attempts = 0;
};

// A named resource's state now (Engine::Resources).
struct ResourceUsage {
  std::string name;
  ResourceSpec spec;
  int64_t in_use = 0;    // semaphore
  double available = 0;  // semaphore: free units; bucket: tokens now
  int64_t waiting = 0;   // ready tasks held back for it
  int64_t acquired_total = 0;
};

// A tenant's share of dispatch (Engine::Tenants).
struct TenantUsage {
  std::string tenant;
  double weight = 1;
  int64_t ready = 0;
  int64_t dispatched_total = 0;
};

// Agents with this label (pool members, pool/controller.h) note how long each task they
// were given had waited: the pool's time to acquire an agent.
inline constexpr char kPoolAgentLabel[] = "drover.pool";
struct AcquireSample {
  float wait_s = 0;   // from ready to leased
  bool cold = false;  // the task was ready before the agent registered: it waited for a start
};

struct AgentInfo {
  AgentId id = 0;
  std::vector<std::string> types;
  int max_concurrency = 1;
  double cost_factor = 1;
  std::string name;
  std::map<std::string, std::string> labels;
  bool stream_open = false;
  bool leaving = false;        // being removed (deregistered or expired)
  bool draining = false;       // takes no new task (DrainAgent); its leases run to their end
  int64_t attempts_ended = 0;  // attempts it held that ended (any outcome)
  int64_t attempts_started = 0;
  int64_t max_uses = 0;   // no new task once attempts_started reaches it (0: no limit)
  absl::Time idle_since;  // when it last had no lease
  absl::Time registered;
  // kPoolAgentLabel agents: waits of the tasks given since Engine::TakeAcquired (at most
  // kMaxAcquireSamples; later ones are not kept).
  bool record_acquired = false;
  std::vector<AcquireSample> acquired;
  Breaker breaker = Breaker::kClosed;
  int consecutive_failures = 0;
  std::deque<uint64_t> failed_tasks;  // the tasks of the current run of failures (last N)
  absl::Time breaker_until;           // kOpen: when it lets a probe through
  absl::Time last_seen;
  absl::flat_hash_set<TaskId> leased;
};

bool IsTerminal(v1::TaskState s);
// "ready", "leased", ...: a state's short name for metrics, CLI and errors.
std::string StateName(v1::TaskState s);
std::string PriorityName(v1::Priority p);
// "running", "succeeded", "failed", "canceled".
std::string WorkflowStateName(v1::WorkflowState s);

class Engine {
 public:
  Engine(EngineOptions options, const Clock& clock);
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // --- recovery (before any command) -------------------------------------------------
  // Adds a task read from the store. `max_task_id` (from store meta) keeps ids unique
  // after purges.
  void Restore(v1::Task task);
  // Ends recovery: tasks that were leased when the server stopped return to the queue
  // (their attempt closes as "interrupted" and is not counted), timers are re-armed.
  void FinishRecovery(uint64_t max_task_id);

  // --- tasks ----------------------------------------------------------------------------
  struct SubmitResult {
    TaskId id = 0;
    bool deduplicated = false;
  };
  // All or none: validates every spec (errors name the field, e.g. "tasks[2].payload"),
  // then applies admission control. `field_prefix` is "task" for a single submission.
  absl::StatusOr<std::vector<SubmitResult>> Submit(const std::vector<v1::TaskSpec>& specs,
                                                   const std::string& field_prefix);
  absl::StatusOr<const v1::Task*> Get(TaskId id) const;
  ListPage List(const ListFilter& filter) const;
  absl::StatusOr<const v1::Task*> Cancel(TaskId id, const std::string& reason);
  // Dead letters back to READY with a fresh attempt series. Unknown or non-dead ids are
  // an error naming them (nothing changes then).
  absl::StatusOr<std::vector<TaskId>> Reprocess(const std::vector<TaskId>& ids, bool all,
                                                const std::string& type);
  absl::StatusOr<int64_t> Purge(const std::vector<TaskId>& ids, bool all, const std::string& type);

  // --- workflows (workflow.cc) -------------------------------------------------------------
  // All or none: validates every step (errors name the step, e.g. "workflow.steps[2]
  // (\"fetch\").depends_on"), refuses cycles naming the steps on one, then creates the
  // tasks in dependency order with their edges resolved to task ids.
  absl::StatusOr<const v1::Workflow*> SubmitWorkflow(const v1::WorkflowSpec& spec);
  // A map-reduce job as a workflow: "map-1" ... "map-N" (one per item) and "reduce".
  absl::StatusOr<const v1::Workflow*> SubmitMapReduce(const v1::MapReduceSpec& spec);
  absl::StatusOr<const v1::Workflow*> GetWorkflow(WorkflowId id) const;
  std::vector<const v1::Workflow*> ListWorkflows(const WorkflowFilter& filter) const;
  // Cancels every task of the workflow that has not finished; the workflow ends CANCELED.
  absl::StatusOr<const v1::Workflow*> CancelWorkflow(WorkflowId id, const std::string& reason);
  const v1::Workflow* WorkflowSnapshot(WorkflowId id) const;
  // The record with its critical path and runnable tasks filled in (computed now).
  // Refreshes the workflow's remaining critical paths from the durations learned so far.
  absl::StatusOr<v1::Workflow> DescribeWorkflow(WorkflowId id);
  // The learned duration of a task: its type's moving average of successful run times
  // (default_task_duration before any), times its estimated_complexity when > 0.
  int64_t ExpectedDurationMs(const v1::TaskSpec& spec) const;
  // Recovery: a workflow record read from the store (before FinishRecovery).
  void RestoreWorkflow(v1::Workflow workflow);
  // Recovery: parents of unfinished tasks that are not in memory (finished long ago and
  // skipped by recovery); the caller reads them from the store and Restores them.
  std::vector<TaskId> MissingParents() const;

  // --- agents ---------------------------------------------------------------------------
  absl::StatusOr<AgentId> RegisterAgent(const v1::RegisterAgentRequest& req);
  absl::Status Heartbeat(AgentId agent);
  // The agent's work stream opened / closed. While open, free slots get work pushed.
  absl::Status OpenStream(AgentId agent);
  void CloseStream(AgentId agent);
  // `json`: the result (or checkpoint) is JSON text; it is checked, and kept marked.
  absl::Status Complete(AgentId agent, TaskId task, uint64_t token, const std::string& result,
                        bool json = false);
  absl::Status Fail(AgentId agent, TaskId task, uint64_t token, const std::string& error,
                    bool retryable);
  absl::Status Checkpoint(AgentId agent, TaskId task, uint64_t token, const std::string& data,
                          bool json = false);
  absl::StatusOr<absl::Time> ExtendLease(AgentId agent, TaskId task, uint64_t token);
  // A lease push never reached the agent (no open stream, or the write failed): the task
  // returns to the queue at once, uncounted. Ignored when the lease has ended meanwhile.
  void ReturnUndelivered(AgentId agent, TaskId task, uint64_t token);
  // The agent leaves; its leased tasks return to the queue at once, uncounted.
  absl::Status Deregister(AgentId agent);
  // The agent takes no new task; what it holds runs to its end (pools drain an agent
  // before stopping it).
  absl::Status DrainAgent(AgentId agent);
  // A pool agent's acquire samples since the last call (empty for others).
  std::vector<AcquireSample> TakeAcquired(AgentId agent);
  // The type's counters (all zero for a type never seen); takes its run-time samples.
  TypeLoad TakeTypeLoad(const std::string& type);
  static constexpr size_t kMaxAcquireSamples = 4096;
  // Pushes a message to the targeted agents with an open work stream (best-effort; not
  // stored). Returns them; an error names the field (no target, two targets, sizes).
  absl::StatusOr<v1::SendMessageResponse> SendMessage(const v1::SendMessageRequest& req);

  // --- usage (scheduling.cc) ----------------------------------------------------------------
  std::vector<ResourceUsage> Resources() const;
  std::vector<TenantUsage> Tenants() const;
  // Actual cost per (tenant, type), since the store began (restored by RestoreCosts).
  const absl::btree_map<std::pair<std::string, std::string>, CostSum>& costs() const {
    return costs_;
  }
  // Recovery: the sums from store meta "costs" (before FinishRecovery).
  void RestoreCosts(const v1::CostTotals& totals);
  v1::CostTotals CostTotalsRecord() const;

  // --- time -----------------------------------------------------------------------------
  // Fires every timer due at clock.Now(): lease expiry, retry backoff, deadlines,
  // execution timeouts, agent expiry.
  void Tick();
  // When the next timer is due (nullopt: none armed).
  std::optional<absl::Time> NextWakeup() const;

  // --- reading --------------------------------------------------------------------------
  Outbox TakeOutbox();
  // A store meta value written with the next batch (pools defined through the API).
  void SetMeta(const std::string& key, const std::string& value) {
    outbox_.meta.emplace_back(key, value);
  }
  const v1::Task* Snapshot(TaskId id) const;
  const EngineProbe& probe() const { return probe_; }
  int64_t CountInState(v1::TaskState s) const { return state_counts_[s]; }
  int64_t outstanding() const;
  // Non-terminal tasks of `tenant`.
  int64_t outstanding(const std::string& tenant) const;
  const EngineOptions& options() const { return options_; }
  // READY tasks of `type` that could go to an agent now (not held back for a named
  // resource or an agent within their budget): what an autoscaler should count.
  int64_t RunnableReady(const std::string& type) const {
    auto it = queues_.find(type);
    return it == queues_.end() ? 0 : it->second.ready;
  }
  // READY tasks of every type that could go to an agent now; CountInState(READY) minus
  // this is what is held back (resources, budgets).
  int64_t RunnableReadyAll() const {
    int64_t n = 0;
    for (const auto& [type, q] : queues_) n += q.ready;
    return n;
  }
  // Ready depth per (type, priority), held-back tasks included.
  const std::map<std::pair<std::string, int>, int64_t>& queue_depths() const {
    return queue_depths_;
  }
  // Per type with ready tasks: how long its oldest ready task has waited (the alert on work
  // waiting: docs/alerts.md). Trims the bookkeeping as it goes, so not const.
  std::map<std::string, absl::Duration> OldestReadyAges();
  const absl::btree_map<AgentId, AgentInfo>& agents() const { return agents_; }
  size_t task_count() const { return tasks_.size(); }
  size_t workflow_count() const { return workflows_.size(); }
  // Workflows in memory by state (index: v1::WorkflowState).
  std::array<int64_t, 5> WorkflowsByState() const;

  // Checks internal consistency (indexes agree with records). For tests and the
  // simulation; returns the first inconsistency found.
  absl::Status CheckInvariants() const;

 private:
  // Dispatch order within a type: priority, then the longer remaining critical path
  // (workflow tasks), then the earlier deadline, then the task id (submission order; a task
  // queued again keeps its place). 24 bytes, so a queued task's set node and its Entry fit
  // jemalloc's 64- and 256-byte classes (the 1M-queued memory goal).
  struct QueueKey {
    // priority in the top 6 bits; below, kMaxPath - critical path in ms (so a longer path
    // sorts first; paths are capped at ~9,000 years).
    uint64_t rank;
    int64_t deadline_ms;  // INT64_MAX when none
    TaskId id;
    static constexpr int kPriorityShift = 58;
    static constexpr uint64_t kMaxPath = (uint64_t{1} << kPriorityShift) - 1;
    static uint64_t Rank(int priority, int64_t critical_path_ms) {
      const uint64_t path = static_cast<uint64_t>(
          std::clamp<int64_t>(critical_path_ms, 0, static_cast<int64_t>(kMaxPath)));
      return (static_cast<uint64_t>(priority) << kPriorityShift) | (kMaxPath - path);
    }
    int priority() const { return static_cast<int>(rank >> kPriorityShift); }
    auto operator<=>(const QueueKey&) const = default;
  };
  struct Entry {
    v1::Task task;
    uint32_t gen = 0;  // bumps on every state change; stale timers carry an older one
    // READY but out of its queue (scheduling.cc): waiting for a named resource, or for an
    // agent within its cost budget.
    enum class Parked : uint8_t { kNo, kResource, kBudget };
    Parked parked = Parked::kNo;
    QueueKey key{};  // valid while READY (task.updated_unix_ms says since when)
    // Dependencies (workflow.cc), allocated only for a task with parents, children or a
    // workflow, so a standalone task pays one pointer (the 1M-queued memory goal).
    struct Links {
      std::vector<TaskId> children;  // tasks that list this one as a parent
      int unmet_parents = 0;         // WAITING: parents that have not ended as needed
      int live_children = 0;         // children that may still run need this task's
                                     // result, so it stays in memory until they end
      bool evict_deferred = false;
      bool held = false;             // WAITING only for its workflow's max_parallel
      TaskId missing_parent = 0;     // recovery: a parent no longer in the store
      int64_t critical_path_ms = 0;  // workflow tasks: expected remaining path from here
    };
    std::unique_ptr<Links> links;
    Links& L() {
      if (!links) links = std::make_unique<Links>();
      return *links;
    }
    const Links& Lc() const {
      static const Links kNone;
      return links ? *links : kNone;
    }
  };
  struct WorkflowEntry {
    v1::Workflow record;
    bool cancel_requested = false;
    bool failed_fast = false;  // fail_fast has canceled the rest
    int active = 0;            // its tasks READY, LEASED or RETRY_WAIT
    std::deque<TaskId> held;   // ready to go but over max_parallel, in release order
    // Its tasks still in memory; counted when the first one leaves (-1: not yet). A
    // finished workflow leaves memory with its last task (Evict); the store keeps it.
    int64_t resident = -1;
  };
  // Ready tasks of one tenant at one priority of one type, in key order.
  struct TenantQueue {
    std::string tenant;
    uint32_t ordinal = 0;  // creation order: a deterministic tie-break between tenants
    double weight = 1;
    double vtime = 0;  // virtual start time of its next dispatch
    int64_t dispatched = 0;
    std::set<QueueKey> ready;
  };
  // One priority level of a type: tenants share it by weight (start-time fair queueing
  // over dispatches). `order` holds the tenants with ready tasks by (vtime, ordinal).
  struct Level {
    absl::node_hash_map<std::string, TenantQueue> tenants;
    std::set<std::tuple<double, uint32_t, TenantQueue*>> order;
    double vclock = 0;  // vtime of the last dispatch
  };
  struct TypeQueue {
    std::array<Level, 5> levels;  // by priority, critical first
    int64_t ready = 0;
    std::set<AgentId> idle_agents;  // stream open, a free slot
    AgentId last_placed = 0;        // round robin
    // READY tasks no idle agent could take within their cost budget, by the highest
    // cost_factor they could afford (descending), released when such an agent is free.
    std::set<std::pair<double, QueueKey>> over_budget;
    // READY tasks (id, gen) in the order they became ready: the front is the oldest one
    // once stale entries (dispatched, or READY again since: another gen) are popped.
    // Compacted when it doubled since the last compaction (amortized O(1) per entry).
    std::deque<std::pair<TaskId, uint32_t>> ready_order;
    size_t compact_at = 1024;
  };
  // Pops `q`'s stale ready_order front; compacts it when mostly stale.
  void TrimReadyOrder(TypeQueue& q);
  struct ResourceState {
    ResourceSpec spec;
    uint64_t index = 0;  // its position in resources_ (the refill timer's id)
    int64_t in_use = 0;  // semaphore
    double tokens = 0;   // token bucket, as of refilled_at
    absl::Time refilled_at;
    std::set<QueueKey> waiters;  // READY tasks held back for it, in dispatch order
    absl::Time wakeup;           // token bucket: when the armed refill timer fires
    int64_t acquired_total = 0;
  };
  enum class TimerKind : uint8_t {
    kLease,
    kRetry,
    kDeadline,
    kExecTimeout,
    kAgent,
    kBreaker,
    kPreempt,
    kRefill
  };
  struct Timer {
    absl::Time at;
    uint64_t seq;
    uint64_t id;  // task or agent id
    uint32_t gen;
    TimerKind kind;
    bool operator>(const Timer& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };

  absl::Status ValidateSpec(const v1::TaskSpec& spec, const std::string& field) const;
  absl::Status Admit(const std::vector<const v1::TaskSpec*>& fresh,
                     const std::string* tenant = nullptr);
  absl::Status AdmitOrRefuse(const std::vector<const v1::TaskSpec*>& fresh,
                             const std::string* tenant);
  TypeDefaults DefaultsFor(const std::string& type) const;
  // The dead letters named by `ids`, or all of them (of `type`); an error names the first
  // id that is unknown or not dead-lettered.
  absl::StatusOr<std::vector<TaskId>> SelectDeadLetters(const std::vector<TaskId>& ids, bool all,
                                                        const std::string& type) const;
  Entry* Find(TaskId id);
  const Entry* Find(TaskId id) const;
  absl::StatusOr<Entry*> FindLeased(AgentId agent, TaskId id, uint64_t token, const char* what);

  // Moves `e` to `s`; `persist` marks its record for the next store batch.
  void SetState(Entry& e, v1::TaskState s, bool persist = true);
  void MakeReady(Entry& e);
  // Puts a READY task into its type's queue and dispatches if an agent is free.
  void Enqueue(Entry& e);
  // Out of the queue (or the resource or budget wait it is parked in). `dispatched`: it
  // is being leased, which charges its tenant's fair share.
  void RemoveFromReady(Entry& e, bool dispatched = false);
  void Lease(Entry& e, AgentInfo& agent);
  void CloseAttempt(Entry& e, const std::string& outcome, const std::string& error, bool counted);
  void ReleaseFromAgent(Entry& e);
  // Tells the holder of `task`'s lease to stop, if its work stream is open.
  void PushCancel(const v1::Task& task, const std::string& reason);
  // An attempt ended without success.
  void FailAttempt(Entry& e, const std::string& outcome, const std::string& error, bool retryable,
                   bool counted);
  void Finish(Entry& e, v1::TaskState terminal, const std::string& reason);
  // A new task's first state: WAITING while a parent has not ended as its edge needs,
  // else READY (or EXPIRED past its deadline). Links it into its parents' children.
  void Start(Entry& e);
  // Adds `e` to its parents' children and counts its unmet parents (and missing ones).
  void LinkParents(Entry& e);
  // A WAITING task judged again from its parents: canceled if a parent over a depends_on
  // edge ended without success (or is missing), READY once nothing is unmet.
  void Reevaluate(Entry& e);
  // A task whose parents allow it to run: READY, unless its workflow already has
  // max_parallel tasks active; then it is held (WAITING) until one ends.
  void Release(Entry& e);
  // Lets held tasks of the workflow go while it is under its max_parallel.
  void ReleaseHeld(WorkflowEntry& we);
  // fail_fast: `failed` ended badly; cancels the rest of its workflow.
  void FailFast(WorkflowEntry& we, const Entry& failed);
  // Creates the record of a validated spec (not yet started).
  Entry& CreateTask(const v1::TaskSpec& spec, int64_t now_ms);
  // Checks a spec's depends_on / depends_on_finished against the tasks in memory.
  absl::Status ValidateParents(const v1::TaskSpec& spec, const std::string& field,
                               const std::string& tenant) const;
  // What a task that just ended means for its children, parents and workflow. Queued and
  // drained iteratively, so a cascade through a deep DAG does not recurse.
  void OnTaskEnded(Entry& e);
  void PropagateEnd(Entry& e);
  // A task no longer needs its parents' results (it ended, or was purged while dead).
  void ReleaseParents(Entry& e);
  // A dead task is reprocessed: children over depends_on_finished edges wait for it again.
  void ReopenForChildren(Entry& e);
  // A task of a workflow changed between done and not done; updates progress and state.
  void CountInWorkflow(const v1::Task& t, v1::TaskState from, v1::TaskState to);
  void MarkWorkflowDirty(WorkflowId id);
  void FillParents(const v1::Task& task, v1::TaskLease* lease) const;
  absl::Status CheckDependencyInvariants() const;
  // Sets critical_path_ms of every unfinished task of workflow `we` from current durations;
  // with `path` and `runnable`, also fills those (DescribeWorkflow).
  void ComputeCriticalPaths(const WorkflowEntry& we, v1::Workflow* out);
  void RemoveAgent(AgentInfo& agent, const std::string& outcome, bool counted);
  // Drops finished tasks past their retention from memory.
  void Evict();
  // A task left memory (evicted or purged): its workflow may follow once finished.
  void TaskLeftMemory(const v1::Task& t);
  // Finished workflows with no task left in memory, erased once persisted.
  void EvictWorkflows();
  std::vector<WorkflowId> workflow_candidates_;

  void RefreshIdle(AgentInfo& agent);
  // Whether the agent's breaker lets it take another task now.
  static bool BreakerAllows(const AgentInfo& agent);
  // An attempt on `agent` failed (counted so far); returns true when the failure is the
  // agent's: its breaker is open or half-open, or this failure opened it after a run of
  // failures on different tasks. Then the attempt is not counted against the task.
  bool RecordAgentFailure(AgentInfo& agent, TaskId task);
  void RecordAgentSuccess(AgentInfo& agent);
  void SetBreaker(AgentInfo& agent, Breaker to, const std::string& why);

  // The event log (events.cc). Each adds one event to the outbox, stamped now.
  v1::Event& Emit(const char* type);
  // A task's change from `from` to its current state, if options_.task_events logs it.
  void TaskEvent(const Entry& e, v1::TaskState from);
  void AgentEvent(const AgentInfo& agent, const char* type, const std::string& message);
  void WorkflowEvent(const v1::Workflow& w, v1::WorkflowState from);
  // Refused submissions are counted by (reason, tenant) and logged once a second each.
  void NoteRefusal(const absl::Status& st, const std::string& tenant, size_t n);
  void FlushRefusals(bool force);
  struct RefusalCount {
    int64_t calls = 0;
    int64_t tasks = 0;
    std::string last_message;
  };
  static constexpr absl::Duration kRefusalWindow = absl::Seconds(1);
  absl::btree_map<std::pair<std::string, std::string>, RefusalCount> refusals_;
  absl::Time refusals_since_;
  // --- queues and placement (scheduling.cc) ---
  void DispatchType(const std::string& type);
  void FillAgent(AgentInfo& agent);
  // An idle agent for `e` under its type's placement policy and within its remaining
  // cost budget; nullptr when none.
  AgentInfo* PickAgent(TypeQueue& q, const Entry& e);
  bool Affordable(const Entry& e, const AgentInfo& agent) const;
  // The best ready task of a type: its most urgent level's tenant next in fair order.
  const QueueKey* Head(const TypeQueue& q) const;
  void InsertReady(TypeQueue& q, Entry& e);
  // Out of its tenant's queue (false: it was not in it); `dispatched` charges the
  // tenant's virtual time.
  bool EraseReady(TypeQueue& q, Entry& e, bool dispatched);
  Level& LevelOf(TypeQueue& q, const Entry& e) { return q.levels[e.key.priority() - 1]; }
  // Whether every resource `e` needs is available now; if not, parks it on the first that
  // is not (out of its queue) and returns false.
  bool ResourcesReadyOrPark(TypeQueue& q, Entry& e);
  void AcquireResources(const Entry& e);
  void ReleaseResources(const Entry& e);
  // Token bucket: a wake-up for when `missing` more tokens will have refilled.
  void ArmRefill(ResourceState& r, double missing);
  // Tasks parked on `name` go back to their queues while what they need is there.
  void WakeResourceWaiters(const std::string& name);
  void Refill(ResourceState& r);
  // A token bucket's tokens at `t` (no earlier than its last refill), without changing it.
  static double TokensAt(const ResourceState& r, absl::Time t);
  // `e` left its queue without taking its resources: waiters of each (but `except`) get a
  // chance at them.
  void WakeOthers(const Entry& e, const std::string& except);
  // READY and parked (resource or budget): back into its queue (no dispatch).
  void Unpark(Entry& e);
  void ParkOverBudget(TypeQueue& q, Entry& e);
  // The type's expected duration changed: tasks over budget are judged again.
  void RecheckOverBudget(const std::string& type);
  // Tasks over budget for agents dearer than `agent` go back to their queues.
  // Returns whether any was.
  bool WakeOverBudget(const AgentInfo& agent);
  // The attempt's cost (cost_factor x run time) into the task, its workflow and the sums.
  void ChargeAttempt(Entry& e, const v1::Attempt& a);
  // A critical task has waited preempt_after: stop one low/background attempt of its type.
  void Preempt(Entry& critical);
  absl::Status ValidateResources(const v1::TaskSpec& spec, const std::string& field) const;

  void Arm(TimerKind kind, uint64_t id, uint32_t gen, absl::Time at);
  void FireTimer(const Timer& t);
  absl::Duration Backoff(const Entry& e);
  void MarkDirty(const Entry& e);
  // Drops `t`'s idempotency key if it still names `t`.
  void ForgetIdempotencyKey(const v1::Task& t);
  // Writes the highest id given so far to the store's meta (see Finish and Purge).
  void PersistMaxTaskId();
  absl::Time now() const { return clock_.Now(); }
  int64_t now_ms() const { return ToUnixMs(clock_.Now()); }

  EngineOptions options_;
  const Clock& clock_;
  std::mt19937_64 rng_;
  absl::btree_map<TaskId, std::unique_ptr<Entry>> tasks_;
  absl::node_hash_map<std::string, TypeQueue> queues_;  // node: references stay valid
  absl::btree_map<AgentId, AgentInfo> agents_;
  absl::btree_map<WorkflowId, WorkflowEntry> workflows_;
  absl::flat_hash_map<std::string, double> duration_ms_;  // type -> moving average
  WorkflowId next_workflow_id_ = 1;
  absl::flat_hash_set<WorkflowId> dirty_workflow_set_;
  std::deque<TaskId> ended_;  // tasks whose end is not yet propagated (OnTaskEnded)
  bool propagating_ = false;
  absl::flat_hash_map<std::string, TaskId> idempotency_;  // tenant '\0' key -> id
  std::set<TaskId> dead_;
  std::deque<std::pair<absl::Time, TaskId>> finished_;  // eviction order
  // Quotas: non-terminal tasks per tenant, and each limited tenant's submission bucket.
  absl::flat_hash_map<std::string, int64_t> tenant_outstanding_;
  struct Bucket {
    double tokens = 0;
    absl::Time at;
    bool started = false;
  };
  absl::flat_hash_map<std::string, Bucket> submit_buckets_;
  // Refuses `fresh` when a tenant's quota would be exceeded (nothing taken then); else
  // takes the tokens.
  // `tenant`, when given, is every task's (a workflow's); else each spec's own.
  absl::Status AdmitTenants(const std::vector<const v1::TaskSpec*>& fresh,
                            const std::string* tenant);
  void CountOutstanding(const v1::Task& t, int64_t delta);
  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_;
  std::map<std::pair<std::string, int>, int64_t> queue_depths_;
  std::array<int64_t, 9> state_counts_{};
  absl::btree_map<std::string, ResourceState> resources_;
  absl::btree_map<std::pair<std::string, std::string>, CostSum> costs_;
  bool costs_dirty_ = false;
  uint32_t next_tenant_ordinal_ = 0;
  absl::flat_hash_map<std::string, int64_t> dispatched_by_tenant_;
  TaskId next_task_id_ = 1;
  uint64_t persisted_max_task_id_ = 0;  // the store's max_task_id as last written
  AgentId next_agent_id_;
  uint64_t next_timer_seq_ = 1;
  uint64_t token_counter_ = 0;
  uint64_t next_message_id_ = 1;
  Outbox outbox_;
  absl::flat_hash_set<TaskId> dirty_set_;
  EngineProbe probe_;
  absl::flat_hash_map<std::string, TypeLoad> type_load_;
};

}  // namespace drover::core
