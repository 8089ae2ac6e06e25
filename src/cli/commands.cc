#include "cli/commands.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string_view>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "api/config.h"
#include "api/http_payloads.h"
#include "api/server.h"
#include "cli/auth_commands.h"
#include "cli/common.h"
#include "cli/events_command.h"
#include "cli/fleet_commands.h"
#include "cli/forecast_command.h"
#include "cli/history_command.h"
#include "cli/loadtest_command.h"
#include "cli/simulate_command.h"
#include "cli/workflow_commands.h"
#include "client/client.h"
#include "core/engine.h"
#include "fmt/core.h"
#include "google/protobuf/util/json_util.h"
#include "runner/agent_runner.h"
#include "util/json.h"

namespace drover::cli {

namespace v1 = ::drover::v1;

int Fail(const absl::Status& st) {
  fmt::print(stderr, "drover: {}\n", std::string(st.message()));
  if (st.code() == absl::StatusCode::kUnavailable) {
    fmt::print(stderr, "drover: is `drover serve` running? (--server or DROVER_SERVER)\n");
    if (absl::StrContains(st.message(), "Socket closed") ||
        absl::StrContains(st.message(), "handshake") || absl::StrContains(st.message(), "SSL")) {
      fmt::print(stderr,
                 "drover: a TLS server needs --ca-file (DROVER_CA_FILE), and one that requires "
                 "client certificates --cert-file and --key-file\n");
    }
  }
  if (st.code() == absl::StatusCode::kUnauthenticated) {
    fmt::print(stderr,
               "drover: give a token: DROVER_TOKEN, --token-file or DROVER_TOKEN_FILE (a local "
               "`drover serve` writes its first admin token to <data-dir>/admin.token)\n");
  }
  if (int64_t ms = client::RetryAfterMs(st); ms > 0) {
    fmt::print(stderr, "drover: the server suggests retrying after {} ms\n", ms);
  }
  return 1;
}

std::string Json(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  // JSON payloads and results as values, as the HTTP API shows them (docs/payloads.md).
  std::string shown = api::http::PayloadsOut(std::move(out), m.GetDescriptor(), 2);
  if (!shown.empty() && shown.back() != '\n') shown += '\n';
  return shown;
}

absl::StatusOr<absl::Duration> ParseDuration(const std::string& flag, const std::string& s) {
  absl::Duration d;
  double days = 0;
  // absl's durations stop at hours; "7d" (or "1.5d") is ours.
  if (s.size() > 1 && s.back() == 'd' && absl::SimpleAtod(s.substr(0, s.size() - 1), &days) &&
      days >= 0 && days <= 100 * 365) {
    return absl::Hours(24) * days;
  }
  if (!absl::ParseDuration(s, &d) || d < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": '", s, "' is not a duration like 500ms, 30s, 10m, 2h or 7d"));
  }
  return d;
}

std::string Age(int64_t unix_ms) {
  if (unix_ms == 0) return "-";
  const absl::Duration d = absl::Now() - absl::FromUnixMillis(unix_ms);
  if (d < absl::Seconds(60)) return absl::StrCat(absl::ToInt64Seconds(d), "s");
  if (d < absl::Hours(1)) return absl::StrCat(absl::ToInt64Minutes(d), "m");
  if (d < absl::Hours(48)) return absl::StrCat(absl::ToInt64Hours(d), "h");
  return absl::StrCat(absl::ToInt64Hours(d) / 24, "d");
}

std::string Printable(const std::string& bytes, size_t max) {
  std::string out;
  for (char c : bytes.substr(0, max)) {
    out += (c == '\n' || c == '\t' || (c >= 32 && c < 127)) ? c : '.';
  }
  if (bytes.size() > max) out += absl::StrCat("... (", bytes.size(), " bytes)");
  return out;
}

namespace {

absl::StatusOr<v1::Priority> ParsePriority(const std::string& s) {
  std::string v = absl::AsciiStrToUpper(s);
  int n = 0;
  if (absl::SimpleAtoi(v, &n) && n >= 1 && n <= 5) return static_cast<v1::Priority>(n);
  v1::Priority p;
  if (v1::Priority_Parse("PRIORITY_" + v, &p) && p != v1::PRIORITY_UNSPECIFIED) return p;
  return absl::InvalidArgumentError(absl::StrCat(
      "--priority: unknown value '", s, "' (use critical, high, normal, low or background)"));
}

absl::StatusOr<v1::TaskState> ParseState(const std::string& s) {
  v1::TaskState st;
  if (v1::TaskState_Parse("TASK_STATE_" + absl::AsciiStrToUpper(s), &st) &&
      st != v1::TASK_STATE_UNSPECIFIED) {
    return st;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--state: unknown value '", s,
      "' (use waiting, ready, leased, retry_wait, succeeded, dead, canceled or expired)"));
}

