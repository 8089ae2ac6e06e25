#include "api/grpc_server.h"

#include <deque>
#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "api/gate.h"
#include "api/status_map.h"
#include "api/tls.h"
#include "drover/v1/drover.grpc.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "obs/trace.h"

namespace drover::api {
namespace {

// The services the health service reports on by name (docs/grpc.md).
constexpr const char* kServices[] = {"drover.v1.TaskService", "drover.v1.WorkflowService",
                                     "drover.v1.AgentService", "drover.v1.AdminService",
                                     "drover.v1.AuthService"};

using grpc::CallbackServerContext;
using grpc::ServerUnaryReactor;

// Completes a unary call from an absl::StatusOr answer.
template <typename Resp>
Reply<Resp> Finisher(CallbackServerContext* ctx, ServerUnaryReactor* reactor, Resp* out) {
  return [ctx, reactor, out](absl::StatusOr<Resp> res) {
    if (res.ok()) {
      *out = std::move(*res);
      reactor->Finish(grpc::Status::OK);
      return;
    }
    if (auto ms = RetryAfterMs(res.status())) {
      ctx->AddTrailingMetadata("retry-after-ms", std::to_string(*ms));
    }
    reactor->Finish(ToGrpc(res.status()));
  };
}

class StreamRegistry;

// One agent's work stream. Items are written one at a time, in order.
class WorkStream final : public grpc::ServerWriteReactor<v1::WorkItem> {
 public:
  WorkStream(StreamRegistry* registry, Service* service, uint64_t agent)
      : registry_(registry), service_(service), agent_(agent) {}

  void Enqueue(const v1::WorkItem& item) {
    std::lock_guard<std::mutex> lk(mu_);
    if (finishing_) {
      ReturnLeases({item});
      return;
    }
    queue_.push_back(item);
    if (!writing_) WriteNextLocked();
  }

  // Ends the stream with `st` once pending writes are done.
  void Close(const grpc::Status& st) {
    std::lock_guard<std::mutex> lk(mu_);
    if (finishing_) return;
    finishing_ = true;
    final_status_ = st;
    ReturnLeases(queue_);
    queue_.clear();
    if (!writing_) Finish(final_status_);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lk(mu_);
    writing_ = false;
    if (!ok) {
      // The agent went away: leases not written go back to the queue (ReturnLeases).
      if (!finishing_) {
        finishing_ = true;
        final_status_ = grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed");
      }
      ReturnLeases({current_});
      ReturnLeases(queue_);
      queue_.clear();
      Finish(final_status_);
      return;
    }
    if (finishing_) {
      Finish(final_status_);
    } else if (!queue_.empty()) {
      WriteNextLocked();
    }
  }

  void OnCancel() override { Close(grpc::Status::CANCELLED); }
  void OnDone() override;

 private:
  void WriteNextLocked() {
    current_ = std::move(queue_.front());
    queue_.pop_front();
    // Leases waiting behind this one go out in the same message (at most kMaxPack).
    if (current_.has_lease() && !queue_.empty() && queue_.front().has_lease()) {
      v1::LeaseBatch batch;
      *batch.add_leases() = std::move(*current_.mutable_lease());
      while (!queue_.empty() && queue_.front().has_lease() && batch.leases_size() < kMaxPack) {
        *batch.add_leases() = std::move(*queue_.front().mutable_lease());
        queue_.pop_front();
      }
      *current_.mutable_leases() = std::move(batch);
    }
    writing_ = true;
    StartWrite(&current_);
  }

  static constexpr int kMaxPack = 256;

  // Leases that will never be written go back to the queue (Service::ReturnUndelivered).
  void ReturnLeases(const std::deque<v1::WorkItem>& items) {
    for (const auto& item : items) service_->ReturnUndelivered(agent_, item);
  }

  StreamRegistry* registry_;
  Service* service_;
  const uint64_t agent_;
  std::mutex mu_;
  std::deque<v1::WorkItem> queue_;
  v1::WorkItem current_;
  bool writing_ = false;
  bool finishing_ = false;
  grpc::Status final_status_;
};

// Open work streams by agent; the runtime's PushSink.
class StreamRegistry final : public PushSink {
 public:
  explicit StreamRegistry(Service& service) : service_(service) {}

  void Push(core::AgentId agent, const v1::WorkItem& item) override {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = streams_.find(agent);
    if (it != streams_.end()) {
      it->second->Enqueue(item);
    } else {
      service_.ReturnUndelivered(agent, item);  // the agent's stream is gone
    }
  }

  // Registers a stream; an older stream of the same agent is closed.
  void Add(uint64_t agent, WorkStream* stream) {
    std::lock_guard<std::mutex> lk(mu_);
    auto [it, inserted] = streams_.emplace(agent, stream);
    if (!inserted) {
      it->second->Close(grpc::Status(grpc::StatusCode::ABORTED, "replaced by a newer work stream"));
      it->second = stream;
    }
  }

