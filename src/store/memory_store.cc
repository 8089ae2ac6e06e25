// The in-memory driver of drover::store::Store: the reference semantics the SQLite driver is
// tested against (tests/unit/store_test.cc runs one conformance suite over both).

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "batch_check.h"
#include "store/store.h"

namespace drover::store {
namespace {

class MemoryStore final : public Store {
 public:
  std::string Describe() const override { return "memory"; }

  absl::Status Commit(const WriteBatch& batch) override {
    if (loading_) {
      return absl::FailedPreconditionError(
          "memory: Commit called from inside a LoadTasks callback");
    }
    // Every check happens before the first write, and the writes below cannot fail (short
    // of running out of memory), so a batch is applied entirely or not at all.
    if (auto s = internal::CheckBatch(batch, Describe()); !s.ok()) return s;
    if (batch.empty()) return absl::OkStatus();  // same as SQLite: not counted as a commit
    for (const TaskRow& row : batch.upserts) tasks_.insert_or_assign(row.id, row);
    for (uint64_t id : batch.deletes) tasks_.erase(id);
    for (const WorkflowRow& row : batch.workflows) workflows_.insert_or_assign(row.id, row);
    for (const auto& [key, value] : batch.meta) meta_.insert_or_assign(key, value);
    for (const LoadMinute& row : batch.load) load_.insert_or_assign({row.pool, row.minute}, row);
    for (const AuditRow& row : batch.audit) {
      AuditRow& kept = audit_.emplace_back(row);
      kept.seq = static_cast<int64_t>(audit_seq_++);
    }
    stats_.audit_rows_written += static_cast<int64_t>(batch.audit.size());
    for (const EventRow& row : batch.events) events_.emplace(row.seq, row);  // keeps a seq
    stats_.event_rows_written += static_cast<int64_t>(batch.events.size());
    ++stats_.commits;
    stats_.rows_written += internal::RowsIn(batch);
    stats_.load_rows_written += static_cast<int64_t>(batch.load.size());
    return absl::OkStatus();
  }

  absl::Status LoadTasks(const std::function<void(TaskRow&&)>& fn) override {
    if (!fn) return absl::InvalidArgumentError("LoadTasks: empty callback");
    if (loading_) {
      return absl::FailedPreconditionError(
          "memory: LoadTasks called from inside a LoadTasks callback");
    }
    // The flag makes a Commit from inside `fn` fail, as it would otherwise invalidate the
    // iterator walking tasks_.
    loading_ = true;
    for (const auto& [id, row] : tasks_) fn(TaskRow(row));
    loading_ = false;
    return absl::OkStatus();
  }

  absl::Status LoadWorkflows(const std::function<void(WorkflowRow&&)>& fn) override {
    if (!fn) return absl::InvalidArgumentError("LoadWorkflows: empty callback");
    for (const auto& [id, row] : workflows_) fn(WorkflowRow(row));
    return absl::OkStatus();
  }

  absl::StatusOr<std::optional<TaskRow>> GetTask(uint64_t id) override {
    auto it = tasks_.find(id);
    if (it == tasks_.end()) return std::nullopt;
    return it->second;
  }

  absl::StatusOr<std::optional<WorkflowRow>> GetWorkflow(uint64_t id) override {
    auto it = workflows_.find(id);
    if (it == workflows_.end()) return std::nullopt;
    return it->second;
  }

  absl::StatusOr<std::optional<std::string>> GetMeta(const std::string& key) override {
    auto it = meta_.find(key);
    if (it == meta_.end()) return std::nullopt;
    return it->second;
  }

  absl::StatusOr<PruneResult> PruneRows(const PruneStep& step) override {
    if (auto s = internal::CheckPruneStep(step, Describe()); !s.ok()) return s;
    PruneResult r;
    auto it = tasks_.lower_bound(step.from_id);
    for (; it != tasks_.end() && r.scanned < step.max_scan; ++r.scanned) {
      const TaskRow& row = it->second;
      if (internal::Prunable(step, row.state, row.updated_unix_ms)) {
        it = tasks_.erase(it);
        ++r.deleted;
      } else {
        ++it;
      }
    }
    r.next_id = it == tasks_.end() ? 0 : it->first;
    stats_.rows_pruned += r.deleted;
    return r;
  }

