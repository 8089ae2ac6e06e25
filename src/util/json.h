// JSON text checks shared by the engine (payloads, results, checkpoints and message bodies
// marked *_json) and the HTTP gateway. The parser is nlohmann/json (Debian's
// nlohmann-json3-dev); it stays out of this header.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace drover::util {

// OK when `text` is one complete JSON value (RFC 8259; surrounding whitespace allowed).
// Otherwise InvalidArgument "<field>: not valid JSON (<where and why>)".
absl::Status CheckJson(absl::string_view text, absl::string_view field);

}  // namespace drover::util
