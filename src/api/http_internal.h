// Shared by the HTTP server's route files (http_server.cc: the API; http_dashboard.cc: the
// dashboard's assets, sign-in and push stream): answering, waiting for Service, and the
// per-call admission.
#pragma once

#include <functional>
#include <future>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "api/gate.h"
#include "api/http_server.h"
#include "api/service.h"
#include "google/protobuf/message.h"
#include "httplib.h"

namespace drover::api::http {

// {"error":{"code":"INVALID_ARGUMENT","message":"..."}} with the status's HTTP code (and
// Retry-After when the status carries one).
void WriteError(httplib::Response& res, const absl::Status& st);
// protobuf's JSON mapping, proto field names.
void WriteMessage(httplib::Response& res, const google::protobuf::Message& msg);
std::string JsonEscape(absl::string_view in);

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

// The dashboard's session cookie (docs/dashboard.md).
inline constexpr absl::string_view kSessionCookie = "drover_session";
// The value of the session cookie in a Cookie header, or "".
std::string SessionFromCookies(absl::string_view cookie_header);

}  // namespace drover::api::http

namespace drover::api {

// One call's admission: the handler parses its request and passes it here, so the gate
// can read the tenants it names. Every handler must call it once (Add checks).
//
// The credential: the Authorization header; without one, the dashboard's session cookie.
// A write authenticated by the cookie must come from the dashboard's own page
// (Sec-Fetch-Site: same-origin), so another site cannot act through a signed-in browser.
class HttpServer::Admit {
 public:
  Admit(Gate& gate, const httplib::Request& req, absl::string_view method)
      : gate_(gate), req_(req), method_(method) {}
  absl::StatusOr<auth::Caller> operator()(const google::protobuf::Message* request) const {
    return Run(request, nullptr);
  }
  // Signing in: the token to check is the one given, not the request's credential.
  absl::StatusOr<auth::Caller> WithToken(const std::string& token) const {
    return Run(nullptr, &token);
  }
  bool used() const { return used_; }
  // For a route that is open by configuration (public /metrics): no check, no audit record.
  void Open() const { used_ = true; }

 private:
  absl::StatusOr<auth::Caller> Run(const google::protobuf::Message* request,
                                   const std::string* token) const;
  Gate& gate_;
  const httplib::Request& req_;
  absl::string_view method_;
  mutable bool used_ = false;
};

}  // namespace drover::api
