// store: the durable form of drover's state, behind one driver interface.
//
// The engine decides; the store only remembers. A driver writes batches of rows in one
// transaction each (group commit: the caller acknowledges every request of a batch only
// after Commit returns OK) and reads everything back at start-up.
//
// Rows are opaque to the store except for the indexed columns it keeps next to the blob:
// the blob is a serialized drover.v1.Task written by the engine's codec.
//
// Threading: a Store is thread-compatible. drover serve calls it from its one store
// thread; tests call it from one thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace drover::store {

// One task's durable row. `state` and `priority` are the numeric values of
// drover.v1.TaskState and drover.v1.Priority.
struct TaskRow {
  uint64_t id = 0;
  std::string tenant;
  std::string type;
  int state = 0;
  int priority = 0;
  int64_t updated_unix_ms = 0;
  std::string blob;  // serialized drover.v1.Task
};

// One workflow's durable row; `state` is the numeric drover.v1.WorkflowState.
struct WorkflowRow {
  uint64_t id = 0;
  std::string tenant;
  int state = 0;
  int64_t updated_unix_ms = 0;
  std::string blob;  // serialized drover.v1.Workflow
};

// Everything one transaction writes. Applied in this order: upserts, deletes, workflows,
// meta.
struct WriteBatch {
  std::vector<TaskRow> upserts;
  std::vector<uint64_t> deletes;
  std::vector<WorkflowRow> workflows;                     // upserts
  std::vector<std::pair<std::string, std::string>> meta;  // key, value (upsert)

  bool empty() const {
    return upserts.empty() && deletes.empty() && workflows.empty() && meta.empty();
  }
  void clear() {
    upserts.clear();
    deletes.clear();
    workflows.clear();
    meta.clear();
  }
};

struct StoreStats {
  int64_t commits = 0;
  int64_t rows_written = 0;
  int64_t rows_pruned = 0;
};

// One step of the sweep that removes old finished rows (PruneRows). The sweep walks the
// table in id order, `max_scan` rows per step, so no step holds the write lock for long and
// no index on `state` or `updated_unix_ms` is needed (0001_init.sql explains why there is none).
struct PruneStep {
  uint64_t from_id = 0;                // first id this step looks at
  int64_t max_scan = 10'000;           // rows looked at, 1 or more
  std::vector<int> states;             // a row is removed only in one of these states...
  int64_t updated_before_unix_ms = 0;  // ...and last updated before this instant
};

struct PruneResult {
  int64_t scanned = 0;
  int64_t deleted = 0;
  uint64_t next_id = 0;  // where the next step starts; 0 once the step reached the end
};

class Store {
 public:
  virtual ~Store() = default;

  // A short name for logs and stats: "sqlite:/path", "memory".
  virtual std::string Describe() const = 0;

  // Writes the batch atomically. On error nothing of the batch is visible.
  virtual absl::Status Commit(const WriteBatch& batch) = 0;

  // Calls `fn` for every task row, in id order. Used once at start-up (recovery).
  virtual absl::Status LoadTasks(const std::function<void(TaskRow&&)>& fn) = 0;

  // Calls `fn` for every workflow row, in id order (recovery, before LoadTasks).
  virtual absl::Status LoadWorkflows(const std::function<void(WorkflowRow&&)>& fn) = 0;

  // One task row, or nullopt when the id is unknown.
  virtual absl::StatusOr<std::optional<TaskRow>> GetTask(uint64_t id) = 0;

  // One workflow row, or nullopt when the id is unknown (a finished workflow that left
  // the engine's memory is read from here).
  virtual absl::StatusOr<std::optional<WorkflowRow>> GetWorkflow(uint64_t id) = 0;

  // A meta value (for example "epoch", "max_task_id"), or nullopt.
  virtual absl::StatusOr<std::optional<std::string>> GetMeta(const std::string& key) = 0;

  // Deletes, in one transaction, the rows among the next `step.max_scan` rows from
  // `step.from_id` whose state is one of `step.states` and that were last updated before
  // `step.updated_before_unix_ms`.
  virtual absl::StatusOr<PruneResult> PruneRows(const PruneStep& step) = 0;

  virtual StoreStats Stats() const = 0;
};

enum class Durability {
  kNormal,  // SQLite synchronous=NORMAL in WAL: survives a process crash (kill -9)
  kFull,    // synchronous=FULL: also survives power loss, slower commits
};

// Opens (creating if needed) a SQLite database at `path` in WAL mode and applies the
// numbered migrations in src/store/migrations/sqlite/. Fails with a message naming the
// path when the file cannot be opened or is not a drover database.
absl::StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path,
                                                       Durability durability);

// A store kept in memory, for tests and the simulator. Loses everything on destruction.
std::unique_ptr<Store> NewMemoryStore();

}  // namespace drover::store
