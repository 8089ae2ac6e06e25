// Private to the SQLite driver: WAL checkpoints off the commit path.
//
// With SQLite's inline autocheckpoint, the commit that filled the WAL copied its 10,000
// pages into the database and synced it while every later commit waited: ~35 ms once
// every ~1,650 tasks at 1,000 single submissions a second (the submitters'
// acknowledgement p99 was 22 ms; drover loadtest found it, docs/benchmarks.md). This
// thread, with a connection of its own, runs a passive checkpoint when the writer's WAL
// hook wakes it. A passive checkpoint never blocks the writer; the writer restarts the WAL
// from its start at its next transaction once everything was copied.
#pragma once

#include <sqlite3.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "store/store.h"

namespace drover::store {

class SqliteCheckpointer {
 public:
  // nullptr (and the caller keeps the inline autocheckpoint) when the second connection
  // cannot be opened. `durability` is the writer's: the checkpointing connection's own
  // synchronous setting decides whether a checkpoint syncs.
  static std::unique_ptr<SqliteCheckpointer> Start(const std::string& path, Durability durability,
                                                   int busy_timeout_ms);
  ~SqliteCheckpointer();  // stops the thread and closes the connection
  // A checkpoint soon (from the writer's WAL hook; cheap, never blocks on a checkpoint).
  void Wake();

 private:
  explicit SqliteCheckpointer(sqlite3* db);
  void Loop();

  sqlite3* db_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool wake_ = false, stop_ = false;
  std::thread thread_;  // last: starts once the rest is built
};

}  // namespace drover::store
