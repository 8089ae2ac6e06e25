// The HTTP/JSON surface: the same messages as gRPC through protobuf's JSON mapping, plus
// /metrics (Prometheus text), /healthz and /readyz, and the dashboard (its assets, sign-in
// and push stream: docs/dashboard.md). Routes: docs/http-api.md.
//
// Threading: cpp-httplib's worker pool runs handlers; each waits for its Service answer.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "api/gate.h"
#include "api/service.h"
#include "api/tls.h"
#include "auth/access.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace drover::api {

class HttpServer {
 public:
  // Followers of the dashboard's push stream at once (each holds a thread).
  static constexpr int kMaxStreams = 16;
  // `public_metrics`: /metrics answers without a token (AuthConfig.public_metrics).
  HttpServer(Service& service, Gate& gate, int threads, bool public_metrics = false);
  ~HttpServer();

  // Binds "host:port" (port 0 picks one) and serves on a background thread; HTTPS when
  // `tls` is enabled.
  absl::Status Start(const std::string& address, const TlsOptions& tls = {});
  int port() const { return port_; }
  void Stop();  // idempotent
  // The routes registered, each with the access-table entry it is checked against (the
  // completeness test compares them with auth::HttpRoutes()).
  const std::vector<auth::HttpRoute>& routes() const { return routes_; }

  class Admit;
  using Handler =
      std::function<void(const httplib::Request&, httplib::Response&, const Admit& admit)>;

 private:
  void Routes();
  // The dashboard's assets, sign-in and push stream (http_dashboard.cc).
  void DashboardRoutes();
  struct Streams;  // the push stream's followers
  static std::shared_ptr<Streams> MakeStreams(int max);
  void StopStreams();  // ends every push stream (Stop)
  // Registers a route; aborts when (verb, pattern) is not in the access table.
  void Add(const char* verb, const char* pattern, Handler handler);
  Service& service_;
  Gate& gate_;
  int threads_;
  bool public_metrics_;
  std::vector<auth::HttpRoute> routes_;
  std::unique_ptr<TlsFiles> tls_;  // declared before server_, so destroyed after it
  std::unique_ptr<httplib::Server> server_;
  std::shared_ptr<Streams> streams_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace drover::api
