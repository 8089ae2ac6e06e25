// drover serve: wires the concrete parts together (the one place that does).
//
//   store (SQLite | PostgreSQL | memory) -> recovery -> Engine -> Runtime (engine + store threads)
//   -> Service -> GrpcServer + HttpServer
//
// Life cycle: Start() returns once recovered and listening, or an error naming what
// failed; Stop() refuses new work, finishes work in flight and is idempotent.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "api/config.h"
#include "api/service.h"
#include "core/engine.h"
#include "store/store.h"
#include "util/clock.h"

namespace drover::api {

struct RecoveryReport {
  int64_t tasks = 0;     // rows read
  int64_t requeued = 0;  // leased when the server stopped, queued again
  int64_t skipped = 0;   // finished past their retention: left in the store only
  int64_t workflows = 0;
  double seconds = 0;
  uint32_t epoch = 0;
  // What recovery did, for the event log (tasks whose attempt the stop interrupted, back
  // in the queue): written once the runtime runs.
  std::vector<drover::v1::Event> events;
};

// Whether ServeOptions::store names a PostgreSQL database (postgres:// or postgresql://).
bool IsPostgres(const std::string& store);

// Rebuilds an engine from `store` (start-up recovery): bumps the store's epoch, loads every
// task, returns tasks that were leased to the queue and persists that. Used by Server::Start
// and by the recovery benchmark.
absl::StatusOr<std::unique_ptr<core::Engine>> RecoverEngine(store::Store& store,
                                                            core::EngineOptions options,
                                                            const Clock& clock,
                                                            RecoveryReport* report);

class Server {
 public:
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServeOptions& options);
  ~Server();

  void Stop();
  int grpc_port() const;
  int http_port() const;
  const RecoveryReport& recovery() const;
  // The store as logs show it ("postgres:postgresql://user@host:port/db", no password).
  std::string store_description() const;

  struct Impl;
  static Service::ClusterFn ClusterStatusFn(Impl& impl);

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace drover::api
