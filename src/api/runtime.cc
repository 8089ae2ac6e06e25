#include "api/runtime.h"

#include <algorithm>
#include <chrono>
#include <iterator>
#include <limits>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "core/codec.h"
#include "fmt/core.h"

namespace drover::api {
namespace {
// Commands taken per engine batch: large enough to amortize a commit, small enough that
// the first command of a batch is not kept waiting long.
constexpr size_t kMaxCommandsPerBatch = 4096;
// Batches waiting for the store before the engine thread waits (backpressure). Waiting
// batches are merged into one transaction, so this also bounds commit latency.
constexpr size_t kMaxPendingBatches = 64;
}  // namespace

Runtime::Runtime(core::Engine& engine, store::Store& store, size_t queue_limit)
    : engine_(engine), store_(store), queue_limit_(queue_limit) {}

Runtime::~Runtime() { Stop(); }

void Runtime::Start() {
  if (started_) return;
  started_ = true;
  // The event log goes on after the last stored seq (the store is not in use yet), in a
  // range of this run's own: epoch << 39. Seqs increase across restarts and owners, are
  // consecutive within one run (as the hub needs), and two owners of a PostgreSQL store
  // never write the same seq — a commit of a fenced owner still in flight cannot collide
  // with the new owner's.
  if (absl::StatusOr<int64_t> max = store_.MaxEventSeq(); max.ok()) {
    const int64_t range = static_cast<int64_t>(engine_.options().epoch & 0xffffff) << 39;
    next_event_seq_ = std::max(*max + 1, range + 1);
    if (hub_ != nullptr) hub_->Reset(*max, absl::ToUnixMillis(absl::Now()));
  } else {
    fmt::print(stderr, "drover: the event log cannot be read ({}); no events are written\n",
               max.status().ToString());
  }
  store_thread_ = std::thread([this] { StoreLoop(); });
  engine_thread_ = std::thread([this] { EngineLoop(); });
}

void Runtime::Stop() {
  if (!started_ || stopped_) return;
  stopped_ = true;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  engine_thread_.join();
  {
    std::lock_guard<std::mutex> lk(store_mu_);
    store_stopping_ = true;
  }
  store_cv_.notify_all();
  store_thread_.join();
}

absl::Status Runtime::store_status() const {
  if (!store_down_.load()) return absl::OkStatus();
  std::lock_guard<std::mutex> lk(stats_mu_);
  return absl::UnavailableError(
      absl::StrCat("store unavailable (", store_down_reason_, "); retry shortly"));
}

bool Runtime::stopping() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stopping_;
}

void Runtime::ReleaseWaiters() {
  Post(
      [this](core::Engine&, Batch& batch) {
        for (auto& [key, waiter] : waiters_) {
          batch.AfterCommit([done = waiter.end(true)](const absl::Status&) { done(); });
        }
        waiters_.clear();
        waiter_deadlines_.clear();
      },
      kControl);
}

bool Runtime::Post(Command cmd, Lane lane) {
  // While the store is down a request could only wait: refuse it now (Refused() says why).
  // Control traffic still queues, up to its limit, so agents' completions are kept.
  if (lane == kRequest && store_down_.load()) return false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    const size_t limit = lane == kControl ? 2 * queue_limit_ : queue_limit_;
    if (stopping_ || queue_.size() >= limit) return false;
    queue_.push_back(std::move(cmd));
  }
  cv_.notify_one();
  return true;
}

size_t Runtime::queue_depth() const {
  std::lock_guard<std::mutex> lk(mu_);
  return queue_.size();
}

