#include "cli/auth_commands.h"

#include <fstream>

#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "auth/access.h"
#include "auth/dev_certs.h"
#include "auth/roles.h"
#include "cli/common.h"
#include "fmt/core.h"
#include "google/protobuf/util/json_util.h"

namespace drover::cli {

namespace v1 = ::drover::v1;

namespace {

std::string Grants(const google::protobuf::RepeatedPtrField<v1::Grant>& grants) {
  std::vector<std::string> out;
  for (const v1::Grant& g : grants) out.push_back(auth::GrantString(g));
  return absl::StrJoin(out, ",");
}

std::string When(int64_t unix_ms) {
  if (unix_ms == 0) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMillis(unix_ms), absl::UTCTimeZone());
}

std::string OneLineJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

}  // namespace

void AuthCommands::Add(CLI::App& app) {
  token_ = app.add_subcommand("token", "API tokens: create, list, revoke (docs/security.md)");
  token_->require_subcommand(1);
  create_ = token_->add_subcommand("create", "Create a token; its secret is printed once");
  create_->add_option("name", name_, "a name for it (the audit log shows it)")->required();
  create_
      ->add_option("--role", roles_,
                   "role[@tenant], repeatable: viewer, agent, submitter, operator, admin; "
                   "no @tenant means every tenant (*)")
      ->required();
  create_->add_option("--ttl", ttl_, "expires after this long, e.g. 30d (default: never)");
  create_->add_flag("--json", json_, "print JSON");
  ls_ = token_->add_subcommand("ls", "List the tokens you may manage (never their secrets)");
  ls_->add_flag("--json", json_, "print JSON");
  revoke_ = token_->add_subcommand("revoke", "Revoke a token: it stops working at once");
  revoke_->add_option("id", id_, "the token's id or name")->required();
  whoami_ = app.add_subcommand("whoami", "The principal and roles of the token in use");
  whoami_->add_flag("--json", json_, "print JSON");
  audit_ = app.add_subcommand("audit", "The audit log: state changes and refused calls");
  audit_->add_option("--principal", principal_, "only this principal's records");
  audit_->add_option("--tenant", tenant_, "only records naming this tenant");
  audit_->add_option("--since", since_, "only the last N (e.g. 1h, 7d)");
  audit_->add_option("--limit", limit_, "at most this many records (default 100; 0: all)");
  audit_->add_flag("--jsonl", jsonl_, "one JSON record per line (an export)");
  auth_ = app.add_subcommand("auth", "Access rules");
  auth_->require_subcommand(1);
  matrix_ = auth_->add_subcommand(
      "matrix", "Print the access matrix (docs/access.md) from the table the server checks");
  matrix_->add_option("--out", out_, "write it to this file instead of stdout");
  certs_ = app.add_subcommand("certs", "TLS certificates");
  certs_->require_subcommand(1);
  dev_ = certs_->add_subcommand(
      "dev", "Write a throw-away CA, a server and a client certificate for a local TLS setup");
  dev_->add_option("--out", out_, "directory to write ca.pem, server.pem, client.pem and keys")
      ->required();
  dev_->add_option("--host", hosts_, "another name or address for the server (repeatable)");
  dev_->add_option("--client-name", client_name_,
                   "the client certificate's CN (default dev-client)");
  dev_->add_option("--days", days_, "validity (default 30)");
}

int AuthCommands::RunOffline() {
  if (dev_->parsed()) {
    auth::DevCertOptions o;
    o.dir = out_;
    o.hosts = hosts_;
    o.client_name = client_name_;
    o.days = days_;
    if (absl::Status st = auth::WriteDevCertificates(o); !st.ok()) return Fail(st);
    fmt::print(
        "wrote {0}/ca.pem, server.pem, client.pem and their keys (for development only)\n"
        "  drover serve --tls-cert {0}/server.pem --tls-key {0}/server.key --tls-client-ca "
        "{0}/ca.pem\n"
        "  drover --ca-file {0}/ca.pem --cert-file {0}/client.pem --key-file {0}/client.key "
        "stats\n",
        out_);
    return 0;
  }
  const std::string md = auth::AccessMatrixMarkdown();
  if (out_.empty()) {
    fmt::print("{}", md);
    return 0;
  }
  std::ofstream f(out_);
  f << md;
  if (!f) return Fail(absl::InternalError(absl::StrCat("--out: cannot write ", out_)));
  return 0;
}

int AuthCommands::Run(client::Client& c) {
  if (create_->parsed()) return Create(c);
  if (ls_->parsed()) return List(c);
  if (revoke_->parsed()) return Revoke(c);
  if (whoami_->parsed()) return WhoAmI(c);
  return Audit(c);
}

