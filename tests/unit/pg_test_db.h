// A fresh, empty PostgreSQL schema for one test, on the server the test run started.
//
// ctest starts a throwaway PostgreSQL 15 (scripts/pg-test-server.sh, fixture "postgres")
// and passes its URL in DROVER_TEST_PG_URL_FILE. Each call creates a new schema and returns a
// URL whose connections use it (search_path), so tests never see each other's rows.
// Without a server the caller skips; when DROVER_TEST_PG_URL_FILE is set (ctest) or
// DROVER_REQUIRE_PG=1, a missing server fails the test instead, so a broken fixture cannot
// pass quietly.
#pragma once

#include <libpq-fe.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <optional>
#include <string>

namespace drover::testing {

inline bool PgRequired() {
  const char* r = getenv("DROVER_REQUIRE_PG");
  const char* f = getenv("DROVER_TEST_PG_URL_FILE");
  return (r != nullptr && std::string(r) == "1") || (f != nullptr && *f != '\0');
}

// DROVER_TEST_PG_URL, or the first line of the file DROVER_TEST_PG_URL_FILE names (ctest:
// the fixture picks the port when it starts, after configure).
inline std::optional<std::string> PgServerUrl() {
  const char* u = getenv("DROVER_TEST_PG_URL");
  if (u != nullptr && *u != '\0') return std::string(u);
  const char* f = getenv("DROVER_TEST_PG_URL_FILE");
  if (f == nullptr || *f == '\0') return std::nullopt;
  std::ifstream in(f);
  std::string line;
  if (!std::getline(in, line) || line.empty()) return std::nullopt;
  return line;
}

// Runs one SQL statement on `url`; "" on success, else the error.
inline std::string PgExec(const std::string& url, const std::string& sql) {
  PGconn* c = PQconnectdb(url.c_str());
  std::string err;
  if (PQstatus(c) != CONNECTION_OK) {
    err = PQerrorMessage(c);
  } else {
    PGresult* r = PQexec(c, sql.c_str());
    const ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) err = PQresultErrorMessage(r);
    PQclear(r);
  }
  PQfinish(c);
  return err;
}

// The first column of the first row of `sql` ("" when none or on error).
inline std::string PgQuery(const std::string& url, const std::string& sql) {
  PGconn* c = PQconnectdb(url.c_str());
  std::string out;
  if (PQstatus(c) == CONNECTION_OK) {
    PGresult* r = PQexec(c, sql.c_str());
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) out = PQgetvalue(r, 0, 0);
    PQclear(r);
  }
  PQfinish(c);
  return out;
}

// A new schema's name and the URL that uses it, or nullopt without a server.
struct PgSchema {
  std::string name, url;
};
inline std::optional<PgSchema> NewPgSchema(const std::string& tag = "t") {
  auto server = PgServerUrl();
  if (!server) return std::nullopt;
  static std::atomic<int> counter{0};
  PgSchema s;
  s.name = tag + "_" + std::to_string(getpid()) + "_" + std::to_string(counter++);
  if (!PgExec(*server, "CREATE SCHEMA " + s.name).empty()) {
    return std::nullopt;
  }
  const char sep = server->find('?') == std::string::npos ? '?' : '&';
  s.url = *server + sep + "options=-csearch_path%3D" + s.name;
  return s;
}

}  // namespace drover::testing
