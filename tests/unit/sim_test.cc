// The simulator: its accounting on a tiny trace worked out by hand, determinism for a seed,
// and the trace parser's errors.
#include <cmath>
#include <random>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "sim/simulator.h"

namespace drover::sim {
namespace {

Trace Tiny() {
  absl::StatusOr<Trace> t = ParseTrace("minute,arrivals\n0,2\n1,0\n2,0\n", "tiny.csv");
  EXPECT_TRUE(t.ok()) << t.status();
  return *t;
}

TEST(SimTest, AccountingOfATinyTraceMatchesTheFiguresWorkedByHand) {
  // Two arrivals in minute 0, evenly spaced: at 0 s and 30 s. One warm agent, one slot,
  // every task takes exactly 40 s. Task 1 starts at 0 (wait 0) and ends at 40 s; task 2
  // arrives at 30 s, starts at 40 s (wait 10 s) and ends at 80 s.
  SimConfig c;
  c.service = *ParseServiceTime("fixed:40s");
  c.even_arrivals = true;
  c.price_per_agent_hour = 2;
  c.wait_objective = absl::Seconds(5);
  absl::StatusOr<Policy> p = ParsePolicy("static:1", 10);
  ASSERT_TRUE(p.ok());
  absl::StatusOr<SimReport> r = sim::Run(Tiny(), c, *p);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->arrivals, 2);
  EXPECT_EQ(r->completed, 2);
  EXPECT_EQ(r->dropped, 0);
  // One agent paid for the trace's 3 minutes: 180 s = 0.05 agent-hours, at 2 per hour 0.1.
  EXPECT_NEAR(r->agent_hours, 0.05, 1e-9);
  EXPECT_NEAR(r->cost, 0.1, 1e-9);
  // Busy 80 of 180 slot-seconds: slack 100 / 180.
  EXPECT_NEAR(r->slack, 100.0 / 180.0, 1e-9);
  // Waits {0, 10}: nearest-rank p50 is the 1st (0), p95 and p99 the 2nd (10).
  EXPECT_DOUBLE_EQ(r->wait_p50_s, 0);
  EXPECT_DOUBLE_EQ(r->wait_p95_s, 10);
  EXPECT_DOUBLE_EQ(r->wait_p99_s, 10);
  EXPECT_DOUBLE_EQ(r->wait_max_s, 10);
  // Minute 0 dispatched both, p95 wait 10 s > 5 s: violated; minutes 1 and 2 are quiet.
  ASSERT_EQ(r->rows.size(), 3u);
  EXPECT_EQ(r->rows[0].arrivals, 2);
  EXPECT_EQ(r->rows[0].dispatched, 2);
  EXPECT_TRUE(r->rows[0].violated);
  EXPECT_NEAR(r->rows[0].agents, 1.0, 1e-9);
  EXPECT_FALSE(r->rows[1].violated);
  EXPECT_FALSE(r->rows[2].violated);
  EXPECT_EQ(r->minutes_violated, 1);
  EXPECT_EQ(r->scale_actions, 0);
  // The warm agent took both (task 2 waited for it to be free, not for it to start).
  EXPECT_EQ(r->acquired_warm, 2);
  EXPECT_EQ(r->acquired_cold, 0);
  EXPECT_TRUE(absl::StartsWith(MinuteCsv(*r), "minute,arrivals,agents,queue_depth"));
  EXPECT_TRUE(absl::StrContains(ChartSvg(*r, Tiny()), "<polyline"));
}

TEST(SimTest, AStartingAgentCostsButDoesNotWork) {
  // Reactive from 1 agent: not asserted on the HPA here (autoscaler_test does that), only
  // that agents started late are paid from the start of their start-up.
  absl::StatusOr<Trace> t = ParseTrace("minute,arrivals\n0,60\n1,60\n2,0\n3,0\n", "t.csv");
  ASSERT_TRUE(t.ok());
  SimConfig c;
  c.service = *ParseServiceTime("fixed:10s");
  c.startup = absl::Seconds(30);
  c.even_arrivals = true;
  absl::StatusOr<SimReport> r = sim::Run(*t, c, *ParsePolicy("hpa", 50));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->completed, 120);
  EXPECT_GT(r->scale_actions, 0);
  EXPECT_GT(r->peak_agents, 1);
  // Agents started after the burst took some tasks: those waited at least the 30 s start-up.
  EXPECT_EQ(r->acquired_warm + r->acquired_cold, 120);
  EXPECT_GT(r->acquired_cold, 0);
  EXPECT_GE(r->acquire_cold_p95_s, 30);
  // 120 tasks x 10 s = 1,200 busy slot-seconds; paid time is more (start-ups, idling).
  EXPECT_GT(r->agent_hours * 3600, 1200);
  EXPECT_NEAR((1 - r->slack) * r->agent_hours * 3600, 1200, 1e-6);
}

