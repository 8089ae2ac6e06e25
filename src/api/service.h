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
#include <string>

#include "absl/status/statusor.h"
#include "api/runtime.h"
#include "drover/v1/drover.pb.h"
#include "pool/pool_manager.h"
#include "store/store.h"

namespace drover::api {

template <typename T>
using Reply = std::function<void(absl::StatusOr<T>)>;

class Service {
 public:
  Service(Runtime& runtime, store::Store& store, absl::Time started)
      : runtime_(runtime), store_(store), started_(started) {}

  void SubmitTask(const v1::SubmitTaskRequest& req, Reply<v1::SubmitTaskResponse> done);
  void SubmitTasks(const v1::SubmitTasksRequest& req, Reply<v1::SubmitTasksResponse> done);
  void GetTask(const v1::GetTaskRequest& req, Reply<v1::Task> done);
  void ListTasks(const v1::ListTasksRequest& req, Reply<v1::ListTasksResponse> done);
  void CancelTask(const v1::CancelTaskRequest& req, Reply<v1::Task> done);
  void WaitTask(const v1::WaitTaskRequest& req, Reply<v1::WaitTaskResponse> done);

  void SubmitWorkflow(const v1::SubmitWorkflowRequest& req, Reply<v1::Workflow> done);
  void SubmitMapReduce(const v1::SubmitMapReduceRequest& req, Reply<v1::Workflow> done);
  void GetWorkflow(const v1::GetWorkflowRequest& req, Reply<v1::Workflow> done);
  void ListWorkflows(const v1::ListWorkflowsRequest& req, Reply<v1::ListWorkflowsResponse> done);
  void CancelWorkflow(const v1::CancelWorkflowRequest& req, Reply<v1::Workflow> done);
  void WaitWorkflow(const v1::WaitWorkflowRequest& req, Reply<v1::WaitWorkflowResponse> done);

  void RegisterAgent(const v1::RegisterAgentRequest& req, Reply<v1::RegisterAgentResponse> done);
  void Heartbeat(const v1::HeartbeatRequest& req, Reply<v1::HeartbeatResponse> done);
  // The work stream: opened once the gRPC layer has registered the stream for pushes.
  void OpenStream(uint64_t agent_id, Reply<bool> done);
  void CloseStream(uint64_t agent_id);
  // A pushed work item that never reached the agent: its leases go back to the queue.
  void ReturnUndelivered(uint64_t agent_id, const v1::WorkItem& item);
  void CompleteTask(const v1::CompleteTaskRequest& req, Reply<v1::Ack> done);
  void CompleteTasks(const v1::CompleteTasksRequest& req, Reply<v1::CompleteTasksResponse> done);
  void FailTask(const v1::FailTaskRequest& req, Reply<v1::Ack> done);
  void Checkpoint(const v1::CheckpointRequest& req, Reply<v1::Ack> done);
  void ExtendLease(const v1::ExtendLeaseRequest& req, Reply<v1::ExtendLeaseResponse> done);
  void DeregisterAgent(const v1::DeregisterAgentRequest& req, Reply<v1::Ack> done);

  void Health(Reply<v1::HealthResponse> done);
  void Ready(Reply<v1::HealthResponse> done);
  void Stats(Reply<v1::StatsResponse> done);
  void ListDeadLetters(const v1::ListDeadLettersRequest& req, Reply<v1::ListTasksResponse> done);
  void ReprocessDeadLetters(const v1::ReprocessDeadLettersRequest& req,
                            Reply<v1::ReprocessDeadLettersResponse> done);
  void PurgeDeadLetters(const v1::PurgeDeadLettersRequest& req,
                        Reply<v1::PurgeDeadLettersResponse> done);
  // Prometheus text for /metrics.
  void Metrics(Reply<std::string> done);
  void SendMessage(const v1::SendMessageRequest& req, Reply<v1::SendMessageResponse> done);
  void GetUsage(Reply<v1::UsageResponse> done);
  // Pools (none unless the config has some). Not through the engine thread.
  void SetPools(pool::PoolManager* pools) { pools_ = pools; }
  // What GetCluster answers (the servers and leases on the store), set by Server. Called on
  // the calling transport thread; it may read the database (a short admin call).
  using ClusterFn = std::function<absl::StatusOr<v1::ClusterStatus>()>;
  void SetCluster(ClusterFn fn) { cluster_ = std::move(fn); }
  void ListPools(Reply<v1::ListPoolsResponse> done);
  void ApplyPool(const v1::ApplyPoolRequest& req, Reply<v1::Ack> done);
  void DeletePool(const v1::DeletePoolRequest& req, Reply<v1::Ack> done);
  void StopPoolAgent(const v1::StopPoolAgentRequest& req, Reply<v1::Ack> done);
  void ListScalingDecisions(const v1::ListScalingDecisionsRequest& req,
                            Reply<v1::ListScalingDecisionsResponse> done);
  // Load history (docs/history.md), read and written on the store thread.
  void GetLoadHistory(const v1::GetLoadHistoryRequest& req, Reply<v1::GetLoadHistoryResponse> done);
  void ImportLoadHistory(const v1::ImportLoadHistoryRequest& req,
                         Reply<v1::ImportLoadHistoryResponse> done);
  void ListAgents(Reply<v1::ListAgentsResponse> done);
  void GetCluster(const v1::GetClusterRequest& req, Reply<v1::ClusterStatus> done);

 private:
  // Writes the pools defined through the API to the store meta, then answers.
  void StorePools(Reply<v1::Ack> done);

  Runtime& runtime_;
  store::Store& store_;
  absl::Time started_;
  pool::PoolManager* pools_ = nullptr;
  ClusterFn cluster_;
};

}  // namespace drover::api