  // True when `stream` was the agent's current stream.
  bool Remove(uint64_t agent, WorkStream* stream) {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = streams_.find(agent);
    if (it == streams_.end() || it->second != stream) return false;
    streams_.erase(it);
    return true;
  }

  void CloseAll(const grpc::Status& st) {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& [agent, stream] : streams_) stream->Close(st);
  }

 private:
  Service& service_;
  std::mutex mu_;
  std::map<uint64_t, WorkStream*> streams_;
};

void WorkStream::OnDone() {
  if (registry_->Remove(agent_, this)) service_->CloseStream(agent_);
  delete this;
}

// What the gate needs to know about a gRPC call.
CallMeta GrpcMeta(CallbackServerContext* ctx, absl::string_view method) {
  CallMeta m;
  m.method = method;
  m.transport = "grpc";
  const auto& md = ctx->client_metadata();
  auto get = [&md](const char* key) -> absl::string_view {
    auto it = md.find(key);
    if (it == md.end()) return {};
    return absl::string_view(it->second.data(), it->second.size());
  };
  m.authorization = get("authorization");
  m.user_agent = get("user-agent");
  m.request_id = get("x-request-id");
  m.traceparent = get("traceparent");
  m.peer = ctx->peer();
  if (auto auth = ctx->auth_context(); auth && auth->IsPeerAuthenticated()) {
    // Set only for a client certificate the handshake verified against the client CAs.
    for (const grpc::string_ref& cn : auth->FindPropertyValues("x509_common_name")) {
      m.peer_cn.assign(cn.data(), cn.size());
    }
  }
  return m;
}

// One unary RPC handled by the Service method of the same name: the gate admits the call
// (or answers its refusal), then the Service method gets the caller, the request (or none)
// and a Finisher that writes the response. Each service class below is a table of these.
// Admits a unary call through the gate, then hands the caller and a Finisher to `call`
// (the Service method), or answers the refusal.
template <typename Req, typename Resp, typename Call>
ServerUnaryReactor* Admitted(CallbackServerContext* ctx, Gate& gate, const std::string& method,
                             const Req* req, Resp* resp, Call call) {
  auto* r = ctx->DefaultReactor();
  auto caller = gate.Admit(GrpcMeta(ctx, method), req);
  if (!caller.ok()) {
    r->Finish(ToGrpc(caller.status()));
    return r;
  }
  call(*caller, Finisher(ctx, r, resp));
  return r;
}

#define DROVER_UNARY(Method, Request, Response)                                           \
  ServerUnaryReactor* Method(CallbackServerContext* ctx, const v1::Request* req,          \
                             v1::Response* resp) override {                               \
    static const std::string kMethod = std::string(kService) + "/" #Method;               \
    return Admitted(ctx, gate_, kMethod, req, resp,                                       \
                    [&](const auth::Caller& c, auto done) { s_.Method(c, *req, done); }); \
  }
// Submissions: a task without a traceparent takes the call's (metadata "traceparent"), on
// a copy of the request made only then (obs::ApplyTraceparent; a bad header is ignored).
#define DROVER_UNARY_TRACED(Method, Request, Response)                                      \
  ServerUnaryReactor* Method(CallbackServerContext* ctx, const v1::Request* req,            \
                             v1::Response* resp) override {                                 \
    static const std::string kMethod = std::string(kService) + "/" #Method;                 \
    return Admitted(ctx, gate_, kMethod, req, resp, [&](const auth::Caller& c, auto done) { \
      auto it = ctx->client_metadata().find("traceparent");                                 \
      if (it != ctx->client_metadata().end()) {                                             \
        v1::Request copy = *req;                                                            \
        if (obs::ApplyTraceparent(absl::string_view(it->second.data(), it->second.size()),  \
                                  &copy)) {                                                 \
          return s_.Method(c, copy, done);                                                  \
        }                                                                                   \
      }                                                                                     \
      s_.Method(c, *req, done);                                                             \
    });                                                                                     \
  }
#define DROVER_UNARY_NO_REQUEST(Method, Request, Response)                          \
  ServerUnaryReactor* Method(CallbackServerContext* ctx, const v1::Request* req,    \
                             v1::Response* resp) override {                         \
    static const std::string kMethod = std::string(kService) + "/" #Method;         \
    return Admitted(ctx, gate_, kMethod, req, resp,                                 \
                    [&](const auth::Caller& c, auto done) { s_.Method(c, done); }); \
  }
#define DROVER_SERVICE_MEMBERS \
  api::Service& s_;            \
  Gate& gate_

class TaskServiceImpl final : public v1::TaskService::CallbackService {
 public:
  static constexpr char kService[] = "drover.v1.TaskService";
  TaskServiceImpl(api::Service& s, Gate& g) : s_(s), gate_(g) {}
  DROVER_UNARY_TRACED(SubmitTask, SubmitTaskRequest, SubmitTaskResponse)
  DROVER_UNARY_TRACED(SubmitTasks, SubmitTasksRequest, SubmitTasksResponse)
  DROVER_UNARY(GetTask, GetTaskRequest, Task)
  DROVER_UNARY(ListTasks, ListTasksRequest, ListTasksResponse)
  DROVER_UNARY(CancelTask, CancelTaskRequest, Task)
  DROVER_UNARY(WaitTask, WaitTaskRequest, WaitTaskResponse)

