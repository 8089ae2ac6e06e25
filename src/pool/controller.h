// pool/controller: the decisions of agent pools, apart from how agents are started.
//
// A PoolController keeps, for each pool, its members and the autoscaler, and every round
// (Tick) it compares what the engine reports (an Observation) with what the pool wants:
//
//   - warm-up: `min` agents are started at once;
//   - sizing: the reactive autoscaler (scale/autoscaler.h) every sync period, within the
//     pool's and the fleet's hourly budgets;
//   - scale-in drains: the engine stops giving the agent work (Engine::DrainAgent), and the
//     member is stopped once its last task ended; starting and idle agents go first;
//   - max uses: an agent that ran that many attempts is drained and replaced;
//   - idle timeout: an agent idle that long is stopped, never below `min`;
//   - start timeout: an agent that has not registered by then is killed and replaced;
//   - health: the optional health command fails `health_failures` times in a row → the
//     agent is stopped (its tasks go back to the queue) and replaced;
//   - crashes: a member that exits unasked is replaced after a backoff that doubles (from
//     restart_backoff to 60 s) while starts keep failing.
//
// How members start and stop is a MemberDriver's business: child processes and podman
// containers in `drover serve` (pool/drivers.h), simulated agents in `drover simulate`
// (sim/simulator.cc) — the same controller code decides in both.
//
// Threading: thread-compatible; PoolManager serializes access with its mutex, the
// simulator has one thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/engine.h"
#include "drover/v1/config.pb.h"
#include "drover/v1/drover.pb.h"
#include "scale/autoscaler.h"
#include "scale/ensemble.h"
#include "scale/predictive.h"
#include "store/store.h"
#include "util/histogram.h"

