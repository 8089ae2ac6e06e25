#include "scale/gbt.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace drover::scale {
namespace {

constexpr double kPi = 3.14159265358979323846;

// Poisson counts of rate(minute), from a fixed seed.
std::vector<double> PoissonCounts(int64_t first, int64_t minutes,
                                  const std::function<double(int64_t)>& rate, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> out;
  out.reserve(static_cast<size_t>(minutes));
  for (int64_t m = first; m < first + minutes; ++m) {
    std::poisson_distribution<int> draw(rate(m));
    out.push_back(draw(rng));
  }
  return out;
}

Series Make(std::vector<double> arrivals) {
  Series s;
  s.arrivals = std::move(arrivals);
  return s;
}

double DailySine(int64_t m) {
  return 60 + 50 * std::sin(2 * kPi * static_cast<double>(m % kMinutesPerDay) / kMinutesPerDay);
}

// The mean of minutes h-4..h of a forecast: the 5-minute window the forecast ends at h.
double WindowMean(const Forecast& f, int h) {
  double sum = 0;
  for (int m = h - 4; m <= h; ++m) sum += f.minutes[m - 1].mean;
  return sum / 5;
}

void ExpectWellFormed(const Forecast& f, int horizon) {
  ASSERT_EQ(f.model, "gbt");
  ASSERT_EQ(f.minutes.size(), static_cast<size_t>(horizon));
  for (const Quantiles& q : f.minutes) {
    ASSERT_TRUE(std::isfinite(q.mean) && std::isfinite(q.p10) && std::isfinite(q.p90));
    EXPECT_GE(q.mean, 0);
    EXPECT_GE(q.p10, 0);
    EXPECT_LE(q.p10, q.p50);
    EXPECT_LE(q.p50, q.p90);
  }
}

// One forecaster fit on 8 days of a daily sine (10..110 a minute), judged on the 9th.
class SineTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    all_ = new std::vector<double>(PoissonCounts(0, 9 * kMinutesPerDay, DailySine, 42));
    gbt_ = new GbtForecaster();
    Series train = Make({all_->begin(), all_->begin() + 8 * kMinutesPerDay});
    ASSERT_TRUE(gbt_->Fit(train).ok());
  }
  static void TearDownTestSuite() {
    delete gbt_;
    delete all_;
  }
  // What was known after `minutes` minutes.
  static Series Known(int64_t minutes) { return Make({all_->begin(), all_->begin() + minutes}); }

  static std::vector<double>* all_;
  static GbtForecaster* gbt_;
};
std::vector<double>* SineTest::all_ = nullptr;
GbtForecaster* SineTest::gbt_ = nullptr;

TEST_F(SineTest, BeatsAFlatMeanByAWideMargin) {
  ASSERT_TRUE(gbt_->has_model());
  double flat = 0;
  for (int64_t m = 0; m < 8 * kMinutesPerDay; ++m) flat += (*all_)[m];
  flat /= 8 * kMinutesPerDay;

  const int hs[] = {15, 30, 60};
  double gbt_err[3] = {0, 0, 0}, flat_err[3] = {0, 0, 0};
  int origins = 0;
  for (int64_t t = 8 * kMinutesPerDay; t + 60 <= 9 * kMinutesPerDay; t += 7, ++origins) {
    absl::StatusOr<Forecast> f = gbt_->Predict(Known(t), 60);
    ASSERT_TRUE(f.ok()) << f.status();
    for (int k = 0; k < 3; ++k) {
      double actual = 0;
      for (int m = hs[k] - 4; m <= hs[k]; ++m) actual += (*all_)[t - 1 + m];
      actual /= 5;
      gbt_err[k] += std::abs(WindowMean(*f, hs[k]) - actual);
      flat_err[k] += std::abs(flat - actual);
    }
  }
  for (int k = 0; k < 3; ++k) {
    // A flat mean is off by ~32 a minute on average; the Poisson noise of a 5-minute mean
    // alone is ~2.8, and a good model is near that.
    EXPECT_LT(gbt_err[k] / origins, 0.2 * flat_err[k] / origins) << "h=" << hs[k];
    EXPECT_LT(gbt_err[k] / origins, 5.0) << "h=" << hs[k];
  }
}

