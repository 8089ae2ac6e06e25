#include "pool/controller.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/names.h"
#include "fmt/core.h"
#include "google/protobuf/util/json_util.h"
#include "scale/members.h"

namespace drover::pool {
namespace {

constexpr absl::Duration kMaxBackoff = absl::Seconds(60);
constexpr absl::Duration kKillAfter = absl::Seconds(10);
constexpr size_t kMaxDecisions = 1000;

using core::internal::ValidName;

void Summarize(const Histogram& h, v1::LatencySummary* out) {
  out->set_count(static_cast<int64_t>(h.count()));
  if (h.count() == 0) return;
  out->set_mean_ms(h.sum() * 1000.0 / static_cast<double>(h.count()));
  out->set_p50_ms(h.Quantile(0.50) * 1000.0);
  out->set_p95_ms(h.Quantile(0.95) * 1000.0);
}

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
  if (s.runtime == PoolSpec::Runtime::kExternal &&
      (c.memory_bytes() != 0 || c.cpus() != 0 || c.pids_limit() != 0 ||
       c.health_command_size() > 0)) {
    return bad("runtime",
               "an external pool's agents are not drover's: no limits or health_command");
  }
  if (c.memory_bytes() < 0 || (c.memory_bytes() > 0 && c.memory_bytes() < (4 << 20))) {
    return bad("memory_bytes", "must be 0 (no limit) or at least 4194304 (4 MiB)");
  }
  if (!(c.cpus() >= 0) || c.cpus() > 1024) return bad("cpus", "must be 0 (no limit) to 1024");
  if (c.pids_limit() < 0) return bad("pids_limit", "must be >= 0");
  s.memory_bytes = c.memory_bytes();
  s.cpus = c.cpus();
  s.pids_limit = c.pids_limit();
  s.health_command.assign(c.health_command().begin(), c.health_command().end());
  if (!s.health_command.empty() && s.health_command[0].empty()) {
    return bad("health_command", "argv[0] is empty");
  }
  if (c.health_interval_ms() < 0 || c.health_interval_ms() > 3'600'000 ||
      (c.health_interval_ms() > 0 && c.health_interval_ms() < 100)) {
    return bad("health_interval_ms", "must be 100 to 3600000 (1 h)");
  }
  if (c.health_timeout_ms() < 0 || c.health_timeout_ms() > 600'000) {
    return bad("health_timeout_ms", "must be 0 to 600000 (10 min)");
  }
  if (c.health_failures() < 0 || c.health_failures() > 100) {
    return bad("health_failures", "must be 1 to 100");
  }
  if (c.health_interval_ms() > 0) s.health_interval = absl::Milliseconds(c.health_interval_ms());
  if (c.health_timeout_ms() > 0) s.health_timeout = absl::Milliseconds(c.health_timeout_ms());
  if (c.health_failures() > 0) s.health_failures = c.health_failures();
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
    s.scaler.metric = scale::AutoscalerSpec::Metric::kPendingPerAgent;
    s.scaler.target = c.target() > 0 ? c.target() : 1.0;
  } else if (c.metric() == "utilization") {
    s.scaler.metric = scale::AutoscalerSpec::Metric::kUtilization;
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
      {scale::ScalingPolicy::Type::kPercent, c.scale_up_percent() > 0 ? c.scale_up_percent() : 100,
       period},
      {scale::ScalingPolicy::Type::kPods, c.scale_up_pods() > 0 ? c.scale_up_pods() : 4, period}};
  s.scaler.down.policies = {{scale::ScalingPolicy::Type::kPercent,
                             c.scale_down_percent() > 0 ? c.scale_down_percent() : 100, period}};
  if (c.rlimit_nofile() < 0 || c.rlimit_as_bytes() < 0) return bad("rlimit", "must be >= 0");
  s.rlimit_nofile = c.rlimit_nofile();
  s.rlimit_as_bytes = c.rlimit_as_bytes();
  if (absl::Status st = scale::ValidateAutoscalerSpec(s.scaler); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(f, ".", st.message()));
  }
  // Predictive autoscaling.
  absl::StatusOr<scale::Mode> mode = scale::ParseMode(c.mode());
  if (!mode.ok()) return absl::InvalidArgumentError(absl::StrCat(f, ".", mode.status().message()));
  s.predictive.mode = *mode;
  const v1::PredictiveConfig& pc = c.predictive();
  const std::string pf = "predictive.";
  if (pc.models_size() > 0) {
    s.forecast.members.assign(pc.models().begin(), pc.models().end());
  } else {
    s.forecast.members = scale::ForecasterNames();
  }
  for (size_t i = 0; i < s.forecast.members.size(); ++i) {
    if (absl::Status st = scale::CheckForecasterName(s.forecast.members[i]); !st.ok()) {
      return bad(absl::StrCat(pf, "models[", i, "]"), std::string(st.message().substr(7)));
    }
    for (size_t j = 0; j < i; ++j) {
      if (s.forecast.members[j] == s.forecast.members[i]) {
        return bad(absl::StrCat(pf, "models[", i, "]"),
                   absl::StrCat("\"", s.forecast.members[i], "\" twice"));
      }
    }
  }
  s.forecast.use = pc.model().empty() ? "ensemble" : pc.model();
  if (s.forecast.use != "ensemble" &&
      std::find(s.forecast.members.begin(), s.forecast.members.end(), s.forecast.use) ==
          s.forecast.members.end()) {
    return bad(pf + "model", absl::StrCat("unknown \"", s.forecast.use,
                                          "\" (\"ensemble\" or one of the models)"));
  }
  if (pc.use_confidence() != 0) s.predictive.use_confidence = pc.use_confidence();
  if (pc.floor_confidence() != 0) s.predictive.floor_confidence = pc.floor_confidence();
  if (pc.hold_ms() < 0 || pc.wait_objective_ms() < 0 || pc.retrain_every_ms() < 0 ||
      pc.expected_startup_ms() < 0 || pc.expected_service_ms() < 0 || pc.min_samples() < 0) {
    return bad(pf + "*_ms", "and min_samples: must be >= 0");
  }
  if (pc.hold_ms() > 0) s.predictive.hold = absl::Milliseconds(pc.hold_ms());
  if (pc.wait_objective_ms() > 0) {
    if (pc.wait_objective_ms() > 3'600'000) return bad(pf + "wait_objective_ms", "must be <= 1 h");
    s.predictive.objective_s = static_cast<double>(pc.wait_objective_ms()) / 1000.0;
  }
  if (pc.retrain_every_ms() > 0) {
    if (pc.retrain_every_ms() < 60'000) return bad(pf + "retrain_every_ms", "must be >= 60,000");
    s.retrain_every = absl::Milliseconds(pc.retrain_every_ms());
  }
  if (pc.expected_startup_ms() > 0)
    s.expected_startup = absl::Milliseconds(pc.expected_startup_ms());
  if (pc.expected_service_ms() > 0)
    s.expected_service = absl::Milliseconds(pc.expected_service_ms());
  if (pc.min_samples() > 0) s.forecast.min_samples = pc.min_samples();
  if (absl::Status st = scale::ValidatePredictiveSpec(s.predictive); !st.ok()) {
    return bad(pf + std::string(st.message().substr(0, st.message().find(':'))),
               std::string(st.message().substr(st.message().find(':') + 2)));
  }
  return s;
}

