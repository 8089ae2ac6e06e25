#include "scale/members.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "scale/seasonal.h"

namespace drover::scale {
namespace {

using NewLearned = Forecaster* (*)(const char*, uint64_t);

// The learned models' module: $DROVER_LEARNED_LIB, else libdrover_learned.so beside the
// running binary (the build tree and an install), else ../lib/drover/ from it. Loaded once.
absl::StatusOr<NewLearned> Learned() {
  static std::once_flag once;
  static absl::StatusOr<NewLearned> fn = absl::UnknownError("not loaded");
  std::call_once(once, [] {
    std::vector<std::string> tried;
    if (const char* env = std::getenv("DROVER_LEARNED_LIB"); env != nullptr && *env != '\0') {
      tried.push_back(env);
    } else {
      char self[4096];
      const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
      std::string dir = n > 0 ? std::string(self, static_cast<size_t>(n)) : std::string();
      dir = dir.substr(0, dir.rfind('/') + 1);
      tried.push_back(dir + "libdrover_learned.so");
      tried.push_back(dir + "../lib/drover/libdrover_learned.so");
    }
    std::string errors;
    for (const std::string& path : tried) {
      void* h = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (h == nullptr) {
        absl::StrAppend(&errors, errors.empty() ? "" : "; ", ::dlerror());
        continue;
      }
      void* sym = ::dlsym(h, "drover_new_learned_forecaster");
      if (sym == nullptr) {
        absl::StrAppend(&errors, errors.empty() ? "" : "; ", path, ": not a drover module");
        continue;
      }
      fn = reinterpret_cast<NewLearned>(sym);
      return;
    }
    fn = absl::FailedPreconditionError(
        absl::StrCat("the learned models' library (gbt, lstm) cannot be loaded: ", errors,
                     " (set DROVER_LEARNED_LIB to its path)"));
  });
  return fn;
}

}  // namespace

std::vector<std::string> ForecasterNames() {
  return {"seasonal_naive", "holt_winters", "gbt", "lstm"};
}

absl::Status CheckForecasterName(const std::string& name) {
  const std::vector<std::string> names = ForecasterNames();
  if (std::find(names.begin(), names.end(), name) != names.end()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("model: unknown \"", name, "\" (known: ", absl::StrJoin(names, ", "), ")"));
}

absl::StatusOr<std::unique_ptr<Forecaster>> NewForecaster(const std::string& name, uint64_t seed) {
  if (name == "seasonal_naive") return std::make_unique<SeasonalNaive>();
  if (name == "holt_winters") return std::make_unique<HoltWinters>();
  if (absl::Status st = CheckForecasterName(name); !st.ok()) return st;
  absl::StatusOr<NewLearned> make = Learned();
  if (!make.ok())
    return absl::Status(make.status().code(), absl::StrCat(name, ": ", make.status().message()));
  Forecaster* f = (*make)(name.c_str(), seed);
  if (f == nullptr) return absl::InternalError(absl::StrCat(name, ": the module does not make it"));
  return std::unique_ptr<Forecaster>(f);
}

}  // namespace drover::scale
