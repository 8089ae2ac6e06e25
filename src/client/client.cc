#include "client/client.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "grpcpp/grpcpp.h"
#include "util/file.h"

namespace drover::client {
namespace {

constexpr char kRetryAfterPayload[] = "drover.retry_after_ms";

absl::Status Convert(const grpc::Status& st, const grpc::ClientContext& ctx) {
  if (st.ok()) return absl::OkStatus();
  absl::Status out(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
  const auto& md = ctx.GetServerTrailingMetadata();
  auto it = md.find("retry-after-ms");
  if (it != md.end()) {
    out.SetPayload(kRetryAfterPayload,
                   absl::Cord(std::string(it->second.data(), it->second.size())));
  }
  return out;
}

}  // namespace

std::string ChannelTarget(const std::string& address) {
  if (address.find(',') == std::string::npos) return address;
  // Several servers: one channel over all of them (pick_first: the first that accepts a
  // connection; a standby does not listen until it owns the work).
  std::vector<std::string> parts;
  for (absl::string_view a : absl::StrSplit(address, ',', absl::SkipWhitespace())) {
    std::string one(absl::StripAsciiWhitespace(a));
    if (absl::StartsWith(one, "localhost:")) one = "127.0.0.1:" + one.substr(10);
    parts.push_back(one);
  }
  return absl::StrCat("ipv4:", absl::StrJoin(parts, ","));
}

int64_t RetryAfterMs(const absl::Status& st) {
  auto p = st.GetPayload(kRetryAfterPayload);
  int64_t ms = 0;
  if (p && absl::SimpleAtoi(std::string(*p), &ms)) return ms;
  return 0;
}

std::unique_ptr<Client> Client::Connect(const std::string& address, ClientOptions options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10'000);
  // Reconnect quickly after a server restart.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  const bool several = address.find(',') != std::string::npos;
  // Calls that fail with UNAVAILABLE (a server restarting, or dying mid-call) are sent
  // again, up to 5 attempts. Every drover call is safe to repeat: reads, submissions with
  // an idempotency key (the CLI always sets one), completions carry their lease token.
  // With several servers a call also waits for one to be reachable (failover) instead of
  // failing at once, up to its deadline.
  args.SetServiceConfigJSON(absl::StrCat(
      R"({"methodConfig": [{"name": [{}], "waitForReady": )", several ? "true" : "false",
      R"(, "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.1s", "maxBackoff": "1s",)",
      R"( "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]})"));
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  const std::optional<ClientOptions::Tls> tls = options.tls.has_value() ? options.tls : FindTls();
  if (tls.has_value() && !tls->ca_file.empty()) {
    // Unreadable files make every call fail (UNAVAILABLE, the handshake), with this said first.
    grpc::SslCredentialsOptions ssl;
    auto read = [](const std::string& path, const char* what) {
      if (path.empty()) return std::string();
      std::optional<std::string> text = ReadWholeFile(path);
      if (!text) std::fprintf(stderr, "drover: %s %s: cannot read it\n", what, path.c_str());
      return text.value_or("");
    };
    ssl.pem_root_certs = read(tls->ca_file, "CA file");
    ssl.pem_cert_chain = read(tls->cert_file, "certificate file");
    ssl.pem_private_key = read(tls->key_file, "key file");
    creds = grpc::SslCredentials(ssl);
    if (!tls->server_name.empty()) args.SetSslTargetNameOverride(tls->server_name);
  }
  if (!(tls.has_value() && !tls->ca_file.empty()) && options.token.has_value() &&
      !options.token->empty() && !AllLoopback(address)) {
    std::fprintf(stderr,
                 "drover: warning: sending a token in plaintext to %s (give --ca-file for TLS)\n",
                 address.c_str());
  }
  auto channel = grpc::CreateCustomChannel(ChannelTarget(address), creds, args);
  if (!options.token.has_value()) {
    // A token file that cannot be read is reported by the first call (UNAUTHENTICATED).
    // The local admin token file (./drover-data) is only offered to a server on loopback.
    absl::StatusOr<std::string> found = FindToken(AllLoopback(address));
    options.token = found.ok() ? *found : std::string();
    if (!found.ok())
      std::fprintf(stderr, "drover: %s\n", std::string(found.status().message()).c_str());
  }
  return std::unique_ptr<Client>(new Client(std::move(channel), options));
}

Client::Client(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : channel_(std::move(channel)),
      options_(options),
      tasks_(v1::TaskService::NewStub(channel_)),
      workflows_(v1::WorkflowService::NewStub(channel_)),
      agents_(v1::AgentService::NewStub(channel_)),
      admin_(v1::AdminService::NewStub(channel_)),
      auth_(v1::AuthService::NewStub(channel_)) {
  if (options_.token.has_value() && !options_.token->empty()) {
    authorization_ = "Bearer " + *options_.token;
  }
  if (options_.traceparent.has_value()) {
    traceparent_ = *options_.traceparent;
  } else if (const char* tp = std::getenv("TRACEPARENT"); tp != nullptr) {
    traceparent_ = tp;
  }
  // Metadata takes printable ASCII only; the server ignores a malformed value anyway.
  if (traceparent_.size() > 256 || !std::all_of(traceparent_.begin(), traceparent_.end(),
                                                [](char c) { return c >= 0x20 && c < 0x7f; })) {
    traceparent_.clear();
  }
}

void Client::Prepare(grpc::ClientContext& ctx, absl::Duration timeout) const {
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  if (!authorization_.empty()) ctx.AddMetadata("authorization", authorization_);
  if (!traceparent_.empty()) ctx.AddMetadata("traceparent", traceparent_);
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("token file ", path, ": cannot read it (", std::strerror(errno), ")"));
  }
  std::string line;
  std::getline(in, line);
  return std::string(absl::StripAsciiWhitespace(line));
}