 private:
  DROVER_SERVICE_MEMBERS;
};

class WorkflowServiceImpl final : public v1::WorkflowService::CallbackService {
 public:
  static constexpr char kService[] = "drover.v1.WorkflowService";
  WorkflowServiceImpl(api::Service& s, Gate& g) : s_(s), gate_(g) {}
  DROVER_UNARY(SubmitWorkflow, SubmitWorkflowRequest, Workflow)
  DROVER_UNARY(SubmitMapReduce, SubmitMapReduceRequest, Workflow)
  DROVER_UNARY(GetWorkflow, GetWorkflowRequest, Workflow)
  DROVER_UNARY(ListWorkflows, ListWorkflowsRequest, ListWorkflowsResponse)
  DROVER_UNARY(CancelWorkflow, CancelWorkflowRequest, Workflow)
  DROVER_UNARY(WaitWorkflow, WaitWorkflowRequest, WaitWorkflowResponse)

 private:
  DROVER_SERVICE_MEMBERS;
};

class AgentServiceImpl final : public v1::AgentService::CallbackService {
 public:
  static constexpr char kService[] = "drover.v1.AgentService";
  AgentServiceImpl(api::Service& s, Gate& g, StreamRegistry& reg) : s_(s), gate_(g), reg_(reg) {}
  DROVER_UNARY(RegisterAgent, RegisterAgentRequest, RegisterAgentResponse)
  DROVER_UNARY(Heartbeat, HeartbeatRequest, HeartbeatResponse)
  grpc::ServerWriteReactor<v1::WorkItem>* OpenWorkStream(
      CallbackServerContext* ctx, const v1::OpenWorkStreamRequest* req) override {
    static const std::string kMethod = std::string(kService) + "/OpenWorkStream";
    auto* stream = new WorkStream(&reg_, &s_, req->agent_id());
    auto caller = gate_.Admit(GrpcMeta(ctx, kMethod), req);
    if (!caller.ok()) {
      stream->Close(ToGrpc(caller.status()));  // never registered: nothing is pushed to it
      return stream;
    }
    // Only the agent's own principal may take its stream over: checked before the stream
    // replaces the agent's current one and receives its pushes.
    if (absl::Status st = s_.CheckAgentOwner(*caller, req->agent_id()); !st.ok()) {
      stream->Close(ToGrpc(st));
      return stream;
    }
    reg_.Add(req->agent_id(), stream);
    s_.OpenStream(*caller, req->agent_id(), [stream](absl::StatusOr<bool> res) {
      if (!res.ok()) stream->Close(ToGrpc(res.status()));
    });
    return stream;
  }
  DROVER_UNARY(CompleteTask, CompleteTaskRequest, Ack)
  DROVER_UNARY(CompleteTasks, CompleteTasksRequest, CompleteTasksResponse)
  DROVER_UNARY(FailTask, FailTaskRequest, Ack)
  DROVER_UNARY(Checkpoint, CheckpointRequest, Ack)
  DROVER_UNARY(ExtendLease, ExtendLeaseRequest, ExtendLeaseResponse)
  DROVER_UNARY(DeregisterAgent, DeregisterAgentRequest, Ack)

