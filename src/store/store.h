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

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

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

// One pool's minute of load history (docs/history.md): what the pool saw, for forecasting.
// Keyed by (pool, minute); unlike task rows every column is a plain value, no blob.
struct LoadMinute {
  std::string pool;
  int64_t minute = 0;  // Unix time / 60 of the minute's start
  int64_t arrivals = 0, dispatches = 0, completions = 0;
  double service_mean_s = 0, service_p95_s = 0;  // of attempts that ended in the minute
  int64_t queue_depth = 0;  // runnable ready tasks of the pool's types at the minute's end
  int32_t agents_starting = 0, agents_idle = 0, agents_busy = 0, agents_draining = 0;
};

// OK, or InvalidArgumentError naming the pool, the minute and the field. Every driver
// refuses a batch with such a row (SQLite would store NaN as NULL), so writers check rows
// before queueing them: a refused commit stops drover serve.
inline absl::Status CheckLoadMinute(const LoadMinute& row) {
  auto bad = [&](const char* field, const char* rule) {
    return absl::InvalidArgumentError(absl::StrCat("load history of pool \"",
                                                   row.pool.substr(0, 80), "\" minute ", row.minute,
                                                   ": ", field, " ", rule));
  };
  if (row.pool.empty()) return bad("pool", "is required");
  if (row.minute < 0) return bad("minute", "must be >= 0");
  if (row.arrivals < 0) return bad("arrivals", "must be >= 0");
  if (row.dispatches < 0) return bad("dispatches", "must be >= 0");
  if (row.completions < 0) return bad("completions", "must be >= 0");
  if (row.queue_depth < 0) return bad("queue_depth", "must be >= 0");
  if (!(std::isfinite(row.service_mean_s) && row.service_mean_s >= 0)) {
    return bad("service_mean_s", "must be a finite number >= 0");
  }
  if (!(std::isfinite(row.service_p95_s) && row.service_p95_s >= 0)) {
    return bad("service_p95_s", "must be a finite number >= 0");
  }
  if (row.agents_starting < 0 || row.agents_idle < 0 || row.agents_busy < 0 ||
      row.agents_draining < 0) {
    return bad("agents_*", "must be >= 0");
  }
  return absl::OkStatus();
}

// One record of the audit log (docs/security.md#audit-log): who did or tried what. Only the
// indexed columns are plain; the rest is a serialized drover.v1.AuditRecord. Append-only:
// no driver offers a call that changes a record, and retention (PruneAudit) deletes by age.
struct AuditRow {
  int64_t seq = 0;  // assigned by the store on append, increasing
  int64_t unix_ms = 0;
  std::string principal;  // token name or certificate subject; "" when none was presented
  std::string tenant;     // the tenant the call named, "" when none
  std::string blob;       // serialized drover.v1.AuditRecord
};

// Which records ReadAudit returns: those after `after_seq`, at or after `since_unix_ms`, of
// `principal` and `tenant` when not empty, in seq order, at most `limit` (1 or more).
struct AuditQuery {
  int64_t after_seq = 0;
  int64_t since_unix_ms = 0;
  std::string principal;
  std::string tenant;
  int64_t limit = 100;
};

// One entry of the event log (docs/events.md). The indexed columns are plain; the whole
// event is a serialized drover.v1.Event. `seq` is given by the writer (the one server that
// owns the store's work), increasing; appending a seq that exists already
// leaves the stored event as it is, so a batch committed twice (a retry after the store
// was unreachable) does not fail or duplicate.
struct EventRow {
  int64_t seq = 0;  // >= 1
  int64_t unix_ms = 0;
  std::string type;    // "task.dead": [a-z_]+(\.[a-z_]+)*
  std::string tenant;  // "" for events of no tenant
  uint64_t task_id = 0;
  uint64_t workflow_id = 0;
  std::string pool;
  std::string blob;  // serialized drover.v1.Event
};

// Which events ReadEvents returns: those after `after_seq`, at or after `since_unix_ms`,
// of the given task, workflow, pool and tenant when set (tenant "" matches every tenant),
// whose type is one of `types` or under one ("task" matches "task.dead"; empty: any), in
// seq order, at most `limit` (1 or more).
struct EventQuery {
  int64_t after_seq = 0;
  int64_t since_unix_ms = 0;
  std::vector<std::string> types;
  uint64_t task_id = 0;
  uint64_t workflow_id = 0;
  std::string pool;
  std::string tenant;
  int64_t limit = 100;
};

// Whether an event of `type` matches a query's `types` (the rule above).
inline bool EventTypeMatches(const std::vector<std::string>& types, const std::string& type) {
  if (types.empty()) return true;
  for (const std::string& t : types) {
    if (type == t ||
        (type.size() > t.size() && type.compare(0, t.size(), t) == 0 && type[t.size()] == '.')) {
      return true;
    }
  }
  return false;
}
inline bool EventMatches(const EventQuery& q, const EventRow& row) {
  return row.seq > q.after_seq && row.unix_ms >= q.since_unix_ms &&
         (q.task_id == 0 || row.task_id == q.task_id) &&
         (q.workflow_id == 0 || row.workflow_id == q.workflow_id) &&
         (q.pool.empty() || row.pool == q.pool) && (q.tenant.empty() || row.tenant == q.tenant) &&
         EventTypeMatches(q.types, row.type);
}