void PrintTask(const v1::Task& t) {
  fmt::print("task {}  {}\n", t.id(), absl::AsciiStrToUpper(core::StateName(t.state())));
  fmt::print("  type {}  tenant {}  priority {}\n", t.spec().type(), t.spec().tenant(),
             core::PriorityName(t.spec().priority()));
  fmt::print("  attempts {} (failures {} of {})  created {} ago\n", t.attempts(), t.failures(),
             t.effective_max_attempts(), Age(t.created_unix_ms()));
  if (t.spec().deadline_unix_ms() > 0) {
    fmt::print("  deadline {}\n",
               absl::FormatTime(absl::FromUnixMillis(t.spec().deadline_unix_ms())));
  }
  if (!t.spec().idempotency_key().empty()) {
    fmt::print("  idempotency key {}\n", t.spec().idempotency_key());
  }
  if (t.state() == v1::TASK_STATE_LEASED) {
    fmt::print("  leased to agent {} (lease {})\n", t.agent_id(), t.lease_token());
  }
  if (!t.waiting_for().empty()) fmt::print("  waiting for {}\n", t.waiting_for());
  for (const v1::ResourceNeed& n : t.spec().resources()) {
    fmt::print("  needs {} x {}\n", n.amount(), n.name());
  }
  if (t.cost() > 0 || t.spec().cost_budget() > 0) {
    fmt::print(
        "  cost {:.3f}{}\n", t.cost(),
        t.spec().cost_budget() > 0 ? fmt::format(" of budget {:g}", t.spec().cost_budget()) : "");
  }
  if (t.state() == v1::TASK_STATE_RETRY_WAIT) {
    fmt::print("  retry at {}\n", absl::FormatTime(absl::FromUnixMillis(t.not_before_unix_ms())));
  }
  if (!t.reason().empty()) fmt::print("  reason: {}\n", t.reason());
  if (!t.last_error().empty()) fmt::print("  last error: {}\n", t.last_error());
  if (!t.spec().payload().empty())
    fmt::print("  payload: {}\n", Printable(t.spec().payload(), 200));
  if (t.state() == v1::TASK_STATE_SUCCEEDED)
    fmt::print("  result: {}\n", Printable(t.result(), 2000));
  for (const v1::Attempt& a : t.history()) {
    fmt::print("  attempt {}: agent {}, {}{}{}\n", a.number(), a.agent_id(),
               a.outcome().empty() ? "running" : a.outcome(),
               a.ended_unix_ms()
                   ? absl::StrCat(" after ", a.ended_unix_ms() - a.started_unix_ms(), " ms")
                   : "",
               a.error().empty() ? "" : absl::StrCat(": ", Printable(a.error(), 200)));
  }
}

void PrintTable(const v1::ListTasksResponse& r) {
  fmt::print("{:>10}  {:<10}  {:<16}  {:<10}  {:<10}  {:>8}  {:>5}  {}\n", "ID", "STATE", "TYPE",
             "PRIORITY", "TENANT", "ATTEMPTS", "AGE", "NOTE");
  for (const v1::Task& t : r.tasks()) {
    std::string note = t.reason().empty() ? t.last_error() : t.reason();
    fmt::print("{:>10}  {:<10}  {:<16}  {:<10}  {:<10}  {:>8}  {:>5}  {}\n", t.id(),
               core::StateName(t.state()), t.spec().type(), core::PriorityName(t.spec().priority()),
               t.spec().tenant(), t.attempts(), Age(t.created_unix_ms()), Printable(note, 60));
  }
  if (!r.next_page_token().empty()) {
    fmt::print("more: --page-token {}\n", r.next_page_token());
  }
}

absl::Status SetPayloadFormat(const std::string& format, const std::string& payload, bool* json) {
  if (format == "auto") {
    *json = !payload.empty() && util::CheckJson(payload, "payload").ok();
  } else if (format == "json") {
    if (absl::Status st = util::CheckJson(payload, "--payload"); !st.ok()) return st;
    *json = true;
  } else if (format == "bytes") {
    *json = false;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--payload-format: '", format, "' is not json, bytes or auto"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadPayload(const std::string& inline_payload,
                                        const std::string& file) {
  if (!inline_payload.empty() && !file.empty()) {
    return absl::InvalidArgumentError("--payload and --payload-file: give one, not both");
  }
  if (inline_payload == "-" || file == "-") {
    std::stringstream ss;
    ss << std::cin.rdbuf();
    return ss.str();
  }
  if (!file.empty()) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("--payload-file: cannot read ", file));
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  return inline_payload;
}