absl::Status Runtime::AppendLoadHistory(std::vector<store::LoadMinute> rows,
                                        std::function<void(const absl::Status&)> done) {
  // Checked here, where the caller can be told: the same check failing inside the commit
  // would fail the whole group and stop the server.
  for (const store::LoadMinute& row : rows) {
    if (absl::Status st = store::CheckLoadMinute(row); !st.ok()) return st;
  }
  if (stopping()) {
    return absl::UnavailableError("server is shutting down; load history not written");
  }
  {
    std::lock_guard<std::mutex> lk(store_mu_);
    if (store_stopping_) {
      return absl::UnavailableError("server is shutting down; load history not written");
    }
    if (pending_load_.size() + rows.size() > kMaxPendingLoadRows) {
      absl::Status st = absl::ResourceExhaustedError(absl::StrCat(
          "load history: ", pending_load_.size(), " rows wait for the store and ", rows.size(),
          " more would exceed the limit of ", kMaxPendingLoadRows, "; retry shortly"));
      st.SetPayload(core::kRetryAfterPayload, absl::Cord("1000"));
      return st;
    }
    if (pending_load_.empty()) {
      pending_load_ = std::move(rows);
    } else {
      pending_load_.insert(pending_load_.end(), std::make_move_iterator(rows.begin()),
                           std::make_move_iterator(rows.end()));
    }
    if (done) pending_load_done_.push_back(std::move(done));
  }
  store_cv_.notify_one();
  return absl::OkStatus();
}

absl::Status Runtime::AppendAudit(store::AuditRow row) {
  {
    std::lock_guard<std::mutex> lk(store_mu_);
    if (store_stopping_) return absl::UnavailableError("server is shutting down");
    if (pending_audit_.size() >= kMaxPendingAuditRows) {
      absl::Status st = absl::ResourceExhaustedError(absl::StrCat(
          "audit log: ", pending_audit_.size(), " records wait for the store; retry shortly"));
      st.SetPayload(core::kRetryAfterPayload, absl::Cord("1000"));
      return st;
    }
    pending_audit_.push_back(std::move(row));
  }
  store_cv_.notify_one();
  return absl::OkStatus();
}

absl::Status Runtime::AppendMeta(std::string key, std::string value,
                                 std::function<void(const absl::Status&)> done) {
  {
    std::lock_guard<std::mutex> lk(store_mu_);
    if (store_stopping_) return absl::UnavailableError("server is shutting down");
    pending_meta_.emplace_back(std::move(key), std::move(value));
    if (done) pending_load_done_.push_back(std::move(done));
  }
  store_cv_.notify_one();
  return absl::OkStatus();
}

void Runtime::AppendEvent(drover::v1::Event event) {
  if (event.unix_ms() == 0) event.set_unix_ms(absl::ToUnixMillis(absl::Now()));
  {
    std::lock_guard<std::mutex> lk(store_mu_);
    if (store_stopping_ || pending_events_.size() >= kMaxPendingEvents) {
      std::lock_guard<std::mutex> slk(stats_mu_);
      stats_.events_dropped++;
      return;
    }
    pending_events_.push_back(std::move(event));
  }
  store_cv_.notify_one();
}

void Runtime::AddEvents(std::vector<drover::v1::Event>& events, store::WriteBatch& batch) {
  if (next_event_seq_ == 0) return;
  for (drover::v1::Event& e : events) {
    e.set_seq(next_event_seq_++);
    store::EventRow& row = batch.events.emplace_back(obs::EventKey(e));
    e.SerializeToString(&row.blob);
  }
}

bool Runtime::ReadLoadHistory(std::string pool, int64_t from_minute, int64_t to_minute,
                              int64_t max_rows, std::function<void(LoadRows)> done, Lane lane) {
  // Through the engine thread only for the ordering: the read runs after the commit of
  // every batch (and every load row) queued before it.
  return Post(
      [this, pool = std::move(pool), from_minute, to_minute, max_rows, done = std::move(done)](
          core::Engine&, Batch& batch) mutable {
        batch.AfterCommit([this, pool = std::move(pool), from_minute, to_minute, max_rows,
                           done = std::move(done)](const absl::Status& st) {
          if (!st.ok()) return done(st);
          std::vector<store::LoadMinute> rows;
          absl::Status read = store_.ReadLoadHistory(
              pool, from_minute, to_minute, max_rows,
              [&rows](store::LoadMinute&& row) { rows.push_back(std::move(row)); });
          if (!read.ok()) return done(read);
          done(std::move(rows));
        });
      },
      lane);
}

int64_t Runtime::FirstKeptLoadMinute(absl::Time now) const {
  if (prune_.load_history_retention == absl::InfiniteDuration()) return 0;
  const int64_t cutoff_s = absl::ToUnixSeconds(now - prune_.load_history_retention);
  // Floor division: a cutoff before 1970 keeps everything.
  return cutoff_s < 0 ? 0 : cutoff_s / 60;
}

