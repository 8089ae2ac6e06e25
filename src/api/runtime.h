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

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/engine.h"
#include "obs/events.h"
#include "obs/otlp.h"
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
// `sweep_interval` after the last one reached the end of the table. Each sweep starts by
// deleting load history rows whose minute began more than `load_history_retention` ago
// (one indexed DELETE).
struct PruneOptions {
  absl::Duration retention = absl::InfiniteDuration();  // infinite: never prune
  absl::Duration load_history_retention = absl::InfiniteDuration();
  absl::Duration audit_retention = absl::InfiniteDuration();
  absl::Duration event_retention = absl::InfiniteDuration();
  absl::Duration sweep_interval = absl::Minutes(1);
  absl::Duration step_pause = absl::Milliseconds(100);
  int64_t rows_per_step = 5'000;
};

struct RuntimeStats {
  int64_t batches = 0;
  int64_t commands = 0;
  int64_t commit_failures = 0;
  int64_t commit_retries = 0;  // commits sent again after the store was unavailable
  int64_t prune_steps = 0;
  int64_t prune_failures = 0;
  int64_t sweeps_completed = 0;
  int64_t load_prune_failures = 0;
  int64_t events_written = 0;
  int64_t events_dropped = 0;  // AppendEvent refused: too many waited for the store
  Histogram commit_seconds{Histogram::LatencyBounds()};
  Histogram batch_commands{{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384}};
};

class Runtime {
 public:
  using Command = std::function<void(core::Engine&, Batch&)>;

  Runtime(core::Engine& engine, store::Store& store, size_t queue_limit);
  ~Runtime();

  void SetPushSink(PushSink* sink) { sink_ = sink; }
  // Before Start(): where committed events are published (followers, long polls).
  void SetEventHub(obs::EventHub* hub) { hub_ = hub; }
  // Before Start(): finished tasks' spans go to `exporter` when their trace is sampled
  // (`sampling`: obs::Sampled), offered once their batch has committed.
  void SetTracer(obs::OtlpExporter* exporter, double sampling) {
    tracer_ = exporter;
    sampling_ = sampling;
  }
  // Before Start(). Without it, nothing is pruned.
  void SetPruning(const PruneOptions& options) { prune_ = options; }
  // The first minute (Unix time / 60) whose load row the retention keeps at `now`: the
  // sweep deletes rows of earlier minutes. 0 when load history is kept forever. Any thread
  // (the options are fixed once started).
  int64_t FirstKeptLoadMinute(absl::Time now) const;

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
  // OK, or Unavailable naming the store's error while commits cannot reach it (PostgreSQL
  // down): requests are refused then and /readyz fails. Any thread.
  absl::Status store_status() const;

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

  // Load history (docs/history.md): per pool and minute, what the pool saw.
  //
  // Queues rows for the store thread's next commit, in the same transaction as whatever
  // the engine wrote meanwhile; a later row of the same (pool, minute) replaces an earlier
  // one. Thread-safe; the caller only takes a lock, never waits for the store. `done`, if
  // given, runs on the store thread once the rows are committed (it must not block).
  // Refused, with nothing queued and `done` not run: InvalidArgument for a bad row (the
  // error names the pool, minute and field: store::CheckLoadMinute), ResourceExhausted when
  // kMaxPendingLoadRows rows already wait, Unavailable once the runtime is stopping.
  static constexpr size_t kMaxPendingLoadRows = 1'000'000;
  absl::Status AppendLoadHistory(std::vector<store::LoadMinute> rows,
                                 std::function<void(const absl::Status&)> done = nullptr);

  // Audit records and meta rows (tokens) from any thread, on the same terms as
  // AppendLoadHistory: queued for the next commit, in the same transaction as whatever the
  // engine wrote meanwhile. An audit record queued before a command is posted commits no
  // later than the command. ResourceExhausted when kMaxPendingAuditRows already wait (the
  // caller refuses the call: nothing is done unaudited), Unavailable once stopping.
  static constexpr size_t kMaxPendingAuditRows = 200'000;
  absl::Status AppendAudit(store::AuditRow row);
  absl::Status AppendMeta(std::string key, std::string value,
                          std::function<void(const absl::Status&)> done = nullptr);

