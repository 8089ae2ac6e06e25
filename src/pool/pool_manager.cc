#include "pool/pool_manager.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <future>

#include "absl/strings/str_cat.h"
#include "core/engine.h"
#include "core/names.h"
#include "fmt/core.h"
#include "google/protobuf/util/json_util.h"

namespace drover::pool {
namespace {

constexpr absl::Duration kTick = absl::Milliseconds(250);
constexpr absl::Duration kMaxBackoff = absl::Seconds(60);
constexpr absl::Duration kKillAfter = absl::Seconds(10);
constexpr size_t kMaxDecisions = 1000;
constexpr char kPoolLabel[] = "drover.pool";
constexpr char kMemberLabel[] = "drover.member";

using core::internal::ValidName;

}  // namespace

absl::StatusOr<PoolSpec> ToPoolSpec(const v1::PoolConfig& c, const std::string& f) {
  auto bad = [&](const std::string& field, const std::string& msg) {
    return absl::InvalidArgumentError(absl::StrCat(f, ".", field, ": ", msg));
  };
  PoolSpec s;
  if (!ValidName(c.name())) return bad("name", "1 to 64 characters of [A-Za-z0-9_.-]");
  s.name = c.name();
  if (c.types_size() == 0) return bad("types", "at least one agent type");
  for (int i = 0; i < c.types_size(); ++i) {
    if (!ValidName(c.types(i))) {
      return bad(absl::StrCat("types[", i, "]"), "1 to 64 characters of [A-Za-z0-9_.-]");
    }
    s.types.push_back(c.types(i));
  }
  if (c.runtime() == "container") {
    s.runtime = PoolSpec::Runtime::kContainer;
    if (c.image().empty() == c.rootfs().empty()) {
      return bad("image", "a container pool needs exactly one of image and rootfs");
    }
    s.image = c.image();
    s.rootfs = c.rootfs();
    if (c.container_engine_size() > 0) {
      s.container_engine.assign(c.container_engine().begin(), c.container_engine().end());
    }
    s.container_run_args.assign(c.container_run_args().begin(), c.container_run_args().end());
    if (c.memory_bytes() < 0) return bad("memory_bytes", "must be >= 0");
    if (!(c.cpus() >= 0)) return bad("cpus", "must be >= 0");
    if (c.pids_limit() < 0) return bad("pids_limit", "must be >= 0");
    s.memory_bytes = c.memory_bytes();
    s.cpus = c.cpus();
    s.pids_limit = c.pids_limit();
  } else if (c.runtime() == "external") {
    s.runtime = PoolSpec::Runtime::kExternal;
  } else if (!c.runtime().empty() && c.runtime() != "process") {
    return bad("runtime",
               absl::StrCat("'", c.runtime(), "' is not process, container or external"));
  } else if (!c.image().empty() || !c.rootfs().empty()) {
    return bad("image", "image and rootfs need runtime \"container\"");
  }
  if (s.runtime != PoolSpec::Runtime::kExternal &&
      (c.command_size() == 0 || c.command(0).empty())) {
    return bad("command", "the agent command");
  }
  s.command.assign(c.command().begin(), c.command().end());
  if (c.concurrency() < 0 || c.concurrency() > 1024) return bad("concurrency", "must be 1 to 1024");
  if (c.concurrency() > 0) s.concurrency = c.concurrency();
  s.scaler.min = c.min();
  s.scaler.max = c.max() == 0 ? std::max(10, c.min()) : c.max();
  if (c.min() < 0 || c.min() > 10'000) return bad("min", "must be 0 to 10000");
  if (s.scaler.max < s.scaler.min || s.scaler.max > 10'000) {
    return bad("max", absl::StrCat("must be >= min (", s.scaler.min, ") and <= 10000"));
  }
  constexpr int64_t kDay = 24LL * 3600 * 1000;
  for (const auto& [name, v] :
       {std::pair<const char*, int64_t>{"idle_timeout_ms", c.idle_timeout_ms()},
        {"start_timeout_ms", c.start_timeout_ms()},
        {"restart_backoff_ms", c.restart_backoff_ms()},
        {"sync_period_ms", c.sync_period_ms()},
        {"scale_down_stabilization_ms", c.scale_down_stabilization_ms()}}) {
    if (v < 0 || v > kDay) return bad(name, "must be 0 to 86400000 (1 day)");
  }
  if (c.idle_timeout_ms() > 0) s.idle_timeout = absl::Milliseconds(c.idle_timeout_ms());
  if (c.start_timeout_ms() > 0) s.start_timeout = absl::Milliseconds(c.start_timeout_ms());
  if (c.restart_backoff_ms() > 0) s.restart_backoff = absl::Milliseconds(c.restart_backoff_ms());
  if (c.max_uses() < 0) return bad("max_uses", "must be >= 0");
  s.max_uses = c.max_uses();
  if (!(c.price_per_agent_hour() >= 0)) return bad("price_per_agent_hour", "must be >= 0");
  s.price_per_agent_hour = c.price_per_agent_hour();
  if (!(c.hourly_budget() >= 0)) return bad("hourly_budget", "must be >= 0");
  if (c.hourly_budget() > 0 && c.price_per_agent_hour() == 0 && c.classes_size() == 0) {
    return bad("hourly_budget", "needs price_per_agent_hour (or capacity classes)");
  }
  s.hourly_budget = c.hourly_budget();
  for (int i = 0; i < c.classes_size(); ++i) {
    const v1::CapacityClass& k = c.classes(i);
    const std::string field = absl::StrCat("classes[", i, "]");
    if (!ValidName(k.name())) return bad(field + ".name", "1 to 64 characters of [A-Za-z0-9_.-]");
    if (!(k.price_per_agent_hour() >= 0))
      return bad(field + ".price_per_agent_hour", "must be >= 0");
    if (!(k.interruptions_per_hour() >= 0) || k.interruptions_per_hour() > 3600) {
      return bad(field + ".interruptions_per_hour", "must be 0 to 3600");
    }
    if (k.max_agents() < 0) return bad(field + ".max_agents", "must be >= 0");
    for (const PoolSpec::CapacityClass& other : s.classes) {
      if (other.name == k.name())
        return bad(field + ".name", absl::StrCat("\"", k.name(), "\" twice"));
    }
    s.classes.push_back(
        {k.name(), k.price_per_agent_hour(), k.interruptions_per_hour(), k.max_agents()});
  }
  std::stable_sort(s.classes.begin(), s.classes.end(),
                   [](const auto& a, const auto& b) { return a.price < b.price; });

  if (c.metric().empty() || c.metric() == "pending_per_agent") {
    s.scaler.metric = core::AutoscalerSpec::Metric::kPendingPerAgent;
    s.scaler.target = c.target() > 0 ? c.target() : 1.0;
  } else if (c.metric() == "utilization") {
    s.scaler.metric = core::AutoscalerSpec::Metric::kUtilization;
    s.scaler.target = c.target() > 0 ? c.target() : 0.7;
  } else {
    return bad("metric",
               absl::StrCat("'", c.metric(), "' is not pending_per_agent or utilization"));
  }
  if (c.sync_period_ms() > 0) s.scaler.sync_period = absl::Milliseconds(c.sync_period_ms());
  if (c.scale_down_stabilization_ms() > 0) {
    s.scaler.down.stabilization = absl::Milliseconds(c.scale_down_stabilization_ms());
  }
  if (c.tolerance() != 0) s.scaler.tolerance = c.tolerance();
  if (c.scale_up_stabilization_ms() < 0 || c.scale_up_stabilization_ms() > 3'600'000 ||
      c.scaling_period_ms() < 0 || c.scaling_period_ms() > 1'800'000) {
    return bad("scale_up_stabilization_ms", "and scaling_period_ms: must be 0 to 1 h / 30 min");
  }
  s.scaler.up.stabilization = absl::Milliseconds(c.scale_up_stabilization_ms());
  if (c.scale_up_pods() < 0 || c.scale_up_percent() < 0 || c.scale_down_percent() < 0 ||
      c.scale_down_percent() > 100) {
    return bad("scale_up_pods",
               "scale_up_percent and scale_down_percent must be >= 0 (the last <= 100)");
  }
  const absl::Duration period =
      c.scaling_period_ms() > 0 ? absl::Milliseconds(c.scaling_period_ms()) : absl::Seconds(15);
  s.scaler.up.policies = {
      {core::ScalingPolicy::Type::kPercent, c.scale_up_percent() > 0 ? c.scale_up_percent() : 100,
       period},
      {core::ScalingPolicy::Type::kPods, c.scale_up_pods() > 0 ? c.scale_up_pods() : 4, period}};
  s.scaler.down.policies = {{core::ScalingPolicy::Type::kPercent,
                             c.scale_down_percent() > 0 ? c.scale_down_percent() : 100, period}};
  if (c.rlimit_nofile() < 0 || c.rlimit_as_bytes() < 0) return bad("rlimit", "must be >= 0");
  s.rlimit_nofile = c.rlimit_nofile();
  s.rlimit_as_bytes = c.rlimit_as_bytes();
  if (absl::Status st = core::ValidateAutoscalerSpec(s.scaler); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(f, ".", st.message()));
  }
  return s;
}

PoolManager::PoolManager(std::vector<PoolSpec> pools, api::Runtime& runtime, std::string self,
                         std::string server, std::string log_dir, double fleet_hourly_budget)
    : runtime_(runtime),
      self_(std::move(self)),
      server_(std::move(server)),
      log_dir_(std::move(log_dir)),
      fleet_budget_(fleet_hourly_budget) {
  for (PoolSpec& s : pools) {
    Pool p;
    p.scaler = std::make_unique<core::Autoscaler>(s.scaler);
    p.desired = s.scaler.min;  // warm-up
    p.backoff = s.restart_backoff;
    p.spec = std::move(s);
    p.from_config = true;
    pools_.push_back(std::move(p));
  }
}

bool PoolManager::FromConfig(const std::string& name) const {
  std::lock_guard<std::mutex> lk(mu_);
  for (const Pool& p : pools_) {
    if (p.spec.name == name) return p.from_config;
  }
  return false;
}

bool PoolManager::Exists(const std::string& name) const {
  std::lock_guard<std::mutex> lk(mu_);
  for (const Pool& p : pools_) {
    if (p.spec.name == name && !p.removing) return true;
  }
  return false;
}

std::string PoolManager::ApiPoolsJson() const {
  std::lock_guard<std::mutex> lk(mu_);
  v1::ServerConfig c;
  for (const Pool& p : pools_) {
    if (!p.from_config && !p.removing) *c.add_pools() = p.config;
  }
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(c, &json);
  return json;
}

absl::Status PoolManager::Apply(const PoolSpec& spec, const v1::PoolConfig& config) {
  std::lock_guard<std::mutex> lk(mu_);
  for (Pool& p : pools_) {
    if (p.spec.name != spec.name) continue;
    if (p.from_config) {
      return absl::FailedPreconditionError(absl::StrCat(
          "pool.name: pool \"", spec.name, "\" comes from the config file; change it there"));
    }
    if (p.removing) {
      return absl::FailedPreconditionError(
          absl::StrCat("pool.name: pool \"", spec.name, "\" is being removed; try again soon"));
    }
    if (p.spec.runtime != spec.runtime) {
      return absl::FailedPreconditionError(
          absl::StrCat("pool.runtime: pool \"", spec.name,
                       "\" cannot change its runtime; remove it and create it again"));
    }
    p.spec = spec;
    p.config = config;
    p.scaler = std::make_unique<core::Autoscaler>(spec.scaler);
    p.desired = std::clamp(p.desired, spec.scaler.min, spec.scaler.max);
    p.next_sync = absl::Time();
    return absl::OkStatus();
  }
  std::error_code ec;
  std::filesystem::create_directories(absl::StrCat(log_dir_, "/", spec.name), ec);
  if (ec)
    return absl::InternalError(
        absl::StrCat("pools: cannot create the log directory: ", ec.message()));
  Pool p;
  p.scaler = std::make_unique<core::Autoscaler>(spec.scaler);
  p.desired = spec.scaler.min;
  p.backoff = spec.restart_backoff;
  p.spec = spec;
  p.config = config;
  if (p.spec.runtime == PoolSpec::Runtime::kContainer) RemoveStaleContainers(p);
  pools_.push_back(std::move(p));
  return absl::OkStatus();
}

absl::Status PoolManager::Remove(const std::string& name, bool force) {
  std::lock_guard<std::mutex> lk(mu_);
  for (Pool& p : pools_) {
    if (p.spec.name != name) continue;
    if (p.from_config) {
      return absl::FailedPreconditionError(
          absl::StrCat("name: pool \"", name, "\" comes from the config file; remove it there"));
    }
    p.removing = true;
    p.desired = 0;
    if (force) {
      for (Member& m : p.members) {
        m.state = Member::State::kStopping;
        m.stop_sent = absl::Now();
        Signal(m, SIGTERM);
      }
    }
    return absl::OkStatus();
  }
  return absl::NotFoundError(absl::StrCat("name: no pool named \"", name.substr(0, 80), "\""));
}

PoolManager::~PoolManager() { Stop(); }

absl::Status PoolManager::Start() {
  for (const Pool& p : pools_) {
    if (p.spec.runtime == PoolSpec::Runtime::kContainer) RemoveStaleContainers(p);
    std::error_code ec;
    std::filesystem::create_directories(absl::StrCat(log_dir_, "/", p.spec.name), ec);
    if (ec) {
      return absl::InternalError(
          absl::StrCat("pools: cannot create ", log_dir_, "/", p.spec.name, ": ", ec.message()));
    }
  }
  last_tick_ = absl::Now();
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void PoolManager::Stop() {
  if (!thread_.joinable()) return;
  stop_ = true;
  wake_.notify_all();
  thread_.join();
  // SIGTERM every agent; `drover agent` returns its tasks and deregisters.
  std::lock_guard<std::mutex> lk(mu_);
  const absl::Time start = absl::Now();
  for (Pool& p : pools_) {
    for (Member& m : p.members) Signal(m, SIGTERM);
  }
  for (Pool& p : pools_) {
    for (Member& m : p.members) {
      while (m.pid > 0) {
        int status = 0;
        const pid_t r = waitpid(m.pid, &status, WNOHANG);
        if (r == m.pid || (r < 0 && errno == ECHILD)) {
          m.pid = -1;
          break;
        }
        if (absl::Now() - start > kKillAfter) {
          Signal(m, SIGKILL);
          waitpid(m.pid, &status, 0);
          m.pid = -1;
          break;
        }
        absl::SleepFor(absl::Milliseconds(20));
      }
      if (p.spec.runtime == PoolSpec::Runtime::kContainer) RemoveContainer(p, m, /*wait=*/true);
    }
    p.members.clear();
  }
  for (pid_t c : cleanups_) waitpid(c, nullptr, 0);
  cleanups_.clear();
}

namespace {

// One argument for `sh -c`: single-quoted, with ' written as '\''.
std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// Runs argv (no shell) and returns its pid; stdout/stderr to /dev/null.
pid_t Run(const std::vector<std::string>& args) {
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    const int devnull = ::open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      dup2(devnull, STDIN_FILENO);
      dup2(devnull, STDOUT_FILENO);
      dup2(devnull, STDERR_FILENO);
    }
    execvp(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

}  // namespace

std::string PoolManager::ContainerName(const Pool& p, const Member& m) const {
  // Unique per data directory (one server per data directory), so two servers on one
  // machine never touch each other's containers.
  return fmt::format("drover-{}-{}-{:08x}", p.spec.name, m.n,
                     static_cast<uint32_t>(std::hash<std::string>{}(log_dir_)));
}

void PoolManager::RemoveContainer(const Pool& p, const Member& m, bool wait) {
  std::vector<std::string> args = p.spec.container_engine;
  args.insert(args.end(), {"rm", "-f", "-t", "0", ContainerName(p, m)});
  const pid_t pid = Run(args);
  if (pid <= 0) return;
  if (wait) {
    waitpid(pid, nullptr, 0);
  } else {
    cleanups_.push_back(pid);
  }
}

void PoolManager::RemoveStaleContainers(const Pool& p) {
  // Left behind by a server of this data directory that was killed: remove them before
  // starting new ones.
  const std::string prefix = fmt::format("drover-{}-", p.spec.name);
  std::vector<std::string> args = p.spec.container_engine;
  args.insert(args.end(), {"ps", "-a", "-q", "--filter",
                           absl::StrCat("label=drover.pool_dir=", log_dir_, "/", p.spec.name)});
  std::string cmd;
  for (const std::string& a : args) cmd += ShellQuote(a) + " ";
  cmd += "| xargs -r ";
  for (const std::string& a : p.spec.container_engine) cmd += ShellQuote(a) + " ";
  cmd += "rm -f -t 0";
  const pid_t pid = Run({"/bin/sh", "-c", cmd});
  if (pid > 0) waitpid(pid, nullptr, 0);
}

void PoolManager::Signal(Member& m, int sig) {
  if (m.pid > 0) ::kill(-m.pid, sig);  // the process group (setsid)
}

int PoolManager::PickClass(const Pool& p) {
  if (p.spec.classes.empty()) return 0;
  for (size_t i = 0; i < p.spec.classes.size(); ++i) {
    const PoolSpec::CapacityClass& k = p.spec.classes[i];
    if (k.max_agents == 0) return static_cast<int>(i);
    int in_class = 0;
    for (const Member& m : p.members) {
      in_class += m.capacity_class == static_cast<int>(i) && m.state != Member::State::kStopping;
    }
    if (in_class < k.max_agents) return static_cast<int>(i);
  }
  return -1;
}

int PoolManager::Affordable(const Pool& p, double budget) {
  if (p.spec.classes.empty()) {
    const double price = p.spec.price_per_agent_hour;
    if (price <= 0) return std::numeric_limits<int>::max();
    return static_cast<int>(std::floor(budget / price + 1e-9));
  }
  int n = 0;
  for (const PoolSpec::CapacityClass& k : p.spec.classes) {  // cheapest first
    const int room = k.max_agents > 0 ? k.max_agents : std::numeric_limits<int>::max();
    if (k.price <= 0) {
      if (room == std::numeric_limits<int>::max()) return room;
      n += room;
      continue;
    }
    const int can = static_cast<int>(std::min<double>(room, std::floor(budget / k.price + 1e-9)));
    n += can;
    budget -= can * k.price;
    if (can < room) break;
  }
  return n;
}

std::string PoolManager::StateName(Member::State s) {
  switch (s) {
    case Member::State::kStarting:
      return "starting";
    case Member::State::kIdle:
      return "idle";
    case Member::State::kBusy:
      return "busy";
    case Member::State::kDraining:
      return "draining";
    case Member::State::kStopping:
      return "stopping";
  }
  return "?";
}

void PoolManager::Loop() {
  while (!stop_) {
    Tick(absl::Now());
    std::unique_lock<std::mutex> lk(wake_mu_);
    wake_.wait_for(lk, absl::ToChronoNanoseconds(kTick), [this] { return stop_.load(); });
  }
}

bool PoolManager::Observe(const std::vector<uint64_t>& drain,
                          std::map<std::string, AgentView>* agents,
                          std::map<std::string, int64_t>* pending) {
  // (Shared with the command: if the runtime stops before running it, nothing dangles.)
  struct Result {
    std::promise<void> done;
    std::map<std::string, AgentView> agents;
    std::map<std::string, int64_t> pending;
  };
  auto result = std::make_shared<Result>();
  std::future<void> ready = result->done.get_future();
  std::vector<std::string> types;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (const Pool& p : pools_)
      types.insert(types.end(), p.spec.types.begin(), p.spec.types.end());
  }
  const bool posted = runtime_.Post(
      [result, drain, types](core::Engine& e, api::Batch&) {
        for (uint64_t id : drain) (void)e.DrainAgent(id);
        for (const auto& [id, a] : e.agents()) {
          auto pool = a.labels.find(kPoolLabel);
          if (pool == a.labels.end()) continue;
          auto member = a.labels.find(kMemberLabel);
          AgentView v;
          v.agent = id;
          v.leased = static_cast<int>(a.leased.size());
          v.attempts = a.attempts_ended;
          v.draining = a.draining;
          v.idle_since = a.idle_since;
          // An agent started by someone else (external pools) has no member label.
          result->agents[member != a.labels.end() ? member->second
                                                  : absl::StrCat(pool->second, "/external-", id)] =
              v;
        }
        // Pending: tasks an agent could take now (held-back ones would not use more agents).
        for (const std::string& t : types) result->pending[t] = e.RunnableReady(t);
        result->done.set_value();
      },
      api::Runtime::kControl);
  if (!posted) return false;
  if (ready.wait_for(std::chrono::seconds(5)) != std::future_status::ready) return false;
  *agents = std::move(result->agents);
  *pending = std::move(result->pending);
  return true;
}

void PoolManager::Tick(absl::Time now) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (pools_.empty()) {
      last_tick_ = now;
      return;  // nothing to watch: no engine command
    }
  }
  std::map<std::string, AgentView> agents;
  std::map<std::string, int64_t> pending;
  std::vector<uint64_t> drain;
  {
    std::lock_guard<std::mutex> lk(mu_);
    drain.swap(pending_drains_);
  }
  if (!Observe(drain, &agents, &pending)) return;
  std::lock_guard<std::mutex> lk(mu_);
  for (auto it = cleanups_.begin(); it != cleanups_.end();) {
    it = waitpid(*it, nullptr, WNOHANG) != 0 ? cleanups_.erase(it) : it + 1;
  }
  const double dt = absl::ToDoubleSeconds(now - last_tick_);
  last_tick_ = now;
  for (Pool& p : pools_) {
    if (p.spec.runtime == PoolSpec::Runtime::kExternal) {
      // Members are whatever agents carry the pool's label now.
      p.members.clear();
      const std::string prefix = absl::StrCat(p.spec.name, "/external-");
      for (const auto& [key, v] : agents) {
        if (key.rfind(prefix, 0) != 0) continue;
        Member m;
        m.n = static_cast<int>(p.members.size()) + 1;
        m.agent = v.agent;
        m.leased = v.leased;
        m.attempts = v.attempts;
        m.state = v.leased > 0 ? Member::State::kBusy : Member::State::kIdle;
        p.members.push_back(m);
      }
    } else {
      Reap(p, now);
    }
    p.agent_seconds += dt * static_cast<double>(p.members.size());
    for (const Member& m : p.members) p.spend += dt * m.price / 3600.0;
    p.pending = 0;
    for (const std::string& t : p.spec.types) p.pending += pending[t];
    // Members as the engine sees them.
    for (Member& m : p.members) {
      if (p.spec.runtime == PoolSpec::Runtime::kExternal) break;
      auto it = agents.find(absl::StrCat(p.spec.name, "/", m.n));
      if (it == agents.end()) {
        if (m.state != Member::State::kStarting && m.state != Member::State::kStopping) {
          // Registered once, gone now (deregistered or expired): it is stopping.
          m.state = Member::State::kStopping;
          Signal(m, SIGTERM);
          m.stop_sent = now;
        }
        continue;
      }
      const AgentView& v = it->second;
      if (m.state == Member::State::kStarting) {
        m.registered = now;
        p.cold_start_ms_sum += absl::ToDoubleMilliseconds(now - m.spawned);
        p.cold_starts++;
        p.backoff = p.spec.restart_backoff;  // a start that worked resets the backoff
      }
      m.agent = v.agent;
      m.engine_draining = v.draining;
      m.leased = v.leased;
      m.attempts = v.attempts;
      m.idle_since = v.idle_since;
      if (m.state == Member::State::kDraining || m.state == Member::State::kStopping) continue;
      m.state = v.leased > 0 ? Member::State::kBusy : Member::State::kIdle;
    }
    // The autoscaler, every sync period (not for a pool being removed: it goes to 0).
    if (!p.removing && now >= p.next_sync) {
      p.next_sync = now + p.spec.scaler.sync_period;
      // As the HPA does, the current size is the size last decided (the pool keeps that
      // many agents, replacing crashed ones); the metric comes from the running agents.
      core::ScalingInputs in;
      in.current = p.desired;
      for (const Member& m : p.members) {
        if (m.state == Member::State::kIdle || m.state == Member::State::kBusy) {
          in.busy_slots += m.leased;
          in.total_slots += p.spec.concurrency;
        }
      }
      in.pending = p.pending;
      // The budgets: the pool's own, and what the fleet's leaves after the other pools'
      // agents (every agent is paid from its start until it has stopped).
      if (p.spec.hourly_budget > 0) in.budget_cap = Affordable(p, p.spec.hourly_budget);
      if (fleet_budget_ > 0) {
        double others = 0;
        for (const Pool& q : pools_) {
          if (&q == &p) continue;
          for (const Member& m : q.members) others += m.price;
        }
        in.budget_cap =
            std::min(in.budget_cap, Affordable(p, std::max(0.0, fleet_budget_ - others)));
      }
      core::ScalingDecision d = p.scaler->Evaluate(now, in);
      p.desired = d.desired;
      // (Rules with a number in them count under their name.)
      p.by_rule[d.rule.substr(0, d.rule.find(" ("))]++;
      p.decisions.push_back(std::move(d));
      if (p.decisions.size() > kMaxDecisions) p.decisions.pop_front();
    }
    if (p.spec.runtime != PoolSpec::Runtime::kExternal) Reconcile(p, now, &pending_drains_);
  }
  // Removed pools leave once their last agent has stopped.
  std::erase_if(pools_, [](const Pool& p) {
    return p.removing && (p.members.empty() || p.spec.runtime == PoolSpec::Runtime::kExternal);
  });
}

