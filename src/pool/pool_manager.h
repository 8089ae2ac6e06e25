// pool: agent pools drover runs itself. For each pool the manager keeps between min and
// max `drover agent` processes (the process runtime), sized by the reactive autoscaler
// (core/autoscaler.h) from the pool's pending tasks or utilisation:
//
//   - warm-up: `min` agents are started at once;
//   - scale-in drains: the engine stops giving the agent work (Engine::DrainAgent), and the
//     process is stopped once its last task ended; starting and idle agents go first;
//   - max uses: an agent that ran that many attempts is drained and replaced;
//   - idle timeout: an agent idle that long is stopped, never below `min`;
//   - start timeout: an agent that has not registered by then is killed and replaced;
//   - crashes: an agent process that exits unasked is replaced after a backoff that
//     doubles (from restart_backoff to 60 s) while starts keep failing.
//
// Each agent is a child process group (setsid) running `drover agent --label
// drover.pool=<pool> --label drover.member=<pool>/<n> -- <command>`, stdout and stderr to
// <log_dir>/<pool>/<n>.log, with the pool's setrlimit limits. The manager matches engine
// agents to members by that label.
//
// Threading: one thread of its own (Start/Stop); it reads and changes engine state only
// through Runtime::Post. ListPools/Decisions are thread-safe.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "api/runtime.h"
#include "core/autoscaler.h"
#include "drover/v1/config.pb.h"
#include "drover/v1/drover.pb.h"

namespace drover::pool {

namespace v1 = ::drover::v1;

struct PoolSpec {
  std::string name;
  std::vector<std::string> types;
  std::vector<std::string> command;
  int concurrency = 1;
  absl::Duration idle_timeout = absl::ZeroDuration();  // zero: never
  int64_t max_uses = 0;                                // 0: never
  absl::Duration start_timeout = absl::Seconds(60);
  absl::Duration restart_backoff = absl::Seconds(1);
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
  // The container runtime (runtime "container"); empty image and rootfs: the process runtime.
  // kExternal: agents are started by something else (Kubernetes, a person) with the label
  // drover.pool=<name>; drover only decides and publishes the size it wants.
  enum class Runtime : uint8_t { kProcess, kContainer, kExternal };
  Runtime runtime = Runtime::kProcess;
  std::string image, rootfs;
  std::vector<std::string> container_engine = {"podman"};
  std::vector<std::string> container_run_args;
  int64_t memory_bytes = 0;
  double cpus = 0;
  int64_t pids_limit = 0;
  core::AutoscalerSpec scaler;  // min, max, metric, target, behaviour
};

class PoolManager {
 public:
  // `self` is the drover binary (for `drover agent`), `server` the gRPC address agents
  // connect to.
  PoolManager(std::vector<PoolSpec> pools, api::Runtime& runtime, std::string self,
              std::string server, std::string log_dir, double fleet_hourly_budget = 0);
  ~PoolManager();

  absl::Status Start();
  // Stops every agent (SIGTERM to its process group: `drover agent` hands its running
  // tasks back and deregisters; SIGKILL after 10 s) and the manager's thread.
  void Stop();

  // Pools defined through the API (the config file's are fixed): create or change one (its
  // agents are kept; the autoscaler restarts with the new rules), or remove one (its agents
  // drain and stop; `force` stops them at once, their tasks going back to the queue).
  // Errors name the field; a config-file pool cannot be changed or removed.
  absl::Status Apply(const PoolSpec& spec, const v1::PoolConfig& config);
  absl::Status Remove(const std::string& name, bool force);
  bool FromConfig(const std::string& name) const;
  bool Exists(const std::string& name) const;
  // The pools defined through the API, as stored (store meta "pools"): a ServerConfig
  // JSON with only `pools`.
  std::string ApiPoolsJson() const;

  v1::ListPoolsResponse ListPools() const;
  absl::StatusOr<v1::ListScalingDecisionsResponse> Decisions(const std::string& pool,
                                                             int limit) const;

 private:
  struct Member {
    int n = 0;
    pid_t pid = -1;
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
  };
  struct Pool {
    PoolSpec spec;
    std::unique_ptr<core::Autoscaler> scaler;
    std::vector<Member> members;
    int next_n = 1;
    int desired = 0;
    absl::Time next_sync;
    absl::Time next_start;  // crash backoff: no start before this
    absl::Duration backoff;
    int64_t pending = 0;
    int64_t started = 0, crashed = 0, retired = 0, idle_stopped = 0;
    double cold_start_ms_sum = 0;
    int64_t cold_starts = 0;
    double agent_seconds = 0;
    double spend = 0;
    std::map<std::string, int64_t> by_rule;       // decisions so far, by rule
    std::deque<core::ScalingDecision> decisions;  // newest last, at most 1000
    bool from_config = false;
    v1::PoolConfig config;  // as given (API pools: what is stored)
    bool removing = false;  // Remove(): desired 0 until its agents are gone, then erased
  };
  // What the engine thread reports about one registered member agent.
  struct AgentView {
    uint64_t agent = 0;
    int leased = 0;
    int64_t attempts = 0;
    bool draining = false;
    absl::Time idle_since;
  };

  void Loop();
  void Tick(absl::Time now);
  // Reads the engine (members' agents, pending tasks) and drains `drain`; false when the
  // runtime is stopping.
  bool Observe(const std::vector<uint64_t>& drain, std::map<std::string, AgentView>* agents,
               std::map<std::string, int64_t>* pending);
  void Reconcile(Pool& p, absl::Time now, std::vector<uint64_t>* drain);
  absl::Status Spawn(Pool& p, absl::Time now);
  void Signal(Member& m, int sig);
  void Reap(Pool& p, absl::Time now);
  // Container runtime: the member's container name, and its removal (in the background,
  // or waited for at shutdown).
  std::string ContainerName(const Pool& p, const Member& m) const;
  void RemoveContainer(const Pool& p, const Member& m, bool wait);
  void RemoveStaleContainers(const Pool& p);
  static std::string StateName(Member::State s);
  // The cheapest class with room for one more agent (-1: none has room; with no classes, 0
  // means "the pool's price").
  static int PickClass(const Pool& p);
  // Agents the budget pays for, filling classes cheapest first.
  static int Affordable(const Pool& p, double budget);

  api::Runtime& runtime_;
  std::string self_, server_, log_dir_;
  mutable std::mutex mu_;  // guards pools_ (the loop holds it while it changes them)
  std::vector<Pool> pools_;
  std::vector<uint64_t> pending_drains_;
  std::vector<pid_t> cleanups_;  // background `rm -f` of containers, reaped each tick
  std::thread thread_;
  std::mutex wake_mu_;
  std::condition_variable wake_;
  std::atomic<bool> stop_{false};
  absl::Time last_tick_;
  double fleet_budget_ = 0;
};

// A pool's config (from ServerConfig.pools) checked and turned into a spec; errors name
// the field ("pools[1].max: must be >= min (3)").
absl::StatusOr<PoolSpec> ToPoolSpec(const v1::PoolConfig& c, const std::string& field);

}  // namespace drover::pool
