#include "scale/gbt.h"

#include <xgboost/c_api.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace drover::scale {
namespace {

constexpr int kBlockMinutes = 5;
constexpr int kBlocks = kMaxHorizon / kBlockMinutes;
static_assert(kBlocks * kBlockMinutes == kMaxHorizon);
constexpr int kLags = 10;
constexpr double kPi = 3.14159265358979323846;
constexpr float kMissing = std::numeric_limits<float>::quiet_NaN();

// The columns of a row: one (origin, target block) pair. See gbt.h for what they mean.
enum Feature : int {
  kLag1 = 0,       // kLag1 + k - 1: the minute k before the origin, k = 1..kLags
  kMean5 = kLags,  // the mean of the last 15 minutes is the base (FillRow), no column
  kMean30,
  kMean60,
  kMean240,
  kDayMid,
  kDayBlock,
  kDayWide,
  kDayLevel,
  kWeekMid,
  kWeekBlock,
  kWeekWide,
  kWeekLevel,
  kSinMinute,
  kCosMinute,
  kDayOfWeek,
  kQueue,
  kHorizon,
  kNumFeatures
};

// ---- XGBoost handles, freed by their owners.

struct BoosterFree {
  void operator()(void* h) const { XGBoosterFree(h); }
};
struct DMatrixFree {
  void operator()(void* h) const { XGDMatrixFree(h); }
};
using BoosterPtr = std::unique_ptr<void, BoosterFree>;
using DMatrixPtr = std::unique_ptr<void, DMatrixFree>;

// XGBoost's last error, without the stack trace it appends on the following lines.
absl::Status XgbError(const char* call) {
  std::string message = XGBGetLastError();
  message.resize(std::min(message.size(), message.find('\n')));
  return absl::InternalError(absl::StrCat("gbt: xgboost ", call, ": ", message));
}

// ---- Features.

// The known minutes [0, known) of a series, read by single minutes and window means.
// `prefix` (prefix[i] = sum of the first i minutes, size >= known + 1) makes a mean O(1) for
// Fit, which builds thousands of rows; Predict builds at most kBlocks and sums directly.
class HistoryView {
 public:
  HistoryView(const Series& s, int64_t known, const std::vector<double>* prefix)
      : s_(s), known_(known), prefix_(prefix) {}

  int64_t known() const { return known_; }

  double At(int64_t i) const {
    if (i < 0 || i >= known_) return std::nan("");
    return s_.arrivals[static_cast<size_t>(i)];
  }

  // Mean over the part of [lo, hi) that is known: a recent window of a short history is
  // still a level; NaN when nothing of it is known.
  double Mean(int64_t lo, int64_t hi) const {
    lo = std::max<int64_t>(lo, 0);
    hi = std::min(hi, known_);
    if (hi <= lo) return std::nan("");
    double sum = 0;
    if (prefix_ != nullptr) {
      sum = (*prefix_)[static_cast<size_t>(hi)] - (*prefix_)[static_cast<size_t>(lo)];
    } else {
      for (int64_t i = lo; i < hi; ++i) sum += s_.arrivals[static_cast<size_t>(i)];
    }
    return sum / static_cast<double>(hi - lo);
  }

  double QueueAtEnd() const {
    if (known_ == 0 || s_.queue.size() < static_cast<size_t>(known_)) return std::nan("");
    return s_.queue[static_cast<size_t>(known_ - 1)];
  }

  // Calendar minute (counted from a Monday 00:00) of index i, never negative.
  int64_t CalendarMinute(int64_t i) const {
    const int64_t m = (s_.start_minute + i) % kMinutesPerWeek;
    return m < 0 ? m + kMinutesPerWeek : m;
  }