absl::Status ParseLabels(const std::vector<std::string>& in,
                         google::protobuf::Map<std::string, std::string>* out) {
  for (const std::string& l : in) {
    std::pair<std::string, std::string> kv = absl::StrSplit(l, absl::MaxSplits('=', 1));
    if (kv.first.empty() || l.find('=') == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("--label: '", l, "' is not key=value"));
    }
    (*out)[kv.first] = kv.second;
  }
  return absl::OkStatus();
}

// --- serve ------------------------------------------------------------------------------

struct ServeFlags {
  std::string config, grpc_listen, http_listen, data_dir, store, durability, lease_ttl, port_file,
      ownership_ttl, auth, tls_cert, tls_key, tls_client_ca;
  int64_t capacity = 0;
};

int Serve(const ServeFlags& f) {
  v1::ServerConfig flags;
  flags.set_grpc_listen(f.grpc_listen);
  flags.set_http_listen(f.http_listen);
  flags.set_data_dir(f.data_dir);
  flags.set_store(f.store);
  flags.set_durability(f.durability);
  flags.set_capacity(f.capacity);
  if (!f.lease_ttl.empty()) {
    auto d = ParseDuration("--lease-ttl", f.lease_ttl);
    if (!d.ok()) return Fail(d.status());
    flags.set_lease_ttl_ms(absl::ToInt64Milliseconds(*d));
  }
  if (!f.ownership_ttl.empty()) {
    auto d = ParseDuration("--ownership-ttl", f.ownership_ttl);
    if (!d.ok()) return Fail(d.status());
    flags.set_ownership_ttl_ms(absl::ToInt64Milliseconds(*d));
  }
  if (!f.auth.empty()) flags.mutable_auth()->set_mode(f.auth);
  if (!f.tls_cert.empty()) flags.mutable_tls()->set_cert_file(f.tls_cert);
  if (!f.tls_key.empty()) flags.mutable_tls()->set_key_file(f.tls_key);
  if (!f.tls_client_ca.empty()) flags.mutable_tls()->set_client_ca_file(f.tls_client_ca);
  auto options = api::LoadServeOptions(f.config, flags);
  if (!options.ok()) return Fail(options.status());

  // Signals are blocked in every thread (gRPC's included) and taken by sigwait below;
  // otherwise a signal lands in a gRPC thread and shutdown never returns.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  auto server = api::Server::Start(*options);
  if (!server.ok()) return Fail(server.status());
  const api::RecoveryReport& rec = (*server)->recovery();
  const std::string store = options->store == "memory"        ? "memory (not durable)"
                            : api::IsPostgres(options->store) ? (*server)->store_description()
                                                              : options->data_dir + "/drover.db";
  fmt::print(stderr,
             "drover serve: store {}; recovered {} tasks ({} requeued, {} finished ones left in "
             "the store) in {:.0f} ms; epoch {}\n",
             store, rec.tasks, rec.requeued, rec.skipped, rec.seconds * 1000, rec.epoch);
  fmt::print(stderr, "drover serve: gRPC on port {}{}\n", (*server)->grpc_port(),
             (*server)->http_port()
                 ? absl::StrCat(", HTTP on port ", (*server)->http_port(), " (/metrics, /v1/...)")
                 : "");
  if (!f.port_file.empty()) {
    std::ofstream out(f.port_file + ".tmp");
    out << (*server)->grpc_port() << " " << (*server)->http_port() << "\n";
    out.close();
    std::rename((f.port_file + ".tmp").c_str(), f.port_file.c_str());
  }
  int sig = 0;
  sigwait(&set, &sig);
  fmt::print(stderr, "drover serve: {} received, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  (*server)->Stop();
  fmt::print(stderr, "drover serve: stopped\n");
  return 0;
}

// --- agent ------------------------------------------------------------------------------

std::atomic<bool> g_stop{false};

int Agent(runner::AgentOptions o) {
  if (o.command.empty()) {
    return Fail(absl::InvalidArgumentError("agent: give the command after --, e.g. -- ./work.sh"));
  }
  struct sigaction sa {};
  sa.sa_handler = [](int) { g_stop = true; };
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  const int rc = runner::RunAgent(o, g_stop);
  std::fflush(nullptr);
  std::_Exit(rc);  // detached task threads may still be unwinding
}

}  // namespace

