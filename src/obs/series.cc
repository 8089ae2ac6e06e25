#include "obs/series.h"

#include <algorithm>

namespace drover::obs {

double DeltaQuantile(const std::vector<double>& bounds, const std::vector<uint64_t>& now,
                     const std::vector<uint64_t>& before, double q) {
  if (bounds.empty() || now.size() != bounds.size() + 1) return 0;
  std::vector<uint64_t> d(now.size());
  uint64_t total = 0;
  for (size_t i = 0; i < now.size(); ++i) {
    const uint64_t b = i < before.size() ? before[i] : 0;
    d[i] = now[i] >= b ? now[i] - b : 0;
    total += d[i];
  }
  if (total == 0) return 0;
  const double rank = std::clamp(q, 0.0, 1.0) * static_cast<double>(total);
  double seen = 0;
  for (size_t i = 0; i < d.size(); ++i) {
    if (d[i] == 0) continue;
    if (seen + static_cast<double>(d[i]) >= rank) {
      if (i == bounds.size()) return bounds.back();  // +Inf: the largest bound
      const double lo = i == 0 ? 0 : bounds[i - 1];
      const double frac = (rank - seen) / static_cast<double>(d[i]);
      return lo + (bounds[i] - lo) * frac;
    }
    seen += static_cast<double>(d[i]);
  }
  return bounds.back();
}

StatsSeries::StatsSeries(absl::Duration step, absl::Duration keep)
    : step_(step), capacity_(static_cast<size_t>(std::max<int64_t>(1, keep / step))) {}

void StatsSeries::Add(v1::StatsSample sample) {
  std::lock_guard<std::mutex> lk(mu_);
  samples_.push_back(std::move(sample));
  while (samples_.size() > capacity_) samples_.pop_front();
}

v1::StatsSeriesResponse StatsSeries::Query(absl::Duration window, absl::Time now) const {
  v1::StatsSeriesResponse r;
  r.set_step_ms(absl::ToInt64Milliseconds(step_));
  const int64_t from = absl::ToUnixMillis(now - window);
  std::lock_guard<std::mutex> lk(mu_);
  auto it = std::lower_bound(samples_.begin(), samples_.end(), from,
                             [](const v1::StatsSample& s, int64_t t) { return s.unix_ms() < t; });
  for (; it != samples_.end(); ++it) *r.add_samples() = *it;
  return r;
}

size_t StatsSeries::size() const {
  std::lock_guard<std::mutex> lk(mu_);
  return samples_.size();
}

}  // namespace drover::obs
