#include "api/grpc_server.h"

#include <deque>
#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "api/status_map.h"
#include "drover/v1/drover.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace drover::api {
namespace {

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

class TaskServiceImpl final : public v1::TaskService::CallbackService {
 public:
  explicit TaskServiceImpl(api::Service& s) : s_(s) {}
  ServerUnaryReactor* SubmitTask(CallbackServerContext* ctx, const v1::SubmitTaskRequest* req,
                                 v1::SubmitTaskResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.SubmitTask(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* SubmitTasks(CallbackServerContext* ctx, const v1::SubmitTasksRequest* req,
                                  v1::SubmitTasksResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.SubmitTasks(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* GetTask(CallbackServerContext* ctx, const v1::GetTaskRequest* req,
                              v1::Task* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.GetTask(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* ListTasks(CallbackServerContext* ctx, const v1::ListTasksRequest* req,
                                v1::ListTasksResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.ListTasks(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* CancelTask(CallbackServerContext* ctx, const v1::CancelTaskRequest* req,
                                 v1::Task* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.CancelTask(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* WaitTask(CallbackServerContext* ctx, const v1::WaitTaskRequest* req,
                               v1::WaitTaskResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.WaitTask(*req, Finisher(ctx, r, resp));
    return r;
  }

 private:
  api::Service& s_;
};

class WorkflowServiceImpl final : public v1::WorkflowService::CallbackService {
 public:
  explicit WorkflowServiceImpl(api::Service& s) : s_(s) {}
  ServerUnaryReactor* SubmitWorkflow(CallbackServerContext* ctx,
                                     const v1::SubmitWorkflowRequest* req,
                                     v1::Workflow* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.SubmitWorkflow(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* SubmitMapReduce(CallbackServerContext* ctx,
                                      const v1::SubmitMapReduceRequest* req,
                                      v1::Workflow* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.SubmitMapReduce(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* GetWorkflow(CallbackServerContext* ctx, const v1::GetWorkflowRequest* req,
                                  v1::Workflow* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.GetWorkflow(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* ListWorkflows(CallbackServerContext* ctx, const v1::ListWorkflowsRequest* req,
                                    v1::ListWorkflowsResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.ListWorkflows(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* CancelWorkflow(CallbackServerContext* ctx,
                                     const v1::CancelWorkflowRequest* req,
                                     v1::Workflow* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.CancelWorkflow(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* WaitWorkflow(CallbackServerContext* ctx, const v1::WaitWorkflowRequest* req,
                                   v1::WaitWorkflowResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.WaitWorkflow(*req, Finisher(ctx, r, resp));
    return r;
  }

 private:
  api::Service& s_;
};

class AgentServiceImpl final : public v1::AgentService::CallbackService {
 public:
  AgentServiceImpl(api::Service& s, StreamRegistry& reg) : s_(s), reg_(reg) {}
  ServerUnaryReactor* RegisterAgent(CallbackServerContext* ctx, const v1::RegisterAgentRequest* req,
                                    v1::RegisterAgentResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.RegisterAgent(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* Heartbeat(CallbackServerContext* ctx, const v1::HeartbeatRequest* req,
                                v1::HeartbeatResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.Heartbeat(*req, Finisher(ctx, r, resp));
    return r;
  }
  grpc::ServerWriteReactor<v1::WorkItem>* OpenWorkStream(
      CallbackServerContext* ctx, const v1::OpenWorkStreamRequest* req) override {
    auto* stream = new WorkStream(&reg_, &s_, req->agent_id());
    reg_.Add(req->agent_id(), stream);
    s_.OpenStream(req->agent_id(), [stream](absl::StatusOr<bool> res) {
      if (!res.ok()) stream->Close(ToGrpc(res.status()));
    });
    return stream;
  }
  ServerUnaryReactor* CompleteTask(CallbackServerContext* ctx, const v1::CompleteTaskRequest* req,
                                   v1::Ack* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.CompleteTask(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* CompleteTasks(CallbackServerContext* ctx, const v1::CompleteTasksRequest* req,
                                    v1::CompleteTasksResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.CompleteTasks(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* FailTask(CallbackServerContext* ctx, const v1::FailTaskRequest* req,
                               v1::Ack* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.FailTask(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* Checkpoint(CallbackServerContext* ctx, const v1::CheckpointRequest* req,
                                 v1::Ack* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.Checkpoint(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* ExtendLease(CallbackServerContext* ctx, const v1::ExtendLeaseRequest* req,
                                  v1::ExtendLeaseResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.ExtendLease(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* DeregisterAgent(CallbackServerContext* ctx,
                                      const v1::DeregisterAgentRequest* req,
                                      v1::Ack* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.DeregisterAgent(*req, Finisher(ctx, r, resp));
    return r;
  }

 private:
  api::Service& s_;
  StreamRegistry& reg_;
};

class AdminServiceImpl final : public v1::AdminService::CallbackService {
 public:
  explicit AdminServiceImpl(api::Service& s) : s_(s) {}
  ServerUnaryReactor* Health(CallbackServerContext* ctx, const v1::HealthRequest*,
                             v1::HealthResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.Health(Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* Ready(CallbackServerContext* ctx, const v1::HealthRequest*,
                            v1::HealthResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.Ready(Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* Stats(CallbackServerContext* ctx, const v1::StatsRequest*,
                            v1::StatsResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.Stats(Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* ListDeadLetters(CallbackServerContext* ctx,
                                      const v1::ListDeadLettersRequest* req,
                                      v1::ListTasksResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.ListDeadLetters(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* ReprocessDeadLetters(CallbackServerContext* ctx,
                                           const v1::ReprocessDeadLettersRequest* req,
                                           v1::ReprocessDeadLettersResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.ReprocessDeadLetters(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* PurgeDeadLetters(CallbackServerContext* ctx,
                                       const v1::PurgeDeadLettersRequest* req,
                                       v1::PurgeDeadLettersResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.PurgeDeadLetters(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* SendMessage(CallbackServerContext* ctx, const v1::SendMessageRequest* req,
                                  v1::SendMessageResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.SendMessage(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* GetUsage(CallbackServerContext* ctx, const v1::UsageRequest*,
                               v1::UsageResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.GetUsage(Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* ListPools(CallbackServerContext* ctx, const v1::ListPoolsRequest*,
                                v1::ListPoolsResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.ListPools(Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* ApplyPool(CallbackServerContext* ctx, const v1::ApplyPoolRequest* req,
                                v1::Ack* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.ApplyPool(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* DeletePool(CallbackServerContext* ctx, const v1::DeletePoolRequest* req,
                                 v1::Ack* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.DeletePool(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* StopPoolAgent(CallbackServerContext* ctx, const v1::StopPoolAgentRequest* req,
                                    v1::Ack* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.StopPoolAgent(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* ListScalingDecisions(CallbackServerContext* ctx,
                                           const v1::ListScalingDecisionsRequest* req,
                                           v1::ListScalingDecisionsResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.ListScalingDecisions(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* GetLoadHistory(CallbackServerContext* ctx,
                                     const v1::GetLoadHistoryRequest* req,
                                     v1::GetLoadHistoryResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.GetLoadHistory(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* ImportLoadHistory(CallbackServerContext* ctx,
                                        const v1::ImportLoadHistoryRequest* req,
                                        v1::ImportLoadHistoryResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.ImportLoadHistory(*req, Finisher(ctx, r, resp));
    return r;
  }
  ServerUnaryReactor* ListAgents(CallbackServerContext* ctx, const v1::ListAgentsRequest*,
                                 v1::ListAgentsResponse* resp) override {
    auto* r = ctx->DefaultReactor();
    s_.ListAgents(Finisher(ctx, r, resp));
    return r;
  }

 private:
  api::Service& s_;
};

}  // namespace

struct GrpcServer::Impl {
  explicit Impl(Service& s) : registry(s), tasks(s), workflows(s), agents(s, registry), admin(s) {}
  StreamRegistry registry;
  TaskServiceImpl tasks;
  WorkflowServiceImpl workflows;
  AgentServiceImpl agents;
  AdminServiceImpl admin;
  std::unique_ptr<grpc::Server> server;
  bool stopped = false;
};

GrpcServer::GrpcServer(Service& service) : impl_(std::make_unique<Impl>(service)) {}
GrpcServer::~GrpcServer() { Stop(); }

PushSink& GrpcServer::sink() { return impl_->registry; }

absl::Status GrpcServer::Start(const std::string& address) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port_);
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
  impl_->server = builder.BuildAndStart();
  if (!impl_->server || port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("grpc_listen: cannot listen on ", address, " (in use or not an address)"));
  }
  return absl::OkStatus();
}

void GrpcServer::Stop() {
  if (!impl_ || impl_->stopped || !impl_->server) return;
  impl_->stopped = true;
  impl_->registry.CloseAll(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server shutting down"));
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(3));
  impl_->server->Wait();
}

}  // namespace drover::api