RuntimeStats Runtime::stats() const {
  std::lock_guard<std::mutex> lk(stats_mu_);
  return stats_;
}

void Runtime::AddWaiter(core::TaskId id, absl::Time deadline,
                        std::function<void(const drover::v1::Task&, bool)> fn) {
  AddWaitKey(id, deadline, [this, id, fn = std::move(fn)](bool timed_out) {
    const drover::v1::Task* t = engine_.Snapshot(id);
    auto copy = std::make_shared<drover::v1::Task>(t ? *t : drover::v1::Task());
    return std::function<void()>([fn, copy, timed_out] { fn(*copy, timed_out); });
  });
}

void Runtime::AddWorkflowWaiter(core::WorkflowId id, absl::Time deadline,
                                std::function<void(const drover::v1::Workflow&, bool)> fn) {
  AddWaitKey(id | kWorkflowKey, deadline, [this, id, fn = std::move(fn)](bool timed_out) {
    const drover::v1::Workflow* w = engine_.WorkflowSnapshot(id);
    auto copy = std::make_shared<drover::v1::Workflow>(w ? *w : drover::v1::Workflow());
    return std::function<void()>([fn, copy, timed_out] { fn(*copy, timed_out); });
  });
}

void Runtime::AddWaitKey(uint64_t key, absl::Time deadline, WaitEnd end) {
  waiters_.emplace(key, Waiter{deadline, std::move(end)});
  waiter_deadlines_.emplace(deadline, key);
}

void Runtime::FireWaiters(const core::Outbox& out, PendingBatch& pending) {
  if (waiters_.empty()) return;
  auto fire = [&](uint64_t key) {
    auto [lo, hi] = waiters_.equal_range(key);
    for (auto it = lo; it != hi; ++it) {
      pending.callbacks.push_back([done = it->second.end(false)](const absl::Status&) { done(); });
    }
    waiters_.erase(lo, hi);
  };
  for (core::TaskId id : out.terminal) fire(id);
  for (core::WorkflowId id : out.terminal_workflows) fire(id | kWorkflowKey);
}

void Runtime::ExpireWaiters(PendingBatch& pending) {
  const absl::Time now = absl::Now();
  while (!waiter_deadlines_.empty() && waiter_deadlines_.begin()->first <= now) {
    auto [deadline, key] = *waiter_deadlines_.begin();
    waiter_deadlines_.erase(waiter_deadlines_.begin());
    auto [lo, hi] = waiters_.equal_range(key);
    for (auto it = lo; it != hi;) {
      if (it->second.deadline != deadline) {
        ++it;
        continue;
      }
      pending.callbacks.push_back([done = it->second.end(true)](const absl::Status&) { done(); });
      it = waiters_.erase(it);
    }
  }
}

void Runtime::BuildBatch(Batch& batch, PendingBatch& pending) {
  core::Outbox out = engine_.TakeOutbox();
  pending.writes.upserts.reserve(out.dirty.size());
  for (core::TaskId id : out.dirty) {
    const drover::v1::Task* t = engine_.Snapshot(id);
    if (t == nullptr) continue;  // purged within the same batch
    pending.writes.upserts.emplace_back();
    core::TaskToRow(*t, pending.writes.upserts.back());
  }
  pending.writes.workflows.reserve(out.dirty_workflows.size());
  for (core::WorkflowId id : out.dirty_workflows) {
    const drover::v1::Workflow* w = engine_.WorkflowSnapshot(id);
    if (w == nullptr) continue;
    pending.writes.workflows.emplace_back();
    core::WorkflowToRow(*w, pending.writes.workflows.back());
  }
  pending.writes.deletes = std::move(out.purged);
  pending.events = std::move(out.events);
  if (tracer_ != nullptr) {
    // Unsampled tasks cost a hash of their trace id; a sampled one its spans.
    for (core::TaskId id : out.terminal) {
      const drover::v1::Task* t = engine_.Snapshot(id);
      if (t == nullptr || !obs::Sampled(*t, sampling_)) continue;
      std::vector<obs::Span> spans = obs::TaskSpans(*t);
      for (obs::Span& s : spans) pending.spans.push_back(std::move(s));
    }
  }
  pending.writes.meta = std::move(out.meta);
  pending.pushes = std::move(out.pushes);
  FireWaiters(out, pending);
  for (auto& cb : batch.callbacks_) pending.callbacks.push_back(std::move(cb));
}

