// pg_conn: one libpq connection used with deadlines, binary parameters and pipelines.
//
// Every call takes a deadline and never blocks past it: the socket is non-blocking and
// waited on with poll(), so a PostgreSQL that stalls (a half-open TCP connection, a proxy
// that stops forwarding) turns into an Unavailable error instead of a hung thread. A
// connection that failed that way is closed; the caller reconnects with Connect().
//
// Errors: Unavailable for anything that means "the database is not reachable right now"
// (connection refused or lost, a timeout, SQLSTATE class 08, admin shutdown 57P01-57P03,
// 53300 too many connections); FailedPrecondition for 40001/40P01 (retry); Internal
// otherwise, with the server's message and SQLSTATE.
//
// Threading: thread-compatible (one thread at a time).
#pragma once

#include <libpq-fe.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace drover::store::pg {

// Type OIDs of the parameters drover sends (pg_type.h is a server header; these are fixed).
inline constexpr Oid kInt4 = 23, kInt8 = 20, kText = 25, kBytea = 17, kFloat8 = 701;
inline constexpr Oid kInt4Array = 1007, kInt8Array = 1016, kTextArray = 1009, kByteaArray = 1001,
                     kFloat8Array = 1022;

// One parameter in binary format. `data` holds the wire bytes.
struct Param {
  Oid type = 0;
  std::string data;
  bool null = false;
};

Param Int8(int64_t v);
Param Int4(int32_t v);
Param Text(std::string_view v);

// Builds a one-dimensional binary array parameter (no NULL elements) element by element
// without copying through intermediate vectors: the blob bytes go straight into the
// parameter's buffer.
class ArrayBuilder {
 public:
  ArrayBuilder(Oid array_type, Oid element_type);
  void AddInt8(int64_t v);
  void AddInt4(int32_t v);
  void AddFloat8(double v);
  void AddBytes(std::string_view v);  // text or bytea
  size_t size() const { return count_; }
  Param Finish();

 private:
  Oid array_type_, element_type_;
  std::string body_;
  size_t count_ = 0;
};

// A result of one statement; owns the PGresult.
class Result {
 public:
  Result() = default;
  explicit Result(PGresult* r) : r_(r, &PQclear) {}
  int rows() const { return r_ ? PQntuples(r_.get()) : 0; }
  bool null(int row, int col) const { return PQgetisnull(r_.get(), row, col) != 0; }
  // Binary-format getters.
  int64_t Int8(int row, int col) const;
  int32_t Int4(int row, int col) const;
  double Float8(int row, int col) const;
  std::string_view Bytes(int row, int col) const;
  // The affected-row count of an INSERT/UPDATE/DELETE.
  int64_t affected() const;
  PGresult* get() const { return r_.get(); }

 private:
  std::shared_ptr<PGresult> r_;
};

// One statement of a pipeline: SQL text, or the name of a statement prepared with
// Conn::Prepare when `prepared` is set.
struct Statement {
  std::string sql;  // text, or a prepared statement's name
  std::vector<Param> params;
  bool prepared = false;
};

// Threading: one thread at a time (a call made while another thread is inside one returns
// Internal "used by two threads at once" instead of corrupting libpq's state).
class Conn {
 public:
  // Connects (non-blocking, within `timeout`) with keepalives and a TCP user timeout so a
  // dead peer is noticed. `conninfo` is a libpq URI or key=value string.
  static absl::StatusOr<std::unique_ptr<Conn>> Connect(const std::string& conninfo,
                                                       absl::Duration timeout);
  ~Conn();
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  // False once the connection failed; every call then returns Unavailable.
  bool healthy() const { return conn_ != nullptr; }

  // Simple query protocol: `sql` may hold several statements. No results kept.
  absl::Status Exec(std::string_view sql, absl::Time deadline);

  // Prepares a named statement with the given parameter types.
  absl::Status Prepare(const std::string& name, const std::string& sql,
                       const std::vector<Oid>& types, absl::Time deadline);

  // Runs one statement with binary parameters and binary results.
  absl::StatusOr<Result> Query(const Statement& stmt, absl::Time deadline);

  // Sends every statement in one pipeline followed by one Sync and returns their results in
  // order. The first failing statement's error is returned; the server skipped the rest.
  // Wrap the statements in BEGIN ... COMMIT for one transaction; after an error the open
  // transaction is rolled back before this returns.
  absl::StatusOr<std::vector<Result>> Pipeline(const std::vector<Statement>& stmts,
                                               absl::Time deadline);

  // Streams the rows of one query (single-row mode): `fn` gets each row's result (row 0).
  // `fn` returning false stops reading (the rest is drained).
  absl::Status Stream(const Statement& stmt, absl::Time deadline,
                      const std::function<bool(const Result&)>& fn);

  // The server's version (e.g. 150018).
  int server_version() const { return conn_ ? PQserverVersion(conn_) : 0; }

 private:
  explicit Conn(PGconn* c) : conn_(c) {}
  absl::Status Send(const Statement& stmt);
  absl::Status Flush(absl::Time deadline);
  // Flushes what was sent, then reads every result of one query until libpq says it is
  // done: the last successful result, or the first error (`what` names it).
  absl::StatusOr<Result> Collect(absl::Time deadline, std::string_view what);
  // Waits until a result can be read without blocking; nullptr in *out means "no more
  // results for the current query".
  absl::Status Next(absl::Time deadline, PGresult** out);
  absl::Status Wait(bool for_write, absl::Time deadline);
  absl::Status Broken(std::string_view what);
  void Close();

  // Marks the connection in use by this thread for a call's duration (calls nest on one
  // thread: Pipeline's rollback goes through Exec).
  class Use {
   public:
    explicit Use(Conn& c);
    ~Use();
    absl::Status status() const;

   private:
    Conn& c_;
    bool owner_ = false;  // the outermost call on this thread
    bool refused_ = false;
  };

  PGconn* conn_ = nullptr;
  std::atomic<std::thread::id> user_{};
};

// The SQLSTATE drover_fence() raises when the writer no longer holds its lease
// (migrations/postgres/0002_leases.sql); ResultError makes it FailedPrecondition "fenced: ...".
inline constexpr char kFencedState[] = "DR001";

// The status for a failed PGresult (FATAL_ERROR): Unavailable / FailedPrecondition /
// Internal as described at the top, with `what` and the server's message.
absl::Status ResultError(const PGresult* r, std::string_view what);

// Removes drover's own options from a store URL before it goes to libpq. Today:
// `prepare=off` (no named prepared statements: for PgBouncer in transaction mode before
// 1.21). Returns the URL for libpq and sets *prepare.
std::string StripDroverOptions(const std::string& url, bool* prepare);

// "postgres://user@host:port/db" without a password, for logs.
std::string Redact(const std::string& url);

}  // namespace drover::store::pg
