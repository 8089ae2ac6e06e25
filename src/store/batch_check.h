// Private to drover_store: the checks every driver makes on a WriteBatch before writing any
// of it, so that all drivers accept and reject exactly the same batches.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fmt/format.h"
#include "store/store.h"

namespace drover::store::internal {

// Task ids are stored in SQL INTEGER columns, which are signed 64-bit. Ids above this would
// wrap to negative numbers and sort before every other id, so no driver accepts them.
inline constexpr uint64_t kMaxTaskId = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

// OK, or InvalidArgumentError naming the store and the offending id. Checked before the
// transaction starts, so a rejected batch writes nothing.
inline absl::Status CheckBatch(const WriteBatch& batch, std::string_view store) {
  for (const TaskRow& row : batch.upserts) {
    if (row.id > kMaxTaskId) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: commit: upsert of task id {} is out of range (max {})", store, row.id, kMaxTaskId));
    }
  }
  for (uint64_t id : batch.deletes) {
    if (id > kMaxTaskId) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: commit: delete of task id {} is out of range (max {})", store, id, kMaxTaskId));
    }
  }
  for (const WorkflowRow& row : batch.workflows) {
    if (row.id > kMaxTaskId) {
      return absl::InvalidArgumentError(
          fmt::format("{}: commit: upsert of workflow id {} is out of range (max {})", store,
                      row.id, kMaxTaskId));
    }
  }
  for (const LoadMinute& row : batch.load) {
    if (absl::Status st = CheckLoadMinute(row); !st.ok()) {
      return absl::InvalidArgumentError(
          fmt::format("{}: commit: {}", store, std::string(st.message())));
    }
  }
  int64_t last_seq = 0;
  for (const EventRow& row : batch.events) {
    if (row.seq <= last_seq) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: commit: event seq {} is not above the one before it ({}); seqs start at 1 and "
          "increase",
          store, row.seq, last_seq));
    }
    if (row.task_id > kMaxTaskId || row.workflow_id > kMaxTaskId) {
      return absl::InvalidArgumentError(fmt::format(
          "{}: commit: event {} names an id out of range (max {})", store, row.seq, kMaxTaskId));
    }
    last_seq = row.seq;
  }
  return absl::OkStatus();
}

// Events are appended in time order, so unix_ms grows with seq (but for a clock stepping
// back): the first seq in [lo, hi] whose event is at or after `unix_ms`, by binary search
// with `at(seq)` — the first event with a seq >= the one given, as {seq, unix_ms}, or
// nullopt — instead of an index on time. nullopt when every event is older.
template <typename At>
absl::StatusOr<std::optional<int64_t>> FirstEventAtOrAfter(int64_t lo, int64_t hi, int64_t unix_ms,
                                                           const At& at) {
  if (lo > hi) return std::optional<int64_t>();
  absl::StatusOr<std::optional<std::pair<int64_t, int64_t>>> e = at(hi);
  if (!e.ok()) return e.status();
  if (!e->has_value() || (*e)->second < unix_ms) return std::optional<int64_t>();
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    e = at(mid);
    if (!e.ok()) return e.status();
    if (e->has_value() && (*e)->second >= unix_ms) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  e = at(lo);
  if (!e.ok()) return e.status();
  if (!e->has_value()) return std::optional<int64_t>();
  return std::optional<int64_t>((*e)->first);
}

// Where PruneEvents deletes below: the first event at or after the cutoff (`first`), or,
// when every event is older, the newest one — which stays: it keeps the log's last seq
// (where the seqs go on after a restart, and followers' tokens stay valid). `max` gives the
// newest seq.
template <typename Max>
absl::StatusOr<int64_t> EventPruneBound(const absl::StatusOr<std::optional<int64_t>>& first,
                                        const Max& max) {
  if (!first.ok()) return first.status();
  if (first->has_value()) return **first;
  return max();
}

// A query's types as the SQL filters take them: ",a,b.c," ("" for any type).
inline std::string EventTypesFilter(const std::vector<std::string>& types) {
  std::string out;
  for (const std::string& t : types) out += "," + t;
  if (!out.empty()) out += ",";
  return out;
}

// What StoreStats::rows_written adds for one successful commit: the task rows the batch
// upserts or deletes (a delete of an unknown id counts too: it was requested). Meta rows are
// bookkeeping and not counted, so the figure is the queue's task write rate.
inline int64_t RowsIn(const WriteBatch& batch) {
  return static_cast<int64_t>(batch.upserts.size() + batch.deletes.size());
}

// OK, or InvalidArgumentError naming the field: the same PruneStep is refused by every driver.
inline absl::Status CheckPruneStep(const PruneStep& step, std::string_view store) {
  if (step.from_id > kMaxTaskId) {
    return absl::InvalidArgumentError(fmt::format("{}: prune: from_id {} is out of range (max {})",
                                                  store, step.from_id, kMaxTaskId));
  }
  if (step.max_scan < 1) {
    return absl::InvalidArgumentError(
        fmt::format("{}: prune: max_scan must be at least 1, got {}", store, step.max_scan));
  }
  if (step.states.empty()) {
    return absl::InvalidArgumentError(fmt::format("{}: prune: states must not be empty", store));
  }
  return absl::OkStatus();
}

// Whether PruneRows removes a row with this state and update time.
inline bool Prunable(const PruneStep& step, int state, int64_t updated_unix_ms) {
  return updated_unix_ms < step.updated_before_unix_ms &&
         std::find(step.states.begin(), step.states.end(), state) != step.states.end();
}

}  // namespace drover::store::internal