TEST_F(SineTest, QuantilesAreOrderedAndCoverTheMinutes) {
  int below = 0, above = 0, minutes = 0;
  for (int64_t t = 8 * kMinutesPerDay; t + 60 <= 9 * kMinutesPerDay; t += 31) {
    absl::StatusOr<Forecast> f = gbt_->Predict(Known(t), 60);
    ASSERT_TRUE(f.ok()) << f.status();
    ExpectWellFormed(*f, 60);
    for (int h = 1; h <= 60; ++h, ++minutes) {
      const double actual = (*all_)[t - 1 + h];
      below += actual < f->minutes[h - 1].p10;
      above += actual > f->minutes[h - 1].p90;
    }
  }
  // 10 % each side for a calibrated forecast; counts are integers, so a little less.
  EXPECT_GT(below, minutes * 0.03);
  EXPECT_LT(below, minutes * 0.2);
  EXPECT_GT(above, minutes * 0.03);
  EXPECT_LT(above, minutes * 0.2);
}

TEST_F(SineTest, AShortHorizonIsAPrefixOfTheLongOne) {
  const Series known = Known(8 * kMinutesPerDay + 100);
  absl::StatusOr<Forecast> full = gbt_->Predict(known, 60);
  absl::StatusOr<Forecast> part = gbt_->Predict(known, 7);
  ASSERT_TRUE(full.ok() && part.ok());
  ExpectWellFormed(*part, 7);
  for (int m = 0; m < 7; ++m) EXPECT_EQ(part->minutes[m].mean, full->minutes[m].mean);
}

TEST(GbtTest, FollowsAStepWithinFifteenMinutes) {
  std::vector<double> arrivals = PoissonCounts(
      0, 5 * kMinutesPerDay, [](int64_t) { return 10.0; }, 1);
  GbtForecaster gbt;
  ASSERT_TRUE(gbt.Fit(Make(arrivals)).ok());
  ASSERT_TRUE(gbt.has_model());
  Series s = Make(arrivals);
  absl::StatusOr<Forecast> before = gbt.Predict(s, 60);
  ASSERT_TRUE(before.ok());
  EXPECT_NEAR(WindowMean(*before, 15), 10, 2);

  // The trees never saw more than ~25 a minute: the level must come from the recent
  // minutes, not from what the trees remember.
  const std::vector<double> step = PoissonCounts(
      0, 30, [](int64_t) { return 100.0; }, 2);
  for (int k = 0; k < 30; ++k) {
    s.arrivals.push_back(step[k]);
    if (k + 1 == 15 || k + 1 == 30) {
      absl::StatusOr<Forecast> f = gbt.Predict(s, 60);
      ASSERT_TRUE(f.ok());
      ExpectWellFormed(*f, 60);
      EXPECT_GT(WindowMean(*f, 15), 75) << (k + 1) << " minutes after the step";
      EXPECT_LT(WindowMean(*f, 15), 125) << (k + 1) << " minutes after the step";
      EXPECT_GT(WindowMean(*f, 60), 75) << (k + 1) << " minutes after the step";
    }
  }
}

TEST(GbtTest, FollowsALinearTrendPastItsTrainingRange) {
  // 20 -> 80 a minute over 4 days, then a fifth day on the same line (80 -> 95) that
  // the trees never saw.
  auto rate = [](int64_t m) { return 20 + 60 * static_cast<double>(m) / (4 * kMinutesPerDay); };
  const std::vector<double> all = PoissonCounts(0, 5 * kMinutesPerDay, rate, 3);
  GbtForecaster gbt;
  ASSERT_TRUE(gbt.Fit(Make({all.begin(), all.begin() + 4 * kMinutesPerDay})).ok());
  double err = 0, bias = 0;
  int origins = 0;
  for (int64_t t = 4 * kMinutesPerDay; t + 60 <= 5 * kMinutesPerDay; t += 30, ++origins) {
    absl::StatusOr<Forecast> f = gbt.Predict(Make({all.begin(), all.begin() + t}), 60);
    ASSERT_TRUE(f.ok());
    const double truth = (rate(t + 55) + rate(t + 59)) / 2;  // the rate over minutes 56..60
    err += std::abs(WindowMean(*f, 60) - truth);
    bias += WindowMean(*f, 60) - truth;
  }
  EXPECT_LT(err / origins, 3.0);           // ~3.5 % of the level (1.1 when written)
  EXPECT_LT(std::abs(bias / origins), 2);  // and no drift back to the trained range
}

TEST(GbtTest, AllZeroHistoryForecastsZero) {
  GbtForecaster gbt;
  ASSERT_TRUE(gbt.Fit(Make(std::vector<double>(2 * kMinutesPerDay, 0.0))).ok());
  absl::StatusOr<Forecast> f = gbt.Predict(Make(std::vector<double>(2 * kMinutesPerDay, 0.0)), 60);
  ASSERT_TRUE(f.ok()) << f.status();
  ExpectWellFormed(*f, 60);
  for (const Quantiles& q : f->minutes) {
    EXPECT_LT(q.mean, 1e-3);
    EXPECT_LT(q.p90, 1e-3);
  }
}

