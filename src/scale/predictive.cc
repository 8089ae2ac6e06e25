#include "scale/predictive.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace drover::scale {

absl::StatusOr<Mode> ParseMode(const std::string& s) {
  if (s == "reactive" || s.empty()) return Mode::kReactive;
  if (s == "shadow") return Mode::kShadow;
  if (s == "predictive") return Mode::kPredictive;
  return absl::InvalidArgumentError(
      absl::StrCat("mode: unknown \"", s, "\" (one of reactive, shadow, predictive)"));
}

std::string ModeName(Mode m) {
  switch (m) {
    case Mode::kReactive:
      return "reactive";
    case Mode::kShadow:
      return "shadow";
    case Mode::kPredictive:
      return "predictive";
  }
  return "?";
}

absl::Status ValidatePredictiveSpec(const PredictiveSpec& s) {
  if (!(s.floor_confidence >= 0 && s.floor_confidence <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("floor_confidence: must be in [0, 1], got ", s.floor_confidence));
  }
  if (!(s.use_confidence >= s.floor_confidence && s.use_confidence <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("use_confidence: must be in [floor_confidence (",
                                                   s.floor_confidence, "), 1], got ",
                                                   s.use_confidence));
  }
  if (!(s.blend >= 0 && s.blend <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("blend: must be in [0, 1], got ", s.blend));
  }
  if (s.hold < absl::ZeroDuration() || s.hold > absl::Minutes(60)) {
    return absl::InvalidArgumentError("hold: must be between 0 and 60 minutes");
  }
  return absl::OkStatus();
}

namespace {
// The hysteresis band of scale-in: 8 % of the size (rounded up), at least one agent.
int Band(int n) { return std::max(1, (8 * n + 99) / 100); }
}  // namespace

PredictiveDecision DecidePredictive(const PredictiveSpec& spec, const PredictiveInputs& in) {
  PredictiveDecision d;
  d.reactive = in.reactive;
  SizingModel m;
  m.service_s = std::max(0.001, in.service_s);
  m.slots = std::max(1, in.slots);
  m.objective_s = spec.objective_s;
  m.quantile = spec.quantile;
  const int startup_min = static_cast<int>(
      std::ceil(absl::ToDoubleMinutes(std::max(absl::ZeroDuration(), in.startup))));
  d.decision_horizon = std::clamp(startup_min + 1, 1, kMaxHorizon);
  // Scale-in looks `hold` past the decision horizon: an up-decision in the next `hold`
  // minutes looks at most that far, so it cannot undo this one on the same forecast.
  const int down_horizon =
      std::clamp(std::max(2 * startup_min + 1,
                          d.decision_horizon + static_cast<int>(absl::ToInt64Minutes(spec.hold))),
                 1, kMaxHorizon);
  auto need = [&](int h) -> int {
    if (h == 0) return static_cast<int>(AgentsFor(m, in.recent_rate));
    const Quantiles& q = in.forecast->forecast.minutes[static_cast<size_t>(h - 1)];
    return static_cast<int>(AgentsFor(m, q.p90));
  };
  const bool have = in.forecast != nullptr &&
                    in.forecast->forecast.minutes.size() >= static_cast<size_t>(down_horizon);
  d.confidence = !have ? 0 : in.oracle ? 1 : in.forecast->ConfidenceAt(d.decision_horizon);
  // Horizon 0, what arrives now, counts only while there is no forecast to go by.
  int up = have ? 0 : need(0), stay = up;
  if (have) {
    for (int h = 1; h <= down_horizon; ++h) {
      const int n = need(h);
      stay = std::max(stay, n);
      if (h <= d.decision_horizon) up = std::max(up, n);
    }
  }
  bool surge = false;
  // (4 standard deviations of a minute's Poisson count above p90 too: noise is not a surge.)
  const double p90_next = have ? in.forecast->forecast.minutes[0].p90 : 0;
  if (have && in.now_rate > std::max(1.5 * p90_next, p90_next + 4 * std::sqrt(p90_next))) {
    const int n = static_cast<int>(AgentsFor(m, in.now_rate));
    if (n > up) {
      up = n;
      surge = true;
    }
  }
  d.up_target = up;
  // Scale-in also waits until no recent decision wanted more (the last `hold`): a size that
  // was needed a few minutes ago is not given up for a dip the next minutes may undo.
  stay = std::max(stay, in.recent_up);
  std::string why;
  if (up > in.current) {
    d.forecast_agents = up;
    why = surge ? "surge" : "forecast (pre-warm)";
  } else if (stay + Band(stay) < in.current) {
    // Down to the forecast plus a band: the next forecasts revise the need by a few
    // agents either way, and a size inside the band is kept (hysteresis), so such a
    // revision does not reverse this decision.
    d.forecast_agents = stay + Band(stay);
    why = "forecast";
  } else {
    d.forecast_agents = in.current;
    why = "forecast (hold)";
  }
  int desired = 0;
  if (d.confidence >= spec.use_confidence) {
    desired = d.forecast_agents;
    d.rule = why;
  } else if (d.confidence >= spec.floor_confidence) {
    desired = static_cast<int>(
        std::lround(spec.blend * d.forecast_agents + (1 - spec.blend) * in.reactive));
    d.rule = absl::StrFormat("blend (confidence %.2f)", d.confidence);
  } else {
    desired = in.reactive;
    d.fallback = true;
    d.rule =
        absl::StrFormat("fallback (confidence %.2f < %.2f)", d.confidence, spec.floor_confidence);
  }
  // The queue already there, started within the objective: each slot starts about
  // objective / service time queued tasks in that time.
  d.floor = static_cast<int>(std::ceil(static_cast<double>(in.pending) * m.service_s /
                                           std::max(1.0, spec.objective_s) / m.slots -
                                       1e-9));
  // (A size the floor forced is held like a forecast's, so it is not given up at once.)
  d.up_target = std::max(d.up_target, d.floor);
  if (d.floor > desired) {
    desired = d.floor;
    d.rule = "queue floor";
  }
  if (desired > in.max) {
    desired = in.max;
    d.rule = "max bounds";
  }
  if (desired < in.min) {
    desired = in.min;
    d.rule = "min bounds";
  }
  if (desired > in.budget_cap) {
    desired = std::max(0, in.budget_cap);
    d.rule = "budget cap";
  }
  d.desired = desired;
  return d;
}

}  // namespace drover::scale
