// The HTTP/JSON request mapping (docs/http-api.md) and what follows it: any route, path,
// query and body are decoded as the server decodes them, checked against the access table
// (its per-method tenant extractors), turned into an audit record's objects, and
// submissions go through a real engine whose invariants must hold afterwards.
//
// Input: byte 0 picks the route; then "PATH-TOKEN\nQUERY\nBODY".
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <regex>
#include <string>

#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "api/gate.h"
#include "api/http_decode.h"
#include "auth/access.h"
#include "core/engine.h"
#include "google/protobuf/descriptor.h"
#include "util/clock.h"

namespace {

namespace pb = google::protobuf;
using namespace drover;

struct World {
  ManualClock clock;
  std::unique_ptr<core::Engine> engine;
  int inputs = 0;
  void Fresh() {
    core::EngineOptions o;
    o.capacity = 10'000;
    o.tenant_quotas["q"] = {5, 5, 20};
    o.default_quota = {1000, 50, 0};  // every tenant a bucket: batches naming many tenants
    engine = std::make_unique<core::Engine>(o, clock);
    engine->FinishRecovery(0);
  }
};

World& W() {
  static World* w = [] {
    auto* x = new World();
    x->Fresh();
    return x;
  }();
  return *w;
}

void Submit(const pb::Message& msg) {
  World& w = W();
  if (++w.inputs % 2000 == 0) w.Fresh();  // bounded memory across a long run
  core::Engine& e = *w.engine;
  if (auto* r = dynamic_cast<const v1::SubmitTaskRequest*>(&msg)) {
    (void)e.Submit({r->task()}, "task");
  } else if (auto* r = dynamic_cast<const v1::SubmitTasksRequest*>(&msg)) {
    std::vector<v1::TaskSpec> specs(r->tasks().begin(), r->tasks().end());
    (void)e.Submit(specs, "tasks");
  } else if (auto* r = dynamic_cast<const v1::SubmitWorkflowRequest*>(&msg)) {
    (void)e.SubmitWorkflow(r->workflow());
  } else if (auto* r = dynamic_cast<const v1::SubmitMapReduceRequest*>(&msg)) {
    (void)e.SubmitMapReduce(r->job());
  } else {
    return;
  }
  w.clock.Advance(absl::Milliseconds(7));
  e.Tick();
  (void)e.TakeOutbox();
  if (!e.CheckInvariants().ok()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto& routes = auth::HttpRoutes();
  const auth::HttpRoute& route = routes[data[0] % routes.size()];
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::vector<std::string> parts = absl::StrSplit(rest, absl::MaxSplits('\n', 2));
  parts.resize(3);
  const std::string& token = parts[0];
  const std::string& query = parts[1];

  httplib::Request req;
  req.method = std::string(route.verb);
  req.body = parts[2];
  // The path with the fuzzed token where the route captures one.
  std::string pattern(route.pattern);
  std::string path = absl::StrReplaceAll(
      pattern, {{R"((\d+))", token}, {"([A-Za-z0-9_.-]+)", token}, {"([A-Za-z0-9_.@-]+)", token}});
  req.path = path;
  try {
    std::regex re(pattern);
    if (!std::regex_match(req.path, req.matches, re)) return 0;  // the server would 404
  } catch (const std::regex_error&) {
    return 0;
  }
  for (absl::string_view kv : absl::StrSplit(query, '&', absl::SkipEmpty())) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    req.params.emplace(p.first, p.second);
  }
  const auth::Rule* rule = auth::FindRule(route.method);
  if (rule == nullptr) std::abort();  // the completeness rule
  const std::string dotted = absl::StrReplaceAll(std::string(route.method), {{"/", "."}});
  const pb::MethodDescriptor* md = pb::DescriptorPool::generated_pool()->FindMethodByName(dotted);
  if (md == nullptr) return 0;  // HTTP-only routes (/metrics)
  std::unique_ptr<pb::Message> msg(
      pb::MessageFactory::generated_factory()->GetPrototype(md->input_type())->New());
  if (!api::http::DecodeForRoute(route, req, msg.get()).ok()) return 0;
  // The access table's view of it, as the gate takes it.
  auto p = std::make_shared<auth::Principal>();
  p->name = "fuzz";
  v1::Grant g;
  g.set_tenant("team-a");
  g.set_role(v1::ROLE_SUBMITTER);
  p->grants.push_back(g);
  (void)auth::Check(auth::Caller(p), *rule, msg.get());
  (void)api::AuditObjects(*msg);
  Submit(*msg);
  return 0;
}