namespace drover::pool {

namespace v1 = ::drover::v1;

// The labels a member's agent registers with: the pool, and the member ("pool/n").
inline constexpr const char* kPoolLabel = core::kPoolAgentLabel;
inline constexpr char kMemberLabel[] = "drover.member";

struct PoolSpec {
  std::string name;
  std::vector<std::string> types;
  std::vector<std::string> command;
  int concurrency = 1;
  absl::Duration idle_timeout = absl::ZeroDuration();  // zero: never
  int64_t max_uses = 0;                                // 0: never
  absl::Duration start_timeout = absl::Seconds(60);
  absl::Duration restart_backoff = absl::Seconds(1);
  // Health: heartbeats always (the engine expires a silent agent); plus, when set, a
  // command run every health_interval (its exit status 0 = healthy, killed after
  // health_timeout = unhealthy).
  std::vector<std::string> health_command;
  absl::Duration health_interval = absl::Seconds(10);
  absl::Duration health_timeout = absl::Seconds(5);
  int health_failures = 3;  // in a row, then the agent is replaced
  double price_per_agent_hour = 0;
  double hourly_budget = 0;  // 0: none
  struct CapacityClass {
    std::string name;
    double price = 0;
    double interruptions_per_hour = 0;
    int max_agents = 0;  // 0: no limit
  };
  std::vector<CapacityClass> classes;  // sorted by price; empty: one class at the pool price
  int64_t rlimit_nofile = 0;
  int64_t rlimit_as_bytes = 0;
  // kProcess: child processes; kContainer: podman containers (image or rootfs);
  // kExternal: agents are started by something else (Kubernetes, a person) with the label
  // drover.pool=<name>; drover only decides and publishes the size it wants.
  enum class Runtime : uint8_t { kProcess, kContainer, kExternal };
  Runtime runtime = Runtime::kProcess;
  std::string image, rootfs;
  std::vector<std::string> container_engine = {"podman"};
  std::vector<std::string> container_run_args;
  // Limits: cgroups for processes, the container runtime's flags for containers.
  int64_t memory_bytes = 0;
  double cpus = 0;
  int64_t pids_limit = 0;
  scale::AutoscalerSpec scaler;  // min, max, metric, target, behaviour
  // Predictive autoscaling: the mode, the trust rules and the forecasters.
  scale::PredictiveSpec predictive;
  scale::EnsembleOptions forecast;
  absl::Duration retrain_every = absl::Hours(24);
  absl::Duration expected_startup = absl::Seconds(60);  // before a start was measured
  absl::Duration expected_service = absl::Seconds(1);   // before a run was measured
};

// A pool's config (from ServerConfig.pools) checked and turned into a spec; errors name
// the field ("pools[1].max: must be >= min (3)").
absl::StatusOr<PoolSpec> ToPoolSpec(const v1::PoolConfig& c, const std::string& field);

struct Member {
  int n = 0;
  pid_t pid = -1;  // the driver's handle: a process id (or a simulated agent's index)
  enum class State : uint8_t { kStarting, kIdle, kBusy, kDraining, kStopping };
  State state = State::kStarting;
  absl::Time spawned, registered, stop_sent;
  uint64_t agent = 0;
  int leased = 0;
  int64_t attempts = 0;
  absl::Time idle_since;
  bool engine_draining = false;  // the engine has applied the drain
  bool retiring = false;         // max_uses reached
  bool idle_stop = false;
  int capacity_class = -1;  // index into spec.classes
  double price = 0;         // per agent-hour
  // Health command: the one running (pid > 0), when the next is due, failures in a row.
  pid_t check_pid = -1;
  absl::Time check_started, next_check;
  int check_failures = 0;
};

// How members are started and stopped.
class MemberDriver {
 public:
  virtual ~MemberDriver() = default;
  // Starts member `m` (n, capacity class and price set; the driver sets pid). The agent
  // must register with the labels kPoolLabel=<pool> and kMemberLabel=<pool>/<n>.
  virtual absl::Status Start(const PoolSpec& spec, Member& m, absl::Time now) = 0;
  // Asks the member to stop: the agent hands back its running tasks and deregisters
  // (kill: at once, no questions).
  virtual void Stop(const PoolSpec& spec, Member& m, bool kill) = 0;
  // nullopt while the member runs; once it has exited, how ("status 1", "signal 9").
  virtual std::optional<std::string> Exited(const PoolSpec& spec, Member& m) = 0;
  // After Exited: what is left of it (a container, a cgroup) goes.
  virtual void Forget(const PoolSpec& /*spec*/, const Member& /*m*/) {}
  // The health command: start it for `m` (sets m.check_pid), and its result once done
  // (nullopt: still running). Kill stops a check that took too long.
  virtual absl::Status StartCheck(const PoolSpec& /*spec*/, Member& /*m*/) {
    return absl::UnimplementedError("no health commands here");
  }
  virtual std::optional<bool> CheckDone(Member& /*m*/) { return true; }
  virtual void KillCheck(Member& /*m*/) {}
};

// What a tick needs from the engine: member agents by member id ("pool/n", or
// "pool/external-<agent id>" for agents started by others) and runnable ready tasks by type.
struct AgentView {
  uint64_t agent = 0;
  int leased = 0;
  int64_t attempts = 0;
  bool draining = false;
  absl::Time idle_since;
  std::vector<core::AcquireSample> acquired;  // since the last observation
};
struct Observation {
  std::map<std::string, AgentView> agents;
  std::map<std::string, int64_t> pending;
  std::map<std::string, core::TypeLoad> load;  // per type, counters since the engine started
};
// On the engine's thread: drains `drain`, then reads what the pools of `types` need (and
// takes the agents' acquire samples).
Observation ObserveEngine(core::Engine& e, const std::vector<uint64_t>& drain,
                          const std::vector<std::string>& types);

class PoolController {
 public:
  explicit PoolController(MemberDriver& driver, double fleet_hourly_budget = 0);