void PoolManager::Reap(Pool& p, absl::Time now) {
  for (auto it = p.members.begin(); it != p.members.end();) {
    Member& m = *it;
    int status = 0;
    const pid_t r = m.pid > 0 ? waitpid(m.pid, &status, WNOHANG) : m.pid;
    if (r == 0) {
      // Still running. A stop not obeyed within kKillAfter becomes SIGKILL.
      if (m.state == Member::State::kStopping && now - m.stop_sent > kKillAfter) {
        Signal(m, SIGKILL);
      }
      ++it;
      continue;
    }
    if (m.state != Member::State::kStopping) {
      // Exited unasked: a crash. Replaced after a backoff that doubles while starts fail.
      p.crashed++;
      p.next_start = now + p.backoff;
      p.backoff = std::min(p.backoff * 2, kMaxBackoff);
      fmt::print(stderr,
                 "drover: pool {}: agent {}/{} (pid {}) exited unasked ({}); restart in {}\n",
                 p.spec.name, p.spec.name, m.n, m.pid,
                 WIFEXITED(status) ? absl::StrCat("status ", WEXITSTATUS(status))
                                   : absl::StrCat("signal ", WTERMSIG(status)),
                 absl::FormatDuration(p.next_start - now));
    }
    if (p.spec.runtime == PoolSpec::Runtime::kContainer) RemoveContainer(p, m, /*wait=*/false);
    it = p.members.erase(it);
  }
}