Observation ObserveEngine(core::Engine& e, const std::vector<uint64_t>& drain,
                          const std::vector<std::string>& types) {
  Observation out;
  for (uint64_t id : drain) (void)e.DrainAgent(id);
  std::vector<std::pair<std::string, uint64_t>> with_samples;  // member id, agent
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
    std::string key =
        member != a.labels.end() ? member->second : absl::StrCat(pool->second, "/external-", id);
    if (!a.acquired.empty()) with_samples.emplace_back(key, id);
    out.agents[std::move(key)] = std::move(v);
  }
  // (Taken after the walk over the agents, which must not change under it.)
  for (const auto& [key, id] : with_samples) out.agents[key].acquired = e.TakeAcquired(id);
  // Pending: tasks an agent could take now (held-back ones would not use more agents).
  for (const std::string& t : types) {
    out.pending[t] = e.RunnableReady(t);
    if (!out.load.contains(t)) out.load[t] = e.TakeTypeLoad(t);
  }
  return out;
}

PoolController::PoolController(MemberDriver& driver, double fleet_hourly_budget)
    : driver_(driver), fleet_budget_(fleet_hourly_budget) {
  log_ = [](const std::string& line) { fmt::print(stderr, "drover: {}\n", line); };
}

PoolController::Pool PoolController::NewPool(const PoolSpec& spec) {
  Pool p;
  p.scaler = std::make_unique<scale::Autoscaler>(spec.scaler);
  p.desired = spec.scaler.min;  // warm-up
  p.backoff = spec.restart_backoff;
  p.spec = spec;
  p.latency.pool = spec.name;
  if (spec.predictive.mode != scale::Mode::kReactive) {
    absl::StatusOr<std::unique_ptr<scale::Ensemble>> e = scale::Ensemble::Create(spec.forecast);
    if (e.ok()) {
      p.ensemble = std::move(*e);
    } else {
      p.model_error = std::string(e.status().message());
    }
  }
  return p;
}

