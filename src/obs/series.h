// obs/series: the server's recent figures in memory, for the dashboard's charts
// (AdminService.GetStatsSeries, GET /v1/stats/series).
//
// A sampler adds one v1::StatsSample per step (5 s by default); the ring keeps a day of
// them (17,280 samples, about 3 MiB). Nothing is stored: a restarted server starts an
// empty series, and its counters start again from zero.
//
// Threading: every method is thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

#include "absl/time/time.h"
#include "drover/v1/drover.pb.h"

namespace drover::obs {

// The `q` quantile (0..1) of the observations a histogram received between two snapshots
// of its bucket counts (`before` and `now`, per bucket, the last one +Inf; `before` may be
// empty: all of `now`), interpolated linearly within the bucket; 0 when there were none.
// Observations in the +Inf bucket count as the largest finite bound.
double DeltaQuantile(const std::vector<double>& bounds, const std::vector<uint64_t>& now,
                     const std::vector<uint64_t>& before, double q);

class StatsSeries {
 public:
  explicit StatsSeries(absl::Duration step = absl::Seconds(5),
                       absl::Duration keep = absl::Hours(24));

  void Add(v1::StatsSample sample);
  // The samples of the last `window` before `now`, oldest first.
  v1::StatsSeriesResponse Query(absl::Duration window, absl::Time now) const;
  absl::Duration step() const { return step_; }
  size_t size() const;

  // The dispatch-latency bucket counts at the previous sample (the sampler's own state:
  // read and written by the one sampling command at a time).
  std::vector<uint64_t>& last_dispatch_counts() { return last_dispatch_; }

 private:
  const absl::Duration step_;
  const size_t capacity_;
  mutable std::mutex mu_;
  std::deque<v1::StatsSample> samples_;
  std::vector<uint64_t> last_dispatch_;
};

}  // namespace drover::obs
