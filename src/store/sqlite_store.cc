// The SQLite driver of drover::store::Store.
//
// One connection per store, used from one thread (Store is thread-compatible), opened in WAL
// mode. Every Commit is one BEGIN IMMEDIATE ... COMMIT transaction built from statements
// prepared once at open and reused for the life of the store: this is the hot path of the
// queue (>= 100k row writes/s in batches of hundreds to thousands), so nothing on it parses
// SQL, copies row bytes, or allocates per row.

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "batch_check.h"
#include "fmt/format.h"
#include "migrations.h"
#include "sqlite_checkpointer.h"
#include "store/store.h"

namespace drover::store {
namespace {

using internal::kSqliteMigrationCount;
using internal::kSqliteMigrations;
using internal::Migration;

// How long a statement waits for a lock held by another connection (a `sqlite3` shell, a
// backup) before failing with SQLITE_BUSY.
constexpr int kBusyTimeoutMs = 5000;
// Page cache size in KiB (negative cache_size means KiB in SQLite): 64 MiB keeps the task
// table and its indexes in memory for queues of a few hundred thousand tasks.
constexpr int kCacheSizeKiB = 64 * 1024;
// Checkpoint the WAL into the database every this many pages (4 KiB each) instead of the
// default 1000. A checkpoint writes each dirty page once however often it changed since the
// last one, and it is the only fsync under synchronous=NORMAL, so rarer checkpoints cut the
// bytes written per row: about +20% commit throughput measured when the driver was written
// (200k rows of ~300 bytes, batches of 1000). The cost is a WAL of up to ~40 MiB, and a
// longer WAL scan when the database is opened after a crash.
constexpr int kWalAutocheckpointPages = 10000;
// The writer checkpoints inline (as SQLite's own autocheckpoint does) only once the WAL holds
// this many pages: the checkpointer thread fell that far behind a writer that never pauses.
constexpr int kWalHardLimitPages = 4 * kWalAutocheckpointPages;
// After a checkpoint, a WAL that grew past this (e.g. while a long read blocked checkpoints)
// is truncated back to it, so a burst does not leave a huge file behind.
constexpr int64_t kJournalSizeLimitBytes = 64 << 20;

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

int NewestMigrationVersion() {
  return kSqliteMigrationCount == 0 ? 0 : kSqliteMigrations[kSqliteMigrationCount - 1].version;
}

// "sqlite:<path>: <what>: <sqlite's message> (code N)". Call before anything else runs on
// `db`: the message is the connection's last error.
std::string SqliteMessage(sqlite3* db, std::string_view path, std::string_view what) {
  return fmt::format("sqlite:{}: {}: {} (sqlite code {})", path, what, sqlite3_errmsg(db),
                     sqlite3_extended_errcode(db));
}

// The error for a failure while opening: a file that is not a database is the caller's
// problem (FailedPrecondition); anything else is reported as Internal.
absl::Status OpenError(sqlite3* db, std::string_view path, std::string_view what) {
  if ((sqlite3_extended_errcode(db) & 0xff) == SQLITE_NOTADB) {
    return absl::FailedPreconditionError(
        fmt::format("sqlite:{}: not a SQLite database ({}: {})", path, what, sqlite3_errmsg(db)));
  }
  return absl::InternalError(SqliteMessage(db, path, what));
}

// Runs SQL that returns no rows we need (pragmas that set, DDL, transaction control).
absl::Status Exec(sqlite3* db, std::string_view path, const char* sql, std::string_view what) {
  if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
    return OpenError(db, path, what);
  }
  return absl::OkStatus();
}

// Runs a single-row query and returns its first column as an integer / as text.
absl::StatusOr<int64_t> QueryInt(sqlite3* db, std::string_view path, const char* sql) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &raw, nullptr) != SQLITE_OK) {
    return OpenError(db, path, sql);
  }
  StmtPtr stmt(raw);
  if (sqlite3_step(stmt.get()) != SQLITE_ROW) return OpenError(db, path, sql);
  return sqlite3_column_int64(stmt.get(), 0);
}

absl::StatusOr<std::string> QueryText(sqlite3* db, std::string_view path, const char* sql) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &raw, nullptr) != SQLITE_OK) {
    return OpenError(db, path, sql);
  }
  StmtPtr stmt(raw);
  if (sqlite3_step(stmt.get()) != SQLITE_ROW) return OpenError(db, path, sql);
  const unsigned char* text = sqlite3_column_text(stmt.get(), 0);
  return text == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(text));
}

