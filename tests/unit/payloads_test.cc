// JSON payloads: the HTTP gateway's rewrite both ways (api/http_payloads.h) and the engine's
// checks of *_json fields (on the engine fixture of engine_test).
#include <gtest/gtest.h>

#include "absl/strings/escaping.h"
#include "api/http_payloads.h"
#include "drover/v1/drover.pb.h"
#include "engine_fixture.h"
#include "google/protobuf/util/json_util.h"
#include "util/json.h"

namespace drover {
namespace {

namespace pb = google::protobuf;
using api::http::PayloadsIn;
using api::http::PayloadsOut;

template <typename M>
M ParseIn(const std::string& body) {
  absl::StatusOr<std::string> in = PayloadsIn(body, M::descriptor());
  EXPECT_TRUE(in.ok()) << in.status();
  M m;
  EXPECT_TRUE(pb::util::JsonStringToMessage(*in, &m).ok()) << *in;
  return m;
}

std::string Print(const pb::Message& m) {
  std::string out;
  pb::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  EXPECT_TRUE(pb::util::MessageToJsonString(m, &out, o).ok());
  return PayloadsOut(out, m.GetDescriptor());
}

TEST(PayloadsTest, AnObjectPayloadIsJsonTextMarkedJson) {
  auto r = ParseIn<v1::SubmitTaskRequest>(
      R"({"task":{"type":"x","payload":{"doc":1,"b":[true,null,"é"],"a":1.5}}})");
  EXPECT_EQ(r.task().payload(), R"({"doc":1,"b":[true,null,"é"],"a":1.5})");  // key order kept
  EXPECT_TRUE(r.task().payload_json());
}

TEST(PayloadsTest, EveryNonStringValueIsJson) {
  for (const std::string v : {"1", "-2.5e3", "true", "false", "[]", "[1,\"a\"]", "{}"}) {
    auto r = ParseIn<v1::SubmitTaskRequest>(R"({"task":{"type":"x","payload":)" + v + "}}");
    EXPECT_TRUE(r.task().payload_json()) << v;
    EXPECT_EQ(r.task().payload(), v == "-2.5e3" ? "-2500.0" : v);
  }
}

TEST(PayloadsTest, AStringStaysBase64SoOldRequestsKeepTheirMeaning) {
  auto r = ParseIn<v1::SubmitTaskRequest>(R"({"task":{"type":"x","payload":"aGVsbG8="}})");
  EXPECT_EQ(r.task().payload(), "hello");
  EXPECT_FALSE(r.task().payload_json());
}

TEST(PayloadsTest, AStringWithTheFlagIsAJsonString) {
  auto r = ParseIn<v1::SubmitTaskRequest>(
      R"({"task":{"type":"x","payload":"Summarize this","payloadJson":true}})");
  EXPECT_EQ(r.task().payload(), R"("Summarize this")");
  EXPECT_TRUE(r.task().payload_json());
}

TEST(PayloadsTest, AStringThatIsNotBase64IsRefusedWithTheWayOut) {
  absl::StatusOr<std::string> in = PayloadsIn(R"({"task":{"type":"x","payload":"Summarize this"}})",
                                              v1::SubmitTaskRequest::descriptor());
  ASSERT_FALSE(in.ok());
  EXPECT_NE(in.status().message().find("task.payload: a string here is base64"), std::string::npos)
      << in.status();
  EXPECT_NE(in.status().message().find("\"payload_json\": true"), std::string::npos);
}

TEST(PayloadsTest, PayloadBytesIsTheBinaryForm) {
  auto r = ParseIn<v1::SubmitTaskRequest>(R"({"task":{"type":"x","payload_bytes":"AAEC"}})");
  EXPECT_EQ(r.task().payload(), std::string("\0\1\2", 3));
  EXPECT_FALSE(r.task().payload_json());
  for (const char* bad : {R"({"task":{"type":"x","payload_bytes":"AAEC","payload":1}})",
                          R"({"task":{"type":"x","payload_bytes":{"a":1}}})",
                          R"({"task":{"type":"x","payload_bytes":"AAEC","payload_json":true}})"}) {
    EXPECT_FALSE(PayloadsIn(bad, v1::SubmitTaskRequest::descriptor()).ok()) << bad;
  }
}

TEST(PayloadsTest, NestedMessagesAreWalkedAndLabelsAreNot) {
  auto w = ParseIn<v1::SubmitWorkflowRequest>(
      R"({"workflow":{"steps":[{"name":"a","task":{"type":"x","payload":{"n":1},
          "labels":{"payload":"cGF5"}}},{"name":"b","task":{"type":"y","payload":"cGF5"}}]}})");
  EXPECT_TRUE(w.workflow().steps(0).task().payload_json());
  EXPECT_EQ(w.workflow().steps(0).task().labels().at("payload"), "cGF5");
  EXPECT_FALSE(w.workflow().steps(1).task().payload_json());
  EXPECT_EQ(w.workflow().steps(1).task().payload(), "pay");
}