void PoolController::AddFromConfig(PoolSpec spec) {
  Pool p = NewPool(spec);
  p.from_config = true;
  pools_.push_back(std::move(p));
}

bool PoolController::FromConfig(const std::string& name) const {
  for (const Pool& p : pools_) {
    if (p.spec.name == name) return p.from_config;
  }
  return false;
}

bool PoolController::Exists(const std::string& name) const {
  for (const Pool& p : pools_) {
    if (p.spec.name == name && !p.removing) return true;
  }
  return false;
}

bool PoolController::Known(const std::string& name) const {
  return std::any_of(pools_.begin(), pools_.end(),
                     [&](const Pool& p) { return p.spec.name == name; });
}

std::string PoolController::ApiPoolsJson() const {
  v1::ServerConfig c;
  for (const Pool& p : pools_) {
    if (!p.from_config && !p.removing) *c.add_pools() = p.config;
  }
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(c, &json);
  return json;
}

std::vector<std::string> PoolController::PoolNames() const {
  std::vector<std::string> names;
  for (const Pool& p : pools_) names.push_back(p.spec.name);
  return names;
}

std::vector<std::string> PoolController::Types() const {
  std::vector<std::string> types;
  for (const Pool& p : pools_) types.insert(types.end(), p.spec.types.begin(), p.spec.types.end());
  return types;
}

absl::Status PoolController::Apply(const PoolSpec& spec, const v1::PoolConfig& config) {
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
    const bool same_models = p.spec.forecast.members == spec.forecast.members &&
                             p.spec.forecast.use == spec.forecast.use;
    // New forecasters are made first: a refusal (the learned models' module cannot be
    // loaded) leaves the pool as it was.
    std::unique_ptr<scale::Ensemble> fresh;
    if (spec.predictive.mode != scale::Mode::kReactive && (!p.ensemble || !same_models)) {
      absl::StatusOr<std::unique_ptr<scale::Ensemble>> e = scale::Ensemble::Create(spec.forecast);
      if (!e.ok()) return e.status();
      fresh = std::move(*e);
    }
    p.spec = spec;
    p.config = config;
    p.scaler = std::make_unique<scale::Autoscaler>(spec.scaler);
    p.desired = std::clamp(p.desired, spec.scaler.min, spec.scaler.max);
    p.next_sync = absl::Time();
    // A mode change keeps the history; new models start untrained (trained at the next
    // round), the same ones keep their training and scores.
    if (spec.predictive.mode == scale::Mode::kReactive) {
      p.ensemble.reset();
      p.fitting.reset();
    } else if (fresh) {
      p.ensemble = std::move(fresh);
      p.next_fit = absl::Time();
      p.fitting.reset();
      p.models_loaded = false;  // a saved model of the new set is loaded at the next round
    }
    return absl::OkStatus();
  }
  Pool p = NewPool(spec);
  p.config = config;
  pools_.push_back(std::move(p));
  return absl::OkStatus();
}

