#include "auth/principal.h"

#include <algorithm>

namespace drover::auth {

Caller Caller::Unrestricted(std::string credential) {
  auto p = std::make_shared<Principal>();
  p->name = credential;
  p->credential = std::move(credential);
  p->unrestricted = true;
  v1::Grant g;
  g.set_tenant(std::string(kAnyTenant));
  g.set_role(v1::ROLE_ADMIN);
  p->grants.push_back(g);
  return Caller(std::move(p));
}

uint32_t Caller::PermsIn(absl::string_view tenant) const {
  if (!p_) return 0;
  if (p_->unrestricted) return kAllPerms;
  uint32_t perms = 0;
  for (const v1::Grant& g : p_->grants) {
    if (g.tenant() == kAnyTenant || g.tenant() == tenant) perms |= PermsOf(g.role());
  }
  return perms;
}

bool Caller::Can(Perm perm, absl::string_view tenant) const {
  return (PermsIn(tenant) & perm) != 0;
}

bool Caller::CanAnywhere(Perm perm) const {
  if (!p_) return false;
  if (p_->unrestricted) return true;
  return std::any_of(p_->grants.begin(), p_->grants.end(),
                     [perm](const v1::Grant& g) { return (PermsOf(g.role()) & perm) != 0; });
}

bool Caller::CanEverywhere(Perm perm) const {
  if (!p_) return false;
  if (p_->unrestricted) return true;
  return std::any_of(p_->grants.begin(), p_->grants.end(), [perm](const v1::Grant& g) {
    return g.tenant() == kAnyTenant && (PermsOf(g.role()) & perm) != 0;
  });
}

std::vector<std::string> Caller::TenantsWith(Perm perm) const {
  std::vector<std::string> out;
  if (!p_) return out;
  for (const v1::Grant& g : p_->grants) {
    if (g.tenant() == kAnyTenant || (PermsOf(g.role()) & perm) == 0) continue;
    if (std::find(out.begin(), out.end(), g.tenant()) == out.end()) out.push_back(g.tenant());
  }
  return out;
}

}  // namespace drover::auth
