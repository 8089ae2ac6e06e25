// scale: sizing a pool ahead of demand from a forecast, with the reactive rule as the
// fallback and the floor.
//
// Each decision (every sync period):
//   1. need(h): the agents that meet the wait objective (erlang.h) for the forecast's p90
//      arrival rate at h minutes ahead, with the pool's learnt service time;
//   2. the forecast answer: up to max over h in [1, S + 1] of need(h), where S is the
//      agents' start-up time in whole minutes (agents started now are ready in S minutes,
//      so they are started one start-up time before the rise they are for); it goes down
//      only when max over h in [1, S + 1 + hold] of need(h), and every up answer of the last
//      `hold` (10 minutes by default; the caller remembers them: recent_up), is below the
//      current size by more than an 8 % band (at least one agent), and then to that need
//      plus the band: the load must stay low for longer than an agent takes to start again,
//      and the next forecasts' revisions do not reverse it (a dip is not a flap); with no
//      forecast yet, h = 0 (the last 5 minutes' rate);
//   2b. a surge: when the last 60 s's rate (the open minute included) exceeds the forecast's
//      p90 for the next minute by 50 % and by 4 standard deviations of a Poisson count
//      (sqrt(p90): noise is not a surge), the forecast answer is at least need(that rate)
//      ("surge"): the forecast missed a burst, and the queue would otherwise wait for the
//      minute to close;
//   3. trust: confidence (ensemble.h) at the decision horizon S + 1 at or above
//      `use_confidence` (0.8) takes the forecast answer; at or above `floor_confidence`
//      (0.5) blends round(0.7 forecast + 0.3 reactive); below, the reactive answer is used
//      and counted as a fallback;
//   4. never below what the queue already there demands: ceil(pending x service time /
//      objective / slots) agents start every queued task within the objective (and that
//      size is held like a forecast's, so it is not given up at the next sync);
//   5. then min, max and the budget cap, as for the reactive rule.
//
// Threading: none (a pure function of its inputs).
#pragma once

#include <limits>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "scale/ensemble.h"
#include "scale/erlang.h"

namespace drover::scale {

enum class Mode : uint8_t { kReactive, kShadow, kPredictive };
absl::StatusOr<Mode> ParseMode(const std::string& s);  // "reactive", "shadow", "predictive"
std::string ModeName(Mode m);

struct PredictiveSpec {
  Mode mode = Mode::kReactive;
  double use_confidence = 0.8;
  double floor_confidence = 0.5;
  double blend = 0.7;  // the forecast's share between the two thresholds
  absl::Duration hold = absl::Minutes(10);
  double objective_s = 60;
  double quantile = 0.95;
};
// Field-named errors ("predictive.use_confidence: must be in [floor_confidence, 1]").
absl::Status ValidatePredictiveSpec(const PredictiveSpec& s);

struct PredictiveInputs {
  const Snapshot* forecast = nullptr;  // nullptr: none yet (confidence 0)
  double service_s = 1;
  int slots = 1;
  absl::Duration startup = absl::Seconds(60);
  int current = 0;
  int64_t pending = 0;
  int64_t busy_slots = 0;
  double recent_rate = 0;  // arrivals per minute over the last 5 minutes (horizon 0)
  // Arrivals per minute over the last 60 s, the current minute included (a surge shows here
  // before its minute closes).
  double now_rate = 0;
  int recent_up = 0;  // the highest up_target of the decisions of the last `hold`
  int reactive = 0;   // the reactive rule's answer this sync
  int min = 0, max = std::numeric_limits<int>::max();
  int budget_cap = std::numeric_limits<int>::max();
  bool oracle = false;  // the forecast is the truth: confidence 1
};

struct PredictiveDecision {
  int desired = 0;
  int forecast_agents = 0;  // step 2
  int reactive = 0;
  int floor = 0;      // step 4
  int up_target = 0;  // max need over [1, S + 1] (the caller keeps them for recent_up)
  double confidence = 0;
  int decision_horizon = 0;  // minutes
  bool fallback = false;
  // "forecast", "forecast (pre-warm)", "forecast (hold)", "blend", "fallback
  // (confidence 0.42 < 0.50)", "queue floor", "max bounds", "min bounds", "budget cap".
  std::string rule;
};

PredictiveDecision DecidePredictive(const PredictiveSpec& spec, const PredictiveInputs& in);

}  // namespace drover::scale