absl::Status PoolController::Remove(const std::string& name, bool force, absl::Time now) {
  for (Pool& p : pools_) {
    if (p.spec.name != name) continue;
    if (p.from_config) {
      return absl::FailedPreconditionError(
          absl::StrCat("name: pool \"", name, "\" comes from the config file; remove it there"));
    }
    p.removing = true;
    p.desired = 0;
    if (force) {
      for (Member& m : p.members) StopMember(p, m, now);
    }
    return absl::OkStatus();
  }
  return absl::NotFoundError(absl::StrCat("name: no pool named \"", name.substr(0, 80), "\""));
}

absl::Status PoolController::StopOne(const std::string& member, bool force, absl::Time now) {
  const size_t slash = member.rfind('/');
  auto unknown = [&] {
    return absl::NotFoundError(
        absl::StrCat("member: no pool member \"", member.substr(0, 80), "\" (see drover pools)"));
  };
  if (slash == std::string::npos) return unknown();
  for (Pool& p : pools_) {
    if (p.spec.name != member.substr(0, slash)) continue;
    if (p.spec.runtime == PoolSpec::Runtime::kExternal) {
      return absl::FailedPreconditionError(
          absl::StrCat("member: pool \"", p.spec.name,
                       "\" is external: its agents are started and stopped by others"));
    }
    for (Member& m : p.members) {
      if (absl::StrCat(p.spec.name, "/", m.n) != member) continue;
      if (m.state == Member::State::kStopping) return absl::OkStatus();
      p.stopped++;
      if (force || m.state == Member::State::kStarting) {
        StopMember(p, m, now);
      } else if (m.state != Member::State::kDraining) {
        m.state = Member::State::kDraining;
        requested_drains_.push_back(m.agent);
      }
      log_(fmt::format("pool {}: agent {} {} on request", p.spec.name, member,
                       force ? "stopped" : "draining"));
      return absl::OkStatus();
    }
  }
  return unknown();
}

void PoolController::StopMember(Pool& p, Member& m, absl::Time now) {
  m.state = Member::State::kStopping;
  m.stop_sent = now;
  driver_.Stop(p.spec, m, /*kill=*/false);
}

void PoolController::StopAll(bool kill) {
  for (Pool& p : pools_) {
    for (Member& m : p.members) driver_.Stop(p.spec, m, kill);
  }
}

