#include "api/gate.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"

namespace drover::api {
namespace {

namespace pb = google::protobuf;

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

// The trace id of a W3C traceparent "00-<32 hex>-<16 hex>-<2 hex>", or "".
std::string TraceId(absl::string_view traceparent) {
  if (traceparent.size() < 55 || traceparent[2] != '-' || traceparent[35] != '-') return "";
  std::string id(traceparent.substr(3, 32));
  for (char c : id) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return "";
  }
  return id;
}

std::string Clip(absl::string_view s, size_t n) { return std::string(s.substr(0, n)); }

}  // namespace

absl::string_view BearerToken(absl::string_view authorization) {
  authorization = absl::StripAsciiWhitespace(authorization);
  if (authorization.size() < 7 || !absl::EqualsIgnoreCase(authorization.substr(0, 7), "bearer ")) {
    return {};
  }
  return absl::StripAsciiWhitespace(authorization.substr(7));
}

std::vector<std::string> AuditObjects(const pb::Message& request) {
  std::vector<std::string> out;
  const pb::Descriptor* d = request.GetDescriptor();
  const pb::Reflection* r = request.GetReflection();
  auto name_like = [](const std::string& n) {
    return n == "name" || n == "pool" || n == "member" || n == "id" || n == "type" ||
           n == "agent_type" || n == "topic" || n == "idempotency_key";
  };
  for (int i = 0; i < d->field_count() && out.size() < 40; ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    const std::string& n = f->name();
    const bool id_like = n == "id" || n == "ids" || absl::EndsWith(n, "_id");
    if (f->is_repeated()) {
      if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_UINT64 && id_like) {
        const int size = r->FieldSize(request, f);
        std::vector<std::string> ids;
        for (int k = 0; k < size && k < 20; ++k)
          ids.push_back(absl::StrCat(r->GetRepeatedUInt64(request, f, k)));
        if (size > 20) ids.push_back(absl::StrCat("and ", size - 20, " more"));
        if (!ids.empty()) out.push_back(absl::StrCat(n, " ", absl::StrJoin(ids, ",")));
      } else if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
        const int size = r->FieldSize(request, f);
        if (size > 0) out.push_back(absl::StrCat(n, " x", size));
      }
      continue;
    }
    switch (f->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_UINT64:
        if (id_like && r->GetUInt64(request, f) != 0) {
          out.push_back(absl::StrCat(n, " ", r->GetUInt64(request, f)));
        }
        break;
      case pb::FieldDescriptor::CPPTYPE_STRING:
        if (f->type() == pb::FieldDescriptor::TYPE_STRING && name_like(n)) {
          std::string v = r->GetString(request, f);
          if (!v.empty()) out.push_back(absl::StrCat(n, " ", Clip(v, 128)));
        }
        break;
      case pb::FieldDescriptor::CPPTYPE_MESSAGE:
        if (r->HasField(request, f)) {
          for (std::string& inner : AuditObjects(r->GetMessage(request, f))) {
            out.push_back(absl::StrCat(n, ".", inner));
          }
        }
        break;
      default:
        break;
    }
  }
  return out;
}

Gate::Gate(auth::TokenRegistry& tokens, Runtime& runtime, bool enabled,
           const std::map<std::string, std::vector<v1::Grant>>& certificates)
    : tokens_(tokens),
      runtime_(runtime),
      enabled_(enabled),
      anonymous_(auth::Caller::Unrestricted("anonymous (auth off)")) {
  for (const auto& [cn, grants] : certificates) {
    auto p = std::make_shared<auth::Principal>();
    p->name = cn;
    p->credential = absl::StrCat("certificate CN=", cn);
    p->grants = grants;
    certificates_[cn] = std::move(p);
  }
}

absl::Status Gate::Record(const CallMeta& meta, const auth::Caller* caller,
                          absl::string_view credential, const auth::Rule* rule,
                          const pb::Message* request, bool allowed, std::string reason) {
  v1::AuditRecord rec;
  const int64_t now = NowMs();
  rec.set_unix_ms(now);
  if (caller != nullptr && caller->principal() != nullptr) {
    rec.set_principal(caller->principal()->name);
    rec.set_credential(caller->principal()->credential);
  } else {
    rec.set_credential(std::string(credential));
  }
  rec.set_peer(Clip(meta.peer, 200));
  rec.set_user_agent(Clip(meta.user_agent, 200));
  rec.set_method(std::string(meta.method));
  rec.set_transport(std::string(meta.transport));
  if (rule != nullptr && rule->tenants != nullptr && request != nullptr) {
    auto tenants = rule->tenants(*request);
    rec.set_tenant(Clip(absl::StrJoin(tenants, ","), 256));
  }
  if (request != nullptr) {
    for (std::string& o : AuditObjects(*request)) rec.add_objects(std::move(o));
  }
  rec.set_allowed(allowed);
  rec.set_reason(Clip(reason, 500));
  rec.set_request_id(meta.request_id.empty()
                         ? absl::StrCat("r", absl::Hex(request_seq_.fetch_add(1) + 1))
                         : Clip(meta.request_id, 128));
  rec.set_trace_id(TraceId(meta.traceparent));
  store::AuditRow row;
  row.unix_ms = now;
  row.principal = rec.principal();
  row.tenant = rec.tenant();
  row.blob = rec.SerializeAsString();
  // A full queue refuses the call (the caller sees the status): nothing goes unaudited.
  return runtime_.AppendAudit(std::move(row));
}

