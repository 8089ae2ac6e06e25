#include "pool/pool_manager.h"

#include <filesystem>
#include <future>
#include <memory>

#include "absl/strings/str_cat.h"
#include "core/engine.h"
#include "fmt/core.h"

namespace drover::pool {
namespace {

constexpr absl::Duration kTick = absl::Milliseconds(250);

}  // namespace

PoolManager::PoolManager(std::vector<PoolSpec> pools, api::Runtime& runtime, std::string self,
                         std::string server, std::string log_dir, double fleet_hourly_budget)
    : runtime_(runtime),
      config_pools_(pools),
      driver_(std::move(self), std::move(server), std::move(log_dir)),
      controller_(driver_, fleet_hourly_budget) {
  for (PoolSpec& s : pools) controller_.AddFromConfig(std::move(s));
  controller_.set_on_event([this](v1::Event e) { runtime_.AppendEvent(std::move(e)); });
}

PoolManager::~PoolManager() { Stop(); }

absl::Status PoolManager::Start() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (size_t i = 0; i < config_pools_.size(); ++i) {
      if (absl::Status st = driver_.Prepare(config_pools_[i], absl::StrCat("pools[", i, "]"));
          !st.ok()) {
        return st;
      }
    }
  }
  if (!model_dir_.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(model_dir_, ec);
    if (ec) {
      return absl::FailedPreconditionError(
          absl::StrCat("models directory ", model_dir_, ": ", ec.message()));
    }
    controller_.set_model_dir(model_dir_);
  }
  controller_.set_fit_runner([this](std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lk(train_mu_);
      train_jobs_.push_back(std::move(job));
    }
    train_cv_.notify_one();
  });
  trainer_ = std::thread([this] { Train(); });
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void PoolManager::Train() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lk(train_mu_);
      train_cv_.wait(lk, [this] { return stop_.load() || !train_jobs_.empty(); });
      if (stop_) return;
      job = std::move(train_jobs_.front());
      train_jobs_.pop_front();
    }
    job();  // (a job still running at Stop is waited for: it owns all it touches)
  }
}

void PoolManager::Reseed(const std::string& pool) {
  std::lock_guard<std::mutex> lk(mu_);
  seeded_.erase(pool);
}

void PoolManager::Seed(absl::Time now) {
  // (mu_ held) Rows read earlier go in first; then pools not yet read are asked for.
  for (auto& [pool, rows] : seeds_) controller_.SeedHistory(pool, rows);
  seeds_.clear();
  const int64_t until = absl::ToUnixSeconds(now) / 60;
  const int64_t since = std::max(runtime_.FirstKeptLoadMinute(now), until - 35 * 1440);
  for (const std::string& name : controller_.PoolNames()) {
    if (seeded_.contains(name)) continue;
    seeded_.insert(name);
    const bool asked = runtime_.ReadLoadHistory(
        name, since, until, 0,
        [this, name](api::Runtime::LoadRows rows) {
          if (!rows.ok() || rows->empty()) return;
          std::lock_guard<std::mutex> lk(mu_);
          seeds_[name] = std::move(*rows);
        },
        api::Runtime::kControl);
    if (!asked) seeded_.erase(name);  // the queue was full: again next tick
  }
}

void PoolManager::Stop() {
  if (!thread_.joinable()) return;
  stop_ = true;
  wake_.notify_all();
  thread_.join();
  train_cv_.notify_all();
  if (trainer_.joinable()) trainer_.join();
  std::lock_guard<std::mutex> lk(mu_);
  driver_.StopAll(controller_);
}

absl::Status PoolManager::Apply(const PoolSpec& spec, const v1::PoolConfig& config) {
  std::lock_guard<std::mutex> lk(mu_);
  // A new pool gets its directory (and stale containers go); a changed one keeps them.
  absl::Status st = controller_.Known(spec.name) ? driver_.CheckLimits(spec, "pool")
                                                 : driver_.Prepare(spec, "pool");
  if (!st.ok()) return st;
  const bool known = controller_.Known(spec.name);
  st = controller_.Apply(spec, config);
  if (st.ok())
    ConfigEvent(spec.name, known ? "changed through the API" : "created through the API");
  return st;
}

