#include "sim/simulator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <limits>
#include <queue>
#include <random>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/engine.h"
#include "fmt/core.h"
#include "pool/controller.h"
#include "scale/members.h"
#include "util/clock.h"
#include "util/file.h"

namespace drover::sim {
namespace {

namespace v1 = ::drover::v1;
using core::AgentId;
using core::TaskId;

constexpr char kType[] = "sim";
constexpr int64_t kUs = 1'000'000;

int64_t Us(absl::Duration d) { return absl::ToInt64Microseconds(d); }

// Nearest-rank quantile of an unsorted sample (the sample is reordered).
double Quantile(std::vector<float>& v, double q) {
  if (v.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  rank = std::clamp<size_t>(rank, 1, v.size());
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(rank - 1), v.end());
  return v[rank - 1];
}

enum class Ev : uint8_t {
  kBucket,
  kArrival,
  kDone,
  kAgentReady,
  kPool,
  kMinute,
  kTick,
  kInterrupt
};

struct Event {
  int64_t t;  // microseconds since the trace's start
  uint64_t seq;
  Ev kind;
  uint64_t a = 0, b = 0, c = 0;  // arguments: task, token, agent, ...
  bool fail = false;
  bool operator>(const Event& o) const { return t != o.t ? t > o.t : seq > o.seq; }
};

// A pool member as the simulation plays it: started by the pool controller, registered in
// the engine after the start-up delay, gone when stopped or reclaimed.
struct SimAgent {
  enum class State : uint8_t { kStarting, kActive, kGone };
  State state = State::kStarting;
  double price = 0;
  int member = 0;  // the pool's member number
  AgentId id = 0;  // engine id once active
  int leased = 0;
  bool interrupted = false;
};

// One policy's run. The pool is the real pool::PoolController (sizing, warm-up, drains,
// crash replacement, capacity classes) with this class as its member driver.
class Run1 : public pool::MemberDriver {
 public:
  Run1(const Trace& trace, const SimConfig& config, const Policy& policy)
      : trace_(trace),
        config_(config),
        policy_(policy),
        clock_(kStart),
        rng_(config.seed),
        engine_(EngineOptions(config), clock_),
        pools_(*this) {}

  absl::StatusOr<SimReport> Go();

  // --- pool::MemberDriver ----------------------------------------------------------------
  absl::Status Start(const pool::PoolSpec&, pool::Member& m, absl::Time) override {
    agents_.emplace_back();
    SimAgent& a = agents_.back();
    a.price = m.price;
    a.member = m.n;
    m.pid = static_cast<pid_t>(agents_.size() - 1);
    paid_++;
    paid_price_ += a.price;
    peak_ = std::max(peak_, paid_);
    if (m.capacity_class >= 0) {
      const double rate =
          config_.classes[static_cast<size_t>(m.capacity_class)].interruptions_per_hour;
      if (rate > 0) {
        const double hours = std::exponential_distribution<double>(rate)(rng_);
        Push(now_ + static_cast<int64_t>(std::min(hours * 3600.0, 1e9) * kUs), Ev::kInterrupt,
             agents_.size() - 1);
      }
    }
    // The pool is warm when the trace begins: agents started then are ready at once.
    if (now_ == 0) {
      activate_now_.push_back(agents_.size() - 1);
    } else {
      Push(now_ + Us(config_.startup), Ev::kAgentReady, agents_.size() - 1);
    }
    return absl::OkStatus();
  }
  // (kill or not: a simulated agent hands its tasks back at once either way.)
  void Stop(const pool::PoolSpec&, pool::Member& m, bool) override {
    Leave(agents_[static_cast<size_t>(m.pid)]);
  }
  std::optional<std::string> Exited(const pool::PoolSpec&, pool::Member& m) override {
    const SimAgent& a = agents_[static_cast<size_t>(m.pid)];
    if (a.state != SimAgent::State::kGone) return std::nullopt;
    return a.interrupted ? "interrupted" : "stopped";
  }

