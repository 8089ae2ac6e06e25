#include "store/pg_conn.h"

#include <arpa/inet.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace drover::store::pg {
namespace {

void PutU32(std::string& s, uint32_t v) {
  v = htonl(v);
  s.append(reinterpret_cast<const char*>(&v), 4);
}
void PutU64(std::string& s, uint64_t v) {
  PutU32(s, static_cast<uint32_t>(v >> 32));
  PutU32(s, static_cast<uint32_t>(v));
}
uint32_t GetU32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return ntohl(v);
}

// SQLSTATEs that mean the server is unreachable or going away: retry after reconnecting.
bool UnavailableState(std::string_view state) {
  return state.substr(0, 2) == "08" || state == "57P01" || state == "57P02" || state == "57P03" ||
         state == "53300" || state == "57014";  // 57014: our timeout
}

}  // namespace

Param Int8(int64_t v) {
  Param p{kInt8, {}, false};
  PutU64(p.data, static_cast<uint64_t>(v));
  return p;
}
Param Int4(int32_t v) {
  Param p{kInt4, {}, false};
  PutU32(p.data, static_cast<uint32_t>(v));
  return p;
}
Param Text(std::string_view v) { return Param{kText, std::string(v), false}; }

ArrayBuilder::ArrayBuilder(Oid array_type, Oid element_type)
    : array_type_(array_type), element_type_(element_type) {}

void ArrayBuilder::AddInt8(int64_t v) {
  PutU32(body_, 8);
  PutU64(body_, static_cast<uint64_t>(v));
  ++count_;
}
void ArrayBuilder::AddInt4(int32_t v) {
  PutU32(body_, 4);
  PutU32(body_, static_cast<uint32_t>(v));
  ++count_;
}
void ArrayBuilder::AddFloat8(double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  PutU32(body_, 8);
  PutU64(body_, bits);
  ++count_;
}
void ArrayBuilder::AddBytes(std::string_view v) {
  PutU32(body_, static_cast<uint32_t>(v.size()));
  body_.append(v.data(), v.size());
  ++count_;
}

Param ArrayBuilder::Finish() {
  // Binary array: ndim, has-null flag, element type, then per dimension (length, lower bound),
  // then each element as (length, bytes). An empty array has no dimensions.
  Param p{array_type_, {}, false};
  p.data.reserve(20 + body_.size());
  PutU32(p.data, count_ == 0 ? 0 : 1);
  PutU32(p.data, 0);
  PutU32(p.data, element_type_);
  if (count_ > 0) {
    PutU32(p.data, static_cast<uint32_t>(count_));
    PutU32(p.data, 1);
  }
  p.data += body_;
  body_.clear();
  count_ = 0;
  return p;
}

int64_t Result::Int8(int row, int col) const {
  const char* p = PQgetvalue(r_.get(), row, col);
  return static_cast<int64_t>((static_cast<uint64_t>(GetU32(p)) << 32) | GetU32(p + 4));
}
int32_t Result::Int4(int row, int col) const {
  return static_cast<int32_t>(GetU32(PQgetvalue(r_.get(), row, col)));
}
double Result::Float8(int row, int col) const {
  const char* p = PQgetvalue(r_.get(), row, col);
  const uint64_t bits = (static_cast<uint64_t>(GetU32(p)) << 32) | GetU32(p + 4);
  double v;
  std::memcpy(&v, &bits, 8);
  return v;
}
std::string_view Result::Bytes(int row, int col) const {
  return std::string_view(PQgetvalue(r_.get(), row, col),
                          static_cast<size_t>(PQgetlength(r_.get(), row, col)));
}
int64_t Result::affected() const {
  const char* n = PQcmdTuples(r_.get());
  return (n == nullptr || *n == '\0') ? 0 : std::atoll(n);
}

