// The predictive families of /metrics (api/pool_metrics.h): every pool's mode; forecasts,
// scores and counters only for pools in mode shadow or predictive, with bounded labels;
// predictive decisions split into direction and band; the saved cost; and (when promtool
// is installed) an exposition `promtool check metrics` accepts.

#include "api/pool_metrics.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "obs/metrics.h"

namespace drover::api {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

v1::ListPoolsResponse Pools() {
  v1::ListPoolsResponse ps;
  v1::PoolStatus* r = ps.add_pools();
  r->set_name("plain");
  r->set_mode("reactive");
  r->set_fallbacks_total(9);  // (not published for a reactive pool)
  v1::PoolStatus* s = ps.add_pools();
  s->set_name("web");
  s->set_mode("shadow");
  s->set_fallbacks_total(3);
  s->set_shadow_disagreements_total(5);
  s->set_model_fits_total(2);
  (*s->mutable_predictive_decisions())["up/high"] = 4;
  (*s->mutable_predictive_decisions())["hold/low"] = 3;
  (*s->mutable_predictive_decisions())["nonsense"] = 1;
  v1::PoolForecast* f = s->mutable_forecast();
  f->set_model("ensemble");
  for (int h : {15, 30, 60}) {
    v1::ForecastHorizon* fh = f->add_horizons();
    fh->set_minutes(h);
    fh->set_mean(10.5);
    fh->set_p10(6);
    fh->set_p50(10);
    fh->set_p90(15.25);
    fh->set_confidence(h == 15 ? 0.75 : 0.5);
    fh->set_agents(h / 15 + 1);
    for (const char* model : {"seasonal_naive", "ensemble"}) {
      v1::ModelScore* ms = f->add_scores();
      ms->set_model(model);
      ms->set_minutes(h);
      ms->set_mae(h / 10.0);
      ms->set_mae_agents(h / 20.0);
    }
  }
  v1::PoolStatus* p = ps.add_pools();
  p->set_name("api");
  p->set_mode("predictive");
  p->set_saved_agent_hours(-1.5);
  p->set_price_per_agent_hour(2);
  return ps;
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

std::string Render(const v1::ListPoolsResponse& ps) {
  obs::PromWriter w;
  WritePredictivePoolMetrics(ps, w);
  return w.text();
}

TEST(PoolMetricsTest, ModeOfEveryPool) {
  const std::vector<std::string> lines = Lines(Render(Pools()));
  EXPECT_THAT(lines, Contains("drover_pool_mode{pool=\"plain\",mode=\"reactive\"} 1"));
  EXPECT_THAT(lines, Contains("drover_pool_mode{pool=\"web\",mode=\"shadow\"} 1"));
  EXPECT_THAT(lines, Contains("drover_pool_mode{pool=\"api\",mode=\"predictive\"} 1"));
}

TEST(PoolMetricsTest, AReactivePoolHasOnlyItsMode) {
  for (const std::string& line : Lines(Render(Pools()))) {
    if (line.starts_with("drover_pool_mode{")) continue;
    EXPECT_THAT(line, Not(HasSubstr("pool=\"plain\""))) << line;
  }
}

TEST(PoolMetricsTest, ForecastByHorizon) {
  const std::vector<std::string> lines = Lines(Render(Pools()));
  EXPECT_THAT(lines,
              Contains("drover_pool_forecast_confidence{pool=\"web\",horizon=\"15m\"} 0.75"));
  EXPECT_THAT(lines, Contains("drover_pool_forecast_confidence{pool=\"web\",horizon=\"60m\"} 0.5"));
  EXPECT_THAT(
      lines,
      Contains("drover_pool_forecast_arrivals{pool=\"web\",horizon=\"30m\",stat=\"p10\"} 6"));
  EXPECT_THAT(
      lines,
      Contains("drover_pool_forecast_arrivals{pool=\"web\",horizon=\"30m\",stat=\"p50\"} 10"));
  EXPECT_THAT(
      lines,
      Contains("drover_pool_forecast_arrivals{pool=\"web\",horizon=\"30m\",stat=\"p90\"} 15.25"));
  EXPECT_THAT(
      lines,
      Contains("drover_pool_forecast_arrivals{pool=\"web\",horizon=\"30m\",stat=\"mean\"} 10.5"));
  EXPECT_THAT(lines, Contains("drover_pool_forecast_agents{pool=\"web\",horizon=\"60m\"} 5"));
}

TEST(PoolMetricsTest, ErrorsByHorizonAndModel) {
  const std::vector<std::string> lines = Lines(Render(Pools()));
  EXPECT_THAT(lines, Contains("drover_pool_forecast_mae{pool=\"web\",horizon=\"15m\","
                              "model=\"ensemble\"} 1.5"));
  EXPECT_THAT(lines, Contains("drover_pool_forecast_mae{pool=\"web\",horizon=\"60m\","
                              "model=\"seasonal_naive\"} 6"));
  EXPECT_THAT(lines, Contains("drover_pool_forecast_mae_agents{pool=\"web\",horizon=\"15m\","
                              "model=\"ensemble\"} 0.75"));
  EXPECT_THAT(lines, Contains("drover_pool_forecast_mae_agents{pool=\"web\",horizon=\"30m\","
                              "model=\"seasonal_naive\"} 1.5"));
}

TEST(PoolMetricsTest, OnlyPublishedHorizons) {
  v1::ListPoolsResponse ps = Pools();
  v1::PoolForecast* f = ps.mutable_pools(1)->mutable_forecast();
  f->add_horizons()->set_minutes(5);
  v1::ModelScore* ms = f->add_scores();
  ms->set_model("ensemble");
  ms->set_minutes(45);
  const std::string text = Render(ps);
  EXPECT_THAT(text, Not(HasSubstr("horizon=\"5m\"")));
  EXPECT_THAT(text, Not(HasSubstr("horizon=\"45m\"")));
}

TEST(PoolMetricsTest, CountersAndDecisionsByDirectionAndBand) {
  const std::vector<std::string> lines = Lines(Render(Pools()));
  EXPECT_THAT(lines, Contains("drover_pool_forecast_fallbacks_total{pool=\"web\"} 3"));
  EXPECT_THAT(lines, Contains("drover_pool_shadow_disagreements_total{pool=\"web\"} 5"));
  EXPECT_THAT(lines, Contains("drover_pool_model_fits_total{pool=\"web\"} 2"));
  EXPECT_THAT(lines, Contains("drover_pool_predictive_decisions_total{pool=\"web\","
                              "direction=\"up\",band=\"high\"} 4"));
  EXPECT_THAT(lines, Contains("drover_pool_predictive_decisions_total{pool=\"web\","
                              "direction=\"hold\",band=\"low\"} 3"));
  // Every direction and band from the start (0 until counted), nothing malformed.
  EXPECT_THAT(lines, Contains("drover_pool_predictive_decisions_total{pool=\"web\","
                              "direction=\"down\",band=\"blend\"} 0"));
  int web = 0;
  for (const std::string& line : lines) {
    if (line.starts_with("drover_pool_predictive_decisions_total{pool=\"web\"")) web++;
    EXPECT_THAT(line, Not(HasSubstr("nonsense")));
  }
  EXPECT_EQ(web, 9);
  // A pool with no forecast yet still has its counters, but no forecast samples.
  EXPECT_THAT(lines, Contains("drover_pool_forecast_fallbacks_total{pool=\"api\"} 0"));
  EXPECT_THAT(lines, Not(Contains(HasSubstr("drover_pool_forecast_confidence{pool=\"api\""))));
}

TEST(PoolMetricsTest, SavedTimeAndCostCanBeNegative) {
  const std::vector<std::string> lines = Lines(Render(Pools()));
  EXPECT_THAT(lines, Contains("drover_pool_saved_agent_seconds{pool=\"api\"} -5400"));
  EXPECT_THAT(lines, Contains("drover_pool_saved_cost{pool=\"api\"} -3"));
  EXPECT_THAT(lines, Contains("drover_pool_saved_cost{pool=\"web\"} 0"));
}

TEST(PoolMetricsTest, PromtoolAcceptsTheExposition) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool is not installed (Debian package prometheus)";
  }
  const std::string path = testing::TempDir() + "pool_metrics_test.prom";
  std::ofstream(path) << Render(Pools());
  const std::string cmd = "promtool check metrics <'" + path + "' 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[512];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  EXPECT_EQ(pclose(pipe), 0) << out;
  std::remove(path.c_str());
}

}  // namespace
}  // namespace drover::api
