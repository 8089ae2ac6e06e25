// pool: agent pools drover runs itself (docs/pools.md). The PoolManager runs the pools'
// controller (pool/controller.h: sizing, draining, retirement, health, crashes) on a thread
// of its own every 250 ms, with members as real processes or containers
// (pool/drivers.h), and reads and changes engine state only through Runtime::Post.
//
// Threading: Start/Stop from the owner; the other methods are thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "api/runtime.h"
#include "pool/controller.h"
#include "pool/drivers.h"

namespace drover::pool {

class PoolManager {
 public:
  // `self` is the drover binary (for `drover agent`), `server` the gRPC address agents
  // connect to, `log_dir` where members' logs and work directories go.
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
  // One member ("pool/n"): drained, or stopped at once with `force`.
  absl::Status StopMember(const std::string& member, bool force);
  bool FromConfig(const std::string& name) const;
  bool Exists(const std::string& name) const;
  // The pools defined through the API, as stored (store meta "pools"): a ServerConfig
  // JSON with only `pools`.
  std::string ApiPoolsJson() const;

  v1::ListPoolsResponse ListPools() const;
  absl::StatusOr<v1::ListScalingDecisionsResponse> Decisions(const std::string& pool,
                                                             int limit) const;
  std::vector<PoolController::Latencies> Latencies() const;

  // Predictive autoscaling: trained models are kept in `dir` (created if missing); set
  // before Start.
  void set_model_dir(std::string dir) { model_dir_ = std::move(dir); }
  // Before Start: pool agents' environment (ProcessDriver::set_agent_env).
  void set_agent_env(std::vector<std::string> env) { driver_.set_agent_env(std::move(env)); }
  // The pool's history changed in the store (an import): read it again.
  void Reseed(const std::string& pool);

 private:
  void Loop();
  void Tick(absl::Time now);
  // A config.pool event: a pool defined, changed or removed through the API.
  void ConfigEvent(const std::string& pool, const std::string& what);

  api::Runtime& runtime_;
  std::vector<PoolSpec> config_pools_;
  mutable std::mutex mu_;  // guards driver_, controller_ and pending_drains_
  ProcessDriver driver_;
  PoolController controller_;
  std::vector<uint64_t> pending_drains_;
  std::thread thread_;
  std::mutex wake_mu_;
  std::condition_variable wake_;
  std::atomic<bool> stop_{false};
  // Load history: pools whose stored history was read (or is being read), and rows read
  // that wait for the next tick.
  std::set<std::string> seeded_;
  std::map<std::string, std::vector<store::LoadMinute>> seeds_;
  void Seed(absl::Time now);
  // Training runs here, one job at a time, never on the manager's or the engine's thread.
  std::string model_dir_;
  std::thread trainer_;
  std::mutex train_mu_;
  std::condition_variable train_cv_;
  std::deque<std::function<void()>> train_jobs_;
  void Train();
};

}  // namespace drover::pool