 private:
  // A Monday, 00:00 UTC: the trace's minute 0 is the start of a day and of a week.
  static constexpr absl::Time kStart = absl::FromUnixSeconds(1'699'833'600);
  static constexpr char kPoolName[] = "sim";

  static core::EngineOptions EngineOptions(const SimConfig& c) {
    core::EngineOptions o;
    o.capacity = c.capacity;
    o.lease_ttl = absl::Hours(24);  // simulated agents never go silent
    o.defaults.execution_timeout = absl::Hours(24);
    o.defaults.retry = {absl::Seconds(1), absl::Minutes(1), 10};
    o.terminal_retention = absl::Hours(24 * 365);  // leave by count only
    o.max_terminal_in_memory = 20'000;
    o.breaker_failures = 0;  // simulated failures are the task's, at random
    o.preempt_after = absl::ZeroDuration();
    o.persist_costs = false;
    o.seed = c.seed;
    return o;
  }
  // The pool the policy stands for: static sizes are min = max.
  pool::PoolSpec Spec(int agents) const {
    pool::PoolSpec s;
    s.name = kPoolName;
    s.types = {kType};
    s.command = {"(simulated)"};
    s.concurrency = config_.slots;
    s.start_timeout = std::max(absl::Seconds(60), config_.startup * 2);
    s.price_per_agent_hour = config_.price_per_agent_hour;
    for (const CapacityClass& k : config_.classes) {
      s.classes.push_back({k.name, k.price_per_agent_hour, k.interruptions_per_hour, k.max_agents});
    }
    if (policy_.kind == Policy::Kind::kReactive || policy_.kind == Policy::Kind::kForecast) {
      s.scaler = policy_.scaler;
    } else {
      s.scaler.min = s.scaler.max = agents;
    }
    if (policy_.kind == Policy::Kind::kForecast) {
      s.predictive.mode = policy_.mode;
      s.predictive.objective_s = absl::ToDoubleSeconds(config_.wait_objective);
      if (!policy_.models.empty()) s.forecast.members = policy_.models;
      if (policy_.model != "ensemble") s.forecast.members = {policy_.model};
      s.forecast.use = policy_.model;
      s.forecast.seed = config_.seed;
      s.forecast.parallel_fit = true;  // the virtual clock waits for the training anyway
      if (policy_.oracle) s.forecast.members = {"seasonal_naive"};  // (unused: the truth)
    }
    return s;
  }

  void Push(int64_t t, Ev kind, uint64_t a = 0, uint64_t b = 0, uint64_t c = 0, bool fail = false) {
    events_.push(Event{t, seq_++, kind, a, b, c, fail});
  }
  // Integrates paid agent time and busy slot time up to `t`.
  void AdvanceTo(int64_t t) {
    // The judged window starts at judge_us_: the totals count from there on (the per-minute
    // rows always).
    if (now_ < judge_us_ && t > judge_us_) AdvanceTo(judge_us_);
    if (t > now_) {
      const double dt = static_cast<double>(t - now_) / kUs;
      minute_agent_seconds_ += dt * paid_;
      if (now_ >= judge_us_) {
        agent_seconds_ += dt * paid_;
        cost_ += dt * paid_price_ / 3600.0;
        busy_slot_seconds_ += dt * busy_;
      }
      now_ = t;
    }
    clock_.Set(kStart + absl::Microseconds(now_));
  }
  int64_t ServiceUs() {
    const double s = SampleSeconds(config_.service, rng_);
    return std::max<int64_t>(1, static_cast<int64_t>(s * kUs));
  }
  // An agent stops (asked, or reclaimed): its running tasks go back to the queue
  // (uncounted), their completions still in the event queue are dropped.
  void Leave(SimAgent& a) {
    if (a.state == SimAgent::State::kGone) return;
    if (a.state == SimAgent::State::kActive) {
      busy_ -= a.leased;
      a.leased = 0;
      (void)engine_.Deregister(a.id);
    }
    a.state = SimAgent::State::kGone;
    paid_--;
    paid_price_ -= a.price;
    PoolSoon();
  }
  void Activate(size_t index) {
    SimAgent& a = agents_[index];
    if (a.state != SimAgent::State::kStarting) return;  // stopped while starting
    v1::RegisterAgentRequest req;
    req.add_types(kType);
    req.set_max_concurrency(config_.slots);
    (*req.mutable_labels())[pool::kPoolLabel] = kPoolName;
    (*req.mutable_labels())[pool::kMemberLabel] = absl::StrCat(kPoolName, "/", a.member);
    absl::StatusOr<AgentId> id = engine_.RegisterAgent(req);
    a.id = *id;
    a.state = SimAgent::State::kActive;
    by_engine_id_[a.id] = index;
    (void)engine_.OpenStream(a.id);
    PoolSoon();  // the controller notes the registration (its start time)
    Drain();
  }
  // A controller round now (coalesced), e.g. when a member registered or stopped.
  void PoolSoon() { SchedulePool(now_); }
  void SchedulePool(int64_t t) {
    if (t < next_pool_) {
      next_pool_ = t;
      Push(t, Ev::kPool);
    }
  }
  void PoolRound() {
    engine_.Tick();
    pool::Observation seen = pool::ObserveEngine(engine_, drains_, types_);
    drains_.clear();
    pools_.Tick(clock_.Now(), seen, &drains_);
    for (size_t i : std::exchange(activate_now_, {})) Activate(i);
    // Drains reach the engine with the next round's observation: at once, so an idle
    // drained agent stops now.
    if (!drains_.empty()) SchedulePool(now_ + 1);
    const absl::Time due = pools_.NextDue();
    if (due != absl::InfiniteFuture()) SchedulePool(std::max(now_ + 1, Us(due - kStart)));
    Drain();
  }
  // Takes the engine's outbox: leases become completions in the future.
  void Drain() {
    core::Outbox out = engine_.TakeOutbox();
    for (core::Outbox::Push& p : out.pushes) {
      if (!p.item.has_lease()) continue;
      const v1::TaskLease& l = p.item.lease();
      auto it = by_engine_id_.find(p.agent);
      if (it == by_engine_id_.end()) continue;
      agents_[it->second].leased++;
      busy_++;
      const TaskId id = l.task_id();
      if (l.attempt() == 1 && id < arrival_us_.size()) {
        const float wait = static_cast<float>(static_cast<double>(now_ - arrival_us_[id]) / kUs);
        if (arrival_us_[id] >= judge_us_) waits_.push_back(wait);
        minute_waits_.push_back(wait);
        dispatched_once_[id] = true;
        minute_dispatched_++;
      }
      const bool fail = config_.failure_rate > 0 &&
                        std::uniform_real_distribution<double>(0, 1)(rng_) < config_.failure_rate;
      Push(now_ + ServiceUs(), Ev::kDone, id, l.lease_token(), it->second, fail);
    }
    completed_ += static_cast<int64_t>(out.terminal.size());
    ScheduleTick();
  }
  void ScheduleTick() {
    std::optional<absl::Time> w = engine_.NextWakeup();
    if (!w) return;
    const int64_t t = std::max(now_ + 1, Us(*w - kStart));
    if (t < next_tick_) {
      next_tick_ = t;
      Push(t, Ev::kTick);
    }
  }
  void Submit() {
    v1::TaskSpec spec;
    spec.set_type(kType);
    absl::StatusOr<std::vector<core::Engine::SubmitResult>> r = engine_.Submit({spec}, "task");
    if (!r.ok()) {
      dropped_++;
      return;
    }
    const TaskId id = r->front().id;
    if (arrival_us_.size() <= id) {
      arrival_us_.resize(id + 1, 0);
      dispatched_once_.resize(id + 1, false);
    }
    arrival_us_[id] = now_;
    waiting_.push_back(id);
    Drain();
  }
  void CloseMinute(int64_t minute) {
    MinuteRow row;
    row.minute = minute;
    row.arrivals = minute_arrivals_;
    row.agents = minute_agent_seconds_ / 60.0;
    row.queue_depth = engine_.CountInState(v1::TASK_STATE_READY);
    row.dispatched = minute_dispatched_;
    row.p95_wait_s = Quantile(minute_waits_, 0.95);
    // The oldest task not yet started also counts: a stuck queue violates the objective.
    while (!waiting_.empty() && dispatched_once_[waiting_.front()]) waiting_.pop_front();
    double oldest = 0;
    if (!waiting_.empty()) {
      oldest = static_cast<double>(now_ - arrival_us_[waiting_.front()]) / kUs;
      // (a task refused later or canceled never waits: dropped ones are never queued)
    }
    const double objective = absl::ToDoubleSeconds(config_.wait_objective);
    row.violated = row.p95_wait_s > objective || oldest > objective;
    if (minute < static_cast<int64_t>(band_.size()) &&
        band_[static_cast<size_t>(minute)].p90 >= 0) {
      const Band& b = band_[static_cast<size_t>(minute)];
      row.forecast_p10 = b.p10;
      row.forecast_p50 = b.p50;
      row.forecast_p90 = b.p90;
    }
    // The forecast made now for 15 minutes ahead, kept for its minute.
    if (const scale::Ensemble* e = pools_.EnsembleOf(kPoolName);
        e != nullptr && e->latest().origin >= 0 && e->latest().forecast.minutes.size() >= 15) {
      const scale::Quantiles& q = e->latest().forecast.minutes[14];
      const size_t at = static_cast<size_t>(minute + 15);
      if (band_.size() <= at) band_.resize(at + 1);
      band_[at] = {q.p10, q.p50, q.p90};
    }
    rows_.push_back(row);
    minute_arrivals_ = 0;
    minute_agent_seconds_ = 0;
    minute_dispatched_ = 0;
    minute_waits_.clear();
  }
  // Counts scaling actions (a decision that changes the size) and flaps (a reversal within
  // 10 minutes of the previous action).
  void OnDecision(const scale::ScalingDecision& d) {
    if (now_ < judge_us_) return;
    if (d.predictive) {
      decisions_++;
      fallbacks_ += d.predictive->fallback;
      disagreements_ += d.predictive->predictive != d.predictive->reactive;
    }
    if (d.desired == d.current) return;
    const int direction = d.desired > d.current ? 1 : -1;
    actions_++;
    if (last_direction_ != 0 && direction != last_direction_ &&
        now_ - last_action_ <= 10 * 60 * kUs) {
      flaps_++;
    }
    last_direction_ = direction;
    last_action_ = now_;
  }

  const Trace& trace_;
  const SimConfig& config_;
  const Policy& policy_;
  ManualClock clock_;
  std::mt19937_64 rng_;
  core::Engine engine_;
  pool::PoolController pools_;
  std::vector<std::string> types_ = {kType};
  std::vector<uint64_t> drains_;
  std::vector<size_t> activate_now_;
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events_;
  uint64_t seq_ = 0;
  int64_t now_ = 0;
  int64_t next_tick_ = std::numeric_limits<int64_t>::max();
  int64_t next_pool_ = std::numeric_limits<int64_t>::max();
  std::vector<SimAgent> agents_;
  absl::flat_hash_map<AgentId, size_t> by_engine_id_;
  int paid_ = 0;           // agents paid for now: starting, active, draining
  double paid_price_ = 0;  // their prices per hour, summed
  double cost_ = 0;
  int64_t interruptions_ = 0;
  int busy_ = 0;  // slots running a task now
  double agent_seconds_ = 0, busy_slot_seconds_ = 0, minute_agent_seconds_ = 0;
  std::vector<int64_t> arrival_us_;
  std::vector<bool> dispatched_once_;
  std::deque<TaskId> waiting_;
  std::vector<float> waits_, minute_waits_;
  int64_t minute_arrivals_ = 0, minute_dispatched_ = 0;
  int64_t completed_ = 0, dropped_ = 0, arrivals_ = 0;
  int64_t actions_ = 0, flaps_ = 0, last_action_ = 0;
  int last_direction_ = 0;
  int peak_ = 0;
  std::vector<MinuteRow> rows_;
  int64_t judge_us_ = 0;
  int64_t decisions_ = 0, fallbacks_ = 0, disagreements_ = 0;
  struct Band {
    double p10 = -1, p50 = -1, p90 = -1;
  };
  std::vector<Band> band_;
  std::vector<int64_t> per_minute_;  // the trace's arrivals per minute (the oracle's truth)
};

absl::StatusOr<SimReport> Run1::Go() {
  const auto wall = std::chrono::steady_clock::now();
  const int64_t span = Us(trace_.span());
  const double mean_s = absl::ToDoubleSeconds(config_.service.mean);
  const double bucket_s = absl::ToDoubleSeconds(trace_.bucket);
  int agents = 0;
  switch (policy_.kind) {
    case Policy::Kind::kStatic:
      agents = policy_.agents;
      break;
    case Policy::Kind::kStaticPeak:
      // Enough slots for the peak bucket's rate of work.
      agents = static_cast<int>(
          std::ceil(static_cast<double>(trace_.peak()) / bucket_s * mean_s / config_.slots));
      break;
    case Policy::Kind::kStaticMean:
      agents = static_cast<int>(std::ceil(static_cast<double>(trace_.total()) /
                                          absl::ToDoubleSeconds(trace_.span()) * mean_s /
                                          config_.slots));
      break;
    case Policy::Kind::kReactive:
    case Policy::Kind::kForecast:
      break;
  }
  judge_us_ = std::min(span, Us(config_.judge_after));
  if (policy_.oracle) {
    per_minute_ = PerMinute(trace_);
    const int64_t first_minute = absl::ToUnixSeconds(kStart) / 60;
    pools_.set_forecast_override(
        [this, first_minute](const std::string&,
                             const scale::Series& s) -> std::optional<scale::Snapshot> {
          // The series' next minute as a minute of the trace (history seeded before counts
          // negative).
          const int64_t unix_minute0 = s.start_minute - 3 * scale::kMinutesPerDay;
          const int64_t next = unix_minute0 + static_cast<int64_t>(s.size()) - first_minute;
          scale::Snapshot snap;
          snap.origin = static_cast<int64_t>(s.size());
          snap.forecast.model = "oracle";
          snap.forecast.minutes.resize(scale::kMaxHorizon);
          const int64_t n = static_cast<int64_t>(per_minute_.size());
          for (int h = 1; h <= scale::kMaxHorizon; ++h) {
            // The true rate: the 5-minute mean of the arrivals around that minute.
            const int64_t m = next + h - 1;
            double sum = 0;
            int k = 0;
            for (int64_t j = m - 2; j <= m + 2; ++j) {
              if (j < 0 || j >= n) continue;
              sum += static_cast<double>(per_minute_[static_cast<size_t>(j)]);
              ++k;
            }
            const double rate = k > 0 ? sum / k : 0;
            snap.forecast.minutes[static_cast<size_t>(h - 1)] = {rate, rate, rate, rate};
          }
          snap.confidence.fill(1);
          return snap;
        });
  }
  agents = std::clamp(agents, 1, 100'000);
  pools_.set_log([](const std::string&) {});  // interruptions are counted, not logged
  pools_.set_on_decision(
      [this](const std::string&, const scale::ScalingDecision& d) { OnDecision(d); });
  pools_.AddFromConfig(Spec(agents));
  if (!config_.history.empty()) {
    // The minutes before the trace, ending just before its first.
    const int64_t first_minute = absl::ToUnixSeconds(kStart) / 60;
    std::vector<store::LoadMinute> rows;
    const int64_t n = static_cast<int64_t>(config_.history.size());
    for (int64_t i = 0; i < n; ++i) {
      store::LoadMinute r;
      r.pool = kPoolName;
      r.minute = first_minute - n + i;
      r.arrivals = config_.history[static_cast<size_t>(i)];
      rows.push_back(std::move(r));
    }
    pools_.SeedHistory(kPoolName, rows);
  }
  // The first round at 0 warms the pool up (its `min` agents, ready at once).
  Push(0, Ev::kPool);
  next_pool_ = 0;
  Push(0, Ev::kBucket, 0);
  for (int64_t m = 1; m * 60 * kUs <= span; ++m) Push(m * 60 * kUs, Ev::kMinute, m - 1);
  while (!events_.empty()) {
    const Event e = events_.top();
    events_.pop();
    // After the trace, run until every accepted task has ended.
    if (e.t >= span && engine_.outstanding() == 0 && e.kind != Ev::kMinute) {
      if (e.kind == Ev::kPool || e.kind == Ev::kTick || e.kind == Ev::kInterrupt) continue;
    }
    AdvanceTo(e.t);
    switch (e.kind) {
      case Ev::kBucket: {
        const size_t b = e.a;
        if (b >= trace_.arrivals.size()) break;
        const int64_t n = trace_.arrivals[b];
        const int64_t start = static_cast<int64_t>(b) * Us(trace_.bucket);
        std::vector<int64_t> times(static_cast<size_t>(n));
        std::uniform_int_distribution<int64_t> within(0, Us(trace_.bucket) - 1);
        for (int64_t i = 0; i < n; ++i) {
          times[static_cast<size_t>(i)] =
              start + (config_.even_arrivals ? i * Us(trace_.bucket) / n : within(rng_));
        }
        std::sort(times.begin(), times.end());
        for (int64_t t : times) Push(t, Ev::kArrival);
        Push(start + Us(trace_.bucket), Ev::kBucket, b + 1);
        break;
      }
      case Ev::kArrival:
        arrivals_++;
        minute_arrivals_++;
        Submit();
        break;
      case Ev::kInterrupt: {
        SimAgent& a = agents_[e.a];
        if (a.state == SimAgent::State::kGone) break;
        // Reclaimed: to the pool controller a member that exited unasked, replaced.
        interruptions_++;
        a.interrupted = true;
        Leave(a);
        Drain();
        break;
      }
      case Ev::kDone: {
        SimAgent& a = agents_[e.c];
        if (a.state == SimAgent::State::kGone) break;  // reclaimed meanwhile
        const AgentId agent = a.id;
        absl::Status st = e.fail ? engine_.Fail(agent, e.a, e.b, "simulated failure", true)
                                 : engine_.Complete(agent, e.a, e.b, "");
        (void)st;
        a.leased--;
        busy_--;
        // A draining member whose last task ended is stopped by the controller.
        if (a.leased == 0) {
          auto it = engine_.agents().find(agent);
          if (it != engine_.agents().end() && it->second.draining) PoolSoon();
        }
        Drain();
        break;
      }
      case Ev::kAgentReady:
        Activate(e.a);
        break;
      case Ev::kPool:
        if (e.t != next_pool_) break;  // superseded by an earlier round
        next_pool_ = std::numeric_limits<int64_t>::max();
        PoolRound();
        break;
      case Ev::kMinute:
        CloseMinute(static_cast<int64_t>(e.a));
        break;
      case Ev::kTick:
        if (e.t == next_tick_) next_tick_ = std::numeric_limits<int64_t>::max();
        engine_.Tick();
        Drain();
        break;
    }
    if (events_.empty() && engine_.outstanding() > 0) {
      return absl::InternalError("simulation stalled with tasks outstanding");
    }
  }
  AdvanceTo(std::max(now_, span));
  // A last round takes the acquisitions noted since the previous one.
  PoolRound();

  SimReport r;
  for (const pool::PoolController::Latencies& l : pools_.AllLatencies()) {
    r.acquired_warm += static_cast<int64_t>(l.acquire_warm.count());
    r.acquired_cold += static_cast<int64_t>(l.acquire_cold.count());
    r.acquire_cold_p95_s = l.acquire_cold.Quantile(0.95);
    r.agent_starts += static_cast<int64_t>(l.agent_start.count());
  }
  r.policy = policy_.name;
  r.arrivals = arrivals_;
  r.completed = completed_;
  r.dropped = dropped_;
  r.agent_hours = agent_seconds_ / 3600.0;
  r.cost = cost_;
  r.interruptions = interruptions_;
  const double slot_seconds = agent_seconds_ * config_.slots;
  r.slack = slot_seconds > 0 ? 1.0 - busy_slot_seconds_ / slot_seconds : 0;
  r.wait_p50_s = Quantile(waits_, 0.50);
  r.wait_p95_s = Quantile(waits_, 0.95);
  r.wait_p99_s = Quantile(waits_, 0.99);
  r.wait_max_s = waits_.empty() ? 0 : *std::max_element(waits_.begin(), waits_.end());
  r.rows = std::move(rows_);
  r.judged_from_minute = judge_us_ / (60 * kUs);
  for (const MinuteRow& row : r.rows) {
    if (row.minute < r.judged_from_minute) continue;
    r.minutes++;
    r.minutes_violated += row.violated;
  }
  if (const scale::Ensemble* e = pools_.EnsembleOf(kPoolName)) {
    r.scores = e->scores();
    r.fits = e->fits();
  }
  r.decisions = decisions_;
  r.fallbacks = fallbacks_;
  r.disagreements = disagreements_;
  {
    v1::ListPoolsResponse lp = pools_.ListPools();
    if (lp.pools_size() > 0) r.model_error = lp.pools(0).model_error();
  }
  r.scale_actions = actions_;
  r.flaps = flaps_;
  r.peak_agents = peak_;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall).count();
  return r;
}

}  // namespace

int64_t Trace::total() const {
  int64_t n = 0;
  for (int64_t a : arrivals) n += a;
  return n;
}

int64_t Trace::peak() const {
  int64_t p = 0;
  for (int64_t a : arrivals) p = std::max(p, a);
  return p;
}

absl::StatusOr<Trace> ParseTrace(const std::string& text, const std::string& source) {
  Trace t;
  std::istringstream in(text);
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    line_no++;
    absl::string_view l = absl::StripAsciiWhitespace(line);
    if (l.empty()) continue;
    std::vector<absl::string_view> cols = absl::StrSplit(l, ',');
    auto bad = [&](const std::string& msg) {
      return absl::InvalidArgumentError(absl::StrCat(source, ":", line_no, ": ", msg));
    };
    if (line_no == 1) {
      if (cols.size() != 2 || cols[1] != "arrivals" ||
          (cols[0] != "minute" && cols[0] != "second")) {
        return bad("the header must be minute,arrivals or second,arrivals");
      }
      t.bucket = cols[0] == "minute" ? absl::Minutes(1) : absl::Seconds(1);
      continue;
    }
    int64_t index = 0, n = 0;
    if (cols.size() != 2) return bad("expected two columns");
    if (!absl::SimpleAtoi(cols[0], &index)) return bad("the first column is not a number");
    if (index != static_cast<int64_t>(t.arrivals.size())) {
      return bad(absl::StrCat("expected ", t.arrivals.size(),
                              " in the first column (no gaps), got ", index));
    }
    if (!absl::SimpleAtoi(cols[1], &n) || n < 0 || n > 100'000'000) {
      return bad("arrivals: not a count from 0 to 100000000");
    }
    t.arrivals.push_back(n);
  }
  if (line_no == 0) return absl::InvalidArgumentError(absl::StrCat(source, ": empty trace"));
  if (t.arrivals.empty()) return absl::InvalidArgumentError(absl::StrCat(source, ": no rows"));
  return t;
}

absl::StatusOr<Trace> LoadTrace(const std::string& path) {
  std::optional<std::string> text = ReadWholeFile(path);
  if (!text) return absl::NotFoundError(absl::StrCat("--trace: cannot read ", path));
  return ParseTrace(*text, path);
}

double SampleSeconds(const ServiceTime& service, std::mt19937_64& rng) {
  const double mean = absl::ToDoubleSeconds(service.mean);
  switch (service.kind) {
    case ServiceTime::Kind::kFixed:
      return mean;
    case ServiceTime::Kind::kExponential:
      return std::exponential_distribution<double>(1.0 / mean)(rng);
    case ServiceTime::Kind::kLogNormal: {
      const double sigma = service.sigma;
      return std::lognormal_distribution<double>(std::log(mean) - sigma * sigma / 2, sigma)(rng);
    }
  }
  return mean;
}

absl::StatusOr<ServiceTime> ParseServiceTime(const std::string& text, const std::string& flag) {
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  auto bad = [&]() {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, ": '", text,
        "' is not fixed:DURATION, exp:DURATION or lognormal:DURATION[:SIGMA] (e.g. exp:2s)"));
  };
  if (parts.size() < 2 || parts.size() > 3) return bad();
  ServiceTime s;
  if (parts[0] == "fixed") {
    s.kind = ServiceTime::Kind::kFixed;
  } else if (parts[0] == "exp") {
    s.kind = ServiceTime::Kind::kExponential;
  } else if (parts[0] == "lognormal") {
    s.kind = ServiceTime::Kind::kLogNormal;
  } else {
    return bad();
  }
  if (!absl::ParseDuration(parts[1], &s.mean) || s.mean <= absl::ZeroDuration() ||
      s.mean > absl::Hours(24)) {
    return bad();
  }
  if (parts.size() == 3) {
    if (s.kind != ServiceTime::Kind::kLogNormal || !absl::SimpleAtod(parts[2], &s.sigma) ||
        !(s.sigma > 0 && s.sigma <= 5)) {
      return bad();
    }
  }
  return s;
}

