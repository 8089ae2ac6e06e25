#include "api/http_decode.h"

#include <algorithm>
#include <climits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "api/http_payloads.h"
#include "google/protobuf/util/json_util.h"

namespace drover::api::http {
namespace {

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

}  // namespace

// Parses the body into `msg`; an empty body is an empty message.
absl::Status ParseBody(const httplib::Request& req, pb::Message* msg) {
  if (req.body.empty()) return absl::OkStatus();
  pb::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = false;
  // JSON payloads (api/http_payloads.h); a body that names none skips the rewrite.
  std::string body;
  absl::string_view text = req.body;
  if (absl::StrContains(text, "payload") || absl::StrContains(text, "result") ||
      absl::StrContains(text, "checkpoint") || absl::StrContains(text, "body") ||
      absl::StrContains(text, "items")) {
    absl::StatusOr<std::string> rewritten = PayloadsIn(text, msg->GetDescriptor());
    if (!rewritten.ok()) return rewritten.status();
    body = std::move(*rewritten);
    text = body;
  }
  auto st = pb::util::JsonStringToMessage(pb::StringPiece(text.data(), text.size()), msg, opts);
  if (!st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("body: ", st.message().as_string()));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> PathId(const httplib::Request& req) {
  uint64_t id = 0;
  if (!absl::SimpleAtoi(req.matches[1].str(), &id)) {
    return absl::InvalidArgumentError("id: not a task id");
  }
  return id;
}

absl::Status ParseIntParam(const httplib::Request& req, const std::string& key, int64_t* out) {
  if (!req.has_param(key.c_str())) return absl::OkStatus();
  if (!absl::SimpleAtoi(req.get_param_value(key.c_str()), out)) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": not an integer"));
  }
  return absl::OkStatus();
}

int32_t ClampInt32(int64_t v) {
  return static_cast<int32_t>(std::clamp<int64_t>(v, INT32_MIN, INT32_MAX));
}

namespace {

// A query parameter read from the request line itself: httplib cuts a value at its own
// '=' ("label=team=red" would read "team"), and a label filter is "key=value".
std::string RawParam(const httplib::Request& req, absl::string_view name) {
  absl::string_view target = req.target;
  const size_t q = target.find('?');
  if (q == absl::string_view::npos) return req.get_param_value(std::string(name).c_str());
  for (absl::string_view part : absl::StrSplit(target.substr(q + 1), '&')) {
    if (absl::ConsumePrefix(&part, name) && absl::ConsumePrefix(&part, "=")) {
      return httplib::detail::decode_url(std::string(part), true);
    }
  }
  return "";
}

}  // namespace

absl::Status BuildListTasks(const httplib::Request& req, v1::ListTasksRequest* r) {
  v1::TaskState state = v1::TASK_STATE_UNSPECIFIED;
  v1::Priority priority = v1::PRIORITY_UNSPECIFIED;
  int64_t page_size = 0;
  r->set_type(req.get_param_value("type"));
  r->set_tenant(req.get_param_value("tenant"));
  r->set_page_token(req.get_param_value("page_token"));
  r->set_label(RawParam(req, "label"));
  r->set_error_contains(req.get_param_value("error"));
  int64_t workflow = 0;
  if (absl::Status st = ParseIntParam(req, "workflow_id", &workflow); !st.ok()) return st;
  if (workflow < 0) return absl::InvalidArgumentError("workflow_id: must be >= 0");
  r->set_workflow_id(static_cast<uint64_t>(workflow));
  if (req.has_param("order")) {
    const std::string order = req.get_param_value("order");
    if (order != "newest" && order != "oldest") {
      return absl::InvalidArgumentError(
          absl::StrCat("order: must be newest or oldest, got '", order, "'"));
    }
    r->set_newest_first(order == "newest");
  }
  for (absl::Status st :
       {ParseEnumParam<v1::TaskState>(req, "state", "TASK_STATE_", &v1::TaskState_Parse, &state),
        ParseEnumParam<v1::Priority>(req, "priority", "PRIORITY_", &v1::Priority_Parse, &priority),
        ParseIntParam(req, "page_size", &page_size)}) {
    if (!st.ok()) return st;
  }
  r->set_state(state);
  r->set_priority(priority);
  r->set_page_size(ClampInt32(page_size));
  return absl::OkStatus();
}

