#include "auth/roles.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace drover::auth {

uint32_t PermsOf(v1::Role role) {
  switch (role) {
    case v1::ROLE_VIEWER:
      return kRead;
    case v1::ROLE_AGENT:
      return kAgent;
    case v1::ROLE_SUBMITTER:
      return kRead | kSubmit | kCancel;
    case v1::ROLE_OPERATOR:
      return kRead | kCancel | kOperate;
    case v1::ROLE_ADMIN:
      return kAllPerms;
    default:
      return 0;
  }
}

std::string RoleName(v1::Role role) {
  switch (role) {
    case v1::ROLE_VIEWER:
      return "viewer";
    case v1::ROLE_AGENT:
      return "agent";
    case v1::ROLE_SUBMITTER:
      return "submitter";
    case v1::ROLE_OPERATOR:
      return "operator";
    case v1::ROLE_ADMIN:
      return "admin";
    default:
      return "unspecified";
  }
}

absl::StatusOr<v1::Role> ParseRole(absl::string_view text, absl::string_view field) {
  std::string upper = absl::AsciiStrToUpper(text);
  if (upper.rfind("ROLE_", 0) != 0) upper = "ROLE_" + upper;
  v1::Role role;
  if (!v1::Role_Parse(upper, &role) || role == v1::ROLE_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": unknown role '", std::string(text.substr(0, 40)),
                     "' (viewer, agent, submitter, operator or admin)"));
  }
  return role;
}

absl::string_view PermName(Perm perm) {
  switch (perm) {
    case kRead:
      return "read";
    case kSubmit:
      return "submit";
    case kCancel:
      return "cancel";
    case kAgent:
      return "agent";
    case kOperate:
      return "operate";
    case kPurge:
      return "purge";
    case kTokens:
      return "tokens";
    case kAudit:
      return "audit";
  }
  return "?";
}

absl::string_view PermVerb(Perm perm) {
  switch (perm) {
    case kAgent:
      return "act as an agent";
    case kOperate:
      return "operate pools and dead letters";
    case kPurge:
      return "purge";
    case kTokens:
      return "manage tokens";
    case kAudit:
      return "read the audit log";
    default:
      return PermName(perm);
  }
}

const std::vector<v1::Role>& AllRoles() {
  static const std::vector<v1::Role> roles = {v1::ROLE_VIEWER, v1::ROLE_AGENT, v1::ROLE_SUBMITTER,
                                              v1::ROLE_OPERATOR, v1::ROLE_ADMIN};
  return roles;
}

absl::Status CheckTenantName(absl::string_view tenant, absl::string_view field, bool allow_any) {
  if (allow_any && tenant == kAnyTenant) return absl::OkStatus();
  if (tenant.empty() || tenant.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": a tenant is 1 to 128 characters, got ", tenant.size()));
  }
  for (char c : tenant) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == ':' ||
          c == '@' || c == '-')) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": tenant '", std::string(tenant.substr(0, 40)),
          "' has a character outside [A-Za-z0-9_.:@-]", allow_any ? " (or is \"*\")" : ""));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Grant> ParseGrant(absl::string_view text) {
  const size_t at = text.find('@');
  absl::string_view role = text.substr(0, at);
  absl::string_view tenant = at == absl::string_view::npos ? kAnyTenant : text.substr(at + 1);
  auto r = ParseRole(role, "role");
  if (!r.ok()) return r.status();
  if (absl::Status st = CheckTenantName(tenant, "role", true); !st.ok()) return st;
  v1::Grant g;
  g.set_role(*r);
  g.set_tenant(std::string(tenant));
  return g;
}

std::string GrantString(const v1::Grant& grant) {
  return absl::StrCat(RoleName(grant.role()), "@", grant.tenant());
}

}  // namespace drover::auth
