// The gate every call passes through before it reaches Service (docs/security.md): it
// authenticates the credential, checks the method's rule in the access table, writes the
// audit record, and hands Service the caller. gRPC and HTTP use it alike.
//
// Threading: thread-safe.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "api/runtime.h"
#include "auth/access.h"
#include "auth/principal.h"
#include "auth/tokens.h"
#include "google/protobuf/message.h"

namespace drover::api {

// What the transport knows about one call.
struct CallMeta {
  absl::string_view method;         // as in the access table
  absl::string_view transport;      // "grpc" | "http"
  absl::string_view authorization;  // the Authorization header, "" when absent
  std::string peer;                 // the client's address
  absl::string_view user_agent;
  absl::string_view request_id;   // x-request-id, "" when absent (one is made up)
  absl::string_view traceparent;  // W3C traceparent, "" when absent
  std::string peer_cn;            // the verified client certificate's common name, or ""
};

class Gate {
 public:
  // `enabled` false: auth off (development), every call is let through as "anonymous";
  // state changes are still audited.
  // `certificates`: client certificates as principals, by common name (auth.certificates).
  Gate(auth::TokenRegistry& tokens, Runtime& runtime, bool enabled,
       const std::map<std::string, std::vector<v1::Grant>>& certificates = {});

  // The caller, or the refusal: Unauthenticated (no, malformed, unknown, revoked or expired
  // token), PermissionDenied (the rule), Internal (a method without a rule). Refusals and
  // allowed state-changing calls leave one audit record each, queued before this returns.
  absl::StatusOr<auth::Caller> Admit(const CallMeta& meta,
                                     const google::protobuf::Message* request);

  // A call the service refused after the gate let it in, for a reason the audit log should
  // show (another tenant's object: the caller was told NOT_FOUND).
  void AuditRefusal(const CallMeta& meta, const auth::Caller& caller, std::string reason,
                    const google::protobuf::Message* request);

  bool enabled() const { return enabled_; }
  auth::TokenRegistry& tokens() { return tokens_; }

  // Persists the tokens when they changed (creation, revocation, last use); `done` runs
  // once committed. Called after CreateToken/RevokeToken and, at most once a minute, from
  // Admit for last-use times.
  void PersistTokens(std::function<void(const absl::Status&)> done = nullptr);

  int64_t denied() const { return denied_.load(std::memory_order_relaxed); }

 private:
  absl::Status Record(const CallMeta& meta, const auth::Caller* caller,
                      absl::string_view credential, const auth::Rule* rule,
                      const google::protobuf::Message* request, bool allowed, std::string reason);

  auth::TokenRegistry& tokens_;
  Runtime& runtime_;
  const bool enabled_;
  const auth::Caller anonymous_;
  std::map<std::string, std::shared_ptr<const auth::Principal>> certificates_;
  std::atomic<int64_t> last_persist_ms_{0};
  std::mutex persist_mu_;
  std::atomic<int64_t> denied_{0};
  std::atomic<uint64_t> request_seq_{0};
};

// The token in an Authorization header ("Bearer <token>", scheme in any case), or "".
absl::string_view BearerToken(absl::string_view authorization);

// The ids and names a request names, for the audit log ("id 12", "pool gpu"): its top-level
// integer id fields, repeated ids (the first 20), and name-like strings; never payloads.
std::vector<std::string> AuditObjects(const google::protobuf::Message& request);

}  // namespace drover::api
