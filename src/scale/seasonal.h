// scale: the two classical forecasters — seasonal naive and Holt-Winters — and the
// interval calibration they share.
//
// Both make a point forecast (the expected arrivals of each minute ahead) and take their
// intervals from their own recent errors: Fit() replays the model over the last days of
// the history from many origins, measures the residuals of the 5-minute window means in
// square-root space (where Poisson-like counts have a near-constant spread) per 5-minute
// block of horizon, and keeps their 10th, 50th and 90th percentiles. The quantiles of a
// forecast are therefore those of the arrival *rate* over the minute's 5-minute block, not
// of the single minute's Poisson count: the queueing model (erlang.h) accounts for the
// Poisson fluctuation itself.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "scale/forecast.h"

namespace drover::scale {

inline constexpr int kBlock = 5;                      // minutes
inline constexpr int kBlocks = kMaxHorizon / kBlock;  // 12 blocks of horizon

// Residual quantiles per block of horizon, in square-root space.
struct Bands {
  std::array<double, kBlocks> q10{}, q50{}, q90{};
  bool calibrated = false;
};

// A forecaster made of a point forecast plus calibrated bands.
class PointForecaster : public Forecaster {
 public:
  absl::Status Fit(const Series& history) final;
  absl::StatusOr<Forecast> Predict(const Series& recent, int horizon) const final;
  const Bands& bands() const { return bands_; }

 protected:
  // Learns the point model from the history.
  virtual absl::Status FitPoint(const Series& history) = 0;
  // The expected arrivals of minutes 1..horizon after the first `end` minutes of `s`.
  virtual std::vector<double> Point(const Series& s, size_t end, int horizon) const = 0;

 private:
  Bands bands_;
};

// Bands of a point forecast, replayed over the last `days` of `s` from an origin every
// `every` minutes (used by Fit; public for tests).
Bands Calibrate(const Series& s,
                const std::function<std::vector<double>(const Series&, size_t, int)>& point,
                int days = 3, int every = 20);

// The same minute one day and one week earlier (their 5-minute means, averaged when both
// exist), scaled by the recent level: the last hour's arrivals over what the same rule
// gave for that hour. Less than a day of history: the last hour's mean.
class SeasonalNaive final : public PointForecaster {
 public:
  std::string_view name() const override { return "seasonal_naive"; }

 protected:
  absl::Status FitPoint(const Series&) override { return absl::OkStatus(); }
  std::vector<double> Point(const Series& s, size_t end, int horizon) const override;
};

struct HoltWintersOptions {
  int64_t fit_minutes = 14 * kMinutesPerDay;  // parameters fitted on the most recent window
  bool weekly = true;  // a weekly component when the history holds at least two weeks
};

// Additive Holt-Winters on 5-minute block means in square-root space with a damped trend,
// a daily season and, with two weeks of history, Taylor's second (weekly) season.
// Parameters (alpha, beta, gamma) by grid search on multi-step errors (1, 3, 6 and 12
// blocks ahead) over the fitting window.
class HoltWinters final : public PointForecaster {
 public:
  explicit HoltWinters(HoltWintersOptions o = {}) : options_(o) {}
  std::string_view name() const override { return "holt_winters"; }
  struct Params {
    double alpha = 0.1, beta = 0, gamma = 0.1, delta = 0.1, phi = 0.95;
    bool weekly = false;
  };
  const Params& params() const { return params_; }

 protected:
  absl::Status FitPoint(const Series& history) override;
  std::vector<double> Point(const Series& s, size_t end, int horizon) const override;

 private:
  struct State {
    double level = 0, trend = 0;
    std::vector<double> day, week;  // seasonal components by block of day / of week
    size_t blocks = 0;              // blocks of the series consumed
  };
  // Runs the recursion over blocks [st.blocks, upto) of `y` (block means in sqrt space,
  // indexed from the series start) with `p`; accumulates multi-step squared errors when
  // `sse` is given.
  void Advance(const Params& p, const std::vector<double>& y, size_t first_block_of_day,
               size_t upto, State& st, double* sse) const;
  State Init(const Params& p, const std::vector<double>& y, size_t from) const;
  std::vector<double> Blocks(const Series& s, size_t end) const;

  HoltWintersOptions options_;
  Params params_;
  State fitted_;         // at the end of the fitted history
  int64_t phase_ = 0;    // calendar block of the series' block 0 (series start / 5)
  size_t fit_from_ = 0;  // first block of the fitting window
  mutable State cache_;  // advanced by Predict as new minutes arrive
};

}  // namespace drover::scale
