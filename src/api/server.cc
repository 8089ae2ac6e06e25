#include "api/server.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "api/gate.h"
#include "api/grpc_server.h"
#include "api/http_server.h"
#include "api/runtime.h"
#include "api/service.h"
#include "auth/tokens.h"
#include "cluster/lease.h"
#include "core/codec.h"
#include "fmt/core.h"
#include "google/protobuf/util/json_util.h"
#include "store/pg_conn.h"
#include "util/clock.h"

namespace drover::api {

struct Server::Impl {
  ServeOptions options;
  SystemClock clock;
  std::unique_ptr<store::Store> store;
  std::unique_ptr<core::Engine> engine;
  obs::EventHub events;                       // outlives the runtime that publishes to it
  std::unique_ptr<obs::OtlpExporter> tracer;  // and the exporter it offers spans to
  std::unique_ptr<Runtime> runtime;
  auth::TokenRegistry tokens;
  std::unique_ptr<Gate> gate;
  std::unique_ptr<Service> service;
  std::unique_ptr<GrpcServer> grpc;
  std::unique_ptr<HttpServer> http;
  std::unique_ptr<pool::PoolManager> pools;
  std::unique_ptr<cluster::Lease> lease;  // PostgreSQL: ownership of the work
  RecoveryReport recovery;
  int lock_fd = -1;  // flock on data_dir/drover.lock: one server per data directory
  bool stopped = false;
  // The dashboard's charts: a sample every series.step() (docs/dashboard.md).
  obs::StatsSeries series;
  std::thread sampler;
  std::mutex sampler_mu;
  std::condition_variable sampler_cv;
  bool sampler_stop = false;
  void StartSampler() {
    service->SetStatsSeries(&series);
    sampler = std::thread([this] {
      std::unique_lock<std::mutex> lk(sampler_mu);
      do {
        lk.unlock();
        service->SampleStats();
        lk.lock();
      } while (!sampler_cv.wait_for(lk, absl::ToChronoMilliseconds(series.step()),
                                    [this] { return sampler_stop; }));
    });
  }
  void StopSampler() {
    {
      std::lock_guard<std::mutex> lk(sampler_mu);
      sampler_stop = true;
    }
    sampler_cv.notify_all();
    if (sampler.joinable()) sampler.join();
  }
  ~Impl() {
    StopSampler();
    if (lock_fd >= 0) ::close(lock_fd);
  }
};

namespace {

// The tokens persisted in the store (meta kTokensMetaKey), into `tokens`.
absl::Status LoadTokens(store::Store& store, auth::TokenRegistry& tokens) {
  auto v = store.GetMeta(auth::kTokensMetaKey);
  if (!v.ok()) return v.status();
  v1::TokenList list;
  if (v->has_value()) {
    std::string raw;
    if (!absl::Base64Unescape(**v, &raw) || !list.ParseFromString(raw)) {
      return absl::DataLossError(
          absl::StrCat("store: meta ", auth::kTokensMetaKey, " is unreadable"));
    }
  }
  tokens.Load(list);
  return absl::OkStatus();
}

// First start with auth on and no live token: an admin token on every tenant, persisted
// before the server listens and written to data_dir/admin.token (mode 0600), where the CLI
// looks for it.
absl::Status Bootstrap(const ServeOptions& options, store::Store& store,
                       auth::TokenRegistry& tokens) {
  const int64_t now = absl::ToUnixMillis(absl::Now());
  if (tokens.LiveCount(now) > 0) {
    fmt::print(stderr, "drover serve: auth on, {} live tokens in the store (drover token ls)\n",
               tokens.LiveCount(now));
    return absl::OkStatus();
  }
  v1::CreateTokenRequest req;
  req.set_name(
      absl::StrCat("admin-", absl::FormatTime("%Y%m%d-%H%M%S", absl::Now(), absl::UTCTimeZone())));
  v1::Grant* g = req.add_grants();
  g->set_tenant(std::string(auth::kAnyTenant));
  g->set_role(v1::ROLE_ADMIN);
  auto created = tokens.Create(auth::Caller::Unrestricted("drover serve"), req, now);
  if (!created.ok()) return created.status();
  store::WriteBatch batch;
  batch.meta.emplace_back(auth::kTokensMetaKey,
                          absl::Base64Escape(tokens.Snapshot().SerializeAsString()));
  if (absl::Status st = store.Commit(batch); !st.ok()) return st;
  const std::string path = options.data_dir + "/admin.token";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || ::fchmod(fd, 0600) != 0) {
    if (fd >= 0) ::close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat("auth: cannot write the admin token to ", path, ": ", std::strerror(errno)));
  }
  const std::string line = created->secret + "\n";
  const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
                  ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return absl::InternalError(absl::StrCat("auth: writing ", path, " failed"));
  fmt::print(stderr,
             "drover serve: auth on; first start: admin token \"{}\" written to {} (readable by "
             "you only; the CLI reads it from ./drover-data, DROVER_TOKEN_FILE or DROVER_TOKEN)\n",
             created->token.name(), path);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> MetaNumber(store::Store& s, const std::string& key) {
  auto v = s.GetMeta(key);
  if (!v.ok()) return v.status();
  if (!v->has_value()) return 0;
  uint64_t n = 0;
  if (!absl::SimpleAtoi(**v, &n)) {
    return absl::DataLossError(absl::StrCat("store: meta ", key, " is not a number"));
  }
  return n;
}

// PostgreSQL: waits for the lease on the work (another server may hold it: this one is
// then a standby), then fences every write of the store with its epoch. SIGINT/SIGTERM
// (blocked by drover serve, so pending) end the wait.
absl::StatusOr<std::unique_ptr<cluster::Lease>> TakeOwnership(const ServeOptions& options,
                                                              store::Store& store) {
  bool prepare = true;
  cluster::LeaseOptions lo;
  lo.url = store::pg::StripDroverOptions(options.store, &prepare);
  lo.name = "partition/0";
  lo.owner = cluster::ServerId();
  lo.address = options.grpc_listen;
  lo.ttl = options.ownership_ttl;
  lo.margin = std::max(lo.ttl / 6, absl::Milliseconds(250));
  auto lease = std::make_unique<cluster::Lease>(lo);
  auto epoch = lease->Acquire(
      [](const cluster::LeaseRow& row) {
        fmt::print(stderr,
                   "drover serve: standby: the work is owned by {} ({}) at epoch {}, lease "
                   "expires in {:.1f} s; waiting to take over\n",
                   row.owner, row.address, row.epoch, absl::ToDoubleSeconds(row.expires_in));
      },
      [] {
        sigset_t pending;
        sigpending(&pending);
        return sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1;
      });
  if (!epoch.ok()) return epoch.status();
  fmt::print(stderr, "drover serve: owner of the work at epoch {} (lease {}, ttl {} ms)\n", *epoch,
             lo.name, absl::ToInt64Milliseconds(lo.ttl));
  if (absl::Status st = store.SetFence({lo.name, lo.owner, *epoch}); !st.ok()) return st;
  // Renewals start now: recovery of a large queue may outlast a third of the TTL.
  lease->Run([](const std::string& why) {
    // Every write is fenced, so nothing stale can land; stop acting at once and let a
    // supervisor restart the process, which then waits as a standby.
    fmt::print(stderr, "drover serve: lost ownership of the work: {}; exiting\n", why);
    std::fflush(stderr);
    std::_Exit(75);
  });
  return lease;
}

}  // namespace