 private:
  const Series& s_;
  int64_t known_;
  const std::vector<double>* prefix_;
};

// Fills `row` (kNumFeatures floats) for the origin at the end of `h` and target block `b`
// (minutes 5b+1 .. 5b+5 after the origin, indices known + 5b .. known + 5b + 4). Returns the
// base: sqrt of the mean of the last 15 minutes (0 for none), which the target and every
// feature that counts arrivals are taken relative to, as sqrt(value) - base (see gbt.h).
double FillRow(const HistoryView& h, int b, float* row) {
  const int64_t n = h.known();
  const double level15 = h.Mean(n - 15, n);
  const double base = std::isnan(level15) ? 0.0 : std::sqrt(level15);
  auto rel = [base](double v) {
    return std::isnan(v) ? kMissing : static_cast<float>(std::sqrt(v) - base);
  };
  for (int k = 1; k <= kLags; ++k) row[kLag1 + k - 1] = rel(h.At(n - k));
  row[kMean5] = rel(h.Mean(n - 5, n));
  row[kMean30] = rel(h.Mean(n - 30, n));
  row[kMean60] = rel(h.Mean(n - 60, n));
  row[kMean240] = rel(h.Mean(n - 240, n));

  const int64_t block_lo = n + static_cast<int64_t>(b) * kBlockMinutes;
  const int64_t mid = block_lo + kBlockMinutes / 2;
  // A seasonal window that starts before the history is missing, not a partial mean: a
  // partial "yesterday" would be a different quantity from the full one the trees learned.
  auto seasonal = [&](int64_t period, int first) {
    const int64_t then = mid - period;
    row[first] = rel(h.At(then));
    row[first + 1] =
        block_lo - period >= 0 ? rel(h.Mean(block_lo - period, block_lo - period + 5)) : kMissing;
    row[first + 2] = then - 7 >= 0 ? rel(h.Mean(then - 7, then + 8)) : kMissing;
    row[first + 3] = n - period - 60 >= 0 ? rel(h.Mean(n - period - 60, n - period)) : kMissing;
  };
  seasonal(kMinutesPerDay, kDayMid);
  seasonal(kMinutesPerWeek, kWeekMid);

  const int64_t cal = h.CalendarMinute(mid);
  const double angle = 2 * kPi * static_cast<double>(cal % kMinutesPerDay) / kMinutesPerDay;
  row[kSinMinute] = static_cast<float>(std::sin(angle));
  row[kCosMinute] = static_cast<float>(std::cos(angle));
  row[kDayOfWeek] = static_cast<float>(cal / kMinutesPerDay);
  row[kQueue] = static_cast<float>(h.QueueAtEnd());
  row[kHorizon] = static_cast<float>(b * kBlockMinutes + (kBlockMinutes + 1) / 2);
  return base;
}

// sqrt of the mean rate of block b after the origin: the trees learn it less the row's base.
double BlockLevel(const std::vector<double>& prefix, int64_t origin, int b) {
  const auto lo = static_cast<size_t>(origin + static_cast<int64_t>(b) * kBlockMinutes);
  return std::sqrt(std::max(0.0, (prefix[lo + kBlockMinutes] - prefix[lo]) / kBlockMinutes));
}

// ---- Poisson noise of one minute, in sqrt space.

// Var(sqrt(X)) for X ~ Poisson(lambda), summed over the pmf where it is not negligible.
double VarSqrtPoisson(double lambda) {
  if (lambda <= 0) return 0;
  const double spread = 12 * std::sqrt(lambda) + 25;
  const auto lo = static_cast<int64_t>(std::max(0.0, std::floor(lambda - spread)));
  const auto hi = static_cast<int64_t>(std::ceil(lambda + spread));
  double mean_sqrt = 0;
  const double log_lambda = std::log(lambda);
  for (int64_t k = lo; k <= hi; ++k) {
    const double kd = static_cast<double>(k);
    mean_sqrt += std::exp(-lambda + kd * log_lambda - std::lgamma(kd + 1)) * std::sqrt(kd);
  }
  return std::max(0.0, lambda - mean_sqrt * mean_sqrt);
}

// The standard deviation to add (in sqrt space) to the residual of a block mean to get the
// spread of one minute at rate lambda: Var(sqrt of a minute's count) less Var(sqrt of a
// 5-minute mean), which the residuals already hold. Tabulated once on a log grid of lambda;
// above the grid it is at its limit 1/4 - 1/20.
class MinuteNoise {
 public:
  static const MinuteNoise& Get() {
    static const MinuteNoise* table = new MinuteNoise();
    return *table;
  }

