// Roles and what each may do (docs/security.md). A role is a set of permissions; a grant
// gives a role in one tenant or in every tenant ("*"). The calls each permission opens are
// in the access table (access.h), the one place the server checks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "drover/v1/drover.pb.h"

namespace drover::auth {

// One permission: a bit of a role's set.
enum Perm : uint32_t {
  kRead = 1u << 0,     // get, list and wait on tasks, workflows, pools, stats
  kSubmit = 1u << 1,   // submit tasks, batches, workflows, map-reduce jobs
  kCancel = 1u << 2,   // cancel tasks and workflows
  kAgent = 1u << 3,    // register as an agent, take work, complete, fail, checkpoint
  kOperate = 1u << 4,  // pools, dead-letter reprocessing, messages to agents, history import
  kPurge = 1u << 5,    // delete dead letters for good
  kTokens = 1u << 6,   // create, list and revoke tokens
  kAudit = 1u << 7,    // read the audit log
};
inline constexpr uint32_t kAllPerms = 0xff;

inline constexpr absl::string_view kAnyTenant = "*";

// The permissions a role holds.
uint32_t PermsOf(v1::Role role);
// "viewer", "agent", "submitter", "operator", "admin"; "unspecified" for 0.
std::string RoleName(v1::Role role);
// Accepts the short names above (any case) and ROLE_*; the error names `field`.
absl::StatusOr<v1::Role> ParseRole(absl::string_view text, absl::string_view field);
// "read", "submit", ...
absl::string_view PermName(Perm perm);
// What a refusal says the caller may not do: "read", "manage tokens", ...
absl::string_view PermVerb(Perm perm);
// Every role but ROLE_UNSPECIFIED, lowest first.
const std::vector<v1::Role>& AllRoles();

// A tenant name as grants and requests carry it: 1..128 bytes of [A-Za-z0-9_.:@-], or "*"
// in a grant. The error names `field`.
absl::Status CheckTenantName(absl::string_view tenant, absl::string_view field, bool allow_any);

// Parses "admin", "submitter@team-a" or "viewer@*" into a grant ("@*" when no tenant).
absl::StatusOr<v1::Grant> ParseGrant(absl::string_view text);
std::string GrantString(const v1::Grant& grant);

}  // namespace drover::auth
