// scale: a rolling-origin backtest of the forecasters on a trace (`drover forecast
// backtest`): every model is trained on the past only, forecasts the next 60 minutes at
// every minute, and is retrained as the origin moves on, exactly as a pool does. Scored as
// the pools score themselves (ensemble.h) but with plain means instead of a half-life.
// Deterministic for a seed.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "scale/ensemble.h"
#include "scale/erlang.h"

namespace drover::scale {

struct BacktestOptions {
  std::vector<std::string> models;             // members; the ensemble of them is scored too
  int64_t train_minutes = 7 * kMinutesPerDay;  // the first origin
  int64_t refit_minutes = kMinutesPerDay;      // retraining along the way
  SizingModel sizing;                          // for the MAE in agents
  uint64_t seed = 1;
};

struct BacktestReport {
  std::vector<Ensemble::ModelScores> scores;  // per model, then "ensemble"
  std::vector<double> fit_seconds;            // per model: wall time of all its trainings
  int64_t origins = 0, fits = 0;
  double seconds = 0;
};

absl::StatusOr<BacktestReport> Backtest(const Series& s, const BacktestOptions& o);

}  // namespace drover::scale