  using Store::ReadLoadHistory;
  absl::Status ReadLoadHistory(const std::string& pool, int64_t from_minute, int64_t to_minute,
                               int64_t max_rows,
                               const std::function<void(LoadMinute&&)>& fn) override {
    if (!fn) return absl::InvalidArgumentError("ReadLoadHistory: empty callback");
    int64_t n = 0;
    for (auto it = load_.lower_bound({pool, from_minute});
         it != load_.end() && it->first.first == pool && it->first.second < to_minute &&
         (max_rows <= 0 || n < max_rows);
         ++it, ++n) {
      fn(LoadMinute(it->second));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<int64_t> PruneLoadHistory(int64_t before_minute) override {
    int64_t deleted = 0;
    for (auto it = load_.begin(); it != load_.end();) {
      if (it->first.second < before_minute) {
        it = load_.erase(it);
        ++deleted;
      } else {
        ++it;
      }
    }
    stats_.load_rows_pruned += deleted;
    return deleted;
  }

  absl::StatusOr<std::vector<std::string>> LoadHistoryPools() override {
    std::vector<std::string> pools;
    for (const auto& [key, row] : load_) {
      if (pools.empty() || pools.back() != key.first) pools.push_back(key.first);
    }
    return pools;
  }

  absl::Status ReadAudit(const AuditQuery& query,
                         const std::function<void(AuditRow&&)>& fn) override {
    if (query.limit < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("memory: read audit: limit must be at least 1, got ", query.limit));
    }
    int64_t n = 0;
    for (const AuditRow& row : audit_) {
      if (n == query.limit) break;
      if (row.seq <= query.after_seq || row.unix_ms < query.since_unix_ms) continue;
      if (!query.principal.empty() && row.principal != query.principal) continue;
      if (!query.tenant.empty() && row.tenant != query.tenant) continue;
      AuditRow copy = row;
      fn(std::move(copy));
      ++n;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<int64_t> PruneAudit(int64_t before_unix_ms) override {
    const size_t before = audit_.size();
    std::erase_if(audit_, [&](const AuditRow& r) { return r.unix_ms < before_unix_ms; });
    const auto deleted = static_cast<int64_t>(before - audit_.size());
    stats_.audit_rows_pruned += deleted;
    return deleted;
  }

  absl::Status ReadEvents(const EventQuery& query,
                          const std::function<void(EventRow&&)>& fn) override {
    if (query.limit < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("memory: read events: limit must be at least 1, got ", query.limit));
    }
    int64_t n = 0;
    for (auto it = events_.upper_bound(query.after_seq); it != events_.end() && n < query.limit;
         ++it) {
      if (!EventMatches(query, it->second)) continue;
      EventRow copy = it->second;
      fn(std::move(copy));
      ++n;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<int64_t> PruneEvents(int64_t before_unix_ms) override {
    // By seq, as the SQL drivers: the events before the first one at or after the cutoff,
    // and never the newest (it keeps the log's last seq).
    int64_t below = events_.empty() ? 0 : events_.rbegin()->first;
    for (const auto& [seq, row] : events_) {
      if (row.unix_ms >= before_unix_ms) {
        below = seq;
        break;
      }
    }
    const auto deleted = static_cast<int64_t>(
        std::erase_if(events_, [&](const auto& kv) { return kv.first < below; }));
    stats_.event_rows_pruned += deleted;
    return deleted;
  }

  absl::StatusOr<int64_t> MaxEventSeq() override {
    return events_.empty() ? 0 : events_.rbegin()->first;
  }

  StoreStats Stats() const override { return stats_; }

 private:
  std::map<uint64_t, TaskRow> tasks_;  // ordered: LoadTasks walks it in id order
  std::map<uint64_t, WorkflowRow> workflows_;
  std::map<std::string, std::string> meta_;
  // Ordered by (pool, minute), as SQLite's primary key: a pool's rows are one range.
  std::map<std::pair<std::string, int64_t>, LoadMinute> load_;
  std::vector<AuditRow> audit_;  // in seq order
  uint64_t audit_seq_ = 1;
  std::map<int64_t, EventRow> events_;  // by seq
  StoreStats stats_;
  bool loading_ = false;
};

}  // namespace

std::unique_ptr<Store> NewMemoryStore() { return std::make_unique<MemoryStore>(); }

}  // namespace drover::store