  double Sd(double lambda) const {
    if (lambda <= 0) return 0;
    const double pos = (std::log10(lambda) - kLogLo) * kPerDecade;
    if (pos <= 0) return std::sqrt(var_[0] * lambda / std::pow(10.0, kLogLo));
    if (pos >= kNodes - 1) return std::sqrt(var_[kNodes - 1]);
    const int i = static_cast<int>(pos);
    const double f = pos - i;
    return std::sqrt(var_[i] * (1 - f) + var_[i + 1] * f);
  }

 private:
  static constexpr double kLogLo = -3, kLogHi = 3;
  static constexpr int kPerDecade = 16;
  static constexpr int kNodes = static_cast<int>((kLogHi - kLogLo) * kPerDecade) + 1;

  MinuteNoise() {
    for (int i = 0; i < kNodes; ++i) {
      const double lambda = std::pow(10.0, kLogLo + static_cast<double>(i) / kPerDecade);
      const double one = VarSqrtPoisson(lambda);
      const double block = VarSqrtPoisson(kBlockMinutes * lambda) / kBlockMinutes;
      var_[i] = std::max(0.0, one - block);
    }
  }

  std::array<double, kNodes> var_{};
};

// ---- Residual spread of one block.

constexpr int kFoldThinning = 2;   // fold models train on every kFoldThinning-th origin
constexpr int kResidualGrid = 50;  // equal-probability quantiles kept of the residuals
constexpr int kSigmaNodes = 29;
constexpr double kSigmaStep = 0.025;  // sigma grid 0 .. 0.7 (the noise sd peaks near 0.6)
constexpr std::array<double, 3> kLevels = {0.1, 0.5, 0.9};

double NormalCdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

// Linear-interpolated quantile q of sorted values.
double SortedQuantile(const std::vector<double>& sorted, double q) {
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const auto i = static_cast<size_t>(pos);
  if (i + 1 >= sorted.size()) return sorted.back();
  const double f = pos - static_cast<double>(i);
  return sorted[i] * (1 - f) + sorted[i + 1] * f;
}

// The spread of the residuals of one block at one level.
struct ResidualSpread {
  std::array<double, kResidualGrid> grid{};  // residual quantiles at (i + 0.5) / kResidualGrid
  // offsets[s][l]: quantile kLevels[l] of (residual + N(0, (s * kSigmaStep)^2)).
  std::array<std::array<double, 3>, kSigmaNodes> offsets{};

  // No model error: the minute's Poisson noise alone, N(0, sigma^2) in sqrt space.
  static ResidualSpread PoissonOnly() {
    constexpr std::array<double, 3> kZ = {-1.2815515655446004, 0, 1.2815515655446004};
    ResidualSpread bs;
    for (int s = 0; s < kSigmaNodes; ++s) {
      for (int l = 0; l < 3; ++l) bs.offsets[s][l] = s * kSigmaStep * kZ[l];
    }
    return bs;
  }

  // From the residuals of held-out rows (none: Poisson only).
  static ResidualSpread From(std::vector<double> residuals) {
    if (residuals.empty()) return PoissonOnly();
    ResidualSpread bs;
    // Centred: a fold model's bias on its held-out days (a launch, an outage) is not the
    // final model's, which is fit to those days too; the residuals give the spread only.
    double mean = 0;
    for (double r : residuals) mean += r;
    mean /= static_cast<double>(residuals.size());
    for (double& r : residuals) r -= mean;
    std::sort(residuals.begin(), residuals.end());
    for (int i = 0; i < kResidualGrid; ++i) {
      bs.grid[i] = SortedQuantile(residuals, (i + 0.5) / kResidualGrid);
    }
    for (int s = 0; s < kSigmaNodes; ++s) {
      const double sigma = s * kSigmaStep;
      for (int l = 0; l < 3; ++l) bs.offsets[s][l] = bs.MixtureQuantile(sigma, kLevels[l]);
    }
    return bs;
  }

