// Private to drover_cli: output and flag helpers shared by the subcommands.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/message.h"

namespace drover::cli {

// Prints "drover: <message>" (and a hint for UNAVAILABLE or a retry-after); returns 1.
int Fail(const absl::Status& st);
// The message as indented JSON with proto field names.
std::string Json(const google::protobuf::Message& m);
// "500ms", "30s", "10m", "2h"; an error names `flag`.
// A duration of absl's form (500ms, 30s, 10m, 2h) or in days (7d, 1.5d); errors name the flag.
absl::StatusOr<absl::Duration> ParseDuration(const std::string& flag, const std::string& s);
// "12s", "5m", "3h", "2d" since `unix_ms`; "-" for 0.
std::string Age(int64_t unix_ms);
// At most `max` bytes, non-printable ones as '.', with the full size when cut.
std::string Printable(const std::string& bytes, size_t max);

}  // namespace drover::cli
