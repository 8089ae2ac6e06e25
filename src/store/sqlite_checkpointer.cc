#include "sqlite_checkpointer.h"

#include <chrono>

namespace drover::store {

std::unique_ptr<SqliteCheckpointer> SqliteCheckpointer::Start(const std::string& path,
                                                              Durability durability,
                                                              int busy_timeout_ms) {
  sqlite3* db = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  const char* sync =
      durability == Durability::kFull ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL";
  if (rc != SQLITE_OK || sqlite3_exec(db, sync, nullptr, nullptr, nullptr) != SQLITE_OK) {
    sqlite3_close_v2(db);  // sqlite3_open_v2 may allocate a handle even when it fails
    return nullptr;
  }
  sqlite3_busy_timeout(db, busy_timeout_ms);
  return std::unique_ptr<SqliteCheckpointer>(new SqliteCheckpointer(db));
}

SqliteCheckpointer::SqliteCheckpointer(sqlite3* db) : db_(db), thread_([this] { Loop(); }) {}

SqliteCheckpointer::~SqliteCheckpointer() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
  sqlite3_close_v2(db_);
}

void SqliteCheckpointer::Wake() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (wake_) return;
    wake_ = true;
  }
  cv_.notify_one();
}

void SqliteCheckpointer::Loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return wake_ || stop_; });
      if (stop_) return;
      wake_ = false;
    }
    int log = 0, copied = 0;
    // Errors (SQLITE_BUSY from a concurrent checkpoint, I/O) leave the WAL to the next
    // wake-up, or to the writer's inline checkpoint at its hard limit.
    (void)sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, &log, &copied);
    // At most ~100 a second while the WAL stays over the mark (each commit wakes it).
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace drover::store