int PoolController::PickClass(const Pool& p) {
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

int PoolController::Affordable(const Pool& p, double budget) {
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

std::string PoolController::StateName(Member::State s) {
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

void PoolController::Tick(absl::Time now, Observation& seen, std::vector<uint64_t>* drain) {
  drain->insert(drain->end(), requested_drains_.begin(), requested_drains_.end());
  requested_drains_.clear();
  for (Pool& p : pools_) {
    const double dt = p.last_tick == absl::Time() ? 0 : absl::ToDoubleSeconds(now - p.last_tick);
    p.last_tick = now;
    if (p.spec.runtime == PoolSpec::Runtime::kExternal) {
      // Members are whatever agents carry the pool's label now.
      p.members.clear();
      const std::string prefix = absl::StrCat(p.spec.name, "/external-");
      for (auto& [key, v] : seen.agents) {
        if (key.rfind(prefix, 0) != 0) continue;
        Member m;
        m.n = static_cast<int>(p.members.size()) + 1;
        m.agent = v.agent;
        m.leased = v.leased;
        m.attempts = v.attempts;
        m.state = v.leased > 0 ? Member::State::kBusy : Member::State::kIdle;
        p.members.push_back(m);
        for (const core::AcquireSample& s : v.acquired) {
          (s.cold ? p.latency.acquire_cold : p.latency.acquire_warm).Observe(s.wait_s);
        }
      }
    } else {
      Reap(p, now);
    }
    p.agent_seconds += dt * static_cast<double>(p.members.size());
    for (const Member& m : p.members) p.spend += dt * m.price / 3600.0;
    p.pending = 0;
    for (const std::string& t : p.spec.types) p.pending += seen.pending[t];
    // Members as the engine sees them.
    for (Member& m : p.members) {
      if (p.spec.runtime == PoolSpec::Runtime::kExternal) break;
      auto it = seen.agents.find(absl::StrCat(p.spec.name, "/", m.n));
      if (it == seen.agents.end()) {
        if (m.state != Member::State::kStarting && m.state != Member::State::kStopping) {
          // Registered once, gone now (deregistered or expired): it is stopping.
          StopMember(p, m, now);
        }
        continue;
      }
      const AgentView& v = it->second;
      if (m.state == Member::State::kStarting) {
        m.registered = now;
        m.next_check = now + p.spec.health_interval;
        p.latency.agent_start.Observe(absl::ToDoubleSeconds(now - m.spawned));
        p.backoff = p.spec.restart_backoff;  // a start that worked resets the backoff
      }
      for (const core::AcquireSample& s : v.acquired) {
        (s.cold ? p.latency.acquire_cold : p.latency.acquire_warm).Observe(s.wait_s);
      }
      m.agent = v.agent;
      m.engine_draining = v.draining;
      m.leased = v.leased;
      m.attempts = v.attempts;
      m.idle_since = v.idle_since;
      if (m.state == Member::State::kDraining || m.state == Member::State::kStopping) continue;
      m.state = v.leased > 0 ? Member::State::kBusy : Member::State::kIdle;
    }
    if (!p.spec.health_command.empty()) Health(p, now);
    CloseMinutes(p, now, seen);
    // The autoscaler, every sync period (not for a pool being removed: it goes to 0).
    if (!p.removing && now >= p.next_sync) {
      p.next_sync = now + p.spec.scaler.sync_period;
      // As the HPA does, the current size is the size last decided (the pool keeps that
      // many agents, replacing crashed ones); the metric comes from the running agents.
      scale::ScalingInputs in;
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
      scale::ScalingDecision d = p.scaler->Evaluate(now, in);
      if (p.spec.predictive.mode != scale::Mode::kReactive) Decide(p, now, d, in);
      if (d.desired != p.desired && on_event_) {
        PoolEvent(p, "pool.scaled",
                  fmt::format("{} -> {} agents: {} (metric {:.3g}, target {:.3g})", p.desired,
                              d.desired, d.rule, d.metric, d.target),
                  {{"from", absl::StrCat(p.desired)},
                   {"to", absl::StrCat(d.desired)},
                   {"rule", d.rule},
                   {"current", absl::StrCat(d.current)}});
      }
      p.desired = d.desired;
      // (Rules with a number in them count under their name.)
      p.by_rule[d.rule.substr(0, d.rule.find(" ("))]++;
      if (on_decision_) on_decision_(p.spec.name, d);
      p.decisions.push_back(std::move(d));
      if (p.decisions.size() > kMaxDecisions) p.decisions.pop_front();
    }
    if (p.spec.runtime != PoolSpec::Runtime::kExternal) Reconcile(p, now, drain);
  }
  // Removed pools leave once their last agent has stopped.
  std::erase_if(pools_, [](const Pool& p) {
    return p.removing && (p.members.empty() || p.spec.runtime == PoolSpec::Runtime::kExternal);
  });
}

absl::Time PoolController::NextDue() const {
  absl::Time due = absl::InfiniteFuture();
  for (const Pool& p : pools_) {
    // Every minute's end closes a minute of load history (and forecasts again).
    if (p.open_minute >= 0) due = std::min(due, absl::FromUnixSeconds((p.open_minute + 1) * 60));
    if (!p.removing) due = std::min(due, p.next_sync);
    int active = 0;
    for (const Member& m : p.members) {
      active += m.state != Member::State::kDraining && m.state != Member::State::kStopping;
      switch (m.state) {
        case Member::State::kStarting:
          due = std::min(due, m.spawned + p.spec.start_timeout);
          break;
        case Member::State::kStopping:
          due = std::min(due, m.stop_sent + kKillAfter);
          break;
        case Member::State::kIdle:
          if (p.spec.idle_timeout > absl::ZeroDuration()) {
            due = std::min(due, m.idle_since + p.spec.idle_timeout);
          }
          [[fallthrough]];
        case Member::State::kBusy:
          if (!p.spec.health_command.empty()) {
            due = std::min(
                due, m.check_pid > 0 ? m.check_started + p.spec.health_timeout : m.next_check);
          }
          break;
        case Member::State::kDraining:
          break;
      }
    }
    if (active < p.desired) due = std::min(due, p.next_start);
  }
  return due;
}

void PoolController::Reap(Pool& p, absl::Time now) {
  for (auto it = p.members.begin(); it != p.members.end();) {
    Member& m = *it;
    const std::optional<std::string> how = driver_.Exited(p.spec, m);
    if (!how) {
      // Still running. A stop not obeyed within kKillAfter becomes a kill.
      if (m.state == Member::State::kStopping && now - m.stop_sent > kKillAfter) {
        driver_.Stop(p.spec, m, /*kill=*/true);
      }
      ++it;
      continue;
    }
    if (m.state != Member::State::kStopping) {
      // Exited unasked: a crash. Replaced after a backoff that doubles while starts fail.
      p.crashed++;
      p.next_start = now + p.backoff;
      p.backoff = std::min(p.backoff * 2, kMaxBackoff);
      log_(fmt::format("pool {}: agent {}/{} (pid {}) exited unasked ({}); restart in {}",
                       p.spec.name, p.spec.name, m.n, m.pid, *how,
                       absl::FormatDuration(p.next_start - now)));
    }
    if (on_event_) {
      const bool crash = m.state != Member::State::kStopping;
      PoolEvent(p, "pool.agent_exited",
                crash ? fmt::format("{}/{} exited unasked ({}); restart in {}", p.spec.name, m.n,
                                    *how, absl::FormatDuration(p.next_start - now))
                      : fmt::format("{}/{} stopped ({})", p.spec.name, m.n, *how),
                {{"member", absl::StrCat(p.spec.name, "/", m.n)},
                 {"crash", crash ? "true" : "false"},
                 {"how", *how},
                 {"agent_id", absl::StrCat(m.agent)}});
    }
    if (m.check_pid > 0) driver_.KillCheck(m);
    driver_.Forget(p.spec, m);
    it = p.members.erase(it);
  }
}

void PoolController::Health(Pool& p, absl::Time now) {
  for (Member& m : p.members) {
    if (m.state != Member::State::kIdle && m.state != Member::State::kBusy) continue;
    if (m.check_pid > 0) {
      std::optional<bool> ok = driver_.CheckDone(m);
      if (!ok && now - m.check_started > p.spec.health_timeout) {
        driver_.KillCheck(m);
        ok = false;
      }
      if (!ok) continue;
      m.check_pid = -1;
      m.next_check = now + p.spec.health_interval;
      if (*ok) {
        m.check_failures = 0;
        continue;
      }
    } else if (now >= m.next_check) {
      m.check_started = now;
      absl::Status st = driver_.StartCheck(p.spec, m);
      if (st.ok()) continue;
      log_(fmt::format("pool {}: health command for {}/{}: {}", p.spec.name, p.spec.name, m.n,
                       std::string(st.message())));
      m.next_check = now + p.spec.health_interval;
    } else {
      continue;
    }
    // A failed (or timed-out, or unstartable) check.
    if (++m.check_failures < p.spec.health_failures) continue;
    log_(fmt::format("pool {}: agent {}/{} failed its health command {} times in a row; replaced",
                     p.spec.name, p.spec.name, m.n, m.check_failures));
    p.unhealthy++;
    StopMember(p, m, now);  // the agent hands back its tasks; Reconcile starts another
  }
}

void PoolController::Reconcile(Pool& p, absl::Time now, std::vector<uint64_t>* drain) {
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
      log_(fmt::format("pool {}: {}", p.spec.name, std::string(st.message())));
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
        StopMember(p, m, now);
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
      StopMember(p, m, now);
    } else if (m.state == Member::State::kStarting && now - m.spawned > p.spec.start_timeout) {
      log_(fmt::format("pool {}: agent {}/{} did not register within {}; killed", p.spec.name,
                       p.spec.name, m.n, absl::FormatDuration(p.spec.start_timeout)));
      driver_.Stop(p.spec, m, /*kill=*/true);
      // Reap counts it as a crash (state is still starting), so the restart backs off.
    }
  }
}

absl::Status PoolController::Spawn(Pool& p, absl::Time now) {
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
  if (absl::Status st = driver_.Start(p.spec, m, now); !st.ok()) return st;
  p.members.push_back(m);
  p.started++;
  if (on_event_) {
    PoolEvent(p, "pool.agent_started",
              fmt::format("{}/{} started (pid {}, {:.3g}/hour)", p.spec.name, m.n, m.pid, m.price),
              {{"member", absl::StrCat(p.spec.name, "/", m.n)}, {"pid", absl::StrCat(m.pid)}});
  }
  return absl::OkStatus();
}

void PoolController::PoolEvent(const Pool& p, const char* type, std::string message,
                               std::initializer_list<std::pair<const char*, std::string>> attrs) {
  v1::Event e;
  e.set_type(type);
  e.set_pool(p.spec.name);
  e.set_message(std::move(message));
  for (const auto& [k, v] : attrs) (*e.mutable_attrs())[k] = v;
  on_event_(std::move(e));
}

v1::ListPoolsResponse PoolController::ListPools() const {
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
      pm->set_health_failures(m.check_failures);
    }
    s->set_utilization(slots > 0 ? static_cast<double>(busy_slots) / static_cast<double>(slots)
                                 : 0);
    s->set_pending(p.pending);
    s->set_started_total(p.started);
    s->set_crashed_total(p.crashed);
    s->set_retired_total(p.retired);
    s->set_idle_stopped_total(p.idle_stopped);
    s->set_unhealthy_total(p.unhealthy);
    s->set_stopped_total(p.stopped);
    Summarize(p.latency.acquire_warm, s->mutable_acquire_warm());
    Summarize(p.latency.acquire_cold, s->mutable_acquire_cold());
    Summarize(p.latency.agent_start, s->mutable_agent_start());
    s->set_cold_start_ms_avg(s->agent_start().mean_ms());
    s->set_mode(scale::ModeName(p.spec.predictive.mode));
    s->set_fallbacks_total(p.fallbacks);
    for (const auto& [k, v] : p.predictive_by) (*s->mutable_predictive_decisions())[k] = v;
    s->set_shadow_disagreements_total(p.disagreements);
    s->set_saved_agent_hours(p.saved_agent_seconds / 3600.0);
    s->set_model_fits_total(p.fits);
    s->set_model_error(p.model_error);
    if (const scale::Snapshot* snap = Latest(p)) FillForecast(p, *snap, s->mutable_forecast());
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

std::vector<PoolController::Latencies> PoolController::AllLatencies() const {
  std::vector<Latencies> out;
  for (const Pool& p : pools_) out.push_back(p.latency);
  return out;
}

absl::StatusOr<v1::ListScalingDecisionsResponse> PoolController::Decisions(const std::string& pool,
                                                                           int limit) const {
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
      if (it->predictive) {
        const scale::ScalingDecision::Predictive& pr = *it->predictive;
        r->set_mode(pr.mode);
        r->set_reactive(pr.reactive);
        r->set_predictive(pr.predictive);
        r->set_confidence(pr.confidence);
        r->set_predictive_rule(pr.rule);
        r->set_applied_predictive(pr.applied);
        for (const auto& h : pr.horizons) {
          v1::ForecastHorizon* fh = r->add_forecast();
          fh->set_minutes(h.minutes);
          fh->set_mean(h.mean);
          fh->set_p10(h.p10);
          fh->set_p50(h.p50);
          fh->set_p90(h.p90);
          fh->set_confidence(h.confidence);
        }
        for (const auto& [m, w] : pr.weights) (*r->mutable_weights())[m] = w;
      }
    }
    return out;
  }
  return absl::NotFoundError(absl::StrCat("pool: no pool named \"", pool.substr(0, 80), "\""));
}

}  // namespace drover::pool
