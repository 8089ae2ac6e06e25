// The operations of drover's API, independent of transport. gRPC and HTTP handlers parse
// their request into the drover.v1 message, call one method here and map the answer.
//
// Every method is asynchronous: `done` runs exactly once, on the store thread after the
// batch that carried the command committed, or at once (on the caller's thread) when the
// command could not be queued. `done` must not block.
//
// Threading: thread-safe.
#pragma once

#include <functional>
#include <mutex>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "api/runtime.h"
#include "auth/principal.h"
#include "drover/v1/drover.pb.h"
#include "obs/series.h"
#include "pool/pool_manager.h"
#include "store/store.h"

namespace drover::api {

class Gate;

template <typename T>
using Reply = std::function<void(absl::StatusOr<T>)>;

class Service {
 public:
  Service(Runtime& runtime, store::Store& store, absl::Time started)
      : runtime_(runtime), store_(store), started_(started) {}

  void SubmitTask(const auth::Caller& caller, const v1::SubmitTaskRequest& req,
                  Reply<v1::SubmitTaskResponse> done);
  void SubmitTasks(const auth::Caller& caller, const v1::SubmitTasksRequest& req,
                   Reply<v1::SubmitTasksResponse> done);
  void GetTask(const auth::Caller& caller, const v1::GetTaskRequest& req, Reply<v1::Task> done);
  void ListTasks(const auth::Caller& caller, const v1::ListTasksRequest& req,
                 Reply<v1::ListTasksResponse> done);
  void CancelTask(const auth::Caller& caller, const v1::CancelTaskRequest& req,
                  Reply<v1::Task> done);
  void WaitTask(const auth::Caller& caller, const v1::WaitTaskRequest& req,
                Reply<v1::WaitTaskResponse> done);

  void SubmitWorkflow(const auth::Caller& caller, const v1::SubmitWorkflowRequest& req,
                      Reply<v1::Workflow> done);
  void SubmitMapReduce(const auth::Caller& caller, const v1::SubmitMapReduceRequest& req,
                       Reply<v1::Workflow> done);
  void GetWorkflow(const auth::Caller& caller, const v1::GetWorkflowRequest& req,
                   Reply<v1::Workflow> done);
  void ListWorkflows(const auth::Caller& caller, const v1::ListWorkflowsRequest& req,
                     Reply<v1::ListWorkflowsResponse> done);
  void CancelWorkflow(const auth::Caller& caller, const v1::CancelWorkflowRequest& req,
                      Reply<v1::Workflow> done);
  void WaitWorkflow(const auth::Caller& caller, const v1::WaitWorkflowRequest& req,
                    Reply<v1::WaitWorkflowResponse> done);

  void RegisterAgent(const auth::Caller& caller, const v1::RegisterAgentRequest& req,
                     Reply<v1::RegisterAgentResponse> done);
  void Heartbeat(const auth::Caller& caller, const v1::HeartbeatRequest& req,
                 Reply<v1::HeartbeatResponse> done);
  // The work stream: opened once the gRPC layer has registered the stream for pushes.
  void OpenStream(const auth::Caller& caller, uint64_t agent_id, Reply<bool> done);
  void CloseStream(uint64_t agent_id);
  // A pushed work item that never reached the agent: its leases go back to the queue.
  void ReturnUndelivered(uint64_t agent_id, const v1::WorkItem& item);
  void CompleteTask(const auth::Caller& caller, const v1::CompleteTaskRequest& req,
                    Reply<v1::Ack> done);
  void CompleteTasks(const auth::Caller& caller, const v1::CompleteTasksRequest& req,
                     Reply<v1::CompleteTasksResponse> done);
  void FailTask(const auth::Caller& caller, const v1::FailTaskRequest& req, Reply<v1::Ack> done);
  void Checkpoint(const auth::Caller& caller, const v1::CheckpointRequest& req,
                  Reply<v1::Ack> done);
  void ExtendLease(const auth::Caller& caller, const v1::ExtendLeaseRequest& req,
                   Reply<v1::ExtendLeaseResponse> done);
  void DeregisterAgent(const auth::Caller& caller, const v1::DeregisterAgentRequest& req,
                       Reply<v1::Ack> done);

