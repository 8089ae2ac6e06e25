#include "api/pool_metrics.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace drover::api {
namespace {

// The horizons a forecast is published at; others (none today) are left out.
bool Published(int minutes) { return minutes == 15 || minutes == 30 || minutes == 60; }
std::string Horizon(int minutes) { return absl::StrCat(minutes, "m"); }

bool Predictive(const v1::PoolStatus& p) { return !p.mode().empty() && p.mode() != "reactive"; }

// Predictive decisions by (direction, band): every known pair (0 until counted, so rates
// over them exist from the start), and whatever else the map holds.
std::map<std::pair<std::string, std::string>, int64_t> DecisionsOf(const v1::PoolStatus& p) {
  std::map<std::pair<std::string, std::string>, int64_t> out;
  for (const char* dir : {"up", "down", "hold"}) {
    for (const char* band : {"high", "blend", "low"}) out[{dir, band}] = 0;
  }
  for (const auto& [key, n] : p.predictive_decisions()) {
    std::vector<std::string> parts = absl::StrSplit(key, absl::MaxSplits('/', 1));
    if (parts.size() != 2) continue;
    out[{parts[0], parts[1]}] = n;
  }
  return out;
}

}  // namespace

void WritePredictivePoolMetrics(const v1::ListPoolsResponse& ps, obs::PromWriter& w) {
  w.Family("drover_pool_mode", "gauge",
           "1 for a pool's autoscaling mode (reactive, shadow or predictive).");
  for (const v1::PoolStatus& p : ps.pools()) {
    w.Sample({{"pool", p.name()}, {"mode", p.mode().empty() ? "reactive" : p.mode()}}, 1);
  }
  std::vector<const v1::PoolStatus*> pools;
  for (const v1::PoolStatus& p : ps.pools()) {
    if (Predictive(p)) pools.push_back(&p);
  }
  w.Family("drover_pool_forecast_mae", "gauge",
           "Mean absolute error of a pool's forecasts (arrivals per minute, 5-minute window "
           "means), by horizon and model.");
  for (const v1::PoolStatus* p : pools) {
    for (const v1::ModelScore& s : p->forecast().scores()) {
      if (!Published(s.minutes())) continue;
      w.Sample({{"pool", p->name()}, {"horizon", Horizon(s.minutes())}, {"model", s.model()}},
               s.mae());
    }
  }
  w.Family("drover_pool_forecast_mae_agents", "gauge",
           "Mean absolute error of a pool's forecasts in agents (through the sizing model), "
           "by horizon and model.");
  for (const v1::PoolStatus* p : pools) {
    for (const v1::ModelScore& s : p->forecast().scores()) {
      if (!Published(s.minutes())) continue;
      w.Sample({{"pool", p->name()}, {"horizon", Horizon(s.minutes())}, {"model", s.model()}},
               s.mae_agents());
    }
  }
  w.Family("drover_pool_forecast_confidence", "gauge",
           "Confidence [0, 1] of a pool's latest forecast, by horizon.");
  for (const v1::PoolStatus* p : pools) {
    for (const v1::ForecastHorizon& h : p->forecast().horizons()) {
      if (!Published(h.minutes())) continue;
      w.Sample({{"pool", p->name()}, {"horizon", Horizon(h.minutes())}}, h.confidence());
    }
  }
  w.Family("drover_pool_forecast_arrivals", "gauge",
           "A pool's latest forecast of arrivals per minute, by horizon; stat is p10, p50, p90 "
           "or mean.");
  for (const v1::PoolStatus* p : pools) {
    for (const v1::ForecastHorizon& h : p->forecast().horizons()) {
      if (!Published(h.minutes())) continue;
      const std::string hz = Horizon(h.minutes());
      w.Sample({{"pool", p->name()}, {"horizon", hz}, {"stat", "p10"}}, h.p10());
      w.Sample({{"pool", p->name()}, {"horizon", hz}, {"stat", "p50"}}, h.p50());
      w.Sample({{"pool", p->name()}, {"horizon", hz}, {"stat", "p90"}}, h.p90());
      w.Sample({{"pool", p->name()}, {"horizon", hz}, {"stat", "mean"}}, h.mean());
    }
  }
  w.Family("drover_pool_forecast_agents", "gauge",
           "Agents the p90 of a pool's latest forecast needs, by horizon.");
  for (const v1::PoolStatus* p : pools) {
    for (const v1::ForecastHorizon& h : p->forecast().horizons()) {
      if (!Published(h.minutes())) continue;
      w.Sample({{"pool", p->name()}, {"horizon", Horizon(h.minutes())}}, h.agents());
    }
  }
  w.Family("drover_pool_forecast_fallbacks_total", "counter",
           "Predictive decisions of a pool that fell back to the reactive rule (confidence "
           "below the floor).");
  for (const v1::PoolStatus* p : pools) {
    w.Sample({{"pool", p->name()}}, static_cast<double>(p->fallbacks_total()));
  }
  w.Family("drover_pool_predictive_decisions_total", "counter",
           "Predictive decisions of a pool, by direction (up, down, hold) and confidence band "
           "(high: the forecast, blend, low: the reactive rule).");
  for (const v1::PoolStatus* p : pools) {
    for (const auto& [key, n] : DecisionsOf(*p)) {
      w.Sample({{"pool", p->name()}, {"direction", key.first}, {"band", key.second}},
               static_cast<double>(n));
    }
  }
  w.Family("drover_pool_shadow_disagreements_total", "counter",
           "Decisions of a pool in mode shadow whose predictive answer differed from the "
           "reactive one applied.");
  for (const v1::PoolStatus* p : pools) {
    w.Sample({{"pool", p->name()}}, static_cast<double>(p->shadow_disagreements_total()));
  }
  w.Family("drover_pool_model_fits_total", "counter", "Trainings of a pool's forecasters.");
  for (const v1::PoolStatus* p : pools) {
    w.Sample({{"pool", p->name()}}, static_cast<double>(p->model_fits_total()));
  }
  // In seconds, not the status' hours: Prometheus base units (docs/decisions/0002-naming.md).
  w.Family("drover_pool_saved_agent_seconds", "gauge",
           "Agent time a pool in mode predictive saved against the reactive answer, in seconds "
           "(estimate; negative: it ran more).");
  for (const v1::PoolStatus* p : pools) {
    w.Sample({{"pool", p->name()}}, p->saved_agent_hours() * 3600);
  }
  w.Family("drover_pool_saved_cost", "gauge",
           "What a pool in mode predictive saved against the reactive answer: saved agent-hours "
           "x the pool's price per agent-hour (negative: it spent more).");
  for (const v1::PoolStatus* p : pools) {
    w.Sample({{"pool", p->name()}}, p->saved_agent_hours() * p->price_per_agent_hour());
  }
}

}  // namespace drover::api
