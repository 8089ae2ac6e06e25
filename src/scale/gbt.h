// scale: the gradient-boosting forecaster ("gbt"), trees learned by XGBoost (C API).
//
// What it predicts: the mean arrival rate of each 5-minute block ahead (minutes 1-5, 6-10,
// ..., 56-60), from one model that takes the block as a feature. One model rather than
// twelve: one training run and one prediction call (12 rows) instead of twelve of each, and
// every block learns from all the rows (the seasonal and recent-level structure is the same
// for all horizons; only how much the recent minutes count changes with the block). Tried
// on the NASA and Azure traces, twelve models were no more accurate (MAE -2 % to +5 % by
// horizon), Fit took 45 % longer and Predict 7 times as long (260 against 36 microseconds).
//
// The model works on sqrt(rate): the square root makes Poisson noise (the noise of counts)
// about equally large at every level, so squared error does not let the busy hours drown
// the quiet ones, and the noise of one minute becomes a known additive term (below).
// Everything is relative to the base, sqrt of the mean of the last 15 minutes: the trees
// learn sqrt(block mean) - base, and every feature that counts arrivals enters as
// sqrt(value) - base. Trees cannot extrapolate: a model of the level stays at the highest
// level it was trained on when arrivals rise past it (a surge, a growing service), and raw
// lags past their trained range fall into the trees' outermost leaves (which learned
// "a burst: expect it to fall back"). Relative to the recent level, a surge or a trend
// looks like the data the trees learned from, so a step from 10 to 100 a minute is followed
// within 15 minutes and a trend past the trained range is tracked. On the NASA and Azure
// traces this is also a little more accurate than the raw level and lags.
//
// Features at a forecast origin (the end of the known minutes) for one target block:
//   recent:   the last 1..10 minutes; the means of the last 5, 30, 60 and 240 minutes (15:
//             the base)
//   seasonal: one day and one week before the target block: the value at its middle
//             minute, the mean of the block's 5 minutes and of the 15 minutes around it,
//             and the mean of the 60 minutes before the origin then (how that day's level
//             went on from there); missing (NaN) when the history does not reach back that
//             far, which XGBoost routes as missing
//   calendar: the target's minute of day as sin and cos, its day of week
//   the queue depth at the origin (when the Series has one), and the block's horizon
// Fit trains on the most recent `max_train_minutes` minutes (features may look further
// back), with a training origin every `stride` minutes.
//
// Quantiles: out-of-fold residuals (sqrt space) give the spread of a block's mean: the
// window's origins are cut into `folds` contiguous chunks, each predicted by a model trained
// on the others (less the rows whose targets overlap it), so that every day counts, not
// just the last two (which may hold a launch or an outage). They are kept per block and per
// level of the prediction (in thirds: bursts grow with the level), centred (a fold model's
// bias is not the final model's). A minute's own Poisson noise is added on top, as a
// Gaussian in sqrt space with the exact variance of the square root of a Poisson count less
// what the 5-minute mean already holds. The mean is the average of the back-transformed
// residual distribution (the smearing estimate), so the square root does not bias it low.
// Then the final model is trained on the whole window. Fit costs about two trainings.
//
// Short history: with fewer than kMinFitMinutes minutes (or too few training origins) Fit
// learns no trees and succeeds (per Forecaster); Predict then forecasts the mean of the
// last hour (of what there is; 0 for none) with Poisson spread. has_model() says which.
//
// Threading: thread-compatible; Predict may run concurrently with other Predicts (XGBoost's
// in-place prediction is thread-safe). Deterministic for a seed and thread count.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "scale/forecast.h"

namespace drover::scale {

struct GbtOptions {
  // Depth 4 and 150 rounds: as accurate on the NASA and Azure traces as depth 6 and 200
  // rounds (two weeks of minutes do not support deeper interactions), at half the Fit time.
  int trees = 150;  // boosting rounds
  int max_depth = 4;
  double learning_rate = 0.1;  // XGBoost's eta
  double subsample = 0.8;      // share of rows each tree sees (drawn from `seed`)
  uint64_t seed = 0;
  int threads = 1;                              // XGBoost's nthread, for Fit and Predict
  int max_train_minutes = 14 * kMinutesPerDay;  // the most recent minutes Fit trains on
  int stride = 3;                               // a training origin every `stride` minutes
  int folds = 3;  // out-of-fold residuals (see above); 0: Poisson spread only
};

// Field-named errors ("gbt: trees: must be >= 1, got 0").
absl::Status ValidateGbtOptions(const GbtOptions& options);

class GbtForecaster : public Forecaster {
 public:
  // Fewer minutes than this and Fit learns no trees (see above).
  static constexpr int kMinFitMinutes = 6 * 60;

  explicit GbtForecaster(GbtOptions options = {});
  ~GbtForecaster() override;
  GbtForecaster(GbtForecaster&&) noexcept;
  GbtForecaster& operator=(GbtForecaster&&) noexcept;

  std::string_view name() const override { return "gbt"; }
  // InvalidArgument for bad options or a negative or non-finite arrival count; Internal
  // when XGBoost fails (its message included). A failed Fit keeps the previous model.
  absl::Status Fit(const Series& history) override;
  // FailedPrecondition before a successful Fit; InvalidArgument for a horizon outside
  // 1..kMaxHorizon.
  absl::StatusOr<Forecast> Predict(const Series& recent, int horizon) const override;

  // Whether the last Fit learned trees (false: the short-history fallback).
  bool has_model() const;

 private:
  struct Impl;
  GbtOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace drover::scale