std::optional<ClientOptions::Tls> FindTls() {
  auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v == nullptr ? "" : v);
  };
  ClientOptions::Tls tls;
  tls.ca_file = env("DROVER_CA_FILE");
  if (tls.ca_file.empty()) return std::nullopt;
  tls.cert_file = env("DROVER_CERT_FILE");
  tls.key_file = env("DROVER_KEY_FILE");
  tls.server_name = env("DROVER_TLS_SERVER_NAME");
  return tls;
}

bool AllLoopback(const std::string& address) {
  for (absl::string_view a : absl::StrSplit(address, ',')) {
    std::string host(a.substr(0, a.rfind(':')));
    if (host.size() >= 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
    if (!(host == "localhost" || host == "::1" || absl::StartsWith(host, "127."))) return false;
  }
  return true;
}

absl::StatusOr<std::string> FindToken(bool local_file) {
  if (const char* t = std::getenv("DROVER_TOKEN"); t != nullptr && *t != '\0') {
    return std::string(absl::StripAsciiWhitespace(t));
  }
  if (const char* f = std::getenv("DROVER_TOKEN_FILE"); f != nullptr && *f != '\0') {
    return ReadTokenFile(f);
  }
  if (::access("drover-data/admin.token", R_OK) == 0)
    return ReadTokenFile("drover-data/admin.token");
  return std::string();
}

absl::Status Client::WaitForServer(absl::Duration timeout) {
  if (channel_->WaitForConnected(absl::ToChronoTime(absl::Now() + timeout))) {
    return absl::OkStatus();
  }
  return absl::UnavailableError(
      absl::StrCat("no drover server answered within ", absl::FormatDuration(timeout)));
}

// One unary call: a context with the deadline, the stub method, the status conversion.
#define DROVER_CALL(stub, method, req, resp, timeout) \
  grpc::ClientContext ctx;                            \
  Prepare(ctx, timeout);                              \
  grpc::Status gst = stub->method(&ctx, req, &resp);  \
  absl::Status st = Convert(gst, ctx)

absl::StatusOr<v1::SubmitTaskResponse> Client::Submit(const v1::TaskSpec& spec) {
  v1::SubmitTaskRequest req;
  *req.mutable_task() = spec;
  v1::SubmitTaskResponse resp;
  DROVER_CALL(tasks_, SubmitTask, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::SubmitTasksResponse> Client::SubmitBatch(
    const std::vector<v1::TaskSpec>& specs) {
  v1::SubmitTasksRequest req;
  for (const auto& s : specs) *req.add_tasks() = s;
  v1::SubmitTasksResponse resp;
  DROVER_CALL(tasks_, SubmitTasks, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::Task> Client::Get(uint64_t id) {
  v1::GetTaskRequest req;
  req.set_id(id);
  v1::Task resp;
  DROVER_CALL(tasks_, GetTask, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::ListTasksResponse> Client::List(const v1::ListTasksRequest& req) {
  v1::ListTasksResponse resp;
  DROVER_CALL(tasks_, ListTasks, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::Task> Client::Cancel(uint64_t id, const std::string& reason) {
  v1::CancelTaskRequest req;
  req.set_id(id);
  req.set_reason(reason);
  v1::Task resp;
  DROVER_CALL(tasks_, CancelTask, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::WaitTaskResponse> Client::Wait(uint64_t id, absl::Duration timeout) {
  v1::WaitTaskRequest req;
  req.set_id(id);
  req.set_timeout_ms(absl::ToInt64Milliseconds(timeout));
  v1::WaitTaskResponse resp;
  DROVER_CALL(tasks_, WaitTask, req, resp, timeout + absl::Seconds(10));
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::Workflow> Client::SubmitWorkflow(const v1::WorkflowSpec& spec) {
  v1::SubmitWorkflowRequest req;
  *req.mutable_workflow() = spec;
  v1::Workflow resp;
  DROVER_CALL(workflows_, SubmitWorkflow, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::Workflow> Client::SubmitMapReduce(const v1::MapReduceSpec& job) {
  v1::SubmitMapReduceRequest req;
  *req.mutable_job() = job;
  v1::Workflow resp;
  DROVER_CALL(workflows_, SubmitMapReduce, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::Workflow> Client::GetWorkflow(uint64_t id) {
  v1::GetWorkflowRequest req;
  req.set_id(id);
  v1::Workflow resp;
  DROVER_CALL(workflows_, GetWorkflow, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::ListWorkflowsResponse> Client::ListWorkflows(
    const v1::ListWorkflowsRequest& req) {
  v1::ListWorkflowsResponse resp;
  DROVER_CALL(workflows_, ListWorkflows, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::Workflow> Client::CancelWorkflow(uint64_t id, const std::string& reason) {
  v1::CancelWorkflowRequest req;
  req.set_id(id);
  req.set_reason(reason);
  v1::Workflow resp;
  DROVER_CALL(workflows_, CancelWorkflow, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::WaitWorkflowResponse> Client::WaitWorkflow(uint64_t id, absl::Duration timeout) {
  v1::WaitWorkflowRequest req;
  req.set_id(id);
  req.set_timeout_ms(absl::ToInt64Milliseconds(timeout));
  v1::WaitWorkflowResponse resp;
  DROVER_CALL(workflows_, WaitWorkflow, req, resp, timeout + absl::Seconds(10));
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::RegisterAgentResponse> Client::Register(const v1::RegisterAgentRequest& req) {
  v1::RegisterAgentResponse resp;
  DROVER_CALL(agents_, RegisterAgent, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::Status Client::Heartbeat(uint64_t agent_id) {
  v1::HeartbeatRequest req;
  req.set_agent_id(agent_id);
  v1::HeartbeatResponse resp;
  DROVER_CALL(agents_, Heartbeat, req, resp, options_.timeout);
  return st;
}

absl::Status Client::Complete(uint64_t agent_id, uint64_t task_id, uint64_t token,
                              const std::string& result, bool json) {
  v1::CompleteTaskRequest req;
  req.set_agent_id(agent_id);
  req.set_task_id(task_id);
  req.set_lease_token(token);
  req.set_result(result);
  req.set_result_json(json);
  v1::Ack resp;
  DROVER_CALL(agents_, CompleteTask, req, resp, options_.timeout);
  return st;
}

absl::StatusOr<v1::CompleteTasksResponse> Client::CompleteBatch(
    const v1::CompleteTasksRequest& req) {
  v1::CompleteTasksResponse resp;
  DROVER_CALL(agents_, CompleteTasks, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::Status Client::Fail(uint64_t agent_id, uint64_t task_id, uint64_t token,
                          const std::string& error, bool retryable) {
  v1::FailTaskRequest req;
  req.set_agent_id(agent_id);
  req.set_task_id(task_id);
  req.set_lease_token(token);
  req.set_error(error);
  req.set_retryable(retryable);
  v1::Ack resp;
  DROVER_CALL(agents_, FailTask, req, resp, options_.timeout);
  return st;
}

absl::Status Client::Checkpoint(uint64_t agent_id, uint64_t task_id, uint64_t token,
                                const std::string& data, bool json) {
  v1::CheckpointRequest req;
  req.set_agent_id(agent_id);
  req.set_task_id(task_id);
  req.set_lease_token(token);
  req.set_checkpoint(data);
  req.set_checkpoint_json(json);
  v1::Ack resp;
  DROVER_CALL(agents_, Checkpoint, req, resp, options_.timeout);
  return st;
}

absl::StatusOr<int64_t> Client::ExtendLease(uint64_t agent_id, uint64_t task_id, uint64_t token) {
  v1::ExtendLeaseRequest req;
  req.set_agent_id(agent_id);
  req.set_task_id(task_id);
  req.set_lease_token(token);
  v1::ExtendLeaseResponse resp;
  DROVER_CALL(agents_, ExtendLease, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp.lease_expires_unix_ms();
}

absl::Status Client::Deregister(uint64_t agent_id) {
  v1::DeregisterAgentRequest req;
  req.set_agent_id(agent_id);
  v1::Ack resp;
  DROVER_CALL(agents_, DeregisterAgent, req, resp, options_.timeout);
  return st;
}

std::unique_ptr<Client::WorkStream> Client::OpenWorkStream(uint64_t agent_id) {
  auto ws = std::unique_ptr<WorkStream>(new WorkStream());
  v1::OpenWorkStreamRequest req;
  req.set_agent_id(agent_id);
  if (!authorization_.empty()) ws->ctx_.AddMetadata("authorization", authorization_);
  ws->reader_ = agents_->OpenWorkStream(&ws->ctx_, req);
  return ws;
}

bool Client::WorkStream::Read(v1::WorkItem* item) {
  while (true) {
    if (next_ < pending_.leases_size()) {
      *item->mutable_lease() = std::move(*pending_.mutable_leases(next_++));
      return true;
    }
    if (!reader_->Read(item)) return false;
    if (!item->has_leases()) return true;
    pending_ = std::move(*item->mutable_leases());
    next_ = 0;
  }
}

absl::Status Client::WorkStream::Finish() { return Convert(reader_->Finish(), ctx_); }

absl::StatusOr<v1::HealthResponse> Client::Ready() {
  v1::HealthRequest req;
  v1::HealthResponse resp;
  DROVER_CALL(admin_, Ready, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::StatsResponse> Client::Stats() {
  v1::StatsRequest req;
  v1::StatsResponse resp;
  DROVER_CALL(admin_, Stats, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::ListTasksResponse> Client::ListDeadLetters(
    const v1::ListDeadLettersRequest& req) {
  v1::ListTasksResponse resp;
  DROVER_CALL(admin_, ListDeadLetters, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::ReprocessDeadLettersResponse> Client::Reprocess(
    const v1::ReprocessDeadLettersRequest& req) {
  v1::ReprocessDeadLettersResponse resp;
  DROVER_CALL(admin_, ReprocessDeadLetters, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::SendMessageResponse> Client::SendMessage(const v1::SendMessageRequest& req) {
  v1::SendMessageResponse resp;
  DROVER_CALL(admin_, SendMessage, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::UsageResponse> Client::GetUsage() {
  v1::UsageRequest req;
  v1::UsageResponse resp;
  DROVER_CALL(admin_, GetUsage, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::ListAgentsResponse> Client::ListAgents() {
  v1::ListAgentsRequest req;
  v1::ListAgentsResponse resp;
  DROVER_CALL(admin_, ListAgents, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::ClusterStatus> Client::GetCluster() {
  v1::GetClusterRequest req;
  v1::ClusterStatus resp;
  DROVER_CALL(admin_, GetCluster, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::ListEventsResponse> Client::ListEvents(const v1::ListEventsRequest& req) {
  v1::ListEventsResponse resp;
  DROVER_CALL(admin_, ListEvents, req, resp, options_.timeout + absl::Milliseconds(req.wait_ms()));
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::ListPoolsResponse> Client::ListPools() {
  v1::ListPoolsRequest req;
  v1::ListPoolsResponse resp;
  DROVER_CALL(admin_, ListPools, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::Status Client::ApplyPool(const v1::ApplyPoolRequest& req) {
  v1::Ack resp;
  DROVER_CALL(admin_, ApplyPool, req, resp, options_.timeout);
  return st;
}

absl::Status Client::StopPoolAgent(const v1::StopPoolAgentRequest& req) {
  v1::Ack resp;
  DROVER_CALL(admin_, StopPoolAgent, req, resp, options_.timeout);
  return st;
}

absl::Status Client::DeletePool(const v1::DeletePoolRequest& req) {
  v1::Ack resp;
  DROVER_CALL(admin_, DeletePool, req, resp, options_.timeout);
  return st;
}

absl::StatusOr<v1::ListScalingDecisionsResponse> Client::ListScalingDecisions(
    const v1::ListScalingDecisionsRequest& req) {
  v1::ListScalingDecisionsResponse resp;
  DROVER_CALL(admin_, ListScalingDecisions, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::PurgeDeadLettersResponse> Client::Purge(const v1::PurgeDeadLettersRequest& req) {
  v1::PurgeDeadLettersResponse resp;
  DROVER_CALL(admin_, PurgeDeadLetters, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::GetLoadHistoryResponse> Client::GetLoadHistory(
    const v1::GetLoadHistoryRequest& req) {
  v1::GetLoadHistoryResponse resp;
  DROVER_CALL(admin_, GetLoadHistory, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::ImportLoadHistoryResponse> Client::ImportLoadHistory(
    const v1::ImportLoadHistoryRequest& req) {
  v1::ImportLoadHistoryResponse resp;
  DROVER_CALL(admin_, ImportLoadHistory, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::CreateTokenResponse> Client::CreateToken(const v1::CreateTokenRequest& req) {
  v1::CreateTokenResponse resp;
  DROVER_CALL(auth_, CreateToken, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::ListTokensResponse> Client::ListTokens() {
  v1::ListTokensResponse resp;
  DROVER_CALL(auth_, ListTokens, v1::ListTokensRequest(), resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::Token> Client::RevokeToken(const std::string& id_or_name) {
  v1::RevokeTokenRequest req;
  req.set_id(id_or_name);
  v1::Token resp;
  DROVER_CALL(auth_, RevokeToken, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::WhoAmIResponse> Client::WhoAmI() {
  v1::WhoAmIResponse resp;
  DROVER_CALL(auth_, WhoAmI, v1::WhoAmIRequest(), resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

absl::StatusOr<v1::ListAuditResponse> Client::ListAudit(const v1::ListAuditRequest& req) {
  v1::ListAuditResponse resp;
  DROVER_CALL(auth_, ListAudit, req, resp, options_.timeout);
  if (!st.ok()) return st;
  return resp;
}

#undef DROVER_CALL

}  // namespace drover::client