void Runtime::EngineLoop() {
  std::deque<Command> cmds;
  while (true) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      std::optional<absl::Time> wake = engine_.NextWakeup();
      if (!waiter_deadlines_.empty()) {
        const absl::Time w = waiter_deadlines_.begin()->first;
        wake = wake ? std::min(*wake, w) : w;
      }
      auto ready = [&] { return !queue_.empty() || stopping_; };
      if (wake) {
        cv_.wait_until(lk, absl::ToChronoTime(*wake), ready);
      } else {
        cv_.wait(lk, ready);
      }
      if (queue_.empty() && stopping_) break;
      while (!queue_.empty() && cmds.size() < kMaxCommandsPerBatch) {
        cmds.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    Batch batch;
    PendingBatch pending;
    engine_.Tick();
    for (Command& c : cmds) c(engine_, batch);
    pending.commands = cmds.size();
    cmds.clear();
    ExpireWaiters(pending);
    BuildBatch(batch, pending);
    if (pending.writes.empty() && pending.pushes.empty() && pending.callbacks.empty() &&
        pending.events.empty()) {
      continue;
    }
    std::unique_lock<std::mutex> lk(store_mu_);
    store_space_cv_.wait(lk, [&] { return store_queue_.size() < kMaxPendingBatches; });
    store_queue_.push_back(std::move(pending));
    lk.unlock();
    store_cv_.notify_one();
  }
}

void Runtime::PruneLoadHistory(absl::Time now) {
  if (prune_.audit_retention != absl::InfiniteDuration()) {
    absl::StatusOr<int64_t> r = store_.PruneAudit(absl::ToUnixMillis(now - prune_.audit_retention));
    if (!r.ok()) {
      fmt::print(stderr, "drover: pruning old audit records from the store failed: {}\n",
                 r.status().ToString());
    }
  }
  if (prune_.event_retention != absl::InfiniteDuration()) {
    absl::StatusOr<int64_t> r =
        store_.PruneEvents(absl::ToUnixMillis(now - prune_.event_retention));
    if (!r.ok()) {
      fmt::print(stderr, "drover: pruning old events from the store failed: {}\n",
                 r.status().ToString());
    }
  }
  if (prune_.load_history_retention == absl::InfiniteDuration()) return;
  absl::StatusOr<int64_t> r = store_.PruneLoadHistory(FirstKeptLoadMinute(now));
  if (r.ok()) return;
  // Not fatal either: the rows are deleted by the next sweep.
  {
    std::lock_guard<std::mutex> lk(stats_mu_);
    stats_.load_prune_failures++;
  }
  fmt::print(stderr, "drover: pruning old load history from the store failed: {}\n",
             r.status().ToString());
}

absl::Time Runtime::MaybePrune(absl::Time now) {
  if (store_down_.load()) return now + prune_.sweep_interval;  // commits retry first
  if (prune_cursor_ == 0) {                                    // once per sweep, at its start
    PruneLoadHistory(now);
    // Day tables of finished tasks (PostgreSQL): the coming days are created, and days
    // wholly past the retention dropped. A no-op for other drivers.
    const int64_t cutoff = prune_.retention == absl::InfiniteDuration()
                               ? std::numeric_limits<int64_t>::min()
                               : absl::ToUnixMillis(now - prune_.retention);
    absl::StatusOr<int64_t> dropped = store_.DropFinishedBefore(cutoff, absl::ToUnixMillis(now));
    if (!dropped.ok()) {
      std::lock_guard<std::mutex> lk(stats_mu_);
      stats_.prune_failures++;
      fmt::print(stderr, "drover: dropping old days of finished tasks failed: {}\n",
                 dropped.status().ToString());
    }
  }
  if (prune_.retention == absl::InfiniteDuration()) return now + prune_.sweep_interval;
  store::PruneStep step;
  step.from_id = prune_cursor_;
  step.max_scan = prune_.rows_per_step;
  step.states = {drover::v1::TASK_STATE_SUCCEEDED, drover::v1::TASK_STATE_CANCELED,
                 drover::v1::TASK_STATE_EXPIRED};
  step.updated_before_unix_ms = absl::ToUnixMillis(now - prune_.retention);
  absl::StatusOr<store::PruneResult> r = store_.PruneRows(step);
  std::lock_guard<std::mutex> lk(stats_mu_);
  stats_.prune_steps++;
  if (!r.ok()) {
    // Not fatal: nothing acknowledged depends on a prune. Try again after a full interval.
    stats_.prune_failures++;
    fmt::print(stderr, "drover: pruning finished tasks from the store failed: {}\n",
               r.status().ToString());
    prune_cursor_ = 0;
    return now + prune_.sweep_interval;
  }
  prune_cursor_ = r->next_id;
  if (prune_cursor_ != 0) return now + prune_.step_pause;
  stats_.sweeps_completed++;
  return now + prune_.sweep_interval;
}