 private:
  DROVER_SERVICE_MEMBERS;
  StreamRegistry& reg_;
};

class AdminServiceImpl final : public v1::AdminService::CallbackService {
 public:
  static constexpr char kService[] = "drover.v1.AdminService";
  AdminServiceImpl(api::Service& s, Gate& g) : s_(s), gate_(g) {}
  DROVER_UNARY_NO_REQUEST(Health, HealthRequest, HealthResponse)
  DROVER_UNARY_NO_REQUEST(Ready, HealthRequest, HealthResponse)
  DROVER_UNARY_NO_REQUEST(Stats, StatsRequest, StatsResponse)
  DROVER_UNARY(ListDeadLetters, ListDeadLettersRequest, ListTasksResponse)
  DROVER_UNARY(ReprocessDeadLetters, ReprocessDeadLettersRequest, ReprocessDeadLettersResponse)
  DROVER_UNARY(PurgeDeadLetters, PurgeDeadLettersRequest, PurgeDeadLettersResponse)
  DROVER_UNARY(SendMessage, SendMessageRequest, SendMessageResponse)
  DROVER_UNARY_NO_REQUEST(GetUsage, UsageRequest, UsageResponse)
  DROVER_UNARY_NO_REQUEST(ListPools, ListPoolsRequest, ListPoolsResponse)
  DROVER_UNARY(ApplyPool, ApplyPoolRequest, Ack)
  DROVER_UNARY(DeletePool, DeletePoolRequest, Ack)
  DROVER_UNARY(StopPoolAgent, StopPoolAgentRequest, Ack)
  DROVER_UNARY(ListScalingDecisions, ListScalingDecisionsRequest, ListScalingDecisionsResponse)
  DROVER_UNARY(GetLoadHistory, GetLoadHistoryRequest, GetLoadHistoryResponse)
  DROVER_UNARY(ImportLoadHistory, ImportLoadHistoryRequest, ImportLoadHistoryResponse)
  DROVER_UNARY_NO_REQUEST(ListAgents, ListAgentsRequest, ListAgentsResponse)
  DROVER_UNARY(GetCluster, GetClusterRequest, ClusterStatus)
  DROVER_UNARY(ListEvents, ListEventsRequest, ListEventsResponse)
  DROVER_UNARY(GetStatsSeries, StatsSeriesRequest, StatsSeriesResponse)

 private:
  DROVER_SERVICE_MEMBERS;
};

class AuthServiceImpl final : public v1::AuthService::CallbackService {
 public:
  static constexpr char kService[] = "drover.v1.AuthService";
  AuthServiceImpl(api::Service& s, Gate& g) : s_(s), gate_(g) {}
  DROVER_UNARY(CreateToken, CreateTokenRequest, CreateTokenResponse)
  DROVER_UNARY(ListTokens, ListTokensRequest, ListTokensResponse)
  DROVER_UNARY(RevokeToken, RevokeTokenRequest, Token)
  DROVER_UNARY(WhoAmI, WhoAmIRequest, WhoAmIResponse)
  DROVER_UNARY(ListAudit, ListAuditRequest, ListAuditResponse)

 private:
  DROVER_SERVICE_MEMBERS;
};

#undef DROVER_UNARY
#undef DROVER_UNARY_NO_REQUEST
#undef DROVER_SERVICE_MEMBERS

}  // namespace

struct GrpcServer::Impl {
  Impl(Service& s, Gate& g)
      : registry(s),
        tasks(s, g),
        workflows(s, g),
        agents(s, g, registry),
        admin(s, g),
        auth(s, g) {}
  StreamRegistry registry;
  TaskServiceImpl tasks;
  WorkflowServiceImpl workflows;
  AgentServiceImpl agents;
  AdminServiceImpl admin;
  AuthServiceImpl auth;
  std::unique_ptr<grpc::Server> server;
  bool stopped = false;
};

GrpcServer::GrpcServer(Service& service, Gate& gate)
    : impl_(std::make_unique<Impl>(service, gate)) {}
GrpcServer::~GrpcServer() { Stop(); }

PushSink& GrpcServer::sink() { return impl_->registry; }

absl::Status GrpcServer::Start(const std::string& address, const TlsOptions& tls) {
  // The standard health service (grpc.health.v1.Health: grpc_health_probe, Kubernetes gRPC
  // probes) and server reflection (grpcurl and the like): gRPC's own, outside the gate like
  // /healthz. Both are process-wide switches read by the builder.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(
      address, tls.enabled() ? GrpcServerCredentials(tls) : grpc::InsecureServerCredentials(),
      &port_);
  builder.SetMaxReceiveMessageSize(64 << 20);
  builder.SetMaxSendMessageSize(64 << 20);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 20'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.RegisterService(&impl_->tasks);
  builder.RegisterService(&impl_->workflows);
  builder.RegisterService(&impl_->agents);
  builder.RegisterService(&impl_->admin);
  builder.RegisterService(&impl_->auth);
  impl_->server = builder.BuildAndStart();
  if (!impl_->server || port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("grpc_listen: cannot listen on ", address, " (in use or not an address)"));
  }
  if (grpc::HealthCheckServiceInterface* health = impl_->server->GetHealthCheckService()) {
    health->SetServingStatus(true);  // "" (the server) and every service below
    for (const char* name : kServices) health->SetServingStatus(name, true);
  }
  return absl::OkStatus();
}

void GrpcServer::Stop() {
  if (!impl_ || impl_->stopped || !impl_->server) return;
  impl_->stopped = true;
  // Probes see NOT_SERVING while the server drains.
  if (grpc::HealthCheckServiceInterface* health = impl_->server->GetHealthCheckService()) {
    health->Shutdown();
  }
  impl_->registry.CloseAll(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server shutting down"));
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(3));
  impl_->server->Wait();
}

}  // namespace drover::api
