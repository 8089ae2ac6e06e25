// forecast_bench: what predictive autoscaling costs in `drover serve`. Trains every member
// on the first --train-days of a trace (timing each: the LSTM's goal is <= 60 s on 14 days),
// then times, minute by minute over the next --minutes, what a pool does per closed minute
// (score and forecast: Ensemble::OnMinute) and per sync (DecidePredictive), and prints the
// p50/p99/max per minute (goal: a forecast plus a decision <= 5 ms per pool per sync).
//   forecast_bench --trace traces/nasa_http_jul95.csv [--train-days 14] [--minutes 1440]
// The learned members are loaded from libdrover_learned.so beside this binary (or
// $DROVER_LEARNED_LIB).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "scale/ensemble.h"
#include "scale/members.h"
#include "scale/predictive.h"
#include "sim/simulator.h"

namespace {
double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
double Pct(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}
}  // namespace

int main(int argc, char** argv) {
  std::string trace_path = "traces/nasa_http_jul95.csv";
  int train_days = 14, minutes = 1440;
  std::vector<std::string> models;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--trace")
      trace_path = v;
    else if (a == "--train-days")
      train_days = std::atoi(v.c_str());
    else if (a == "--minutes")
      minutes = std::atoi(v.c_str());
    else if (a == "--model")
      models.push_back(v);
    else {
      std::fprintf(stderr, "forecast_bench: unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  auto trace = drover::sim::LoadTrace(trace_path);
  if (!trace.ok()) {
    std::fprintf(stderr, "%s\n", std::string(trace.status().message()).c_str());
    return 1;
  }
  drover::scale::Series all;
  for (int64_t a : drover::sim::PerMinute(*trace)) all.arrivals.push_back(static_cast<double>(a));
  const size_t train = std::min(all.size(), static_cast<size_t>(train_days) * 1440);
  drover::scale::EnsembleOptions o;
  o.members = models.empty() ? drover::scale::ForecasterNames() : models;
  auto e = drover::scale::Ensemble::Create(o);
  if (!e.ok()) {
    std::fprintf(stderr, "%s\n", std::string(e.status().message()).c_str());
    return 1;
  }
  (*e)->set_sizing({20, 1, 60, 0.95});
  const drover::scale::Series history = all.Prefix(train);
  std::vector<std::unique_ptr<drover::scale::Forecaster>> fitted;
  std::printf("training on %zu minutes (%d days), one thread each:\n", train, train_days);
  for (const std::string& m : o.members) {
    auto f = drover::scale::NewForecaster(m, 1);
    if (!f.ok()) {
      std::fprintf(stderr, "%s\n", std::string(f.status().message()).c_str());
      return 1;
    }
    const auto t0 = std::chrono::steady_clock::now();
    if (auto st = (*f)->Fit(history); !st.ok()) {
      std::fprintf(stderr, "%s: %s\n", m.c_str(), std::string(st.message()).c_str());
      return 1;
    }
    std::printf("  %-15s fit %.2f s\n", m.c_str(), Since(t0));
    fitted.push_back(std::move(*f));
  }
  (*e)->Install(std::move(fitted));
  drover::scale::Series known = history;
  std::vector<double> forecast_ms, decide_ms;
  drover::scale::PredictiveSpec spec;
  for (int i = 0; i < minutes && known.size() < all.size(); ++i) {
    known.arrivals.push_back(all.arrivals[known.size()]);
    auto t0 = std::chrono::steady_clock::now();
    (*e)->OnMinute(known);
    forecast_ms.push_back(Since(t0) * 1000);
    drover::scale::PredictiveInputs in;
    in.forecast = &(*e)->latest();
    in.service_s = 20;
    in.current = 20;
    in.reactive = 20;
    t0 = std::chrono::steady_clock::now();
    const drover::scale::PredictiveDecision d = drover::scale::DecidePredictive(spec, in);
    decide_ms.push_back(Since(t0) * 1000);
    if (d.desired < 0) return 1;  // (keeps the call)
  }
  std::printf(
      "per closed minute, score + forecast (%zu members + ensemble): p50 %.3f ms, "
      "p99 %.3f ms, max %.3f ms\n",
      o.members.size(), Pct(forecast_ms, 0.5), Pct(forecast_ms, 0.99),
      *std::max_element(forecast_ms.begin(), forecast_ms.end()));
  std::printf("per sync, the decision: p50 %.4f ms, p99 %.4f ms\n", Pct(decide_ms, 0.5),
              Pct(decide_ms, 0.99));
  std::printf("a forecast plus a decision: p99 %.3f ms (goal <= 5 ms per pool per sync)\n",
              Pct(forecast_ms, 0.99) + Pct(decide_ms, 0.99));
  return 0;
}