absl::Status BuildStatsSeries(const httplib::Request& req, v1::StatsSeriesRequest* r) {
  int64_t window = 0;
  if (absl::Status st = ParseIntParam(req, "window_s", &window); !st.ok()) return st;
  r->set_window_s(window);
  return absl::OkStatus();
}

absl::Status BuildListWorkflows(const httplib::Request& req, v1::ListWorkflowsRequest* r) {
  v1::WorkflowState state = v1::WORKFLOW_STATE_UNSPECIFIED;
  int64_t page_size = 0;
  r->set_tenant(req.get_param_value("tenant"));
  r->set_page_token(req.get_param_value("page_token"));
  for (absl::Status st : {ParseEnumParam<v1::WorkflowState>(req, "state", "WORKFLOW_STATE_",
                                                            &v1::WorkflowState_Parse, &state),
                          ParseIntParam(req, "page_size", &page_size)}) {
    if (!st.ok()) return st;
  }
  r->set_state(state);
  r->set_page_size(ClampInt32(page_size));
  return absl::OkStatus();
}

absl::Status BuildListDeadLetters(const httplib::Request& req, v1::ListDeadLettersRequest* r) {
  int64_t page_size = 0;
  r->set_type(req.get_param_value("type"));
  r->set_tenant(req.get_param_value("tenant"));
  r->set_page_token(req.get_param_value("page_token"));
  if (absl::Status st = ParseIntParam(req, "page_size", &page_size); !st.ok()) return st;
  r->set_page_size(ClampInt32(page_size));
  return absl::OkStatus();
}

absl::Status BuildDecisions(const httplib::Request& req, v1::ListScalingDecisionsRequest* r) {
  r->set_pool(req.matches[1].str());
  int64_t limit = 0;
  if (req.has_param("limit") && !absl::SimpleAtoi(req.get_param_value("limit"), &limit)) {
    return absl::InvalidArgumentError("limit: not a number");
  }
  r->set_limit(static_cast<int32_t>(std::clamp<int64_t>(limit, 0, 1000)));
  return absl::OkStatus();
}

absl::Status BuildHistory(const httplib::Request& req, v1::GetLoadHistoryRequest* r) {
  r->set_pool(req.matches[1].str());
  int64_t since = 0, until = 0, limit = 0;
  for (absl::Status st : {ParseIntParam(req, "since", &since), ParseIntParam(req, "until", &until),
                          ParseIntParam(req, "limit", &limit)}) {
    if (!st.ok()) return st;
  }
  r->set_since_unix_minute(since);
  r->set_until_unix_minute(until);
  // Out of int32 range stays out of range, so the service's error names it.
  r->set_limit(ClampInt32(limit));
  return absl::OkStatus();
}

absl::Status BuildCluster(const httplib::Request&, v1::GetClusterRequest*) {
  return absl::OkStatus();
}
absl::Status BuildListTokens(const httplib::Request&, v1::ListTokensRequest*) {
  return absl::OkStatus();
}
absl::Status BuildWhoAmI(const httplib::Request&, v1::WhoAmIRequest*) { return absl::OkStatus(); }

absl::Status BuildRevoke(const httplib::Request& req, v1::RevokeTokenRequest* r) {
  r->set_id(req.matches[1].str());
  return absl::OkStatus();
}