absl::StatusOr<auth::Caller> Gate::Admit(const CallMeta& meta, const pb::Message* request) {
  const auth::Rule* rule = auth::FindRule(meta.method);
  if (rule == nullptr) {
    // Every method has a rule (the completeness test); one without is refused, not opened.
    denied_.fetch_add(1, std::memory_order_relaxed);
    (void)Record(meta, nullptr, "", nullptr, request, false, "no access rule for this method");
    return absl::InternalError(absl::StrCat("no access rule for ", meta.method));
  }
  if (rule->scope == auth::Scope::kPublic) return auth::Caller();
  auth::Caller caller;
  if (!enabled_) {
    caller = anonymous_;
  } else {
    absl::string_view token = BearerToken(meta.authorization);
    if (token.empty() && meta.authorization.empty() && !meta.peer_cn.empty()) {
      // A verified client certificate and no token: the certificate is the principal.
      auto it = certificates_.find(meta.peer_cn);
      if (it == certificates_.end()) {
        denied_.fetch_add(1, std::memory_order_relaxed);
        const std::string why =
            absl::StrCat("certificate CN=", Clip(meta.peer_cn, 128),
                         " maps to no principal (auth.certificates), and no token was sent");
        (void)Record(meta, nullptr, absl::StrCat("certificate CN=", Clip(meta.peer_cn, 128)), rule,
                     request, false, why);
        return absl::UnauthenticatedError(why);
      }
      caller = auth::Caller(it->second);
    } else if (token.empty()) {
      denied_.fetch_add(1, std::memory_order_relaxed);
      const char* why = meta.authorization.empty()
                            ? "no token: send 'authorization: Bearer <token>'"
                            : "the authorization header is not 'Bearer <token>'";
      (void)Record(meta, nullptr, meta.authorization.empty() ? "none" : "not a bearer token", rule,
                   request, false, why);
      return absl::UnauthenticatedError(why);
    } else {
      const int64_t now = NowMs();
      auto p = tokens_.Authenticate(token, now);
      if (!p.ok()) {
        denied_.fetch_add(1, std::memory_order_relaxed);
        auto id = auth::TokenId(token);
        (void)Record(meta, nullptr, id.ok() ? absl::StrCat("token drv_", *id) : "malformed token",
                     rule, request, false, std::string(p.status().message()));
        return p.status();
      }
      caller = auth::Caller(*std::move(p));
      if (tokens_.dirty() && now - last_persist_ms_.load(std::memory_order_relaxed) >= 60'000) {
        last_persist_ms_.store(now, std::memory_order_relaxed);
        PersistTokens();
      }
    }
  }
  if (absl::Status st = auth::Check(caller, *rule, request); !st.ok()) {
    denied_.fetch_add(1, std::memory_order_relaxed);
    (void)Record(meta, &caller, "", rule, request, false, std::string(st.message()));
    return st;
  }
  if (rule->changes_state) {
    absl::Status st = Record(meta, &caller, "", rule, request, true,
                             absl::StrCat(auth::PermName(static_cast<auth::Perm>(rule->perm)), " (",
                                          auth::ScopeName(rule->scope), ")"));
    if (!st.ok()) return st;
  }
  return caller;
}

void Gate::AuditRefusal(const CallMeta& meta, const auth::Caller& caller, std::string reason,
                        const pb::Message* request) {
  denied_.fetch_add(1, std::memory_order_relaxed);
  (void)Record(meta, &caller, "", auth::FindRule(meta.method), request, false, std::move(reason));
}

void Gate::PersistTokens(std::function<void(const absl::Status&)> done) {
  // Snapshots are queued in the order they are taken, so the store keeps the newest: an
  // older last-use snapshot must not land after a revocation's.
  std::lock_guard<std::mutex> lk(persist_mu_);
  const std::string value = absl::Base64Escape(tokens_.Snapshot().SerializeAsString());
  absl::Status st = runtime_.AppendMeta(auth::kTokensMetaKey, value, done);
  if (!st.ok() && done) done(st);
}

}  // namespace drover::api