void PoolManager::ConfigEvent(const std::string& pool, const std::string& what) {
  v1::Event e;
  e.set_type("config.pool");
  e.set_pool(pool);
  e.set_message(absl::StrCat("pool ", pool, " ", what));
  runtime_.AppendEvent(std::move(e));
}

absl::Status PoolManager::Remove(const std::string& name, bool force) {
  std::lock_guard<std::mutex> lk(mu_);
  absl::Status st = controller_.Remove(name, force, absl::Now());
  if (st.ok())
    ConfigEvent(name, force ? "removed through the API (agents stopped at once)"
                            : "removed through the API (agents drain)");
  return st;
}

absl::Status PoolManager::StopMember(const std::string& member, bool force) {
  std::lock_guard<std::mutex> lk(mu_);
  return controller_.StopOne(member, force, absl::Now());
}

bool PoolManager::FromConfig(const std::string& name) const {
  std::lock_guard<std::mutex> lk(mu_);
  return controller_.FromConfig(name);
}

bool PoolManager::Exists(const std::string& name) const {
  std::lock_guard<std::mutex> lk(mu_);
  return controller_.Exists(name);
}

std::string PoolManager::ApiPoolsJson() const {
  std::lock_guard<std::mutex> lk(mu_);
  return controller_.ApiPoolsJson();
}

v1::ListPoolsResponse PoolManager::ListPools() const {
  std::lock_guard<std::mutex> lk(mu_);
  return controller_.ListPools();
}

absl::StatusOr<v1::ListScalingDecisionsResponse> PoolManager::Decisions(const std::string& pool,
                                                                        int limit) const {
  std::lock_guard<std::mutex> lk(mu_);
  return controller_.Decisions(pool, limit);
}

std::vector<PoolController::Latencies> PoolManager::Latencies() const {
  std::lock_guard<std::mutex> lk(mu_);
  return controller_.AllLatencies();
}

void PoolManager::Loop() {
  while (!stop_) {
    Tick(absl::Now());
    std::unique_lock<std::mutex> lk(wake_mu_);
    wake_.wait_for(lk, absl::ToChronoNanoseconds(kTick), [this] { return stop_.load(); });
  }
}

void PoolManager::Tick(absl::Time now) {
  std::vector<uint64_t> drain;
  std::vector<std::string> types;
  {
    std::lock_guard<std::mutex> lk(mu_);
    driver_.Poll();
    if (controller_.empty()) return;  // nothing to watch: no engine command
    drain.swap(pending_drains_);
    types = controller_.Types();
    Seed(now);
  }
  // Read the engine on its thread. (Shared with the command: if the runtime stops before
  // running it, nothing dangles.)
  struct Result {
    std::promise<void> done;
    Observation seen;
  };
  auto result = std::make_shared<Result>();
  std::future<void> ready = result->done.get_future();
  const bool posted = runtime_.Post(
      [result, drain, types](core::Engine& e, api::Batch&) {
        result->seen = ObserveEngine(e, drain, types);
        result->done.set_value();
      },
      api::Runtime::kControl);
  if (!posted || ready.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
    std::lock_guard<std::mutex> lk(mu_);
    pending_drains_.insert(pending_drains_.end(), drain.begin(), drain.end());
    return;
  }
  std::vector<store::LoadMinute> rows;
  {
    std::lock_guard<std::mutex> lk(mu_);
    controller_.Tick(now, result->seen, &pending_drains_);
    rows = controller_.TakeLoadRows();
  }
  if (!rows.empty()) {
    if (absl::Status st = runtime_.AppendLoadHistory(std::move(rows)); !st.ok()) {
      fmt::print(stderr, "drover: pools: load history not stored: {}\n", std::string(st.message()));
    }
  }
}

}  // namespace drover::pool