  double MixtureQuantile(double sigma, double level) const {
    if (sigma == 0) {
      std::vector<double> g(grid.begin(), grid.end());
      return SortedQuantile(g, level);
    }
    auto cdf = [&](double x) {
      double sum = 0;
      for (double r : grid) sum += NormalCdf((x - r) / sigma);
      return sum / kResidualGrid;
    };
    double lo = grid.front() - 6 * sigma, hi = grid.back() + 6 * sigma;
    for (int it = 0; it < 40; ++it) {  // brackets the root to 1e-11 of its width
      const double mid = 0.5 * (lo + hi);
      (cdf(mid) < level ? lo : hi) = mid;
    }
    return 0.5 * (lo + hi);
  }

  std::array<double, 3> Offsets(double sigma) const {
    const double pos = std::clamp(sigma / kSigmaStep, 0.0, kSigmaNodes - 1.0);
    const int i = std::min(static_cast<int>(pos), kSigmaNodes - 2);
    const double f = pos - i;
    std::array<double, 3> out;
    for (int l = 0; l < 3; ++l) out[l] = offsets[i][l] * (1 - f) + offsets[i + 1][l] * f;
    return out;
  }

  // The mean rate of the block for a prediction z (sqrt space): the smearing estimate.
  double Mean(double z) const {
    double sum = 0;
    for (double r : grid) {
      const double v = std::max(0.0, z + r);
      sum += v * v;
    }
    return sum / kResidualGrid;
  }
};

// The residual spread of one block, by level of the prediction: counts are noisier and
// bursts larger at busy times, so one spread for all levels would be too wide at night
// (and, through the smearing mean, bias the quiet minutes up) and too narrow at the peak.
struct BlockSpread {
  static constexpr int kLevelBins = 3;
  static constexpr size_t kMinPerBin = 200;

  std::vector<double> upper;  // upper[i]: the largest z of bin i (all but the last)
  std::vector<ResidualSpread> bins = {ResidualSpread::PoissonOnly()};

  // From (prediction, residual) pairs of held-out rows; none: Poisson spread only.
  static BlockSpread From(std::vector<std::pair<double, double>> rows) {
    BlockSpread bs;
    if (rows.empty()) return bs;
    std::sort(rows.begin(), rows.end());
    const size_t nbins =
        std::clamp<size_t>(rows.size() / kMinPerBin, 1, static_cast<size_t>(kLevelBins));
    bs.bins.clear();
    for (size_t i = 0; i < nbins; ++i) {
      const size_t lo = rows.size() * i / nbins, hi = rows.size() * (i + 1) / nbins;
      std::vector<double> residuals;
      residuals.reserve(hi - lo);
      for (size_t r = lo; r < hi; ++r) residuals.push_back(rows[r].second);
      bs.bins.push_back(ResidualSpread::From(std::move(residuals)));
      if (i + 1 < nbins) bs.upper.push_back(rows[hi - 1].first);
    }
    return bs;
  }

