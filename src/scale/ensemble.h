// scale: a pool's forecasters together — the members, their rolling errors, the ensemble
// and the confidence of each horizon.
//
// Once per closed minute (OnMinute) the ensemble
//   1. scores the forecasts made earlier whose horizon has now passed: for a forecast made
//      after minute o, at horizon h (a multiple of 5 minutes), the mean of the forecast's
//      minutes h-4..h against the mean of the arrivals of those minutes (the 5-minute
//      window ending at the horizon), in arrivals per minute and in agents (through the
//      sizing model); plus whether that actual window mean fell in the forecast's p10-p90
//      band. Each error feeds an exponentially weighted mean with a half-life of a day;
//   2. forecasts the next 60 minutes with every member and combines them: per horizon, the
//      weights are 1 / (member's weighted MAE + 0.01)^2, normalised, from the members' own
//      recent errors at that horizon (members with too few scored forecasts get no weight
//      while others have enough; all equal while none has). Quantiles combine by the same
//      weights (quantile averaging);
//      The combined band is then calibrated on the ensemble's own record (adaptive conformal
//      inference): per horizon the spreads above and below p50 are multiplied by factors
//      that grow by 0.9 x 2 % after an actual window mean beyond the band's side and shrink
//      by 0.1 x 2 % otherwise, which settles where 10 % fall beyond each side;
//   3. rates its confidence per horizon, in [0, 1]:
//         accuracy = 1 - min(1, MAE in agents / (2 x max(1, mean actual agents)))
//         coverage = min(1, share of actual window means inside p10-p90 / 0.8)
//         confidence = accuracy x coverage   (0 until `min_samples` forecasts were scored)
//      so a forecast off by 20 % of the pool's size with a well-calibrated band scores 0.9,
//      off by 40 % scores 0.8 (the default threshold of trust), off by the pool's whole size
//      0.5 (the default floor); one whose band misses too often loses confidence even when
//      its point value is close.
//
// Fit() (slow: seconds) trains every member on a history; the caller decides when and on
// which thread. Threading: thread-compatible.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "scale/erlang.h"
#include "scale/forecast.h"

namespace drover::scale {

inline constexpr int kScored = kMaxHorizon / 5;  // horizons 5, 10, ..., 60

struct EnsembleOptions {
  std::vector<std::string> members = {"seasonal_naive", "holt_winters"};
  std::string use = "ensemble";  // the forecast given out: "ensemble" or one member's name
  double half_life_minutes = kMinutesPerDay;
  int min_samples = 360;  // scored forecasts per horizon before confidence is given
  uint64_t seed = 1;
  // Members train on threads of their own, at once (the simulator and the backtest, whose
  // virtual clock waits for them); drover serve trains them one after another on its one
  // training thread, to leave the engine its core.
  bool parallel_fit = false;
};

struct Scores {
  double mae = 0;         // arrivals per minute, 5-minute window means
  double mae_agents = 0;  // the same through the sizing model
  double mean_agents = 0;
  double coverage = 0;  // share of actual window means inside p10-p90
  double mape = 0;      // on windows with arrivals
  int64_t samples = 0;
};

struct Snapshot {
  int64_t origin = -1;  // the forecast follows the first `origin` minutes of the series
  Forecast forecast;    // the one in use (ensemble or a member)
  std::vector<Forecast> members;
  // Per horizon 5, 10, ..., 60 ([k] = horizon 5(k+1)): confidence, each member's weight.
  std::array<double, kScored> confidence{};
  std::vector<std::array<double, kScored>> weights;
  double ConfidenceAt(int minutes) const;  // the scored horizon at or above `minutes`
};

class Ensemble {
 public:
  static absl::StatusOr<std::unique_ptr<Ensemble>> Create(const EnsembleOptions& o);

  const EnsembleOptions& options() const { return options_; }
  // The sizing model errors are expressed in (its service time may change as it is learnt).
  void set_sizing(const SizingModel& m) { sizing_ = m; }
  const SizingModel& sizing() const { return sizing_; }

  // Trains every member on `history` (slow). Members keep their scores.
  absl::Status Fit(const Series& history);
  // Trains fresh members off to the side (another thread may run it), to be installed with
  // Install(); leaves this ensemble untouched.
  // `from`: copies of the current members (Clones(); nullptr entries train afresh).
  static absl::StatusOr<std::vector<std::unique_ptr<Forecaster>>> FitMembers(
      const EnsembleOptions& o, const Series& history,
      std::vector<std::unique_ptr<Forecaster>> from = {});
  std::vector<std::unique_ptr<Forecaster>> Clones() const;
  // Members with model files: saved as `prefix` + name + ".model", loaded likewise
  // (Load: what is missing or refused is reported per member; those stay untrained).
  absl::Status SaveModels(const std::string& prefix) const;
  std::vector<std::string> LoadModels(const std::string& prefix);
  void Install(std::vector<std::unique_ptr<Forecaster>> members);
  int64_t fits() const { return fits_; }
  int64_t fitted_minutes() const { return fitted_minutes_; }

  // Minute `s.size() - 1` closed: score, forecast, rate (see above). Member errors are
  // logged in `errors` (a member that fails to predict is skipped).
  void OnMinute(const Series& s);
  const Snapshot& latest() const { return latest_; }

  // Scores per model (members then "ensemble") and scored horizon.
  struct ModelScores {
    std::string model;
    std::array<Scores, kScored> at;
  };
  std::vector<ModelScores> scores() const;
  int64_t predict_errors() const { return predict_errors_; }

 private:
  explicit Ensemble(EnsembleOptions o) : options_(std::move(o)) {}
  struct Running {  // exponentially weighted sums
    double w = 0, abs = 0, abs_agents = 0, agents = 0, cover = 0, ape = 0, ape_w = 0;
    int64_t n = 0;
  };
  void Score(const Series& s);
  Forecast Combine(const std::vector<Forecast>& fs, const Snapshot& snap) const;

  EnsembleOptions options_;
  SizingModel sizing_;
  std::vector<std::unique_ptr<Forecaster>> members_;
  int use_ = -1;  // index of the member in use, -1: the ensemble
  // Past forecasts awaiting their horizons: origin, then members' and the ensemble's.
  struct Past {
    int64_t origin;
    std::vector<Forecast> f;  // members..., ensemble
  };
  std::vector<Past> past_;                             // a ring of the last kMaxHorizon + 1 origins
  std::vector<std::array<Running, kScored>> running_;  // members..., ensemble
  // Adaptive calibration of the ensemble's band per scored horizon: the spreads p90 - p50
  // and p50 - p10 are scaled by these factors, nudged after every scored window so that
  // 10 % of actual window means end above p90 and 10 % below p10.
  std::array<double, kScored> upper_{}, lower_{};
  Snapshot latest_;
  int64_t fits_ = 0, fitted_minutes_ = 0, predict_errors_ = 0;
};

}  // namespace drover::scale
