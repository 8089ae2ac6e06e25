// Shared by the store's test files: a temp directory, a raw SQLite connection, and the
// drivers every conformance suite runs over (SQLite, memory, PostgreSQL prepared and not).
#pragma once

#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "pg_test_db.h"
#include "store/store.h"

namespace drover::store::test_support {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "drover_store_test.XXXXXX").string();
    if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~TempDir() {
    if (path_.empty()) return;
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  bool ok() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return (fs::path(path_) / name).string(); }

 private:
  std::string path_;
};

// A plain sqlite3 connection of the test's own, to look at a store's file from outside.
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
        SQLITE_OK) {
      ADD_FAILURE() << "sqlite3_open_v2(" << path << "): " << sqlite3_errmsg(db_);
    }
  }
  ~RawDb() { sqlite3_close(db_); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;

  void Exec(const std::string& sql) {
    char* error = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
      ADD_FAILURE() << sql << ": " << (error != nullptr ? error : "?");
    }
    sqlite3_free(error);
  }

  // The error of a statement expected to fail ("" when it succeeded).
  std::string ExecError(const std::string& sql) {
    char* error = nullptr;
    std::string out;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
      out = error != nullptr ? error : "?";
    }
    sqlite3_free(error);
    return out;
  }

  // The first column of the first row, as text ("" when there is no row).
  std::string Query(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    std::string result;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db_);
      return result;
    }
    if (sqlite3_step(stmt) == SQLITE_ROW) {
      const unsigned char* text = sqlite3_column_text(stmt, 0);
      if (text != nullptr) result = reinterpret_cast<const char*>(text);
    }
    sqlite3_finalize(stmt);
    return result;
  }

 private:
  sqlite3* db_ = nullptr;
};

// How a conformance test gets a fresh, empty store of one driver. An open that returns
// Unavailable with kNoServer skips the test (no PostgreSQL configured outside ctest).
struct Driver {
  std::string name;
  std::function<absl::StatusOr<std::unique_ptr<Store>>(const TempDir& dir)> open;
};
constexpr char kNoServer[] = "no test PostgreSQL (DROVER_TEST_PG_URL unset)";

inline absl::StatusOr<std::unique_ptr<Store>> OpenTestPostgres(bool prepare) {
  auto schema = drover::testing::NewPgSchema(prepare ? "conf" : "confnp");
  if (!schema) return absl::UnavailableError(kNoServer);
  return OpenPostgresStore(schema->url + (prepare ? "" : "&prepare=off"));
}

inline void PrintTo(const Driver& driver, std::ostream* os) { *os << driver.name; }

inline const Driver kDrivers[] = {
    {"sqlite",
     [](const TempDir& dir) {
       return OpenSqliteStore(dir.File("drover.db"), Durability::kNormal);
     }},
    {"memory",
     [](const TempDir&) -> absl::StatusOr<std::unique_ptr<Store>> { return NewMemoryStore(); }},
    {"postgres", [](const TempDir&) { return OpenTestPostgres(true); }},
    // The same driver without named prepared statements (prepare=off, for PgBouncer).
    {"postgres_unprepared", [](const TempDir&) { return OpenTestPostgres(false); }},
};

class StoreFixture : public ::testing::TestWithParam<Driver> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok()) << "mkdtemp failed";
    absl::StatusOr<std::unique_ptr<Store>> store = GetParam().open(dir_);
    if (!store.ok() && store.status().message() == kNoServer) {
      if (drover::testing::PgRequired()) FAIL() << kNoServer << " but the run requires one";
      GTEST_SKIP() << kNoServer;
    }
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  void Commit(const WriteBatch& batch) {
    absl::Status status = store_->Commit(batch);
    ASSERT_TRUE(status.ok()) << status;
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

}  // namespace drover::store::test_support
