// scale: the queueing model, the classical forecasters, the ensemble's weights and
// confidence, and the predictive sizing's rules (trust, floor, pre-warm, hold).
#include <cmath>
#include <random>

#include "gtest/gtest.h"
#include "scale/ensemble.h"
#include "scale/erlang.h"
#include "scale/predictive.h"
#include "scale/seasonal.h"

namespace drover::scale {
namespace {

// --- Erlang C, worked by hand ------------------------------------------------------------

TEST(Erlang, CFormulaByHand) {
  // One server at load 0.5: an arrival waits with probability rho = 0.5.
  // (B(1) = 0.5 / 1.5 = 1/3; C = (1/3) / (1 - 0.5 x 2/3) = 0.5.)
  EXPECT_NEAR(ErlangC(1, 0.5), 0.5, 1e-12);
  // Two servers at load 1: B(1) = 1/2, B(2) = 0.5 / 2.5 = 0.2,
  // C = 2 x 0.2 / (2 - 1 x 0.8) = 0.4 / 1.2 = 1/3.
  EXPECT_NEAR(ErlangC(2, 1.0), 1.0 / 3, 1e-12);
  // P(W > t) = C exp(-(c - a) t / S): two servers, load 1, S = 1 s, t = 1 s: e^-1 / 3.
  EXPECT_NEAR(WaitProbability(2, 1.0, 1.0, 1.0), std::exp(-1.0) / 3, 1e-12);
  EXPECT_EQ(ErlangC(3, 3.0), 1.0);  // saturated
  EXPECT_EQ(ErlangC(3, 0.0), 0.0);
}

TEST(Erlang, SlotsForTheObjective) {
  // 60 tasks a minute of 1 s each: a = 1. Objective: 95 % start within 1 s.
  // c = 2: P(W > 1) = e^-1 / 3 = 0.123 > 0.05.
  // c = 3: B(3) = 0.2 / 3.2 = 0.0625, C = 0.1875 / 2.0625 = 0.0909,
  //        P(W > 1) = 0.0909 e^-2 = 0.0123 <= 0.05  -> 3 slots.
  SizingModel m{1.0, 1, 1.0, 0.95};
  EXPECT_EQ(SlotsFor(m, 60), 3);
  m.slots = 2;
  EXPECT_EQ(AgentsFor(m, 60), 2);  // ceil(3 / 2)
  EXPECT_EQ(AgentsFor(m, 0), 0);
  // Large loads stay just above the offered load: 405/min of 20 s is a = 135 Erlangs.
  SizingModel big{20, 1, 60, 0.95};
  const int64_t c = SlotsFor(big, 405);
  EXPECT_GT(c, 135);
  EXPECT_LT(c, 150);
  EXPECT_LE(WaitProbability(c, 135, 20, 60), 0.05);
  EXPECT_GT(WaitProbability(c - 1, 135, 20, 60), 0.05);
}

// --- forecasters on synthetic series ---------------------------------------------------------

Series Make(int days, const std::function<double(int)>& rate, bool noise = true) {
  Series s;
  std::mt19937_64 rng(7);
  for (int m = 0; m < days * kMinutesPerDay; ++m) {
    const double r = std::max(0.0, rate(m));
    s.arrivals.push_back(noise ? static_cast<double>(std::poisson_distribution<int>(r)(rng)) : r);
  }
  return s;
}

double Sine(int m) { return 50 + 40 * std::sin(2 * M_PI * m / kMinutesPerDay); }

// MAE of 5-minute window means at horizon h over forecasts from every 30th minute of the
// last day, the model trained on the days before.
double WindowMae(Forecaster& f, const Series& s, int h, const std::function<double(int)>& truth) {
  const size_t train = s.size() - kMinutesPerDay;
  EXPECT_TRUE(f.Fit(s.Prefix(train)).ok());
  double err = 0;
  int n = 0;
  for (size_t o = train; o + kMaxHorizon < s.size(); o += 30) {
    absl::StatusOr<Forecast> fc = f.Predict(s.Prefix(o), kMaxHorizon);
    EXPECT_TRUE(fc.ok());
    double p = 0, a = 0;
    for (int j = h - 4; j <= h; ++j) {
      p += fc->minutes[static_cast<size_t>(j - 1)].mean;
      a += truth(static_cast<int>(o) + j - 1);
      const Quantiles& q = fc->minutes[static_cast<size_t>(j - 1)];
      EXPECT_LE(q.p10, q.p50);
      EXPECT_LE(q.p50, q.p90);
      EXPECT_GE(q.p10, 0);
    }
    err += std::abs(p - a) / 5;
    ++n;
  }
  return err / n;
}

TEST(Forecasters, DailySine) {
  const Series s = Make(8, Sine);
  SeasonalNaive naive;
  HoltWinters hw;
  // A flat forecast at the mean is off by 40 x 2/pi = 25 on average.
  for (int h : {15, 30, 60}) {
    EXPECT_LT(WindowMae(naive, s, h, Sine), 5) << h;
    EXPECT_LT(WindowMae(hw, s, h, Sine), 5) << h;
  }
  EXPECT_TRUE(naive.bands().calibrated);
}

TEST(Forecasters, StepIsFollowed) {
  // 10 a minute for 3 days, then 100 from minute 600 of day 4.
  auto step = [](int m) { return m < 3 * kMinutesPerDay + 600 ? 10.0 : 100.0; };
  const Series s = Make(5, step);
  const size_t at = 3 * kMinutesPerDay + 600;
  // Seasonal naive scales yesterday by the last hour's level, at most 4x: an hour after
  // the step it says 40, a day after (yesterday was 100 then) 100.
  SeasonalNaive naive;
  ASSERT_TRUE(naive.Fit(s.Prefix(at)).ok());
  EXPECT_NEAR(naive.Predict(s.Prefix(at + 60), 15)->minutes[14].mean, 40, 3);
  EXPECT_NEAR(naive.Predict(s.Prefix(at + 1500), 15)->minutes[14].mean, 100, 10);
  // Holt-Winters fitted on three flat days learns a slow level: it gets there within
  // hours, and at once once refitted on the new regime.
  HoltWinters hw;
  ASSERT_TRUE(hw.Fit(s.Prefix(at)).ok());
  const double hour = hw.Predict(s.Prefix(at + 60), 15)->minutes[14].mean;
  const double later = hw.Predict(s.Prefix(at + 360), 15)->minutes[14].mean;
  EXPECT_GT(hour, 12);
  EXPECT_GT(later, hour);
  ASSERT_TRUE(hw.Fit(s.Prefix(at + 1500)).ok());
  EXPECT_NEAR(hw.Predict(s.Prefix(at + 1500), 15)->minutes[14].mean, 100, 15);
}

TEST(Forecasters, TrendHoltWinters) {
  // A steady rise of 20 a minute per day: Holt-Winters' trend keeps up.
  auto trend = [](int m) { return 20 + 20.0 * m / kMinutesPerDay; };
  const Series s = Make(5, trend);
  HoltWinters hw;
  EXPECT_LT(WindowMae(hw, s, 60, trend), 6);
}

TEST(Forecasters, AllZeroAndGap) {
  const Series zero = Make(3, [](int) { return 0.0; });
  for (Forecaster* f : std::initializer_list<Forecaster*>{new SeasonalNaive, new HoltWinters}) {
    std::unique_ptr<Forecaster> own(f);
    ASSERT_TRUE(f->Fit(zero).ok());
    absl::StatusOr<Forecast> fc = f->Predict(zero, kMaxHorizon);
    ASSERT_TRUE(fc.ok());
    for (const Quantiles& q : fc->minutes) {
      EXPECT_FALSE(std::isnan(q.mean));
      EXPECT_NEAR(q.p90, 0, 1e-9) << f->name();
    }
  }
  // A gap (the source was down: 6 hours of zeros) on day 3: two hours after it ends, the
  // forecast is back near the sine.
  auto gappy = [](int m) {
    return m >= 2 * kMinutesPerDay + 300 && m < 2 * kMinutesPerDay + 660 ? 0.0 : Sine(m);
  };
  const Series s = Make(3, gappy);
  HoltWinters hw;
  ASSERT_TRUE(hw.Fit(s.Prefix(2 * kMinutesPerDay + 780)).ok());
  absl::StatusOr<Forecast> fc = hw.Predict(s.Prefix(2 * kMinutesPerDay + 780), 30);
  ASSERT_TRUE(fc.ok());
  EXPECT_NEAR(fc->minutes[29].mean, Sine(2 * kMinutesPerDay + 809), 20);
}

TEST(Forecasters, ShortHistoryAndBadHorizon) {
  const Series s = Make(1, Sine).Prefix(30);
  SeasonalNaive naive;
  ASSERT_TRUE(naive.Fit(s).ok());
  absl::StatusOr<Forecast> fc = naive.Predict(s, 10);
  ASSERT_TRUE(fc.ok());
  EXPECT_FALSE(naive.bands().calibrated);
  EXPECT_GE(fc->minutes[0].p90, fc->minutes[0].mean);
  EXPECT_EQ(naive.Predict(s, 61).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(naive.Predict(s, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

// --- the ensemble -------------------------------------------------------------------------

TEST(Ensemble, WeightsFollowErrorsAndConfidenceNeedsSamples) {
  // A trend series: Holt-Winters keeps up, seasonal naive (yesterday's level) lags, so the
  // ensemble leans on Holt-Winters once both are scored.
  auto trend = [](int m) { return 20 + 30.0 * m / kMinutesPerDay; };
  const Series s = Make(4, trend);
  EnsembleOptions o;
  o.members = {"seasonal_naive", "holt_winters"};
  o.min_samples = 60;
  absl::StatusOr<std::unique_ptr<Ensemble>> e = Ensemble::Create(o);
  ASSERT_TRUE(e.ok());
  (*e)->set_sizing({1, 1, 60, 0.95});
  const size_t start = 3 * kMinutesPerDay;
  ASSERT_TRUE((*e)->Fit(s.Prefix(start)).ok());
  (*e)->OnMinute(s.Prefix(start));
  EXPECT_EQ((*e)->latest().ConfidenceAt(15), 0);  // nothing scored yet
  EXPECT_NEAR((*e)->latest().weights[0][2], 0.5, 1e-9);
  for (size_t n = start + 1; n <= start + 240; ++n) (*e)->OnMinute(s.Prefix(n));
  const Snapshot& snap = (*e)->latest();
  const auto sc = (*e)->scores();
  // The member with the smaller recent error at 15 minutes weighs more, by 1 / MAE^2.
  const size_t better = sc[0].at[2].mae < sc[1].at[2].mae ? 0 : 1;
  EXPECT_GT(snap.weights[better][2], snap.weights[1 - better][2]);
  const double ratio =
      std::pow((sc[1 - better].at[2].mae + 0.01) / (sc[better].at[2].mae + 0.01), 2);
  EXPECT_NEAR(snap.weights[better][2] / snap.weights[1 - better][2], ratio, 0.05 * ratio);
  EXPECT_NEAR(snap.weights[0][2] + snap.weights[1][2], 1, 1e-9);
  EXPECT_GT(snap.ConfidenceAt(15), 0);
  EXPECT_LE(snap.ConfidenceAt(15), 1);
  const auto scores = (*e)->scores();
  ASSERT_EQ(scores.size(), 3u);  // two members and the ensemble
  EXPECT_EQ(scores[2].model, "ensemble");
  EXPECT_GT(scores[1].at[2].samples, 60);
}

TEST(Ensemble, UnknownModelsAreRefusedByName) {
  EnsembleOptions o;
  o.members = {"seasonal_naive", "prophet"};
  absl::StatusOr<std::unique_ptr<Ensemble>> e = Ensemble::Create(o);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("\"prophet\""), std::string::npos);
  o.members = {"seasonal_naive"};
  o.use = "holt_winters";
  e = Ensemble::Create(o);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("\"holt_winters\""), std::string::npos);
  EXPECT_FALSE(ParseMode("eager").ok());
  EXPECT_NE(ParseMode("eager").status().message().find("\"eager\""), std::string::npos);
}

// --- the predictive decision ------------------------------------------------------------------

// A forecast of `rate` a minute for every horizon (p90 = rate), with confidence `c`.
Snapshot Flat(double rate, double c, std::function<double(int)> by_h = nullptr) {
  Snapshot s;
  s.origin = 100;
  s.forecast.minutes.resize(kMaxHorizon);
  for (int h = 1; h <= kMaxHorizon; ++h) {
    const double r = by_h ? by_h(h) : rate;
    s.forecast.minutes[static_cast<size_t>(h - 1)] = {r, r, r, r};
  }
  s.confidence.fill(c);
  return s;
}

PredictiveInputs Inputs(const Snapshot* s, int current, int reactive) {
  PredictiveInputs in;
  in.forecast = s;
  in.service_s = 20;
  in.slots = 1;
  in.startup = absl::Seconds(60);
  in.current = current;
  in.reactive = reactive;
  in.min = 1;
  in.max = 100;
  return in;
}

TEST(Predictive, TrustRules) {
  PredictiveSpec spec;  // use >= 0.8, blend >= 0.5
  SizingModel m{20, 1, 60, 0.95};
  const int want = static_cast<int>(AgentsFor(m, 60));  // 60/min of 20 s: a = 20
  ASSERT_GT(want, 20);
  const Snapshot high = Flat(60, 0.85);
  PredictiveDecision d = DecidePredictive(spec, Inputs(&high, 10, 14));
  EXPECT_EQ(d.desired, want);
  EXPECT_EQ(d.rule, "forecast (pre-warm)");
  EXPECT_FALSE(d.fallback);
  const Snapshot mid = Flat(60, 0.6);
  d = DecidePredictive(spec, Inputs(&mid, 10, 14));
  EXPECT_EQ(d.desired, static_cast<int>(std::lround(0.7 * want + 0.3 * 14)));
  EXPECT_EQ(d.rule.rfind("blend", 0), 0u);
  const Snapshot low = Flat(60, 0.3);
  d = DecidePredictive(spec, Inputs(&low, 10, 14));
  EXPECT_EQ(d.desired, 14);
  EXPECT_TRUE(d.fallback);
  EXPECT_EQ(d.rule, "fallback (confidence 0.30 < 0.50)");
  // No forecast at all: the reactive answer, a fallback.
  d = DecidePredictive(spec, Inputs(nullptr, 10, 12));
  EXPECT_EQ(d.desired, 12);
  EXPECT_TRUE(d.fallback);
}

TEST(Predictive, NeverBelowTheQueueAndWithinBounds) {
  PredictiveSpec spec;
  const Snapshot quiet = Flat(0, 0.95);
  PredictiveInputs in = Inputs(&quiet, 5, 1);
  in.pending = 300;  // 300 queued tasks of 20 s within 60 s: 300 x 20 / 60 = 100 slots
  PredictiveDecision d = DecidePredictive(spec, in);
  EXPECT_EQ(d.floor, 100);
  EXPECT_EQ(d.desired, 100);
  EXPECT_EQ(d.rule, "queue floor");
  in.max = 40;
  EXPECT_EQ(DecidePredictive(spec, in).desired, 40);
  EXPECT_EQ(DecidePredictive(spec, in).rule, "max bounds");
  in.budget_cap = 30;
  EXPECT_EQ(DecidePredictive(spec, in).rule, "budget cap");
  EXPECT_EQ(DecidePredictive(spec, in).desired, 30);
}

TEST(Predictive, PreWarmAndHold) {
  PredictiveSpec spec;  // hold 10 min; start-up 60 s: decision horizon 2 minutes
  SizingModel m{20, 1, 60, 0.95};
  // A rise at minute 2: started now, agents are ready for it.
  const Snapshot rise = Flat(0, 0.9, [](int h) { return h >= 2 ? 60.0 : 6.0; });
  PredictiveDecision d = DecidePredictive(spec, Inputs(&rise, 3, 3));
  EXPECT_EQ(d.decision_horizon, 2);
  EXPECT_EQ(d.desired, AgentsFor(m, 60));
  // A rise at minute 5 is not acted on yet (it is beyond the start-up), but holds the size
  // the rise needs (within its 8 % band) instead of scaling in before it.
  const int rise_need = static_cast<int>(AgentsFor(m, 60));
  const Snapshot later = Flat(0, 0.9, [](int h) { return h >= 5 ? 60.0 : 6.0; });
  d = DecidePredictive(spec, Inputs(&later, rise_need + 1, 3));
  EXPECT_EQ(d.desired, rise_need + 1);
  EXPECT_EQ(d.rule, "forecast (hold)");
  d = DecidePredictive(spec, Inputs(&later, 1, 3));
  EXPECT_EQ(d.desired, AgentsFor(m, 6)) << "the rise is not started for before one start-up ahead";
  // Low for the whole look-ahead: down to the need plus an 8 % band.
  const Snapshot low = Flat(6, 0.9);
  d = DecidePredictive(spec, Inputs(&low, 30, 3));
  const int need = static_cast<int>(AgentsFor(m, 6));
  EXPECT_EQ(d.desired, need + std::max(1, (8 * need + 99) / 100));
  // ... unless a decision of the last hold wanted more.
  PredictiveInputs in = Inputs(&low, 30, 3);
  in.recent_up = 30;
  EXPECT_EQ(DecidePredictive(spec, in).desired, 30);
}

TEST(Predictive, ASurgeBeyondTheBandIsMetAtOnce) {
  PredictiveSpec spec;
  SizingModel m{20, 1, 60, 0.95};
  const Snapshot calm = Flat(20, 0.9);  // p90 20 a minute
  PredictiveInputs in = Inputs(&calm, static_cast<int>(AgentsFor(m, 20)), 3);
  // 30 a minute: above 1.25 x p90 but within 20 + 4 sqrt(20) = 37.9: noise, not a surge.
  in.now_rate = 30;
  EXPECT_EQ(DecidePredictive(spec, in).rule, "forecast (hold)");
  // 60 a minute (3 x p90): a surge, met by need(60) now.
  in.now_rate = 60;
  PredictiveDecision d = DecidePredictive(spec, in);
  EXPECT_EQ(d.rule, "surge");
  EXPECT_EQ(d.desired, AgentsFor(m, 60));
  EXPECT_EQ(d.up_target, AgentsFor(m, 60));  // held like a forecast's answer
}

TEST(Predictive, SpecValidationNamesTheField) {
  PredictiveSpec s;
  s.use_confidence = 0.4;  // below the floor 0.5
  absl::Status st = ValidatePredictiveSpec(s);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.message().rfind("use_confidence:", 0), 0u);
  s = {};
  s.floor_confidence = 1.5;
  EXPECT_EQ(ValidatePredictiveSpec(s).message().rfind("floor_confidence:", 0), 0u);
}

}  // namespace
}  // namespace drover::scale
