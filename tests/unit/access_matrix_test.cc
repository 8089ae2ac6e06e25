// The access matrix, against a real server over loopback: every RPC of the protos and
// every HTTP route, called by every role (in tenant team-a), by a token of another tenant,
// a revoked, an expired and a malformed token and no token at all, on the caller's own
// tenant or objects, another tenant's, and a tenant whose name differs only in case. Each
// answer is checked against what the access table (src/auth/access.cc) says it must be:
// allowed, UNAUTHENTICATED, PERMISSION_DENIED, or NOT_FOUND worded exactly as for an id
// that does not exist (so ids leak nothing).
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "api/config.h"
#include "api/server.h"
#include "auth/access.h"
#include "auth/roles.h"
#include "client/client.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "web/assets.h"

namespace drover {
namespace {

namespace pb = google::protobuf;
using auth::Rule;
using auth::Scope;

enum class Want { kAllowed, kUnauthenticated, kDenied, kNotFound };
const char* WantName(Want w) {
  switch (w) {
    case Want::kAllowed:
      return "allowed";
    case Want::kUnauthenticated:
      return "UNAUTHENTICATED";
    case Want::kDenied:
      return "PERMISSION_DENIED";
    case Want::kNotFound:
      return "NOT_FOUND";
  }
  return "?";
}

struct Cred {
  std::string label;
  std::string token;  // "" for none
  std::vector<v1::Grant> grants;
  bool valid = true;
  bool owns_agent = false;  // registered the "own" agent
};

enum class Target { kOwn, kOther, kCase };
const char* TargetName(Target t) {
  return t == Target::kOwn ? "own" : t == Target::kOther ? "other tenant's" : "case-variant";
}

struct Ids {
  uint64_t task = 0, workflow = 0, agent = 0;
  std::string token;  // a token id (RevokeToken's object)
};

class AccessMatrix : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/drover_matrix.XXXXXX";
    dir_ = mkdtemp(tmpl);
    api::ServeOptions o;
    o.data_dir = dir_;
    o.store = "memory";
    o.grpc_listen = "127.0.0.1:0";
    o.http_listen = "127.0.0.1:0";
    auto server = api::Server::Start(o);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    grpc_ = absl::StrCat("127.0.0.1:", server_->grpc_port());
    std::ifstream f(dir_ + "/admin.token");
    std::getline(f, admin_);
    ASSERT_FALSE(admin_.empty());
  }
  static void TearDownTestSuite() {
    delete server_;
    std::system(("rm -rf " + dir_).c_str());
  }

  std::unique_ptr<client::Client> As(const std::string& token) {
    client::ClientOptions o;
    o.token = token;
    return client::Client::Connect(grpc_, o);
  }

  std::string Mint(const std::string& name, const std::string& grant, int64_t ttl_ms = 0) {
    v1::CreateTokenRequest req;
    req.set_name(name);
    *req.add_grants() = *auth::ParseGrant(grant);
    req.set_ttl_ms(ttl_ms);
    auto r = As(admin_)->CreateToken(req);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->secret() : "";
  }

