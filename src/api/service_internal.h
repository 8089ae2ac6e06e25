// Private to the api part: how Service answers when a command cannot be queued, shared by
// service.cc and service_metrics.cc.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "api/runtime.h"
#include "core/engine.h"

namespace drover::api::internal {

inline absl::Status Busy() {
  absl::Status st =
      absl::ResourceExhaustedError("server busy: the command queue is full; retry shortly");
  st.SetPayload(core::kRetryAfterPayload, absl::Cord("100"));
  return st;
}

// Why a command could not be queued.
inline absl::Status Refused(const Runtime& runtime) {
  if (runtime.stopping()) return absl::UnavailableError("server is shutting down; retry shortly");
  if (absl::Status st = runtime.store_status(); !st.ok()) return st;
  return Busy();
}

}  // namespace drover::api::internal