// Rolls back the open transaction, if any. Used on error paths, where the error to report was
// already captured: ROLLBACK's own outcome would only overwrite it.
void RollbackIfOpen(sqlite3* db) {
  if (!sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
}

// Brings the database from `version` to the newest migration, one transaction per migration,
// so a failure leaves it at the last migration that fully applied.
absl::Status ApplyMigrations(sqlite3* db, std::string_view path, int64_t version) {
  for (int i = 0; i < kSqliteMigrationCount; ++i) {
    const Migration& m = kSqliteMigrations[i];
    if (m.version <= version) continue;
    const std::string what = fmt::format("migration {}", m.name);
    if (auto s = Exec(db, path, "BEGIN IMMEDIATE", what + ": begin"); !s.ok()) return s;
    // Another process may have migrated between our first read and taking the write lock:
    // read the version again under the lock so no migration ever runs twice.
    absl::StatusOr<int64_t> now = QueryInt(db, path, "PRAGMA user_version");
    if (!now.ok()) {
      RollbackIfOpen(db);
      return now.status();
    }
    if (*now >= m.version) {
      RollbackIfOpen(db);
      version = *now;
      continue;
    }
    const std::string set_version = fmt::format("PRAGMA user_version = {}", m.version);
    absl::Status s = Exec(db, path, m.sql, what);
    if (s.ok()) s = Exec(db, path, set_version.c_str(), what + ": set user_version");
    if (s.ok()) s = Exec(db, path, "COMMIT", what + ": commit");
    if (!s.ok()) {
      RollbackIfOpen(db);
      // A migration that fails is a bug in drover or a damaged file, not a caller error.
      return absl::InternalError(s.message());
    }
    version = m.version;
  }
  return absl::OkStatus();
}

// Resets a statement (and drops its bindings) when the scope ends, on every path: a
// statement left stepped keeps a read snapshot open and pins the WAL.
class ResetOnExit {
 public:
  explicit ResetOnExit(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ResetOnExit(const ResetOnExit&) = delete;
  ResetOnExit& operator=(const ResetOnExit&) = delete;
  ~ResetOnExit() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

 private:
  sqlite3_stmt* stmt_;
};

// Binds text or a blob without copying (SQLITE_STATIC): the caller keeps `bytes` alive and
// unchanged until the statement is reset. A zero-length value binds as '' / x'', never NULL,
// because std::string::data() is never null.
int BindText(sqlite3_stmt* stmt, int index, const std::string& bytes) {
  return sqlite3_bind_text64(stmt, index, bytes.data(), bytes.size(), SQLITE_STATIC, SQLITE_UTF8);
}
int BindBlob(sqlite3_stmt* stmt, int index, const std::string& bytes) {
  return sqlite3_bind_blob64(stmt, index, bytes.data(), bytes.size(), SQLITE_STATIC);
}

// Copies column `index` (TEXT or BLOB) out of the current row. Reads the pointer before the
// size, as SQLite recommends; bytes after a NUL are kept.
std::string ColumnText(sqlite3_stmt* stmt, int index) {
  const void* p = sqlite3_column_text(stmt, index);
  const int n = sqlite3_column_bytes(stmt, index);
  return p == nullptr ? std::string() : std::string(static_cast<const char*>(p), n);
}
std::string ColumnBlob(sqlite3_stmt* stmt, int index) {
  const void* p = sqlite3_column_blob(stmt, index);
  const int n = sqlite3_column_bytes(stmt, index);
  return p == nullptr ? std::string() : std::string(static_cast<const char*>(p), n);
}

// Reads the current row of a workflow SELECT: id, tenant, state, updated_unix_ms, blob.
WorkflowRow ReadWorkflowRow(sqlite3_stmt* stmt) {
  WorkflowRow row;
  row.id = static_cast<uint64_t>(sqlite3_column_int64(stmt, 0));
  row.tenant = ColumnText(stmt, 1);
  row.state = sqlite3_column_int(stmt, 2);
  row.updated_unix_ms = sqlite3_column_int64(stmt, 3);
  row.blob = ColumnBlob(stmt, 4);
  return row;
}

// Reads the current row of a task SELECT, whose columns must be, in this order:
// id, tenant, type, state, priority, updated_unix_ms, blob.
TaskRow ReadTaskRow(sqlite3_stmt* stmt) {
  TaskRow row;
  row.id = static_cast<uint64_t>(sqlite3_column_int64(stmt, 0));
  row.tenant = ColumnText(stmt, 1);
  row.type = ColumnText(stmt, 2);
  row.state = sqlite3_column_int(stmt, 3);
  row.priority = sqlite3_column_int(stmt, 4);
  row.updated_unix_ms = sqlite3_column_int64(stmt, 5);
  row.blob = ColumnBlob(stmt, 6);
  return row;
}

// Reads the current row of a load history SELECT, whose columns must be, in this order:
// minute, arrivals, dispatches, completions, service_mean_s, service_p95_s, queue_depth,
// agents_starting, agents_idle, agents_busy, agents_draining.
LoadMinute ReadLoadRow(sqlite3_stmt* stmt, const std::string& pool) {
  LoadMinute row;
  row.pool = pool;
  row.minute = sqlite3_column_int64(stmt, 0);
  row.arrivals = sqlite3_column_int64(stmt, 1);
  row.dispatches = sqlite3_column_int64(stmt, 2);
  row.completions = sqlite3_column_int64(stmt, 3);
  row.service_mean_s = sqlite3_column_double(stmt, 4);
  row.service_p95_s = sqlite3_column_double(stmt, 5);
  row.queue_depth = sqlite3_column_int64(stmt, 6);
  row.agents_starting = sqlite3_column_int(stmt, 7);
  row.agents_idle = sqlite3_column_int(stmt, 8);
  row.agents_busy = sqlite3_column_int(stmt, 9);
  row.agents_draining = sqlite3_column_int(stmt, 10);
  return row;
}

// The event reads (EventQuery): one text per index it leads with; the leading term names
// the column literally with `<> 0` / `<> ''` so SQLite may use the partial index. A type
// filter is ",a,b.c," and matches a type or its subject (what comes before the dot).
std::string ReadEventsSql(const char* lead) {
  return std::string(
             "SELECT seq, unix_ms, type, tenant, task_id, workflow_id, pool, blob FROM events "
             "WHERE ") +
         lead +
         " seq > ?1 AND unix_ms >= ?2 AND (?3 = 0 OR task_id = ?3) AND "
         "(?4 = 0 OR workflow_id = ?4) AND (?5 = '' OR pool = ?5) AND (?6 = '' OR tenant = ?6) "
         "AND (?7 = '' OR instr(?7, ',' || type || ',') > 0 OR "
         "instr(?7, ',' || substr(type, 1, instr(type, '.') - 1) || ',') > 0) "
         "ORDER BY seq LIMIT ?8";
}
const std::string kReadEvents[4] = {
    ReadEventsSql(""),
    ReadEventsSql("task_id <> 0 AND task_id = ?3 AND"),
    ReadEventsSql("workflow_id <> 0 AND workflow_id = ?4 AND"),
    ReadEventsSql("pool <> '' AND pool = ?5 AND"),
};

class SqliteStore final : public Store {
 public:
  SqliteStore(std::string path, DbPtr db) : path_(std::move(path)), db_(std::move(db)) {}

  // Moves checkpoints off the commit path (SqliteCheckpointer); without one, SQLite's inline
  // autocheckpoint stays.
  void StartCheckpointer(Durability durability) {
    checkpointer_ = SqliteCheckpointer::Start(path_, durability, kBusyTimeoutMs);
    if (checkpointer_ == nullptr) return;
    sqlite3_wal_hook(
        db_.get(),
        [](void* arg, sqlite3* db, const char* name, int frames) -> int {
          auto* self = static_cast<SqliteStore*>(arg);
          if (frames >= kWalHardLimitPages) {
            (void)sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
          } else if (frames >= kWalAutocheckpointPages) {
            self->checkpointer_->Wake();
          }
          return SQLITE_OK;
        },
        this);
  }

  // Prepares every statement the store uses. Called once, after the migrations.
  absl::Status Prepare();

  std::string Describe() const override { return "sqlite:" + path_; }
  absl::Status Commit(const WriteBatch& batch) override;
  absl::Status LoadTasks(const std::function<void(TaskRow&&)>& fn) override;
  absl::StatusOr<std::optional<TaskRow>> GetTask(uint64_t id) override;
  absl::StatusOr<std::optional<WorkflowRow>> GetWorkflow(uint64_t id) override;
  absl::StatusOr<std::optional<std::string>> GetMeta(const std::string& key) override;
  absl::StatusOr<PruneResult> PruneRows(const PruneStep& step) override;
  absl::Status LoadWorkflows(const std::function<void(WorkflowRow&&)>& fn) override;
  using Store::ReadLoadHistory;
  absl::Status ReadLoadHistory(const std::string& pool, int64_t from_minute, int64_t to_minute,
                               int64_t max_rows,
                               const std::function<void(LoadMinute&&)>& fn) override;
  absl::StatusOr<int64_t> PruneLoadHistory(int64_t before_minute) override;
  absl::StatusOr<std::vector<std::string>> LoadHistoryPools() override;
  absl::Status ReadAudit(const AuditQuery& query,
                         const std::function<void(AuditRow&&)>& fn) override;
  absl::StatusOr<int64_t> PruneAudit(int64_t before_unix_ms) override;
  absl::Status ReadEvents(const EventQuery& query,
                          const std::function<void(EventRow&&)>& fn) override;
  absl::StatusOr<int64_t> PruneEvents(int64_t before_unix_ms) override;
  absl::StatusOr<int64_t> MaxEventSeq() override;
  StoreStats Stats() const override { return stats_; }

 private:
  absl::Status Internal(std::string_view what) const {
    return absl::InternalError(SqliteMessage(db_.get(), path_, what));
  }
  // Steps a statement that returns no rows and resets it. `what` is built only on error.
  template <typename What>
  absl::Status Run(sqlite3_stmt* stmt, const What& what);
  // Everything between (and including) BEGIN and COMMIT; the caller rolls back on error.
  absl::Status WriteBatchInTransaction(const WriteBatch& batch);

  const std::string path_;
  // Declared before the statements so it is destroyed after them: sqlite3_close needs every
  // statement finalized.
  DbPtr db_;
  StmtPtr begin_;
  StmtPtr commit_;
  StmtPtr upsert_task_;
  StmtPtr delete_task_;
  StmtPtr upsert_meta_;
  StmtPtr get_task_;
  StmtPtr get_workflow_;
  StmtPtr get_meta_;
  StmtPtr load_tasks_;
  StmtPtr prune_scan_;
  StmtPtr upsert_workflow_;
  StmtPtr load_workflows_;
  StmtPtr upsert_load_;
  StmtPtr read_load_;
  StmtPtr prune_load_;
  StmtPtr load_pools_;
  StmtPtr append_audit_;
  StmtPtr read_audit_;
  StmtPtr prune_audit_;
  StmtPtr append_event_;
  // One read per index: by seq, or by task, workflow or pool (then seq).
  StmtPtr read_events_[4];
  StmtPtr event_at_;
  StmtPtr min_event_seq_;
  StmtPtr prune_events_;
  // The first seq of an event at or after `unix_ms` (FirstEventAtOrAfter), nullopt if none.
  absl::StatusOr<std::optional<int64_t>> FirstEventSince(int64_t unix_ms);
  StmtPtr max_event_seq_;
  StoreStats stats_;
  // True while LoadTasks runs its callback; Commit and LoadTasks refuse to run then.
  bool loading_ = false;
  // Last: stopped (and its connection closed) before the writer's connection closes, so
  // the writer's close is the last and folds the WAL into the database.
  std::unique_ptr<SqliteCheckpointer> checkpointer_;
};

absl::Status SqliteStore::Prepare() {
  struct Spec {
    StmtPtr* stmt;
    const char* name;  // for the error message
    const char* sql;
  };
  const Spec specs[] = {
      {&begin_, "begin", "BEGIN IMMEDIATE"},
      {&commit_, "commit", "COMMIT"},
      {&upsert_task_, "upsert task",
       "INSERT INTO tasks (id, tenant, type, state, priority, updated_unix_ms, blob) "
       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
       "ON CONFLICT (id) DO UPDATE SET tenant = excluded.tenant, type = excluded.type, "
       "state = excluded.state, priority = excluded.priority, "
       "updated_unix_ms = excluded.updated_unix_ms, blob = excluded.blob"},
      {&delete_task_, "delete task", "DELETE FROM tasks WHERE id = ?1"},
      {&upsert_workflow_, "upsert workflow",
       "INSERT INTO workflows (id, tenant, state, updated_unix_ms, blob) "
       "VALUES (?1, ?2, ?3, ?4, ?5) "
       "ON CONFLICT (id) DO UPDATE SET tenant = excluded.tenant, state = excluded.state, "
       "updated_unix_ms = excluded.updated_unix_ms, blob = excluded.blob"},
      {&load_workflows_, "load workflows",
       "SELECT id, tenant, state, updated_unix_ms, blob FROM workflows ORDER BY id"},
      {&upsert_meta_, "upsert meta",
       "INSERT INTO meta (key, value) VALUES (?1, ?2) "
       "ON CONFLICT (key) DO UPDATE SET value = excluded.value"},
      {&get_task_, "get task",
       "SELECT id, tenant, type, state, priority, updated_unix_ms, blob FROM tasks WHERE id = ?1"},
      {&get_meta_, "get meta", "SELECT value FROM meta WHERE key = ?1"},
      {&get_workflow_, "get workflow",
       "SELECT id, tenant, state, updated_unix_ms, blob FROM workflows WHERE id = ?1"},
      {&load_tasks_, "load tasks",
       "SELECT id, tenant, type, state, priority, updated_unix_ms, blob FROM tasks ORDER BY id"},
      // One row past the window, so the step knows where the next one starts.
      {&prune_scan_, "prune scan",
       "SELECT id, state, updated_unix_ms FROM tasks WHERE id >= ?1 ORDER BY id LIMIT ?2 + 1"},
      {&upsert_load_, "upsert load history",
       "INSERT INTO load_history (pool, minute, arrivals, dispatches, completions, "
       "service_mean_s, service_p95_s, queue_depth, agents_starting, agents_idle, agents_busy, "
       "agents_draining) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) "
       "ON CONFLICT (pool, minute) DO UPDATE SET arrivals = excluded.arrivals, "
       "dispatches = excluded.dispatches, completions = excluded.completions, "
       "service_mean_s = excluded.service_mean_s, service_p95_s = excluded.service_p95_s, "
       "queue_depth = excluded.queue_depth, agents_starting = excluded.agents_starting, "
       "agents_idle = excluded.agents_idle, agents_busy = excluded.agents_busy, "
       "agents_draining = excluded.agents_draining"},
      // LIMIT -1 is no limit.
      {&read_load_, "read load history",
       "SELECT minute, arrivals, dispatches, completions, service_mean_s, service_p95_s, "
       "queue_depth, agents_starting, agents_idle, agents_busy, agents_draining "
       "FROM load_history WHERE pool = ?1 AND minute >= ?2 AND minute < ?3 "
       "ORDER BY minute LIMIT ?4"},
      {&prune_load_, "prune load history", "DELETE FROM load_history WHERE minute < ?1"},
      // SELECT DISTINCT would walk every row; this jumps from one pool to the next through
      // the primary key (a loose index scan), one b-tree search per pool.
      {&load_pools_, "load history pools",
       "WITH RECURSIVE p(pool) AS (SELECT min(pool) FROM load_history UNION ALL "
       "SELECT (SELECT min(pool) FROM load_history WHERE pool > p.pool) FROM p "
       "WHERE p.pool IS NOT NULL) SELECT pool FROM p WHERE pool IS NOT NULL"},
      {&append_audit_, "append audit",
       "INSERT INTO audit (unix_ms, principal, tenant, blob) VALUES (?1, ?2, ?3, ?4)"},
      {&read_audit_, "read audit",
       "SELECT seq, unix_ms, principal, tenant, blob FROM audit WHERE seq > ?1 AND "
       "unix_ms >= ?2 AND (?3 = '' OR principal = ?3) AND (?4 = '' OR tenant = ?4) "
       "ORDER BY seq LIMIT ?5"},
      {&prune_audit_, "prune audit", "DELETE FROM audit WHERE unix_ms < ?1"},
      {&append_event_, "append event",
       "INSERT INTO events (seq, unix_ms, type, tenant, task_id, workflow_id, pool, blob) "
       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (seq) DO NOTHING"},
      {&read_events_[0], "read events", kReadEvents[0].c_str()},
      {&read_events_[1], "read task events", kReadEvents[1].c_str()},
      {&read_events_[2], "read workflow events", kReadEvents[2].c_str()},
      {&read_events_[3], "read pool events", kReadEvents[3].c_str()},
      {&event_at_, "event at",
       "SELECT seq, unix_ms FROM events WHERE seq >= ?1 ORDER BY seq LIMIT 1"},
      {&min_event_seq_, "min event seq", "SELECT coalesce(min(seq), 0) FROM events"},
      {&prune_events_, "prune events", "DELETE FROM events WHERE seq < ?1"},
      {&max_event_seq_, "max event seq", "SELECT coalesce(max(seq), 0) FROM events"},
  };
  for (const Spec& spec : specs) {
    sqlite3_stmt* raw = nullptr;
    // PERSISTENT: these statements live as long as the connection, so SQLite should not
    // take their memory from its short-lived lookaside pool.
    if (sqlite3_prepare_v3(db_.get(), spec.sql, -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr) !=
        SQLITE_OK) {
      return Internal(fmt::format("prepare {} statement", spec.name));
    }
    spec.stmt->reset(raw);
  }
  return absl::OkStatus();
}

template <typename What>
absl::Status SqliteStore::Run(sqlite3_stmt* stmt, const What& what) {
  const int rc = sqlite3_step(stmt);
  absl::Status status;
  // Capture the message before sqlite3_reset, which may replace it.
  if (rc != SQLITE_DONE) status = Internal(what());
  sqlite3_reset(stmt);
  return status;
}

absl::Status SqliteStore::WriteBatchInTransaction(const WriteBatch& batch) {
  if (auto s = Run(begin_.get(), [] { return "commit: begin"; }); !s.ok()) return s;

  // Each parameter is bound again for every row, so a reset (without clear_bindings) between
  // rows suffices; the caller clears the bindings once the batch is done, so no statement
  // keeps pointers into the caller's rows (bound SQLITE_STATIC) after Commit returns.
  sqlite3_stmt* upsert = upsert_task_.get();
  for (const TaskRow& row : batch.upserts) {
    int rc = sqlite3_bind_int64(upsert, 1, static_cast<int64_t>(row.id));
    if (rc == SQLITE_OK) rc = BindText(upsert, 2, row.tenant);
    if (rc == SQLITE_OK) rc = BindText(upsert, 3, row.type);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(upsert, 4, row.state);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(upsert, 5, row.priority);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(upsert, 6, row.updated_unix_ms);
    if (rc == SQLITE_OK) rc = BindBlob(upsert, 7, row.blob);
    if (rc != SQLITE_OK) return Internal(fmt::format("commit: bind task {}", row.id));
    auto s = Run(upsert, [&] { return fmt::format("commit: upsert task {}", row.id); });
    if (!s.ok()) return s;
  }

  sqlite3_stmt* del = delete_task_.get();
  for (uint64_t id : batch.deletes) {
    if (sqlite3_bind_int64(del, 1, static_cast<int64_t>(id)) != SQLITE_OK) {
      return Internal(fmt::format("commit: bind delete of task {}", id));
    }
    auto s = Run(del, [&] { return fmt::format("commit: delete task {}", id); });
    if (!s.ok()) return s;
  }

  sqlite3_stmt* wf = upsert_workflow_.get();
  for (const WorkflowRow& row : batch.workflows) {
    int rc = sqlite3_bind_int64(wf, 1, static_cast<int64_t>(row.id));
    if (rc == SQLITE_OK) rc = BindText(wf, 2, row.tenant);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(wf, 3, row.state);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(wf, 4, row.updated_unix_ms);
    if (rc == SQLITE_OK) rc = BindBlob(wf, 5, row.blob);
    if (rc != SQLITE_OK) return Internal(fmt::format("commit: bind workflow {}", row.id));
    auto s = Run(wf, [&] { return fmt::format("commit: upsert workflow {}", row.id); });
    if (!s.ok()) return s;
  }

  sqlite3_stmt* meta = upsert_meta_.get();
  for (const auto& kv : batch.meta) {
    const std::string& key = kv.first;
    const std::string& value = kv.second;
    int rc = BindText(meta, 1, key);
    if (rc == SQLITE_OK) rc = BindText(meta, 2, value);
    if (rc != SQLITE_OK) return Internal(fmt::format("commit: bind meta \"{}\"", key));
    auto s = Run(meta, [&] { return fmt::format("commit: set meta \"{}\"", key); });
    if (!s.ok()) return s;
  }

  sqlite3_stmt* load = upsert_load_.get();
  for (const LoadMinute& row : batch.load) {
    int rc = BindText(load, 1, row.pool);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(load, 2, row.minute);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(load, 3, row.arrivals);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(load, 4, row.dispatches);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(load, 5, row.completions);
    if (rc == SQLITE_OK) rc = sqlite3_bind_double(load, 6, row.service_mean_s);
    if (rc == SQLITE_OK) rc = sqlite3_bind_double(load, 7, row.service_p95_s);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(load, 8, row.queue_depth);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(load, 9, row.agents_starting);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(load, 10, row.agents_idle);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(load, 11, row.agents_busy);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int(load, 12, row.agents_draining);
    if (rc != SQLITE_OK) {
      return Internal(fmt::format("commit: bind load history {}/{}", row.pool, row.minute));
    }
    auto s = Run(load, [&] {
      return fmt::format("commit: upsert load history {}/{}", row.pool, row.minute);
    });
    if (!s.ok()) return s;
  }

  sqlite3_stmt* audit = append_audit_.get();
  for (const AuditRow& row : batch.audit) {
    int rc = sqlite3_bind_int64(audit, 1, row.unix_ms);
    if (rc == SQLITE_OK) rc = BindText(audit, 2, row.principal);
    if (rc == SQLITE_OK) rc = BindText(audit, 3, row.tenant);
    if (rc == SQLITE_OK) rc = BindBlob(audit, 4, row.blob);
    if (rc != SQLITE_OK) return Internal("commit: bind audit record");
    auto s = Run(audit, [] { return "commit: append audit record"; });
    if (!s.ok()) return s;
  }

  sqlite3_stmt* ev = append_event_.get();
  for (const EventRow& row : batch.events) {
    int rc = sqlite3_bind_int64(ev, 1, row.seq);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(ev, 2, row.unix_ms);
    if (rc == SQLITE_OK) rc = BindText(ev, 3, row.type);
    if (rc == SQLITE_OK) rc = BindText(ev, 4, row.tenant);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(ev, 5, static_cast<int64_t>(row.task_id));
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(ev, 6, static_cast<int64_t>(row.workflow_id));
    if (rc == SQLITE_OK) rc = BindText(ev, 7, row.pool);
    if (rc == SQLITE_OK) rc = BindBlob(ev, 8, row.blob);
    if (rc != SQLITE_OK) return Internal(fmt::format("commit: bind event {}", row.seq));
    auto s = Run(ev, [&] { return fmt::format("commit: append event {}", row.seq); });
    if (!s.ok()) return s;
  }

  return Run(commit_.get(), [] { return "commit: commit"; });
}

absl::Status SqliteStore::Commit(const WriteBatch& batch) {
  if (loading_) {
    return absl::FailedPreconditionError(
        fmt::format("sqlite:{}: Commit called from inside a LoadTasks callback", path_));
  }
  if (auto s = internal::CheckBatch(batch, Describe()); !s.ok()) return s;
  if (batch.empty()) return absl::OkStatus();  // nothing to make durable; not a commit

  absl::Status status = WriteBatchInTransaction(batch);
  sqlite3_clear_bindings(upsert_task_.get());
  sqlite3_clear_bindings(delete_task_.get());
  sqlite3_clear_bindings(upsert_meta_.get());
  sqlite3_clear_bindings(upsert_workflow_.get());
  sqlite3_clear_bindings(upsert_load_.get());
  sqlite3_clear_bindings(append_audit_.get());
  sqlite3_clear_bindings(append_event_.get());
  if (!status.ok()) {
    // A failed statement or a failed COMMIT can leave the transaction open; nothing of the
    // batch may become visible, so undo it all.
    RollbackIfOpen(db_.get());
    return status;
  }
  ++stats_.commits;
  stats_.rows_written += internal::RowsIn(batch);
  stats_.load_rows_written += static_cast<int64_t>(batch.load.size());
  stats_.audit_rows_written += static_cast<int64_t>(batch.audit.size());
  stats_.event_rows_written += static_cast<int64_t>(batch.events.size());
  return absl::OkStatus();
}

absl::Status SqliteStore::LoadTasks(const std::function<void(TaskRow&&)>& fn) {
  if (!fn) return absl::InvalidArgumentError("LoadTasks: empty callback");
  if (loading_) {
    return absl::FailedPreconditionError(
        fmt::format("sqlite:{}: LoadTasks called from inside a LoadTasks callback", path_));
  }
  loading_ = true;
  sqlite3_stmt* stmt = load_tasks_.get();
  ResetOnExit reset(stmt);
  // One statement is one read transaction: the callback sees a consistent snapshot even if
  // another connection writes meanwhile.
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) fn(ReadTaskRow(stmt));
  loading_ = false;
  if (rc != SQLITE_DONE) return Internal("load tasks");
  return absl::OkStatus();
}

absl::Status SqliteStore::LoadWorkflows(const std::function<void(WorkflowRow&&)>& fn) {
  if (!fn) return absl::InvalidArgumentError("LoadWorkflows: empty callback");
  sqlite3_stmt* stmt = load_workflows_.get();
  ResetOnExit reset(stmt);
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) fn(ReadWorkflowRow(stmt));
  if (rc != SQLITE_DONE) return Internal("load workflows");
  return absl::OkStatus();
}

absl::StatusOr<std::optional<WorkflowRow>> SqliteStore::GetWorkflow(uint64_t id) {
  if (id > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
  sqlite3_stmt* stmt = get_workflow_.get();
  ResetOnExit reset(stmt);
  if (sqlite3_bind_int64(stmt, 1, static_cast<int64_t>(id)) != SQLITE_OK) {
    return Internal(fmt::format("get workflow {}: bind", id));
  }
  const int rc = sqlite3_step(stmt);
  if (rc == SQLITE_DONE) return std::nullopt;
  if (rc != SQLITE_ROW) return Internal(fmt::format("get workflow {}", id));
  return ReadWorkflowRow(stmt);
}

absl::StatusOr<std::optional<TaskRow>> SqliteStore::GetTask(uint64_t id) {
  // No stored id exceeds kMaxTaskId (Commit refuses them), so such an id is simply unknown.
  if (id > internal::kMaxTaskId) return std::nullopt;
  sqlite3_stmt* stmt = get_task_.get();
  ResetOnExit reset(stmt);
  if (sqlite3_bind_int64(stmt, 1, static_cast<int64_t>(id)) != SQLITE_OK) {
    return Internal(fmt::format("get task {}: bind", id));
  }
  const int rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) return ReadTaskRow(stmt);
  if (rc == SQLITE_DONE) return std::nullopt;
  return Internal(fmt::format("get task {}", id));
}

absl::StatusOr<std::optional<std::string>> SqliteStore::GetMeta(const std::string& key) {
  sqlite3_stmt* stmt = get_meta_.get();
  ResetOnExit reset(stmt);
  if (BindText(stmt, 1, key) != SQLITE_OK) {
    return Internal(fmt::format("get meta \"{}\": bind", key));
  }
  const int rc = sqlite3_step(stmt);
  if (rc == SQLITE_ROW) return ColumnText(stmt, 0);
  if (rc == SQLITE_DONE) return std::nullopt;
  return Internal(fmt::format("get meta \"{}\"", key));
}

absl::StatusOr<PruneResult> SqliteStore::PruneRows(const PruneStep& step) {
  if (loading_) {
    return absl::FailedPreconditionError(
        fmt::format("sqlite:{}: PruneRows called from inside a LoadTasks callback", path_));
  }
  if (auto s = internal::CheckPruneStep(step, Describe()); !s.ok()) return s;
  // The scan and the deletes share one write transaction, so a row cannot change between
  // being judged prunable and being deleted.
  if (auto s = Run(begin_.get(), [] { return "prune: begin"; }); !s.ok()) return s;
  PruneResult result;
  std::vector<int64_t> doomed;
  absl::Status status;
  {
    sqlite3_stmt* scan = prune_scan_.get();
    ResetOnExit reset(scan);
    if (sqlite3_bind_int64(scan, 1, static_cast<int64_t>(step.from_id)) != SQLITE_OK ||
        sqlite3_bind_int64(scan, 2, step.max_scan) != SQLITE_OK) {
      status = Internal("prune: bind scan");
    }
    int rc = SQLITE_DONE;
    while (status.ok() && (rc = sqlite3_step(scan)) == SQLITE_ROW) {
      const int64_t id = sqlite3_column_int64(scan, 0);
      if (result.scanned == step.max_scan) {
        result.next_id = static_cast<uint64_t>(id);
        break;
      }
      ++result.scanned;
      if (internal::Prunable(step, sqlite3_column_int(scan, 1), sqlite3_column_int64(scan, 2))) {
        doomed.push_back(id);
      }
    }
    if (status.ok() && rc != SQLITE_ROW && rc != SQLITE_DONE) status = Internal("prune: scan");
  }
  sqlite3_stmt* del = delete_task_.get();
  for (size_t i = 0; status.ok() && i < doomed.size(); ++i) {
    if (sqlite3_bind_int64(del, 1, doomed[i]) != SQLITE_OK) {
      status = Internal(fmt::format("prune: bind delete of task {}", doomed[i]));
      break;
    }
    status = Run(del, [&] { return fmt::format("prune: delete task {}", doomed[i]); });
  }
  if (status.ok()) status = Run(commit_.get(), [] { return "prune: commit"; });
  if (!status.ok()) {
    RollbackIfOpen(db_.get());
    return status;
  }
  result.deleted = static_cast<int64_t>(doomed.size());
  stats_.rows_pruned += result.deleted;
  return result;
}

absl::Status SqliteStore::ReadLoadHistory(const std::string& pool, int64_t from_minute,
                                          int64_t to_minute, int64_t max_rows,
                                          const std::function<void(LoadMinute&&)>& fn) {
  if (!fn) return absl::InvalidArgumentError("ReadLoadHistory: empty callback");
  sqlite3_stmt* stmt = read_load_.get();
  ResetOnExit reset(stmt);
  if (BindText(stmt, 1, pool) != SQLITE_OK ||
      sqlite3_bind_int64(stmt, 2, from_minute) != SQLITE_OK ||
      sqlite3_bind_int64(stmt, 3, to_minute) != SQLITE_OK ||
      sqlite3_bind_int64(stmt, 4, max_rows > 0 ? max_rows : -1) != SQLITE_OK) {
    return Internal(fmt::format("read load history of {}: bind", pool));
  }
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) fn(ReadLoadRow(stmt, pool));
  if (rc != SQLITE_DONE) return Internal(fmt::format("read load history of {}", pool));
  return absl::OkStatus();
}

