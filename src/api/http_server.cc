#include "api/http_server.h"

#include <future>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "api/status_map.h"
#include "core/engine.h"
#include "google/protobuf/util/json_util.h"
#include "httplib.h"

namespace drover::api {
namespace {

namespace pb = google::protobuf;

std::string StatusCodeName(absl::StatusCode code) {
  return absl::AsciiStrToUpper(absl::StatusCodeToString(code));
}

std::string JsonEscape(absl::string_view in) {
  std::string out;
  for (unsigned char c : in) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20) {
          absl::StrAppend(&out, "\\u00", absl::Hex(c, absl::kZeroPad2));
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

void WriteError(httplib::Response& res, const absl::Status& st) {
  res.status = HttpCode(st.code());
  if (auto ms = RetryAfterMs(st)) {
    res.set_header("Retry-After", std::to_string((*ms + 999) / 1000));
  }
  // Written by hand: protobuf's printer escapes '<' and '>', which hurts messages like
  // "must be >= 0".
  std::string json = absl::StrCat("{\"error\":{\"code\":\"", StatusCodeName(st.code()),
                                  "\",\"message\":\"", JsonEscape(st.message()), "\"}}");
  res.set_content(json + "\n", "application/json");
}

void WriteMessage(httplib::Response& res, const pb::Message& msg) {
  std::string json;
  pb::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  auto st = pb::util::MessageToJsonString(msg, &json, opts);
  if (!st.ok()) {
    WriteError(res, absl::InternalError(absl::StrCat("encoding the answer: ", st.ToString())));
    return;
  }
  res.set_content(json + "\n", "application/json");
}

// Parses the body into `msg`; an empty body is an empty message.
absl::Status ParseBody(const httplib::Request& req, pb::Message* msg) {
  if (req.body.empty()) return absl::OkStatus();
  pb::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = false;
  auto st = pb::util::JsonStringToMessage(req.body, msg, opts);
  if (!st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("body: ", st.message().as_string()));
  }
  return absl::OkStatus();
}

// Waits for a Service answer; handlers run on httplib's pool, so blocking is fine here.
template <typename T>
absl::StatusOr<T> Await(const std::function<void(Reply<T>)>& call) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<T>>>();
  auto future = promise->get_future();
  call([promise](absl::StatusOr<T> r) { promise->set_value(std::move(r)); });
  return future.get();
}

template <typename T>
void Answer(httplib::Response& res, const absl::StatusOr<T>& r) {
  if (!r.ok()) {
    WriteError(res, r.status());
  } else {
    WriteMessage(res, *r);
  }
}

absl::StatusOr<uint64_t> PathId(const httplib::Request& req) {
  uint64_t id = 0;
  if (!absl::SimpleAtoi(req.matches[1].str(), &id)) {
    return absl::InvalidArgumentError("id: not a task id");
  }
  return id;
}

// Accepts "ready", "READY" or "TASK_STATE_READY".
template <typename Enum>
absl::Status ParseEnumParam(const httplib::Request& req, const std::string& key,
                            const std::string& prefix, bool (*parse)(const std::string&, Enum*),
                            Enum* out) {
  if (!req.has_param(key.c_str())) return absl::OkStatus();
  std::string v = absl::AsciiStrToUpper(req.get_param_value(key.c_str()));
  if (v.rfind(prefix, 0) != 0) v = prefix + v;
  if (!parse(v, out)) {
    return absl::InvalidArgumentError(
        absl::StrCat(key, ": unknown value '", req.get_param_value(key.c_str()), "'"));
  }
  return absl::OkStatus();
}

absl::Status ParseIntParam(const httplib::Request& req, const std::string& key, int64_t* out) {
  if (!req.has_param(key.c_str())) return absl::OkStatus();
  if (!absl::SimpleAtoi(req.get_param_value(key.c_str()), out)) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": not an integer"));
  }
  return absl::OkStatus();
}

}  // namespace

HttpServer::HttpServer(Service& service, int threads) : service_(service), threads_(threads) {}

HttpServer::~HttpServer() { Stop(); }

// GET <pattern> with the id in the path and ?timeout_ms=: the shape tasks and workflows
// share (WaitTask, WaitWorkflow).
template <typename Req, typename Resp, typename Call>
static void AddWaitRoute(httplib::Server& s, const char* pattern, Call call) {
  s.Get(pattern, [call](const httplib::Request& req, httplib::Response& res) {
    Req r;
    auto id = PathId(req);
    if (!id.ok()) return WriteError(res, id.status());
    r.set_id(*id);
    int64_t timeout = 0;
    if (auto st = ParseIntParam(req, "timeout_ms", &timeout); !st.ok()) return WriteError(res, st);
    r.set_timeout_ms(timeout);
    Answer(res, Await<Resp>([&](Reply<Resp> done) { call(r, std::move(done)); }));
  });
}

