// The auth part alone: roles, grants, tokens (creation, checks, escalation, revocation,
// expiry) and the access table's completeness against the protos.
#include <set>
#include <string>

#include "auth/access.h"
#include "auth/roles.h"
#include "auth/tokens.h"
#include "drover/v1/drover.pb.h"
#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"

namespace drover::auth {
namespace {

v1::Grant G(const std::string& role, const std::string& tenant) {
  auto g = ParseGrant(role + "@" + tenant);
  EXPECT_TRUE(g.ok()) << g.status();
  return *g;
}

Caller With(std::vector<v1::Grant> grants, int64_t expires = 0) {
  auto p = std::make_shared<Principal>();
  p->name = "tester";
  p->grants = std::move(grants);
  p->expires_unix_ms = expires;
  return Caller(std::move(p));
}

v1::CreateTokenRequest Req(const std::string& name, std::vector<v1::Grant> grants,
                           int64_t ttl = 0) {
  v1::CreateTokenRequest r;
  r.set_name(name);
  for (auto& g : grants) *r.add_grants() = g;
  r.set_ttl_ms(ttl);
  return r;
}

TEST(Roles, EachRoleHoldsItsPermissionsOnly) {
  EXPECT_EQ(PermsOf(v1::ROLE_VIEWER), kRead);
  EXPECT_EQ(PermsOf(v1::ROLE_AGENT), kAgent);  // an agent reads nothing
  EXPECT_EQ(PermsOf(v1::ROLE_SUBMITTER), kRead | kSubmit | kCancel);
  EXPECT_EQ(PermsOf(v1::ROLE_OPERATOR) & (kSubmit | kPurge | kTokens | kAudit), 0u);
  EXPECT_EQ(PermsOf(v1::ROLE_ADMIN), kAllPerms);
  EXPECT_EQ(PermsOf(v1::ROLE_UNSPECIFIED), 0u);
}

TEST(Roles, GrantsParseAndNameTheirErrors) {
  EXPECT_EQ(GrantString(G("submitter", "team-a")), "submitter@team-a");
  auto star = ParseGrant("admin");
  ASSERT_TRUE(star.ok());
  EXPECT_EQ(star->tenant(), "*");
  EXPECT_EQ(ParseGrant("ROLE_VIEWER@x")->role(), v1::ROLE_VIEWER);
  EXPECT_NE(ParseGrant("wizard@x").status().message().find("unknown role 'wizard'"),
            std::string::npos);
  EXPECT_NE(ParseGrant("viewer@a b").status().message().find("outside [A-Za-z0-9_.:@-]"),
            std::string::npos);
  EXPECT_FALSE(ParseGrant("viewer@").ok());
}

TEST(Caller, TenantsAreExactAndStarIsEveryTenant) {
  Caller a = With({G("submitter", "team-a"), G("viewer", "team-b")});
  EXPECT_TRUE(a.Can(kSubmit, "team-a"));
  EXPECT_FALSE(a.Can(kSubmit, "Team-A"));  // case matters: another tenant
  EXPECT_FALSE(a.Can(kSubmit, "team-b"));
  EXPECT_TRUE(a.Can(kRead, "team-b"));
  EXPECT_TRUE(a.CanAnywhere(kCancel));
  EXPECT_FALSE(a.CanEverywhere(kRead));
  EXPECT_EQ(a.TenantsWith(kRead), (std::vector<std::string>{"team-a", "team-b"}));
  Caller star = With({G("viewer", "*")});
  EXPECT_TRUE(star.Can(kRead, "anything"));
  EXPECT_TRUE(star.CanEverywhere(kRead));
  EXPECT_FALSE(star.CanAnywhere(kSubmit));
  EXPECT_FALSE(Caller().CanAnywhere(kRead));
}

TEST(Tokens, CreatedTokensAuthenticateByTheirSecretOnly) {
  TokenRegistry reg;
  Caller admin = With({G("admin", "*")});
  auto c = reg.Create(admin, Req("ci", {G("submitter", "team-a")}), 1000);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->token.secret_hash().empty());  // never answered
  EXPECT_EQ(c->secret.rfind("drv_" + c->token.id() + "_", 0), 0u);
  auto p = reg.Authenticate(c->secret, 2000);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)->name, "ci");
  EXPECT_EQ((*p)->credential, "token drv_" + c->token.id());

  std::string wrong = c->secret;
  wrong.back() = wrong.back() == '0' ? '1' : '0';
  EXPECT_EQ(reg.Authenticate(wrong, 2000).status().message(), "unknown token");
  EXPECT_NE(reg.Authenticate("hello", 2000).status().message().find("malformed"),
            std::string::npos);
  EXPECT_EQ(reg.Authenticate("", 2000).status().code(), absl::StatusCode::kUnauthenticated);
  // What is persisted holds the hash, never the secret.
  v1::TokenList snap = reg.Snapshot();
  ASSERT_EQ(snap.tokens_size(), 1);
  EXPECT_EQ(snap.tokens(0).secret_hash(), HashToken(c->secret));
  EXPECT_EQ(snap.SerializeAsString().find(c->secret.substr(17)), std::string::npos);
}