  const ResidualSpread& At(double z) const {
    size_t i = 0;
    while (i < upper.size() && z > upper[i]) ++i;
    return bins[i];
  }
};

// ---- Training.

struct Rows {
  std::vector<float> x;  // row-major, kNumFeatures columns
  std::vector<float> y;
  std::vector<double> base;  // what each row's target is relative to (FillRow)
  size_t size() const { return y.size(); }
};

// Rows for origins first, first + stride, ... <= last, every block.
Rows BuildRows(const Series& s, const std::vector<double>& prefix, int64_t first, int64_t last,
               int64_t stride) {
  Rows rows;
  const size_t origins = first > last ? 0 : static_cast<size_t>((last - first) / stride + 1);
  rows.x.resize(origins * kBlocks * kNumFeatures);
  rows.y.resize(origins * kBlocks);
  rows.base.resize(origins * kBlocks);
  size_t r = 0;
  for (int64_t t = first; t <= last; t += stride) {
    const HistoryView view(s, t, &prefix);
    for (int b = 0; b < kBlocks; ++b, ++r) {
      float* row = &rows.x[r * kNumFeatures];
      rows.base[r] = FillRow(view, b, row);
      rows.y[r] = static_cast<float>(BlockLevel(prefix, t, b) - rows.base[r]);
    }
  }
  return rows;
}

absl::StatusOr<DMatrixPtr> MakeDMatrix(const Rows& rows, int threads) {
  DMatrixHandle h = nullptr;
  if (XGDMatrixCreateFromMat_omp(rows.x.data(), rows.size(), kNumFeatures, kMissing, &h, threads) !=
      0) {
    return XgbError("XGDMatrixCreateFromMat");
  }
  DMatrixPtr m(h);
  if (XGDMatrixSetFloatInfo(h, "label", rows.y.data(), rows.size()) != 0) {
    return XgbError("XGDMatrixSetFloatInfo(label)");
  }
  return m;
}

absl::StatusOr<BoosterPtr> Train(const Rows& rows, const GbtOptions& o) {
  absl::StatusOr<DMatrixPtr> dtrain = MakeDMatrix(rows, o.threads);
  if (!dtrain.ok()) return dtrain.status();
  DMatrixHandle dm = dtrain->get();
  BoosterHandle h = nullptr;
  if (XGBoosterCreate(&dm, 1, &h) != 0) return XgbError("XGBoosterCreate");
  BoosterPtr booster(h);
  // Starting from the mean label, not XGBoost's 0.5, so that few or shrunken trees (an
  // all-zero history) still land on the data.
  double mean_label = 0;
  for (float y : rows.y) mean_label += y;
  mean_label /= static_cast<double>(std::max<size_t>(rows.size(), 1));
  const std::vector<std::pair<std::string, std::string>> params = {
      {"booster", "gbtree"},
      {"objective", "reg:squarederror"},
      {"tree_method", "hist"},
      {"max_depth", absl::StrCat(o.max_depth)},
      {"eta", absl::StrCat(o.learning_rate)},
      {"subsample", absl::StrCat(o.subsample)},
      {"seed", absl::StrCat(o.seed)},
      {"nthread", absl::StrCat(o.threads)},
      {"base_score", absl::StrCat(mean_label)},
      {"verbosity", "0"},
      {"max_bin", "64"},  // as accurate as 256 on the traces, a quarter faster
  };
  for (const auto& [key, value] : params) {
    if (XGBoosterSetParam(h, key.c_str(), value.c_str()) != 0) {
      return XgbError(absl::StrCat("XGBoosterSetParam(", key, ")").c_str());
    }
  }
  for (int i = 0; i < o.trees; ++i) {
    if (XGBoosterUpdateOneIter(h, i, dm) != 0) return XgbError("XGBoosterUpdateOneIter");
  }
  return booster;
}

// Predictions for `n` rows of kNumFeatures floats, in place (no DMatrix), into out[0..n).
absl::Status PredictRows(BoosterHandle booster, const float* x, size_t n, double* out) {
  char iface[192];
  std::snprintf(iface, sizeof(iface),
                "{\"data\": [%llu, true], \"shape\": [%zu, %d], \"typestr\": \"<f4\", "
                "\"version\": 3}",
                static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(x)), n, kNumFeatures);
  static constexpr char kConfig[] =
      "{\"type\": 0, \"training\": false, \"iteration_begin\": 0, \"iteration_end\": 0, "
      "\"strict_shape\": false, \"missing\": NaN, \"cache_id\": 0}";
  const bst_ulong* shape = nullptr;
  bst_ulong dim = 0;
  const float* result = nullptr;
  if (XGBoosterPredictFromDense(booster, iface, kConfig, nullptr, &shape, &dim, &result) != 0) {
    return XgbError("XGBoosterPredictFromDense");
  }
  // The buffer belongs to the booster (per thread) until its next prediction: copy now.
  for (size_t i = 0; i < n; ++i) out[i] = result[i];
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateGbtOptions(const GbtOptions& o) {
  auto bad = [](const char* field, const std::string& want, auto got) {
    return absl::InvalidArgumentError(
        absl::StrCat("gbt: ", field, ": must be ", want, ", got ", got));
  };
  if (o.trees < 1) return bad("trees", ">= 1", o.trees);
  if (o.max_depth < 1) return bad("max_depth", ">= 1", o.max_depth);
  if (!(o.learning_rate > 0 && o.learning_rate <= 1)) {
    return bad("learning_rate", "in (0, 1]", o.learning_rate);
  }
  if (!(o.subsample > 0 && o.subsample <= 1)) return bad("subsample", "in (0, 1]", o.subsample);
  if (o.threads < 1) return bad("threads", ">= 1", o.threads);
  if (o.max_train_minutes < GbtForecaster::kMinFitMinutes) {
    return bad("max_train_minutes", absl::StrCat(">= ", GbtForecaster::kMinFitMinutes),
               o.max_train_minutes);
  }
  if (o.stride < 1) return bad("stride", ">= 1", o.stride);
  if (o.folds < 0 || o.folds == 1) return bad("folds", "0 or >= 2", o.folds);
  return absl::OkStatus();
}

struct GbtForecaster::Impl {
  BoosterPtr booster;  // null: the short-history fallback
  std::array<BlockSpread, kBlocks> spread;
};

GbtForecaster::GbtForecaster(GbtOptions options) : options_(std::move(options)) {}
GbtForecaster::~GbtForecaster() = default;
GbtForecaster::GbtForecaster(GbtForecaster&&) noexcept = default;
GbtForecaster& GbtForecaster::operator=(GbtForecaster&&) noexcept = default;

bool GbtForecaster::has_model() const { return impl_ != nullptr && impl_->booster != nullptr; }

absl::Status GbtForecaster::Fit(const Series& history) {
  if (absl::Status st = ValidateGbtOptions(options_); !st.ok()) return st;
  const auto n = static_cast<int64_t>(history.size());
  std::vector<double> prefix(history.size() + 1, 0.0);
  for (size_t i = 0; i < history.size(); ++i) {
    const double a = history.arrivals[i];
    if (!std::isfinite(a) || a < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("gbt: arrivals[", i, "]: must be a finite count >= 0, got ", a));
    }
    prefix[i + 1] = prefix[i] + a;
  }
  auto impl = std::make_unique<Impl>();
  MinuteNoise::Get();  // its table is built here, off the engine thread, not in a Predict

