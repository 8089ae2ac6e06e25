// Reading a whole file.
#pragma once

#include <optional>
#include <string>

namespace drover {

// The file's bytes, or nullopt when it cannot be opened (callers name the flag or key in
// their error).
std::optional<std::string> ReadWholeFile(const std::string& path);

}  // namespace drover