TEST(Tokens, NoEscalation) {
  TokenRegistry reg;
  Caller admin_a = With({G("admin", "team-a")});
  EXPECT_TRUE(reg.Create(admin_a, Req("a1", {G("submitter", "team-a")}), 0).ok());
  EXPECT_TRUE(reg.Create(admin_a, Req("a2", {G("admin", "team-a")}), 0).ok());
  // Another tenant, or every tenant: above its own.
  EXPECT_EQ(reg.Create(admin_a, Req("b1", {G("viewer", "team-b")}), 0).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(reg.Create(admin_a, Req("s1", {G("viewer", "*")}), 0).status().code(),
            absl::StatusCode::kPermissionDenied);
  // Without the tokens permission nothing can be minted, even a lower role.
  Caller op = With({G("operator", "*")});
  EXPECT_EQ(reg.Create(op, Req("v", {G("viewer", "*")}), 0).status().code(),
            absl::StatusCode::kPermissionDenied);
  // A token never outlives the one that made it.
  Caller short_lived = With({G("admin", "*")}, 5000);
  auto c = reg.Create(short_lived, Req("x", {G("viewer", "*")}), 1000);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->token.expires_unix_ms(), 5000);
  auto d = reg.Create(short_lived, Req("y", {G("viewer", "*")}, 1000), 1000);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->token.expires_unix_ms(), 2000);
}