absl::StatusOr<CapacityClass> ParseCapacityClass(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  CapacityClass c;
  auto bad = [&]() {
    return absl::InvalidArgumentError(absl::StrCat(
        "--class: '", text,
        "' is not NAME:PRICE:INTERRUPTIONS_PER_HOUR[:MAX_AGENTS] (e.g. spot:0.3:0.5:20)"));
  };
  if (parts.size() < 3 || parts.size() > 4 || parts[0].empty()) return bad();
  c.name = parts[0];
  if (!absl::SimpleAtod(parts[1], &c.price_per_agent_hour) || !(c.price_per_agent_hour >= 0) ||
      !absl::SimpleAtod(parts[2], &c.interruptions_per_hour) ||
      !(c.interruptions_per_hour >= 0 && c.interruptions_per_hour <= 3600)) {
    return bad();
  }
  if (parts.size() == 4 && (!absl::SimpleAtoi(parts[3], &c.max_agents) || c.max_agents < 0)) {
    return bad();
  }
  return c;
}

absl::StatusOr<Policy> ParsePolicy(const std::string& text, int max_agents,
                                   const std::string& fallback,
                                   const std::vector<std::string>& models) {
  Policy p;
  p.name = text;
  std::vector<std::string> parts = absl::StrSplit(text, absl::MaxSplits(':', 1));
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("--policy: '", text, "': ", why));
  };
  const std::string& kind = parts[0];
  if (kind == "static") {
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &p.agents) || p.agents < 1 ||
        p.agents > 100'000) {
      return bad("static:N needs N agents, 1 to 100000");
    }
    p.kind = Policy::Kind::kStatic;
  } else if (kind == "static-peak" || kind == "static-mean") {
    if (parts.size() != 1) return bad("takes no argument");
    p.kind = kind == "static-peak" ? Policy::Kind::kStaticPeak : Policy::Kind::kStaticMean;
  } else if (kind == "hpa" || kind == "hpa-util") {
    p.kind = Policy::Kind::kReactive;
    p.scaler.min = 1;
    p.scaler.max = max_agents;
    if (kind == "hpa-util") {
      p.scaler.metric = scale::AutoscalerSpec::Metric::kUtilization;
      p.scaler.target = 0.7;
    } else {
      p.scaler.target = 1;
    }
    if (parts.size() == 2 && !absl::SimpleAtod(parts[1], &p.scaler.target)) {
      return bad("the target is not a number");
    }
    if (absl::Status st = scale::ValidateAutoscalerSpec(p.scaler); !st.ok()) {
      return bad(std::string(st.message()));
    }
  } else if (kind == "predictive" || kind == "shadow" || kind == "oracle") {
    if (fallback != "hpa" && fallback != "hpa-util") {
      return absl::InvalidArgumentError(
          absl::StrCat("--fallback: '", fallback, "' is not hpa or hpa-util"));
    }
    absl::StatusOr<Policy> reactive = ParsePolicy(fallback, max_agents);
    if (!reactive.ok()) return reactive.status();
    p.kind = Policy::Kind::kForecast;
    p.scaler = reactive->scaler;
    p.mode = kind == "shadow" ? scale::Mode::kShadow : scale::Mode::kPredictive;
    p.oracle = kind == "oracle";
    p.models = models.empty() ? scale::ForecasterNames() : models;
    for (const std::string& m : p.models) {
      if (absl::Status st = scale::CheckForecasterName(m); !st.ok()) {
        return bad(std::string(st.message()));
      }
    }
    if (parts.size() == 2) {
      if (kind != "predictive") return bad("takes no argument");
      if (absl::Status st = scale::CheckForecasterName(parts[1]); !st.ok()) {
        return bad(std::string(st.message()));
      }
      p.model = parts[1];
    }
  } else {
    return bad(
        "use static:N, static-peak, static-mean, hpa[:TARGET], hpa-util[:TARGET], "
        "predictive[:MODEL], shadow or oracle");
  }
  return p;
}

