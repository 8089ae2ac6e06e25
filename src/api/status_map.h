// The one table from absl::Status to gRPC and HTTP.
#pragma once

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"

namespace drover::api {

grpc::Status ToGrpc(const absl::Status& st);
absl::Status FromGrpc(const grpc::Status& st);
int HttpCode(absl::StatusCode code);
// The retry-after hint of a RESOURCE_EXHAUSTED status, in milliseconds.
std::optional<int64_t> RetryAfterMs(const absl::Status& st);

}  // namespace drover::api