absl::Status Runtime::CommitRetrying(const store::WriteBatch& batch) {
  absl::Status st = store_.Commit(batch);
  if (!absl::IsUnavailable(st)) return st;
  // The database is unreachable (PostgreSQL restarting, a network fault). Whether the
  // commit landed is unknown, and it does not matter: a batch is whole-row upserts,
  // deletes and meta upserts, so committing it again gives the same rows. Until it lands
  // nothing waiting is acknowledged, new requests are refused with UNAVAILABLE (Post) and
  // /readyz fails. At shutdown the retries stop after kStopRetryLimit.
  absl::Duration backoff = absl::Milliseconds(50);
  absl::Time stop_seen = absl::InfiniteFuture();
  int attempts = 1;
  while (absl::IsUnavailable(st)) {
    if (!store_down_.exchange(true)) {
      fmt::print(stderr, "drover: store unavailable, retrying the commit: {}\n",
                 std::string(st.message()));
    }
    {
      std::lock_guard<std::mutex> lk(stats_mu_);
      stats_.commit_retries++;
      store_down_reason_ = std::string(st.message());
    }
    {
      std::unique_lock<std::mutex> lk(store_mu_);
      if (store_stopping_ && stop_seen == absl::InfiniteFuture()) stop_seen = absl::Now();
      if (absl::Now() - stop_seen > kStopRetryLimit) break;
      store_cv_.wait_for(lk, absl::ToChronoMilliseconds(backoff));
    }
    backoff = std::min(backoff * 2, absl::Seconds(2));
    st = store_.Commit(batch);
    ++attempts;
  }
  if (st.ok()) {
    store_down_.store(false);
    fmt::print(stderr, "drover: store available again; the commit landed after {} attempts\n",
               attempts);
  }
  return st;
}