int AuthCommands::Create(client::Client& c) {
  v1::CreateTokenRequest req;
  req.set_name(name_);
  for (const std::string& r : roles_) {
    auto g = auth::ParseGrant(r);
    if (!g.ok()) return Fail(absl::InvalidArgumentError(absl::StrCat("--", g.status().message())));
    *req.add_grants() = *g;
  }
  if (!ttl_.empty()) {
    auto d = ParseDuration("--ttl", ttl_);
    if (!d.ok()) return Fail(d.status());
    req.set_ttl_ms(absl::ToInt64Milliseconds(*d));
  }
  auto r = c.CreateToken(req);
  if (!r.ok()) return Fail(r.status());
  if (json_) {
    fmt::print("{}", Json(*r));
    return 0;
  }
  fmt::print(stderr, "token {} (drv_{}) created: {}{}\n", r->token().name(), r->token().id(),
             Grants(r->token().grants()),
             r->token().expires_unix_ms()
                 ? absl::StrCat(", expires ", When(r->token().expires_unix_ms()))
                 : "");
  fmt::print(stderr, "the secret below is shown once; keep it (e.g. DROVER_TOKEN=...)\n");
  fmt::print("{}\n", r->secret());
  return 0;
}

int AuthCommands::List(client::Client& c) {
  auto r = c.ListTokens();
  if (!r.ok()) return Fail(r.status());
  if (json_) {
    fmt::print("{}", Json(*r));
    return 0;
  }
  fmt::print("{:<18} {:<24} {:<32} {:<21} {:<21} {:<21} {}\n", "ID", "NAME", "ROLES", "CREATED",
             "EXPIRES", "LAST USED", "STATE");
  const int64_t now = absl::ToUnixMillis(absl::Now());
  for (const v1::Token& t : r->tokens()) {
    const char* state = t.revoked_unix_ms() != 0                                   ? "revoked"
                        : (t.expires_unix_ms() != 0 && t.expires_unix_ms() <= now) ? "expired"
                                                                                   : "live";
    fmt::print("drv_{:<14} {:<24} {:<32} {:<21} {:<21} {:<21} {}\n", t.id(), t.name(),
               Grants(t.grants()), When(t.created_unix_ms()), When(t.expires_unix_ms()),
               When(t.last_used_unix_ms()), state);
  }
  return 0;
}

int AuthCommands::Revoke(client::Client& c) {
  auto r = c.RevokeToken(id_);
  if (!r.ok()) return Fail(r.status());
  fmt::print("token {} (drv_{}) revoked at {}\n", r->name(), r->id(), When(r->revoked_unix_ms()));
  return 0;
}

int AuthCommands::WhoAmI(client::Client& c) {
  auto r = c.WhoAmI();
  if (!r.ok()) return Fail(r.status());
  if (json_) {
    fmt::print("{}", Json(*r));
    return 0;
  }
  fmt::print("{} ({}): {}{}\n", r->principal(), r->credential(), Grants(r->grants()),
             r->expires_unix_ms() ? absl::StrCat(", expires ", When(r->expires_unix_ms())) : "");
  return 0;
}

int AuthCommands::Audit(client::Client& c) {
  v1::ListAuditRequest req;
  req.set_principal(principal_);
  req.set_tenant(tenant_);
  if (!since_.empty()) {
    auto d = ParseDuration("--since", since_);
    if (!d.ok()) return Fail(d.status());
    req.set_since_unix_ms(std::max<int64_t>(0, absl::ToUnixMillis(absl::Now() - *d)));
  }
  if (limit_ < 0) return Fail(absl::InvalidArgumentError("--limit: must be >= 0"));
  int printed = 0;
  if (!jsonl_) {
    fmt::print("{:<8} {:<21} {:<7} {:<22} {:<40} {:<14} {}\n", "SEQ", "TIME", "RESULT", "PRINCIPAL",
               "METHOD", "TENANT", "OBJECTS / REASON");
  }
  while (true) {
    req.set_page_size(limit_ == 0 ? 1000 : std::min(1000, limit_ - printed));
    auto r = c.ListAudit(req);
    if (!r.ok()) return Fail(r.status());
    for (const v1::AuditRecord& a : r->records()) {
      if (jsonl_) {
        fmt::print("{}\n", OneLineJson(a));
      } else {
        std::string what = absl::StrJoin(a.objects(), " ");
        if (!a.allowed()) what = absl::StrCat(what.empty() ? "" : what + " ", "- ", a.reason());
        std::string method = a.method();
        if (auto slash = method.rfind('/');
            slash != std::string::npos && method.rfind("drover.v1.", 0) == 0) {
          method = method.substr(10);
        }
        fmt::print("{:<8} {:<21} {:<7} {:<22} {:<40} {:<14} {}\n", a.seq(), When(a.unix_ms()),
                   a.allowed() ? "ok" : "DENIED",
                   a.principal().empty() ? "(" + a.credential() + ")" : a.principal(), method,
                   a.tenant().empty() ? "-" : a.tenant(), what);
      }
      ++printed;
    }
    if (r->next_page_token().empty() || (limit_ != 0 && printed >= limit_)) break;
    req.set_page_token(r->next_page_token());
  }
  return 0;
}

}  // namespace drover::cli
