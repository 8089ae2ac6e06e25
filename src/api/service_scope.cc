// The tenant and ownership rules Service applies after the gate (docs/security.md): lists
// narrowed to the caller's tenants, agent calls only from the agent's principal, task
// contents hidden from viewers of hidden tenants.
#include <algorithm>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "api/service.h"

namespace drover::api {

absl::StatusOr<std::string> Service::NarrowTenant(const auth::Caller& caller, auth::Perm perm,
                                                  const std::string& named) {
  if (!named.empty() || caller.CanEverywhere(perm)) return named;  // named: the gate checked it
  std::vector<std::string> tenants = caller.TenantsWith(perm);
  if (tenants.size() == 1) return tenants[0];
  return absl::InvalidArgumentError(absl::StrCat("tenant: required: ", caller.name(), " may ",
                                                 auth::PermName(perm), " in several tenants (",
                                                 absl::StrJoin(tenants, ", "), "); name one"));
}

absl::Status Service::CheckAgentOwner(const auth::Caller& caller, uint64_t agent_id) const {
  const auth::Principal* p = caller.principal();
  if (p != nullptr && p->unrestricted) return absl::OkStatus();
  std::lock_guard<std::mutex> lk(owners_mu_);
  auto it = agent_owners_.find(agent_id);
  if (it == agent_owners_.end() || p == nullptr || it->second != OwnerKey(caller)) {
    // The engine's answer for an unknown agent, word for word.
    return absl::NotFoundError(absl::StrCat("agent_id: agent ", agent_id, " not registered"));
  }
  return absl::OkStatus();
}

std::string Service::OwnerKey(const auth::Caller& caller) {
  const auth::Principal* p = caller.principal();
  if (p == nullptr) return "";
  return p->token_id.empty() ? p->credential : p->token_id;
}

void Service::Redact(const auth::Caller& caller, v1::Task* task) const {
  if (hidden_.empty()) return;
  const std::string& tenant = task->spec().tenant();
  if (std::find(hidden_.begin(), hidden_.end(), tenant) == hidden_.end() &&
      std::find(hidden_.begin(), hidden_.end(), "*") == hidden_.end()) {
    return;
  }
  // Only a caller who may do nothing but read there is kept from the contents.
  if ((caller.PermsIn(tenant) & ~static_cast<uint32_t>(auth::kRead)) != 0) return;
  task->mutable_spec()->clear_payload();
  task->mutable_spec()->clear_payload_json();
  task->clear_result();
  task->clear_result_json();
  task->clear_checkpoint();
  task->clear_checkpoint_json();
  task->set_contents_hidden(true);
}

template <typename T>
Reply<T> Service::Redacting(const auth::Caller& caller, Reply<T> done) const {
  if (!Redacts()) return done;
  return [this, caller, done = std::move(done)](absl::StatusOr<T> r) {
    if (r.ok()) {
      if constexpr (std::is_same_v<T, v1::Task>) {
        Redact(caller, &*r);
      } else if constexpr (std::is_same_v<T, v1::WaitTaskResponse>) {
        Redact(caller, r->mutable_task());
      } else {
        for (v1::Task& t : *r->mutable_tasks()) Redact(caller, &t);
      }
    }
    done(std::move(r));
  };
}
template Reply<v1::Task> Service::Redacting(const auth::Caller&, Reply<v1::Task>) const;
template Reply<v1::WaitTaskResponse> Service::Redacting(const auth::Caller&,
                                                        Reply<v1::WaitTaskResponse>) const;
template Reply<v1::ListTasksResponse> Service::Redacting(const auth::Caller&,
                                                         Reply<v1::ListTasksResponse>) const;

}  // namespace drover::api