absl::StatusOr<int64_t> SqliteStore::PruneLoadHistory(int64_t before_minute) {
  if (loading_) {
    return absl::FailedPreconditionError(
        fmt::format("sqlite:{}: PruneLoadHistory called from inside a LoadTasks callback", path_));
  }
  sqlite3_stmt* stmt = prune_load_.get();
  ResetOnExit reset(stmt);
  if (sqlite3_bind_int64(stmt, 1, before_minute) != SQLITE_OK) {
    return Internal("prune load history: bind");
  }
  // One statement outside BEGIN is its own transaction.
  if (sqlite3_step(stmt) != SQLITE_DONE) return Internal("prune load history");
  const int64_t deleted = sqlite3_changes64(db_.get());
  stats_.load_rows_pruned += deleted;
  return deleted;
}

absl::StatusOr<std::vector<std::string>> SqliteStore::LoadHistoryPools() {
  sqlite3_stmt* stmt = load_pools_.get();
  ResetOnExit reset(stmt);
  std::vector<std::string> pools;
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) pools.push_back(ColumnText(stmt, 0));
  if (rc != SQLITE_DONE) return Internal("load history pools");
  return pools;
}

absl::Status SqliteStore::ReadAudit(const AuditQuery& query,
                                    const std::function<void(AuditRow&&)>& fn) {
  if (query.limit < 1) {
    return absl::InvalidArgumentError(
        fmt::format("sqlite:{}: read audit: limit must be at least 1, got {}", path_, query.limit));
  }
  sqlite3_stmt* stmt = read_audit_.get();
  ResetOnExit reset(stmt);
  int rc = sqlite3_bind_int64(stmt, 1, query.after_seq);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(stmt, 2, query.since_unix_ms);
  if (rc == SQLITE_OK) rc = BindText(stmt, 3, query.principal);
  if (rc == SQLITE_OK) rc = BindText(stmt, 4, query.tenant);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(stmt, 5, query.limit);
  if (rc != SQLITE_OK) return Internal("read audit: bind");
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    AuditRow row;
    row.seq = sqlite3_column_int64(stmt, 0);
    row.unix_ms = sqlite3_column_int64(stmt, 1);
    row.principal = ColumnText(stmt, 2);
    row.tenant = ColumnText(stmt, 3);
    row.blob = ColumnBlob(stmt, 4);
    fn(std::move(row));
  }
  sqlite3_clear_bindings(stmt);
  if (rc != SQLITE_DONE) return Internal("read audit");
  return absl::OkStatus();
}

