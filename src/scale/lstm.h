// scale: the LSTM-with-attention member of the forecaster family (libtorch, CPU only).
//
// The network reads the last `lookback` minutes before the forecast origin as steps of
// `step_minutes` minutes (the LSTM's cost is per step, so 5-minute steps make Fit and
// Predict five times cheaper than per-minute steps, and the 5-minute mean is a far less
// noisy level than one minute's count). Each step carries
//   - the step's mean arrivals, log1p-transformed and standardised by the training
//     window's statistics,
//   - the calendar of the step's last minute: sin/cos of the minute of day and of the
//     position in the week,
//   - the queue depth at the step's end (log1p, standardised) when the Series has one,
//     else 0.
// One LSTM layer; additive (Bahdanau) attention over its outputs, queried by the last
// output; a linear head on [attention context, last output] that predicts, for each of
// the 12 five-minute blocks 1-5, 6-10, ..., 56-60 minutes ahead, the p10, p50 and p90 of a
// minute's arrivals (trained with the pinball loss against every minute of the block)
// and the block's mean rate (squared error in arrivals). The p50 and the mean are offsets
// from the last 15 minutes' level, p10/p90 are p50 -/+ softplus offsets, so the quantiles
// are ordered by construction. Predict interpolates between block centres to get
// per-minute values and clamps them at 0.
//
// Training: windows every `stride` minutes of the most recent `max_train_minutes`, shuffled
// into mini-batches (Adam, gradient clipping); the last 10 % of the windows (in time)
// validate; the weights with the best validation loss are kept; stops at `epochs`, after
// `patience` epochs without improvement, or before `max_train_seconds` would be exceeded
// (whichever first). Refit warm-starts from the current weights and normalisation for a
// few epochs on the most recent `refit_minutes` (the daily retraining).
//
// A history too short to train on (fewer than lookback + 60 + 63 minutes, i.e. under 64
// training windows) is not an error (see Forecaster::Fit): the forecaster then predicts,
// for every minute, the mean and empirical quantiles of the last `lookback` minutes it is
// given, and trained() is false. A trained model given fewer than `lookback` recent
// minutes treats the missing steps as average ones (standardised value 0).
//
// Determinism: the same history, options and seed give the same weights as long as
// `threads` is 1 and no time budget cuts training short (a budget stops at a point that
// depends on the machine's speed). Weight initialisation and shuffling use a generator
// owned by the forecaster, not torch's global one. Fit and Refit set torch's intra-op
// thread count (a process-wide setting) to `threads`.
//
// Threading: thread-compatible (const Predict calls may run concurrently).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "scale/forecast.h"

namespace drover::scale {

struct LstmOptions {
  int lookback = 120;    // minutes of input before the origin; a multiple of step_minutes
  int step_minutes = 5;  // minutes per LSTM step
  int hidden = 32;       // LSTM units
  int epochs = 40;       // upper bound; early stopping and the time budget usually end first
  int patience = 6;      // epochs without a better validation loss before stopping
  int batch = 128;
  int stride = 2;  // minutes between the origins of consecutive training windows
  double learning_rate = 3e-3;
  double max_train_seconds = 50;  // the whole Fit, data preparation included
  uint64_t seed = 1;
  int threads = 1;                                  // torch intra-op threads during Fit/Refit
  int64_t max_train_minutes = 14 * kMinutesPerDay;  // Fit learns from the most recent window
  // Refit (daily retraining): warm start, fewer epochs, a smaller step, a tight budget.
  int64_t refit_minutes = 3 * kMinutesPerDay;
  int refit_epochs = 4;
  double refit_learning_rate = 1e-3;
  double refit_max_seconds = 3;
};

// Field-named errors ("lookback: must be a positive multiple of step_minutes (5), got 7").
absl::Status ValidateLstmOptions(const LstmOptions& o);

class LstmForecaster : public Forecaster {
 public:
  // Version of the saved-model format that Save writes and Load reads.
  static constexpr int kFormatVersion = 1;

  explicit LstmForecaster(LstmOptions o = {});
  ~LstmForecaster() override;
  LstmForecaster(LstmForecaster&&) noexcept;
  LstmForecaster& operator=(LstmForecaster&&) noexcept;

  std::string_view name() const override { return "lstm"; }
  // Full training from freshly initialised weights. Errors: invalid options, arrivals that
  // are negative or not finite, a queue whose length differs from the arrivals'.
  absl::Status Fit(const Series& history) override;
  // Warm start from the current weights (and the normalisation Fit chose): a few epochs on
  // the most recent refit_minutes, keeping the initial weights unless validation improves.
  // Without trained weights it is Fit.
  absl::Status Refit(const Series& history);
  absl::StatusOr<Forecast> Predict(const Series& recent, int horizon) const override;

  // True once Fit/Refit/Load produced network weights (false in the short-history mode).
  bool trained() const;
  const LstmOptions& options() const;

  // Saved model file (little-endian): magic "DRVRLSTM", the format version, the payload's
  // length; the payload (options, training window, training metrics, normalisation,
  // weights by name and shape); an FNV-1a 64 checksum of everything before it. Save writes
  // a temporary file and renames it over `path`. Load replaces this forecaster's options
  // and weights only when the whole file is valid; otherwise it fails with a status that
  // names the problem: missing file, bad magic, truncated, other version, checksum, or a
  // corrupt field.
  absl::Status Save(const std::string& path) const override;
  absl::Status Load(const std::string& path) override;
  bool persistent() const override { return true; }
  // The file's bytes, and reading them back ("what" names the source in errors).
  std::string Serialize() const;
  absl::Status Deserialize(absl::string_view data, const std::string& what);
  // A trained copy (nullptr when untrained); Update refits it (a warm start), and trains
  // afresh whenever the history has grown kFullFitGrowth-fold since the last Fit (its
  // normalisation and weights then come from the longer history; a model loaded from a
  // file is trained afresh at its first Update).
  std::unique_ptr<Forecaster> Clone() const override;
  absl::Status Update(const Series& history) override;
  static constexpr int64_t kFullFitGrowth = 4;

  // The last training run (Fit or Refit) and the window it learned from, as calendar
  // minutes (Series::start_minute + index).
  struct Info {
    int version = kFormatVersion;
    int64_t first_minute = 0, last_minute = 0, minutes = 0;
    double loss = 0;  // best validation loss (pinball + weighted squared error), kept weights
    double train_seconds = 0;
    int epochs = 0;  // epochs completed by the last run
    int refits = 0;  // Refit runs since the last Fit
  };
  Info info() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace drover::scale