TEST(SimTest, CapacityClassesFillCheapestFirstAndInterruptedAgentsAreReplaced) {
  // static:3 with spot (1/h, at most 2) and on-demand (4/h): 2 spot + 1 on-demand for the
  // trace's 3 minutes (0.05 h): cost 0.05 x (1 + 1 + 4) = 0.3.
  SimConfig c;
  c.service = *ParseServiceTime("fixed:40s");
  c.even_arrivals = true;
  c.classes = {*ParseCapacityClass("ondemand:4:0"), *ParseCapacityClass("spot:1:0:2")};
  absl::StatusOr<SimReport> r = sim::Run(Tiny(), c, *ParsePolicy("static:3", 10));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR(r->agent_hours, 0.15, 1e-9);
  EXPECT_NEAR(r->cost, 0.3, 1e-9);
  EXPECT_EQ(r->interruptions, 0);
  // A class reclaimed 60 times an hour (about once a minute per agent): agents are lost and
  // replaced, their tasks requeued, and every task still completes.
  absl::StatusOr<Trace> t = ParseTrace("minute,arrivals\n0,20\n1,20\n2,20\n3,0\n", "t.csv");
  ASSERT_TRUE(t.ok());
  c.service = *ParseServiceTime("fixed:20s");
  c.classes = {*ParseCapacityClass("flaky:0.5:60")};
  r = sim::Run(*t, c, *ParsePolicy("static:2", 10));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(r->interruptions, 0);
  EXPECT_EQ(r->completed, 60);
  EXPECT_TRUE(absl::StrContains(ParseCapacityClass("spot:x:1").status().message(), "--class"));
}

TEST(SimTest, ARunIsDeterministicForASeed) {
  absl::StatusOr<Trace> t = ParseTrace("minute,arrivals\n0,30\n1,80\n2,5\n3,40\n", "t.csv");
  ASSERT_TRUE(t.ok());
  SimConfig c;
  c.service = *ParseServiceTime("lognormal:3s:0.8");
  c.failure_rate = 0.1;
  auto once = [&](uint64_t seed) {
    c.seed = seed;
    absl::StatusOr<SimReport> r = sim::Run(*t, c, *ParsePolicy("hpa:2", 20));
    EXPECT_TRUE(r.ok()) << r.status();
    return MinuteCsv(*r) + std::to_string(r->agent_hours) + std::to_string(r->wait_p99_s);
  };
  EXPECT_EQ(once(7), once(7));
  EXPECT_NE(once(7), once(8));
}

TEST(SimTest, BadTracesAndFlagsAreRefusedNamingWhere) {
  EXPECT_TRUE(absl::StrContains(ParseTrace("hour,arrivals\n0,1\n", "a.csv").status().message(),
                                "a.csv:1: the header must be"));
  EXPECT_TRUE(
      absl::StrContains(ParseTrace("minute,arrivals\n0,1\n2,1\n", "b.csv").status().message(),
                        "b.csv:3: expected 1 in the first column (no gaps), got 2"));
  EXPECT_TRUE(absl::StrContains(ParseTrace("minute,arrivals\n0,-4\n", "c.csv").status().message(),
                                "c.csv:2: arrivals"));
  EXPECT_TRUE(absl::StrContains(ParseServiceTime("gauss:2s").status().message(), "--service-time"));
  EXPECT_TRUE(absl::StrContains(ParsePolicy("static:0", 10).status().message(), "1 to 100000"));
  EXPECT_TRUE(absl::StrContains(ParsePolicy("magic", 10).status().message(), "use static:N"));
}

// Two days of a daily cycle with Poisson noise, per minute (fixed seed).
Trace Cycle(int days = 2) {
  Trace t;
  std::mt19937_64 rng(11);
  for (int m = 0; m < days * 1440; ++m) {
    const double rate = 30 + 25 * std::sin(2 * M_PI * m / 1440.0);
    t.arrivals.push_back(std::poisson_distribution<int64_t>(rate)(rng));
  }
  return t;
}

SimConfig Standard() {
  SimConfig c;
  c.service = *ParseServiceTime("lognormal:20s");
  c.startup = absl::Seconds(60);
  c.wait_objective = absl::Seconds(60);
  return c;
}

Policy Forecasting(const std::string& name) {
  absl::StatusOr<Policy> p =
      ParsePolicy(name, 1000, "hpa-util", {"seasonal_naive", "holt_winters"});
  EXPECT_TRUE(p.ok()) << p.status();
  return *p;
}

