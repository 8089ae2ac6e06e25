#include "util/json.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace drover::util {

absl::Status CheckJson(absl::string_view text, absl::string_view field) {
  if (nlohmann::json::accept(text.begin(), text.end())) return absl::OkStatus();
  // The slow path only for a refusal: parse again for the parser's account of where.
  std::string why = "empty";
  try {
    (void)nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    why = e.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 2: ..." -> from "at".
    if (auto at = why.find("parse error"); at != std::string::npos) why = why.substr(at);
  }
  return absl::InvalidArgumentError(absl::StrCat(field, ": not valid JSON (", why, ")"));
}

}  // namespace drover::util
