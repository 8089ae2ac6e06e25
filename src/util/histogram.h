// A fixed-bucket histogram with Prometheus semantics (cumulative buckets, sum, count).
// Thread-compatible: each owner (the engine thread, a metrics family under its mutex)
// serializes access itself.
#pragma once

#include <cstdint>
#include <vector>

namespace drover {

class Histogram {
 public:
  // `bounds` are the upper bounds of the buckets, ascending; +Inf is implicit.
  explicit Histogram(std::vector<double> bounds);

  // Default latency buckets in seconds: 100 us .. 60 s.
  static std::vector<double> LatencyBounds();
  // Waits that run from milliseconds to minutes (an agent's start, a task waiting for
  // one): 1 ms .. 10 min.
  static std::vector<double> WaitBounds();

  void Observe(double v);
  void Merge(const Histogram& other);  // same bounds required
  // The value below which `q` (0..1) of observations fall, interpolated within a bucket
  // (narrowed to the smallest and largest observation, so never outside them).
  double Quantile(double q) const;

  const std::vector<double>& bounds() const { return bounds_; }
  const std::vector<uint64_t>& counts() const { return counts_; }  // per bucket, last = +Inf
  uint64_t count() const { return count_; }
  double sum() const { return sum_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  double sum_ = 0;
  double min_ = 0, max_ = 0;  // of the observations (count_ > 0)
};

}  // namespace drover
