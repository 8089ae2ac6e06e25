#include "util/histogram.h"

#include <algorithm>

namespace drover {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

std::vector<double> Histogram::LatencyBounds() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05,
          0.1,    0.25,    0.5,    1,     2.5,   5,     10,   30,    60};
}

std::vector<double> Histogram::WaitBounds() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,   2.5, 5,
          10,    15,     20,    30,   45,    60,   90,  120,  180, 300, 600};
}

void Histogram::Observe(double v) {
  auto it = std::lower_bound(bounds_.begin(), bounds_.end(), v);
  counts_[it - bounds_.begin()]++;
  min_ = count_ == 0 ? v : std::min(min_, v);
  max_ = count_ == 0 ? v : std::max(max_, v);
  count_++;
  sum_ += v;
}

void Histogram::Merge(const Histogram& other) {
  for (size_t i = 0; i < counts_.size() && i < other.counts_.size(); ++i) {
    counts_[i] += other.counts_[i];
  }
  if (other.count_ > 0) {
    min_ = count_ == 0 ? other.min_ : std::min(min_, other.min_);
    max_ = count_ == 0 ? other.max_ : std::max(max_, other.max_);
  }
  count_ += other.count_;
  sum_ += other.sum_;
}

double Histogram::Quantile(double q) const {
  if (count_ == 0) return 0;
  const double rank = q * static_cast<double>(count_);
  uint64_t seen = 0;
  for (size_t i = 0; i < counts_.size(); ++i) {
    if (counts_[i] == 0) continue;
    if (static_cast<double>(seen + counts_[i]) >= rank) {
      // The bucket's range, narrowed to what was observed (the +Inf bucket ends at the
      // largest observation).
      const double lo = std::max(i == 0 ? min_ : bounds_[i - 1], min_);
      const double hi = std::min(i < bounds_.size() ? bounds_[i] : max_, max_);
      const double frac = (rank - static_cast<double>(seen)) / static_cast<double>(counts_[i]);
      return std::clamp(lo + (hi - lo) * std::clamp(frac, 0.0, 1.0), min_, max_);
    }
    seen += counts_[i];
  }
  return max_;
}

}  // namespace drover
