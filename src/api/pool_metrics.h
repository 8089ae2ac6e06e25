// Prometheus families of pools' predictive autoscaling (docs/pools.md#metrics,
// docs/autoscaling.md#alerts), rendered from ListPools' answer. Part of /metrics.
//
// Labels stay bounded: pool, mode, horizon ("15m", "30m", "60m"), model (the ensemble's
// members and "ensemble"), stat, direction and band; never an id.
//
// Threading: a pure function of its arguments.
#pragma once

#include "drover/v1/drover.pb.h"
#include "obs/metrics.h"

namespace drover::api {

// drover_pool_mode for every pool; the forecast, its scores and the predictive counters
// for pools whose mode is not "reactive".
void WritePredictivePoolMetrics(const v1::ListPoolsResponse& pools, obs::PromWriter& w);

}  // namespace drover::api
