#include "scale/autoscaler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace drover::scale {

absl::Status ValidateAutoscalerSpec(const AutoscalerSpec& s) {
  auto bad = [](const std::string& field, const std::string& msg) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", msg));
  };
  if (s.min < 0) return bad("min", absl::StrCat("must be >= 0, got ", s.min));
  if (s.max < s.min || s.max < 1) {
    return bad("max", absl::StrCat("must be >= min (", s.min, ") and >= 1, got ", s.max));
  }
  if (!(s.target > 0) || !std::isfinite(s.target)) {
    return bad("target", "must be a finite number > 0");
  }
  if (s.metric == AutoscalerSpec::Metric::kUtilization && s.target > 1) {
    return bad("target", absl::StrCat("a utilisation target is in (0, 1], got ", s.target));
  }
  if (!(s.tolerance >= 0 && s.tolerance < 1)) return bad("tolerance", "must be in [0, 1)");
  if (s.sync_period < absl::Milliseconds(100)) return bad("sync_period", "must be >= 100 ms");
  for (const auto& [name, rules] :
       {std::pair<const char*, const ScalingRules*>{"scale_up", &s.up}, {"scale_down", &s.down}}) {
    if (rules->stabilization < absl::ZeroDuration() || rules->stabilization > absl::Hours(1)) {
      return bad(absl::StrCat(name, ".stabilization_window"), "must be 0 to 1 h");
    }
    if (rules->select != ScalingRules::Select::kDisabled && rules->policies.empty()) {
      return bad(absl::StrCat(name, ".policies"), "at least one unless the direction is disabled");
    }
    for (size_t i = 0; i < rules->policies.size(); ++i) {
      const ScalingPolicy& p = rules->policies[i];
      if (p.value < 1) {
        return bad(absl::StrCat(name, ".policies[", i, "].value"), "must be >= 1");
      }
      if (p.period < absl::Seconds(1) || p.period > absl::Minutes(30)) {
        return bad(absl::StrCat(name, ".policies[", i, "].period"), "must be 1 s to 30 min");
      }
    }
  }
  return absl::OkStatus();
}

std::string ScalingDecision::Describe() const {
  return absl::StrCat(current, " -> ", desired, " (", rule, "; metric ", metric, " vs target ",
                      target, ", proposed ", proposed, ", stabilized ", stabilized, ")");
}

void Autoscaler::Forget(absl::Time now) {
  absl::Duration longest = std::max(spec_.up.stabilization, spec_.down.stabilization);
  while (!recommendations_.empty() && recommendations_.front().first < now - longest) {
    recommendations_.pop_front();
  }
  absl::Duration period = absl::ZeroDuration();
  for (const ScalingRules* r : {&spec_.up, &spec_.down}) {
    for (const ScalingPolicy& p : r->policies) period = std::max(period, p.period);
  }
  for (auto* events : {&up_events_, &down_events_}) {
    while (!events->empty() && events->front().first <= now - period) events->pop_front();
  }
}

// The k8s calculateScaleUpLimitWithScalingRules: from the size at the start of each
// policy's period, the largest (kMax) or smallest (kMin) size the policies allow.
int Autoscaler::ScaleUpLimit(absl::Time now, int current) const {
  if (spec_.up.select == ScalingRules::Select::kDisabled) return current;
  int result = spec_.up.select == ScalingRules::Select::kMax ? std::numeric_limits<int>::min()
                                                             : std::numeric_limits<int>::max();
  for (const ScalingPolicy& p : spec_.up.policies) {
    int added = 0, removed = 0;
    for (const auto& [t, n] : up_events_) added += t > now - p.period ? n : 0;
    for (const auto& [t, n] : down_events_) removed += t > now - p.period ? n : 0;
    const int start = current - added + removed;
    const int proposed =
        p.type == ScalingPolicy::Type::kPods
            ? start + p.value
            : static_cast<int>(std::ceil(static_cast<double>(start) * (1 + p.value / 100.0)));
    result = spec_.up.select == ScalingRules::Select::kMax ? std::max(result, proposed)
                                                           : std::min(result, proposed);
  }
  return result;
}