absl::StatusOr<int64_t> SqliteStore::PruneAudit(int64_t before_unix_ms) {
  sqlite3_stmt* stmt = prune_audit_.get();
  ResetOnExit reset(stmt);
  if (sqlite3_bind_int64(stmt, 1, before_unix_ms) != SQLITE_OK)
    return Internal("prune audit: bind");
  if (sqlite3_step(stmt) != SQLITE_DONE) return Internal("prune audit");
  const int64_t deleted = sqlite3_changes64(db_.get());
  stats_.audit_rows_pruned += deleted;
  return deleted;
}

absl::Status SqliteStore::ReadEvents(const EventQuery& query,
                                     const std::function<void(EventRow&&)>& fn) {
  if (query.limit < 1) {
    return absl::InvalidArgumentError(fmt::format(
        "sqlite:{}: read events: limit must be at least 1, got {}", path_, query.limit));
  }
  int64_t after = query.after_seq;
  if (query.since_unix_ms > 0) {
    // Start from the first event at or after `since`; the row filter drops any earlier one
    // after it (a clock step back).
    absl::StatusOr<std::optional<int64_t>> first = FirstEventSince(query.since_unix_ms);
    if (!first.ok()) return first.status();
    if (!first->has_value()) return absl::OkStatus();  // none since
    after = std::max<int64_t>(after, **first - 1);
  }
  const std::string types = internal::EventTypesFilter(query.types);
  const int index = query.task_id != 0       ? 1
                    : query.workflow_id != 0 ? 2
                    : !query.pool.empty()    ? 3
                                             : 0;
  sqlite3_stmt* stmt = read_events_[index].get();
  ResetOnExit reset(stmt);
  int rc = sqlite3_bind_int64(stmt, 1, after);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(stmt, 2, query.since_unix_ms);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(stmt, 3, static_cast<int64_t>(query.task_id));
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(stmt, 4, static_cast<int64_t>(query.workflow_id));
  if (rc == SQLITE_OK) rc = BindText(stmt, 5, query.pool);
  if (rc == SQLITE_OK) rc = BindText(stmt, 6, query.tenant);
  if (rc == SQLITE_OK) rc = BindText(stmt, 7, types);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(stmt, 8, query.limit);
  if (rc != SQLITE_OK) return Internal("read events: bind");
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    EventRow row;
    row.seq = sqlite3_column_int64(stmt, 0);
    row.unix_ms = sqlite3_column_int64(stmt, 1);
    row.type = ColumnText(stmt, 2);
    row.tenant = ColumnText(stmt, 3);
    row.task_id = static_cast<uint64_t>(sqlite3_column_int64(stmt, 4));
    row.workflow_id = static_cast<uint64_t>(sqlite3_column_int64(stmt, 5));
    row.pool = ColumnText(stmt, 6);
    row.blob = ColumnBlob(stmt, 7);
    fn(std::move(row));
  }
  sqlite3_clear_bindings(stmt);
  if (rc != SQLITE_DONE) return Internal("read events");
  return absl::OkStatus();
}