  // An event of the event log (docs/events.md) from outside the engine (pools, the
  // configuration), from any thread: queued for the next commit, given its seq there and
  // published once durable. unix_ms 0 is stamped now. Never blocks: when
  // kMaxPendingEvents already wait the event is dropped and counted (events_dropped).
  static constexpr size_t kMaxPendingEvents = 100'000;
  void AppendEvent(drover::v1::Event event);

  // Reads `pool`'s rows with from_minute <= minute < to_minute, in minute order, at most
  // `max_rows` (0: all), on the store thread once everything queued before this call is
  // committed (rows appended earlier are seen). `done` runs there with the rows (it must
  // not block); the read holds up commits meanwhile, about a microsecond per row, so read a
  // long history rarely. False, and `done` is not run, when the command cannot be queued
  // (as Post).
  using LoadRows = absl::StatusOr<std::vector<store::LoadMinute>>;
  bool ReadLoadHistory(std::string pool, int64_t from_minute, int64_t to_minute, int64_t max_rows,
                       std::function<void(LoadRows)> done, Lane lane = kRequest);

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
    std::vector<drover::v1::Event> events;
    std::vector<obs::Span> spans;
    std::vector<std::function<void(const absl::Status&)>> callbacks;
    size_t commands = 0;
  };

  void EngineLoop();
  void StoreLoop();
  // Store thread: commits `batch`, retrying while the store is Unavailable.
  absl::Status CommitRetrying(const store::WriteBatch& batch);
  // How long shutdown keeps retrying a commit against an unavailable store before giving up
  // (the batch's requests are then answered UNAVAILABLE and never acknowledged).
  static constexpr absl::Duration kStopRetryLimit = absl::Seconds(30);
  void BuildBatch(Batch& batch, PendingBatch& pending);
  void AddWaitKey(uint64_t key, absl::Time deadline, WaitEnd end);
  void FireWaiters(const core::Outbox& out, PendingBatch& pending);
  void ExpireWaiters(PendingBatch& pending);
  // Runs one prune step if one is due; returns when the next one is due.
  absl::Time MaybePrune(absl::Time now);
  void PruneLoadHistory(absl::Time now);

  core::Engine& engine_;
  store::Store& store_;
  const size_t queue_limit_;
  PushSink* sink_ = nullptr;
  obs::EventHub* hub_ = nullptr;
  obs::OtlpExporter* tracer_ = nullptr;
  double sampling_ = 1;
  PruneOptions prune_;
  // Store thread only (set in Start): the seq the next event gets; 0 while the event log
  // could not be read (then no event is written).
  int64_t next_event_seq_ = 0;
  // Store thread: gives `events` their seqs and adds them to `batch`.
  void AddEvents(std::vector<drover::v1::Event>& events, store::WriteBatch& batch);
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
  // Load rows from any thread, taken by the store thread with store_queue_.
  std::vector<store::LoadMinute> pending_load_;
  std::vector<store::AuditRow> pending_audit_;
  std::vector<drover::v1::Event> pending_events_;
  std::vector<std::pair<std::string, std::string>> pending_meta_;
  std::vector<std::function<void(const absl::Status&)>> pending_load_done_;
  bool store_stopping_ = false;

  // Engine thread only.
  std::multimap<uint64_t, Waiter> waiters_;
  std::multimap<absl::Time, uint64_t> waiter_deadlines_;

  mutable std::mutex stats_mu_;
  RuntimeStats stats_;
  std::atomic<bool> store_down_{false};
  std::string store_down_reason_;  // under stats_mu_

  std::thread engine_thread_;
  std::thread store_thread_;
  bool started_ = false;
  bool stopped_ = false;
};

}  // namespace drover::api
