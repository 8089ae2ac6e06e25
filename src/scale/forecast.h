// scale: forecasting a pool's arrivals per minute.
//
// Every forecaster has the same two steps: Fit() learns from a per-minute history (may
// take seconds: the caller runs it off the engine thread), Predict() forecasts the
// minutes after a history's end from what Fit learned and the recent minutes it is given
// (cheap: at most a millisecond or so, it runs every sync). A forecast holds, for every
// minute 1..horizon ahead, a point value (the mean) and the p10, p50 and p90 quantiles of
// that minute's arrivals.
//
// Calendar: minute i of a Series is minute `start_minute + i` counted from a Monday 00:00
// (so minute of day = m % 1440, day of week = (m / 1440) % 7, 0 = Monday). A trace that
// starts at midnight has start_minute 0 (or a multiple of 1440 for another weekday).
//
// Threading: thread-compatible. Deterministic: Fit with the same history and seed learns
// the same model.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace drover::scale {

inline constexpr int kMinutesPerDay = 1440;
inline constexpr int kMinutesPerWeek = 7 * 1440;
inline constexpr int kMaxHorizon = 60;  // minutes

struct Series {
  int64_t start_minute = 0;      // calendar minute of arrivals[0] (see above)
  std::vector<double> arrivals;  // per minute, >= 0
  // Optional: ready tasks at the end of each minute (same length as arrivals, or empty).
  std::vector<double> queue;
  size_t size() const { return arrivals.size(); }
  int64_t MinuteOfDay(size_t i) const {
    return (start_minute + static_cast<int64_t>(i)) % kMinutesPerDay;
  }
  int64_t DayOfWeek(size_t i) const {
    return ((start_minute + static_cast<int64_t>(i)) / kMinutesPerDay) % 7;
  }
  // The first n minutes (a copy): what was known at minute n.
  Series Prefix(size_t n) const;
};

struct Quantiles {
  double mean = 0;
  double p10 = 0, p50 = 0, p90 = 0;
};

struct Forecast {
  std::string model;
  std::vector<Quantiles> minutes;  // [h - 1]: the h-th minute after the history's end
};

class Forecaster {
 public:
  virtual ~Forecaster() = default;
  virtual std::string_view name() const = 0;
  // Learns from the whole history. A history too short for the model is not an error: the
  // model then predicts from what it has (and says so through its accuracy).
  virtual absl::Status Fit(const Series& history) = 0;
  // Forecasts minutes 1..horizon (<= kMaxHorizon) after `recent`'s last minute. `recent`
  // is the same history Fit saw plus any minutes since (never fewer). Quantiles are
  // ordered (p10 <= p50 <= p90) and never negative.
  virtual absl::StatusOr<Forecast> Predict(const Series& recent, int horizon) const = 0;

  // Retraining. Clone() is a copy to go on training from (taken on the thread that owns
  // this forecaster, trained on another), or nullptr where a fresh Fit is as cheap; Update()
  // trains such a copy again on a longer history (a warm start for learned models).
  virtual std::unique_ptr<Forecaster> Clone() const { return nullptr; }
  virtual absl::Status Update(const Series& history) { return Fit(history); }

  // Models worth keeping across restarts save to and load from a file (in the data
  // directory); Load refuses a missing, corrupt or other-version file with a message.
  virtual bool persistent() const { return false; }
  virtual absl::Status Save(const std::string& path) const {
    return absl::UnimplementedError(std::string(name()) + " keeps no model file");
  }
  virtual absl::Status Load(const std::string& path) {
    return absl::UnimplementedError(std::string(name()) + " keeps no model file");
  }
};

}  // namespace drover::scale