absl::Status ResultError(const PGresult* r, std::string_view what) {
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  const char* primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  const std::string sqlstate = state ? state : "";
  std::string msg = absl::StrCat("postgres: ", std::string(what), ": ",
                                 primary ? primary : PQresultErrorMessage(r), " (SQLSTATE ",
                                 sqlstate.empty() ? "none" : sqlstate, ")");
  if (UnavailableState(sqlstate)) return absl::UnavailableError(msg);
  if (sqlstate == kFencedState) return absl::FailedPreconditionError(absl::StrCat("fenced: ", msg));
  if (sqlstate == "40001" || sqlstate == "40P01") return absl::AbortedError(msg);
  return absl::InternalError(msg);
}

absl::StatusOr<std::unique_ptr<Conn>> Conn::Connect(const std::string& conninfo,
                                                    absl::Duration timeout) {
  // drover's defaults first, the caller's string last: with expand_dbname its settings win.
  const char* keys[] = {"keepalives",       "keepalives_idle",  "keepalives_interval",
                        "keepalives_count", "tcp_user_timeout", "application_name",
                        "connect_timeout",  "dbname",           nullptr};
  const std::string connect_s = absl::StrCat(std::max<int64_t>(2, absl::ToInt64Seconds(timeout)));
  const char* values[] = {
      "1", "5", "2", "3", "10000", "drover", connect_s.c_str(), conninfo.c_str(), nullptr};
  PGconn* c = PQconnectStartParams(keys, values, 1);
  if (c == nullptr) return absl::ResourceExhaustedError("postgres: out of memory connecting");
  auto conn = std::unique_ptr<Conn>(new Conn(c));
  if (PQstatus(c) == CONNECTION_BAD) return conn->Broken("connect");
  const absl::Time deadline = absl::Now() + timeout;
  PostgresPollingStatusType poll_status = PGRES_POLLING_WRITING;
  while (poll_status != PGRES_POLLING_OK) {
    if (poll_status == PGRES_POLLING_FAILED) return conn->Broken("connect");
    if (absl::Status st = conn->Wait(poll_status == PGRES_POLLING_WRITING, deadline); !st.ok()) {
      return st;
    }
    poll_status = PQconnectPoll(c);
  }
  if (PQsetnonblocking(c, 1) != 0) return conn->Broken("set non-blocking");
  // NOTICEs ("relation ... already exists, skipping") are expected chatter, not for logs.
  PQsetNoticeProcessor(
      c, [](void*, const char*) {}, nullptr);
  return conn;
}

Conn::~Conn() { Close(); }

void Conn::Close() {
  if (conn_ != nullptr) PQfinish(conn_);
  conn_ = nullptr;
}

absl::Status Conn::Broken(std::string_view what) {
  std::string msg = conn_ ? PQerrorMessage(conn_) : "not connected";
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  Close();
  return absl::UnavailableError(absl::StrCat("postgres: ", std::string(what), ": ", msg));
}

absl::Status Conn::Wait(bool for_write, absl::Time deadline) {
  const int fd = PQsocket(conn_);
  if (fd < 0) return Broken("no socket");
  for (;;) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      Close();
      return absl::UnavailableError("postgres: no answer before the deadline; connection closed");
    }
    pollfd p{fd, static_cast<short>(for_write ? POLLOUT : POLLIN), 0};
    const int ms = static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1000));
    const int n = ::poll(&p, 1, ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Broken("poll");
    if (n > 0) return absl::OkStatus();
  }
}

absl::Status Conn::Flush(absl::Time deadline) {
  for (;;) {
    const int r = PQflush(conn_);
    if (r == 0) return absl::OkStatus();
    if (r < 0) return Broken("send");
    // Data left to send: wait until the socket takes more, reading what arrives meanwhile
    // so the server never blocks on a full send buffer of its own.
    const int fd = PQsocket(conn_);
    pollfd p{fd, POLLIN | POLLOUT, 0};
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      Close();
      return absl::UnavailableError("postgres: could not send before the deadline");
    }
    const int n = ::poll(
        &p, 1, static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1000)));
    if (n < 0 && errno != EINTR) return Broken("poll");
    if (n > 0 && (p.revents & POLLIN) && PQconsumeInput(conn_) == 0) return Broken("receive");
  }
}