  // Training origins: every row's target block inside the window, its recent features
  // (up to an hour back) inside the history.
  const int64_t window_start = std::max<int64_t>(0, n - options_.max_train_minutes);
  const int64_t first = std::max<int64_t>(window_start, 60);
  const int64_t last = n - kMaxHorizon;
  constexpr int64_t kMinOrigins = 100;
  if (n < kMinFitMinutes || last - first + 1 < kMinOrigins) {
    impl_ = std::move(impl);
    return absl::OkStatus();
  }
  // A short history trains on every origin rather than on too few rows.
  const int64_t stride =
      std::clamp<int64_t>((last - first + 1) / 2000, 1, static_cast<int64_t>(options_.stride));

  const Rows all = BuildRows(history, prefix, first, last, stride);
  auto origin_of = [&](size_t row) { return first + static_cast<int64_t>(row / kBlocks) * stride; };

  // Out-of-fold residuals: the window's origins in `folds` contiguous chunks; each chunk is
  // predicted by a model trained on the others less the rows whose target minutes overlap
  // it. Every day of the window then counts, not just its last ones (which may be a
  // holiday, a launch or an outage). The fold models train on every other row of the final
  // model's: they only measure the spread, and this halves their cost.
  std::array<std::vector<std::pair<double, double>>, kBlocks> residuals;
  const int64_t span = last - first + 1;
  for (int k = 0; k < options_.folds; ++k) {
    const int64_t lo = first + span * k / options_.folds;
    const int64_t hi = first + span * (k + 1) / options_.folds;  // held origins [lo, hi)
    Rows train;
    for (size_t r = 0; r < all.size(); r += kBlocks) {
      const int64_t t = origin_of(r);
      if ((r / kBlocks) % kFoldThinning != 0) continue;
      if (t + kMaxHorizon > lo && t < hi + kMaxHorizon - 1) continue;
      train.x.insert(train.x.end(), all.x.begin() + r * kNumFeatures,
                     all.x.begin() + (r + kBlocks) * kNumFeatures);
      train.y.insert(train.y.end(), all.y.begin() + r, all.y.begin() + r + kBlocks);
      train.base.insert(train.base.end(), all.base.begin() + r, all.base.begin() + r + kBlocks);
    }
    if (train.size() < static_cast<size_t>(kMinOrigins * kBlocks)) continue;
    absl::StatusOr<BoosterPtr> model = Train(train, options_);
    if (!model.ok()) return model.status();
    const Rows held = BuildRows(history, prefix, lo, hi - 1, stride);
    std::vector<double> pred(held.size());
    if (absl::Status st = PredictRows(model->get(), held.x.data(), held.size(), pred.data());
        !st.ok()) {
      return st;
    }
    for (size_t r = 0; r < held.size(); ++r) {
      const double level = pred[r] + held.base[r];
      residuals[r % kBlocks].emplace_back(level, static_cast<double>(held.y[r]) - pred[r]);
    }
  }
  for (int b = 0; b < kBlocks; ++b) impl->spread[b] = BlockSpread::From(std::move(residuals[b]));