// The servers and leases on the store, for drover cluster. SQLite and memory: this server.
Service::ClusterFn Server::ClusterStatusFn(Impl& impl) {
  const std::string store = impl.store->Describe();
  const std::string self = impl.lease ? impl.lease->options().owner : cluster::ServerId();
  const std::string address =
      absl::StrCat(impl.options.grpc_listen.substr(0, impl.options.grpc_listen.rfind(':')), ":",
                   impl.grpc->port());
  const absl::Time started = absl::Now();
  if (!impl.lease) {
    return [store, self, address, started]() -> absl::StatusOr<v1::ClusterStatus> {
      v1::ClusterStatus c;
      c.set_store(store);
      c.set_self(self);
      v1::ClusterServer* s = c.add_servers();
      s->set_id(self);
      s->set_address(address);
      s->set_role("owner");
      s->set_started_unix_ms(absl::ToUnixMillis(started));
      return c;
    };
  }
  const std::string url = impl.lease->options().url;
  return [store, self, url]() -> absl::StatusOr<v1::ClusterStatus> {
    v1::ClusterStatus c;
    c.set_store(store);
    c.set_self(self);
    auto servers = cluster::Lease::Servers(url);
    if (!servers.ok()) return servers.status();
    for (const cluster::ServerRow& row : *servers) {
      v1::ClusterServer* s = c.add_servers();
      s->set_id(row.id);
      s->set_address(row.address);
      s->set_role(row.role);
      s->set_heartbeat_age_ms(absl::ToInt64Milliseconds(row.heartbeat_age));
      s->set_started_unix_ms(absl::ToUnixMillis(row.started));
    }
    auto leases = cluster::Lease::List(url);
    if (!leases.ok()) return leases.status();
    for (const cluster::LeaseRow& row : *leases) {
      v1::ClusterLease* l = c.add_leases();
      l->set_name(row.name);
      l->set_owner(row.owner);
      l->set_address(row.address);
      l->set_epoch(row.epoch);
      l->set_expires_in_ms(absl::ToInt64Milliseconds(row.expires_in));
      l->set_renewed_age_ms(absl::ToInt64Milliseconds(row.renewed_ago));
    }
    return c;
  };
}

