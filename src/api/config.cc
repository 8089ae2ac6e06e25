#include "api/config.h"

#include <cstdio>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "auth/roles.h"
#include "core/names.h"
#include "google/protobuf/util/json_util.h"
#include "obs/otlp.h"
#include "util/file.h"

namespace drover::api {
namespace {

absl::Status Bad(const std::string& source, const std::string& key, const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", key, ": ", msg));
}

absl::StatusOr<core::TypeDefaults> ToDefaults(const drover::v1::TaskTypeConfig& c,
                                              core::TypeDefaults base, const std::string& source,
                                              const std::string& key) {
  if (c.backoff_base_ms() < 0) return Bad(source, key + ".backoff_base_ms", "must be >= 0");
  if (c.backoff_cap_ms() < 0) return Bad(source, key + ".backoff_cap_ms", "must be >= 0");
  if (c.max_attempts() < 0 || c.max_attempts() > 100) {
    return Bad(source, key + ".max_attempts", "must be 1 to 100");
  }
  constexpr int64_t kWeekMs = 7LL * 24 * 3600 * 1000;  // the same bound as a task's own fields
  for (const auto& [field, value] :
       {std::pair<const char*, int64_t>{"backoff_base_ms", c.backoff_base_ms()},
        {"backoff_cap_ms", c.backoff_cap_ms()},
        {"execution_timeout_ms", c.execution_timeout_ms()}}) {
    if (value > kWeekMs) {
      return Bad(source, key + "." + field, absl::StrCat("must be at most ", kWeekMs, " (7 days)"));
    }
  }
  if (c.execution_timeout_ms() < 0) {
    return Bad(source, key + ".execution_timeout_ms", "must be >= 0");
  }
  if (c.backoff_base_ms() > 0) base.retry.base = absl::Milliseconds(c.backoff_base_ms());
  if (c.backoff_cap_ms() > 0) base.retry.cap = absl::Milliseconds(c.backoff_cap_ms());
  if (c.max_attempts() > 0) base.retry.max_attempts = c.max_attempts();
  if (c.execution_timeout_ms() > 0) {
    base.execution_timeout = absl::Milliseconds(c.execution_timeout_ms());
  }
  if (!c.placement().empty()) {
    std::optional<core::Placement> p = core::ParsePlacement(c.placement());
    if (!p) {
      return Bad(
          source, key + ".placement",
          absl::StrCat("'", c.placement(), "' is not least_loaded, round_robin, random or cost"));
    }
    base.placement = *p;
  }
  if (base.retry.cap < base.retry.base) {
    return Bad(source, key + ".backoff_cap_ms", "must be >= backoff_base_ms");
  }
  return base;
}

using core::internal::ValidName;

}  // namespace

absl::StatusOr<ServeOptions> ParseServeOptions(const std::string& json, const std::string& source,
                                               const drover::v1::ServerConfig& flags) {
  drover::v1::ServerConfig c;
  if (!json.empty()) {
    google::protobuf::util::JsonParseOptions opts;
    opts.ignore_unknown_fields = false;
    auto st = google::protobuf::util::JsonStringToMessage(json, &c, opts);
    if (!st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": ", st.message().as_string()));
    }
  }
  c.MergeFrom(flags);  // proto3 merge: only fields set in `flags` override

  ServeOptions o;
  if (!c.data_dir().empty()) o.data_dir = c.data_dir();
  if (!c.store().empty()) {
    const bool pg =
        absl::StartsWith(c.store(), "postgres://") || absl::StartsWith(c.store(), "postgresql://");
    if (c.store() != "sqlite" && c.store() != "memory" && !pg) {
      return Bad(source, "store",
                 absl::StrCat("'", c.store().substr(0, 80),
                              "' is not sqlite, memory or a postgres:// URL"));
    }
    o.store = c.store();
  }
  if (!c.durability().empty()) {
    if (c.durability() == "normal") {
      o.durability = store::Durability::kNormal;
    } else if (c.durability() == "full") {
      o.durability = store::Durability::kFull;
    } else {
      return Bad(source, "durability",
                 absl::StrCat("'", c.durability(), "' is not normal or full"));
    }
  }
  if (!c.grpc_listen().empty()) o.grpc_listen = c.grpc_listen();
  if (!c.http_listen().empty()) o.http_listen = c.http_listen() == "off" ? "" : c.http_listen();
  if (c.capacity() < 0) return Bad(source, "capacity", "must be > 0");
  if (c.capacity() > 0) o.engine.capacity = c.capacity();
  if (c.shed_fraction() != 0) {
    if (!(c.shed_fraction() > 0 && c.shed_fraction() <= 1)) {  // also refuses NaN
      return Bad(source, "shed_fraction", "must be in (0, 1]");
    }
    o.engine.shed_fraction = c.shed_fraction();
  }
  if (c.lease_ttl_ms() != 0) {
    if (c.lease_ttl_ms() < 100 || c.lease_ttl_ms() > 3'600'000) {
      return Bad(source, "lease_ttl_ms",
                 absl::StrCat("must be 100 to 3600000, got ", c.lease_ttl_ms()));
    }
    o.engine.lease_ttl = absl::Milliseconds(c.lease_ttl_ms());
  }
  if (c.max_payload_bytes() != 0) {
    if (c.max_payload_bytes() < 0 || c.max_payload_bytes() > (32 << 20)) {
      return Bad(source, "max_payload_bytes", "must be 1 to 33554432 (32 MiB)");
    }
    o.engine.max_payload_bytes = static_cast<size_t>(c.max_payload_bytes());
  }
  if (c.http_threads() != 0) {
    if (c.http_threads() < 1 || c.http_threads() > 256) {
      return Bad(source, "http_threads", "must be 1 to 256");
    }
    o.http_threads = c.http_threads();
  }
  if (c.max_batch() != 0) {
    if (c.max_batch() < 1 || c.max_batch() > 100'000) {
      return Bad(source, "max_batch", "must be 1 to 100000");
    }
    o.engine.max_batch = static_cast<size_t>(c.max_batch());
  }
  if (c.command_queue_limit() != 0) {
    if (c.command_queue_limit() < 1) return Bad(source, "command_queue_limit", "must be > 0");
    o.command_queue_limit = static_cast<size_t>(c.command_queue_limit());
  }
  if (c.terminal_retention_ms() != 0) {
    if (c.terminal_retention_ms() < 0 || c.terminal_retention_ms() > 30LL * 24 * 3600 * 1000) {
      return Bad(source, "terminal_retention_ms", "must be 1 to 2592000000 (30 days)");
    }
    o.engine.terminal_retention = absl::Milliseconds(c.terminal_retention_ms());
  }
  if (c.max_terminal_in_memory() != 0) {
    if (c.max_terminal_in_memory() < 0) return Bad(source, "max_terminal_in_memory", "must be > 0");
    o.engine.max_terminal_in_memory = c.max_terminal_in_memory();
  }
  if (c.breaker_failures() == -1) {
    o.engine.breaker_failures = 0;
  } else if (c.breaker_failures() != 0) {
    if (c.breaker_failures() < 1 || c.breaker_failures() > 1000) {
      return Bad(source, "breaker_failures", "must be 1 to 1000, or -1 to disable breakers");
    }
    o.engine.breaker_failures = c.breaker_failures();
  }
  if (c.breaker_open_ms() != 0) {
    if (c.breaker_open_ms() < 1 || c.breaker_open_ms() > 24LL * 3600 * 1000) {
      return Bad(source, "breaker_open_ms", "must be 1 to 86400000 (1 day)");
    }
    o.engine.breaker_open_for = absl::Milliseconds(c.breaker_open_ms());
  }
  if (c.store_retention_ms() == -1) {
    o.store_retention = absl::InfiniteDuration();
  } else if (c.store_retention_ms() != 0) {
    constexpr int64_t kTenYearsMs = 10LL * 365 * 24 * 3600 * 1000;
    if (c.store_retention_ms() < 1 || c.store_retention_ms() > kTenYearsMs) {
      return Bad(source, "store_retention_ms",
                 "must be 1 to 315360000000 (10 years), or -1 to keep finished tasks forever");
    }
    o.store_retention = absl::Milliseconds(c.store_retention_ms());
  }
  if (o.store_retention < o.engine.terminal_retention) {
    return Bad(source, "store_retention_ms",
               absl::StrCat("must be at least terminal_retention_ms (",
                            absl::ToInt64Milliseconds(o.engine.terminal_retention),
                            "): the store cannot forget a task the server still holds"));
  }
  if (c.load_history_retention_ms() == -1) {
    o.load_history_retention = absl::InfiniteDuration();
  } else if (c.load_history_retention_ms() != 0) {
    constexpr int64_t kTenYearsMs = 10LL * 365 * 24 * 3600 * 1000;
    if (c.load_history_retention_ms() < 1 || c.load_history_retention_ms() > kTenYearsMs) {
      return Bad(source, "load_history_retention_ms",
                 "must be 1 to 315360000000 (10 years), or -1 to keep load history forever");
    }
    o.load_history_retention = absl::Milliseconds(c.load_history_retention_ms());
  }
  if (c.ownership_ttl_ms() != 0) {
    if (c.ownership_ttl_ms() < 1500 || c.ownership_ttl_ms() > 600'000) {
      return Bad(source, "ownership_ttl_ms", "must be 1500 to 600000 (10 minutes)");
    }
    o.ownership_ttl = absl::Milliseconds(c.ownership_ttl_ms());
  }
  auto defaults = ToDefaults(c.defaults(), o.engine.defaults, source, "defaults");
  if (!defaults.ok()) return defaults.status();
  o.engine.defaults = *defaults;
  for (const auto& [type, tc] : c.task_types()) {
    if (!ValidName(type)) {
      return Bad(source, absl::StrCat("task_types.", type),
                 "a task type is 1 to 64 characters of [A-Za-z0-9_.-]");
    }
    auto d = ToDefaults(tc, o.engine.defaults, source, absl::StrCat("task_types.", type));
    if (!d.ok()) return d.status();
    o.engine.per_type[type] = *d;
  }
  for (const auto& [name, rc] : c.resources()) {
    const std::string key = absl::StrCat("resources.", name);
    if (!ValidName(name)) return Bad(source, key, "a name is 1 to 64 characters of [A-Za-z0-9_.-]");
    core::ResourceSpec r;
    if (rc.kind() == "token_bucket") {
      r.kind = core::ResourceSpec::Kind::kTokenBucket;
    } else if (!rc.kind().empty() && rc.kind() != "semaphore") {
      return Bad(source, key + ".kind",
                 absl::StrCat("'", rc.kind(), "' is not semaphore or token_bucket"));
    }
    constexpr int64_t kMaxCapacity = int64_t{1} << 50;
    if (rc.capacity() < 1 || rc.capacity() > kMaxCapacity) {
      return Bad(source, key + ".capacity",
                 absl::StrCat("must be 1 to ", kMaxCapacity, ", got ", rc.capacity()));
    }
    r.capacity = rc.capacity();
    if (rc.refill_period_ms() != 0) {
      if (r.kind != core::ResourceSpec::Kind::kTokenBucket) {
        return Bad(source, key + ".refill_period_ms", "only a token_bucket refills");
      }
      if (rc.refill_period_ms() < 1 || rc.refill_period_ms() > 24LL * 3600 * 1000) {
        return Bad(source, key + ".refill_period_ms", "must be 1 to 86400000 (1 day)");
      }
      r.refill_period = absl::Milliseconds(rc.refill_period_ms());
    }
    o.engine.resources[name] = r;
  }
  for (const auto& [tenant, tc] : c.tenants()) {
    const std::string key = absl::StrCat("tenants.", tenant == "*" ? "\"*\"" : tenant);
    if (tenant != "*" && !ValidName(tenant)) {
      return Bad(source, key, "a tenant is 1 to 64 characters of [A-Za-z0-9_.-], or \"*\"");
    }
    if (tc.weight() != 0) {
      if (tenant == "*")
        return Bad(source, key + ".weight", "is per tenant: unlisted tenants weigh 1");
      if (!(tc.weight() >= 0.001 && tc.weight() <= 1000)) {  // also refuses NaN
        return Bad(source, key + ".weight", "must be 0.001 to 1000");
      }
      o.engine.tenant_weights[tenant] = tc.weight();
    }
    core::EngineOptions::TenantQuota q;
    if (!(tc.max_submits_per_second() >= 0 && tc.max_submits_per_second() <= 1e7)) {
      return Bad(source, key + ".max_submits_per_second", "must be 0 (no limit) to 10000000");
    }
    if (!(tc.submit_burst() >= 0 && tc.submit_burst() <= 1e7)) {
      return Bad(source, key + ".submit_burst", "must be 0 (one second's worth) to 10000000");
    }
    if (tc.submit_burst() != 0 && tc.max_submits_per_second() == 0) {
      return Bad(source, key + ".submit_burst", "needs max_submits_per_second");
    }
    if (tc.max_outstanding() < 0) return Bad(source, key + ".max_outstanding", "must be >= 0");
    q.submits_per_second = tc.max_submits_per_second();
    q.burst = tc.submit_burst();
    q.max_outstanding = tc.max_outstanding();
    if (tenant == "*") {
      o.engine.default_quota = q;
    } else if (q.submits_per_second > 0 || q.max_outstanding > 0) {
      o.engine.tenant_quotas[tenant] = q;
    }
  }
  for (int i = 0; i < c.pools_size(); ++i) {
    absl::StatusOr<pool::PoolSpec> p = pool::ToPoolSpec(c.pools(i), absl::StrCat("pools[", i, "]"));
    if (!p.ok())
      return absl::InvalidArgumentError(absl::StrCat(source, ": ", p.status().message()));
    for (const pool::PoolSpec& other : o.pools) {
      if (other.name == p->name) {
        return Bad(source, absl::StrCat("pools[", i, "].name"),
                   absl::StrCat("\"", p->name, "\" is used twice"));
      }
    }
    o.pools.push_back(std::move(*p));
  }
  if (!(c.fleet_hourly_budget() >= 0)) return Bad(source, "fleet_hourly_budget", "must be >= 0");
  o.fleet_hourly_budget = c.fleet_hourly_budget();
  const v1::AuthConfig& a = c.auth();
  if (a.mode() == "off") {
    o.auth = false;
  } else if (!a.mode().empty() && a.mode() != "on") {
    return Bad(source, "auth.mode",
               absl::StrCat("'", a.mode().substr(0, 40), "' is not on or off"));
  }
  if (a.audit_retention_ms() == -1) {
    o.audit_retention = absl::InfiniteDuration();
  } else if (a.audit_retention_ms() != 0) {
    constexpr int64_t kTenYearsMs = 10LL * 365 * 24 * 3600 * 1000;
    if (a.audit_retention_ms() < 60'000 || a.audit_retention_ms() > kTenYearsMs) {
      return Bad(source, "auth.audit_retention_ms",
                 "must be 60000 (1 minute) to 315360000000 (10 years), or -1 to keep it forever");
    }
    o.audit_retention = absl::Milliseconds(a.audit_retention_ms());
  }
  o.public_metrics = a.public_metrics();
  const v1::TracingConfig& tr = c.tracing();
  if (!tr.endpoint().empty()) {
    if (auto e = obs::ParseOtlpEndpoint(tr.endpoint(), "tracing.endpoint"); !e.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": ", e.status().message()));
    }
    o.tracing_endpoint = tr.endpoint();
  }
  if (tr.has_sampling()) {
    if (!(tr.sampling() >= 0 && tr.sampling() <= 1)) {  // also refuses NaN
      return Bad(source, "tracing.sampling", "must be 0 to 1 (the share of traces exported)");
    }
    o.tracing_sampling = tr.sampling();
  }
  if (!tr.service_name().empty()) {
    if (tr.service_name().size() > 128)
      return Bad(source, "tracing.service_name", "at most 128 bytes");
    o.tracing_service_name = tr.service_name();
  }
  if (tr.max_queue_spans() != 0) {
    if (tr.max_queue_spans() < 100 || tr.max_queue_spans() > 10'000'000) {
      return Bad(source, "tracing.max_queue_spans", "must be 100 to 10000000");
    }
    o.tracing_max_queue = static_cast<size_t>(tr.max_queue_spans());
  }
  if (o.tracing_endpoint.empty() &&
      (tr.has_sampling() || !tr.service_name().empty() || tr.max_queue_spans() != 0)) {
    return Bad(source, "tracing.endpoint", "is needed: the other tracing keys are set");
  }
  const v1::EventsConfig& ev = c.events();
  if (ev.tasks() == "all") {
    o.engine.task_events = core::TaskEvents::kAll;
  } else if (ev.tasks() == "off") {
    o.engine.task_events = core::TaskEvents::kOff;
  } else if (!ev.tasks().empty() && ev.tasks() != "notable") {
    return Bad(source, "events.tasks",
               absl::StrCat("'", ev.tasks().substr(0, 40), "' is not notable, all or off"));
  }
  if (ev.retention_ms() == -1) {
    o.event_retention = absl::InfiniteDuration();
  } else if (ev.retention_ms() != 0) {
    constexpr int64_t kTenYearsMs = 10LL * 365 * 24 * 3600 * 1000;
    if (ev.retention_ms() < 1000 || ev.retention_ms() > kTenYearsMs) {
      return Bad(source, "events.retention_ms",
                 "must be 1000 (1 second) to 315360000000 (10 years), or -1 to keep them forever");
    }
    o.event_retention = absl::Milliseconds(ev.retention_ms());
  }
  for (const auto& [cn, cp] : a.certificates()) {
    const std::string key = absl::StrCat("auth.certificates.", cn.substr(0, 64));
    if (cn.empty() || cn.size() > 255) return Bad(source, key, "a common name is 1 to 255 bytes");
    if (cp.grants().empty())
      return Bad(source, key + ".grants", "at least one role, e.g. submitter@team-a");
    for (int i = 0; i < cp.grants_size(); ++i) {
      auto g = auth::ParseGrant(cp.grants(i));
      if (!g.ok()) {
        return Bad(source, absl::StrCat(key, ".grants[", i, "]"),
                   std::string(g.status().message()));
      }
      o.certificate_principals[cn].push_back(*g);
    }
  }
  for (int i = 0; i < a.hide_payloads_from_viewers_size(); ++i) {
    const std::string& t = a.hide_payloads_from_viewers(i);
    if (absl::Status st = auth::CheckTenantName(
            t, absl::StrCat("auth.hide_payloads_from_viewers[", i, "]"), true);
        !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": ", st.message()));
    }
    o.hide_payloads_from_viewers.push_back(t);
  }
  const v1::TlsConfig& t = c.tls();
  o.tls.cert_file = t.cert_file();
  o.tls.key_file = t.key_file();
  o.tls.client_ca_file = t.client_ca_file();
  o.tls.ca_file = t.ca_file().empty() ? t.client_ca_file() : t.ca_file();
  o.tls.server_name = t.server_name();
  if (t.client_certs().empty()) {
    o.tls.client_certs = t.client_ca_file().empty() ? TlsOptions::ClientCerts::kOff
                                                    : TlsOptions::ClientCerts::kRequire;
  } else if (t.client_certs() == "require" || t.client_certs() == "request") {
    if (t.client_ca_file().empty()) {
      return Bad(source, "tls.client_certs",
                 "needs tls.client_ca_file (the CAs to verify them against)");
    }
    o.tls.client_certs = t.client_certs() == "require" ? TlsOptions::ClientCerts::kRequire
                                                       : TlsOptions::ClientCerts::kRequest;
  } else if (t.client_certs() == "off") {
    if (!t.client_ca_file().empty()) {
      return Bad(source, "tls.client_certs", "is off but tls.client_ca_file is set");
    }
  } else {
    return Bad(
        source, "tls.client_certs",
        absl::StrCat("'", t.client_certs().substr(0, 40), "' is not require, request or off"));
  }
  if (t.reload_interval_ms() != 0) {
    if (t.reload_interval_ms() < 1000 || t.reload_interval_ms() > 86'400'000) {
      return Bad(source, "tls.reload_interval_ms", "must be 1000 to 86400000 (1 day)");
    }
    o.tls.reload_interval = absl::Milliseconds(t.reload_interval_ms());
  }
  if (absl::Status st = CheckTlsFiles(o.tls); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", st.message()));
  }
  if (!o.certificate_principals.empty() && o.tls.client_certs == TlsOptions::ClientCerts::kOff) {
    return Bad(source, "auth.certificates", "needs client certificates: set tls.client_ca_file");
  }
  if (!o.auth) {
    // Without auth anyone who reaches a port may do anything: only this machine may.
    for (const auto& [field, addr] :
         {std::pair<const char*, const std::string&>{"grpc_listen", o.grpc_listen},
          {"http_listen", o.http_listen}}) {
      if (!addr.empty() && !IsLoopbackAddress(addr)) {
        return Bad(source, field,
                   absl::StrCat("'", addr,
                                "' is not a loopback address, and auth is off: with "
                                "auth off drover listens on loopback only (127.0.0.1, ::1)"));
      }
    }
  }
  if (c.preempt_after_ms() == -1) {
    o.engine.preempt_after = absl::ZeroDuration();
  } else if (c.preempt_after_ms() != 0) {
    if (c.preempt_after_ms() < 1 || c.preempt_after_ms() > 24LL * 3600 * 1000) {
      return Bad(source, "preempt_after_ms", "must be 1 to 86400000 (1 day), or -1 to disable");
    }
    o.engine.preempt_after = absl::Milliseconds(c.preempt_after_ms());
  }
  return o;
}

bool IsLoopbackAddress(const std::string& address) {
  const size_t colon = address.rfind(':');
  std::string host = colon == std::string::npos ? address : address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host == "localhost" || host == "::1") return true;
  // 127.0.0.0/8
  int a = 0, b = 0, c = 0, d = 0;
  char tail = 0;
  if (std::sscanf(host.c_str(), "%d.%d.%d.%d%c", &a, &b, &c, &d, &tail) == 4) {
    return a == 127 && b >= 0 && b <= 255 && c >= 0 && c <= 255 && d >= 0 && d <= 255;
  }
  return false;
}

absl::StatusOr<ServeOptions> LoadServeOptions(const std::string& path,
                                              const drover::v1::ServerConfig& flags) {
  std::string json;
  if (!path.empty()) {
    std::optional<std::string> text = ReadWholeFile(path);
    if (!text) return absl::NotFoundError(absl::StrCat("config: cannot read ", path));
    json = std::move(*text);
  }
  return ParseServeOptions(json, path.empty() ? "flags" : path, flags);
}

}  // namespace drover::api