void PoolManager::Reconcile(Pool& p, absl::Time now, std::vector<uint64_t>* drain) {
  // Retire: max uses reached, or idle too long (never below min).
  int active = 0;
  for (const Member& m : p.members) {
    active += m.state != Member::State::kDraining && m.state != Member::State::kStopping;
  }
  for (Member& m : p.members) {
    if (m.state != Member::State::kIdle && m.state != Member::State::kBusy) continue;
    if (p.spec.max_uses > 0 && m.attempts >= p.spec.max_uses) {
      m.retiring = true;
      m.state = Member::State::kDraining;
      drain->push_back(m.agent);
      p.retired++;
      active--;
    } else if (p.spec.idle_timeout > absl::ZeroDuration() && m.state == Member::State::kIdle &&
               now - m.idle_since >= p.spec.idle_timeout && active > p.spec.scaler.min) {
      m.idle_stop = true;
      m.state = Member::State::kDraining;
      drain->push_back(m.agent);
      p.idle_stopped++;
      active--;
      p.desired = std::max(p.spec.scaler.min, std::min(p.desired, active));
    }
  }
  // Grow: start agents up to the desired size (after a crash, not before the backoff).
  while (active < p.desired && now >= p.next_start) {
    if (absl::Status st = Spawn(p, now); !st.ok()) {
      fmt::print(stderr, "drover: pool {}: {}\n", p.spec.name, std::string(st.message()));
      p.next_start = now + p.backoff;
      p.backoff = std::min(p.backoff * 2, kMaxBackoff);
      break;
    }
    active++;
  }
  // Shrink: starting agents first, then idle, then busy ones (which drain).
  auto take = [&](Member::State s) {
    for (Member& m : p.members) {
      if (active <= p.desired) return;
      if (m.state != s) continue;
      if (s == Member::State::kStarting) {
        m.state = Member::State::kStopping;
        m.stop_sent = now;
        Signal(m, SIGTERM);
      } else {
        m.state = Member::State::kDraining;
        drain->push_back(m.agent);
      }
      active--;
    }
  };
  take(Member::State::kStarting);
  take(Member::State::kIdle);
  take(Member::State::kBusy);
  // A draining agent whose last task ended is stopped; a start that took too long is killed.
  for (Member& m : p.members) {
    if (m.state == Member::State::kDraining && m.engine_draining && m.leased == 0) {
      m.state = Member::State::kStopping;
      m.stop_sent = now;
      Signal(m, SIGTERM);
    } else if (m.state == Member::State::kStarting && now - m.spawned > p.spec.start_timeout) {
      fmt::print(stderr, "drover: pool {}: agent {}/{} did not register within {}; killed\n",
                 p.spec.name, p.spec.name, m.n, absl::FormatDuration(p.spec.start_timeout));
      Signal(m, SIGKILL);
      // Reap counts it as a crash (state is still starting), so the restart backs off.
    }
  }
}

