#include "auth/tokens.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstdlib>
#include <mutex>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace drover::auth {
namespace {

std::string RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1) {
    // Without a working random source no secret can be made; running on would be worse.
    std::abort();
  }
  return absl::BytesToHexString(raw);
}

bool IsLowerHex(absl::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool Live(const v1::Token& t, int64_t now_ms) {
  return t.revoked_unix_ms() == 0 && (t.expires_unix_ms() == 0 || t.expires_unix_ms() > now_ms);
}

absl::Status CheckName(const std::string& name) {
  if (name.empty() || name.size() > 64) {
    return absl::InvalidArgumentError(absl::StrCat("name: 1 to 64 characters, got ", name.size()));
  }
  for (char c : name) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '@' ||
          c == '-')) {
      return absl::InvalidArgumentError("name: only [A-Za-z0-9_.@-] may appear in a token name");
    }
  }
  return absl::OkStatus();
}

// Whether `caller` holds every permission of `grant`'s role in its tenant (on "*" for "*").
bool Covers(const Caller& caller, const v1::Grant& grant) {
  const uint32_t want = PermsOf(grant.role());
  if (grant.tenant() == kAnyTenant) {
    for (uint32_t bit = 1; bit <= want; bit <<= 1) {
      if ((want & bit) && !caller.CanEverywhere(static_cast<Perm>(bit))) return false;
    }
    return true;
  }
  return (caller.PermsIn(grant.tenant()) & want) == want;
}

}  // namespace

NewSecret GenerateToken() {
  NewSecret s;
  s.id = RandomHex(6);
  s.token = absl::StrCat("drv_", s.id, "_", RandomHex(32));
  return s;
}

std::string HashToken(absl::string_view token) {
  // Fetched once: OpenSSL 3 looks an implicit EVP_sha256() up again on every digest, under
  // a lock, which costs more than the hash itself.
  static EVP_MD* const sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(token.data(), token.size(), md, &len, sha256, nullptr);
  return std::string(reinterpret_cast<char*>(md), len);
}

absl::StatusOr<std::string> TokenId(absl::string_view token) {
  // drv_ + 12 + _ + 64
  if (token.size() != 81 || token.substr(0, 4) != "drv_" || token[16] != '_' ||
      !IsLowerHex(token.substr(4, 12)) || !IsLowerHex(token.substr(17))) {
    return absl::InvalidArgumentError("malformed token (expected drv_<id>_<secret>)");
  }
  return std::string(token.substr(4, 12));
}

std::shared_ptr<const Principal> TokenRegistry::MakePrincipal(const v1::Token& t) {
  auto p = std::make_shared<Principal>();
  p->name = t.name();
  p->credential = absl::StrCat("token drv_", t.id());
  p->token_id = t.id();
  p->grants.assign(t.grants().begin(), t.grants().end());
  p->expires_unix_ms = t.expires_unix_ms();
  return p;
}

bool TokenRegistry::Manages(const Caller& caller, const v1::Token& t) {
  for (const v1::Grant& g : t.grants()) {
    const bool ok =
        g.tenant() == kAnyTenant ? caller.CanEverywhere(kTokens) : caller.Can(kTokens, g.tenant());
    if (!ok) return false;
  }
  return caller.CanAnywhere(kTokens);
}

void TokenRegistry::Insert(v1::Token token, bool ephemeral) {
  auto e = std::make_shared<Entry>();
  e->last_used.store(token.last_used_unix_ms());
  e->principal = MakePrincipal(token);
  e->ephemeral = ephemeral;
  const std::string hash = token.secret_hash();
  const std::string id = token.id();
  e->token = std::move(token);
  by_hash_[hash] = e;
  by_id_[id] = std::move(e);
}

void TokenRegistry::Load(const v1::TokenList& list) {
  std::unique_lock lk(mu_);
  // Ephemeral tokens survive a reload; persisted ones are replaced.
  for (auto it = by_id_.begin(); it != by_id_.end();) {
    if (!it->second->ephemeral) {
      by_hash_.erase(it->second->token.secret_hash());
      by_id_.erase(it++);
    } else {
      ++it;
    }
  }
  for (const v1::Token& t : list.tokens()) Insert(t, false);
  dirty_ = false;
}

