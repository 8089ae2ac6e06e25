// The configuration of drover serve: a JSON file (drover.v1.ServerConfig, see
// proto/drover/v1/config.proto and docs/configuration.md) with flags over it, parsed once
// into an immutable ServeOptions. Unknown keys and bad values stop start-up with a message
// naming them.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "api/tls.h"
#include "core/engine.h"
#include "drover/v1/config.pb.h"
#include "drover/v1/drover.pb.h"
#include "pool/pool_manager.h"
#include "store/store.h"

namespace drover::api {

struct ServeOptions {
  std::string data_dir = "./drover-data";
  std::string store = "sqlite";  // sqlite | memory | postgres://... (a libpq URL)
  store::Durability durability = store::Durability::kNormal;
  std::string grpc_listen = "127.0.0.1:7070";
  std::string http_listen = "127.0.0.1:7071";  // empty: HTTP off
  int http_threads = 8;
  size_t command_queue_limit = 100'000;
  // SUCCEEDED, CANCELED and EXPIRED rows are deleted from the store this long after they
  // finish; infinite keeps them. Never shorter than engine.terminal_retention.
  absl::Duration store_retention = absl::Hours(24 * 7);
  // Pools' per-minute load history rows are deleted this long after their minute; infinite
  // keeps them. Five weeks by default: a weekly forecaster needs more than one week.
  absl::Duration load_history_retention = absl::Hours(24 * 35);
  // PostgreSQL store: the TTL of the lease on the work (docs/postgres.md). A standby takes
  // over this long after the owner stops renewing.
  absl::Duration ownership_ttl = absl::Seconds(6);
  core::EngineOptions engine;
  std::vector<pool::PoolSpec> pools;  // agent pools drover runs (docs/pools.md)
  double fleet_hourly_budget = 0;     // over every pool; 0: none
  // Auth (docs/security.md): on unless the config or --auth says off (then only loopback
  // listen addresses are accepted).
  bool auth = true;
  absl::Duration audit_retention = absl::Hours(24 * 90);
  // The event log (events.*): kept this long; which task changes go in it is
  // engine.task_events.
  absl::Duration event_retention = absl::Hours(24 * 7);
  // Tracing (docs/tracing.md): on with an endpoint.
  std::string tracing_endpoint;
  double tracing_sampling = 1;
  std::string tracing_service_name = "drover";
  size_t tracing_max_queue = 20'000;
  bool public_metrics = false;
  // Client certificates as principals: common name -> grants (auth.certificates).
  std::map<std::string, std::vector<drover::v1::Grant>> certificate_principals;
  TlsOptions tls;
  std::vector<std::string> hide_payloads_from_viewers;  // tenants, or "*"
};

// Whether a listen address ("127.0.0.1:7070", "[::1]:7070", "localhost:7070") is loopback.
bool IsLoopbackAddress(const std::string& address);

// Reads `path` (may be empty: defaults only), applies `flags` over it (fields set in
// `flags` win) and checks every value.
absl::StatusOr<ServeOptions> LoadServeOptions(const std::string& path,
                                              const drover::v1::ServerConfig& flags);

// The same from an in-memory JSON text; `source` names it in errors.
absl::StatusOr<ServeOptions> ParseServeOptions(const std::string& json, const std::string& source,
                                               const drover::v1::ServerConfig& flags);

}  // namespace drover::api