absl::StatusOr<std::optional<int64_t>> SqliteStore::FirstEventSince(int64_t unix_ms) {
  int64_t lo = 0;
  {
    sqlite3_stmt* stmt = min_event_seq_.get();
    ResetOnExit reset(stmt);
    if (sqlite3_step(stmt) != SQLITE_ROW) return Internal("min event seq");
    lo = sqlite3_column_int64(stmt, 0);
  }
  absl::StatusOr<int64_t> hi = MaxEventSeq();
  if (!hi.ok()) return hi.status();
  if (lo == 0) return std::optional<int64_t>();
  using At = absl::StatusOr<std::optional<std::pair<int64_t, int64_t>>>;
  return internal::FirstEventAtOrAfter(lo, *hi, unix_ms, [&](int64_t seq) -> At {
    sqlite3_stmt* stmt = event_at_.get();
    ResetOnExit reset(stmt);
    if (sqlite3_bind_int64(stmt, 1, seq) != SQLITE_OK) return Internal("event at: bind");
    const int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) return std::optional<std::pair<int64_t, int64_t>>();
    if (rc != SQLITE_ROW) return Internal("event at");
    return std::optional<std::pair<int64_t, int64_t>>(
        {sqlite3_column_int64(stmt, 0), sqlite3_column_int64(stmt, 1)});
  });
}

