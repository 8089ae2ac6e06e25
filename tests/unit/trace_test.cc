// W3C trace context for tasks (obs/trace.h, docs/tracing.md).
#include "obs/trace.h"

#include <set>
#include <string>

#include "gtest/gtest.h"
#include "obs/otlp.h"

namespace drover::obs {
namespace {

constexpr char kGood[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST(Traceparent, AValidOneRoundTrips) {
  auto c = ParseTraceparent(kGood);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(Hex(c->trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(Hex(c->span_id), "00f067aa0ba902b7");
  EXPECT_EQ(c->flags, 1);
  EXPECT_EQ(FormatTraceparent(*c), kGood);
}

TEST(Traceparent, MalformedOrAllZeroOnesAreRefused) {
  for (const char* bad : {
           "",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",        // no flags
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx",  // v00 has 4 fields
           "00-00000000000000000000000000000000-00f067aa0ba902b7-01",     // zero trace id
           "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",     // zero span id
           "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",     // uppercase
           "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",     // version ff
           "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
           "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
       }) {
    EXPECT_FALSE(ParseTraceparent(bad).has_value()) << bad;
  }
  // A later version is read by its first four fields.
  EXPECT_TRUE(
      ParseTraceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more").has_value());
}

v1::Task MakeTask(uint64_t id, const std::string& traceparent = "") {
  v1::Task t;
  t.set_id(id);
  t.set_created_unix_ms(1'790'000'000'000);
  t.mutable_spec()->set_traceparent(traceparent);
  return t;
}

TEST(TaskTrace, TheSubmittersTraceIsKeptAndEachAttemptHasItsOwnStableSpan) {
  const v1::Task t = MakeTask(42, kGood);
  EXPECT_EQ(Hex(TaskTraceId(t)), "4bf92f3577b34da6a3ce929d0e0e4736");
  const std::string a1 = AttemptTraceparent(t, 1);
  const std::string a2 = AttemptTraceparent(t, 2);
  EXPECT_EQ(a1.substr(0, 36), "00-4bf92f3577b34da6a3ce929d0e0e4736-");
  EXPECT_NE(a1, a2);
  EXPECT_EQ(a1, AttemptTraceparent(MakeTask(42, kGood), 1)) << "a restart derives the same span";
  EXPECT_TRUE(ParseTraceparent(a1).has_value());
  EXPECT_NE(a1.substr(36, 16), "00f067aa0ba902b7") << "the attempt's span, not the submitter's";
}

TEST(TaskTrace, WithoutATraceparentATaskHasATraceOfItsOwn) {
  std::set<std::string> traces, spans;
  for (uint64_t id = 1; id <= 1000; ++id) {
    const v1::Task t = MakeTask(id);
    traces.insert(Hex(TaskTraceId(t)));
    const TraceId trace = TaskTraceId(t);
    for (int attempt = 0; attempt < 3; ++attempt) {
      for (SpanKind k : {SpanKind::kSubmit, SpanKind::kQueue, SpanKind::kAttempt}) {
        spans.insert(Hex(TaskSpanId(trace, id, attempt, k)));
      }
    }
  }
  EXPECT_EQ(traces.size(), 1000u);
  EXPECT_EQ(spans.size(), 9000u) << "no two spans share an id";
  EXPECT_EQ(AttemptTraceparent(MakeTask(7), 1).substr(53), "01") << "sampled";
}

TEST(TaskTrace, TheCallsHeaderFillsOnlyTasksWithoutOneAndABadHeaderIsIgnored) {
  v1::SubmitTasksRequest req;
  req.add_tasks()->set_type("a");
  req.add_tasks()->set_traceparent("00-11111111111111111111111111111111-2222222222222222-00");
  EXPECT_TRUE(ApplyTraceparent(kGood, &req));
  EXPECT_EQ(req.tasks(0).traceparent(), kGood);
  EXPECT_EQ(req.tasks(1).traceparent(), "00-11111111111111111111111111111111-2222222222222222-00");
  v1::SubmitTaskRequest one;
  one.mutable_task()->set_type("a");
  EXPECT_FALSE(ApplyTraceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01", &one));
  EXPECT_FALSE(ApplyTraceparent("garbage", &one));
  EXPECT_TRUE(one.task().traceparent().empty());
  EXPECT_TRUE(ApplyTraceparent(kGood, &one));
  EXPECT_EQ(one.task().traceparent(), kGood);
}

TEST(OtlpSpans, ATaskWithARetryIsASubmissionThenAWaitAndARunPerAttempt) {
  v1::Task t = MakeTask(9, kGood);
  t.mutable_spec()->set_type("build");
  t.set_state(v1::TASK_STATE_SUCCEEDED);
  const int64_t c = t.created_unix_ms();
  auto* a1 = t.add_history();
  a1->set_number(1);
  a1->set_agent_id(5);
  a1->set_started_unix_ms(c + 10);
  a1->set_ended_unix_ms(c + 20);
  a1->set_outcome("failed");
  a1->set_error("disk \"full\"\n\xff");
  auto* a2 = t.add_history();
  a2->set_number(2);
  a2->set_started_unix_ms(c + 120);
  a2->set_ended_unix_ms(c + 150);
  a2->set_outcome("succeeded");
  t.set_finished_unix_ms(c + 150);
  const std::vector<Span> spans = TaskSpans(t);
  ASSERT_EQ(spans.size(), 5u);
  EXPECT_EQ(spans[0].name, "submit build");
  EXPECT_EQ(spans[0].kind, 4);
  EXPECT_EQ(Hex(spans[0].parent_span_id), "00f067aa0ba902b7");
  EXPECT_EQ(spans[1].name, "queued build");
  EXPECT_EQ(spans[1].start_unix_nano, c * 1'000'000);
  EXPECT_EQ(spans[1].end_unix_nano, (c + 10) * 1'000'000);
  EXPECT_EQ(spans[2].name, "run build");
  EXPECT_EQ(spans[2].status_code, 2);
  EXPECT_EQ(spans[3].start_unix_nano, (c + 20) * 1'000'000) << "the retry waited from the failure";
  EXPECT_EQ(spans[4].status_code, 1);
  EXPECT_EQ(Hex(spans[4].span_id), AttemptTraceparent(t, 2).substr(36, 16))
      << "the run's span is its agent's parent";
  for (size_t i = 1; i < spans.size(); ++i) EXPECT_EQ(spans[i].parent_span_id, spans[0].span_id);
  const std::string json = EncodeOtlpJson(spans, "drover");
  EXPECT_NE(json.find("\"traceId\":\"4bf92f3577b34da6a3ce929d0e0e4736\""), std::string::npos);
  EXPECT_NE(json.find("\"kind\":5"), std::string::npos);
  EXPECT_NE(json.find("{\"key\":\"drover.task.id\",\"value\":{\"intValue\":\"9\"}}"),
            std::string::npos);
  EXPECT_NE(json.find("\"message\":\"disk \\\"full\\\"\\u000a\xef\xbf\xbd\""), std::string::npos)
      << "quotes and control characters escaped, an invalid byte replaced";
}

TEST(OtlpSpans, SamplingFollowsTheSubmitterElseTheTraceId) {
  EXPECT_TRUE(Sampled(MakeTask(1, kGood), 0));
  EXPECT_FALSE(Sampled(MakeTask(1, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"), 1));
  int sampled = 0;
  for (uint64_t id = 1; id <= 10'000; ++id) sampled += Sampled(MakeTask(id), 0.1);
  EXPECT_GT(sampled, 850);
  EXPECT_LT(sampled, 1150);
  EXPECT_FALSE(Sampled(MakeTask(3), 0));
  EXPECT_TRUE(Sampled(MakeTask(3), 1));
}

TEST(OtlpEndpoint, ParsesHostPortAndPathAndNamesTheFieldOtherwise) {
  auto e = ParseOtlpEndpoint("http://127.0.0.1:4318/otlp/", "tracing.endpoint");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->host, "127.0.0.1");
  EXPECT_EQ(e->port, 4318);
  EXPECT_EQ(e->path, "/otlp");
  EXPECT_EQ(ParseOtlpEndpoint("http://[::1]:4318", "f")->host, "::1");
  for (const char* bad : {"", "127.0.0.1:4318", "https://x:1", "http://x", "http://x:0",
                          "http://x:70000", "http://:4318"}) {
    auto r = ParseOtlpEndpoint(bad, "tracing.endpoint");
    EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << bad;
    EXPECT_NE(r.status().message().find("tracing.endpoint"), std::string::npos) << bad;
  }
}

}  // namespace
}  // namespace drover::obs