TEST(Tokens, BadRequestsNameTheField) {
  TokenRegistry reg;
  Caller admin = With({G("admin", "*")});
  EXPECT_NE(reg.Create(admin, Req("", {G("viewer", "*")}), 0).status().message().find("name:"),
            std::string::npos);
  EXPECT_NE(reg.Create(admin, Req("a b", {G("viewer", "*")}), 0).status().message().find("name:"),
            std::string::npos);
  EXPECT_NE(reg.Create(admin, Req("x", {}), 0).status().message().find("grants:"),
            std::string::npos);
  v1::CreateTokenRequest r = Req("x", {G("viewer", "*")});
  r.mutable_grants(0)->set_role(v1::ROLE_UNSPECIFIED);
  EXPECT_NE(reg.Create(admin, r, 0).status().message().find("grants[0].role"), std::string::npos);
  EXPECT_NE(
      reg.Create(admin, Req("x", {G("viewer", "*")}, -1), 0).status().message().find("ttl_ms"),
      std::string::npos);
  ASSERT_TRUE(reg.Create(admin, Req("dup", {G("viewer", "*")}), 0).ok());
  EXPECT_EQ(reg.Create(admin, Req("dup", {G("viewer", "*")}), 0).status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST(Tokens, RevokedAndExpiredTokensStopAtOnce) {
  TokenRegistry reg;
  Caller admin = With({G("admin", "*")});
  auto c = reg.Create(admin, Req("r", {G("viewer", "*")}), 0);
  auto e = reg.Create(admin, Req("e", {G("viewer", "*")}, 10), 1000);
  ASSERT_TRUE(c.ok() && e.ok());
  EXPECT_TRUE(reg.Authenticate(e->secret, 1009).ok());
  EXPECT_NE(reg.Authenticate(e->secret, 1010).status().message().find("expired"),
            std::string::npos);
  ASSERT_TRUE(reg.Revoke(admin, "r", 50).ok());  // by name
  EXPECT_NE(reg.Authenticate(c->secret, 60).status().message().find("revoked"), std::string::npos);
  // Revoked state is persisted and survives a reload.
  TokenRegistry again;
  again.Load(reg.Snapshot());
  EXPECT_NE(again.Authenticate(c->secret, 60).status().message().find("revoked"),
            std::string::npos);
  EXPECT_EQ(again.LiveCount(2000), 0u);
}

TEST(Tokens, ATenantAdminSeesAndRevokesOnlyItsTenantsTokens) {
  TokenRegistry reg;
  Caller root = With({G("admin", "*")});
  auto a = reg.Create(root, Req("a", {G("viewer", "team-a")}), 0);
  auto b = reg.Create(root, Req("b", {G("viewer", "team-b")}), 0);
  auto both = reg.Create(root, Req("ab", {G("viewer", "team-a"), G("viewer", "team-b")}), 0);
  ASSERT_TRUE(a.ok() && b.ok() && both.ok());
  Caller admin_a = With({G("admin", "team-a")});
  std::vector<v1::Token> seen = reg.List(admin_a);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].name(), "a");
  EXPECT_EQ(reg.Revoke(admin_a, b->token.id(), 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reg.Revoke(admin_a, both->token.id(), 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(reg.Revoke(admin_a, "drv_" + a->token.id(), 0).ok());
  EXPECT_EQ(reg.List(root).size(), 3u);
}

TEST(Tokens, EphemeralTokensAreNeverPersisted) {
  TokenRegistry reg;
  auto c = reg.CreateEphemeral("pool-agents", {G("agent", "*")}, 0);
  EXPECT_TRUE(reg.Authenticate(c.secret, 1).ok());
  EXPECT_EQ(reg.Snapshot().tokens_size(), 0);
  EXPECT_EQ(reg.LiveCount(1), 0u);
  reg.Load(v1::TokenList());
  EXPECT_TRUE(reg.Authenticate(c.secret, 1).ok());  // a reload keeps them
}

// Every method of every service in the protos has a rule; every rule names a real method
// (or an HTTP-only route); every HTTP route points at a rule.
TEST(Access, EveryMethodInTheProtosHasARule) {
  const google::protobuf::FileDescriptor* file = v1::Task::descriptor()->file();
  std::set<std::string> methods;
  ASSERT_GE(file->service_count(), 5);
  for (int s = 0; s < file->service_count(); ++s) {
    const google::protobuf::ServiceDescriptor* svc = file->service(s);
    for (int m = 0; m < svc->method_count(); ++m) {
      const std::string name = svc->full_name() + "/" + svc->method(m)->name();
      methods.insert(name);
      EXPECT_NE(FindRule(name), nullptr) << name << " has no access rule (src/auth/access.cc)";
    }
  }
  std::set<std::string> ruled;
  for (const Rule& r : Rules()) {
    EXPECT_TRUE(ruled.insert(std::string(r.method)).second) << r.method << " has two rules";
    if (r.method.rfind("http/", 0) != 0) {
      EXPECT_TRUE(methods.count(std::string(r.method))) << r.method << " is not in the protos";
    }
    if (r.scope != Scope::kPublic && r.scope != Scope::kSelf) {
      EXPECT_NE(r.perm, 0u) << r.method;
    }
  }
  std::set<std::pair<std::string, std::string>> routes;
  for (const HttpRoute& h : HttpRoutes()) {
    EXPECT_NE(FindRule(h.method), nullptr) << h.verb << " " << h.pattern;
    EXPECT_TRUE(routes.insert({std::string(h.verb), std::string(h.pattern)}).second)
        << h.verb << " " << h.pattern << " listed twice";
  }
}

TEST(Access, StateChangingCallsAreAuditedAndReadsAreNot) {
  for (const char* m :
       {"drover.v1.TaskService/SubmitTask", "drover.v1.TaskService/CancelTask",
        "drover.v1.AdminService/PurgeDeadLetters", "drover.v1.AdminService/ApplyPool",
        "drover.v1.AuthService/CreateToken", "drover.v1.AuthService/RevokeToken",
        "drover.v1.AgentService/RegisterAgent"}) {
    ASSERT_NE(FindRule(m), nullptr) << m;
    EXPECT_TRUE(FindRule(m)->changes_state) << m;
  }
  for (const char* m : {"drover.v1.TaskService/GetTask", "drover.v1.AdminService/Stats",
                        "drover.v1.AuthService/ListAudit"}) {
    EXPECT_FALSE(FindRule(m)->changes_state) << m;
  }
}

TEST(Access, CheckFollowsTheRule) {
  const Rule* submit = FindRule("drover.v1.TaskService/SubmitTask");
  v1::SubmitTaskRequest req;
  req.mutable_task()->set_tenant("team-a");
  EXPECT_TRUE(Check(With({G("submitter", "team-a")}), *submit, &req).ok());
  EXPECT_EQ(Check(With({G("viewer", "team-a")}), *submit, &req).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Check(With({G("submitter", "team-b")}), *submit, &req).code(),
            absl::StatusCode::kPermissionDenied);
  req.mutable_task()->clear_tenant();  // "default"
  EXPECT_EQ(Check(With({G("submitter", "team-a")}), *submit, &req).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(Check(With({G("submitter", "default")}), *submit, &req).ok());
  EXPECT_EQ(Check(Caller(), *submit, &req).code(), absl::StatusCode::kUnauthenticated);
  const Rule* stats = FindRule("drover.v1.AdminService/Stats");
  EXPECT_EQ(Check(With({G("admin", "team-a")}), *stats, nullptr).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(Check(With({G("viewer", "*")}), *stats, nullptr).ok());
  EXPECT_TRUE(Check(Caller(), *FindRule("drover.v1.AdminService/Health"), nullptr).ok());
}

TEST(Access, TheMatrixListsEveryRule) {
  const std::string md = AccessMatrixMarkdown();
  for (const Rule& r : Rules()) {
    EXPECT_NE(md.find(std::string(r.method)), std::string::npos) << r.method;
  }
}

}  // namespace
}  // namespace drover::auth
