// Private to drover_core: the name rule shared by task types, tenants and workflow steps.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "drover/v1/drover.pb.h"

namespace drover::core::internal {

inline constexpr size_t kMaxNameLen = 64;

// A priority as queues and admission rank it: unspecified is normal.
inline int EffectivePriority(v1::Priority p) {
  return p == v1::PRIORITY_UNSPECIFIED ? static_cast<int>(v1::PRIORITY_NORMAL)
                                       : static_cast<int>(p);
}
// depends_on + depends_on_finished of one task: a reducer may have a parent per item of the
// largest batch.
inline constexpr int kMaxParents = 100'000;

// 1 to 64 characters of [A-Za-z0-9_.-].
inline bool ValidName(const std::string& s) {
  if (s.empty() || s.size() > kMaxNameLen) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.') {
      return false;
    }
  }
  return true;
}

// "FIELD: required" or "FIELD: 'value' must be 1 to 64 characters of [A-Za-z0-9_.-]".
inline absl::Status NameError(const std::string& field, const std::string& value) {
  if (value.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": required"));
  return absl::InvalidArgumentError(absl::StrCat(field, ": '", value.substr(0, 80),
                                                 "' must be 1 to ", kMaxNameLen,
                                                 " characters of [A-Za-z0-9_.-]"));
}

}  // namespace drover::core::internal
