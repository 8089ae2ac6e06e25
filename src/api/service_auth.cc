// The AuthService half of Service: tokens, whoami and the audit log (docs/security.md).
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "api/gate.h"
#include "api/service.h"
#include "api/service_internal.h"

namespace drover::api {

namespace {
int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }
}  // namespace

void Service::CreateToken(const auth::Caller& caller, const v1::CreateTokenRequest& req,
                          Reply<v1::CreateTokenResponse> done) {
  if (gate_ == nullptr) return done(absl::FailedPreconditionError("auth: no token registry"));
  auto created = gate_->tokens().Create(caller, req, NowMs());
  if (!created.ok()) return done(created.status());
  v1::CreateTokenResponse resp;
  *resp.mutable_token() = std::move(created->token);
  resp.set_secret(std::move(created->secret));
  // Answered once the token is durable: a token shown but lost by a crash would be worse.
  auto shared = std::make_shared<Reply<v1::CreateTokenResponse>>(std::move(done));
  gate_->PersistTokens([shared, resp = std::move(resp)](const absl::Status& st) {
    if (!st.ok()) return (*shared)(st);
    (*shared)(resp);
  });
}

void Service::ListTokens(const auth::Caller& caller, const v1::ListTokensRequest&,
                         Reply<v1::ListTokensResponse> done) {
  if (gate_ == nullptr) return done(absl::FailedPreconditionError("auth: no token registry"));
  v1::ListTokensResponse resp;
  for (v1::Token& t : gate_->tokens().List(caller)) *resp.add_tokens() = std::move(t);
  done(std::move(resp));
}

void Service::RevokeToken(const auth::Caller& caller, const v1::RevokeTokenRequest& req,
                          Reply<v1::Token> done) {
  if (gate_ == nullptr) return done(absl::FailedPreconditionError("auth: no token registry"));
  if (req.id().empty())
    return done(absl::InvalidArgumentError("id: required (a token id or name)"));
  auto t = gate_->tokens().Revoke(caller, req.id(), NowMs());
  if (!t.ok()) return done(t.status());
  auto shared = std::make_shared<Reply<v1::Token>>(std::move(done));
  gate_->PersistTokens([shared, token = *std::move(t)](const absl::Status& st) {
    if (!st.ok()) return (*shared)(st);
    (*shared)(token);
  });
}

void Service::WhoAmI(const auth::Caller& caller, const v1::WhoAmIRequest&,
                     Reply<v1::WhoAmIResponse> done) {
  v1::WhoAmIResponse resp;
  if (const auth::Principal* p = caller.principal()) {
    resp.set_principal(p->name);
    resp.set_credential(p->credential);
    for (const v1::Grant& g : p->grants) *resp.add_grants() = g;
    resp.set_expires_unix_ms(p->expires_unix_ms);
  }
  done(std::move(resp));
}

void Service::ListAudit(const auth::Caller& caller, const v1::ListAuditRequest& req,
                        Reply<v1::ListAuditResponse> done) {
  if (req.page_size() < 0 || req.page_size() > 1000) {
    return done(absl::InvalidArgumentError(
        absl::StrCat("page_size: must be 0 (default 100) to 1000, got ", req.page_size())));
  }
  int64_t after = 0;
  if (!req.page_token().empty() && (!absl::SimpleAtoi(req.page_token(), &after) || after < 0)) {
    return done(absl::InvalidArgumentError(absl::StrCat(
        "page_token: '", req.page_token().substr(0, 40), "' is not a token from a listing")));
  }
  if (req.since_unix_ms() < 0) {
    return done(absl::InvalidArgumentError(
        absl::StrCat("since_unix_ms: must be >= 0, got ", req.since_unix_ms())));
  }
  auto tenant = NarrowTenant(caller, auth::kAudit, req.tenant());
  if (!tenant.ok()) return done(tenant.status());
  store::AuditQuery q;
  q.after_seq = after;
  q.since_unix_ms = req.since_unix_ms();
  q.principal = req.principal();
  q.tenant = *tenant;
  q.limit = req.page_size() == 0 ? 100 : req.page_size();
  auto shared = std::make_shared<Reply<v1::ListAuditResponse>>(std::move(done));
  store::Store& store = store_;
  // Read on the store thread, which owns the store, after what is queued has committed.
  const bool queued = runtime_.Post([shared, q, &store](core::Engine&, Batch& batch) {
    batch.AfterCommit([shared, q, &store](const absl::Status& st) {
      if (!st.ok()) return (*shared)(st);
      v1::ListAuditResponse resp;
      int64_t last = 0;
      absl::Status read = store.ReadAudit(q, [&](store::AuditRow&& row) {
        v1::AuditRecord* rec = resp.add_records();
        if (!rec->ParseFromString(row.blob)) rec->set_reason("(record unreadable)");
        rec->set_seq(row.seq);
        last = row.seq;
      });
      if (!read.ok()) return (*shared)(read);
      if (resp.records_size() == q.limit) resp.set_next_page_token(absl::StrCat(last));
      (*shared)(std::move(resp));
    });
  });
  if (!queued) (*shared)(internal::Refused(runtime_));
}

}  // namespace drover::api