absl::Status Conn::Next(absl::Time deadline, PGresult** out) {
  while (PQisBusy(conn_)) {
    if (absl::Status st = Wait(false, deadline); !st.ok()) return st;
    if (PQconsumeInput(conn_) == 0) return Broken("receive");
  }
  *out = PQgetResult(conn_);
  if (*out == nullptr && PQstatus(conn_) == CONNECTION_BAD) return Broken("receive");
  return absl::OkStatus();
}

absl::Status Conn::Send(const Statement& stmt) {
  const int n = static_cast<int>(stmt.params.size());
  std::vector<Oid> types(n);
  std::vector<const char*> values(n);
  std::vector<int> lengths(n), formats(n, 1);
  for (int i = 0; i < n; ++i) {
    const Param& p = stmt.params[i];
    types[i] = p.type;
    values[i] = p.null ? nullptr : p.data.data();
    lengths[i] = static_cast<int>(p.data.size());
  }
  const int ok = stmt.prepared
                     ? PQsendQueryPrepared(conn_, stmt.sql.c_str(), n, values.data(),
                                           lengths.data(), formats.data(), 1)
                     : PQsendQueryParams(conn_, stmt.sql.c_str(), n, types.data(), values.data(),
                                         lengths.data(), formats.data(), 1);
  if (ok == 0) return Broken("send query");
  return absl::OkStatus();
}

absl::StatusOr<Result> Conn::Collect(absl::Time deadline, std::string_view what) {
  if (absl::Status st = Flush(deadline); !st.ok()) return st;
  Result last;
  absl::Status first;
  for (;;) {
    PGresult* r = nullptr;
    if (absl::Status st = Next(deadline, &r); !st.ok()) return st;
    if (r == nullptr) break;
    const ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
      if (first.ok()) first = ResultError(r, what);
      PQclear(r);
      continue;
    }
    last = Result(r);
  }
  if (!first.ok()) return first;
  return last;
}

Conn::Use::Use(Conn& c) : c_(c) {
  std::thread::id none{};
  const std::thread::id self = std::this_thread::get_id();
  if (c_.user_.compare_exchange_strong(none, self)) {
    owner_ = true;
  } else if (none != self) {
    refused_ = true;
  }
}

Conn::Use::~Use() {
  if (owner_) c_.user_.store(std::thread::id{});
}

absl::Status Conn::Use::status() const {
  if (!refused_) return absl::OkStatus();
  return absl::InternalError(
      "postgres: a connection was used by two threads at once (a store is used from its "
      "owner's thread only); the call was refused");
}

#define DROVER_PG_USE()                              \
  Use use_(*this);                                   \
  if (absl::Status st_ = use_.status(); !st_.ok()) { \
    return st_;                                      \
  }

absl::Status Conn::Exec(std::string_view sql, absl::Time deadline) {
  DROVER_PG_USE();
  if (!healthy()) return absl::UnavailableError("postgres: not connected");
  if (PQsendQuery(conn_, std::string(sql).c_str()) == 0) return Broken("send query");
  return Collect(deadline, sql.substr(0, 60)).status();
}

absl::Status Conn::Prepare(const std::string& name, const std::string& sql,
                           const std::vector<Oid>& types, absl::Time deadline) {
  DROVER_PG_USE();
  if (!healthy()) return absl::UnavailableError("postgres: not connected");
  if (PQsendPrepare(conn_, name.c_str(), sql.c_str(), static_cast<int>(types.size()),
                    types.data()) == 0) {
    return Broken("prepare");
  }
  return Collect(deadline, absl::StrCat("prepare ", name)).status();
}

absl::StatusOr<Result> Conn::Query(const Statement& stmt, absl::Time deadline) {
  DROVER_PG_USE();
  if (!healthy()) return absl::UnavailableError("postgres: not connected");
  if (absl::Status st = Send(stmt); !st.ok()) return st;
  return Collect(deadline, std::string_view(stmt.sql).substr(0, 60));
}

