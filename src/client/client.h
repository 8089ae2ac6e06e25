// client: the C++ client of drover's gRPC API, used by the CLI, the agent runner and the
// benchmarks. Each call is synchronous and returns absl::Status / StatusOr with the
// server's code and message.
//
// Threading: thread-safe (gRPC stubs are); one Client may serve many threads.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "drover/v1/drover.grpc.pb.h"

namespace drover::client {

namespace v1 = ::drover::v1;

struct ClientOptions {
  absl::Duration timeout = absl::Seconds(30);  // per unary call
  // The API token sent as "authorization: Bearer ..." on every call. Unset: FindToken().
  // Empty: none.
  std::optional<std::string> token;
  // TLS: unset, FindTls() decides. A `ca_file` turns TLS on; `cert_file` and `key_file`
  // present a client certificate (mTLS); `server_name` is the name the server's certificate
  // must carry when it differs from the address.
  struct Tls {
    std::string ca_file, cert_file, key_file, server_name;
  };
  std::optional<Tls> tls;
  // W3C trace context sent as "traceparent" metadata on every call, so submitted tasks
  // join the caller's trace (docs/tracing.md). Unset: $TRACEPARENT (a `drover agent`
  // command that submits tasks links them to its own attempt). Empty: none.
  std::optional<std::string> traceparent;
};

// TLS settings from $DROVER_CA_FILE, $DROVER_CERT_FILE, $DROVER_KEY_FILE and
// $DROVER_TLS_SERVER_NAME; nullopt (plaintext) without a CA file.
std::optional<ClientOptions::Tls> FindTls();

// The token a client uses when none is given (docs/security.md#tokens), first found of:
// $DROVER_TOKEN; the file $DROVER_TOKEN_FILE; with `local_file`, ./drover-data/admin.token
// (what a local `drover serve` writes at its first start; Connect offers it to loopback
// servers only). "" when none is found. An unreadable $DROVER_TOKEN_FILE is an error naming it.
absl::StatusOr<std::string> FindToken(bool local_file = true);
// Whether every address of a list ("a:1,b:2") is loopback (127.0.0.0/8, ::1, localhost).
bool AllLoopback(const std::string& address);
// The first line of `path` without surrounding whitespace; the error names the path.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

class Client {
 public:
  // Creates a channel to "host:port", or to several servers "ip:port,ip:port" (IPv4
  // literals or localhost): calls go to the first that accepts connections and move to the
  // next when it fails. Connection is lazy; the first call connects.
  static std::unique_ptr<Client> Connect(const std::string& address, ClientOptions options = {});

  // Waits until the channel is connected, up to `timeout`.
  absl::Status WaitForServer(absl::Duration timeout);

  absl::StatusOr<v1::SubmitTaskResponse> Submit(const v1::TaskSpec& spec);
  absl::StatusOr<v1::SubmitTasksResponse> SubmitBatch(const std::vector<v1::TaskSpec>& specs);
  absl::StatusOr<v1::Task> Get(uint64_t id);
  absl::StatusOr<v1::ListTasksResponse> List(const v1::ListTasksRequest& req);
  absl::StatusOr<v1::Task> Cancel(uint64_t id, const std::string& reason);
  absl::StatusOr<v1::WaitTaskResponse> Wait(uint64_t id, absl::Duration timeout);

  absl::StatusOr<v1::Workflow> SubmitWorkflow(const v1::WorkflowSpec& spec);
  absl::StatusOr<v1::Workflow> SubmitMapReduce(const v1::MapReduceSpec& job);
  absl::StatusOr<v1::Workflow> GetWorkflow(uint64_t id);
  absl::StatusOr<v1::ListWorkflowsResponse> ListWorkflows(const v1::ListWorkflowsRequest& req);
  absl::StatusOr<v1::Workflow> CancelWorkflow(uint64_t id, const std::string& reason);
  absl::StatusOr<v1::WaitWorkflowResponse> WaitWorkflow(uint64_t id, absl::Duration timeout);

