// API tokens (docs/security.md#tokens): random secrets of the form drv_<id>_<secret>, shown
// once at creation and kept only as a SHA-256 hash. The registry holds every token in
// memory, so checking one is a hash and a map lookup, never a store read; the server
// persists Snapshot() in the store's meta (key kTokensMetaKey) whenever it changes.
//
// Threading: thread-safe. Authenticate takes a shared lock only.
#pragma once

#include <atomic>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "auth/principal.h"
#include "drover/v1/drover.pb.h"

namespace drover::auth {

inline constexpr char kTokensMetaKey[] = "auth/tokens";
inline constexpr size_t kMaxLiveTokens = 10'000;

// A new random token "drv_<12 hex id>_<64 hex secret>" (256 random bits of secret).
struct NewSecret {
  std::string id;
  std::string token;
};
NewSecret GenerateToken();
// SHA-256 of `token`, 32 raw bytes.
std::string HashToken(absl::string_view token);
// The id of a well-formed token, or InvalidArgument ("malformed") without echoing it.
absl::StatusOr<std::string> TokenId(absl::string_view token);

class TokenRegistry {
 public:
  TokenRegistry() = default;
  TokenRegistry(const TokenRegistry&) = delete;
  TokenRegistry& operator=(const TokenRegistry&) = delete;

  // Replaces the persisted tokens with `list` (from the store at start-up).
  void Load(const v1::TokenList& list);
  // The persisted tokens, with their hashes, for the store; clears the dirty flag.
  v1::TokenList Snapshot();
  // True when something persisted changed since the last Snapshot (a creation, a
  // revocation, or a last-use time that moved by more than a minute).
  bool dirty() const { return dirty_.load(std::memory_order_relaxed); }
  // Tokens neither revoked nor expired at `now_ms`, ephemeral ones excluded.
  size_t LiveCount(int64_t now_ms) const;

  // The principal of a bearer token, or Unauthenticated saying why: malformed, unknown,
  // revoked or expired (never echoing the token).
  absl::StatusOr<std::shared_ptr<const Principal>> Authenticate(absl::string_view token,
                                                                int64_t now_ms);

  struct Created {
    v1::Token token;     // without its hash
    std::string secret;  // the token itself
  };
  // A token for `creator`, who must hold kTokens and every permission of every grant in
  // that grant's tenant (on "*" for a "*" grant), and whose own expiry bounds the new one's.
  // InvalidArgument names the bad field; PermissionDenied says which grant is above the
  // creator's own.
  absl::StatusOr<Created> Create(const Caller& creator, const v1::CreateTokenRequest& req,
                                 int64_t now_ms);
  // A token kept in memory only, never persisted, for the server's own children (pool
  // agents); gone at restart.
  Created CreateEphemeral(const std::string& name, std::vector<v1::Grant> grants, int64_t now_ms);
  // Revokes a token by id or name. NotFound also when the token is outside what `caller`
  // may manage (so ids leak nothing).
  absl::StatusOr<v1::Token> Revoke(const Caller& caller, absl::string_view id_or_name,
                                   int64_t now_ms);
  // The tokens `caller` may manage (every grant within its kTokens tenants), without hashes.
  std::vector<v1::Token> List(const Caller& caller) const;

 private:
  struct Entry {
    v1::Token token;  // as persisted (with hash); last_used_unix_ms lags `last_used`
    std::shared_ptr<const Principal> principal;
    std::atomic<int64_t> last_used{0};
    bool ephemeral = false;
  };
  static std::shared_ptr<const Principal> MakePrincipal(const v1::Token& t);
  static bool Manages(const Caller& caller, const v1::Token& t);
  bool LiveNameTaken(const std::string& name, int64_t now_ms,
                     const Caller& creator) const;  // under mu_
  void Insert(v1::Token token, bool ephemeral);     // under mu_ (unique)

  mutable std::shared_mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Entry>> by_hash_;
  absl::flat_hash_map<std::string, std::shared_ptr<Entry>> by_id_;
  std::atomic<bool> dirty_{false};
};

}  // namespace drover::auth
