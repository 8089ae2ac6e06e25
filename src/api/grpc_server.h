// The gRPC surface: TaskService, WorkflowService, AgentService, AdminService and
// AuthService over the Service, every call admitted by the Gate first.
//
// Handlers use gRPC's callback API: no thread waits for the engine; each reply is sent
// from the store thread when its batch has committed. Agents' work streams are server
// write reactors that the runtime pushes into (this class is the runtime's PushSink).
//
// Threading: thread-safe.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "api/gate.h"
#include "api/runtime.h"
#include "api/service.h"
#include "api/tls.h"

namespace drover::api {

class GrpcServer {
 public:
  GrpcServer(Service& service, Gate& gate);
  ~GrpcServer();

  // Binds `address` ("127.0.0.1:7070", port 0 picks one) and starts serving, over TLS when
  // `tls` is enabled (plaintext is then refused).
  absl::Status Start(const std::string& address, const TlsOptions& tls = {});
  // The bound port (after Start).
  int port() const { return port_; }
  // The sink that delivers pushes to open work streams.
  PushSink& sink();
  // Ends open work streams and shuts the server down. Idempotent.
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace drover::api