bool IsPostgres(const std::string& store) {
  return store.rfind("postgres://", 0) == 0 || store.rfind("postgresql://", 0) == 0;
}

absl::StatusOr<std::unique_ptr<core::Engine>> RecoverEngine(store::Store& store,
                                                            core::EngineOptions options,
                                                            const Clock& clock,
                                                            RecoveryReport* report) {
  const absl::Time start = absl::Now();
  *report = RecoveryReport();
  auto epoch = MetaNumber(store, "epoch");
  if (!epoch.ok()) return epoch.status();
  auto max_id = MetaNumber(store, "max_task_id");
  if (!max_id.ok()) return max_id.status();
  report->epoch = static_cast<uint32_t>(*epoch + 1);
  store::WriteBatch bump;
  bump.meta.emplace_back("epoch", absl::StrCat(report->epoch));
  if (absl::Status st = store.Commit(bump); !st.ok()) return st;

  options.epoch = report->epoch;
  options.seed = static_cast<uint64_t>(absl::ToUnixNanos(start));
  auto engine = std::make_unique<core::Engine>(options, clock);
  {
    auto costs = store.GetMeta("costs");
    if (!costs.ok()) return costs.status();
    if (costs->has_value()) {
      v1::CostTotals totals;
      auto pst = google::protobuf::util::JsonStringToMessage(**costs, &totals);
      if (!pst.ok()) {
        return absl::DataLossError(
            absl::StrCat("store: meta costs is unreadable: ", pst.message().as_string()));
      }
      engine->RestoreCosts(totals);
    }
  }
  absl::Status row_error;
  absl::Status wst = store.LoadWorkflows([&](store::WorkflowRow&& row) {
    if (!row_error.ok()) return;
    auto w = core::RowToWorkflow(row);
    if (!w.ok()) {
      row_error = w.status();
      return;
    }
    engine->RestoreWorkflow(std::move(*w));
    report->workflows++;
  });
  if (!wst.ok()) return wst;
  if (!row_error.ok()) return row_error;
  // Finished tasks past their retention stay in the store only (Get reads them there).
  const int64_t keep_after_ms = absl::ToUnixMillis(clock.Now() - options.terminal_retention);
  uint64_t max_row_id = 0;  // skipped rows count too: ids are never reused
  absl::Status st = store.LoadTasks([&](store::TaskRow&& row) {
    if (!row_error.ok()) return;
    max_row_id = std::max(max_row_id, row.id);
    const bool finished = row.state == v1::TASK_STATE_SUCCEEDED ||
                          row.state == v1::TASK_STATE_CANCELED ||
                          row.state == v1::TASK_STATE_EXPIRED;
    if (finished && row.updated_unix_ms < keep_after_ms) {
      report->skipped++;
      return;
    }
    auto task = core::RowToTask(row);
    if (!task.ok()) {
      row_error = task.status();
      return;
    }
    if (task->state() == v1::TASK_STATE_LEASED) report->requeued++;
    engine->Restore(std::move(*task));
    report->tasks++;
  });
  if (!st.ok()) return st;
  if (!row_error.ok()) return row_error;
  // Parents that finished long ago were skipped above, but a child that may still run
  // needs their results: read them back. (A parent of a parent is never needed: only a
  // child that has not run yet reads its parents, and those parents have all ended.)
  for (core::TaskId id : engine->MissingParents()) {
    auto row = store.GetTask(id);
    if (!row.ok()) return row.status();
    if (!row->has_value()) continue;  // pruned: FinishRecovery cancels the waiting child
    auto task = core::RowToTask(**row);
    if (!task.ok()) return task.status();
    engine->Restore(std::move(*task));
    report->tasks++;
    report->skipped--;
  }
  engine->FinishRecovery(std::max(*max_id, max_row_id));
  // Persist what recovery changed (leased tasks back in the queue) before serving.
  core::Outbox out = engine->TakeOutbox();
  store::WriteBatch batch;
  for (core::TaskId id : out.dirty) {
    batch.upserts.emplace_back();
    core::TaskToRow(*engine->Snapshot(id), batch.upserts.back());
  }
  for (core::WorkflowId id : out.dirty_workflows) {
    if (const v1::Workflow* w = engine->WorkflowSnapshot(id); w != nullptr) {
      batch.workflows.emplace_back();
      core::WorkflowToRow(*w, batch.workflows.back());
    }
  }
  batch.meta = std::move(out.meta);
  if (!batch.empty()) {
    if (absl::Status cst = store.Commit(batch); !cst.ok()) return cst;
  }
  report->events = std::move(out.events);
  report->seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return engine;
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() { Stop(); }

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServeOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  // The data directory holds the admin token even with the memory store.
  if (::mkdir(options.data_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(
        absl::StrCat("data_dir: cannot create ", options.data_dir, ": ", std::strerror(errno)));
  }
  if (options.store == "memory") {
    impl->store = store::NewMemoryStore();
  } else {
    const std::string lock_path = options.data_dir + "/drover.lock";
    impl->lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (impl->lock_fd < 0 || ::flock(impl->lock_fd, LOCK_EX | LOCK_NB) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("data_dir: ", options.data_dir, " is in use by another drover serve (",
                       lock_path, " is locked); give each server its own data directory"));
    }
    auto st = IsPostgres(options.store)
                  ? store::OpenPostgresStore(options.store)
                  : store::OpenSqliteStore(options.data_dir + "/drover.db", options.durability);
    if (!st.ok()) return st.status();
    impl->store = std::move(*st);
  }
  if (IsPostgres(options.store)) {
    auto lease = TakeOwnership(options, *impl->store);
    if (!lease.ok()) return lease.status();
    impl->lease = std::move(*lease);
  }
  auto engine = RecoverEngine(*impl->store, options.engine, impl->clock, &impl->recovery);
  if (!engine.ok()) return engine.status();
  impl->engine = std::move(*engine);

  if (absl::Status st = LoadTokens(*impl->store, impl->tokens); !st.ok()) return st;
  if (options.auth) {
    if (absl::Status st = Bootstrap(options, *impl->store, impl->tokens); !st.ok()) return st;
  } else {
    fmt::print(stderr,
               "drover serve: AUTH IS OFF (development only): anyone who reaches the loopback "
               "ports may do anything\n");
  }

  // The pools made through the API. Read now: once the runtime starts, its store thread
  // owns the store (a read from here would share the connection with its commits).
  absl::StatusOr<std::optional<std::string>> stored_pools = impl->store->GetMeta("pools");

  impl->runtime =
      std::make_unique<Runtime>(*impl->engine, *impl->store, options.command_queue_limit);
  impl->gate = std::make_unique<Gate>(impl->tokens, *impl->runtime, options.auth,
                                      options.certificate_principals);
  impl->service = std::make_unique<Service>(*impl->runtime, *impl->store, absl::Now());
  impl->service->SetGate(impl->gate.get());
  impl->service->SetHiddenPayloads(options.hide_payloads_from_viewers);
  impl->grpc = std::make_unique<GrpcServer>(*impl->service, *impl->gate);
  impl->runtime->SetPushSink(&impl->grpc->sink());
  impl->runtime->SetEventHub(&impl->events);
  if (!options.tracing_endpoint.empty()) {
    obs::OtlpOptions to;
    to.endpoint = options.tracing_endpoint;
    to.service_name = options.tracing_service_name;
    to.max_queue = options.tracing_max_queue;
    impl->tracer = std::make_unique<obs::OtlpExporter>(to);
    if (absl::Status st = impl->tracer->Start(); !st.ok()) return st;
    impl->runtime->SetTracer(impl->tracer.get(), options.tracing_sampling);
    impl->service->SetTracer(impl->tracer.get());
  }
  impl->service->SetEventHub(&impl->events);
  PruneOptions prune;
  prune.retention = options.store_retention;
  prune.load_history_retention = options.load_history_retention;
  prune.audit_retention = options.audit_retention;
  prune.event_retention = options.event_retention;
  // Sweep at least ten times per retention period (a short retention is pruned promptly),
  // at most once a minute.
  prune.sweep_interval = std::clamp(
      std::min({options.store_retention, options.load_history_retention, options.event_retention}) /
          10,
      absl::Milliseconds(100), absl::Minutes(1));
  impl->runtime->SetPruning(prune);
  impl->runtime->Start();
  {
    v1::Event started;
    started.set_type("server.started");
    const RecoveryReport& r = impl->recovery;
    started.set_message(absl::StrCat("epoch ", r.epoch, " on ", impl->store->Describe(), ": ",
                                     r.tasks, " tasks recovered (", r.requeued,
                                     " interrupted, back in the queue) in ",
                                     fmt::format("{:.2f}", r.seconds), " s"));
    (*started.mutable_attrs())["epoch"] = absl::StrCat(r.epoch);
    (*started.mutable_attrs())["pools"] = absl::StrCat(options.pools.size());
    impl->runtime->AppendEvent(std::move(started));
    for (v1::Event& e : impl->recovery.events) impl->runtime->AppendEvent(std::move(e));
    impl->recovery.events.clear();
  }
  if (absl::Status st = impl->grpc->Start(options.grpc_listen, options.tls); !st.ok()) {
    impl->runtime->Stop();
    return st;
  }
  if (impl->lease) {
    const std::string host = options.grpc_listen.substr(0, options.grpc_listen.rfind(':'));
    impl->lease->SetAddress(absl::StrCat(host, ":", impl->grpc->port()));
  }
  if (!options.http_listen.empty()) {
    impl->http = std::make_unique<HttpServer>(*impl->service, *impl->gate, options.http_threads,
                                              options.public_metrics);
    if (absl::Status st = impl->http->Start(options.http_listen, options.tls); !st.ok()) {
      impl->grpc->Stop();
      impl->runtime->Stop();
      return st;
    }
  }
  {
    // Agents of the pools connect back over loopback gRPC, as any agent does.
    char self[4096];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) return absl::InternalError("pools: cannot find the drover binary (/proc/self/exe)");
    const std::string log_dir =
        (options.store == "memory" ? std::string("/tmp/drover-pools-") + std::to_string(::getpid())
                                   : options.data_dir + "/pools");
    impl->pools = std::make_unique<pool::PoolManager>(
        options.pools, *impl->runtime, std::string(self, static_cast<size_t>(n)),
        absl::StrCat("127.0.0.1:", impl->grpc->port()), log_dir, options.fleet_hourly_budget);
    // Trained forecasting models survive restarts beside the store (not with --store memory).
    if (options.store != "memory") impl->pools->set_model_dir(options.data_dir + "/models");
    std::vector<std::string> agent_env;
    if (options.auth) {
      // Pool agents authenticate with a token of their own: the agent role only, kept in
      // memory (a restarted server starts its agents again with a new one).
      v1::Grant g;
      g.set_tenant(std::string(auth::kAnyTenant));
      g.set_role(v1::ROLE_AGENT);
      agent_env.push_back(absl::StrCat(
          "DROVER_TOKEN=",
          impl->tokens.CreateEphemeral("pool-agents", {g}, absl::ToUnixMillis(absl::Now()))
              .secret));
    }
    if (options.tls.enabled()) {
      // They verify this server against its CA and, when client certificates are
      // required, present the server's own (dev certificates allow client use).
      agent_env.push_back(absl::StrCat("DROVER_CA_FILE=", options.tls.ca_file.empty()
                                                              ? options.tls.cert_file
                                                              : options.tls.ca_file));
      if (!options.tls.server_name.empty()) {
        agent_env.push_back(absl::StrCat("DROVER_TLS_SERVER_NAME=", options.tls.server_name));
      }
      if (options.tls.client_certs == TlsOptions::ClientCerts::kRequire) {
        agent_env.push_back(absl::StrCat("DROVER_CERT_FILE=", options.tls.cert_file));
        agent_env.push_back(absl::StrCat("DROVER_KEY_FILE=", options.tls.key_file));
      }
    }
    impl->pools->set_agent_env(std::move(agent_env));
    // Pools created through the API (store meta "pools"); a config-file pool of the same
    // name wins.
    auto fail = [&](absl::Status st) {
      if (impl->http) impl->http->Stop();
      impl->grpc->Stop();
      impl->runtime->Stop();
      return st;
    };
    if (!stored_pools.ok()) return fail(stored_pools.status());
    if (stored_pools->has_value()) {
      v1::ServerConfig c;
      if (!google::protobuf::util::JsonStringToMessage(**stored_pools, &c).ok()) {
        return fail(absl::DataLossError("store: meta pools is unreadable"));
      }
      for (int i = 0; i < c.pools_size(); ++i) {
        absl::StatusOr<pool::PoolSpec> spec =
            pool::ToPoolSpec(c.pools(i), absl::StrCat("stored pools[", i, "]"));
        if (!spec.ok()) return fail(spec.status());
        if (impl->pools->FromConfig(spec->name)) {
          fmt::print(stderr,
                     "drover serve: pool {} is in the config file; the stored one is ignored\n",
                     spec->name);
          continue;
        }
        if (absl::Status st = impl->pools->Apply(*spec, c.pools(i)); !st.ok()) return fail(st);
      }
    }
    if (absl::Status st = impl->pools->Start(); !st.ok()) {
      if (impl->http) impl->http->Stop();
      impl->grpc->Stop();
      impl->runtime->Stop();
      return st;
    }
    impl->service->SetPools(impl->pools.get());
  }
  impl->service->SetCluster(ClusterStatusFn(*impl));
  impl->StartSampler();
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

