#include "auth/access.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "drover/v1/drover.pb.h"

namespace drover::auth {
namespace {

std::string OrDefault(const std::string& tenant) { return tenant.empty() ? "default" : tenant; }

template <typename Req, typename F>
TenantFn Tenants(F) {
  return [](const google::protobuf::Message& m) { return F{}(static_cast<const Req&>(m)); };
}

// Each extractor: the tenants one request type names.
struct SubmitTask {
  std::vector<std::string> operator()(const v1::SubmitTaskRequest& r) const {
    return {OrDefault(r.task().tenant())};
  }
};
struct SubmitTasks {
  std::vector<std::string> operator()(const v1::SubmitTasksRequest& r) const {
    std::vector<std::string> out;
    for (const auto& t : r.tasks()) {
      std::string tenant = OrDefault(t.tenant());
      if (std::find(out.begin(), out.end(), tenant) == out.end()) out.push_back(std::move(tenant));
    }
    return out;
  }
};
struct SubmitWorkflow {
  std::vector<std::string> operator()(const v1::SubmitWorkflowRequest& r) const {
    return {OrDefault(r.workflow().tenant())};
  }
};
struct SubmitMapReduce {
  std::vector<std::string> operator()(const v1::SubmitMapReduceRequest& r) const {
    return {OrDefault(r.job().tenant())};
  }
};
template <typename Req>
struct Named {  // a list's tenant filter: "" names none
  std::vector<std::string> operator()(const Req& r) const {
    if (r.tenant().empty()) return {};
    return {r.tenant()};
  }
};
struct CreateToken {
  std::vector<std::string> operator()(const v1::CreateTokenRequest& r) const {
    std::vector<std::string> out;
    for (const auto& g : r.grants()) out.push_back(g.tenant());
    return out;
  }
};

constexpr uint32_t kNone = 0;

}  // namespace

absl::string_view ScopeName(Scope scope) {
  switch (scope) {
    case Scope::kPublic:
      return "public";
    case Scope::kSelf:
      return "self";
    case Scope::kTenant:
      return "tenant";
    case Scope::kObject:
      return "object";
    case Scope::kAgent:
      return "agent";
    case Scope::kGlobal:
      return "global";
  }
  return "?";
}

const std::vector<Rule>& Rules() {
  using S = Scope;
  static const std::vector<Rule> rules = {
      // TaskService
      {"drover.v1.TaskService/SubmitTask", kSubmit, S::kTenant, true,
       Tenants<v1::SubmitTaskRequest>(SubmitTask{})},
      {"drover.v1.TaskService/SubmitTasks", kSubmit, S::kTenant, true,
       Tenants<v1::SubmitTasksRequest>(SubmitTasks{})},
      {"drover.v1.TaskService/GetTask", kRead, S::kObject, false},
      {"drover.v1.TaskService/ListTasks", kRead, S::kTenant, false,
       Tenants<v1::ListTasksRequest>(Named<v1::ListTasksRequest>{})},
      {"drover.v1.TaskService/CancelTask", kCancel, S::kObject, true},
      {"drover.v1.TaskService/WaitTask", kRead, S::kObject, false},
      // WorkflowService
      {"drover.v1.WorkflowService/SubmitWorkflow", kSubmit, S::kTenant, true,
       Tenants<v1::SubmitWorkflowRequest>(SubmitWorkflow{})},
      {"drover.v1.WorkflowService/SubmitMapReduce", kSubmit, S::kTenant, true,
       Tenants<v1::SubmitMapReduceRequest>(SubmitMapReduce{})},
      {"drover.v1.WorkflowService/GetWorkflow", kRead, S::kObject, false},
      {"drover.v1.WorkflowService/ListWorkflows", kRead, S::kTenant, false,
       Tenants<v1::ListWorkflowsRequest>(Named<v1::ListWorkflowsRequest>{})},
      {"drover.v1.WorkflowService/CancelWorkflow", kCancel, S::kObject, true},
      {"drover.v1.WorkflowService/WaitWorkflow", kRead, S::kObject, false},
      // AgentService
      // Agents take every tenant's tasks of their types: registering needs agent@*.
      {"drover.v1.AgentService/RegisterAgent", kAgent, S::kGlobal, true},
      {"drover.v1.AgentService/Heartbeat", kAgent, S::kAgent, false},
      {"drover.v1.AgentService/OpenWorkStream", kAgent, S::kAgent, false},
      {"drover.v1.AgentService/CompleteTask", kAgent, S::kAgent, false},
      {"drover.v1.AgentService/CompleteTasks", kAgent, S::kAgent, false},
      {"drover.v1.AgentService/FailTask", kAgent, S::kAgent, false},
      {"drover.v1.AgentService/Checkpoint", kAgent, S::kAgent, false},
      {"drover.v1.AgentService/ExtendLease", kAgent, S::kAgent, false},
      {"drover.v1.AgentService/DeregisterAgent", kAgent, S::kAgent, true},
      // AdminService
      {"drover.v1.AdminService/Health", kNone, S::kPublic, false},
      {"drover.v1.AdminService/Ready", kNone, S::kPublic, false},
      {"drover.v1.AdminService/Stats", kRead, S::kGlobal, false},
      {"drover.v1.AdminService/ListDeadLetters", kRead, S::kTenant, false,
       Tenants<v1::ListDeadLettersRequest>(Named<v1::ListDeadLettersRequest>{})},
      {"drover.v1.AdminService/ReprocessDeadLetters", kOperate, S::kGlobal, true},
      {"drover.v1.AdminService/PurgeDeadLetters", kPurge, S::kGlobal, true},
      {"drover.v1.AdminService/SendMessage", kOperate, S::kGlobal, true},
      {"drover.v1.AdminService/GetUsage", kRead, S::kGlobal, false},
      {"drover.v1.AdminService/ListAgents", kRead, S::kGlobal, false},
      {"drover.v1.AdminService/ListPools", kRead, S::kGlobal, false},
      {"drover.v1.AdminService/ApplyPool", kOperate, S::kGlobal, true},
      {"drover.v1.AdminService/DeletePool", kOperate, S::kGlobal, true},
      {"drover.v1.AdminService/StopPoolAgent", kOperate, S::kGlobal, true},
      {"drover.v1.AdminService/ListScalingDecisions", kRead, S::kGlobal, false},
      {"drover.v1.AdminService/GetLoadHistory", kRead, S::kGlobal, false},
      {"drover.v1.AdminService/ImportLoadHistory", kOperate, S::kGlobal, true},
      {"drover.v1.AdminService/GetCluster", kRead, S::kGlobal, false},
      // Narrowed to the caller's tenant when it reads one only (events of no tenant —
      // agents, pools — are then left out).
      {"drover.v1.AdminService/ListEvents", kRead, S::kTenant, false,
       Tenants<v1::ListEventsRequest>(Named<v1::ListEventsRequest>{})},
      {"drover.v1.AdminService/GetStatsSeries", kRead, S::kGlobal, false},
      // AuthService
      {"drover.v1.AuthService/CreateToken", kTokens, S::kTenant, true,
       Tenants<v1::CreateTokenRequest>(CreateToken{})},
      {"drover.v1.AuthService/ListTokens", kTokens, S::kTenant, false},
      {"drover.v1.AuthService/RevokeToken", kTokens, S::kObject, true},
      {"drover.v1.AuthService/WhoAmI", kNone, S::kSelf, false},
      {"drover.v1.AuthService/ListAudit", kAudit, S::kTenant, false,
       Tenants<v1::ListAuditRequest>(Named<v1::ListAuditRequest>{})},
      // HTTP only
      {"http/Metrics", kRead, S::kGlobal, false},
      // The dashboard (docs/dashboard.md): its assets carry no data; signing in checks the
      // token in the body (any valid one, as WhoAmI) and is audited; the push stream says
      // only which kinds of object changed, narrowed like ListEvents.
      {"http/Dashboard", kNone, S::kPublic, false},
      {"http/SignIn", kNone, S::kSelf, true},
      {"http/SignOut", kNone, S::kPublic, false},
      {"http/Stream", kRead, S::kTenant, false},
  };
  return rules;
}

const Rule* FindRule(absl::string_view method) {
  for (const Rule& r : Rules()) {
    if (r.method == method) return &r;
  }
  return nullptr;
}

const std::vector<HttpRoute>& HttpRoutes() {
  static const std::vector<HttpRoute> routes = {
      {"POST", "/v1/tasks", "drover.v1.TaskService/SubmitTask"},
      {"POST", "/v1/tasks:batch", "drover.v1.TaskService/SubmitTasks"},
      {"GET", R"(/v1/tasks/(\d+))", "drover.v1.TaskService/GetTask"},
      {"GET", "/v1/tasks", "drover.v1.TaskService/ListTasks"},
      {"POST", R"(/v1/tasks/(\d+):cancel)", "drover.v1.TaskService/CancelTask"},
      {"GET", R"(/v1/tasks/(\d+):wait)", "drover.v1.TaskService/WaitTask"},
      {"POST", "/v1/workflows", "drover.v1.WorkflowService/SubmitWorkflow"},
      {"POST", "/v1/mapreduce", "drover.v1.WorkflowService/SubmitMapReduce"},
      {"GET", R"(/v1/workflows/(\d+))", "drover.v1.WorkflowService/GetWorkflow"},
      {"GET", "/v1/workflows", "drover.v1.WorkflowService/ListWorkflows"},
      {"POST", R"(/v1/workflows/(\d+):cancel)", "drover.v1.WorkflowService/CancelWorkflow"},
      {"GET", R"(/v1/workflows/(\d+):wait)", "drover.v1.WorkflowService/WaitWorkflow"},
      {"POST", "/v1/agents", "drover.v1.AgentService/RegisterAgent"},
      {"POST", "/v1/agents:heartbeat", "drover.v1.AgentService/Heartbeat"},
      {"POST", "/v1/agents:deregister", "drover.v1.AgentService/DeregisterAgent"},
      {"POST", "/v1/leases:complete", "drover.v1.AgentService/CompleteTask"},
      {"POST", "/v1/leases:completeBatch", "drover.v1.AgentService/CompleteTasks"},
      {"POST", "/v1/leases:fail", "drover.v1.AgentService/FailTask"},
      {"POST", "/v1/leases:checkpoint", "drover.v1.AgentService/Checkpoint"},
      {"POST", "/v1/leases:extend", "drover.v1.AgentService/ExtendLease"},
      {"GET", "/v1/dlq", "drover.v1.AdminService/ListDeadLetters"},
      {"POST", "/v1/dlq:reprocess", "drover.v1.AdminService/ReprocessDeadLetters"},
      {"POST", "/v1/dlq:purge", "drover.v1.AdminService/PurgeDeadLetters"},
      {"POST", "/v1/messages", "drover.v1.AdminService/SendMessage"},
      {"GET", "/v1/stats", "drover.v1.AdminService/Stats"},
      {"GET", "/v1/usage", "drover.v1.AdminService/GetUsage"},
      {"GET", "/v1/agents", "drover.v1.AdminService/ListAgents"},
      {"GET", "/v1/cluster", "drover.v1.AdminService/GetCluster"},
      {"GET", "/v1/events", "drover.v1.AdminService/ListEvents"},
      {"GET", "/v1/pools", "drover.v1.AdminService/ListPools"},
      {"POST", "/v1/pools", "drover.v1.AdminService/ApplyPool"},
      {"POST", "/v1/pools:delete", "drover.v1.AdminService/DeletePool"},
      {"POST", "/v1/pools:stop-agent", "drover.v1.AdminService/StopPoolAgent"},
      {"POST", "/v1/pools:import-history", "drover.v1.AdminService/ImportLoadHistory"},
      {"GET", R"(/v1/pools/([A-Za-z0-9_.-]+)/decisions)",
       "drover.v1.AdminService/ListScalingDecisions"},
      {"GET", R"(/v1/pools/([A-Za-z0-9_.-]+)/history)", "drover.v1.AdminService/GetLoadHistory"},
      {"POST", "/v1/tokens", "drover.v1.AuthService/CreateToken"},
      {"GET", "/v1/tokens", "drover.v1.AuthService/ListTokens"},
      {"POST", R"(/v1/tokens/([A-Za-z0-9_.@-]+):revoke)", "drover.v1.AuthService/RevokeToken"},
      {"GET", "/v1/whoami", "drover.v1.AuthService/WhoAmI"},
      {"GET", "/v1/audit", "drover.v1.AuthService/ListAudit"},
      {"GET", "/healthz", "drover.v1.AdminService/Health"},
      {"GET", "/readyz", "drover.v1.AdminService/Ready"},
      {"GET", "/metrics", "http/Metrics"},
      {"GET", "/v1/stats/series", "drover.v1.AdminService/GetStatsSeries"},
      {"POST", "/v1/session", "http/SignIn"},
      {"POST", "/v1/session:end", "http/SignOut"},
      {"GET", "/v1/stream", "http/Stream"},
      {"GET", "/", "http/Dashboard"},
      {"GET", "/assets/(.+)", "http/Dashboard"},
      {"GET", R"(/(tasks|workflows|pools|dlq|resources|events|signin)(/[^/]*)?)", "http/Dashboard"},
  };
  return routes;
}

absl::Status Check(const Caller& caller, const Rule& rule,
                   const google::protobuf::Message* request) {
  if (rule.scope == Scope::kPublic) return absl::OkStatus();
  if (caller.principal() == nullptr) return absl::UnauthenticatedError("no credential");
  if (rule.scope == Scope::kSelf) return absl::OkStatus();
  const Perm perm = static_cast<Perm>(rule.perm);
  auto denied = [&](absl::string_view where) {
    return absl::PermissionDeniedError(absl::StrCat(caller.name(), " may not ", PermVerb(perm), " ",
                                                    where, " (", rule.method, ")"));
  };
  switch (rule.scope) {
    case Scope::kGlobal:
      if (!caller.CanEverywhere(perm)) return denied("on every tenant (\"*\")");
      return absl::OkStatus();
    case Scope::kTenant: {
      std::vector<std::string> tenants;
      if (rule.tenants != nullptr && request != nullptr) tenants = rule.tenants(*request);
      if (tenants.empty()) {
        if (!caller.CanAnywhere(perm)) return denied("in any tenant");
        return absl::OkStatus();
      }
      for (const std::string& t : tenants) {
        const bool ok = t == kAnyTenant ? caller.CanEverywhere(perm) : caller.Can(perm, t);
        if (!ok) return denied(absl::StrCat("in tenant \"", t.substr(0, 128), "\""));
      }
      return absl::OkStatus();
    }
    case Scope::kObject:
    case Scope::kAgent:
      if (!caller.CanAnywhere(perm)) return denied("in any tenant");
      return absl::OkStatus();
    default:
      return absl::OkStatus();
  }
}

std::string AccessMatrixMarkdown() {
  std::string out =
      "# Access matrix\n\n"
      "Generated by `drover auth matrix` from the table the server checks "
      "(src/auth/access.cc); `ctest -R access_doc` fails when this file differs from it. "
      "See docs/security.md for what the roles and scopes mean.\n\n"
      "Scope: **tenant**: the tenants the request names, each checked (a list naming none "
      "is narrowed to the caller's tenants); **object**: ids are looked up and another "
      "tenant's answer NOT_FOUND; **agent**: only agents the same principal registered; "
      "**global**: needs the role on `*`; **public**: no token; **self**: any valid token.\n\n";
  out += "| Call | HTTP | Permission | Scope | Audited |";
  for (v1::Role r : AllRoles()) absl::StrAppend(&out, " ", RoleName(r), " |");
  out += "\n|---|---|---|---|---|";
  for (size_t i = 0; i < AllRoles().size(); ++i) out += "---|";
  out += "\n";
  for (const Rule& rule : Rules()) {
    std::vector<std::string> http;
    for (const HttpRoute& route : HttpRoutes()) {
      if (route.method == rule.method) {
        http.push_back(absl::StrCat("`", route.verb, " ", route.pattern, "`"));
      }
    }
    const std::string perm =
        rule.perm == 0 ? "-" : std::string(PermName(static_cast<Perm>(rule.perm)));
    absl::StrAppend(&out, "| `", rule.method, "` | ",
                    http.empty() ? "-" : absl::StrJoin(http, "<br>"), " | ", perm, " | ",
                    ScopeName(rule.scope), " | ", rule.changes_state ? "yes" : "refusals", " |");
    for (v1::Role r : AllRoles()) {
      const bool yes = rule.scope == Scope::kPublic || rule.scope == Scope::kSelf ||
                       (PermsOf(r) & rule.perm) != 0;
      out += yes ? " yes |" : " - |";
    }
    out += "\n";
  }
  return out;
}

}  // namespace drover::auth