  void Health(const auth::Caller& caller, Reply<v1::HealthResponse> done);
  void Ready(const auth::Caller& caller, Reply<v1::HealthResponse> done);
  void Stats(const auth::Caller& caller, Reply<v1::StatsResponse> done);
  void ListDeadLetters(const auth::Caller& caller, const v1::ListDeadLettersRequest& req,
                       Reply<v1::ListTasksResponse> done);
  void ReprocessDeadLetters(const auth::Caller& caller, const v1::ReprocessDeadLettersRequest& req,
                            Reply<v1::ReprocessDeadLettersResponse> done);
  void PurgeDeadLetters(const auth::Caller& caller, const v1::PurgeDeadLettersRequest& req,
                        Reply<v1::PurgeDeadLettersResponse> done);
  // Prometheus text for /metrics.
  void Metrics(const auth::Caller& caller, Reply<std::string> done);
  void SendMessage(const auth::Caller& caller, const v1::SendMessageRequest& req,
                   Reply<v1::SendMessageResponse> done);
  void GetUsage(const auth::Caller& caller, Reply<v1::UsageResponse> done);
  // Pools (none unless the config has some). Not through the engine thread.
  void SetPools(pool::PoolManager* pools) { pools_ = pools; }
  // What GetCluster answers (the servers and leases on the store), set by Server. Called on
  // the calling transport thread; it may read the database (a short admin call).
  using ClusterFn = std::function<absl::StatusOr<v1::ClusterStatus>()>;
  void SetCluster(ClusterFn fn) { cluster_ = std::move(fn); }
  void ListPools(const auth::Caller& caller, Reply<v1::ListPoolsResponse> done);
  void ApplyPool(const auth::Caller& caller, const v1::ApplyPoolRequest& req, Reply<v1::Ack> done);
  void DeletePool(const auth::Caller& caller, const v1::DeletePoolRequest& req,
                  Reply<v1::Ack> done);
  void StopPoolAgent(const auth::Caller& caller, const v1::StopPoolAgentRequest& req,
                     Reply<v1::Ack> done);
  void ListScalingDecisions(const auth::Caller& caller, const v1::ListScalingDecisionsRequest& req,
                            Reply<v1::ListScalingDecisionsResponse> done);
  // Load history (docs/history.md), read and written on the store thread.
  void GetLoadHistory(const auth::Caller& caller, const v1::GetLoadHistoryRequest& req,
                      Reply<v1::GetLoadHistoryResponse> done);
  void ImportLoadHistory(const auth::Caller& caller, const v1::ImportLoadHistoryRequest& req,
                         Reply<v1::ImportLoadHistoryResponse> done);
  void ListAgents(const auth::Caller& caller, Reply<v1::ListAgentsResponse> done);
  void GetCluster(const auth::Caller& caller, const v1::GetClusterRequest& req,
                  Reply<v1::ClusterStatus> done);

  // AuthService (service_auth.cc): tokens through the gate's registry, the audit log from
  // the store.
  void SetGate(Gate* gate) { gate_ = gate; }
  // Tenants whose task contents viewers do not see ("*": all); before serving.
  void SetHiddenPayloads(std::vector<std::string> tenants) { hidden_ = std::move(tenants); }
  void CreateToken(const auth::Caller& caller, const v1::CreateTokenRequest& req,
                   Reply<v1::CreateTokenResponse> done);
  void ListTokens(const auth::Caller& caller, const v1::ListTokensRequest& req,
                  Reply<v1::ListTokensResponse> done);
  void RevokeToken(const auth::Caller& caller, const v1::RevokeTokenRequest& req,
                   Reply<v1::Token> done);
  void WhoAmI(const auth::Caller& caller, const v1::WhoAmIRequest& req,
              Reply<v1::WhoAmIResponse> done);
  void ListAudit(const auth::Caller& caller, const v1::ListAuditRequest& req,
                 Reply<v1::ListAuditResponse> done);
  // The event log (service_events.cc, docs/events.md): a page of events, from the hub's
  // memory when it holds them, else from the store; with wait_ms, a long poll.
  void ListEvents(const auth::Caller& caller, const v1::ListEventsRequest& req,
                  Reply<v1::ListEventsResponse> done);
  void SetEventHub(obs::EventHub* hub) { events_ = hub; }
  void SetTracer(obs::OtlpExporter* tracer) { tracer_ = tracer; }
  // The dashboard's charts (service_metrics.cc): the recent samples, and taking one (the
  // server's sampler calls it every series step).
  void GetStatsSeries(const auth::Caller& caller, const v1::StatsSeriesRequest& req,
                      Reply<v1::StatsSeriesResponse> done);
  void SampleStats();
  void SetStatsSeries(obs::StatsSeries* series) { series_ = series; }

 private:
  // Writes the pools defined through the API to the store meta, then answers.
  void StorePools(Reply<v1::Ack> done);

  // The tenant a list is narrowed to: the one named (the gate checked it), none for a
  // caller on "*", the caller's only tenant with `perm`, or InvalidArgument when it has
  // several and named none.
  static absl::StatusOr<std::string> NarrowTenant(const auth::Caller& caller, auth::Perm perm,
                                                  const std::string& named);
  // Agent calls: the agent must be one this principal registered. Any thread (the work
  // stream is checked on the gRPC thread before it is registered for pushes).
 public:
  absl::Status CheckAgentOwner(const auth::Caller& caller, uint64_t agent_id) const;

 private:
  static std::string OwnerKey(const auth::Caller& caller);
  // Leaves a task's payload, result and checkpoint out for a viewer of a hidden tenant.
  void Redact(const auth::Caller& caller, v1::Task* task) const;
  bool Redacts() const { return !hidden_.empty(); }
  // `done`, redacting the task(s) of its answer for `caller` (Task, WaitTaskResponse or
  // ListTasksResponse); `done` itself when nothing is hidden.
  template <typename T>
  Reply<T> Redacting(const auth::Caller& caller, Reply<T> done) const;

  Runtime& runtime_;
  store::Store& store_;
  obs::EventHub* events_ = nullptr;
  obs::OtlpExporter* tracer_ = nullptr;
  obs::StatsSeries* series_ = nullptr;
  // Which principal (token id) registered each agent; written on the engine thread.
  mutable std::mutex owners_mu_;
  absl::flat_hash_map<uint64_t, std::string> agent_owners_;
  absl::Time started_;
  pool::PoolManager* pools_ = nullptr;
  Gate* gate_ = nullptr;
  std::vector<std::string> hidden_;
  ClusterFn cluster_;
};

}  // namespace drover::api