void Server::Stop() {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  // Each step's time goes in one line at the end: a slow stop holds the lease (and so the
  // standby) for as long as it takes.
  const absl::Time start = absl::Now();
  absl::Time mark = start;
  std::string steps;
  auto step = [&](const char* name) {
    const absl::Time now = absl::Now();
    absl::StrAppend(&steps, steps.empty() ? "" : ", ", name, " ",
                    absl::StrFormat("%.2f", absl::ToDoubleSeconds(now - mark)));
    mark = now;
  };
  impl_->StopSampler();
  // Pool agents first, while the server still answers them: they hand back their tasks
  // and deregister.
  if (impl_->pools) impl_->pools->Stop();
  step("pools");
  // Pending WaitTask calls are answered first; the transports wait for every call.
  impl_->runtime->ReleaseWaiters();
  impl_->events.Shutdown();  // and the readers waiting for events
  if (impl_->http) impl_->http->Stop();
  step("http");
  impl_->grpc->Stop();
  step("grpc");
  impl_->runtime->Stop();
  step("engine");
  if (impl_->tracer) impl_->tracer->Stop();  // sends what waits (up to its timeout)
  step("traces");
  // Everything is committed: hand the work over at once instead of after the TTL.
  if (impl_->lease) {
    absl::Status st = impl_->lease->Release();
    step("lease");
    fmt::print(stderr, "drover serve: released the lease on the work{}\n",
               st.ok() ? "" : absl::StrCat(" (failed: ", st.message(), ")"));
  }
  fmt::print(stderr, "drover serve: stopped in {:.2f} s ({} s)\n",
             absl::ToDoubleSeconds(absl::Now() - start), steps);
}

int Server::grpc_port() const { return impl_->grpc->port(); }
int Server::http_port() const { return impl_->http ? impl_->http->port() : 0; }
const RecoveryReport& Server::recovery() const { return impl_->recovery; }
std::string Server::store_description() const { return impl_->store->Describe(); }

}  // namespace drover::api
