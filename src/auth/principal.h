// Who is calling: a principal (a token's or a certificate's) and what its grants allow.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "auth/roles.h"
#include "drover/v1/drover.pb.h"

namespace drover::auth {

struct Principal {
  std::string name;        // the token's name or the certificate's subject
  std::string credential;  // "token drv_<id>", "certificate <subject>", "auth off"
  std::string token_id;    // empty for certificates
  std::vector<v1::Grant> grants;
  int64_t expires_unix_ms = 0;  // 0: never
  bool unrestricted = false;    // auth off, or the server itself
};

// The principal of one call, as Service methods see it. Cheap to copy.
class Caller {
 public:
  Caller() = default;  // no principal: allowed nothing
  explicit Caller(std::shared_ptr<const Principal> p) : p_(std::move(p)) {}
  // Allowed everything: auth off, or the server acting for itself.
  static Caller Unrestricted(std::string credential);

  // Holds `perm` in `tenant` (through a grant there or on "*").
  bool Can(Perm perm, absl::string_view tenant) const;
  // Holds `perm` in at least one tenant.
  bool CanAnywhere(Perm perm) const;
  // Holds `perm` on "*" (every tenant, and calls that are not about one tenant).
  bool CanEverywhere(Perm perm) const;
  // The tenants where it holds `perm` (not "*"), in grant order without repeats.
  std::vector<std::string> TenantsWith(Perm perm) const;
  // The permissions it holds in `tenant`.
  uint32_t PermsIn(absl::string_view tenant) const;

  const Principal* principal() const { return p_.get(); }
  std::string name() const { return p_ ? p_->name : std::string(); }

 private:
  std::shared_ptr<const Principal> p_;
};

}  // namespace drover::auth
