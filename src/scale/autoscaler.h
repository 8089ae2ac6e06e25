// scale: the reactive autoscaler of a pool, faithful to the Kubernetes Horizontal Pod
// Autoscaler (autoscaling/v2 with its default behaviour).
//
// Each Evaluate() is one HPA sync (every 15 s by default):
//   1. The metric's proposal. Pending tasks per agent (an AverageValue target): desired =
//      ceil(pending / target). Utilisation (a Utilization target): desired =
//      ceil(current x utilisation / target). Within the tolerance (|ratio - 1| <= 0.1) the
//      proposal is the current size.
//   2. Stabilisation: the recommendation is held between the lowest proposal of the
//      scale-up window (default 0 s) and the highest of the scale-down window (default
//      300 s), counted from the current size.
//   3. Rate limits: scale-up to at most max(+100 %, +4) of the size at the start of the
//      15 s period; scale-down by at most 100 % per 15 s; then the min and max bounds.
//   4. The cost cap: never more agents than the pool's (and the fleet's) hourly budget pays
//      for. (Not in the HPA; always applied last.)
// One deviation: the HPA never scales a target from 0; a pool at 0 agents with pending
// tasks is activated the way KEDA does it: the proposal is ceil(pending / target), then
// the rules above.
//
// Every evaluation returns a Decision naming its inputs, the rule that settled the result
// and the result; the caller applies it (and the autoscaler records it as a scale event
// for the rate limits).
//
// Threading: thread-compatible. Deterministic: time comes only from the callers.
#pragma once

#include <cstdint>
#include <deque>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace drover::scale {

struct ScalingPolicy {
  enum class Type : uint8_t { kPods, kPercent };
  Type type = Type::kPods;
  int value = 0;
  absl::Duration period = absl::Seconds(15);
};

struct ScalingRules {
  absl::Duration stabilization = absl::ZeroDuration();
  std::vector<ScalingPolicy> policies;
  // kMax: the policy that allows the largest change; kMin: the smallest; kDisabled: no
  // change in this direction.
  enum class Select : uint8_t { kMax, kMin, kDisabled };
  Select select = Select::kMax;
};

struct AutoscalerSpec {
  enum class Metric : uint8_t { kPendingPerAgent, kUtilization };
  Metric metric = Metric::kPendingPerAgent;
  double target = 1.0;  // pending tasks per agent, or a utilisation in (0, 1]
  double tolerance = 0.1;
  int min = 1;
  int max = 10;
  ScalingRules up{absl::ZeroDuration(),
                  {{ScalingPolicy::Type::kPercent, 100, absl::Seconds(15)},
                   {ScalingPolicy::Type::kPods, 4, absl::Seconds(15)}},
                  ScalingRules::Select::kMax};
  ScalingRules down{absl::Seconds(300),
                    {{ScalingPolicy::Type::kPercent, 100, absl::Seconds(15)}},
                    ScalingRules::Select::kMax};
  absl::Duration sync_period = absl::Seconds(15);
};

// Field-named errors for a spec ("max: must be >= min (2), got 1").
absl::Status ValidateAutoscalerSpec(const AutoscalerSpec& spec);

struct ScalingInputs {
  int current = 0;          // agents in the pool (starting, idle, busy; not draining)
  int64_t pending = 0;      // tasks ready for the pool's types and not leased
  int64_t busy_slots = 0;   // leased slots of the pool's agents
  int64_t total_slots = 0;  // slots of the pool's agents
  int budget_cap = std::numeric_limits<int>::max();  // agents the hourly budgets pay for
};

struct ScalingDecision {
  absl::Time at;
  int current = 0;
  double metric = 0;  // pending per agent, or utilisation
  double target = 0;
  int proposed = 0;    // step 1
  int stabilized = 0;  // step 2
  int desired = 0;     // the result
  // What settled it: "within tolerance", "scale up", "scale down", "stabilization window
  // (held at N)", "scale-up limit", "scale-down limit", "max bounds", "min bounds",
  // "budget cap", "activation from zero", "no change".
  std::string rule;
  // Set when the pool forecasts (modes shadow and predictive; scale/predictive.h): what
  // each rule answered, the forecast at 15, 30 and 60 minutes and the members' weights.
  struct Horizon {
    int minutes = 0;
    double mean = 0, p10 = 0, p50 = 0, p90 = 0, confidence = 0;
  };
  struct Predictive {
    std::string mode;  // "shadow" or "predictive"
    int reactive = 0;
    int predictive = 0;
    int forecast_agents = 0;
    int floor = 0;
    double confidence = 0;
    bool fallback = false;
    bool applied = false;  // the predictive answer was applied (mode predictive)
    std::string rule;      // the predictive rule (scale/predictive.h)
    std::vector<Horizon> horizons;
    std::vector<std::pair<std::string, double>> weights;  // at 15 minutes
  };
  std::optional<Predictive> predictive;
  std::string Describe() const;
};

class Autoscaler {
 public:
  explicit Autoscaler(AutoscalerSpec spec) : spec_(std::move(spec)) {}
  const AutoscalerSpec& spec() const { return spec_; }

  // One sync at `now`. The caller moves the pool to `desired`.
  ScalingDecision Evaluate(absl::Time now, const ScalingInputs& in);

 private:
  int ScaleUpLimit(absl::Time now, int current) const;
  int ScaleDownLimit(absl::Time now, int current) const;
  void Forget(absl::Time now);

  AutoscalerSpec spec_;
  std::deque<std::pair<absl::Time, int>> recommendations_;  // proposals (step 1), by time
  std::deque<std::pair<absl::Time, int>> up_events_;        // replicas added, by time
  std::deque<std::pair<absl::Time, int>> down_events_;      // replicas removed, by time
};

}  // namespace drover::scale
