// The one table from absl::Status to gRPC and HTTP.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"

namespace drover::api {

// With the rich error details (ErrorDetails) when there are any.
grpc::Status ToGrpc(const absl::Status& st);
// A serialized google.rpc.Status for a refusal: google.rpc.BadRequest naming the fields an
// INVALID_ARGUMENT message starts with, google.rpc.RetryInfo for a retry-after; "" when
// there is neither.
std::string ErrorDetails(const absl::Status& st);
absl::Status FromGrpc(const grpc::Status& st);
int HttpCode(absl::StatusCode code);
// The retry-after hint of a RESOURCE_EXHAUSTED status, in milliseconds.
std::optional<int64_t> RetryAfterMs(const absl::Status& st);

}  // namespace drover::api
