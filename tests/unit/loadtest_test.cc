// The load test's parts that need no server: payload stamps, the recorder's counts and
// latencies, and the SVG chart writer.
#include <cmath>
#include <limits>

#include "gtest/gtest.h"
#include "loadtest/internal.h"
#include "util/svg_chart.h"

namespace drover::loadtest {
namespace {

TEST(LoadtestPayload, RoundTripsTheDueTimeAndKind) {
  int64_t due = 0;
  Kind kind = Kind::kTask;
  ASSERT_TRUE(ParsePayload(Payload(1733312345123456789, Kind::kSink), &due, &kind));
  EXPECT_EQ(due, 1733312345123456789);
  EXPECT_EQ(kind, Kind::kSink);
  EXPECT_FALSE(ParsePayload("12345", &due, &kind));     // no kind
  EXPECT_FALSE(ParsePayload("12345:x", &due, &kind));   // unknown kind
  EXPECT_FALSE(ParsePayload("abc:t", &due, &kind));     // not a number
  EXPECT_FALSE(ParsePayload("12345:tt", &due, &kind));  // trailing bytes
}

TEST(LoadtestRecorder, CountsPerSecondAndMeasuresFromTheDueTime) {
  const absl::Time start = absl::Now();
  Recorder rec(start);
  rec.Acked({1, 2, 3}, 0.002, false);
  rec.Acked({4}, 0.010, true);
  const int64_t due = absl::ToUnixNanos(start);
  rec.Completed({{1, due, Kind::kTask}, {2, due, Kind::kStep}, {3, due, Kind::kSink}},
                start + absl::Milliseconds(40));
  rec.Completed({{4, due, Kind::kMax}}, start + absl::Milliseconds(1500));
  rec.Attempt(1);
  rec.Attempt(3);
  rec.Failed();
  EXPECT_EQ(rec.acked(), 4);
  EXPECT_EQ(rec.completed(), 4);
  EXPECT_EQ(rec.max_acked(), 1);
  EXPECT_EQ(rec.max_completed(), 1);
  EXPECT_EQ(rec.retries(), 1);  // attempt 3 is a retry, attempt 1 is not
  EXPECT_EQ(rec.failed_attempts(), 1);
  EXPECT_EQ(rec.max_last_completion(), start + absl::Milliseconds(1500));
  // Task latency counts plain tasks only; the join step is the workflow's.
  EXPECT_EQ(rec.TaskLatency(false).count(), 1u);
  EXPECT_NEAR(rec.TaskLatency(false).Quantile(0.5), 0.040, 0.040 * 0.16);
  EXPECT_EQ(rec.WorkflowLatency().count(), 1u);
  EXPECT_EQ(rec.TaskLatency(true).count(), 1u);
  EXPECT_EQ(rec.SubmitLatency(false).count(), 1u);
  const std::vector<Recorder::Second> tl = rec.Timeline();
  ASSERT_EQ(tl.size(), 2u);
  EXPECT_EQ(tl[0].completed, 3);
  EXPECT_EQ(tl[1].completed, 1);
  EXPECT_EQ(tl[0].acked + tl[1].acked, 4);
  std::vector<uint64_t> ids = rec.CompletedIds();
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<uint64_t>{1, 2, 3, 4}));
}

TEST(LoadtestRecorder, ClampsTimesOutsideItsWindow) {
  const absl::Time start = absl::Now();
  Recorder rec(start);
  EXPECT_EQ(rec.SecondOf(start - absl::Seconds(5)), 0);
  EXPECT_EQ(rec.SecondOf(start + absl::Hours(10)), Recorder::kMaxSeconds - 1);
}

TEST(SvgChart, NiceScalesAndGapsAndEscapes) {
  double step = 0;
  EXPECT_DOUBLE_EQ(NiceTop(87, &step), 100);
  EXPECT_DOUBLE_EQ(step, 20);
  EXPECT_DOUBLE_EQ(NiceTop(1200, &step), 1500);
  EXPECT_DOUBLE_EQ(step, 500);
  EXPECT_DOUBLE_EQ(NiceTop(0, &step), 1);  // an empty scale still draws
  Chart c;
  c.title = "a <b> & c";
  c.x_label = "time (s)";
  c.y_label = "tasks per second";
  c.y2_label = "outstanding";
  c.x = {0, 1, 2, 3, 4};
  const double nan = std::numeric_limits<double>::quiet_NaN();
  c.series = {{"left", "#123456", {1, 2, nan, 4, 5}, false},
              {"right", "#654321", {9, 9, 9, 9, 9}, true}};
  const std::string svg = LineChartSvg(c);
  EXPECT_NE(svg.find("a &lt;b&gt; &amp; c"), std::string::npos);
  EXPECT_NE(svg.find("time (s)"), std::string::npos);
  EXPECT_NE(svg.find("outstanding"), std::string::npos);
  EXPECT_NE(svg.find("left (left)"), std::string::npos);
  size_t lines = 0;
  for (size_t p = svg.find("<polyline"); p != std::string::npos; p = svg.find("<polyline", p + 1))
    ++lines;
  EXPECT_EQ(lines, 3u);  // the NaN splits the left series in two
  EXPECT_EQ(svg.rfind("</svg>\n"), svg.size() - 7);
}

}  // namespace
}  // namespace drover::loadtest