TEST(SimTest, AForecastUsesOnlyThePast) {
  // The same trace, then one whose minutes from m on are tripled: every minute before m is
  // decided the same (its agents, queue, waits and the forecast shown for it).
  const Trace a = Cycle();
  Trace b = a;
  const size_t m = 1440 + 600;
  for (size_t i = m; i < b.arrivals.size(); ++i) b.arrivals[i] *= 3;
  const Policy p = Forecasting("predictive");
  absl::StatusOr<SimReport> ra = sim::Run(a, Standard(), p);
  absl::StatusOr<SimReport> rb = sim::Run(b, Standard(), p);
  ASSERT_TRUE(ra.ok() && rb.ok());
  ASSERT_GT(ra->decisions, 0);
  int differ_after = 0;
  for (size_t i = 0; i < ra->rows.size(); ++i) {
    const MinuteRow &x = ra->rows[i], &y = rb->rows[i];
    if (i < m) {
      ASSERT_EQ(x.agents, y.agents) << "minute " << i;
      ASSERT_EQ(x.queue_depth, y.queue_depth) << "minute " << i;
      ASSERT_EQ(x.p95_wait_s, y.p95_wait_s) << "minute " << i;
      ASSERT_EQ(x.forecast_p90, y.forecast_p90) << "minute " << i;
    } else {
      differ_after += x.agents != y.agents;
    }
  }
  EXPECT_GT(differ_after, 0) << "the change after m must change something";
}

TEST(SimTest, ForecastingIsDeterministicForASeed) {
  const Policy p = Forecasting("predictive");
  absl::StatusOr<SimReport> r1 = sim::Run(Cycle(), Standard(), p);
  absl::StatusOr<SimReport> r2 = sim::Run(Cycle(), Standard(), p);
  ASSERT_TRUE(r1.ok() && r2.ok());
  EXPECT_EQ(MinuteCsv(*r1), MinuteCsv(*r2));
  EXPECT_EQ(r1->agent_hours, r2->agent_hours);
  EXPECT_EQ(r1->scale_actions, r2->scale_actions);
}

TEST(SimTest, ShadowAppliesTheReactiveAnswerAndRecordsThePredictiveOne) {
  absl::StatusOr<SimReport> reactive =
      sim::Run(Cycle(), Standard(), *ParsePolicy("hpa-util", 1000));
  absl::StatusOr<SimReport> shadow = sim::Run(Cycle(), Standard(), Forecasting("shadow"));
  ASSERT_TRUE(reactive.ok() && shadow.ok());
  EXPECT_EQ(reactive->agent_hours, shadow->agent_hours);
  EXPECT_EQ(MinuteCsv(*reactive).size() > 0, true);
  for (size_t i = 0; i < reactive->rows.size(); ++i) {
    ASSERT_EQ(reactive->rows[i].agents, shadow->rows[i].agents) << "minute " << i;
  }
  EXPECT_GT(shadow->decisions, 0);
  EXPECT_GT(shadow->disagreements, 0);  // the predictive answer was computed, not applied
  EXPECT_GT(shadow->scores.back().at[2].samples, 0);  // and its forecast error measured
}

TEST(SimTest, OracleAndJudgeAfter) {
  SimConfig c = Standard();
  c.judge_after = absl::Hours(24);
  absl::StatusOr<SimReport> oracle = sim::Run(Cycle(), c, Forecasting("oracle"));
  absl::StatusOr<SimReport> hpa = sim::Run(Cycle(), c, *ParsePolicy("hpa-util", 1000, "hpa-util"));
  ASSERT_TRUE(oracle.ok() && hpa.ok());
  EXPECT_EQ(oracle->minutes, 1440);  // the second day only
  EXPECT_EQ(oracle->judged_from_minute, 1440);
  EXPECT_LT(oracle->agent_hours, hpa->agent_hours);
  EXPECT_EQ(oracle->fallbacks, 0);  // the truth is trusted
  // The chart shows the judged window's start; its axes are labelled.
  const std::string svg = ChartSvg(*oracle, Cycle());
  EXPECT_TRUE(absl::StrContains(svg, "judged from here"));
  EXPECT_TRUE(absl::StrContains(svg, "arrivals per minute"));
  EXPECT_TRUE(absl::StrContains(svg, "time (hours"));
}

TEST(SimTest, ScaleThinsDeterministically) {
  const Trace t = Cycle(1);
  const Trace half = ScaleTrace(t, 0.5, 1);
  EXPECT_NEAR(static_cast<double>(half.total()), 0.5 * static_cast<double>(t.total()),
              0.01 * static_cast<double>(t.total()));
  EXPECT_EQ(ScaleTrace(t, 0.5, 1).arrivals, half.arrivals);
  EXPECT_EQ(ScaleTrace(t, 1, 1).arrivals, t.arrivals);
  absl::StatusOr<Policy> bad = ParsePolicy("predictive:prophet", 10);
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "\"prophet\"")) << bad.status();
}

}  // namespace
}  // namespace drover::sim
