// The HTTP/JSON surface: the same messages as gRPC through protobuf's JSON mapping, plus
// /metrics (Prometheus text), /healthz and /readyz. Routes: docs/http-api.md.
//
// Threading: cpp-httplib's worker pool runs handlers; each waits for its Service answer.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "api/service.h"

namespace httplib {
class Server;
}

namespace drover::api {

class HttpServer {
 public:
  HttpServer(Service& service, int threads);
  ~HttpServer();

  // Binds "host:port" (port 0 picks one) and serves on a background thread.
  absl::Status Start(const std::string& address);
  int port() const { return port_; }
  void Stop();  // idempotent

 private:
  void Routes();
  Service& service_;
  int threads_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace drover::api