  void SetUp() override {
    // The principals.
    for (const char* role : {"viewer", "agent", "submitter", "operator", "admin"}) {
      Cred c;
      c.label = absl::StrCat(role, "@team-a");
      c.token =
          Mint(absl::StrCat("m-", role, "-", ::testing::UnitTest::GetInstance()->random_seed(), "-",
                            counter_++),
               c.label);
      c.grants = {*auth::ParseGrant(c.label)};
      creds_.push_back(c);
    }
    Cred other{"submitter@team-b",
               Mint(absl::StrCat("m-other-", counter_++), "submitter@team-b"),
               {*auth::ParseGrant("submitter@team-b")}};
    creds_.push_back(other);
    Cred root{"admin@* (the first start's)", admin_, {*auth::ParseGrant("admin@*")}};
    creds_.push_back(root);
    Cred agent_star{"agent@*",
                    Mint(absl::StrCat("m-agent-star-", counter_++), "agent@*"),
                    {*auth::ParseGrant("agent@*")}};
    agent_star.owns_agent = true;
    creds_.push_back(agent_star);
    const std::string revoked = Mint(absl::StrCat("m-revoked-", counter_), "viewer@team-a");
    ASSERT_TRUE(As(admin_)->RevokeToken(absl::StrCat("m-revoked-", counter_++)).ok());
    const std::string expired = Mint(absl::StrCat("m-expired-", counter_++), "viewer@team-a", 1);
    usleep(5000);
    creds_.push_back({"revoked", revoked, {}, false});
    creds_.push_back({"expired", expired, {}, false});
    creds_.push_back({"malformed", "drv_nope", {}, false});
    creds_.push_back({"no token", "", {}, false});

    // The objects: a task and a workflow in each tenant, an agent of each agent@* token, a
    // token of each tenant (what RevokeToken is tried on).
    auto admin = As(admin_);
    for (const char* tenant : {"team-a", "team-b"}) {
      Ids& ids = std::string(tenant) == "team-a" ? own_ : other_;
      v1::TaskSpec spec;
      spec.set_type("matrix");
      spec.set_tenant(tenant);
      auto t = admin->Submit(spec);
      ASSERT_TRUE(t.ok()) << t.status();
      ids.task = t->task().id();
      v1::WorkflowSpec wf;
      wf.set_tenant(tenant);
      v1::WorkflowStep* step = wf.add_steps();
      step->set_name("s");
      step->mutable_task()->set_type("matrix");
      auto w = admin->SubmitWorkflow(wf);
      ASSERT_TRUE(w.ok()) << w.status();
      ids.workflow = w->id();
      v1::CreateTokenRequest victim;
      victim.set_name(absl::StrCat("victim-", tenant, "-", counter_++));
      *victim.add_grants() = *auth::ParseGrant(absl::StrCat("viewer@", tenant));
      auto v = admin->CreateToken(victim);
      ASSERT_TRUE(v.ok()) << v.status();
      ids.token = v->token().id();
    }
    v1::RegisterAgentRequest reg;
    reg.add_types("matrix-agents");  // no task of this type: nothing is leased to them
    reg.set_max_concurrency(1);
    auto a = As(creds_[7].token)->Register(reg);
    ASSERT_TRUE(a.ok()) << a.status();
    own_.agent = a->agent_id();
    auto b = As(Mint(absl::StrCat("m-agent-other-", counter_++), "agent@*"))->Register(reg);
    ASSERT_TRUE(b.ok()) << b.status();
    other_.agent = b->agent_id();
  }

  // What the table says `c` gets for `rule` on `target`.
  static Want Expect(const Rule& rule, const Cred& c, Target target) {
    if (rule.scope == Scope::kPublic) return Want::kAllowed;
    if (!c.valid) return Want::kUnauthenticated;
    if (rule.scope == Scope::kSelf) return Want::kAllowed;
    auto holds = [&](const std::string& tenant) {
      for (const auto& g : c.grants) {
        if ((g.tenant() == "*" || g.tenant() == tenant) && (auth::PermsOf(g.role()) & rule.perm)) {
          return true;
        }
      }
      return false;
    };
    bool anywhere = false, everywhere = false;
    for (const auto& g : c.grants) {
      if (auth::PermsOf(g.role()) & rule.perm) {
        anywhere = true;
        everywhere |= g.tenant() == "*";
      }
    }
    const std::string tenant = target == Target::kOwn     ? "team-a"
                               : target == Target::kOther ? "team-b"
                                                          : "Team-A";
    switch (rule.scope) {
      case Scope::kGlobal:
        return everywhere ? Want::kAllowed : Want::kDenied;
      case Scope::kTenant:
        if (rule.tenants == nullptr) return anywhere ? Want::kAllowed : Want::kDenied;
        return holds(tenant) ? Want::kAllowed : Want::kDenied;
      case Scope::kObject:
        if (!anywhere) return Want::kDenied;
        return holds(tenant) ? Want::kAllowed : Want::kNotFound;
      case Scope::kAgent:
        if (!anywhere) return Want::kDenied;
        return target == Target::kOwn && c.owns_agent ? Want::kAllowed : Want::kNotFound;
      default:
        return Want::kAllowed;
    }
  }

  static std::vector<Target> TargetsOf(const Rule& rule) {
    switch (rule.scope) {
      case Scope::kTenant:
        if (rule.tenants == nullptr) return {Target::kOwn};
        return {Target::kOwn, Target::kOther, Target::kCase};
      case Scope::kObject:
      case Scope::kAgent:
        return {Target::kOwn, Target::kOther};
      default:
        return {Target::kOwn};
    }
  }

  const Ids& IdsOf(Target t) const { return t == Target::kOther ? other_ : own_; }

