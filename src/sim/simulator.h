// sim: `drover simulate` — replays a trace of arrivals through the real engine and the
// real autoscaler on a virtual clock, with simulated agents, and accounts for what each
// scaling policy costs and how long tasks wait.
//
// A run is deterministic for a given trace, configuration and seed. Threading: none; one
// run owns its engine, clock and agents.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "scale/autoscaler.h"
#include "scale/ensemble.h"
#include "scale/predictive.h"

namespace drover::sim {

// Arrivals per bucket (a minute or a second), from a CSV with the header `minute,arrivals`
// or `second,arrivals`; the first column counts from 0 with no gaps.
struct Trace {
  absl::Duration bucket = absl::Minutes(1);
  std::vector<int64_t> arrivals;
  int64_t total() const;
  int64_t peak() const;
  absl::Duration span() const { return bucket * static_cast<int64_t>(arrivals.size()); }
};
// Errors name the file and line ("trace.csv:12: arrivals: not a number").
absl::StatusOr<Trace> LoadTrace(const std::string& path);
absl::StatusOr<Trace> ParseTrace(const std::string& text, const std::string& source);

struct ServiceTime {
  enum class Kind : uint8_t { kFixed, kExponential, kLogNormal };
  Kind kind = Kind::kExponential;
  absl::Duration mean = absl::Seconds(1);
  double sigma = 0.5;  // log-normal: the shape (the underlying normal's standard deviation)
};
// "fixed:2s", "exp:500ms", "lognormal:2s" or "lognormal:2s:0.8"; errors name `flag`.
absl::StatusOr<ServiceTime> ParseServiceTime(const std::string& text,
                                             const std::string& flag = "--service-time");
// One draw of the service time, in seconds.
double SampleSeconds(const ServiceTime& s, std::mt19937_64& rng);

struct Policy {
  enum class Kind : uint8_t { kStatic, kStaticPeak, kStaticMean, kReactive, kForecast };
  Kind kind = Kind::kReactive;
  int agents = 0;                // kStatic
  scale::AutoscalerSpec scaler;  // kReactive (HPA defaults); kForecast: its reactive rule
  // kForecast: the pool's mode (shadow or predictive), its forecasters and the one used;
  // oracle: sized from the true future arrivals instead.
  scale::Mode mode = scale::Mode::kPredictive;
  std::vector<std::string> models;
  std::string model = "ensemble";
  bool oracle = false;
  std::string name;  // as printed
};
// "static:12", "static-peak", "static-mean", "hpa" (pending tasks per agent, target 1),
// "hpa:TARGET", "hpa-util:0.7", "predictive" (the ensemble), "predictive:MODEL" (one
// forecaster alone), "shadow" (the ensemble computed, hpa-util applied), "oracle".
// `max_agents` bounds the autoscaled policies; `fallback` is the reactive rule of the
// forecasting ones ("hpa-util" or "hpa").
absl::StatusOr<Policy> ParsePolicy(const std::string& text, int max_agents,
                                   const std::string& fallback = "hpa-util",
                                   const std::vector<std::string>& models = {});

// A capacity class of agents (e.g. spot): its price and how often an agent is reclaimed.
struct CapacityClass {
  std::string name;
  double price_per_agent_hour = 1;
  double interruptions_per_hour = 0;
  int max_agents = 0;  // 0: no limit
};
// "spot:0.3:0.5:20" (name, price per agent-hour, interruptions per agent-hour, max agents).
absl::StatusOr<CapacityClass> ParseCapacityClass(const std::string& text);

struct SimConfig {
  ServiceTime service;
  absl::Duration startup = absl::Seconds(30);  // a new agent's start-up delay
  double failure_rate = 0;                     // share of attempts that fail (retried)
  int slots = 1;                               // tasks per agent at once
  double price_per_agent_hour = 1.0;
  absl::Duration wait_objective = absl::Seconds(60);  // per minute, on the p95 wait
  int64_t capacity = 1'000'000;                       // admission control of the engine
  bool even_arrivals = false;  // arrivals evenly spaced in their bucket (else uniform random)
  uint64_t seed = 1;
  // New agents take the cheapest class with room; an interrupted agent loses its tasks
  // (back to the queue, uncounted) and is replaced (start-up delay). Empty: one class at
  // price_per_agent_hour that is never interrupted.
  std::vector<CapacityClass> classes;
  // Figures count only from this point of the trace on (every policy runs the whole trace:
  // a warm-up for the forecasters, the same judged window for all).
  absl::Duration judge_after = absl::ZeroDuration();
  // Arrivals before the trace (per minute), seeded into the pool's history first.
  std::vector<int64_t> history;
};

// Every bucket's arrivals times f (> 0), rounded at random (deterministic for the seed):
// thins a huge trace, or thickens a small one.
Trace ScaleTrace(const Trace& t, double f, uint64_t seed);
// A trace's arrivals per minute (second buckets summed).
std::vector<int64_t> PerMinute(const Trace& t);

struct MinuteRow {
  int64_t minute = 0;
  int64_t arrivals = 0;
  double agents = 0;        // time-weighted mean over the minute (starting and draining included)
  int64_t queue_depth = 0;  // ready tasks at the minute's end
  int64_t dispatched = 0;
  double p95_wait_s = 0;  // of tasks dispatched in the minute
  bool violated = false;
  // The forecast made 15 minutes before for this minute (predictive policies), or -1.
  double forecast_p10 = -1, forecast_p50 = -1, forecast_p90 = -1;
};

struct SimReport {
  std::string policy;
  int64_t arrivals = 0;
  int64_t completed = 0;
  int64_t dropped = 0;  // refused by admission control
  double agent_hours = 0;
  double cost = 0;
  double slack = 0;  // share of paid slot time that was not running a task
  double wait_p50_s = 0, wait_p95_s = 0, wait_p99_s = 0, wait_max_s = 0;
  int64_t minutes = 0;
  int64_t minutes_violated = 0;
  int64_t scale_actions = 0;
  int64_t flaps = 0;  // direction reversals within 10 minutes of the previous action
  int64_t interruptions = 0;
  // Tasks as the pool saw them taken: by an agent already running (warm) or by one that
  // started after the task was ready (cold), and the cold ones' wait (pool/controller.h).
  int64_t acquired_warm = 0, acquired_cold = 0;
  double acquire_cold_p95_s = 0;
  int64_t agent_starts = 0;
  int peak_agents = 0;
  double seconds = 0;  // wall time of the run
  std::vector<MinuteRow> rows;
  int64_t judged_from_minute = 0;
  // Forecasting policies: the forecasters' scores at 15, 30, 60 minutes, fallbacks, fits.
  std::vector<scale::Ensemble::ModelScores> scores;
  int64_t fallbacks = 0, decisions = 0, fits = 0, disagreements = 0;
  std::string model_error;
};

// Runs one policy over the trace.
absl::StatusOr<SimReport> Run(const Trace& trace, const SimConfig& config, const Policy& policy);

// Per-minute rows as CSV; a chart of arrivals, agents and queue depth as SVG.
std::string MinuteCsv(const SimReport& r);
std::string ChartSvg(const SimReport& r, const Trace& trace);

}  // namespace drover::sim