v1::TokenList TokenRegistry::Snapshot() {
  std::shared_lock lk(mu_);
  dirty_ = false;
  v1::TokenList out;
  for (const auto& [id, e] : by_id_) {
    if (e->ephemeral) continue;
    v1::Token* t = out.add_tokens();
    *t = e->token;
    t->set_last_used_unix_ms(e->last_used.load(std::memory_order_relaxed));
  }
  return out;
}

size_t TokenRegistry::LiveCount(int64_t now_ms) const {
  std::shared_lock lk(mu_);
  size_t n = 0;
  for (const auto& [id, e] : by_id_) n += (!e->ephemeral && Live(e->token, now_ms)) ? 1 : 0;
  return n;
}

absl::StatusOr<std::shared_ptr<const Principal>> TokenRegistry::Authenticate(
    absl::string_view token, int64_t now_ms) {
  if (!TokenId(token).ok()) {
    return absl::UnauthenticatedError("malformed token (expected drv_<id>_<secret>)");
  }
  const std::string hash = HashToken(token);
  std::shared_lock lk(mu_);
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return absl::UnauthenticatedError("unknown token");
  Entry& e = *it->second;
  if (e.token.revoked_unix_ms() != 0) {
    return absl::UnauthenticatedError(absl::StrCat("token drv_", e.token.id(), " was revoked"));
  }
  if (e.token.expires_unix_ms() != 0 && e.token.expires_unix_ms() <= now_ms) {
    return absl::UnauthenticatedError(absl::StrCat("token drv_", e.token.id(), " has expired"));
  }
  // Last use to within a minute: a write to the store at most once a minute per token.
  int64_t last = e.last_used.load(std::memory_order_relaxed);
  if (now_ms - last >= 60'000 &&
      e.last_used.compare_exchange_strong(last, now_ms, std::memory_order_relaxed) &&
      !e.ephemeral) {
    dirty_.store(true, std::memory_order_relaxed);
  }
  return e.principal;
}

bool TokenRegistry::LiveNameTaken(const std::string& name, int64_t now_ms,
                                  const Caller& creator) const {
  // Among the tokens the creator manages only: another tenant's names are not revealed.
  for (const auto& [id, e] : by_id_) {
    if (e->token.name() == name && Live(e->token, now_ms) && !e->ephemeral &&
        Manages(creator, e->token)) {
      return true;
    }
  }
  return false;
}

absl::StatusOr<TokenRegistry::Created> TokenRegistry::Create(const Caller& creator,
                                                             const v1::CreateTokenRequest& req,
                                                             int64_t now_ms) {
  if (absl::Status st = CheckName(req.name()); !st.ok()) return st;
  if (req.grants().empty()) {
    return absl::InvalidArgumentError("grants: at least one role, e.g. submitter@team-a");
  }
  if (req.grants_size() > 64) {
    return absl::InvalidArgumentError(absl::StrCat("grants: at most 64, got ", req.grants_size()));
  }
  for (int i = 0; i < req.grants_size(); ++i) {
    const v1::Grant& g = req.grants(i);
    const std::string field = absl::StrCat("grants[", i, "]");
    if (g.role() == v1::ROLE_UNSPECIFIED || !v1::Role_IsValid(g.role())) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".role: required"));
    }
    if (absl::Status st = CheckTenantName(g.tenant(), field + ".tenant", true); !st.ok()) return st;
    const bool manages = g.tenant() == kAnyTenant ? creator.CanEverywhere(kTokens)
                                                  : creator.Can(kTokens, g.tenant());
    if (!manages) {
      return absl::PermissionDeniedError(absl::StrCat(
          field, ": the caller may not create tokens for tenant \"", g.tenant(), "\""));
    }
    if (!Covers(creator, g)) {
      return absl::PermissionDeniedError(absl::StrCat(
          field, ": ", GrantString(g), " is above the caller's own roles (no escalation)"));
    }
  }
  if (req.ttl_ms() < 0 || req.ttl_ms() > int64_t{10} * 365 * 86'400'000) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttl_ms: 0 (no expiry) to 10 years, got ", req.ttl_ms()));
  }
  int64_t expires = req.ttl_ms() == 0 ? 0 : now_ms + req.ttl_ms();
  const Principal* p = creator.principal();
  if (p != nullptr && p->expires_unix_ms != 0 && (expires == 0 || expires > p->expires_unix_ms)) {
    expires = p->expires_unix_ms;  // never outlives the token that made it
  }
  NewSecret s = GenerateToken();
  v1::Token t;
  t.set_id(s.id);
  t.set_name(req.name());
  *t.mutable_grants() = req.grants();
  t.set_created_unix_ms(now_ms);
  t.set_expires_unix_ms(expires);
  t.set_created_by(creator.name());
  t.set_secret_hash(HashToken(s.token));
  {
    std::unique_lock lk(mu_);
    if (LiveNameTaken(req.name(), now_ms, creator)) {
      return absl::AlreadyExistsError(
          absl::StrCat("name: a live token is already called '", req.name(), "'"));
    }
    size_t live = 0;
    for (const auto& [id, e] : by_id_) live += (!e->ephemeral && Live(e->token, now_ms)) ? 1 : 0;
    if (live >= kMaxLiveTokens) {
      return absl::ResourceExhaustedError(
          absl::StrCat("tokens: at most ", kMaxLiveTokens, " live tokens; revoke some first"));
    }
    Insert(t, false);
    dirty_ = true;
  }
  Created c;
  t.clear_secret_hash();
  c.token = std::move(t);
  c.secret = std::move(s.token);
  return c;
}