absl::StatusOr<int64_t> SqliteStore::PruneEvents(int64_t before_unix_ms) {
  // Every event before the first one at or after the cutoff: a range of seqs.
  absl::StatusOr<int64_t> below =
      internal::EventPruneBound(FirstEventSince(before_unix_ms), [&] { return MaxEventSeq(); });
  if (!below.ok()) return below.status();
  sqlite3_stmt* stmt = prune_events_.get();
  ResetOnExit reset(stmt);
  if (sqlite3_bind_int64(stmt, 1, *below) != SQLITE_OK) return Internal("prune events: bind");
  if (sqlite3_step(stmt) != SQLITE_DONE) return Internal("prune events");
  const int64_t deleted = sqlite3_changes64(db_.get());
  stats_.event_rows_pruned += deleted;
  return deleted;
}

absl::StatusOr<int64_t> SqliteStore::MaxEventSeq() {
  sqlite3_stmt* stmt = max_event_seq_.get();
  ResetOnExit reset(stmt);
  if (sqlite3_step(stmt) != SQLITE_ROW) return Internal("max event seq");
  return sqlite3_column_int64(stmt, 0);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path,
                                                       Durability durability) {
  if (path.empty()) return absl::InvalidArgumentError("OpenSqliteStore: empty database path");

  // NOMUTEX: the store is thread-compatible and its connection is never shared, so SQLite's
  // per-call connection mutex would be pure overhead on the hot path.
  sqlite3* raw = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &raw,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  DbPtr db(raw);  // sqlite3_open_v2 may allocate a handle even when it fails: always close it
  if (rc != SQLITE_OK) {
    return absl::FailedPreconditionError(
        fmt::format("sqlite:{}: cannot open database: {}", path,
                    raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  }
  sqlite3_extended_result_codes(db.get(), 1);
  sqlite3_busy_timeout(db.get(), kBusyTimeoutMs);

  // SQLite silently falls back to read-only when the file is not writable; a store that
  // cannot commit is useless, so say why now instead of failing on the first Commit.
  if (sqlite3_db_readonly(db.get(), "main") == 1) {
    return absl::FailedPreconditionError(
        fmt::format("sqlite:{}: database file is read-only (check its permissions)", path));
  }

  // The first read of the file: fails with SQLITE_NOTADB when it is not a SQLite database.
  // Nothing is written before the checks below pass, so a foreign file is left untouched.
  absl::StatusOr<int64_t> version = QueryInt(db.get(), path, "PRAGMA user_version");
  if (!version.ok()) return version.status();
  const int newest = NewestMigrationVersion();
  if (*version < 0 || *version > newest) {
    return absl::FailedPreconditionError(fmt::format(
        "sqlite:{}: database schema version {} is newer than this drover binary supports "
        "(newest migration: {}); refusing to open it",
        path, *version, newest));
  }
  if (*version == 0) {
    // A database we never migrated must be empty; one with tables belongs to someone else.
    absl::StatusOr<int64_t> objects =
        QueryInt(db.get(), path, "SELECT count(*) FROM sqlite_master");
    if (!objects.ok()) return objects.status();
    if (*objects > 0) {
      return absl::FailedPreconditionError(fmt::format(
          "sqlite:{}: not a drover database (user_version 0 but it has {} schema objects)", path,
          *objects));
    }
  }

  // In WAL mode NORMAL syncs only at checkpoints: a commit survives a process crash but the
  // last commits may be lost on power failure. FULL also syncs the WAL on every commit.
  // These settings belong to the connection and write nothing to the file.
  const char* synchronous =
      durability == Durability::kFull ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL";
  const std::string cache_size = fmt::format("PRAGMA cache_size = -{}", kCacheSizeKiB);
  const std::string autocheckpoint =
      fmt::format("PRAGMA wal_autocheckpoint = {}", kWalAutocheckpointPages);
  const std::string size_limit =
      fmt::format("PRAGMA journal_size_limit = {}", kJournalSizeLimitBytes);
  for (const char* pragma : {synchronous, "PRAGMA temp_store = MEMORY", cache_size.c_str(),
                             autocheckpoint.c_str(), size_limit.c_str()}) {
    if (auto s = Exec(db.get(), path, pragma, pragma); !s.ok()) return s;
  }

  if (auto s = ApplyMigrations(db.get(), path, *version); !s.ok()) return s;

  sqlite3* handle = db.get();
  auto store = std::make_unique<SqliteStore>(path, std::move(db));
  // Preparing every statement also proves the schema is the one we expect (a foreign
  // database that happens to have a known user_version fails here, untouched).
  if (auto s = store->Prepare(); !s.ok()) return s;

  // WAL is switched on last, once the file is known to be ours, because the switch is
  // persistent: it rewrites the database header. A new database is migrated in the default
  // rollback-journal mode, which is just as safe.
  absl::StatusOr<std::string> journal = QueryText(handle, path, "PRAGMA journal_mode = WAL");
  if (!journal.ok()) return journal.status();
  if (*journal != "wal") {
    return absl::FailedPreconditionError(fmt::format(
        "sqlite:{}: cannot enable WAL journal mode (journal_mode is '{}')", path, *journal));
  }
  static_cast<SqliteStore*>(store.get())->StartCheckpointer(durability);
  return store;
}

}  // namespace drover::store
