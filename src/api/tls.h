// TLS for drover serve (docs/security.md#tls): the options, a check of the files at start,
// gRPC credentials that reload the files when they change, and the same for the HTTP
// server's OpenSSL context (a certificate callback serves the current files).
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

namespace grpc {
class ServerCredentials;
}

namespace drover::api {

struct TlsOptions {
  std::string cert_file, key_file;  // both, or neither (TLS off)
  std::string client_ca_file;       // mTLS: client certificates verified against it
  enum class ClientCerts { kOff, kRequest, kRequire };
  ClientCerts client_certs = ClientCerts::kOff;
  absl::Duration reload_interval = absl::Seconds(10);
  std::string ca_file;      // for the server's own pool agents (default client_ca_file)
  std::string server_name;  // the name pool agents verify (default: the address)
  bool enabled() const { return !cert_file.empty(); }
};

// OK, or InvalidArgument naming the field: each file readable PEM, the key matching the
// certificate, the CA files holding at least one certificate.
absl::Status CheckTlsFiles(const TlsOptions& tls);

// gRPC server credentials: TLS 1.2+ with the files watched every reload_interval.
std::shared_ptr<grpc::ServerCredentials> GrpcServerCredentials(const TlsOptions& tls);

// The HTTP server's certificates, read again when a file's modification time changed (at
// most once per reload_interval). Setup() configures an SSL_CTX to use them.
class TlsFiles {
 public:
  explicit TlsFiles(TlsOptions tls);
  ~TlsFiles();
  bool Setup(SSL_CTX& ctx);

 private:
  struct Loaded;
  static int CertCallback(SSL* ssl, void* self);
  std::shared_ptr<Loaded> Current();
  std::shared_ptr<Loaded> Load() const;

  const TlsOptions tls_;
  std::mutex mu_;
  std::shared_ptr<Loaded> current_;
  absl::Time next_check_;
  int64_t stamp_ = 0;  // the files' modification times, summed
};

// The common name of the client certificate the connection verified, or "" (none, or not
// verified).
std::string PeerCommonName(const SSL* ssl);

}  // namespace drover::api