  // The request of `method`, filled by reflection with the target's tenant and ids.
  std::unique_ptr<pb::Message> Request(const std::string& method, Target target) const {
    const std::string dotted = absl::StrReplaceAll(method, {{"/", "."}});
    const pb::MethodDescriptor* md = pb::DescriptorPool::generated_pool()->FindMethodByName(dotted);
    if (md == nullptr) return nullptr;
    std::unique_ptr<pb::Message> m(
        pb::MessageFactory::generated_factory()->GetPrototype(md->input_type())->New());
    const std::string tenant = target == Target::kOwn     ? "team-a"
                               : target == Target::kOther ? "team-b"
                                                          : "Team-A";
    Fill(m.get(), tenant, IdsOf(target), method.find("WorkflowService") != std::string::npos);
    return m;
  }

  static void Fill(pb::Message* m, const std::string& tenant, const Ids& ids, bool workflow) {
    const pb::Descriptor* d = m->GetDescriptor();
    const pb::Reflection* r = m->GetReflection();
    for (int i = 0; i < d->field_count(); ++i) {
      const pb::FieldDescriptor* f = d->field(i);
      const std::string& n = f->name();
      if (f->is_repeated()) {
        if (n == "tasks" && f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
          Fill(r->AddMessage(m, f), tenant, ids, workflow);
        } else if (n == "grants") {
          auto* g = static_cast<v1::Grant*>(r->AddMessage(m, f));
          g->set_tenant(tenant);
          g->set_role(v1::ROLE_VIEWER);
        }
        continue;
      }
      switch (f->cpp_type()) {
        case pb::FieldDescriptor::CPPTYPE_STRING:
          if (n == "tenant") r->SetString(m, f, tenant);
          if (n == "id") r->SetString(m, f, ids.token);
          break;
        case pb::FieldDescriptor::CPPTYPE_UINT64:
          if (n == "id") r->SetUInt64(m, f, workflow ? ids.workflow : ids.task);
          if (n == "agent_id") r->SetUInt64(m, f, ids.agent);
          break;
        case pb::FieldDescriptor::CPPTYPE_INT64:
          if (n == "timeout_ms") r->SetInt64(m, f, 10);
          break;
        case pb::FieldDescriptor::CPPTYPE_MESSAGE:
          if (n == "task" || n == "workflow" || n == "job") {
            Fill(r->MutableMessage(m, f), tenant, ids, workflow);
          }
          break;
        default:
          break;
      }
    }
  }

  // NOT_FOUND worded as for an id that does not exist.
  static bool LooksUnknown(const std::string& msg, const Ids& ids) {
    return msg == absl::StrCat("id: task ", ids.task, " not found") ||
           msg == absl::StrCat("id: workflow ", ids.workflow, " not found") ||
           msg == absl::StrCat("agent_id: agent ", ids.agent, " not registered") ||
           msg == absl::StrCat("id: no token '", ids.token, "'");
  }

  // Compares an answer with what was wanted; returns "" or what went wrong.
  static std::string Judge(Want want, absl::StatusCode code, const std::string& msg,
                           const Ids& ids) {
    const bool unknown = code == absl::StatusCode::kNotFound && LooksUnknown(msg, ids);
    Want got = code == absl::StatusCode::kUnauthenticated    ? Want::kUnauthenticated
               : code == absl::StatusCode::kPermissionDenied ? Want::kDenied
               : unknown                                     ? Want::kNotFound
                                                             : Want::kAllowed;
    if (got == want) return "";
    return absl::StrCat("want ", WantName(want), ", got ", absl::StatusCodeToString(code), ": ",
                        msg);
  }