  // A pool from the config file (fixed), or created or changed through the API (its
  // agents are kept; the autoscaler restarts with the new rules). Errors name the field.
  void AddFromConfig(PoolSpec spec);
  absl::Status Apply(const PoolSpec& spec, const v1::PoolConfig& config);
  // Removes an API pool: its agents drain and stop (`force`: stopped at once, their tasks
  // going back to the queue); the pool goes once they have.
  absl::Status Remove(const std::string& name, bool force, absl::Time now);
  // Stops one member ("pool/n"): drained (no new task; stopped once its last one ended)
  // or, with `force`, at once (its tasks go back to the queue). The pool replaces it if it
  // still wants that many agents. Errors name the member.
  absl::Status StopOne(const std::string& member, bool force, absl::Time now);
  bool FromConfig(const std::string& name) const;
  bool Exists(const std::string& name) const;  // and not being removed
  bool Known(const std::string& name) const;   // even being removed
  bool empty() const { return pools_.empty(); }
  // The pools defined through the API as a ServerConfig JSON with only `pools`.
  std::string ApiPoolsJson() const;
  std::vector<std::string> PoolNames() const;
  // Every type a pool serves (for ObserveEngine).
  std::vector<std::string> Types() const;

  // One round at `now` with what the engine reported. Agents to drain are appended to
  // `drain` (apply them with the next ObserveEngine).
  void Tick(absl::Time now, Observation& seen, std::vector<uint64_t>* drain);
  // When the next round has something to do even if nothing changes (a sync period, a
  // timeout, a backoff, a health check); InfiniteFuture when nothing.
  absl::Time NextDue() const;
  // Stops every member (shutdown), then waits for none: the caller reaps.
  void StopAll(bool kill);

  v1::ListPoolsResponse ListPools() const;
  absl::StatusOr<v1::ListScalingDecisionsResponse> Decisions(const std::string& pool,
                                                             int limit) const;
  // Per pool, a copy of its latency histograms (for metrics).
  struct Latencies {
    std::string pool;
    Histogram acquire_warm{Histogram::WaitBounds()};
    Histogram acquire_cold{Histogram::WaitBounds()};
    Histogram agent_start{Histogram::WaitBounds()};
  };
  std::vector<Latencies> AllLatencies() const;

  // Where the controller reports what it did unasked (crashes, failed starts); stderr by
  // default.
  void set_log(std::function<void(const std::string&)> log) { log_ = std::move(log); }
  // Each decision as it is made (the simulator counts actions).
  void set_on_decision(std::function<void(const std::string&, const scale::ScalingDecision&)> f) {
    on_decision_ = std::move(f);
  }
  // Events for the event log (docs/events.md): a pool's size changing (pool.scaled), an
  // agent started (pool.agent_started) or gone (pool.agent_exited). Called on the
  // controller's thread; must not block.
  void set_on_event(std::function<void(v1::Event)> f) { on_event_ = std::move(f); }
  // Load history: the minutes each pool closed since the last call (to be stored).
  std::vector<store::LoadMinute> TakeLoadRows();
  // Seeds a pool's history (from the store at start, or after an import): the rows replace
  // what the pool has for those minutes. Unknown pools are ignored.
  void SeedHistory(const std::string& pool, const std::vector<store::LoadMinute>& rows);
  // Forecasters are trained by `run`, which may run the job on another thread (drover
  // serve) or at once (the simulator: the default); the result is installed at the next
  // Tick after it finished.
  void set_fit_runner(std::function<void(std::function<void()>)> run) {
    fit_runner_ = std::move(run);
  }
  // The simulator's oracle: a forecast made from the truth instead of the forecasters.
  using ForecastOverride =
      std::function<std::optional<scale::Snapshot>(const std::string& pool, const scale::Series&)>;
  void set_forecast_override(ForecastOverride f) { forecast_override_ = std::move(f); }
  // Where trained models are kept (drover serve: <data dir>/models); empty: nowhere. A
  // pool's models are loaded from there when it first forecasts, saved after each training.
  void set_model_dir(std::string dir) { model_dir_ = std::move(dir); }
  std::string ModelPrefix(const std::string& pool) const { return model_dir_ + "/" + pool + "."; }
  // A pool's ensemble scores and latest forecast (nullptr: not forecasting).
  const scale::Ensemble* EnsembleOf(const std::string& pool) const;
  const scale::Series* SeriesOf(const std::string& pool) const;

  // Every pool's members (shutdown: the driver waits for them).
  template <typename F>
  void ForEachMember(F f) {
    for (Pool& p : pools_) {
      for (Member& m : p.members) f(p.spec, m);
    }
  }
  void ClearMembers() {
    for (Pool& p : pools_) p.members.clear();
  }