absl::StatusOr<std::vector<Result>> Conn::Pipeline(const std::vector<Statement>& stmts,
                                                   absl::Time deadline) {
  DROVER_PG_USE();
  if (!healthy()) return absl::UnavailableError("postgres: not connected");
  if (PQenterPipelineMode(conn_) == 0) return Broken("enter pipeline mode");
  for (const Statement& s : stmts) {
    if (absl::Status st = Send(s); !st.ok()) return st;
  }
  if (PQpipelineSync(conn_) == 0) return Broken("pipeline sync");
  if (absl::Status st = Flush(deadline); !st.ok()) return st;
  std::vector<Result> results(stmts.size());
  absl::Status first;
  size_t index = 0;  // the statement whose results come next
  bool synced = false;
  while (!synced) {
    PGresult* r = nullptr;
    if (absl::Status st = Next(deadline, &r); !st.ok()) return st;
    if (r == nullptr) {  // the end of one statement's results
      ++index;
      continue;
    }
    const ExecStatusType s = PQresultStatus(r);
    if (s == PGRES_PIPELINE_SYNC) {
      PQclear(r);
      synced = true;
      break;
    }
    if (s == PGRES_FATAL_ERROR && first.ok()) {
      first = ResultError(r, index < stmts.size() ? stmts[index].sql.substr(0, 60) : "pipeline");
    }
    if ((s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK) && index < results.size()) {
      results[index] = Result(r);
    } else {
      PQclear(r);
    }
  }
  if (PQexitPipelineMode(conn_) == 0) return Broken("exit pipeline mode");
  if (!first.ok()) {
    if (PQtransactionStatus(conn_) == PQTRANS_INERROR) {
      if (absl::Status st = Exec("ROLLBACK", deadline); !st.ok()) return first;
    }
    return first;
  }
  return results;
}

absl::Status Conn::Stream(const Statement& stmt, absl::Time deadline,
                          const std::function<bool(const Result&)>& fn) {
  DROVER_PG_USE();
  if (!healthy()) return absl::UnavailableError("postgres: not connected");
  if (absl::Status st = Send(stmt); !st.ok()) return st;
  if (PQsetSingleRowMode(conn_) == 0) return Broken("single-row mode");
  if (absl::Status st = Flush(deadline); !st.ok()) return st;
  absl::Status first;
  bool wanted = true;
  for (;;) {
    PGresult* r = nullptr;
    if (absl::Status st = Next(deadline, &r); !st.ok()) return st;
    if (r == nullptr) break;
    Result row(r);
    const ExecStatusType s = PQresultStatus(r);
    if (s == PGRES_SINGLE_TUPLE) {
      if (wanted && first.ok()) wanted = fn(row);
    } else if (s != PGRES_TUPLES_OK && first.ok()) {
      first = ResultError(r, stmt.sql.substr(0, 60));
    }
  }
  return first;
}

std::string StripDroverOptions(const std::string& url, bool* prepare) {
  *prepare = true;
  const size_t q = url.find('?');
  if (q == std::string::npos) return url;
  std::vector<std::string> kept;
  for (absl::string_view part : absl::StrSplit(url.substr(q + 1), '&')) {
    if (part == "prepare=off") {
      *prepare = false;
    } else if (part == "prepare=on") {
      *prepare = true;
    } else if (!part.empty()) {
      kept.emplace_back(part);
    }
  }
  std::string out = url.substr(0, q);
  if (!kept.empty()) absl::StrAppend(&out, "?", absl::StrJoin(kept, "&"));
  return out;
}

std::string Redact(const std::string& url) {
  // scheme://user:password@host -> scheme://user@host; key=value strings: drop password=...
  const size_t scheme = url.find("://");
  if (scheme != std::string::npos) {
    const size_t at = url.find('@', scheme + 3);
    const size_t colon = url.find(':', scheme + 3);
    if (at != std::string::npos && colon != std::string::npos && colon < at) {
      return url.substr(0, colon) + url.substr(at);
    }
    return url;
  }
  std::vector<std::string> kept;
  for (absl::string_view part : absl::StrSplit(url, ' ', absl::SkipEmpty())) {
    if (!absl::StartsWith(part, "password=")) kept.emplace_back(part);
  }
  return absl::StrJoin(kept, " ");
}

}  // namespace drover::store::pg
