// The engine loop and the store thread of drover serve.
//
// Network threads Post() commands; the engine thread runs them in arrival order against
// the one Engine, in batches; after each batch it turns the engine's Outbox into one
// store WriteBatch plus the callbacks that may only run once that batch is durable
// (replies, pushes to agents). The store thread commits batches in order and then runs
// their callbacks (group commit). No reply is ever ahead of the store, and pushes wait for
// the commit of their batch (a lease itself is not written: see Engine::Lease).
//
// Threading: Post() is thread-safe. Commands run on the engine thread and must not block.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "core/engine.h"
#include "store/store.h"
#include "util/histogram.h"

namespace drover::api {

// Handed to a command running on the engine thread.
class Batch {
 public:
  // Runs `fn` on the store thread after this batch commits (or with the failure).
  void AfterCommit(std::function<void(const absl::Status&)> fn) {
    callbacks_.push_back(std::move(fn));
  }

 private:
  friend class Runtime;
  std::vector<std::function<void(const absl::Status&)>> callbacks_;
};

// Delivers work items to agents' open work streams (implemented by the gRPC layer).
class PushSink {
 public:
  virtual ~PushSink() = default;
  // Called on the store thread after commit. Must not block.
  virtual void Push(core::AgentId agent, const drover::v1::WorkItem& item) = 0;
};

// Removal of old finished rows from the store, run by the store thread between commits.
// The store keeps SUCCEEDED, CANCELED and EXPIRED tasks for `retention` after they finish
// (DEAD tasks stay until purged). The sweep walks the table `rows_per_step` rows at a time,
// each step its own short transaction, one step every `step_pause`; a new sweep starts
// `sweep_interval` after the last one reached the end of the table.
struct PruneOptions {
  absl::Duration retention = absl::InfiniteDuration();  // infinite: never prune
  absl::Duration sweep_interval = absl::Minutes(1);
  absl::Duration step_pause = absl::Milliseconds(100);
  int64_t rows_per_step = 5'000;
};

struct RuntimeStats {
  int64_t batches = 0;
  int64_t commands = 0;
  int64_t commit_failures = 0;
  int64_t prune_steps = 0;
  int64_t prune_failures = 0;
  int64_t sweeps_completed = 0;
  Histogram commit_seconds{Histogram::LatencyBounds()};
  Histogram batch_commands{{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384}};
};

class Runtime {
 public:
  using Command = std::function<void(core::Engine&, Batch&)>;

  Runtime(core::Engine& engine, store::Store& store, size_t queue_limit);
  ~Runtime();

  void SetPushSink(PushSink* sink) { sink_ = sink; }
  // Before Start(). Without it, nothing is pruned.
  void SetPruning(const PruneOptions& options) { prune_ = options; }

  // Starts both threads. The engine must be recovered already.
  void Start();
  // Refuses new commands, runs those queued, commits, joins. Idempotent.
  void Stop();

  // Requests from clients, and control traffic from agents (heartbeats, completions,
  // failures): control may use twice the queue limit, so a flood of submissions cannot
  // starve heartbeats and expire every lease.
  enum Lane { kRequest, kControl };

  // Queues a command. False when the queue is full or the runtime is stopping (see
  // stopping()); the caller answers RESOURCE_EXHAUSTED or UNAVAILABLE then.
  bool Post(Command cmd, Lane lane = kRequest);
  bool stopping() const;

  // Answers every pending WaitTask with the task as it is (timed_out = true). Called at
  // shutdown so no call waits out its timeout.
  void ReleaseWaiters();

  // Registers a waiter for a task to become terminal; runs on the engine thread only
  // (from inside a command). `fn` gets the final task, or the task as it is at `deadline`.
  void AddWaiter(core::TaskId id, absl::Time deadline,
                 std::function<void(const drover::v1::Task&, bool timed_out)> fn);
  // The same for a workflow reaching an end.
  void AddWorkflowWaiter(core::WorkflowId id, absl::Time deadline,
                         std::function<void(const drover::v1::Workflow&, bool timed_out)> fn);

  // Reads under the runtime's own lock, from any thread.
  RuntimeStats stats() const;
  size_t queue_depth() const;

 private:
  // Runs on the engine thread when a wait ends (timed_out or not) and returns what runs
  // after the batch commits: the reply, holding a copy of the record as it was then.
  using WaitEnd = std::function<std::function<void()>(bool timed_out)>;
  struct Waiter {
    absl::Time deadline;
    WaitEnd end;
  };
  // Waiter keys: a task id, or a workflow id with this bit set.
  static constexpr uint64_t kWorkflowKey = uint64_t{1} << 63;
  struct PendingBatch {
    store::WriteBatch writes;
    std::vector<core::Outbox::Push> pushes;
    std::vector<std::string> events;
    std::vector<std::function<void(const absl::Status&)>> callbacks;
    size_t commands = 0;
  };

  void EngineLoop();
  void StoreLoop();
  void BuildBatch(Batch& batch, PendingBatch& pending);
  void AddWaitKey(uint64_t key, absl::Time deadline, WaitEnd end);
  void FireWaiters(const core::Outbox& out, PendingBatch& pending);
  void ExpireWaiters(PendingBatch& pending);
  // Runs one prune step if one is due; returns when the next one is due.
  absl::Time MaybePrune(absl::Time now);

  core::Engine& engine_;
  store::Store& store_;
  const size_t queue_limit_;
  PushSink* sink_ = nullptr;
  PruneOptions prune_;
  // Store thread only: where the sweep goes on.
  uint64_t prune_cursor_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Command> queue_;
  bool stopping_ = false;

  std::mutex store_mu_;
  std::condition_variable store_cv_;
  std::condition_variable store_space_cv_;
  std::deque<PendingBatch> store_queue_;
  bool store_stopping_ = false;

  // Engine thread only.
  std::multimap<uint64_t, Waiter> waiters_;
  std::multimap<absl::Time, uint64_t> waiter_deadlines_;

  mutable std::mutex stats_mu_;
  RuntimeStats stats_;

  std::thread engine_thread_;
  std::thread store_thread_;
  bool started_ = false;
  bool stopped_ = false;
};

}  // namespace drover::api