 private:
  struct Pool {
    PoolSpec spec;
    std::unique_ptr<scale::Autoscaler> scaler;
    std::vector<Member> members;
    int next_n = 1;
    int desired = 0;
    absl::Time next_sync;
    absl::Time next_start;  // crash backoff: no start before this
    absl::Duration backoff;
    int64_t pending = 0;
    int64_t started = 0, crashed = 0, retired = 0, idle_stopped = 0, unhealthy = 0, stopped = 0;
    double agent_seconds = 0;
    double spend = 0;
    Latencies latency;
    std::map<std::string, int64_t> by_rule;        // decisions so far, by rule
    std::deque<scale::ScalingDecision> decisions;  // newest last, at most 1000
    bool from_config = false;
    v1::PoolConfig config;  // as given (API pools: what is stored)
    bool removing = false;  // Remove(): desired 0 until its agents are gone, then erased
    absl::Time last_tick;
    // Load history and forecasting.
    int64_t open_minute = -1;   // Unix minute being counted
    core::TypeLoad base;        // counters at the open minute's start (types summed)
    int64_t open_arrivals = 0;  // arrivals in the open minute so far
    std::vector<float> minute_runs;
    scale::Series series;                 // closed minutes (arrivals; queue depth at their ends)
    std::vector<store::LoadMinute> rows;  // closed, not yet taken
    std::unique_ptr<scale::Ensemble> ensemble;
    scale::Snapshot oracle;  // set_forecast_override's latest
    bool have_oracle = false;
    double service_s = 0;  // learnt mean run time (exponentially weighted per minute)
    absl::Time next_fit, last_fit;
    struct FitSlot {
      std::mutex mu;
      bool done = false;
      absl::StatusOr<std::vector<std::unique_ptr<scale::Forecaster>>> members;
      int64_t minutes = 0;
      std::string save_error;
      std::unique_ptr<scale::Ensemble> warmed;  // first training: fitted and scored
    };
    bool models_loaded = false;
    std::shared_ptr<FitSlot> fitting;
    int64_t fallbacks = 0, fits = 0, disagreements = 0;
    std::map<std::string, int64_t> predictive_by;  // "up/high" ...
    double saved_agent_seconds = 0;
    std::deque<std::pair<absl::Time, int>> up_targets;  // predictive answers, for the hold
    std::string model_error;
  };
  void CloseMinutes(Pool& p, absl::Time now, const Observation& seen);
  void Forecast(Pool& p, absl::Time now);
  void Decide(Pool& p, absl::Time now, scale::ScalingDecision& d, const scale::ScalingInputs& in);
  const scale::Snapshot* Latest(const Pool& p) const;
  void FillForecast(const Pool& p, const scale::Snapshot& snap, v1::PoolForecast* out) const;
  Pool NewPool(const PoolSpec& spec);
  void Reap(Pool& p, absl::Time now);
  void Health(Pool& p, absl::Time now);
  void Reconcile(Pool& p, absl::Time now, std::vector<uint64_t>* drain);
  void StopMember(Pool& p, Member& m, absl::Time now);
  absl::Status Spawn(Pool& p, absl::Time now);
  static std::string StateName(Member::State s);
  // The cheapest class with room for one more agent (-1: none has room; with no classes, 0
  // means "the pool's price").
  static int PickClass(const Pool& p);
  // Agents the budget pays for, filling classes cheapest first.
  static int Affordable(const Pool& p, double budget);

  MemberDriver& driver_;
  double fleet_budget_ = 0;
  std::vector<Pool> pools_;
  std::vector<uint64_t> requested_drains_;  // StopOne: handed to the next Tick's `drain`
  std::function<void(const std::string&)> log_;
  std::function<void(const std::string&, const scale::ScalingDecision&)> on_decision_;
  std::function<void(v1::Event)> on_event_;
  void PoolEvent(const Pool& p, const char* type, std::string message,
                 std::initializer_list<std::pair<const char*, std::string>> attrs);
  std::function<void(std::function<void()>)> fit_runner_;
  ForecastOverride forecast_override_;
  std::string model_dir_;
};

}  // namespace drover::pool