TokenRegistry::Created TokenRegistry::CreateEphemeral(const std::string& name,
                                                      std::vector<v1::Grant> grants,
                                                      int64_t now_ms) {
  NewSecret s = GenerateToken();
  v1::Token t;
  t.set_id(s.id);
  t.set_name(name);
  for (auto& g : grants) *t.add_grants() = std::move(g);
  t.set_created_unix_ms(now_ms);
  t.set_created_by("drover serve");
  t.set_secret_hash(HashToken(s.token));
  {
    std::unique_lock lk(mu_);
    Insert(t, true);
  }
  Created c;
  t.clear_secret_hash();
  c.token = std::move(t);
  c.secret = std::move(s.token);
  return c;
}

absl::StatusOr<v1::Token> TokenRegistry::Revoke(const Caller& caller, absl::string_view id_or_name,
                                                int64_t now_ms) {
  std::string key(id_or_name);
  if (key.rfind("drv_", 0) == 0) key = key.substr(4);
  std::unique_lock lk(mu_);
  std::shared_ptr<Entry> found;
  if (auto it = by_id_.find(key); it != by_id_.end()) {
    found = it->second;
  } else {
    // By name: among the live tokens the caller manages (names are unique only there).
    int matches = 0;
    for (const auto& [id, e] : by_id_) {
      if (e->token.name() == id_or_name && Live(e->token, now_ms) && !e->ephemeral &&
          Manages(caller, e->token)) {
        found = e;
        ++matches;
      }
    }
    if (matches > 1) {
      return absl::InvalidArgumentError(absl::StrCat("id: ", matches, " live tokens are named '",
                                                     std::string(id_or_name.substr(0, 64)),
                                                     "'; give the id (drover token ls)"));
    }
  }
  if (!found || found->ephemeral || !Manages(caller, found->token)) {
    return absl::NotFoundError(
        absl::StrCat("id: no token '", std::string(id_or_name.substr(0, 64)), "'"));
  }
  if (found->token.revoked_unix_ms() == 0) {
    // Entries are shared with concurrent readers: replace, don't mutate.
    auto e = std::make_shared<Entry>();
    e->token = found->token;
    e->token.set_revoked_unix_ms(now_ms);
    e->last_used.store(found->last_used.load());
    e->principal = found->principal;
    by_hash_[e->token.secret_hash()] = e;
    by_id_[e->token.id()] = e;
    found = e;
    dirty_ = true;
  }
  v1::Token out = found->token;
  out.clear_secret_hash();
  out.set_last_used_unix_ms(found->last_used.load());
  return out;
}

std::vector<v1::Token> TokenRegistry::List(const Caller& caller) const {
  std::shared_lock lk(mu_);
  std::vector<v1::Token> out;
  for (const auto& [id, e] : by_id_) {
    if (e->ephemeral || !Manages(caller, e->token)) continue;
    v1::Token t = e->token;
    t.clear_secret_hash();
    t.set_last_used_unix_ms(e->last_used.load(std::memory_order_relaxed));
    out.push_back(std::move(t));
  }
  std::sort(out.begin(), out.end(), [](const v1::Token& a, const v1::Token& b) {
    return a.created_unix_ms() != b.created_unix_ms() ? a.created_unix_ms() < b.created_unix_ms()
                                                      : a.id() < b.id();
  });
  return out;
}

}  // namespace drover::auth