TEST(PayloadsTest, ItemsAreJsonWhenAnyIsNotAString) {
  auto m = ParseIn<v1::SubmitMapReduceRequest>(
      R"({"job":{"mapper":{"type":"m"},"reducer":{"type":"r"},"items":[{"a":1},"two",3]}})");
  EXPECT_TRUE(m.job().items_json());
  ASSERT_EQ(m.job().items_size(), 3);
  EXPECT_EQ(m.job().items(1), R"("two")");
  auto old = ParseIn<v1::SubmitMapReduceRequest>(
      R"({"job":{"mapper":{"type":"m"},"reducer":{"type":"r"},"items":["YQ==","Yg=="]}})");
  EXPECT_FALSE(old.job().items_json());
  EXPECT_EQ(old.job().items(1), "b");
}

TEST(PayloadsTest, ResultsCheckpointsAndBodiesToo) {
  auto c = ParseIn<v1::CompleteTasksRequest>(R"({"items":[{"task_id":"1","result":{"ok":1}}]})");
  EXPECT_TRUE(c.items(0).result_json());
  auto k = ParseIn<v1::CheckpointRequest>(R"({"checkpoint":[1,2]})");
  EXPECT_TRUE(k.checkpoint_json());
  auto s = ParseIn<v1::SendMessageRequest>(R"({"all":true,"body":{"hi":1}})");
  EXPECT_TRUE(s.body_json());
}

TEST(PayloadsTest, AnswersShowFlaggedFieldsAsValuesAndTheRestAsBase64) {
  v1::Task t;
  t.set_id(7);
  t.mutable_spec()->set_payload(R"({"doc":1})");
  t.mutable_spec()->set_payload_json(true);
  t.set_result("\x01\x02");
  t.set_checkpoint(R"("text")");
  t.set_checkpoint_json(true);
  const std::string out = Print(t);
  EXPECT_NE(out.find(R"("payload":{"doc":1})"), std::string::npos) << out;
  EXPECT_NE(out.find(R"("result":"AQI=")"), std::string::npos) << out;
  EXPECT_NE(out.find(R"("checkpoint":"text")"), std::string::npos) << out;
  // Round trip: what the API answers, sent back, is the same message.
  auto back = ParseIn<v1::Task>(out);
  EXPECT_EQ(back.spec().payload(), t.spec().payload());
  EXPECT_EQ(back.result(), t.result());
  EXPECT_EQ(back.checkpoint(), t.checkpoint());
}

TEST(PayloadsTest, AnAnswerWithoutFlagsIsUntouched) {
  const std::string json = R"({"id":"1","spec":{"payload":"eyJhIjoxfQ=="}})";
  EXPECT_EQ(PayloadsOut(json, v1::Task::descriptor()), json);
}

TEST(PayloadsTest, CheckJsonNamesTheFieldAndThePlace) {
  EXPECT_TRUE(util::CheckJson(" {\"a\": [1, 2]}\n", "payload").ok());
  absl::Status st = util::CheckJson("{\"a\": ", "task.payload");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("task.payload: not valid JSON (parse error at line 1, column 7"),
            std::string::npos)
      << st;
  EXPECT_FALSE(util::CheckJson("", "x").ok());
  EXPECT_FALSE(util::CheckJson("{} {}", "x").ok());
}

}  // namespace
}  // namespace drover

namespace drover::core {
namespace {

using testing_internal::EngineTest;

// JSON payloads (docs/payloads.md): a payload, result or checkpoint marked *_json is checked
// when it arrives and stays marked on the way to the agent and to the reader.
TEST_F(EngineTest, JsonPayloadsAreCheckedAndStayMarked) {
  v1::TaskSpec bad = Spec("work");
  bad.set_payload("{\"doc\": ");
  bad.set_payload_json(true);
  absl::StatusOr<Engine::SubmitResult> refused = TrySubmit(bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("task.payload: not valid JSON"), std::string::npos)
      << refused.status();

  v1::TaskSpec good = Spec("work");
  good.set_payload("{\"doc\": 1}");
  good.set_payload_json(true);
  const TaskId id = Submit(good);
  const AgentId agent = StartAgent("work");
  v1::TaskLease lease = TakeOnlyLease(agent);
  EXPECT_TRUE(lease.payload_json());
  EXPECT_EQ(lease.payload(), "{\"doc\": 1}");

  absl::Status st = engine_->Checkpoint(agent, id, lease.lease_token(), "[1,", true);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("checkpoint: not valid JSON"), std::string::npos) << st;
  ASSERT_TRUE(engine_->Checkpoint(agent, id, lease.lease_token(), "[1, 2]", true).ok());
  EXPECT_TRUE(TaskOf(id).checkpoint_json());

  st = engine_->Complete(agent, id, lease.lease_token(), "not json", true);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("result: not valid JSON"), std::string::npos) << st;
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_LEASED);  // the refused completion changed nothing
  ASSERT_TRUE(
      engine_->Complete(agent, id, lease.lease_token(), "{\"summary\": \"ok\"}", true).ok());
  Settle();
  EXPECT_EQ(StateOf(id), v1::TASK_STATE_SUCCEEDED);
  EXPECT_TRUE(TaskOf(id).result_json());

  // A child sees its parent's result marked JSON.
  v1::TaskSpec child = Spec("work");
  child.add_depends_on(id);
  Submit(child);
  v1::TaskLease cl = TakeOnlyLease(agent);
  ASSERT_EQ(cl.parents_size(), 1);
  EXPECT_TRUE(cl.parents(0).result_json());
  EXPECT_FALSE(cl.payload_json());
}

}  // namespace
}  // namespace drover::core