  absl::StatusCode CallGrpc(const std::string& method, const pb::Message& req,
                            const std::string& token, std::string* msg) {
    if (!channel_) {
      channel_ = grpc::CreateChannel(grpc_, grpc::InsecureChannelCredentials());
    }
    grpc::ClientContext ctx;
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(
                         method.find("OpenWorkStream") != std::string::npos ? 300 : 10'000));
    const std::string bytes = req.SerializeAsString();
    grpc::Slice slice(bytes);
    grpc::ByteBuffer send(&slice, 1), recv;
    if (method.find("OpenWorkStream") != std::string::npos) {
      // A server stream: its first answer (or the deadline, when it stays open) tells.
      v1::AgentService::Stub stub(channel_);
      auto reader = stub.OpenWorkStream(&ctx, static_cast<const v1::OpenWorkStreamRequest&>(req));
      v1::WorkItem item;
      while (reader->Read(&item)) {
      }
      grpc::Status st = reader->Finish();
      *msg = st.error_message();
      return static_cast<absl::StatusCode>(st.error_code());
    }
    grpc::GenericStub stub(channel_);
    std::promise<grpc::Status> done;
    stub.UnaryCall(&ctx, "/" + method, grpc::StubOptions(), &send, &recv,
                   [&done](grpc::Status st) { done.set_value(std::move(st)); });
    grpc::Status st = done.get_future().get();
    *msg = st.error_message();
    return static_cast<absl::StatusCode>(st.error_code());
  }

  static inline api::Server* server_ = nullptr;
  static inline std::string dir_, grpc_, admin_;
  static inline int counter_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::vector<Cred> creds_;
  Ids own_, other_;
};

// Deregistration last: it ends the own agent.
std::vector<const Rule*> Ordered() {
  std::vector<const Rule*> rules, last;
  for (const Rule& r : auth::Rules()) {
    (r.method.find("DeregisterAgent") != absl::string_view::npos ? last : rules).push_back(&r);
  }
  rules.insert(rules.end(), last.begin(), last.end());
  return rules;
}

TEST_F(AccessMatrix, EveryRpcByEveryPrincipal) {
  int calls = 0;
  for (const Rule* rule : Ordered()) {
    const std::string method(rule->method);
    if (method.rfind("http/", 0) == 0) continue;
    for (Target target : TargetsOf(*rule)) {
      std::unique_ptr<pb::Message> req = Request(method, target);
      ASSERT_NE(req, nullptr) << method;
      for (const Cred& c : creds_) {
        std::string msg;
        const absl::StatusCode code = CallGrpc(method, *req, c.token, &msg);
        ++calls;
        const std::string bad = Judge(Expect(*rule, c, target), code, msg, IdsOf(target));
        EXPECT_EQ(bad, "") << method << " by " << c.label << " on " << TargetName(target);
      }
    }
  }
  EXPECT_GT(calls, 500);
}

// The HTTP path of a route, its ids filled in.
std::string PathOf(const auth::HttpRoute& route, const Ids& ids) {
  std::string p(route.pattern);
  const bool workflow = p.find("/v1/workflows/") != std::string::npos;
  p = absl::StrReplaceAll(p, {{R"((\d+))", absl::StrCat(workflow ? ids.workflow : ids.task)},
                              {"([A-Za-z0-9_.-]+)", "nopool"},
                              {"([A-Za-z0-9_.@-]+)", ids.token}});
  // The dashboard's routes: a page path, one of its assets, and a push stream that ends.
  p = absl::StrReplaceAll(
      p, {{"/(tasks|workflows|pools|dlq|resources|events|signin)(/[^/]*)?", "/tasks/1"}});
  if (p == "/assets/(.+)") {
    for (size_t i = 0; i < web::AssetCount(); ++i) {
      if (web::AssetAt(i)->path.starts_with("/assets/")) p = std::string(web::AssetAt(i)->path);
    }
  }
  if (p == "/v1/stream") p += "?interval_ms=250&max_ms=300";
  return p;
}

TEST_F(AccessMatrix, EveryHttpRouteByEveryPrincipal) {
  httplib::Client http("127.0.0.1", server_->http_port());
  int calls = 0;
  std::vector<const auth::HttpRoute*> routes, last;
  for (const auth::HttpRoute& r : auth::HttpRoutes()) {
    (r.method.find("DeregisterAgent") != absl::string_view::npos ? last : routes).push_back(&r);
  }
  routes.insert(routes.end(), last.begin(), last.end());
  for (const auth::HttpRoute* route : routes) {
    const Rule* rule = auth::FindRule(route->method);
    ASSERT_NE(rule, nullptr) << route->pattern;
    const std::string method(route->method);
    for (Target target : TargetsOf(*rule)) {
      std::unique_ptr<pb::Message> req = Request(method, target);
      std::string path = PathOf(*route, IdsOf(target));
      std::string body = "{}";
      if (req != nullptr && route->verb == "POST" && path.find(":cancel") == std::string::npos &&
          path.find(":revoke") == std::string::npos) {
        pb::util::JsonPrintOptions o;
        o.preserve_proto_field_names = true;
        body.clear();
        (void)pb::util::MessageToJsonString(*req, &body, o);
      }
      if (route->verb == "GET" && req != nullptr) {
        const pb::FieldDescriptor* tf = req->GetDescriptor()->FindFieldByName("tenant");
        std::string q;
        if (tf != nullptr && tf->type() == pb::FieldDescriptor::TYPE_STRING) {
          q = "tenant=" + req->GetReflection()->GetString(*req, tf);
        }
        if (req->GetDescriptor()->FindFieldByName("timeout_ms") != nullptr) {
          q += std::string(q.empty() ? "" : "&") + "timeout_ms=10";
        }
        if (!q.empty()) path += "?" + q;
      }
      for (const Cred& c : creds_) {
        httplib::Headers h;
        if (!c.token.empty()) h.emplace("Authorization", "Bearer " + c.token);
        auto res = route->verb == "GET" ? http.Get(path.c_str(), h)
                                        : http.Post(path.c_str(), h, body, "application/json");
        ASSERT_TRUE(res) << route->verb << " " << path;
        ++calls;
        absl::StatusCode code = absl::StatusCode::kOk;
        if (res->status == 401) code = absl::StatusCode::kUnauthenticated;
        if (res->status == 403) code = absl::StatusCode::kPermissionDenied;
        if (res->status == 404) code = absl::StatusCode::kNotFound;
        std::string msg = res->body;
        if (auto at = msg.find("\"message\":\""); at != std::string::npos) {
          msg = msg.substr(at + 11);
          msg = msg.substr(0, msg.find("\"}"));
        }
        EXPECT_EQ(msg.find("no route for"), std::string::npos)
            << route->pattern << " is not served";
        const std::string bad = Judge(Expect(*rule, c, target), code, msg, IdsOf(target));
        EXPECT_EQ(bad, "") << route->verb << " " << path << " by " << c.label << " on "
                           << TargetName(target);
      }
    }
  }
  EXPECT_GT(calls, 400);
}

// Listing without naming a tenant shows the caller's tenant only; by guessing ids a
// submitter of team-b learns nothing of team-a's tasks.
TEST_F(AccessMatrix, ATenantSeesOnlyItsOwnTasks) {
  auto b = As(creds_[5].token);  // submitter@team-b
  v1::ListTasksRequest all;
  auto listed = b->List(all);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_GT(listed->tasks_size(), 0);
  for (const auto& t : listed->tasks()) EXPECT_EQ(t.spec().tenant(), "team-b");
  auto theirs = b->Get(own_.task);
  auto none = b->Get(987654321);
  ASSERT_FALSE(theirs.ok());
  EXPECT_EQ(theirs.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(std::string(theirs.status().message()),
            absl::StrCat("id: task ", own_.task, " not found"));
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(b->Cancel(own_.task, "x").ok());
  auto still = As(admin_)->Get(own_.task);
  ASSERT_TRUE(still.ok());
  EXPECT_NE(still->state(), v1::TASK_STATE_CANCELED);
  // Depending on another tenant's task is refused like an unknown parent.
  v1::TaskSpec spec;
  spec.set_type("matrix");
  spec.set_tenant("team-b");
  spec.add_depends_on(own_.task);
  EXPECT_FALSE(b->Submit(spec).ok());
}

// An agent token submits nothing, reads nothing, and completes only what its own agent
// holds.
TEST_F(AccessMatrix, AnAgentTokenOnlyWorks) {
  auto agent = As(creds_[7].token);  // agent@*
  v1::TaskSpec spec;
  spec.set_type("matrix");
  EXPECT_EQ(agent->Submit(spec).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(agent->Get(own_.task).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(agent->Stats().status().code(), absl::StatusCode::kPermissionDenied);
  // The other agent's lease cannot be completed through this token, whatever the ids.
  absl::Status st = agent->Complete(other_.agent, own_.task, 1, "x");
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(std::string(st.message()),
            absl::StrCat("agent_id: agent ", other_.agent, " not registered"));
  EXPECT_TRUE(agent->Heartbeat(own_.agent).ok());
}

// Another principal with the agent role cannot take an agent's work stream over (it would
// get the agent's pushes): refused before the stream is registered.
TEST_F(AccessMatrix, AnotherPrincipalCannotTakeOverAWorkStream) {
  auto owner = As(creds_[7].token);  // agent@*, registered own_.agent
  auto thief = As(creds_[1].token);  // agent@team-a
  auto stream = thief->OpenWorkStream(own_.agent);
  v1::WorkItem item;
  EXPECT_FALSE(stream->Read(&item));
  absl::Status st = stream->Finish();
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << st;
  EXPECT_TRUE(owner->Heartbeat(own_.agent).ok());
}

}  // namespace
}  // namespace drover