absl::Status PoolManager::Spawn(Pool& p, absl::Time now) {
  const int klass = PickClass(p);
  if (klass < 0) {
    return absl::ResourceExhaustedError("every capacity class is full (max_agents)");
  }
  Member m;
  if (!p.spec.classes.empty()) {
    m.capacity_class = klass;
    m.price = p.spec.classes[static_cast<size_t>(klass)].price;
  } else {
    m.price = p.spec.price_per_agent_hour;
  }
  m.n = p.next_n++;
  m.spawned = now;
  m.idle_since = now;
  const std::string id = absl::StrCat(p.spec.name, "/", m.n);
  // (--server is the global option: before the subcommand.)
  std::vector<std::string> args = {
      self_,           "--server",
      server_,         "agent",
      "--name",        absl::StrCat("pool-", p.spec.name, "-", m.n),
      "--concurrency", absl::StrCat(p.spec.concurrency),
      "--label",       absl::StrCat(kPoolLabel, "=", p.spec.name),
      "--label",       absl::StrCat(kMemberLabel, "=", id),
      "--work-dir",    absl::StrCat(log_dir_, "/", p.spec.name, "/", m.n, ".work")};
  // The types go before the last single-valued flag: CLI11 (2.1) takes a `--` right
  // after a repeatable option as the end of that option, not of the flags.
  std::vector<std::string> types;
  for (const std::string& t : p.spec.types) {
    types.push_back("--type");
    types.push_back(t);
  }
  args.insert(args.begin() + 4, types.begin(), types.end());
  if (m.capacity_class >= 0) {
    args.insert(
        args.begin() + 4,
        {"--label", absl::StrCat("drover.class=",
                                 p.spec.classes[static_cast<size_t>(m.capacity_class)].name)});
  }
  if (p.spec.max_uses > 0) {
    // The engine then gives it no more than max_uses tasks; the pool retires it after.
    args.insert(args.begin() + 4, {"--max-uses", absl::StrCat(p.spec.max_uses)});
  }
  args.push_back("--");
  const std::string work_dir = absl::StrCat(log_dir_, "/", p.spec.name, "/", m.n, ".work");
  if (p.spec.runtime == PoolSpec::Runtime::kContainer) {
    // The member is a long-running container plus the agent on the host, which runs each
    // task's command in it with `exec` (the task's variables passed through; the work
    // directory — checkpoint, parents', messages files — mounted at the same path). The
    // container starts in the member's own process, then that process becomes the agent.
    const std::string name = ContainerName(p, m);
    std::vector<std::string> run = p.spec.container_engine;
    run.insert(run.end(), {"run", "-d", "--name", name, "--network", "none", "--label",
                           absl::StrCat("drover.pool_dir=", log_dir_, "/", p.spec.name), "-v",
                           absl::StrCat(work_dir, ":", work_dir)});
    if (p.spec.memory_bytes > 0)
      run.insert(run.end(), {"--memory", absl::StrCat(p.spec.memory_bytes)});
    if (p.spec.cpus > 0) run.insert(run.end(), {"--cpus", absl::StrCat(p.spec.cpus)});
    if (p.spec.pids_limit > 0)
      run.insert(run.end(), {"--pids-limit", absl::StrCat(p.spec.pids_limit)});
    run.insert(run.end(), p.spec.container_run_args.begin(), p.spec.container_run_args.end());
    if (!p.spec.rootfs.empty()) {
      run.insert(run.end(), {"--rootfs", p.spec.rootfs});
    } else {
      run.push_back(p.spec.image);
    }
    run.insert(run.end(), {"sleep", "2147483647"});
    args.insert(args.end(), p.spec.container_engine.begin(), p.spec.container_engine.end());
    args.insert(args.end(), {"exec", "-i"});
    for (const char* v :
         {"DROVER_TASK_ID", "DROVER_ATTEMPT", "DROVER_DEADLINE_UNIX_MS", "DROVER_TASK_TYPE",
          "DROVER_TENANT", "DROVER_PRIORITY", "DROVER_CHECKPOINT_FILE", "DROVER_MESSAGES_FILE",
          "DROVER_WORKFLOW_ID", "DROVER_STEP", "DROVER_PARENTS_DIR", "DROVER_PARENTS"}) {
      args.insert(args.end(), {"-e", v});
    }
    args.push_back(name);
    args.insert(args.end(), p.spec.command.begin(), p.spec.command.end());
    std::string script = "mkdir -p " + ShellQuote(work_dir) + " && ";
    for (const std::string& a : run) script += ShellQuote(a) + " ";
    script += ">/dev/null && exec \"$@\"";
    args.insert(args.begin(), {"/bin/sh", "-c", script, "sh"});
  } else {
    args.insert(args.end(), p.spec.command.begin(), p.spec.command.end());
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log = absl::StrCat(log_dir_, "/", p.spec.name, "/", m.n, ".log");
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot open ", log, ": ", strerror(errno)));
  const rlim_t nofile = static_cast<rlim_t>(p.spec.rlimit_nofile);
  const rlim_t as = static_cast<rlim_t>(p.spec.rlimit_as_bytes);
  const pid_t pid = fork();
  if (pid < 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  }
  if (pid == 0) {
    // The child: only async-signal-safe calls until exec.
    setsid();
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);  // drover serve blocks SIGTERM/SIGINT
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    if (nofile > 0) {
      struct rlimit r = {nofile, nofile};
      setrlimit(RLIMIT_NOFILE, &r);
    }
    if (as > 0) {
      struct rlimit r = {as, as};
      setrlimit(RLIMIT_AS, &r);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  ::close(fd);
  m.pid = pid;
  p.members.push_back(m);
  p.started++;
  return absl::OkStatus();
}

v1::ListPoolsResponse PoolManager::ListPools() const {
  std::lock_guard<std::mutex> lk(mu_);
  v1::ListPoolsResponse out;
  out.set_fleet_hourly_budget(fleet_budget_);
  for (const Pool& p : pools_) {
    v1::PoolStatus* s = out.add_pools();
    s->set_name(p.spec.name);
    for (const std::string& t : p.spec.types) s->add_types(t);
    s->set_runtime(p.spec.runtime == PoolSpec::Runtime::kContainer  ? "container"
                   : p.spec.runtime == PoolSpec::Runtime::kExternal ? "external"
                                                                    : "process");
    s->set_min(p.spec.scaler.min);
    s->set_max(p.spec.scaler.max);
    s->set_desired(p.desired);
    int64_t busy_slots = 0, slots = 0;
    for (const Member& m : p.members) {
      switch (m.state) {
        case Member::State::kStarting:
          s->set_starting(s->starting() + 1);
          break;
        case Member::State::kIdle:
          s->set_idle(s->idle() + 1);
          break;
        case Member::State::kBusy:
          s->set_busy(s->busy() + 1);
          break;
        case Member::State::kDraining:
        case Member::State::kStopping:
          s->set_draining(s->draining() + 1);
          break;
      }
      if (m.state != Member::State::kStarting) {
        busy_slots += m.leased;
        slots += p.spec.concurrency;
      }
      v1::PoolMember* pm = s->add_members();
      pm->set_id(p.spec.runtime == PoolSpec::Runtime::kExternal
                     ? absl::StrCat(p.spec.name, "/external-", m.agent)
                     : absl::StrCat(p.spec.name, "/", m.n));
      pm->set_pid(m.pid);
      pm->set_state(StateName(m.state));
      pm->set_agent_id(m.agent);
      pm->set_price_per_agent_hour(m.price);
      if (m.capacity_class >= 0) {
        pm->set_capacity_class(p.spec.classes[static_cast<size_t>(m.capacity_class)].name);
      }
      pm->set_leased(m.leased);
      pm->set_attempts(m.attempts);
      pm->set_started_unix_ms(absl::ToUnixMillis(m.spawned));
      if (m.registered != absl::Time()) {
        pm->set_start_ms(absl::ToInt64Milliseconds(m.registered - m.spawned));
      }
    }
    s->set_utilization(slots > 0 ? static_cast<double>(busy_slots) / static_cast<double>(slots)
                                 : 0);
    s->set_pending(p.pending);
    s->set_started_total(p.started);
    s->set_crashed_total(p.crashed);
    s->set_retired_total(p.retired);
    s->set_idle_stopped_total(p.idle_stopped);
    s->set_cold_start_ms_avg(
        p.cold_starts > 0 ? p.cold_start_ms_sum / static_cast<double>(p.cold_starts) : 0);
    s->set_price_per_agent_hour(p.spec.price_per_agent_hour);
    s->set_agent_hours(p.agent_seconds / 3600.0);
    s->set_spend(p.spend);
    double burn = 0;
    for (const Member& m : p.members) {
      burn += m.price;
      if (m.state != Member::State::kStopping) {
        (*s->mutable_agents_by_class())
            [m.capacity_class >= 0 ? p.spec.classes[static_cast<size_t>(m.capacity_class)].name
                                   : "default"]++;
      }
    }
    s->set_burn_rate(burn);
    for (const auto& [rule, n] : p.by_rule) (*s->mutable_decisions_by_rule())[rule] = n;
    s->set_hourly_budget(p.spec.hourly_budget);
    out.set_fleet_burn_rate(out.fleet_burn_rate() + s->burn_rate());
  }
  return out;
}

absl::StatusOr<v1::ListScalingDecisionsResponse> PoolManager::Decisions(const std::string& pool,
                                                                        int limit) const {
  std::lock_guard<std::mutex> lk(mu_);
  for (const Pool& p : pools_) {
    if (p.spec.name != pool) continue;
    v1::ListScalingDecisionsResponse out;
    const int n = std::clamp(limit <= 0 ? 50 : limit, 1, 1000);
    for (auto it = p.decisions.rbegin(); it != p.decisions.rend() && out.decisions_size() < n;
         ++it) {
      v1::ScalingDecisionRecord* r = out.add_decisions();
      r->set_at_unix_ms(absl::ToUnixMillis(it->at));
      r->set_current(it->current);
      r->set_metric(it->metric);
      r->set_target(it->target);
      r->set_proposed(it->proposed);
      r->set_stabilized(it->stabilized);
      r->set_desired(it->desired);
      r->set_rule(it->rule);
    }
    return out;
  }
  return absl::NotFoundError(absl::StrCat("pool: no pool named \"", pool.substr(0, 80), "\""));
}

}  // namespace drover::pool
