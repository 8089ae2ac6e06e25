// scale: the registry of forecasters by name. The learned members (gbt on XGBoost, lstm on
// libtorch) live in a module, libdrover_learned.so, loaded on first use (learned.cc).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "scale/forecast.h"

namespace drover::scale {

std::vector<std::string> ForecasterNames();
// OK for a known name (without loading anything); else the error names it and the known.
absl::Status CheckForecasterName(const std::string& name);
absl::StatusOr<std::unique_ptr<Forecaster>> NewForecaster(const std::string& name, uint64_t seed);

}  // namespace drover::scale