int Main(int argc, char** argv) {
  CLI::App app{"drover: an orchestrator for fleets of agents"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  std::string server =
      std::getenv("DROVER_SERVER") ? std::getenv("DROVER_SERVER") : "127.0.0.1:7070";
  app.add_option("--server", server, "gRPC address of drover serve (env DROVER_SERVER)");
  std::string token_file, ca_file, cert_file, key_file;
  app.add_option("--token-file", token_file,
                 "file holding the API token (default: $DROVER_TOKEN, $DROVER_TOKEN_FILE, "
                 "./drover-data/admin.token)");
  app.add_option("--ca-file", ca_file,
                 "TLS: verify the server against these CAs (PEM; env DROVER_CA_FILE); "
                 "without it the connection is plaintext");
  app.add_option("--cert-file", cert_file, "mTLS: client certificate (PEM; env DROVER_CERT_FILE)");
  app.add_option("--key-file", key_file, "mTLS: its private key (PEM; env DROVER_KEY_FILE)");
  bool json = false;
  auto connect = [&] { return client::Client::Connect(server); };

  // serve
  ServeFlags sf;
  CLI::App* serve = app.add_subcommand("serve", "Run the server");
  serve->add_option("--config", sf.config, "JSON config file (see docs/configuration.md)");
  serve->add_option("--grpc-listen", sf.grpc_listen, "host:port for gRPC (default 127.0.0.1:7070)");
  serve->add_option("--http-listen", sf.http_listen,
                    "host:port for HTTP/JSON and /metrics (default 127.0.0.1:7071; off disables)");
  serve->add_option("--data-dir", sf.data_dir,
                    "where the SQLite store lives (default ./drover-data)");
  serve->add_option("--store", sf.store,
                    "sqlite (default), memory, or a PostgreSQL URL postgres://user@host:port/db");
  serve->add_option("--durability", sf.durability, "normal (default) or full");
  serve->add_option("--capacity", sf.capacity, "outstanding tasks admitted (default 1000000)");
  serve->add_option("--lease-ttl", sf.lease_ttl, "lease TTL, e.g. 30s");
  serve->add_option("--ownership-ttl", sf.ownership_ttl,
                    "PostgreSQL store: TTL of this server's lease on the work, e.g. 6s (a "
                    "standby takes over this long after the owner dies)");
  serve->add_option("--port-file", sf.port_file, "write 'GRPC_PORT HTTP_PORT' here once listening");
  serve->add_option("--auth", sf.auth,
                    "on (default): every call needs a token; off: development only, loopback "
                    "listen addresses only (docs/security.md)");
  serve->add_option("--tls-cert", sf.tls_cert, "TLS: the server's certificate chain (PEM)");
  serve->add_option("--tls-key", sf.tls_key, "TLS: its private key (PEM)");
  serve->add_option("--tls-client-ca", sf.tls_client_ca,
                    "mTLS: require client certificates signed by these CAs (PEM)");

  // submit
  struct {
    std::string type, payload, payload_file, priority = "normal", tenant, deadline, timeout,
                                             idempotency_key, backoff_base, backoff_cap,
                                             payload_format = "auto";
    int max_attempts = 0, count = 1;
    double complexity = 0, cost_budget = 0;
    std::vector<std::string> labels, resources;
    bool wait = false, quiet = false;
  } s;
  CLI::App* submit = app.add_subcommand("submit", "Submit a task");
  submit->add_option("--type,-t", s.type, "agent type that runs it")->required();
  submit->add_option("--payload,-p", s.payload, "payload text ('-' reads stdin)");
  submit->add_option("--payload-file,-f", s.payload_file, "payload from a file ('-' is stdin)");
  submit->add_option("--payload-format", s.payload_format,
                     "json, bytes, or auto (default: JSON when the payload parses as JSON)");
  submit->add_option("--priority", s.priority, "critical, high, normal, low or background");
  submit->add_option("--tenant", s.tenant, "tenant (default 'default')");
  submit->add_option("--deadline", s.deadline, "must start within this duration, e.g. 10m");
  submit->add_option("--timeout", s.timeout, "execution timeout per attempt, e.g. 5m");
  submit->add_option("--max-attempts", s.max_attempts, "counted failures before dead-lettering");
  submit->add_option("--idempotency-key", s.idempotency_key, "same key returns the same task");
  submit->add_option("--complexity", s.complexity, "estimated complexity (>= 0)");
  submit->add_option("--cost-budget", s.cost_budget, "cost budget (>= 0)");
  submit->add_option("--label", s.labels, "key=value (repeatable)");
  submit->add_option("--resource", s.resources,
                     "a named resource each attempt needs, name=amount (repeatable)");
  submit->add_option("--backoff-base", s.backoff_base, "first retry delay ceiling, e.g. 1s");
  submit->add_option("--backoff-cap", s.backoff_cap, "largest retry delay, e.g. 5m");
  submit->add_option("--count", s.count, "submit this many copies in one batch");
  submit->add_flag("--wait,-w", s.wait, "wait for the task to end and print its result");
  submit->add_flag("--quiet,-q", s.quiet, "print only the task id");
  submit->add_flag("--json", json, "print JSON");

  uint64_t id = 0;
  CLI::App* get = app.add_subcommand("get", "Show a task");
  get->add_option("id", id, "task id")->required();
  get->add_flag("--json", json, "print JSON");

  struct {
    std::string state, type, tenant, priority, page_token, label, error;
    int limit = 50;
    bool newest = false;
  } l;
  CLI::App* ls = app.add_subcommand("ls", "List tasks");
  ls->add_option("--state", l.state, "waiting, ready, leased, retry_wait, succeeded, dead, ...");
  ls->add_option("--type", l.type, "agent type");
  ls->add_option("--tenant", l.tenant, "tenant");
  ls->add_option("--priority", l.priority, "priority");
  ls->add_option("--label", l.label, "a label: key=value, or key for any value");
  ls->add_option("--error", l.error, "text the last error contains");
  ls->add_flag("--newest", l.newest, "newest first");
  ls->add_option("--limit", l.limit, "page size (at most 1000)");
  ls->add_option("--page-token", l.page_token, "continue a listing");
  ls->add_flag("--json", json, "print JSON");

  std::string reason;
  CLI::App* cancel = app.add_subcommand("cancel", "Cancel a task");
  cancel->add_option("id", id, "task id")->required();
  cancel->add_option("--reason", reason, "why (kept on the task)");

  std::string wait_timeout = "60s";
  CLI::App* wait = app.add_subcommand("wait", "Wait until a task ends; exit 0 if it succeeded");
  wait->add_option("id", id, "task id")->required();
  wait->add_option("--timeout", wait_timeout, "give up after this long (default 60s, at most 1h)");
  wait->add_flag("--json", json, "print JSON");

  bool one_line = false;
  CLI::App* stats = app.add_subcommand("stats", "Server statistics");
  stats->add_flag("--json", json, "print JSON");
  stats->add_flag("--line", one_line, "one line of task counts (for watching a run)");

  std::vector<uint64_t> ids;
  bool all = false;
  std::string dlq_type;
  CLI::App* dlq = app.add_subcommand("dlq", "The dead-letter queue");
  dlq->require_subcommand(1);
  CLI::App* dlq_ls = dlq->add_subcommand("ls", "List dead letters");
  dlq_ls->add_option("--type", dlq_type, "agent type");
  dlq_ls->add_option("--limit", l.limit, "page size");
  dlq_ls->add_option("--page-token", l.page_token, "continue a listing");
  dlq_ls->add_flag("--json", json, "print JSON");
  CLI::App* dlq_re = dlq->add_subcommand("reprocess", "Queue dead letters again");
  dlq_re->add_option("ids", ids, "task ids");
  dlq_re->add_flag("--all", all, "every dead letter (of --type)");
  dlq_re->add_option("--type", dlq_type, "agent type (with --all)");
  CLI::App* dlq_purge = dlq->add_subcommand("purge", "Delete dead letters for good");
  dlq_purge->add_option("ids", ids, "task ids");
  dlq_purge->add_flag("--all", all, "every dead letter (of --type)");
  dlq_purge->add_option("--type", dlq_type, "agent type (with --all)");

  WorkflowCommands workflows;
  workflows.Add(app);
  FleetCommands fleet;
  fleet.Add(app);
  HistoryCommand history;
  history.Add(app);
  EventsCommand events;
  events.Add(app);
  ForecastCommand forecast;
  forecast.Add(app);
  SimulateCommand simulate;
  simulate.Add(app);
  LoadtestCommand loadtest;
  loadtest.Add(app);
  AuthCommands auth_cmds;
  auth_cmds.Add(app);

  struct {
    uint64_t agent = 0;
    std::string type, topic, body;
    bool all = false;
  } msg;
  CLI::App* message =
      app.add_subcommand("message", "Send a message to connected agents (best-effort, not stored)");
  message->add_option("--agent", msg.agent, "one agent, by id");
  message->add_option("--type", msg.type, "every connected agent of this type");
  message->add_flag("--all", msg.all, "every connected agent");
  message->add_option("--topic", msg.topic, "a short topic (at most 64 bytes)");
  message->add_option("body", msg.body, "the message ('-' reads stdin)")->required();

  runner::AgentOptions ao;
  std::vector<std::string> agent_labels;
  CLI::App* agent = app.add_subcommand(
      "agent", "Run a command as an agent: drover agent --type T --concurrency N -- CMD ARGS...");
  agent->add_option("--type,-t", ao.types, "agent type (repeatable)")->required();
  agent->add_option("--concurrency,-c", ao.concurrency, "tasks at once (default 1)");
  agent->add_option("--name", ao.name, "name shown in listings");
  agent->add_option("--cost-factor", ao.cost_factor, "relative cost of this agent (default 1)");
  agent->add_option("--max-uses", ao.max_uses, "take at most this many tasks in all (0: no limit)");
  agent->add_option("--label", agent_labels, "key=value (repeatable)");
  agent->add_option("--work-dir", ao.work_dir, "directory for checkpoint files");
  agent->add_flag("--verbose,-v", ao.verbose, "copy the command's stderr to ours");
  agent->add_option("command", ao.command, "the command and its arguments, after --");

  // `drover agent ... -- CMD ARGS`: everything after the first `--` is the command, cut off
  // before CLI11 sees it. (CLI11 2.1 takes a `--` right after a repeatable option, as in
  // `--type a -- sh -c x`, as the end of that option only, and would then read the
  // command's own `-c` as --concurrency.)
  std::vector<std::string> after_dashes;
  int parse_argc = argc;
  bool agent_seen = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "agent") agent_seen = true;
    if (a == "--" && agent_seen) {
      parse_argc = i;
      after_dashes.assign(argv + i + 1, argv + argc);
      break;
    }
  }
  try {
    app.parse(parse_argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (serve->parsed()) return Serve(sf);
  if (simulate.parsed()) return simulate.Run();
  if (auth_cmds.offline()) return auth_cmds.RunOffline();
  if (!token_file.empty()) {
    // Wins over $DROVER_TOKEN; `drover agent` and every client below read it from here.
    ::unsetenv("DROVER_TOKEN");
    ::setenv("DROVER_TOKEN_FILE", token_file.c_str(), 1);
  }
  if (!ca_file.empty()) ::setenv("DROVER_CA_FILE", ca_file.c_str(), 1);
  if (!cert_file.empty()) ::setenv("DROVER_CERT_FILE", cert_file.c_str(), 1);
  if (!key_file.empty()) ::setenv("DROVER_KEY_FILE", key_file.c_str(), 1);
  if (forecast.offline()) return forecast.RunOffline();

  if (agent->parsed()) {
    if (!after_dashes.empty()) {
      if (!ao.command.empty()) {
        return Fail(absl::InvalidArgumentError(
            "command: give the agent command either after -- or without it, not both"));
      }
      ao.command = std::move(after_dashes);
    }
    if (ao.command.empty()) {
      return Fail(absl::InvalidArgumentError(
          "command: the agent command is missing (drover agent --type T -- CMD ARGS...)"));
    }
    ao.server = server;
    google::protobuf::Map<std::string, std::string> labels;
    if (auto st = ParseLabels(agent_labels, &labels); !st.ok()) return Fail(st);
    ao.labels.insert(labels.begin(), labels.end());
    return Agent(ao);
  }

  if (loadtest.parsed()) {
    const bool given = app.get_option("--server")->count() > 0 || std::getenv("DROVER_SERVER");
    return loadtest.Run(given ? server : "");
  }

  auto c = connect();
  if (auth_cmds.parsed()) return auth_cmds.Run(*c);
  if (workflows.parsed()) return workflows.Run(*c);
  if (fleet.parsed()) return fleet.Run(*c);
  if (history.parsed()) return history.Run(*c);
  if (events.parsed()) return events.Run(*c);
  if (forecast.parsed()) return forecast.Run(*c);
  if (message->parsed()) {
    v1::SendMessageRequest req;
    req.set_agent_id(msg.agent);
    req.set_agent_type(msg.type);
    req.set_all(msg.all);
    req.set_topic(msg.topic);
    auto body = ReadPayload(msg.body, "");
    if (!body.ok()) return Fail(body.status());
    req.set_body(*body);
    bool body_json = false;
    (void)SetPayloadFormat("auto", *body, &body_json);
    req.set_body_json(body_json);
    auto r = c->SendMessage(req);
    if (!r.ok()) return Fail(r.status());
    fmt::print("message {} pushed to {} connected agent(s){}\n", r->message_id(),
               r->delivered_to_size(),
               r->delivered_to_size() == 0 ? " (none connected: it is not kept)" : "");
    return 0;
  }
  if (submit->parsed()) {
    v1::TaskSpec spec;
    spec.set_type(s.type);
    auto payload = ReadPayload(s.payload, s.payload_file);
    if (!payload.ok()) return Fail(payload.status());
    spec.set_payload(*payload);
    bool payload_json = false;
    if (auto st = SetPayloadFormat(s.payload_format, *payload, &payload_json); !st.ok()) {
      return Fail(st);
    }
    spec.set_payload_json(payload_json);
    auto prio = ParsePriority(s.priority);
    if (!prio.ok()) return Fail(prio.status());
    spec.set_priority(*prio);
    spec.set_tenant(s.tenant);
    if (!s.deadline.empty()) {
      auto d = ParseDuration("--deadline", s.deadline);
      if (!d.ok()) return Fail(d.status());
      spec.set_deadline_unix_ms(absl::ToUnixMillis(absl::Now() + *d));
    }
    for (auto [flag, value, setter] :
         {std::tuple{"--timeout", &s.timeout, &v1::TaskSpec::set_execution_timeout_ms},
          std::tuple{"--backoff-base", &s.backoff_base, &v1::TaskSpec::set_backoff_base_ms},
          std::tuple{"--backoff-cap", &s.backoff_cap, &v1::TaskSpec::set_backoff_cap_ms}}) {
      if (value->empty()) continue;
      auto d = ParseDuration(flag, *value);
      if (!d.ok()) return Fail(d.status());
      (spec.*setter)(absl::ToInt64Milliseconds(*d));
    }
    spec.set_max_attempts(s.max_attempts);
    spec.set_idempotency_key(s.idempotency_key);
    spec.set_estimated_complexity(s.complexity);
    spec.set_cost_budget(s.cost_budget);
    if (auto st = ParseLabels(s.labels, spec.mutable_labels()); !st.ok()) return Fail(st);
    for (const std::string& r : s.resources) {
      std::pair<std::string, std::string> kv = absl::StrSplit(r, absl::MaxSplits('=', 1));
      int64_t amount = 0;
      if (kv.first.empty() || !absl::SimpleAtoi(kv.second, &amount)) {
        return Fail(absl::InvalidArgumentError(
            absl::StrCat("--resource: '", r, "' is not name=amount, e.g. gpu=1")));
      }
      v1::ResourceNeed* n = spec.add_resources();
      n->set_name(kv.first);
      n->set_amount(amount);
    }
    if (s.count < 1) return Fail(absl::InvalidArgumentError("--count: must be >= 1"));
    // Without a key of the user's, each task gets one of its own, so a submission the
    // client sends again after a lost reply (a server failing over) is not doubled.
    const std::string auto_key =
        s.idempotency_key.empty()
            ? absl::StrCat("cli-",
                           absl::Hex(absl::Uniform<uint64_t>(absl::BitGen()), absl::kZeroPad16))
            : "";
    std::vector<v1::SubmitTaskResponse> results;
    if (s.count == 1) {
      if (!auto_key.empty()) spec.set_idempotency_key(auto_key);
      auto r = c->Submit(spec);
      if (!r.ok()) return Fail(r.status());
      results.push_back(*r);
    } else {
      std::vector<v1::TaskSpec> specs(static_cast<size_t>(s.count), spec);
      for (size_t i = 0; i < specs.size() && !auto_key.empty(); ++i) {
        specs[i].set_idempotency_key(absl::StrCat(auto_key, "-", i));
      }
      auto r = c->SubmitBatch(specs);
      if (!r.ok()) return Fail(r.status());
      results.assign(r->results().begin(), r->results().end());
    }
    for (const auto& r : results) {
      if (json && !s.wait) {
        fmt::print("{}", Json(r));
      } else if (s.quiet) {
        fmt::print("{}\n", r.task().id());
      } else if (!s.wait) {
        fmt::print("{} task {} ({}, type {}, tenant {})\n",
                   r.deduplicated() ? "existing" : "submitted", r.task().id(),
                   core::PriorityName(r.task().spec().priority()), r.task().spec().type(),
                   r.task().spec().tenant());
      }
    }
    if (!s.wait) return 0;
    int rc = 0;
    for (const auto& r : results) {
      auto w = c->Wait(r.task().id(), absl::Hours(1));
      if (!w.ok()) return Fail(w.status());
      if (json) {
        fmt::print("{}", Json(w->task()));
      } else if (w->task().state() == v1::TASK_STATE_SUCCEEDED) {
        fmt::print("{}", w->task().result());
      } else {
        PrintTask(w->task());
      }
      if (w->task().state() != v1::TASK_STATE_SUCCEEDED) rc = 1;
    }
    return rc;
  }
  if (get->parsed()) {
    auto t = c->Get(id);
    if (!t.ok()) return Fail(t.status());
    if (json) {
      fmt::print("{}", Json(*t));
    } else {
      PrintTask(*t);
    }
    return 0;
  }
  if (ls->parsed()) {
    v1::ListTasksRequest req;
    if (!l.state.empty()) {
      auto st = ParseState(l.state);
      if (!st.ok()) return Fail(st.status());
      req.set_state(*st);
    }
    if (!l.priority.empty()) {
      auto p = ParsePriority(l.priority);
      if (!p.ok()) return Fail(p.status());
      req.set_priority(*p);
    }
    req.set_type(l.type);
    req.set_tenant(l.tenant);
    req.set_label(l.label);
    req.set_error_contains(l.error);
    req.set_newest_first(l.newest);
    req.set_page_size(l.limit);
    req.set_page_token(l.page_token);
    auto r = c->List(req);
    if (!r.ok()) return Fail(r.status());
    if (json) {
      fmt::print("{}", Json(*r));
    } else {
      PrintTable(*r);
    }
    return 0;
  }
  if (cancel->parsed()) {
    auto t = c->Cancel(id, reason);
    if (!t.ok()) return Fail(t.status());
    fmt::print("task {} canceled\n", t->id());
    return 0;
  }
  if (wait->parsed()) {
    auto d = ParseDuration("--timeout", wait_timeout);
    if (!d.ok()) return Fail(d.status());
    auto w = c->Wait(id, *d);
    if (!w.ok()) return Fail(w.status());
    if (json) {
      fmt::print("{}", Json(*w));
    } else {
      PrintTask(w->task());
    }
    if (w->timed_out()) return 2;
    return w->task().state() == v1::TASK_STATE_SUCCEEDED ? 0 : 1;
  }
  if (stats->parsed()) {
    auto r = c->Stats();
    if (!r.ok()) return Fail(r.status());
    if (json) {
      fmt::print("{}", Json(*r));
      return 0;
    }
    auto count = [&](const char* state) {
      auto it = r->tasks_by_state().find(state);
      return it == r->tasks_by_state().end() ? int64_t{0} : it->second;
    };
    if (one_line) {
      fmt::print(
          "ready {:>5}  running {:>3}  retry-wait {:>4}  succeeded {:>6}  dead {:>4}  retries "
          "{:>5}  "
          "outstanding {}\n",
          count("ready"), count("leased"), count("retry_wait"), count("succeeded"), count("dead"),
          r->retries_total(), r->outstanding());
      return 0;
    }
    fmt::print("store {}  up {}s  outstanding {} of {}\n", r->store(), r->uptime_ms() / 1000,
               r->outstanding(), r->capacity());
    std::vector<std::string> parts;
    for (const char* st :
         {"waiting", "ready", "leased", "retry_wait", "succeeded", "dead", "canceled", "expired"}) {
      parts.push_back(absl::StrCat(st, " ", count(st)));
      if (std::string_view(st) == "ready" && r->ready_held() > 0) {
        parts.back() += absl::StrCat(" (", r->ready_held(),
                                     " held back for a resource or a budget: see waiting_for)");
      }
    }
    fmt::print("tasks: {}\n", absl::StrJoin(parts, ", "));
    fmt::print(
        "agents {} ({} of {} slots busy)  submitted {}  rejected {}  retries {}  dead-lettered {}  "
        "leases expired {}\n",
        r->agents(), r->agent_slots_busy(), r->agent_slots(), r->submitted_total(),
        r->rejected_total(), r->retries_total(), r->dead_lettered_total(),
        r->leases_expired_total());
    for (const auto& q : r->queues()) {
      fmt::print("  queue {:<16} {:<10} {}\n", q.type(), core::PriorityName(q.priority()),
                 q.depth());
    }
    return 0;
  }
  if (dlq_ls->parsed()) {
    v1::ListDeadLettersRequest req;
    req.set_type(dlq_type);
    req.set_page_size(l.limit);
    req.set_page_token(l.page_token);
    auto r = c->ListDeadLetters(req);
    if (!r.ok()) return Fail(r.status());
    if (json) {
      fmt::print("{}", Json(*r));
    } else {
      PrintTable(*r);
    }
    return 0;
  }
  if (dlq_re->parsed()) {
    v1::ReprocessDeadLettersRequest req;
    for (auto i : ids) req.add_ids(i);
    req.set_all(all);
    req.set_type(dlq_type);
    auto r = c->Reprocess(req);
    if (!r.ok()) return Fail(r.status());
    fmt::print("reprocessing {} task(s)\n", r->reprocessed_size());
    return 0;
  }
  if (dlq_purge->parsed()) {
    v1::PurgeDeadLettersRequest req;
    for (auto i : ids) req.add_ids(i);
    req.set_all(all);
    req.set_type(dlq_type);
    auto r = c->Purge(req);
    if (!r.ok()) return Fail(r.status());
    fmt::print("purged {} task(s)\n", r->purged());
    return 0;
  }
  return 2;
}

}  // namespace drover::cli
