#include "api/status_map.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "core/engine.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"

namespace drover::api {

namespace {

// "task.payload: 1100000 bytes exceeds ..." -> {"task.payload"}; "agent_id, agent_type, all:
// give exactly one" -> all three. Empty when the message does not start with field paths.
std::vector<std::string> FieldPaths(absl::string_view message, absl::string_view* why) {
  const size_t colon = message.find(": ");
  if (colon == absl::string_view::npos || colon == 0) return {};
  std::vector<std::string> fields;
  for (absl::string_view f : absl::StrSplit(message.substr(0, colon), ", ")) {
    const bool path = !f.empty() && std::all_of(f.begin(), f.end(), [](char c) {
      return absl::ascii_isalnum(c) || c == '_' || c == '.' || c == '[' || c == ']' || c == '-';
    });
    if (!path) return {};
    fields.emplace_back(f);
  }
  *why = message.substr(colon + 2);
  return fields;
}

}  // namespace

std::string ErrorDetails(const absl::Status& st) {
  google::rpc::Status rich;
  rich.set_code(static_cast<int>(st.code()));
  rich.set_message(std::string(st.message()));
  if (st.code() == absl::StatusCode::kInvalidArgument ||
      st.code() == absl::StatusCode::kOutOfRange) {
    absl::string_view why;
    std::vector<std::string> fields = FieldPaths(st.message(), &why);
    if (!fields.empty()) {
      google::rpc::BadRequest bad;
      for (const std::string& f : fields) {
        google::rpc::BadRequest::FieldViolation* v = bad.add_field_violations();
        v->set_field(f);
        v->set_description(std::string(why));
      }
      rich.add_details()->PackFrom(bad);
    }
  }
  if (auto ms = RetryAfterMs(st)) {
    google::rpc::RetryInfo retry;
    retry.mutable_retry_delay()->set_seconds(*ms / 1000);
    retry.mutable_retry_delay()->set_nanos(static_cast<int32_t>((*ms % 1000) * 1'000'000));
    rich.add_details()->PackFrom(retry);
  }
  if (rich.details_size() == 0) return "";
  return rich.SerializeAsString();
}

grpc::Status ToGrpc(const absl::Status& st) {
  if (st.ok()) return grpc::Status::OK;
  // absl and gRPC share their numeric codes. The details (google.rpc.Status, sent as the
  // grpc-status-details-bin trailer) carry the refused fields and the retry delay.
  return grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message()),
                      ErrorDetails(st));
}

absl::Status FromGrpc(const grpc::Status& st) {
  if (st.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
}

int HttpCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
      return 400;
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kFailedPrecondition:
      return 409;
    case absl::StatusCode::kAlreadyExists:
      return 409;
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    case absl::StatusCode::kCancelled:
      return 499;
    default:
      return 500;
  }
}

std::optional<int64_t> RetryAfterMs(const absl::Status& st) {
  auto payload = st.GetPayload(core::kRetryAfterPayload);
  if (!payload) return std::nullopt;
  int64_t ms = 0;
  if (!absl::SimpleAtoi(std::string(*payload), &ms)) return std::nullopt;
  return ms;
}

}  // namespace drover::api