void HttpServer::Routes() {
  httplib::Server& s = *server_;
  Service* svc = &service_;

  // Body-only POST routes: one request message in, one answer out.
#define DROVER_POST(path, Req, Resp, method)                                              \
  s.Post(path, [svc](const httplib::Request& req, httplib::Response& res) {               \
    Req r;                                                                                \
    if (auto st = ParseBody(req, &r); !st.ok()) return WriteError(res, st);               \
    Answer(res, Await<Resp>([&](Reply<Resp> done) { svc->method(r, std::move(done)); })); \
  })
  DROVER_POST("/v1/tasks", v1::SubmitTaskRequest, v1::SubmitTaskResponse, SubmitTask);
  DROVER_POST("/v1/tasks:batch", v1::SubmitTasksRequest, v1::SubmitTasksResponse, SubmitTasks);
  DROVER_POST("/v1/workflows", v1::SubmitWorkflowRequest, v1::Workflow, SubmitWorkflow);
  DROVER_POST("/v1/mapreduce", v1::SubmitMapReduceRequest, v1::Workflow, SubmitMapReduce);
  DROVER_POST("/v1/agents", v1::RegisterAgentRequest, v1::RegisterAgentResponse, RegisterAgent);
  DROVER_POST("/v1/agents:heartbeat", v1::HeartbeatRequest, v1::HeartbeatResponse, Heartbeat);
  DROVER_POST("/v1/agents:deregister", v1::DeregisterAgentRequest, v1::Ack, DeregisterAgent);
  DROVER_POST("/v1/leases:complete", v1::CompleteTaskRequest, v1::Ack, CompleteTask);
  DROVER_POST("/v1/leases:completeBatch", v1::CompleteTasksRequest, v1::CompleteTasksResponse,
              CompleteTasks);
  DROVER_POST("/v1/leases:fail", v1::FailTaskRequest, v1::Ack, FailTask);
  DROVER_POST("/v1/leases:checkpoint", v1::CheckpointRequest, v1::Ack, Checkpoint);
  DROVER_POST("/v1/leases:extend", v1::ExtendLeaseRequest, v1::ExtendLeaseResponse, ExtendLease);
  DROVER_POST("/v1/dlq:reprocess", v1::ReprocessDeadLettersRequest,
              v1::ReprocessDeadLettersResponse, ReprocessDeadLetters);
  DROVER_POST("/v1/dlq:purge", v1::PurgeDeadLettersRequest, v1::PurgeDeadLettersResponse,
              PurgeDeadLetters);
  DROVER_POST("/v1/messages", v1::SendMessageRequest, v1::SendMessageResponse, SendMessage);
  DROVER_POST("/v1/pools", v1::ApplyPoolRequest, v1::Ack, ApplyPool);
  DROVER_POST("/v1/pools:delete", v1::DeletePoolRequest, v1::Ack, DeletePool);
  DROVER_POST("/v1/pools:stop-agent", v1::StopPoolAgentRequest, v1::Ack, StopPoolAgent);
  DROVER_POST("/v1/pools:import-history", v1::ImportLoadHistoryRequest,
              v1::ImportLoadHistoryResponse, ImportLoadHistory);
#undef DROVER_POST

  s.Get(R"(/v1/tasks/(\d+))", [svc](const httplib::Request& req, httplib::Response& res) {
    auto id = PathId(req);
    if (!id.ok()) return WriteError(res, id.status());
    v1::GetTaskRequest r;
    r.set_id(*id);
    Answer(res, Await<v1::Task>([&](Reply<v1::Task> done) { svc->GetTask(r, std::move(done)); }));
  });
  s.Post(R"(/v1/tasks/(\d+):cancel)", [svc](const httplib::Request& req, httplib::Response& res) {
    v1::CancelTaskRequest r;
    if (auto st = ParseBody(req, &r); !st.ok()) return WriteError(res, st);
    auto id = PathId(req);
    if (!id.ok()) return WriteError(res, id.status());
    r.set_id(*id);
    Answer(res,
           Await<v1::Task>([&](Reply<v1::Task> done) { svc->CancelTask(r, std::move(done)); }));
  });
  AddWaitRoute<v1::WaitTaskRequest, v1::WaitTaskResponse>(
      s, R"(/v1/tasks/(\d+):wait)",
      [svc](const v1::WaitTaskRequest& r, auto done) { svc->WaitTask(r, std::move(done)); });
  s.Get("/v1/tasks", [svc](const httplib::Request& req, httplib::Response& res) {
    v1::ListTasksRequest r;
    v1::TaskState state = v1::TASK_STATE_UNSPECIFIED;
    v1::Priority priority = v1::PRIORITY_UNSPECIFIED;
    int64_t page_size = 0;
    for (absl::Status st :
         {ParseEnumParam<v1::TaskState>(req, "state", "TASK_STATE_", &v1::TaskState_Parse, &state),
          ParseEnumParam<v1::Priority>(req, "priority", "PRIORITY_", &v1::Priority_Parse,
                                       &priority),
          ParseIntParam(req, "page_size", &page_size)}) {
      if (!st.ok()) return WriteError(res, st);
    }
    r.set_state(state);
    r.set_priority(priority);
    r.set_page_size(static_cast<int32_t>(std::clamp<int64_t>(page_size, INT32_MIN, INT32_MAX)));
    r.set_type(req.get_param_value("type"));
    r.set_tenant(req.get_param_value("tenant"));
    r.set_page_token(req.get_param_value("page_token"));
    Answer(res, Await<v1::ListTasksResponse>([&](Reply<v1::ListTasksResponse> done) {
             svc->ListTasks(r, std::move(done));
           }));
  });
  s.Get(R"(/v1/workflows/(\d+))", [svc](const httplib::Request& req, httplib::Response& res) {
    auto id = PathId(req);
    if (!id.ok()) return WriteError(res, id.status());
    v1::GetWorkflowRequest r;
    r.set_id(*id);
    Answer(res, Await<v1::Workflow>(
                    [&](Reply<v1::Workflow> done) { svc->GetWorkflow(r, std::move(done)); }));
  });
  s.Post(R"(/v1/workflows/(\d+):cancel)",
         [svc](const httplib::Request& req, httplib::Response& res) {
           v1::CancelWorkflowRequest r;
           if (auto st = ParseBody(req, &r); !st.ok()) return WriteError(res, st);
           auto id = PathId(req);
           if (!id.ok()) return WriteError(res, id.status());
           r.set_id(*id);
           Answer(res, Await<v1::Workflow>([&](Reply<v1::Workflow> done) {
                    svc->CancelWorkflow(r, std::move(done));
                  }));
         });
  AddWaitRoute<v1::WaitWorkflowRequest, v1::WaitWorkflowResponse>(
      s, R"(/v1/workflows/(\d+):wait)", [svc](const v1::WaitWorkflowRequest& r, auto done) {
        svc->WaitWorkflow(r, std::move(done));
      });
  s.Get("/v1/workflows", [svc](const httplib::Request& req, httplib::Response& res) {
    v1::ListWorkflowsRequest r;
    v1::WorkflowState state = v1::WORKFLOW_STATE_UNSPECIFIED;
    int64_t page_size = 0;
    for (absl::Status st : {ParseEnumParam<v1::WorkflowState>(req, "state", "WORKFLOW_STATE_",
                                                              &v1::WorkflowState_Parse, &state),
                            ParseIntParam(req, "page_size", &page_size)}) {
      if (!st.ok()) return WriteError(res, st);
    }
    r.set_state(state);
    r.set_page_size(static_cast<int32_t>(std::clamp<int64_t>(page_size, INT32_MIN, INT32_MAX)));
    r.set_tenant(req.get_param_value("tenant"));
    r.set_page_token(req.get_param_value("page_token"));
    Answer(res, Await<v1::ListWorkflowsResponse>([&](Reply<v1::ListWorkflowsResponse> done) {
             svc->ListWorkflows(r, std::move(done));
           }));
  });
  s.Get("/v1/dlq", [svc](const httplib::Request& req, httplib::Response& res) {
    v1::ListDeadLettersRequest r;
    int64_t page_size = 0;
    if (auto st = ParseIntParam(req, "page_size", &page_size); !st.ok()) return WriteError(res, st);
    r.set_page_size(static_cast<int32_t>(std::clamp<int64_t>(page_size, INT32_MIN, INT32_MAX)));
    r.set_type(req.get_param_value("type"));
    r.set_tenant(req.get_param_value("tenant"));
    r.set_page_token(req.get_param_value("page_token"));
    Answer(res, Await<v1::ListTasksResponse>([&](Reply<v1::ListTasksResponse> done) {
             svc->ListDeadLetters(r, std::move(done));
           }));
  });
  s.Get("/v1/stats", [svc](const httplib::Request&, httplib::Response& res) {
    Answer(res, Await<v1::StatsResponse>(
                    [&](Reply<v1::StatsResponse> done) { svc->Stats(std::move(done)); }));
  });
  s.Get("/v1/usage", [svc](const httplib::Request&, httplib::Response& res) {
    Answer(res, Await<v1::UsageResponse>(
                    [&](Reply<v1::UsageResponse> done) { svc->GetUsage(std::move(done)); }));
  });
  s.Get("/v1/agents", [svc](const httplib::Request&, httplib::Response& res) {
    Answer(res, Await<v1::ListAgentsResponse>(
                    [&](Reply<v1::ListAgentsResponse> done) { svc->ListAgents(std::move(done)); }));
  });
  s.Get("/v1/cluster", [svc](const httplib::Request&, httplib::Response& res) {
    Answer(res, Await<v1::ClusterStatus>([&](Reply<v1::ClusterStatus> done) {
             svc->GetCluster(v1::GetClusterRequest(), std::move(done));
           }));
  });
  s.Get("/v1/pools", [svc](const httplib::Request&, httplib::Response& res) {
    Answer(res, Await<v1::ListPoolsResponse>(
                    [&](Reply<v1::ListPoolsResponse> done) { svc->ListPools(std::move(done)); }));
  });
  s.Get(R"(/v1/pools/([A-Za-z0-9_.-]+)/decisions)",
        [svc](const httplib::Request& req, httplib::Response& res) {
          v1::ListScalingDecisionsRequest r;
          r.set_pool(req.matches[1].str());
          int64_t limit = 0;
          if (req.has_param("limit") && !absl::SimpleAtoi(req.get_param_value("limit"), &limit)) {
            return WriteError(res, absl::InvalidArgumentError("limit: not a number"));
          }
          r.set_limit(static_cast<int32_t>(std::clamp<int64_t>(limit, 0, 1000)));
          Answer(res, Await<v1::ListScalingDecisionsResponse>(
                          [&](Reply<v1::ListScalingDecisionsResponse> done) {
                            svc->ListScalingDecisions(r, std::move(done));
                          }));
        });
  s.Get(R"(/v1/pools/([A-Za-z0-9_.-]+)/history)", [svc](const httplib::Request& req,
                                                        httplib::Response& res) {
    v1::GetLoadHistoryRequest r;
    r.set_pool(req.matches[1].str());
    int64_t since = 0, until = 0, limit = 0;
    for (absl::Status st :
         {ParseIntParam(req, "since", &since), ParseIntParam(req, "until", &until),
          ParseIntParam(req, "limit", &limit)}) {
      if (!st.ok()) return WriteError(res, st);
    }
    r.set_since_unix_minute(since);
    r.set_until_unix_minute(until);
    // Out of int32 range stays out of range, so the service's error names it.
    r.set_limit(static_cast<int32_t>(std::clamp<int64_t>(limit, INT32_MIN, INT32_MAX)));
    Answer(res, Await<v1::GetLoadHistoryResponse>([&](Reply<v1::GetLoadHistoryResponse> done) {
             svc->GetLoadHistory(r, std::move(done));
           }));
  });
  s.Get("/healthz", [svc](const httplib::Request&, httplib::Response& res) {
    Answer(res, Await<v1::HealthResponse>(
                    [&](Reply<v1::HealthResponse> done) { svc->Health(std::move(done)); }));
  });
  s.Get("/readyz", [svc](const httplib::Request&, httplib::Response& res) {
    Answer(res, Await<v1::HealthResponse>(
                    [&](Reply<v1::HealthResponse> done) { svc->Ready(std::move(done)); }));
  });
  s.Get("/metrics", [svc](const httplib::Request&, httplib::Response& res) {
    auto r = Await<std::string>([&](Reply<std::string> done) { svc->Metrics(std::move(done)); });
    if (!r.ok()) return WriteError(res, r.status());
    res.set_content(*r, "text/plain; version=0.0.4; charset=utf-8");
  });
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (res.status == 404 && res.body.empty()) {
      WriteError(res, absl::NotFoundError(absl::StrCat("path: no route for ", req.method, " ",
                                                       req.path, " (see docs/http-api.md)")));
    }
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    WriteError(res, absl::InternalError("internal error while handling the request"));
  });
}

absl::Status HttpServer::Start(const std::string& address) {
  const auto colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("http_listen: '", address, "' is not host:port"));
  }
  const std::string host = address.substr(0, colon);
  server_ = std::make_unique<httplib::Server>();
  server_->set_tcp_nodelay(true);  // without it keep-alive stalls at ~200 req/s
  server_->set_payload_max_length(64 << 20);
  const int threads = threads_;
  server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  Routes();
  if (port == 0) {
    port_ = server_->bind_to_any_port(host.c_str());
  } else {
    port_ = server_->bind_to_port(host.c_str(), port) ? port : -1;
  }
  if (port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("http_listen: cannot listen on ", address, " (in use or not an address)"));
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return absl::OkStatus();
}

void HttpServer::Stop() {
  if (!server_) return;
  server_->stop();
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

}  // namespace drover::api