  absl::StatusOr<BoosterPtr> model = Train(all, options_);
  if (!model.ok()) return model.status();
  impl->booster = *std::move(model);
  impl_ = std::move(impl);
  return absl::OkStatus();
}

absl::StatusOr<Forecast> GbtForecaster::Predict(const Series& recent, int horizon) const {
  if (impl_ == nullptr) {
    return absl::FailedPreconditionError("gbt: Predict before a successful Fit");
  }
  if (horizon < 1 || horizon > kMaxHorizon) {
    return absl::InvalidArgumentError(
        absl::StrCat("gbt: horizon: must be in 1..", kMaxHorizon, ", got ", horizon));
  }
  const int blocks = (horizon + kBlockMinutes - 1) / kBlockMinutes;
  const HistoryView view(recent, static_cast<int64_t>(recent.size()), nullptr);
  std::array<double, kBlocks> z{};
  if (impl_->booster != nullptr) {
    std::array<float, kBlocks * kNumFeatures> x;
    std::array<double, kBlocks> base;
    for (int b = 0; b < blocks; ++b) base[b] = FillRow(view, b, &x[b * kNumFeatures]);
    if (absl::Status st = PredictRows(impl_->booster.get(), x.data(), blocks, z.data()); !st.ok()) {
      return st;
    }
    for (int b = 0; b < blocks; ++b) z[b] += base[b];
  } else {
    const double level = view.Mean(view.known() - 60, view.known());
    z.fill(std::isnan(level) ? 0.0 : std::sqrt(level));
  }

  Forecast f;
  f.model = "gbt";
  f.minutes.reserve(horizon);
  const MinuteNoise& noise = MinuteNoise::Get();
  auto square_pos = [](double v) { return v > 0 ? v * v : 0.0; };
  for (int b = 0; b < blocks; ++b) {
    if (!std::isfinite(z[b])) {
      return absl::InternalError(absl::StrCat("gbt: the model predicted ", z[b], " for block ", b));
    }
    const ResidualSpread& bs = impl_->spread[b].At(z[b]);
    Quantiles q;
    q.mean = bs.Mean(z[b]);
    const std::array<double, 3> off = bs.Offsets(noise.Sd(q.mean));
    q.p10 = square_pos(z[b] + off[0]);
    q.p50 = std::max(q.p10, square_pos(z[b] + off[1]));
    q.p90 = std::max(q.p50, square_pos(z[b] + off[2]));
    const int end = std::min(horizon, (b + 1) * kBlockMinutes);
    for (int m = b * kBlockMinutes; m < end; ++m) f.minutes.push_back(q);
  }
  return f;
}

}  // namespace drover::scale