absl::StatusOr<SimReport> Run(const Trace& trace, const SimConfig& config, const Policy& policy) {
  if (config.slots < 1 || config.slots > 1024) {
    return absl::InvalidArgumentError("--slots: must be 1 to 1024");
  }
  if (!(config.failure_rate >= 0 && config.failure_rate < 1)) {
    return absl::InvalidArgumentError("--failure-rate: must be in [0, 1)");
  }
  SimConfig sorted = config;
  std::stable_sort(sorted.classes.begin(), sorted.classes.end(),
                   [](const CapacityClass& a, const CapacityClass& b) {
                     return a.price_per_agent_hour < b.price_per_agent_hour;
                   });
  Run1 run(trace, sorted, policy);
  return run.Go();
}

Trace ScaleTrace(const Trace& t, double f, uint64_t seed) {
  Trace out = t;
  std::mt19937_64 rng(seed ^ 0x5ca1e);
  std::uniform_real_distribution<double> u(0, 1);
  for (int64_t& n : out.arrivals) {
    const double x = static_cast<double>(n) * f;
    const double whole = std::floor(x);
    n = static_cast<int64_t>(whole) + (u(rng) < x - whole ? 1 : 0);
  }
  return out;
}

std::vector<int64_t> PerMinute(const Trace& t) {
  const int64_t per =
      std::max<int64_t>(1, absl::ToInt64Seconds(absl::Minutes(1)) /
                               std::max<int64_t>(1, absl::ToInt64Seconds(t.bucket)));
  std::vector<int64_t> out((t.arrivals.size() + static_cast<size_t>(per) - 1) /
                           static_cast<size_t>(per));
  for (size_t i = 0; i < t.arrivals.size(); ++i) out[i / static_cast<size_t>(per)] += t.arrivals[i];
  return out;
}

}  // namespace drover::sim