// Decided: a history too short to train on is not an error (as Forecaster asks); the
// forecast is the mean of the last hour with Poisson spread, and has_model() is false.
TEST(GbtTest, ShortHistoryForecastsTheRecentMean) {
  const std::vector<double> arrivals = PoissonCounts(
      0, GbtForecaster::kMinFitMinutes - 1, [](int64_t) { return 20.0; }, 4);
  GbtForecaster gbt;
  ASSERT_TRUE(gbt.Fit(Make(arrivals)).ok());
  EXPECT_FALSE(gbt.has_model());
  double last_hour = 0;
  for (size_t i = arrivals.size() - 60; i < arrivals.size(); ++i) last_hour += arrivals[i];
  last_hour /= 60;
  absl::StatusOr<Forecast> f = gbt.Predict(Make(arrivals), 60);
  ASSERT_TRUE(f.ok()) << f.status();
  ExpectWellFormed(*f, 60);
  for (const Quantiles& q : f->minutes) {
    EXPECT_NEAR(q.mean, last_hour, 1e-9);
    // Poisson(20): p10 ~14.3, p90 ~25.7 (continuous).
    EXPECT_LT(q.p10, last_hour - 3);
    EXPECT_GT(q.p90, last_hour + 3);
  }

  GbtForecaster empty;
  ASSERT_TRUE(empty.Fit(Series{}).ok());
  absl::StatusOr<Forecast> none = empty.Predict(Series{}, 10);
  ASSERT_TRUE(none.ok()) << none.status();
  ExpectWellFormed(*none, 10);
  EXPECT_EQ(none->minutes[9].p90, 0);
}

TEST(GbtTest, SameSeedSameForecast) {
  const Series s = Make(PoissonCounts(0, 2 * kMinutesPerDay, DailySine, 5));
  GbtOptions o;
  o.trees = 40;  // enough to show a difference, at a quarter of the cost
  o.seed = 7;
  GbtForecaster a(o), b(o);
  o.seed = 8;
  GbtForecaster c(o);
  ASSERT_TRUE(a.Fit(s).ok());
  ASSERT_TRUE(b.Fit(s).ok());
  ASSERT_TRUE(c.Fit(s).ok());
  absl::StatusOr<Forecast> fa = a.Predict(s, 60), fb = b.Predict(s, 60), fc = c.Predict(s, 60);
  ASSERT_TRUE(fa.ok() && fb.ok() && fc.ok());
  bool differs = false;
  for (int m = 0; m < 60; ++m) {
    EXPECT_EQ(fa->minutes[m].mean, fb->minutes[m].mean);
    EXPECT_EQ(fa->minutes[m].p10, fb->minutes[m].p10);
    EXPECT_EQ(fa->minutes[m].p90, fb->minutes[m].p90);
    differs |= fa->minutes[m].mean != fc->minutes[m].mean;
  }
  EXPECT_TRUE(differs) << "the seed should draw different row samples";
}

TEST(GbtTest, UsesTheQueueWhenTheSeriesHasOne) {
  Series s = Make(PoissonCounts(0, kMinutesPerDay, DailySine, 6));
  s.queue.assign(s.size(), 3.0);
  GbtForecaster gbt;
  ASSERT_TRUE(gbt.Fit(s).ok());
  absl::StatusOr<Forecast> f = gbt.Predict(s, 60);
  ASSERT_TRUE(f.ok()) << f.status();
  ExpectWellFormed(*f, 60);
}

TEST(GbtTest, ErrorsNameTheProblem) {
  GbtForecaster gbt;
  absl::StatusOr<Forecast> early = gbt.Predict(Make({1, 2, 3}), 10);
  EXPECT_EQ(early.status().code(), absl::StatusCode::kFailedPrecondition);

  absl::Status bad = gbt.Fit(Make({1, 2, 3, -1}));
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("arrivals[3]"), std::string::npos) << bad;

  ASSERT_TRUE(gbt.Fit(Make({1, 2, 3})).ok());
  for (int horizon : {0, kMaxHorizon + 1}) {
    absl::StatusOr<Forecast> f = gbt.Predict(Make({1, 2, 3}), horizon);
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(f.status().message().find("horizon"), std::string::npos) << f.status();
  }

  GbtOptions o;
  o.trees = 0;
  absl::Status opt = GbtForecaster(o).Fit(Make({1, 2, 3}));
  EXPECT_EQ(opt.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(opt.message().find("trees"), std::string::npos) << opt;
}

}  // namespace
}  // namespace drover::scale