// Everything one transaction writes. Applied in this order: upserts, deletes, workflows,
// meta, load, audit, events.
struct WriteBatch {
  std::vector<TaskRow> upserts;
  std::vector<uint64_t> deletes;
  std::vector<WorkflowRow> workflows;                     // upserts
  std::vector<std::pair<std::string, std::string>> meta;  // key, value (upsert)
  std::vector<LoadMinute> load;  // upserts by (pool, minute): a row replaces the whole minute
  std::vector<AuditRow> audit;   // appended in order (their seq is ignored)
  std::vector<EventRow> events;  // appended, in increasing seq order

  bool empty() const {
    return upserts.empty() && deletes.empty() && workflows.empty() && meta.empty() &&
           load.empty() && audit.empty() && events.empty();
  }
  void clear() {
    upserts.clear();
    deletes.clear();
    workflows.clear();
    meta.clear();
    load.clear();
    audit.clear();
    events.clear();
  }
};

struct StoreStats {
  int64_t commits = 0;
  int64_t rows_written = 0;  // task rows upserted or deleted
  int64_t rows_pruned = 0;   // task rows
  int64_t load_rows_written = 0;
  int64_t load_rows_pruned = 0;
  int64_t audit_rows_written = 0;
  int64_t audit_rows_pruned = 0;
  int64_t event_rows_written = 0;
  int64_t event_rows_pruned = 0;
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

  // Calls `fn` for `pool`'s load rows with from_minute <= minute < to_minute, in minute
  // order, at most `max_rows` of them (0: every one; a range read stops early instead of
  // walking a long history to return a page of it).
  virtual absl::Status ReadLoadHistory(const std::string& pool, int64_t from_minute,
                                       int64_t to_minute, int64_t max_rows,
                                       const std::function<void(LoadMinute&&)>& fn) = 0;
  absl::Status ReadLoadHistory(const std::string& pool, int64_t from_minute, int64_t to_minute,
                               const std::function<void(LoadMinute&&)>& fn) {
    return ReadLoadHistory(pool, from_minute, to_minute, 0, fn);
  }

  // Deletes every pool's load rows with minute < before_minute (the retention sweep), in
  // one transaction; returns how many.
  virtual absl::StatusOr<int64_t> PruneLoadHistory(int64_t before_minute) = 0;

  // The pools that have load rows, in name order.
  virtual absl::StatusOr<std::vector<std::string>> LoadHistoryPools() = 0;

  // Audit records matching `query`, in seq order (docs/security.md#audit-log).
  virtual absl::Status ReadAudit(const AuditQuery& query,
                                 const std::function<void(AuditRow&&)>& fn) = 0;
  // Deletes the audit records older than `before_unix_ms` (the retention sweep); returns
  // how many.
  virtual absl::StatusOr<int64_t> PruneAudit(int64_t before_unix_ms) = 0;

  // Events matching `query`, in seq order (docs/events.md).
  virtual absl::Status ReadEvents(const EventQuery& query,
                                  const std::function<void(EventRow&&)>& fn) = 0;
  // Deletes the events before the first one at or after `before_unix_ms` (the retention
  // sweep; events are in time order), never the newest one; returns how many.
  virtual absl::StatusOr<int64_t> PruneEvents(int64_t before_unix_ms) = 0;
  // The highest event seq stored, 0 when there is none (where a new writer goes on).
  virtual absl::StatusOr<int64_t> MaxEventSeq() = 0;

  // Drivers that keep finished tasks in day tables (PostgreSQL) drop, whole, the days that
  // ended at or before `cutoff_unix_ms`, and create the coming days' tables; returns about
  // how many rows went (the catalog's estimate). Others keep finished rows in the table
  // PruneRows sweeps and return 0. Run by the retention sweep before its PruneRows steps.
  virtual absl::StatusOr<int64_t> DropFinishedBefore(int64_t cutoff_unix_ms, int64_t now_unix_ms) {
    (void)cutoff_unix_ms;
    (void)now_unix_ms;
    return 0;
  }

  // Fencing (PostgreSQL): once set, every write transaction first checks that `owner` still
  // holds the lease row `lease` at `epoch`, and fails with FailedPrecondition ("fenced: ...")
  // otherwise, writing nothing. Drivers without leases (one process owns the file) return
  // Unimplemented.
  struct Fence {
    std::string lease, owner;
    int64_t epoch = 0;
  };
  virtual absl::Status SetFence(const Fence& fence) {
    (void)fence;
    return absl::UnimplementedError(Describe() + ": no leases to fence writes with");
  }

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

// The PostgreSQL driver (src/store/postgres_store.cc): `url` is a libpq URI or key=value
// string (postgres://user@host:port/db?sslmode=...), plus drover's own `prepare=off` (no
// named prepared statements, for PgBouncer in transaction mode before 1.21). Runs the
// numbered migrations of src/store/migrations/postgres/ under a transaction-scoped
// advisory lock. Every call returns Unavailable, within `statement_timeout`, when the
// database cannot be reached; the next call reconnects.
struct PostgresOptions {
  absl::Duration connect_timeout = absl::Seconds(5);
  absl::Duration statement_timeout = absl::Seconds(30);
};
absl::StatusOr<std::unique_ptr<Store>> OpenPostgresStore(const std::string& url,
                                                         const PostgresOptions& options = {});

// A store kept in memory, for tests and the simulator. Loses everything on destruction.
std::unique_ptr<Store> NewMemoryStore();

}  // namespace drover::store