absl::Status BuildAudit(const httplib::Request& req, v1::ListAuditRequest* r) {
  int64_t since = 0, page_size = 0;
  r->set_principal(req.get_param_value("principal"));
  r->set_tenant(req.get_param_value("tenant"));
  r->set_page_token(req.get_param_value("page_token"));
  for (absl::Status st :
       {ParseIntParam(req, "since_unix_ms", &since), ParseIntParam(req, "page_size", &page_size)}) {
    if (!st.ok()) return st;
  }
  r->set_since_unix_ms(since);
  r->set_page_size(ClampInt32(page_size));
  return absl::OkStatus();
}

absl::Status BuildEvents(const httplib::Request& req, v1::ListEventsRequest* r) {
  int64_t task = 0, workflow = 0, since = 0, page_size = 0, wait = 0;
  r->set_type(req.get_param_value("type"));
  r->set_pool(req.get_param_value("pool"));
  r->set_tenant(req.get_param_value("tenant"));
  r->set_page_token(req.get_param_value("page_token"));
  for (absl::Status st :
       {ParseIntParam(req, "task_id", &task), ParseIntParam(req, "workflow_id", &workflow),
        ParseIntParam(req, "since_unix_ms", &since), ParseIntParam(req, "page_size", &page_size),
        ParseIntParam(req, "wait_ms", &wait)}) {
    if (!st.ok()) return st;
  }
  if (task < 0) return absl::InvalidArgumentError("task_id: must be >= 0");
  if (workflow < 0) return absl::InvalidArgumentError("workflow_id: must be >= 0");
  r->set_task_id(static_cast<uint64_t>(task));
  r->set_workflow_id(static_cast<uint64_t>(workflow));
  r->set_since_unix_ms(since);
  r->set_page_size(ClampInt32(page_size));
  r->set_wait_ms(wait);
  return absl::OkStatus();
}

absl::Status DecodeForRoute(const auth::HttpRoute& route, const httplib::Request& req,
                            pb::Message* msg) {
  const std::string pattern(route.pattern);
  const std::string method(route.method);
  auto as = [msg](auto* typed) { return dynamic_cast<decltype(typed)>(msg); };
  if (pattern.find(R"((\d+))") != std::string::npos) {
    absl::Status st = route.verb == "POST" ? ParseBody(req, msg) : absl::OkStatus();
    auto id = PathId(req);
    if (st.ok() && !id.ok()) st = id.status();
    const pb::FieldDescriptor* f = msg->GetDescriptor()->FindFieldByName("id");
    if (st.ok() && f != nullptr) msg->GetReflection()->SetUInt64(msg, f, *id);
    const pb::FieldDescriptor* t = msg->GetDescriptor()->FindFieldByName("timeout_ms");
    if (st.ok() && t != nullptr) {
      int64_t timeout = 0;
      st = ParseIntParam(req, "timeout_ms", &timeout);
      msg->GetReflection()->SetInt64(msg, t, timeout);
    }
    return st;
  }
  if (route.verb == "POST" && pattern.find(":revoke") == std::string::npos)
    return ParseBody(req, msg);
  if (auto* r = as((v1::ListTasksRequest*)nullptr)) return BuildListTasks(req, r);
  if (auto* r = as((v1::ListWorkflowsRequest*)nullptr)) return BuildListWorkflows(req, r);
  if (auto* r = as((v1::ListDeadLettersRequest*)nullptr)) return BuildListDeadLetters(req, r);
  if (auto* r = as((v1::ListScalingDecisionsRequest*)nullptr)) return BuildDecisions(req, r);
  if (auto* r = as((v1::GetLoadHistoryRequest*)nullptr)) return BuildHistory(req, r);
  if (auto* r = as((v1::RevokeTokenRequest*)nullptr)) return BuildRevoke(req, r);
  if (auto* r = as((v1::ListAuditRequest*)nullptr)) return BuildAudit(req, r);
  if (auto* r = as((v1::ListEventsRequest*)nullptr)) return BuildEvents(req, r);
  if (auto* r = as((v1::StatsSeriesRequest*)nullptr)) return BuildStatsSeries(req, r);
  return absl::OkStatus();  // routes without a request (stats, health, ...)
}

}  // namespace drover::api::http