void Runtime::StoreLoop() {
  std::deque<PendingBatch> work;
  std::vector<store::LoadMinute> load;
  std::vector<store::AuditRow> audit;
  std::vector<drover::v1::Event> events;  // from other threads
  std::vector<drover::v1::Event> published;
  std::vector<std::pair<std::string, std::string>> meta;
  std::vector<std::function<void(const absl::Status&)>> load_done;
  store::WriteBatch merged;
  // The first sweep waits one interval, so start-up and recovery are not slowed by it.
  // Sweeps run even with nothing to prune: they also keep a driver's day tables ahead.
  absl::Time next_prune = absl::Now() + prune_.sweep_interval;
  while (true) {
    {
      std::unique_lock<std::mutex> lk(store_mu_);
      auto idle = [&] {
        return store_queue_.empty() && pending_load_.empty() && pending_load_done_.empty() &&
               pending_audit_.empty() && pending_meta_.empty() && pending_events_.empty();
      };
      auto ready = [&] { return !idle() || store_stopping_; };
      if (next_prune == absl::InfiniteFuture()) {
        store_cv_.wait(lk, ready);
      } else {
        store_cv_.wait_until(lk, absl::ToChronoTime(next_prune), ready);
      }
      if (idle() && store_stopping_) return;
      work.swap(store_queue_);
      load.swap(pending_load_);
      load_done.swap(pending_load_done_);
      audit.swap(pending_audit_);
      events.swap(pending_events_);
      meta.swap(pending_meta_);
    }
    // A prune step is due: run it here, between commits, whether or not batches wait (a
    // busy server must prune too; one step is a few milliseconds).
    if (const absl::Time now = absl::Now(); now >= next_prune) next_prune = MaybePrune(now);
    if (work.empty() && load.empty() && load_done.empty() && audit.empty() && meta.empty() &&
        events.empty()) {
      continue;
    }
    store_space_cv_.notify_all();
    // Everything that waited is committed in one transaction (group commit).
    merged.clear();
    published.clear();
    size_t commands = 0;
    for (PendingBatch& p : work) {
      commands += p.commands;
      // Events in commit order: each batch's, then those from other threads.
      AddEvents(p.events, merged);
      for (auto& e : p.events) published.push_back(std::move(e));
      if (work.size() == 1) {
        p.writes.events.swap(merged.events);
        merged = std::move(p.writes);
        break;
      }
      for (auto& r : p.writes.upserts) merged.upserts.push_back(std::move(r));
      for (auto id : p.writes.deletes) merged.deletes.push_back(id);
      for (auto& w : p.writes.workflows) merged.workflows.push_back(std::move(w));
      for (auto& m : p.writes.meta) merged.meta.push_back(std::move(m));
    }
    // Load rows and audit records come from other threads, never from the engine's batches;
    // so do the meta rows of tokens (after the engine's: keys never overlap).
    merged.load.swap(load);
    merged.audit.swap(audit);
    AddEvents(events, merged);
    for (auto& e : events) published.push_back(std::move(e));
    for (auto& m : meta) merged.meta.push_back(std::move(m));
    absl::Status st;
    const absl::Time start = absl::Now();
    if (!merged.empty()) st = CommitRetrying(merged);
    const double secs = absl::ToDoubleSeconds(absl::Now() - start);
    {
      std::lock_guard<std::mutex> lk(stats_mu_);
      stats_.batches++;
      stats_.commands += static_cast<int64_t>(commands);
      if (!merged.empty()) stats_.commit_seconds.Observe(secs);
      // A group of load rows alone carries no command.
      if (!work.empty()) stats_.batch_commands.Observe(static_cast<double>(commands));
      if (!st.ok()) stats_.commit_failures++;
      if (st.ok()) stats_.events_written += static_cast<int64_t>(merged.events.size());
    }
    if (!st.ok()) {
      fmt::print(stderr, "drover: store commit failed: {}\n", st.ToString());
      st = absl::UnavailableError(
          absl::StrCat("store commit failed (", st.message(), "); restart drover serve"));
    }
    if (st.ok() && !merged.events.empty()) {
      // Once durable: breakers and preemptions also go to the log for operators, and every
      // event to the followers.
      for (const drover::v1::Event& e : published) {
        if (e.type() == "agent.breaker" || e.type() == "task.preempted") {
          fmt::print(stderr, "drover: event {} {}{}: {}\n", e.seq(), e.type(),
                     e.task_id() != 0 ? absl::StrCat(" task ", e.task_id())
                                      : absl::StrCat(" agent ", e.agent_id()),
                     e.message());
        }
      }
      // The committed rows carry the key columns the hub filters on: hand them over.
      if (hub_ != nullptr) hub_->Publish(std::move(published), std::move(merged.events));
      published.clear();
    }
    for (PendingBatch& p : work) {
      if (st.ok() && tracer_ != nullptr) tracer_->Offer(std::move(p.spans));
      if (st.ok() && sink_ != nullptr) {
        for (const auto& push : p.pushes) sink_->Push(push.agent, push.item);
      }
      for (auto& cb : p.callbacks) cb(st);
    }
    for (auto& cb : load_done) cb(st);
    work.clear();
    load.clear();
    audit.clear();
    events.clear();
    meta.clear();
    load_done.clear();
    if (!st.ok()) {
      // The engine is now ahead of the store: nothing more may be acknowledged. Exit so a
      // supervisor restarts the server, which recovers from what the store holds.
      fmt::print(stderr,
                 "drover: exiting after a failed commit; restart recovers from the store\n");
      std::fflush(stderr);
      std::_Exit(70);
    }
  }
}

}  // namespace drover::api
