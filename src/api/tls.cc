#include "api/tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "fmt/core.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace drover::api {
namespace {

std::string OpensslError() {
  const unsigned long e = ERR_get_error();
  if (e == 0) return "no PEM data";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;

// Every certificate of a PEM file, in order.
std::vector<X509*> ReadCerts(const std::string& path) {
  std::vector<X509*> out;
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return out;
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) out.push_back(x);
  ERR_clear_error();  // the end of the file reads as an error
  return out;
}

EVP_PKEY* ReadKey(const std::string& path) {
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return nullptr;
  return PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr);
}

int64_t MTime(const std::string& path) {
  struct stat st;
  if (path.empty() || ::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

absl::Status Bad(const char* field, const std::string& path, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat("tls.", field, ": ", path, ": ", why));
}

}  // namespace

// A PEM file to read: a regular file of at most 1 MiB (not a FIFO or a device a read would
// hang on).
absl::Status CheckFile(const char* field, const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Bad(field, path, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return Bad(field, path, "not a regular file");
  if (st.st_size > (1 << 20)) return Bad(field, path, "larger than 1 MiB");
  return absl::OkStatus();
}

absl::Status CheckTlsFiles(const TlsOptions& tls) {
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError("tls: cert_file and key_file go together (both or neither)");
  }
  if (!tls.enabled()) {
    if (!tls.client_ca_file.empty() || !tls.ca_file.empty()) {
      return absl::InvalidArgumentError("tls.client_ca_file: needs cert_file and key_file");
    }
    return absl::OkStatus();
  }
  for (const auto& [field, path] :
       {std::pair<const char*, const std::string&>{"cert_file", tls.cert_file},
        {"key_file", tls.key_file},
        {"client_ca_file", tls.client_ca_file},
        {"ca_file", tls.ca_file}}) {
    if (path.empty()) continue;
    if (absl::Status st = CheckFile(field, path); !st.ok()) return st;
  }
  std::vector<X509*> chain = ReadCerts(tls.cert_file);
  if (chain.empty()) {
    return Bad("cert_file", tls.cert_file,
               absl::StrCat("no PEM certificate could be read (", OpensslError(), ")"));
  }
  EVP_PKEY* key = ReadKey(tls.key_file);
  absl::Status st;
  if (key == nullptr) {
    st = Bad("key_file", tls.key_file,
             absl::StrCat("no unencrypted PEM private key could be read (", OpensslError(), ")"));
  } else if (X509_check_private_key(chain[0], key) != 1) {
    ERR_clear_error();
    st = Bad("key_file", tls.key_file,
             absl::StrCat("does not match the certificate in ", tls.cert_file));
  }
  EVP_PKEY_free(key);
  for (X509* x : chain) X509_free(x);
  if (!st.ok()) return st;
  for (const auto& [field, path] :
       {std::pair<const char*, const std::string&>{"client_ca_file", tls.client_ca_file},
        {"ca_file", tls.ca_file}}) {
    if (path.empty()) continue;
    std::vector<X509*> cas = ReadCerts(path);
    if (cas.empty()) return Bad(field, path, "no PEM certificate could be read");
    for (X509* x : cas) X509_free(x);
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::ServerCredentials> GrpcServerCredentials(const TlsOptions& tls) {
  const auto secs =
      static_cast<unsigned int>(std::max<int64_t>(1, absl::ToInt64Seconds(tls.reload_interval)));
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      tls.key_file, tls.cert_file, tls.client_ca_file, secs);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  switch (tls.client_certs) {
    case TlsOptions::ClientCerts::kOff:
      options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
      break;
    case TlsOptions::ClientCerts::kRequest:
      options.watch_root_certs();
      options.set_cert_request_type(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
      break;
    case TlsOptions::ClientCerts::kRequire:
      options.watch_root_certs();
      options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
      break;
  }
  return grpc::experimental::TlsServerCredentials(options);
}

struct TlsFiles::Loaded {
  std::vector<X509*> chain;
  EVP_PKEY* key = nullptr;
  X509_STORE* cas = nullptr;
  ~Loaded() {
    for (X509* x : chain) X509_free(x);
    EVP_PKEY_free(key);
    X509_STORE_free(cas);
  }
};

TlsFiles::TlsFiles(TlsOptions tls) : tls_(std::move(tls)) {
  current_ = Load();
  stamp_ = MTime(tls_.cert_file) + MTime(tls_.key_file) + MTime(tls_.client_ca_file);
  next_check_ = absl::Now() + tls_.reload_interval;
}

TlsFiles::~TlsFiles() = default;

std::shared_ptr<TlsFiles::Loaded> TlsFiles::Load() const {
  auto l = std::make_shared<Loaded>();
  l->chain = ReadCerts(tls_.cert_file);
  l->key = ReadKey(tls_.key_file);
  if (l->chain.empty() || l->key == nullptr || X509_check_private_key(l->chain[0], l->key) != 1) {
    ERR_clear_error();
    return nullptr;
  }
  if (!tls_.client_ca_file.empty()) {
    l->cas = X509_STORE_new();
    for (X509* x : ReadCerts(tls_.client_ca_file)) {
      X509_STORE_add_cert(l->cas, x);
      X509_free(x);
    }
  }
  return l;
}

std::shared_ptr<TlsFiles::Loaded> TlsFiles::Current() {
  std::lock_guard<std::mutex> lk(mu_);
  const absl::Time now = absl::Now();
  if (now >= next_check_) {
    next_check_ = now + tls_.reload_interval;
    const int64_t stamp = MTime(tls_.cert_file) + MTime(tls_.key_file) + MTime(tls_.client_ca_file);
    if (stamp != stamp_) {
      // A half-written pair (a new certificate, the old key) does not load: the old one
      // serves until the next check.
      if (auto fresh = Load()) {
        current_ = std::move(fresh);
        stamp_ = stamp;
        fmt::print(stderr, "drover serve: HTTP TLS certificates reloaded from {}\n",
                   tls_.cert_file);
      }
    }
  }
  return current_;
}

int TlsFiles::CertCallback(SSL* ssl, void* arg) {
  auto* self = static_cast<TlsFiles*>(arg);
  std::shared_ptr<Loaded> l = self->Current();
  if (!l) return 0;
  if (SSL_use_certificate(ssl, l->chain[0]) != 1 || SSL_use_PrivateKey(ssl, l->key) != 1) return 0;
  SSL_clear_chain_certs(ssl);
  for (size_t i = 1; i < l->chain.size(); ++i) SSL_add1_chain_cert(ssl, l->chain[i]);
  if (l->cas != nullptr) SSL_set1_verify_cert_store(ssl, l->cas);
  return 1;
}

bool TlsFiles::Setup(SSL_CTX& ctx) {
  if (!current_) return false;
  SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(&ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION);
  SSL_CTX_set_cert_cb(&ctx, &TlsFiles::CertCallback, this);
  if (tls_.client_certs != TlsOptions::ClientCerts::kOff) {
    int mode = SSL_VERIFY_PEER;
    if (tls_.client_certs == TlsOptions::ClientCerts::kRequire)
      mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(&ctx, mode, nullptr);
  }
  return true;
}

std::string PeerCommonName(const SSL* ssl) {
  if (ssl == nullptr) return "";
  X509* peer = SSL_get1_peer_certificate(ssl);
  if (peer == nullptr) return "";
  std::string cn;
  if (SSL_get_verify_result(ssl) == X509_V_OK) {
    char buf[256];
    const int n =
        X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, buf, sizeof(buf));
    if (n > 0) cn.assign(buf, static_cast<size_t>(n));
  }
  X509_free(peer);
  return cn;
}

}  // namespace drover::api