  absl::StatusOr<v1::RegisterAgentResponse> Register(const v1::RegisterAgentRequest& req);
  absl::Status Heartbeat(uint64_t agent_id);
  // `json`: the result (checkpoint) is JSON text (docs/payloads.md).
  absl::Status Complete(uint64_t agent_id, uint64_t task_id, uint64_t token,
                        const std::string& result, bool json = false);
  absl::StatusOr<v1::CompleteTasksResponse> CompleteBatch(const v1::CompleteTasksRequest& req);
  absl::Status Fail(uint64_t agent_id, uint64_t task_id, uint64_t token, const std::string& error,
                    bool retryable);
  absl::Status Checkpoint(uint64_t agent_id, uint64_t task_id, uint64_t token,
                          const std::string& data, bool json = false);
  absl::StatusOr<int64_t> ExtendLease(uint64_t agent_id, uint64_t task_id, uint64_t token);
  absl::Status Deregister(uint64_t agent_id);

  // An open work stream; Read() blocks for the next item (a lease or a cancel notice:
  // lease batches from the server are unpacked here), false when the stream ends (then
  // Finish() tells why). Cancel() from another thread unblocks Read().
  class WorkStream {
   public:
    bool Read(v1::WorkItem* item);
    absl::Status Finish();
    void Cancel() { ctx_.TryCancel(); }

   private:
    friend class Client;
    grpc::ClientContext ctx_;
    std::unique_ptr<grpc::ClientReader<v1::WorkItem>> reader_;
    v1::LeaseBatch pending_;
    int next_ = 0;
  };
  std::unique_ptr<WorkStream> OpenWorkStream(uint64_t agent_id);

  absl::StatusOr<v1::HealthResponse> Ready();
  absl::StatusOr<v1::StatsResponse> Stats();
  absl::StatusOr<v1::ListTasksResponse> ListDeadLetters(const v1::ListDeadLettersRequest& req);
  absl::StatusOr<v1::ReprocessDeadLettersResponse> Reprocess(
      const v1::ReprocessDeadLettersRequest& req);
  absl::StatusOr<v1::PurgeDeadLettersResponse> Purge(const v1::PurgeDeadLettersRequest& req);
  absl::StatusOr<v1::SendMessageResponse> SendMessage(const v1::SendMessageRequest& req);
  absl::StatusOr<v1::UsageResponse> GetUsage();
  absl::StatusOr<v1::ListAgentsResponse> ListAgents();
  absl::StatusOr<v1::ClusterStatus> GetCluster();
  // A page of the event log; with wait_ms a long poll (the deadline allows for it).
  absl::StatusOr<v1::ListEventsResponse> ListEvents(const v1::ListEventsRequest& req);
  absl::StatusOr<v1::ListPoolsResponse> ListPools();
  absl::Status ApplyPool(const v1::ApplyPoolRequest& req);
  absl::Status DeletePool(const v1::DeletePoolRequest& req);
  absl::Status StopPoolAgent(const v1::StopPoolAgentRequest& req);
  absl::StatusOr<v1::ListScalingDecisionsResponse> ListScalingDecisions(
      const v1::ListScalingDecisionsRequest& req);
  absl::StatusOr<v1::GetLoadHistoryResponse> GetLoadHistory(const v1::GetLoadHistoryRequest& req);
  absl::StatusOr<v1::ImportLoadHistoryResponse> ImportLoadHistory(
      const v1::ImportLoadHistoryRequest& req);

  absl::StatusOr<v1::CreateTokenResponse> CreateToken(const v1::CreateTokenRequest& req);
  absl::StatusOr<v1::ListTokensResponse> ListTokens();
  absl::StatusOr<v1::Token> RevokeToken(const std::string& id_or_name);
  absl::StatusOr<v1::WhoAmIResponse> WhoAmI();
  absl::StatusOr<v1::ListAuditResponse> ListAudit(const v1::ListAuditRequest& req);

 private:
  Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options);
  void Prepare(grpc::ClientContext& ctx, absl::Duration timeout) const;

  std::shared_ptr<grpc::Channel> channel_;
  ClientOptions options_;
  std::unique_ptr<v1::TaskService::Stub> tasks_;
  std::unique_ptr<v1::WorkflowService::Stub> workflows_;
  std::unique_ptr<v1::AgentService::Stub> agents_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
  std::unique_ptr<v1::AuthService::Stub> auth_;
  std::string authorization_;  // "Bearer <token>", or "" for none
  std::string traceparent_;    // "" for none
};

// The retry-after hint (ms) the server attached to a RESOURCE_EXHAUSTED answer, if any;
// kept in the status payload under "drover.retry_after_ms".
// The gRPC target for an address list ("a:1,b:2" -> "ipv4:a:1,b:2"; one address as is).
std::string ChannelTarget(const std::string& address);

int64_t RetryAfterMs(const absl::Status& st);

}  // namespace drover::client
