// The PostgreSQL driver of drover::store::Store (libpq).
//
// One connection per store, used from one thread (Store is thread-compatible). Every Commit
// is one transaction sent as one pipeline: BEGIN, a handful of multi-row statements (each
// row kind as binary arrays through unnest(), so a batch of thousands of rows is a few
// messages and no SQL is built per row), COMMIT, then one Sync: one round trip per group
// commit. Statements are prepared once per connection unless the URL says `prepare=off`
// (PgBouncer in transaction mode before 1.21 cannot keep them).
//
// A lost or stalled connection makes a call fail with Unavailable within its deadline; the
// next call reconnects. Commit's batches are idempotent (whole-row upserts, deletes, meta
// upserts), so a caller that does not know whether a failed commit landed sends it again.

#include <cstdint>
#include <ctime>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "batch_check.h"
#include "fmt/format.h"
#include "migrations.h"
#include "store/pg_conn.h"
#include "store/store.h"

namespace drover::store {
namespace {

using internal::kPostgresMigrationCount;
using internal::kPostgresMigrations;
namespace pg = drover::store::pg;

// Any fixed number: the key of the transaction-scoped advisory lock migrations run under.
constexpr int64_t kMigrationLock = 0x64726f766572;  // "drover"
// Finished states (drover.v1.TaskState SUCCEEDED, CANCELED, EXPIRED): their rows live in
// task_history. DEAD stays in the hot table (it is retried or purged, never aged out).
bool Finished(int state) { return state == 5 || state == 7 || state == 8; }
constexpr int64_t kDayMs = 86'400'000;
// Day tables created ahead of today (UTC), so rows never wait for DDL.
constexpr int kDaysAhead = 3;
// Rows per page of LoadTasks/LoadWorkflows: the callback may read the store between pages.
constexpr int64_t kPageRows = 20'000;

// The statements Commit and the readers use, by name.
struct Sql {
  const char* name;
  const char* text;
};
// The event reads (EventQuery): one text per index it leads with. A type filter is
// ",a,b.c," and matches a type or its subject (what comes before the dot).
std::string ReadEventsSql(const char* lead) {
  return std::string(
             "SELECT seq, unix_ms, type, tenant, task_id, workflow_id, pool, blob FROM events "
             "WHERE ") +
         lead +
         " seq > $1::int8 AND unix_ms >= $2::int8 AND ($3::int8 = 0 OR task_id = $3::int8) AND "
         "($4::int8 = 0 OR workflow_id = $4::int8) AND ($5::text = '' OR pool = $5::text) AND "
         "($6::text = '' OR tenant = $6::text) AND ($7::text = '' OR "
         "strpos($7::text, ',' || type || ',') > 0 OR "
         "strpos($7::text, ',' || split_part(type, '.', 1) || ',') > 0) "
         "ORDER BY seq LIMIT $8::int8";
}
const std::string kReadEvents[4] = {
    ReadEventsSql(""),
    ReadEventsSql("task_id <> 0 AND task_id = $3::int8 AND"),
    ReadEventsSql("workflow_id <> 0 AND workflow_id = $4::int8 AND"),
    ReadEventsSql("pool <> '' AND pool = $5::text AND"),
};

const Sql kStatements[] = {
    {"up_tasks",
     "INSERT INTO tasks (id, tenant, type, state, priority, updated_unix_ms, rev, blob) "
     "SELECT i, te, ty, s, p, u, pg_current_xact_id()::text::bigint, b FROM "
     "unnest($1::int8[], $2::text[], $3::text[], $4::int4[], $5::int4[], $6::int8[], "
     "$7::bytea[]) AS t(i, te, ty, s, p, u, b) "
     "ON CONFLICT (id) DO UPDATE SET tenant = EXCLUDED.tenant, type = EXCLUDED.type, "
     "state = EXCLUDED.state, priority = EXCLUDED.priority, "
     "updated_unix_ms = EXCLUDED.updated_unix_ms, rev = EXCLUDED.rev, blob = EXCLUDED.blob"},
    {"ins_history",
     "INSERT INTO task_history (id, tenant, type, state, priority, updated_unix_ms, rev, blob) "
     "SELECT i, te, ty, s, p, u, pg_current_xact_id()::text::bigint, b FROM "
     "unnest($1::int8[], $2::text[], $3::text[], $4::int4[], $5::int4[], $6::int8[], "
     "$7::bytea[]) AS t(i, te, ty, s, p, u, b) "
     "ON CONFLICT (id, updated_unix_ms) DO UPDATE SET tenant = EXCLUDED.tenant, "
     "type = EXCLUDED.type, state = EXCLUDED.state, priority = EXCLUDED.priority, "
     "rev = EXCLUDED.rev, blob = EXCLUDED.blob"},
    {"del_tasks", "DELETE FROM tasks WHERE id = ANY($1::int8[])"},
    {"del_history", "DELETE FROM task_history WHERE id = ANY($1::int8[])"},
    {"up_workflows",
     "INSERT INTO workflows (id, tenant, state, updated_unix_ms, blob) "
     "SELECT * FROM unnest($1::int8[], $2::text[], $3::int4[], $4::int8[], $5::bytea[]) "
     "ON CONFLICT (id) DO UPDATE SET tenant = EXCLUDED.tenant, state = EXCLUDED.state, "
     "updated_unix_ms = EXCLUDED.updated_unix_ms, blob = EXCLUDED.blob"},
    {"up_meta",
     "INSERT INTO meta (key, value) SELECT * FROM unnest($1::text[], $2::text[]) "
     "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"},
    {"up_load",
     "INSERT INTO load_history SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], "
     "$4::int8[], $5::int8[], $6::float8[], $7::float8[], $8::int8[], $9::int4[], $10::int4[], "
     "$11::int4[], $12::int4[]) "
     "ON CONFLICT (pool, minute) DO UPDATE SET arrivals = EXCLUDED.arrivals, "
     "dispatches = EXCLUDED.dispatches, completions = EXCLUDED.completions, "
     "service_mean_s = EXCLUDED.service_mean_s, service_p95_s = EXCLUDED.service_p95_s, "
     "queue_depth = EXCLUDED.queue_depth, agents_starting = EXCLUDED.agents_starting, "
     "agents_idle = EXCLUDED.agents_idle, agents_busy = EXCLUDED.agents_busy, "
     "agents_draining = EXCLUDED.agents_draining"},
    {"get_task",
     "SELECT id, tenant, type, state, priority, updated_unix_ms, rev, blob FROM tasks "
     "WHERE id = $1::int8 UNION ALL "
     "SELECT id, tenant, type, state, priority, updated_unix_ms, rev, blob FROM task_history "
     "WHERE id = $1::int8"},
    {"page_tasks",
     "(SELECT id, tenant, type, state, priority, updated_unix_ms, rev, blob FROM tasks "
     "WHERE id >= $1::int8 AND id <= $2::int8 ORDER BY id LIMIT $3::int8) UNION ALL "
     "(SELECT id, tenant, type, state, priority, updated_unix_ms, rev, blob FROM task_history "
     "WHERE id >= $1::int8 AND id <= $2::int8 ORDER BY id LIMIT $3::int8) "
     "ORDER BY id LIMIT $3::int8"},
    {"get_workflow",
     "SELECT id, tenant, state, updated_unix_ms, blob FROM workflows WHERE id = $1::int8"},
    {"page_workflows",
     "SELECT id, tenant, state, updated_unix_ms, blob FROM workflows WHERE id >= $1::int8 "
     "ORDER BY id LIMIT $2::int8"},
    {"get_meta", "SELECT value FROM meta WHERE key = $1::text"},
    {"prune_scan",
     "(SELECT id, state, updated_unix_ms, 0 AS src FROM tasks WHERE id >= $1::int8 "
     "ORDER BY id LIMIT $2::int8) UNION ALL "
     "(SELECT id, state, updated_unix_ms, 1 FROM task_history_default WHERE id >= $1::int8 "
     "ORDER BY id LIMIT $2::int8) ORDER BY id LIMIT $2::int8"},
    {"prune_tasks",
     "DELETE FROM tasks WHERE id = ANY($1::int8[]) AND state = ANY($2::int4[]) "
     "AND updated_unix_ms < $3::int8"},
    {"prune_history",
     "DELETE FROM task_history_default WHERE id = ANY($1::int8[]) AND state = ANY($2::int4[]) "
     "AND updated_unix_ms < $3::int8"},
    {"read_load",
     "SELECT minute, arrivals, dispatches, completions, service_mean_s, service_p95_s, "
     "queue_depth, agents_starting, agents_idle, agents_busy, agents_draining FROM load_history "
     "WHERE pool = $1::text AND minute >= $2::int8 AND minute < $3::int8 ORDER BY minute "
     "LIMIT $4::int8"},
    {"prune_load", "DELETE FROM load_history WHERE minute < $1::int8"},
    {"load_pools",
     "WITH RECURSIVE p(pool) AS (SELECT min(pool) FROM load_history UNION ALL "
     "SELECT (SELECT min(pool) FROM load_history WHERE pool > p.pool) FROM p "
     "WHERE p.pool IS NOT NULL) SELECT pool FROM p WHERE pool IS NOT NULL"},
    {"append_audit",
     "INSERT INTO audit (unix_ms, principal, tenant, blob) SELECT u, p, t, b FROM "
     "unnest($1::int8[], $2::text[], $3::text[], $4::bytea[]) WITH ORDINALITY AS x(u, p, t, b, n) "
     "ORDER BY n"},
    {"read_audit",
     "SELECT seq, unix_ms, principal, tenant, blob FROM audit WHERE seq > $1::int8 AND "
     "unix_ms >= $2::int8 AND ($3::text = '' OR principal = $3::text) AND "
     "($4::text = '' OR tenant = $4::text) ORDER BY seq LIMIT $5::int8"},
    {"prune_audit", "DELETE FROM audit WHERE unix_ms < $1::int8"},
    {"append_events",
     "INSERT INTO events (seq, unix_ms, type, tenant, task_id, workflow_id, pool, blob) "
     "SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[], $5::int8[], "
     "$6::int8[], $7::text[], $8::bytea[]) ON CONFLICT (seq) DO NOTHING"},
    // One read per index it leads with (the SQLite driver's note on them applies).
    {"read_events", kReadEvents[0].c_str()},
    {"read_task_events", kReadEvents[1].c_str()},
    {"read_workflow_events", kReadEvents[2].c_str()},
    {"read_pool_events", kReadEvents[3].c_str()},
    {"event_at", "SELECT seq, unix_ms FROM events WHERE seq >= $1::int8 ORDER BY seq LIMIT 1"},
    {"min_event_seq", "SELECT coalesce(min(seq), 0)::int8 FROM events"},
    {"prune_events", "DELETE FROM events WHERE seq < $1::int8"},
    {"max_event_seq", "SELECT coalesce(max(seq), 0)::int8 FROM events"},
    {"fence", "SELECT drover_fence($1::text, $2::text, $3::int8)"},
    {"list_days",
     "SELECT c.relname::text, c.reltuples::float8 FROM pg_inherits i "
     "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'task_history'::regclass "
     "AND c.relname LIKE 'task_history_d%'"},
};

const char* SqlOf(const char* name) {
  for (const Sql& s : kStatements) {
    if (std::string_view(s.name) == name) return s.text;
  }
  return nullptr;
}

// Statements are prepared without parameter types: every $n is cast in its SQL.

// Task rows as the binary array parameters of up_tasks and ins_history ($1..$7: id, tenant,
// type, state, priority, updated_unix_ms, blob).
class TaskArrays {
 public:
  void Add(const TaskRow& r) {
    id_.AddInt8(static_cast<int64_t>(r.id));
    tenant_.AddBytes(r.tenant);
    type_.AddBytes(r.type);
    state_.AddInt4(r.state);
    priority_.AddInt4(r.priority);
    updated_.AddInt8(r.updated_unix_ms);
    blob_.AddBytes(r.blob);
  }
  size_t size() const { return id_.size(); }
  std::vector<pg::Param> Finish() {
    return {id_.Finish(),       tenant_.Finish(),  type_.Finish(), state_.Finish(),
            priority_.Finish(), updated_.Finish(), blob_.Finish()};
  }

