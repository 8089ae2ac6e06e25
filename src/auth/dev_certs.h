// `drover certs dev`: a throw-away CA and certificates for a local TLS setup (never for
// production: the CA's key sits next to them).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace drover::auth {

struct DevCertOptions {
  std::string dir;                 // created if missing; files are written mode 0600 (keys)
  std::vector<std::string> hosts;  // server names besides localhost, 127.0.0.1 and ::1
  std::string client_name = "dev-client";
  int days = 30;
};

// Writes ca.pem/ca.key, server.pem/server.key (serverAuth and clientAuth, so drover's own
// pool agents can present it) and client.pem/client.key (CN = client_name); ECDSA P-256.
absl::Status WriteDevCertificates(const DevCertOptions& options);

}  // namespace drover::auth
