#include "auth/dev_certs.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace drover::auth {
namespace {

struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct CertFree {
  void operator()(X509* x) const { X509_free(x); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyFree>;
using CertPtr = std::unique_ptr<X509, CertFree>;

KeyPtr NewKey() { return KeyPtr(EVP_EC_gen("P-256")); }

bool AddExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return false;
  const bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

// A certificate for `key` named `cn`, signed by `issuer_key` (issuer null: self-signed).
CertPtr Make(EVP_PKEY* key, const std::string& cn, X509* issuer, EVP_PKEY* issuer_key, int days,
             const std::vector<std::pair<int, std::string>>& exts) {
  CertPtr cert(X509_new());
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  RAND_bytes(serial, sizeof(serial));
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -300);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(days) * 86400);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("drover dev"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer) : name);
  for (const auto& [nid, value] : exts) {
    if (!AddExt(cert.get(), issuer ? issuer : cert.get(), nid, value)) return nullptr;
  }
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) == 0) return nullptr;
  return cert;
}

absl::Status WritePem(const std::string& path, X509* cert, EVP_PKEY* key) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, key ? 0600 : 0644);
  if (fd < 0) return absl::FailedPreconditionError(absl::StrCat(path, ": ", std::strerror(errno)));
  FILE* f = ::fdopen(fd, "w");
  const bool ok = key ? PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) == 1
                      : PEM_write_X509(f, cert) == 1;
  std::fclose(f);
  if (!ok) return absl::InternalError(absl::StrCat(path, ": writing the PEM failed"));
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteDevCertificates(const DevCertOptions& o) {
  if (o.dir.empty()) return absl::InvalidArgumentError("--out: a directory is required");
  if (o.days < 1 || o.days > 3650) {
    return absl::InvalidArgumentError(absl::StrCat("--days: 1 to 3650, got ", o.days));
  }
  if (::mkdir(o.dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(
        absl::StrCat("--out: ", o.dir, ": ", std::strerror(errno)));
  }
  KeyPtr ca_key = NewKey(), server_key = NewKey(), client_key = NewKey();
  if (!ca_key || !server_key || !client_key) return absl::InternalError("cannot make EC keys");
  CertPtr ca = Make(ca_key.get(), "drover dev CA", nullptr, ca_key.get(), o.days,
                    {{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                     {NID_key_usage, "critical,keyCertSign,cRLSign"},
                     {NID_subject_key_identifier, "hash"}});
  if (!ca) return absl::InternalError("cannot make the CA certificate");
  std::vector<std::string> sans = {"DNS:localhost", "IP:127.0.0.1", "IP:::1"};
  for (const std::string& h : o.hosts) {
    const bool ip = h.find_first_not_of("0123456789.:") == std::string::npos;
    sans.push_back(absl::StrCat(ip ? "IP:" : "DNS:", h));
  }
  const std::vector<std::pair<int, std::string>> leaf = {
      {NID_basic_constraints, "critical,CA:FALSE"},
      {NID_key_usage, "critical,digitalSignature"},
      {NID_authority_key_identifier, "keyid"}};
  auto with = [&](std::vector<std::pair<int, std::string>> extra) {
    auto v = leaf;
    v.insert(v.end(), extra.begin(), extra.end());
    return v;
  };
  CertPtr server = Make(server_key.get(), "localhost", ca.get(), ca_key.get(), o.days,
                        with({{NID_ext_key_usage, "serverAuth,clientAuth"},
                              {NID_subject_alt_name, absl::StrJoin(sans, ",")}}));
  CertPtr client = Make(client_key.get(), o.client_name, ca.get(), ca_key.get(), o.days,
                        with({{NID_ext_key_usage, "clientAuth"}}));
  if (!server || !client) return absl::InternalError("cannot make the leaf certificates");
  const std::string d = o.dir + "/";
  for (auto st :
       {WritePem(d + "ca.pem", ca.get(), nullptr), WritePem(d + "ca.key", nullptr, ca_key.get()),
        WritePem(d + "server.pem", server.get(), nullptr),
        WritePem(d + "server.key", nullptr, server_key.get()),
        WritePem(d + "client.pem", client.get(), nullptr),
        WritePem(d + "client.key", nullptr, client_key.get())}) {
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

}  // namespace drover::auth