 private:
  pg::ArrayBuilder id_{pg::kInt8Array, pg::kInt8}, tenant_{pg::kTextArray, pg::kText},
      type_{pg::kTextArray, pg::kText}, state_{pg::kInt4Array, pg::kInt4},
      priority_{pg::kInt4Array, pg::kInt4}, updated_{pg::kInt8Array, pg::kInt8},
      blob_{pg::kByteaArray, pg::kBytea};
};

TaskRow ReadTask(const pg::Result& r, int i, int64_t* rev) {
  TaskRow row;
  row.id = static_cast<uint64_t>(r.Int8(i, 0));
  row.tenant = std::string(r.Bytes(i, 1));
  row.type = std::string(r.Bytes(i, 2));
  row.state = r.Int4(i, 3);
  row.priority = r.Int4(i, 4);
  row.updated_unix_ms = r.Int8(i, 5);
  *rev = r.Int8(i, 6);
  row.blob = std::string(r.Bytes(i, 7));
  return row;
}

WorkflowRow ReadWorkflow(const pg::Result& r, int i) {
  WorkflowRow row;
  row.id = static_cast<uint64_t>(r.Int8(i, 0));
  row.tenant = std::string(r.Bytes(i, 1));
  row.state = r.Int4(i, 2);
  row.updated_unix_ms = r.Int8(i, 3);
  row.blob = std::string(r.Bytes(i, 4));
  return row;
}

// "task_history_d20261202" for the UTC day starting at `day_ms`.
std::string DayTable(int64_t day_ms) {
  const time_t secs = static_cast<time_t>(day_ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  return fmt::format("task_history_d{:04d}{:02d}{:02d}", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday);
}

class PostgresStore final : public Store {
 public:
  PostgresStore(std::string url, bool prepare, PostgresOptions options)
      : url_(std::move(url)), prepare_(prepare), options_(options) {}

  absl::Status Open();

  std::string Describe() const override { return "postgres:" + pg::Redact(url_); }
  absl::Status Commit(const WriteBatch& batch) override;
  absl::Status LoadTasks(const std::function<void(TaskRow&&)>& fn) override {
    return LoadTaskRange(0, internal::kMaxTaskId, fn);
  }
  absl::Status LoadWorkflows(const std::function<void(WorkflowRow&&)>& fn) override;
  absl::StatusOr<std::optional<TaskRow>> GetTask(uint64_t id) override;
  absl::StatusOr<std::optional<WorkflowRow>> GetWorkflow(uint64_t id) override;
  absl::StatusOr<std::optional<std::string>> GetMeta(const std::string& key) override;
  absl::StatusOr<PruneResult> PruneRows(const PruneStep& step) override;
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
  absl::StatusOr<std::optional<int64_t>> FirstEventSince(int64_t unix_ms);
  absl::StatusOr<int64_t> DropFinishedBefore(int64_t cutoff_unix_ms, int64_t now_unix_ms) override;
  StoreStats Stats() const override { return stats_; }
  absl::Status SetFence(const Fence& fence) override {
    fence_ = fence;
    return absl::OkStatus();
  }

  absl::Status LoadTaskRange(uint64_t first, uint64_t last,
                             const std::function<void(TaskRow&&)>& fn);

 private:
  absl::Time Deadline() const { return absl::Now() + options_.statement_timeout; }
  // Connects (and prepares) if there is no healthy connection.
  absl::Status Ready();
  absl::Status Migrate();
  absl::Status CreateDays(int64_t now_unix_ms);
  pg::Statement Stmt(const char* name, std::vector<pg::Param> params) const {
    pg::Statement s;
    s.prepared = prepare_;
    s.sql = prepare_ ? name : SqlOf(name);
    s.params = std::move(params);
    return s;
  }
  absl::StatusOr<pg::Result> Run(const char* name, std::vector<pg::Param> params) {
    if (absl::Status st = Ready(); !st.ok()) return st;
    return conn_->Query(Stmt(name, std::move(params)), Deadline());
  }

  const std::string url_;
  const bool prepare_;
  const PostgresOptions options_;
  std::unique_ptr<pg::Conn> conn_;
  StoreStats stats_;
  bool loading_ = false;
  int64_t days_created_through_ = 0;  // the last day table known to exist (its start, ms)
  std::optional<Fence> fence_;
  // BEGIN, then the fence check when one is set: the head of every write transaction.
  void Begin(std::vector<pg::Statement>& stmts) const {
    stmts.push_back({"BEGIN", {}, false});
    if (fence_) {
      stmts.push_back(Stmt(
          "fence", {pg::Text(fence_->lease), pg::Text(fence_->owner), pg::Int8(fence_->epoch)}));
    }
  }
};

absl::Status PostgresStore::Ready() {
  if (conn_ != nullptr && conn_->healthy()) return absl::OkStatus();
  conn_.reset();
  auto c = pg::Conn::Connect(url_, options_.connect_timeout);
  if (!c.ok()) {
    return absl::UnavailableError(
        absl::StrCat(Describe(), ": cannot connect: ", c.status().message()));
  }
  if (prepare_) {
    for (const Sql& s : kStatements) {
      if (absl::Status st = (*c)->Prepare(s.name, s.text, {}, Deadline()); !st.ok()) return st;
    }
  }
  conn_ = std::move(*c);
  return absl::OkStatus();
}

absl::Status PostgresStore::Migrate() {
  // Connect without preparing: the statements need the tables the migrations create.
  auto c = pg::Conn::Connect(url_, options_.connect_timeout);
  if (!c.ok()) {
    return absl::UnavailableError(
        absl::StrCat(Describe(), ": cannot connect: ", c.status().message()));
  }
  pg::Conn& conn = **c;
  const absl::Time deadline = absl::Now() + absl::Minutes(2);
  // One transaction: the lock (released at its end), the version check, every migration
  // and the version bump. A server that starts meanwhile waits on the lock, then sees the
  // new version and does nothing.
  std::string sql = absl::StrCat(
      "BEGIN; SELECT pg_advisory_xact_lock(", kMigrationLock,
      "); CREATE TABLE IF NOT EXISTS drover_schema (version integer NOT NULL); "
      "INSERT INTO drover_schema SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM drover_schema);");
  if (absl::Status st = conn.Exec(sql, deadline); !st.ok()) {
    (void)conn.Exec("ROLLBACK", deadline);
    return absl::Status(st.code(), absl::StrCat(Describe(), ": migrations: ", st.message()));
  }
  auto v = conn.Query({"SELECT version FROM drover_schema", {}, false}, deadline);
  if (!v.ok() || v->rows() != 1) {
    (void)conn.Exec("ROLLBACK", deadline);
    return v.ok() ? absl::DataLossError(absl::StrCat(Describe(), ": drover_schema has ", v->rows(),
                                                     " rows, expected 1"))
                  : v.status();
  }
  const int version = v->Int4(0, 0);
  const int newest =
      kPostgresMigrationCount == 0 ? 0 : kPostgresMigrations[kPostgresMigrationCount - 1].version;
  if (version > newest) {
    (void)conn.Exec("ROLLBACK", deadline);
    return absl::FailedPreconditionError(absl::StrCat(Describe(), ": the schema is at version ",
                                                      version, ", newer than this drover's ",
                                                      newest, " (a newer drover wrote it)"));
  }
  for (int i = 0; i < kPostgresMigrationCount; ++i) {
    const internal::Migration& m = kPostgresMigrations[i];
    if (m.version <= version) continue;
    if (absl::Status st = conn.Exec(m.sql, deadline); !st.ok()) {
      (void)conn.Exec("ROLLBACK", deadline);
      return absl::Status(st.code(),
                          absl::StrCat(Describe(), ": migration ", m.name, ": ", st.message()));
    }
    if (absl::Status st =
            conn.Exec(absl::StrCat("UPDATE drover_schema SET version = ", m.version), deadline);
        !st.ok()) {
      (void)conn.Exec("ROLLBACK", deadline);
      return st;
    }
  }
  return conn.Exec("COMMIT", deadline);
}

absl::Status PostgresStore::Open() {
  if (absl::Status st = Migrate(); !st.ok()) return st;
  if (absl::Status st = Ready(); !st.ok()) return st;
  return CreateDays(absl::ToUnixMillis(absl::Now()));
}

absl::Status PostgresStore::CreateDays(int64_t now_unix_ms) {
  const int64_t today = now_unix_ms / kDayMs * kDayMs;
  const int64_t last = today + kDaysAhead * kDayMs;
  if (days_created_through_ >= last) return absl::OkStatus();
  if (absl::Status st = Ready(); !st.ok()) return st;
  for (int64_t day = today; day <= last; day += kDayMs) {
    // Short lock timeout: the DDL needs a lock on task_history, and waiting behind a long
    // reader would queue every commit behind it. A day that fails is tried next sweep.
    const std::string sql = fmt::format(
        "BEGIN; SET LOCAL lock_timeout = '2s'; CREATE TABLE IF NOT EXISTS {} PARTITION OF "
        "task_history FOR VALUES FROM ({}) TO ({}); COMMIT;",
        DayTable(day), day, day + kDayMs);
    absl::Status st = conn_->Exec(sql, Deadline());
    if (!st.ok()) {
      if (conn_->healthy()) (void)conn_->Exec("ROLLBACK", Deadline());
      if (absl::IsUnavailable(st)) return st;
      // Another server created it between our IF NOT EXISTS and the catalog insert.
      if (absl::StrContains(st.message(), "SQLSTATE 42P07") ||
          absl::StrContains(st.message(), "SQLSTATE 23505")) {
        continue;
      }
      // Rows of that day already sit in the default table (PostgreSQL refuses the new
      // table then); they are pruned row by row. Not an error for the caller.
      fmt::print(stderr, "drover: {}: day table {} not created: {}\n", Describe(), DayTable(day),
                 std::string(st.message()));
      continue;
    }
  }
  days_created_through_ = last;
  return absl::OkStatus();
}

absl::Status PostgresStore::Commit(const WriteBatch& batch) {
  if (loading_) {
    return absl::FailedPreconditionError(
        absl::StrCat(Describe(), ": Commit called from inside a LoadTasks callback"));
  }
  if (auto s = internal::CheckBatch(batch, Describe()); !s.ok()) return s;
  if (batch.empty()) return absl::OkStatus();

  // Within a batch the last write of a key wins; a multi-row upsert may not name a key
  // twice, so keep only the last of each.
  std::unordered_map<uint64_t, size_t> last_task;
  last_task.reserve(batch.upserts.size());
  for (size_t i = 0; i < batch.upserts.size(); ++i) last_task[batch.upserts[i].id] = i;
  TaskArrays hot, finished;
  for (size_t i = 0; i < batch.upserts.size(); ++i) {
    const TaskRow& r = batch.upserts[i];
    if (last_task[r.id] != i) continue;
    (Finished(r.state) ? finished : hot).Add(r);
  }
  std::vector<pg::Statement> stmts;
  Begin(stmts);
  if (hot.size() > 0) stmts.push_back(Stmt("up_tasks", hot.Finish()));
  if (finished.size() > 0) {
    // A finished task leaves the hot table and joins its day's history table.
    std::vector<pg::Param> columns = finished.Finish();
    stmts.push_back(Stmt("del_tasks", {columns[0]}));
    stmts.push_back(Stmt("ins_history", std::move(columns)));
  }
  if (!batch.deletes.empty()) {
    pg::ArrayBuilder d(pg::kInt8Array, pg::kInt8);
    for (uint64_t id : batch.deletes) d.AddInt8(static_cast<int64_t>(id));
    pg::Param ids = d.Finish();
    stmts.push_back(Stmt("del_tasks", {ids}));
    stmts.push_back(Stmt("del_history", {std::move(ids)}));
  }
  if (!batch.workflows.empty()) {
    std::unordered_map<uint64_t, size_t> last;
    for (size_t i = 0; i < batch.workflows.size(); ++i) last[batch.workflows[i].id] = i;
    pg::ArrayBuilder id(pg::kInt8Array, pg::kInt8), tenant(pg::kTextArray, pg::kText),
        state(pg::kInt4Array, pg::kInt4), upd(pg::kInt8Array, pg::kInt8),
        blob(pg::kByteaArray, pg::kBytea);
    for (size_t i = 0; i < batch.workflows.size(); ++i) {
      const WorkflowRow& r = batch.workflows[i];
      if (last[r.id] != i) continue;
      id.AddInt8(static_cast<int64_t>(r.id));
      tenant.AddBytes(r.tenant);
      state.AddInt4(r.state);
      upd.AddInt8(r.updated_unix_ms);
      blob.AddBytes(r.blob);
    }
    stmts.push_back(Stmt("up_workflows", {id.Finish(), tenant.Finish(), state.Finish(),
                                          upd.Finish(), blob.Finish()}));
  }
  if (!batch.meta.empty()) {
    std::map<std::string, const std::string*> last;
    for (const auto& [k, v] : batch.meta) last[k] = &v;
    pg::ArrayBuilder keys(pg::kTextArray, pg::kText), values(pg::kTextArray, pg::kText);
    for (const auto& [k, v] : last) {
      keys.AddBytes(k);
      values.AddBytes(*v);
    }
    stmts.push_back(Stmt("up_meta", {keys.Finish(), values.Finish()}));
  }
  if (!batch.load.empty()) {
    std::map<std::pair<std::string, int64_t>, const LoadMinute*> last;
    for (const LoadMinute& r : batch.load) last[{r.pool, r.minute}] = &r;
    pg::ArrayBuilder pool(pg::kTextArray, pg::kText), minute(pg::kInt8Array, pg::kInt8),
        arr(pg::kInt8Array, pg::kInt8), disp(pg::kInt8Array, pg::kInt8),
        comp(pg::kInt8Array, pg::kInt8), mean(pg::kFloat8Array, pg::kFloat8),
        p95(pg::kFloat8Array, pg::kFloat8), depth(pg::kInt8Array, pg::kInt8),
        starting(pg::kInt4Array, pg::kInt4), idle(pg::kInt4Array, pg::kInt4),
        busy(pg::kInt4Array, pg::kInt4), draining(pg::kInt4Array, pg::kInt4);
    for (const auto& [key, r] : last) {
      pool.AddBytes(r->pool);
      minute.AddInt8(r->minute);
      arr.AddInt8(r->arrivals);
      disp.AddInt8(r->dispatches);
      comp.AddInt8(r->completions);
      mean.AddFloat8(r->service_mean_s);
      p95.AddFloat8(r->service_p95_s);
      depth.AddInt8(r->queue_depth);
      starting.AddInt4(r->agents_starting);
      idle.AddInt4(r->agents_idle);
      busy.AddInt4(r->agents_busy);
      draining.AddInt4(r->agents_draining);
    }
    stmts.push_back(
        Stmt("up_load", {pool.Finish(), minute.Finish(), arr.Finish(), disp.Finish(), comp.Finish(),
                         mean.Finish(), p95.Finish(), depth.Finish(), starting.Finish(),
                         idle.Finish(), busy.Finish(), draining.Finish()}));
  }
  if (!batch.audit.empty()) {
    pg::ArrayBuilder at(pg::kInt8Array, pg::kInt8), who(pg::kTextArray, pg::kText),
        tenant(pg::kTextArray, pg::kText), blob(pg::kByteaArray, pg::kBytea);
    for (const AuditRow& r : batch.audit) {
      at.AddInt8(r.unix_ms);
      who.AddBytes(r.principal);
      tenant.AddBytes(r.tenant);
      blob.AddBytes(r.blob);
    }
    stmts.push_back(
        Stmt("append_audit", {at.Finish(), who.Finish(), tenant.Finish(), blob.Finish()}));
  }
  if (!batch.events.empty()) {
    pg::ArrayBuilder seq(pg::kInt8Array, pg::kInt8), at(pg::kInt8Array, pg::kInt8),
        type(pg::kTextArray, pg::kText), tenant(pg::kTextArray, pg::kText),
        task(pg::kInt8Array, pg::kInt8), wf(pg::kInt8Array, pg::kInt8),
        pool(pg::kTextArray, pg::kText), blob(pg::kByteaArray, pg::kBytea);
    for (const EventRow& r : batch.events) {
      seq.AddInt8(r.seq);
      at.AddInt8(r.unix_ms);
      type.AddBytes(r.type);
      tenant.AddBytes(r.tenant);
      task.AddInt8(static_cast<int64_t>(r.task_id));
      wf.AddInt8(static_cast<int64_t>(r.workflow_id));
      pool.AddBytes(r.pool);
      blob.AddBytes(r.blob);
    }
    stmts.push_back(
        Stmt("append_events", {seq.Finish(), at.Finish(), type.Finish(), tenant.Finish(),
                               task.Finish(), wf.Finish(), pool.Finish(), blob.Finish()}));
  }
  stmts.push_back({"COMMIT", {}, false});
  if (absl::Status st = Ready(); !st.ok()) return st;
  auto r = conn_->Pipeline(stmts, Deadline());
  if (!r.ok()) {
    return absl::Status(r.status().code(),
                        absl::StrCat(Describe(), ": commit: ", r.status().message()));
  }
  ++stats_.commits;
  stats_.rows_written += internal::RowsIn(batch);
  stats_.load_rows_written += static_cast<int64_t>(batch.load.size());
  stats_.audit_rows_written += static_cast<int64_t>(batch.audit.size());
  stats_.event_rows_written += static_cast<int64_t>(batch.events.size());
  return absl::OkStatus();
}

absl::Status PostgresStore::LoadTaskRange(uint64_t first, uint64_t last,
                                          const std::function<void(TaskRow&&)>& fn) {
  // Pages in id order. A task may have a row in both tables (the larger rev is current),
  // so a full page drops its last id and the next page starts at it: an id's rows are never
  // split between pages.
  uint64_t from = first;
  for (;;) {
    auto page = Run("page_tasks", {pg::Int8(static_cast<int64_t>(from)),
                                   pg::Int8(static_cast<int64_t>(last)), pg::Int8(kPageRows)});
    if (!page.ok()) return page.status();
    const int n = page->rows();
    const bool full = n == kPageRows;
    const uint64_t last_id = n > 0 ? static_cast<uint64_t>(page->Int8(n - 1, 0)) : 0;
    std::vector<TaskRow> rows;
    rows.reserve(n);
    int64_t best_rev = std::numeric_limits<int64_t>::min();
    for (int i = 0; i < n; ++i) {
      int64_t rev = 0;
      TaskRow row = ReadTask(*page, i, &rev);
      if (full && row.id == last_id) break;
      if (!rows.empty() && rows.back().id == row.id) {
        if (rev > best_rev) {
          rows.back() = std::move(row);
          best_rev = rev;
        }
        continue;
      }
      rows.push_back(std::move(row));
      best_rev = rev;
    }
    loading_ = true;
    for (TaskRow& row : rows) fn(std::move(row));
    loading_ = false;
    if (!full) return absl::OkStatus();
    if (last_id == from) {
      return absl::DataLossError(
          absl::StrCat(Describe(), ": task ", last_id, " has ", kPageRows, " or more rows"));
    }
    from = last_id;
  }
}

absl::Status PostgresStore::LoadWorkflows(const std::function<void(WorkflowRow&&)>& fn) {
  int64_t from = 0;
  for (;;) {
    auto page = Run("page_workflows", {pg::Int8(from), pg::Int8(kPageRows)});
    if (!page.ok()) return page.status();
    const int n = page->rows();
    std::vector<WorkflowRow> rows;
    rows.reserve(n);
    for (int i = 0; i < n; ++i) rows.push_back(ReadWorkflow(*page, i));
    for (WorkflowRow& row : rows) fn(std::move(row));
    if (n < kPageRows) return absl::OkStatus();
    from = static_cast<int64_t>(rows.back().id) + 1;
  }
}

absl::StatusOr<std::optional<TaskRow>> PostgresStore::GetTask(uint64_t id) {
  if (id > internal::kMaxTaskId) return std::optional<TaskRow>();
  auto r = Run("get_task", {pg::Int8(static_cast<int64_t>(id))});
  if (!r.ok()) return r.status();
  std::optional<TaskRow> best;
  int64_t best_rev = 0;
  for (int i = 0; i < r->rows(); ++i) {
    int64_t rev = 0;
    TaskRow row = ReadTask(*r, i, &rev);
    if (!best || rev > best_rev) {
      best = std::move(row);
      best_rev = rev;
    }
  }
  return best;
}

absl::StatusOr<std::optional<WorkflowRow>> PostgresStore::GetWorkflow(uint64_t id) {
  if (id > internal::kMaxTaskId) return std::optional<WorkflowRow>();
  auto r = Run("get_workflow", {pg::Int8(static_cast<int64_t>(id))});
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return std::optional<WorkflowRow>();
  return std::optional<WorkflowRow>(ReadWorkflow(*r, 0));
}

absl::StatusOr<std::optional<std::string>> PostgresStore::GetMeta(const std::string& key) {
  auto r = Run("get_meta", {pg::Text(key)});
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return std::optional<std::string>();
  return std::optional<std::string>(std::string(r->Bytes(0, 0)));
}

absl::StatusOr<PruneResult> PostgresStore::PruneRows(const PruneStep& step) {
  if (auto s = internal::CheckPruneStep(step, Describe()); !s.ok()) return s;
  // Day tables of task_history are dropped whole (DropFinishedBefore); the sweep walks the
  // hot table and the default history table.
  auto scan = Run("prune_scan",
                  {pg::Int8(static_cast<int64_t>(step.from_id)), pg::Int8(step.max_scan + 1)});
  if (!scan.ok()) return scan.status();
  PruneResult result;
  const int n = scan->rows();
  result.scanned = std::min<int64_t>(n, step.max_scan);
  result.next_id = n > step.max_scan ? static_cast<uint64_t>(scan->Int8(n - 1, 0)) : 0;
  pg::ArrayBuilder hot(pg::kInt8Array, pg::kInt8), hist(pg::kInt8Array, pg::kInt8);
  for (int i = 0; i < result.scanned; ++i) {
    if (!internal::Prunable(step, scan->Int4(i, 1), scan->Int8(i, 2))) continue;
    (scan->Int4(i, 3) == 0 ? hot : hist).AddInt8(scan->Int8(i, 0));
  }
  if (hot.size() == 0 && hist.size() == 0) return result;
  pg::ArrayBuilder states(pg::kInt4Array, pg::kInt4);
  for (int s : step.states) states.AddInt4(s);
  pg::Param st = states.Finish();
  std::vector<pg::Statement> stmts;
  Begin(stmts);
  const size_t first = stmts.size();
  stmts.push_back(Stmt("prune_tasks", {hot.Finish(), st, pg::Int8(step.updated_before_unix_ms)}));
  stmts.push_back(
      Stmt("prune_history", {hist.Finish(), st, pg::Int8(step.updated_before_unix_ms)}));
  stmts.push_back({"COMMIT", {}, false});
  if (absl::Status s = Ready(); !s.ok()) return s;
  auto r = conn_->Pipeline(stmts, Deadline());
  if (!r.ok()) return r.status();
  result.deleted = (*r)[first].affected() + (*r)[first + 1].affected();
  stats_.rows_pruned += result.deleted;
  return result;
}

absl::Status PostgresStore::ReadLoadHistory(const std::string& pool, int64_t from_minute,
                                            int64_t to_minute, int64_t max_rows,
                                            const std::function<void(LoadMinute&&)>& fn) {
  pg::Param limit = pg::Int8(max_rows);
  if (max_rows <= 0) limit.null = true;  // LIMIT NULL: every row
  auto r = Run("read_load", {pg::Text(pool), pg::Int8(from_minute), pg::Int8(to_minute), limit});
  if (!r.ok()) return r.status();
  for (int i = 0; i < r->rows(); ++i) {
    LoadMinute row;
    row.pool = pool;
    row.minute = r->Int8(i, 0);
    row.arrivals = r->Int8(i, 1);
    row.dispatches = r->Int8(i, 2);
    row.completions = r->Int8(i, 3);
    row.service_mean_s = r->Float8(i, 4);
    row.service_p95_s = r->Float8(i, 5);
    row.queue_depth = r->Int8(i, 6);
    row.agents_starting = r->Int4(i, 7);
    row.agents_idle = r->Int4(i, 8);
    row.agents_busy = r->Int4(i, 9);
    row.agents_draining = r->Int4(i, 10);
    fn(std::move(row));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> PostgresStore::PruneLoadHistory(int64_t before_minute) {
  auto r = Run("prune_load", {pg::Int8(before_minute)});
  if (!r.ok()) return r.status();
  stats_.load_rows_pruned += r->affected();
  return r->affected();
}

absl::Status PostgresStore::ReadAudit(const AuditQuery& query,
                                      const std::function<void(AuditRow&&)>& fn) {
  if (query.limit < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), ": read audit: limit must be at least 1, got ", query.limit));
  }
  auto r =
      Run("read_audit", {pg::Int8(query.after_seq), pg::Int8(query.since_unix_ms),
                         pg::Text(query.principal), pg::Text(query.tenant), pg::Int8(query.limit)});
  if (!r.ok()) return r.status();
  for (int i = 0; i < r->rows(); ++i) {
    AuditRow row;
    row.seq = r->Int8(i, 0);
    row.unix_ms = r->Int8(i, 1);
    row.principal = std::string(r->Bytes(i, 2));
    row.tenant = std::string(r->Bytes(i, 3));
    row.blob = std::string(r->Bytes(i, 4));
    fn(std::move(row));
  }
  return absl::OkStatus();
}

absl::Status PostgresStore::ReadEvents(const EventQuery& query,
                                       const std::function<void(EventRow&&)>& fn) {
  if (query.limit < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(Describe(), ": read events: limit must be at least 1, got ", query.limit));
  }
  int64_t after = query.after_seq;
  if (query.since_unix_ms > 0) {
    absl::StatusOr<std::optional<int64_t>> first = FirstEventSince(query.since_unix_ms);
    if (!first.ok()) return first.status();
    if (!first->has_value()) return absl::OkStatus();  // none since
    after = std::max<int64_t>(after, **first - 1);
  }
  const std::string types = internal::EventTypesFilter(query.types);
  const char* name = query.task_id != 0       ? "read_task_events"
                     : query.workflow_id != 0 ? "read_workflow_events"
                     : !query.pool.empty()    ? "read_pool_events"
                                              : "read_events";
  auto r = Run(name, {pg::Int8(after), pg::Int8(query.since_unix_ms),
                      pg::Int8(static_cast<int64_t>(query.task_id)),
                      pg::Int8(static_cast<int64_t>(query.workflow_id)), pg::Text(query.pool),
                      pg::Text(query.tenant), pg::Text(types), pg::Int8(query.limit)});
  if (!r.ok()) return r.status();
  for (int i = 0; i < r->rows(); ++i) {
    EventRow row;
    row.seq = r->Int8(i, 0);
    row.unix_ms = r->Int8(i, 1);
    row.type = std::string(r->Bytes(i, 2));
    row.tenant = std::string(r->Bytes(i, 3));
    row.task_id = static_cast<uint64_t>(r->Int8(i, 4));
    row.workflow_id = static_cast<uint64_t>(r->Int8(i, 5));
    row.pool = std::string(r->Bytes(i, 6));
    row.blob = std::string(r->Bytes(i, 7));
    fn(std::move(row));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<int64_t>> PostgresStore::FirstEventSince(int64_t unix_ms) {
  auto lo = Run("min_event_seq", {});
  if (!lo.ok()) return lo.status();
  absl::StatusOr<int64_t> hi = MaxEventSeq();
  if (!hi.ok()) return hi.status();
  if (lo->Int8(0, 0) == 0) return std::optional<int64_t>();
  using At = absl::StatusOr<std::optional<std::pair<int64_t, int64_t>>>;
  return internal::FirstEventAtOrAfter(lo->Int8(0, 0), *hi, unix_ms, [&](int64_t seq) -> At {
    auto r = Run("event_at", {pg::Int8(seq)});
    if (!r.ok()) return r.status();
    if (r->rows() == 0) return std::optional<std::pair<int64_t, int64_t>>();
    return std::optional<std::pair<int64_t, int64_t>>({r->Int8(0, 0), r->Int8(0, 1)});
  });
}

absl::StatusOr<int64_t> PostgresStore::PruneEvents(int64_t before_unix_ms) {
  absl::StatusOr<int64_t> below =
      internal::EventPruneBound(FirstEventSince(before_unix_ms), [&] { return MaxEventSeq(); });
  if (!below.ok()) return below.status();
  auto r = Run("prune_events", {pg::Int8(*below)});
  if (!r.ok()) return r.status();
  stats_.event_rows_pruned += r->affected();
  return r->affected();
}

absl::StatusOr<int64_t> PostgresStore::MaxEventSeq() {
  auto r = Run("max_event_seq", {});
  if (!r.ok()) return r.status();
  return r->Int8(0, 0);
}

absl::StatusOr<int64_t> PostgresStore::PruneAudit(int64_t before_unix_ms) {
  auto r = Run("prune_audit", {pg::Int8(before_unix_ms)});
  if (!r.ok()) return r.status();
  stats_.audit_rows_pruned += r->affected();
  return r->affected();
}

absl::StatusOr<std::vector<std::string>> PostgresStore::LoadHistoryPools() {
  auto r = Run("load_pools", {});
  if (!r.ok()) return r.status();
  std::vector<std::string> pools;
  for (int i = 0; i < r->rows(); ++i) pools.emplace_back(r->Bytes(i, 0));
  return pools;
}

absl::StatusOr<int64_t> PostgresStore::DropFinishedBefore(int64_t cutoff_unix_ms,
                                                          int64_t now_unix_ms) {
  if (absl::Status st = CreateDays(now_unix_ms); !st.ok()) return st;
  // The day tables, with their row estimates, from the catalog.
  auto r = Run("list_days", {});
  if (!r.ok()) return r.status();
  int64_t dropped = 0;
  std::vector<std::pair<std::string, int64_t>> doomed;
  for (int i = 0; i < r->rows(); ++i) {
    const std::string name(r->Bytes(i, 0));
    // task_history_dYYYYMMDD: the day's end must be at or before the cutoff.
    if (name.size() != 22) continue;
    struct tm tm = {};
    int y = 0, m = 0, d = 0;
    if (!absl::SimpleAtoi(name.substr(14, 4), &y) || !absl::SimpleAtoi(name.substr(18, 2), &m) ||
        !absl::SimpleAtoi(name.substr(20, 2), &d)) {
      continue;
    }
    tm.tm_year = y - 1900;
    tm.tm_mon = m - 1;
    tm.tm_mday = d;
    const int64_t start = static_cast<int64_t>(timegm(&tm)) * 1000;
    if (start + kDayMs <= cutoff_unix_ms) {
      doomed.emplace_back(name, static_cast<int64_t>(r->Float8(i, 1)));
    }
  }
  for (const auto& [name, rows] : doomed) {
    absl::Status st = conn_->Exec(
        fmt::format("BEGIN; SET LOCAL lock_timeout = '2s'; DROP TABLE {}; COMMIT;", name),
        Deadline());
    if (!st.ok()) {
      if (conn_->healthy()) (void)conn_->Exec("ROLLBACK", Deadline());
      return st;
    }
    dropped += std::max<int64_t>(rows, 0);
  }
  stats_.rows_pruned += dropped;
  return dropped;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Store>> OpenPostgresStore(const std::string& url,
                                                         const PostgresOptions& options) {
  bool prepare = true;
  std::string libpq_url = pg::StripDroverOptions(url, &prepare);
  auto store = std::make_unique<PostgresStore>(std::move(libpq_url), prepare, options);
  if (absl::Status st = store->Open(); !st.ok()) return st;
  return store;
}

}  // namespace drover::store
