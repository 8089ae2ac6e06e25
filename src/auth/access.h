// The access table (docs/security.md, docs/access.md): for every RPC of every service in
// proto/drover/v1 and every HTTP route, the permission it needs and how the tenant it
// acts on is found. The gRPC and HTTP servers check calls against this table and nothing
// else; docs/access.md is generated from it (`drover auth matrix`), and tests walk the
// protos and the HTTP server's routes and fail on any call without a rule.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "auth/principal.h"
#include "google/protobuf/message.h"

namespace drover::auth {

enum class Scope {
  kPublic,  // no credential needed (health checks)
  kSelf,    // any valid credential (whoami)
  kTenant,  // the tenants the request names, each checked; none named: any grant with the
            // permission, and the service narrows the answer to the caller's tenants
  kObject,  // ids in the request: the service looks each up and answers NOT_FOUND for
            // another tenant's (any grant with the permission gets that far)
  kAgent,   // agent calls: the agent must be one the same principal registered
  kGlobal,  // about the whole server (pools, stats, agents): needs the permission on "*"
};
absl::string_view ScopeName(Scope scope);

using TenantFn = std::vector<std::string> (*)(const google::protobuf::Message& request);

struct Rule {
  absl::string_view method;  // "drover.v1.TaskService/SubmitTask"
  uint32_t perm = 0;         // one Perm; 0 for kPublic and kSelf
  Scope scope = Scope::kGlobal;
  bool changes_state = false;  // audited when allowed (refusals are always audited)
  // kTenant: the tenants the request names ("default" where a submission leaves it empty);
  // empty when it names none.
  TenantFn tenants = nullptr;
};

struct HttpRoute {
  absl::string_view verb;     // GET, POST
  absl::string_view pattern;  // as registered with the HTTP server (a regex for ids)
  absl::string_view method;   // the rule it is checked against
};

const std::vector<Rule>& Rules();
// The rule for a method, or nullptr (the caller refuses the call).
const Rule* FindRule(absl::string_view method);
const std::vector<HttpRoute>& HttpRoutes();

// Whether `caller` passes `rule` for `request`: OK, or PermissionDenied naming the
// permission and tenant (Unauthenticated is the transport's, before this).
absl::Status Check(const Caller& caller, const Rule& rule,
                   const google::protobuf::Message* request);

// docs/access.md: every method and route by role, from Rules() and HttpRoutes().
std::string AccessMatrixMarkdown();

}  // namespace drover::auth
