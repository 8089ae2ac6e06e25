#include "api/http_server.h"

#include <algorithm>
#include <atomic>
#include <future>
#include <memory>
#include <type_traits>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "api/http_decode.h"
#include "api/http_internal.h"
#include "api/http_payloads.h"
#include "api/status_map.h"
#include "api/tls.h"
#include "auth/access.h"
#include "core/engine.h"
#include "fmt/format.h"
#include "google/protobuf/util/json_util.h"
#include "google/rpc/status.pb.h"
#include "httplib.h"
#include "obs/trace.h"

namespace drover::api {
namespace http {

namespace pb = google::protobuf;

namespace {
std::string StatusCodeName(absl::StatusCode code) {
  return absl::AsciiStrToUpper(absl::StatusCodeToString(code));
}
}  // namespace

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

// ,"details":[...]: the google.rpc details gRPC sends in grpc-status-details-bin
// (BadRequest, RetryInfo) in protobuf's JSON form; "" when there are none.
std::string DetailsJson(const absl::Status& st) {
  const std::string bytes = ErrorDetails(st);
  if (bytes.empty()) return "";
  google::rpc::Status rich;
  std::string printed;
  pb::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  if (!rich.ParseFromString(bytes) || !pb::util::MessageToJsonString(rich, &printed, opts).ok()) {
    return "";
  }
  const size_t at = printed.find("\"details\":");
  if (at == std::string::npos || printed.back() != '}') return "";
  return absl::StrCat(",", printed.substr(at, printed.size() - 1 - at));
}

void WriteError(httplib::Response& res, const absl::Status& st) {
  res.status = HttpCode(st.code());
  if (auto ms = RetryAfterMs(st)) {
    res.set_header("Retry-After", std::to_string((*ms + 999) / 1000));
  }
  // Written by hand: protobuf's printer escapes '<' and '>', which hurts messages like
  // "must be >= 0".
  std::string json =
      absl::StrCat("{\"error\":{\"code\":\"", StatusCodeName(st.code()), "\",\"message\":\"",
                   JsonEscape(st.message()), "\"", DetailsJson(st), "}}");
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
  json = PayloadsOut(std::move(json), msg.GetDescriptor());
  res.set_content(json + "\n", "application/json");
}

std::string SessionFromCookies(absl::string_view header) {
  for (absl::string_view part : absl::StrSplit(header, ';')) {
    part = absl::StripAsciiWhitespace(part);
    if (absl::ConsumePrefix(&part, kSessionCookie) && absl::ConsumePrefix(&part, "=")) {
      return std::string(part);
    }
  }
  return "";
}

}  // namespace http

using namespace http;  // the decoders (http_decode.h) and the answer helpers (http_internal.h)

namespace pb = google::protobuf;

HttpServer::HttpServer(Service& service, Gate& gate, int threads, bool public_metrics)
    : service_(service), gate_(gate), threads_(threads), public_metrics_(public_metrics) {}

HttpServer::~HttpServer() { Stop(); }

absl::StatusOr<auth::Caller> HttpServer::Admit::Run(const pb::Message* request,
                                                    const std::string* token) const {
  used_ = true;
  std::string authorization = req_.get_header_value("Authorization");
  bool by_cookie = false;
  if (token != nullptr) {
    authorization = absl::StrCat("Bearer ", *token);
  } else if (authorization.empty()) {
    if (std::string session = SessionFromCookies(req_.get_header_value("Cookie"));
        !session.empty()) {
      authorization = absl::StrCat("Bearer ", session);
      by_cookie = true;
    }
  }
  const std::string user_agent = req_.get_header_value("User-Agent");
  const std::string request_id = req_.get_header_value("X-Request-Id");
  const std::string traceparent = req_.get_header_value("traceparent");
  CallMeta m;
  m.method = method_;
  m.transport = "http";
  m.authorization = authorization;
  m.user_agent = user_agent;
  m.request_id = request_id;
  m.traceparent = traceparent;
  m.peer = absl::StrCat(req_.remote_addr, ":", req_.remote_port);
  m.peer_cn = PeerCommonName(req_.ssl);
  absl::StatusOr<auth::Caller> caller = gate_.Admit(m, request);
  if (caller.ok() && by_cookie && req_.method != "GET" &&
      req_.get_header_value("Sec-Fetch-Site") != "same-origin") {
    const char* why =
        "a write signed in with the dashboard's session cookie must come from the dashboard's "
        "own page (Sec-Fetch-Site: same-origin); API clients send 'Authorization: Bearer "
        "<token>'";
    gate_.AuditRefusal(m, *caller, why, request);
    return absl::PermissionDeniedError(why);
  }
  return caller;
}

void HttpServer::Add(const char* verb, const char* pattern, Handler handler) {
  const auth::HttpRoute* route = nullptr;
  for (const auth::HttpRoute& r : auth::HttpRoutes()) {
    if (r.verb == verb && r.pattern == pattern) route = &r;
  }
  if (route == nullptr) {
    // A route outside the access table would be open to anyone: refuse to start.
    fmt::print(stderr, "drover: HTTP route {} {} has no access rule (src/auth/access.cc)\n", verb,
               pattern);
    std::abort();
  }
  routes_.push_back(*route);
  Gate* gate = &gate_;
  const absl::string_view method = route->method;
  auto fn = [gate, method, handler = std::move(handler)](const httplib::Request& req,
                                                         httplib::Response& res) {
    Admit admit(*gate, req, method);
    handler(req, res, admit);
    if (!admit.used()) {
      WriteError(res,
                 absl::InternalError(absl::StrCat("route for ", method, " did not check access")));
    }
  };
  if (std::string_view(verb) == "GET") {
    server_->Get(pattern, std::move(fn));
  } else {
    server_->Post(pattern, std::move(fn));
  }
}

namespace {

// POST routes whose body is the whole request message.
template <typename Req, typename Resp>
HttpServer::Handler BodyRoute(Service* svc,
                              void (Service::*call)(const auth::Caller&, const Req&, Reply<Resp>)) {
  return [svc, call](const httplib::Request& req, httplib::Response& res,
                     const HttpServer::Admit& admit) {
    Req r;
    absl::Status parsed = ParseBody(req, &r);
    auto caller = admit(parsed.ok() ? &r : nullptr);
    if (!caller.ok()) return WriteError(res, caller.status());
    if (!parsed.ok()) return WriteError(res, parsed);
    // Submissions: a task without a traceparent takes the call's header (a bad one is
    // ignored).
    if constexpr (std::is_same_v<Req, v1::SubmitTaskRequest> ||
                  std::is_same_v<Req, v1::SubmitTasksRequest>) {
      obs::ApplyTraceparent(req.get_header_value("traceparent"), &r);
    }
    Answer(res, Await<Resp>([&](Reply<Resp> done) { (svc->*call)(*caller, r, std::move(done)); }));
  };
}

// GET routes of calls without a request message.
template <typename Resp>
HttpServer::Handler NoRequestRoute(Service* svc,
                                   void (Service::*call)(const auth::Caller&, Reply<Resp>)) {
  return
      [svc, call](const httplib::Request&, httplib::Response& res, const HttpServer::Admit& admit) {
        auto caller = admit(nullptr);
        if (!caller.ok()) return WriteError(res, caller.status());
        Answer(res, Await<Resp>([&](Reply<Resp> done) { (svc->*call)(*caller, std::move(done)); }));
      };
}

// Routes with the id in the path: GET (get), POST with an optional body (cancel), or GET
// with ?timeout_ms= (wait).
enum class IdRoute { kGet, kPostBody, kWait };
template <typename Req, typename Resp>
HttpServer::Handler PathIdRoute(Service* svc,
                                void (Service::*call)(const auth::Caller&, const Req&, Reply<Resp>),
                                IdRoute kind) {
  return [svc, call, kind](const httplib::Request& req, httplib::Response& res,
                           const HttpServer::Admit& admit) {
    Req r;
    absl::Status st = kind == IdRoute::kPostBody ? ParseBody(req, &r) : absl::OkStatus();
    auto id = PathId(req);
    if (st.ok() && !id.ok()) st = id.status();
    if (st.ok()) r.set_id(*id);
    if constexpr (requires(Req x) { x.set_timeout_ms(0); }) {
      int64_t timeout = 0;
      if (st.ok()) st = ParseIntParam(req, "timeout_ms", &timeout);
      r.set_timeout_ms(timeout);
    }
    auto caller = admit(&r);
    if (!caller.ok()) return WriteError(res, caller.status());
    if (!st.ok()) return WriteError(res, st);
    Answer(res, Await<Resp>([&](Reply<Resp> done) { (svc->*call)(*caller, r, std::move(done)); }));
  };
}

// GET routes whose request is built from the query (and path): `build` fills it.
template <typename Req, typename Resp>
HttpServer::Handler QueryRoute(Service* svc,
                               void (Service::*call)(const auth::Caller&, const Req&, Reply<Resp>),
                               absl::Status (*build)(const httplib::Request&, Req*)) {
  return [svc, call, build](const httplib::Request& req, httplib::Response& res,
                            const HttpServer::Admit& admit) {
    Req r;
    absl::Status st = build(req, &r);
    auto caller = admit(&r);
    if (!caller.ok()) return WriteError(res, caller.status());
    if (!st.ok()) return WriteError(res, st);
    Answer(res, Await<Resp>([&](Reply<Resp> done) { (svc->*call)(*caller, r, std::move(done)); }));
  };
}

// GET /v1/events: a long poll holds one of the server's fixed threads for up to wait_ms, so
// at most `slots` of them wait at once; beyond that a call is answered at once (wait_ms 0)
// and its reader simply asks again.
HttpServer::Handler EventsRoute(Service* svc, std::shared_ptr<std::atomic<int>> slots) {
  return [svc, slots](const httplib::Request& req, httplib::Response& res,
                      const HttpServer::Admit& admit) {
    v1::ListEventsRequest r;
    absl::Status st = BuildEvents(req, &r);
    auto caller = admit(&r);
    if (!caller.ok()) return WriteError(res, caller.status());
    if (!st.ok()) return WriteError(res, st);
    bool took = false;
    if (r.wait_ms() > 0) {
      if (slots->fetch_sub(1) > 0) {
        took = true;
      } else {
        slots->fetch_add(1);
        r.set_wait_ms(0);
      }
    }
    Answer(res, Await<v1::ListEventsResponse>([&](Reply<v1::ListEventsResponse> done) {
             svc->ListEvents(*caller, r, std::move(done));
           }));
    if (took) slots->fetch_add(1);
  };
}

}  // namespace

void HttpServer::Routes() {
  Service* svc = &service_;
  using S = Service;

  Add("POST", "/v1/tasks", BodyRoute(svc, &S::SubmitTask));
  Add("POST", "/v1/tasks:batch", BodyRoute(svc, &S::SubmitTasks));
  Add("GET", R"(/v1/tasks/(\d+))", PathIdRoute(svc, &S::GetTask, IdRoute::kGet));
  Add("POST", R"(/v1/tasks/(\d+):cancel)", PathIdRoute(svc, &S::CancelTask, IdRoute::kPostBody));
  Add("GET", R"(/v1/tasks/(\d+):wait)", PathIdRoute(svc, &S::WaitTask, IdRoute::kWait));
  Add("GET", "/v1/tasks", QueryRoute(svc, &S::ListTasks, &BuildListTasks));

  Add("POST", "/v1/workflows", BodyRoute(svc, &S::SubmitWorkflow));
  Add("POST", "/v1/mapreduce", BodyRoute(svc, &S::SubmitMapReduce));
  Add("GET", R"(/v1/workflows/(\d+))", PathIdRoute(svc, &S::GetWorkflow, IdRoute::kGet));
  Add("POST", R"(/v1/workflows/(\d+):cancel)",
      PathIdRoute(svc, &S::CancelWorkflow, IdRoute::kPostBody));
  Add("GET", R"(/v1/workflows/(\d+):wait)", PathIdRoute(svc, &S::WaitWorkflow, IdRoute::kWait));
  Add("GET", "/v1/workflows", QueryRoute(svc, &S::ListWorkflows, &BuildListWorkflows));

  Add("POST", "/v1/agents", BodyRoute(svc, &S::RegisterAgent));
  Add("POST", "/v1/agents:heartbeat", BodyRoute(svc, &S::Heartbeat));
  Add("POST", "/v1/agents:deregister", BodyRoute(svc, &S::DeregisterAgent));
  Add("POST", "/v1/leases:complete", BodyRoute(svc, &S::CompleteTask));
  Add("POST", "/v1/leases:completeBatch", BodyRoute(svc, &S::CompleteTasks));
  Add("POST", "/v1/leases:fail", BodyRoute(svc, &S::FailTask));
  Add("POST", "/v1/leases:checkpoint", BodyRoute(svc, &S::Checkpoint));
  Add("POST", "/v1/leases:extend", BodyRoute(svc, &S::ExtendLease));

  Add("GET", "/v1/dlq", QueryRoute(svc, &S::ListDeadLetters, &BuildListDeadLetters));
  Add("POST", "/v1/dlq:reprocess", BodyRoute(svc, &S::ReprocessDeadLetters));
  Add("POST", "/v1/dlq:purge", BodyRoute(svc, &S::PurgeDeadLetters));
  Add("POST", "/v1/messages", BodyRoute(svc, &S::SendMessage));
  Add("GET", "/v1/stats", NoRequestRoute(svc, &S::Stats));
  Add("GET", "/v1/stats/series", QueryRoute(svc, &S::GetStatsSeries, &BuildStatsSeries));
  Add("GET", "/v1/usage", NoRequestRoute(svc, &S::GetUsage));
  Add("GET", "/v1/agents", NoRequestRoute(svc, &S::ListAgents));
  Add("GET", "/v1/cluster", QueryRoute(svc, &S::GetCluster, &BuildCluster));

  Add("GET", "/v1/pools", NoRequestRoute(svc, &S::ListPools));
  Add("POST", "/v1/pools", BodyRoute(svc, &S::ApplyPool));
  Add("POST", "/v1/pools:delete", BodyRoute(svc, &S::DeletePool));
  Add("POST", "/v1/pools:stop-agent", BodyRoute(svc, &S::StopPoolAgent));
  Add("POST", "/v1/pools:import-history", BodyRoute(svc, &S::ImportLoadHistory));
  Add("GET", R"(/v1/pools/([A-Za-z0-9_.-]+)/decisions)",
      QueryRoute(svc, &S::ListScalingDecisions, &BuildDecisions));
  Add("GET", R"(/v1/pools/([A-Za-z0-9_.-]+)/history)",
      QueryRoute(svc, &S::GetLoadHistory, &BuildHistory));

  Add("POST", "/v1/tokens", BodyRoute(svc, &S::CreateToken));
  Add("GET", "/v1/tokens", QueryRoute(svc, &S::ListTokens, &BuildListTokens));
  Add("POST", R"(/v1/tokens/([A-Za-z0-9_.@-]+):revoke)",
      QueryRoute(svc, &S::RevokeToken, &BuildRevoke));
  Add("GET", "/v1/whoami", QueryRoute(svc, &S::WhoAmI, &BuildWhoAmI));
  Add("GET", "/v1/audit", QueryRoute(svc, &S::ListAudit, &BuildAudit));
  Add("GET", "/v1/events",
      EventsRoute(svc, std::make_shared<std::atomic<int>>(std::max(1, threads_ / 2))));

  Add("GET", "/healthz", NoRequestRoute(svc, &S::Health));
  Add("GET", "/readyz", NoRequestRoute(svc, &S::Ready));
  const bool public_metrics = public_metrics_;
  Add("GET", "/metrics",
      [svc, public_metrics](const httplib::Request&, httplib::Response& res, const Admit& admit) {
        auth::Caller c;
        if (public_metrics) {
          admit.Open();
        } else {
          auto caller = admit(nullptr);
          if (!caller.ok()) return WriteError(res, caller.status());
          c = *caller;
        }
        auto r =
            Await<std::string>([&](Reply<std::string> done) { svc->Metrics(c, std::move(done)); });
        if (!r.ok()) return WriteError(res, r.status());
        res.set_content(*r, "text/plain; version=0.0.4; charset=utf-8");
      });

  httplib::Server& s = *server_;
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

absl::Status HttpServer::Start(const std::string& address, const TlsOptions& tls) {
  const auto colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("http_listen: '", address, "' is not host:port"));
  }
  const std::string host = address.substr(0, colon);
  if (tls.enabled()) {
    tls_ = std::make_unique<TlsFiles>(tls);
    TlsFiles* files = tls_.get();
    auto ssl =
        std::make_unique<httplib::SSLServer>([files](SSL_CTX& ctx) { return files->Setup(ctx); });
    if (!ssl->is_valid()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tls: cannot set up HTTPS with ", tls.cert_file, " and ", tls.key_file));
    }
    server_ = std::move(ssl);
  } else {
    server_ = std::make_unique<httplib::Server>();
  }
  server_->set_tcp_nodelay(true);  // without it keep-alive stalls at ~200 req/s
  server_->set_payload_max_length(64 << 20);
  // Each follower of the dashboard's push stream holds a thread of its own for as long as
  // it follows: they come on top of the request threads.
  const int threads = threads_ + kMaxStreams;
  streams_ = MakeStreams(kMaxStreams);
  server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  Routes();
  DashboardRoutes();
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
  StopStreams();
  server_->stop();
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

}  // namespace drover::api
