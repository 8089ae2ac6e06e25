// The HTTP server's request decoders (docs/http-api.md): bodies through protobuf's JSON
// mapping, ids from the path, query parameters into list requests. Shared by the routes in
// http_server.cc and the fuzz target (fuzz/http_request_fuzz.cc), so both decode alike.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "auth/access.h"
#include "drover/v1/drover.pb.h"
#include "google/protobuf/message.h"
#include "httplib.h"

namespace drover::api::http {

namespace pb = google::protobuf;

// Parses the body into `msg`; an empty body is an empty message. Unknown fields are refused.
absl::Status ParseBody(const httplib::Request& req, pb::Message* msg);
// The id captured by the route's `(\d+)`.
absl::StatusOr<uint64_t> PathId(const httplib::Request& req);
absl::Status ParseIntParam(const httplib::Request& req, const std::string& key, int64_t* out);
int32_t ClampInt32(int64_t v);

absl::Status BuildListTasks(const httplib::Request& req, v1::ListTasksRequest* r);
absl::Status BuildStatsSeries(const httplib::Request& req, v1::StatsSeriesRequest* r);
absl::Status BuildListWorkflows(const httplib::Request& req, v1::ListWorkflowsRequest* r);
absl::Status BuildListDeadLetters(const httplib::Request& req, v1::ListDeadLettersRequest* r);
absl::Status BuildDecisions(const httplib::Request& req, v1::ListScalingDecisionsRequest* r);
absl::Status BuildHistory(const httplib::Request& req, v1::GetLoadHistoryRequest* r);
absl::Status BuildCluster(const httplib::Request& req, v1::GetClusterRequest* r);
absl::Status BuildListTokens(const httplib::Request& req, v1::ListTokensRequest* r);
absl::Status BuildWhoAmI(const httplib::Request& req, v1::WhoAmIRequest* r);
absl::Status BuildRevoke(const httplib::Request& req, v1::RevokeTokenRequest* r);
absl::Status BuildAudit(const httplib::Request& req, v1::ListAuditRequest* r);
absl::Status BuildEvents(const httplib::Request& req, v1::ListEventsRequest* r);

// The request of `route`, decoded from `req` as its handler does (path id, query or body);
// `msg` is of the route's method's request type. For the fuzz target and tests.
absl::Status DecodeForRoute(const auth::HttpRoute& route, const httplib::Request& req,
                            pb::Message* msg);

}  // namespace drover::api::http