// The k8s calculateScaleDownLimitWithBehaviors.
int Autoscaler::ScaleDownLimit(absl::Time now, int current) const {
  if (spec_.down.select == ScalingRules::Select::kDisabled) return current;
  int result = spec_.down.select == ScalingRules::Select::kMax ? std::numeric_limits<int>::max()
                                                               : std::numeric_limits<int>::min();
  for (const ScalingPolicy& p : spec_.down.policies) {
    int added = 0, removed = 0;
    for (const auto& [t, n] : up_events_) added += t > now - p.period ? n : 0;
    for (const auto& [t, n] : down_events_) removed += t > now - p.period ? n : 0;
    const int start = current + removed - added;
    const int proposed = p.type == ScalingPolicy::Type::kPods
                             ? start - p.value
                             : static_cast<int>(static_cast<double>(start) * (1 - p.value / 100.0));
    result = spec_.down.select == ScalingRules::Select::kMax ? std::min(result, proposed)
                                                             : std::max(result, proposed);
  }
  return result;
}

ScalingDecision Autoscaler::Evaluate(absl::Time now, const ScalingInputs& in) {
  Forget(now);
  ScalingDecision d;
  d.at = now;
  d.current = in.current;
  d.target = spec_.target;
  const int current = in.current;
  const bool pending_metric = spec_.metric == AutoscalerSpec::Metric::kPendingPerAgent;
  if (pending_metric) {
    d.metric =
        current > 0 ? static_cast<double>(in.pending) / current : static_cast<double>(in.pending);
  } else {
    d.metric = in.total_slots > 0 ? static_cast<double>(in.busy_slots) / in.total_slots : 0.0;
  }

  // 1. The metric's proposal.
  int proposed = current;
  std::string rule;
  if (current > spec_.max) {
    proposed = spec_.max;
    rule = "above max";
  } else if (current < spec_.min) {
    proposed = spec_.min;
    rule = "below min";
  } else if (current == 0) {
    proposed = pending_metric && in.pending > 0
                   ? static_cast<int>(std::ceil(static_cast<double>(in.pending) / spec_.target))
                   : 0;
    rule = proposed > 0 ? "activation from zero" : "no change";
  } else {
    const double ratio = d.metric / spec_.target;
    if (std::fabs(ratio - 1.0) <= spec_.tolerance) {
      rule = "within tolerance";
    } else {
      const double raw =
          pending_metric ? static_cast<double>(in.pending) / spec_.target : ratio * current;
      proposed = static_cast<int>(std::ceil(raw - 1e-9));
      rule = proposed > current ? "scale up" : proposed < current ? "scale down" : "no change";
    }
  }
  d.proposed = proposed;

  // 2. Stabilisation over the recommendations of the windows (this one included).
  int up_rec = proposed, down_rec = proposed;
  for (const auto& [t, r] : recommendations_) {
    if (t > now - spec_.up.stabilization) up_rec = std::min(up_rec, r);
    if (t > now - spec_.down.stabilization) down_rec = std::max(down_rec, r);
  }
  recommendations_.emplace_back(now, proposed);
  int desired = current;
  if (desired < up_rec) desired = up_rec;
  if (desired > down_rec) desired = down_rec;
  d.stabilized = desired;
  if (desired != proposed) rule = absl::StrCat("stabilization window (held at ", desired, ")");

  // 3. Rate limits and bounds.
  if (desired > current) {
    const int limit = std::max(ScaleUpLimit(now, current), current);
    if (spec_.max > limit) {
      if (desired > limit) {
        desired = limit;
        rule = "scale-up limit";
      }
    } else if (desired > spec_.max) {
      desired = spec_.max;
      rule = "max bounds";
    }
  } else if (desired < current) {
    const int limit = std::min(ScaleDownLimit(now, current), current);
    if (spec_.min < limit) {
      if (desired < limit) {
        desired = limit;
        rule = "scale-down limit";
      }
    } else if (desired < spec_.min) {
      desired = spec_.min;
      rule = "min bounds";
    }
  }

  // 4. The budgets.
  // (A hard cap: it also takes the pool below its current size, and below min.)
  if (desired > in.budget_cap) {
    desired = std::max(in.budget_cap, 0);
    rule = "budget cap";
  }
  d.desired = desired;
  d.rule = rule;
  if (desired > current) up_events_.emplace_back(now, desired - current);
  if (desired < current) down_events_.emplace_back(now, current - desired);
  return d;
}

}  // namespace drover::scale
