#include "cli/forecast_command.h"

#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/common.h"
#include "fmt/core.h"
#include "fmt/format.h"
#include "scale/backtest.h"
#include "scale/members.h"
#include "sim/simulator.h"

namespace drover::cli {

void ForecastCommand::Add(CLI::App& app) {
  cmd_ = app.add_subcommand("forecast",
                            "A pool's forecast: 15, 30 and 60 minutes ahead with intervals, "
                            "confidence, the members' weights and errors");
  cmd_->add_option("pool", pool_, "the pool");
  backtest_ = cmd_->add_subcommand(
      "backtest", "Rolling-origin backtest of the forecasters on a trace (no server needed)");
  backtest_->add_option("--trace", trace_, "CSV with minute,arrivals or second,arrivals")
      ->required();
  backtest_->add_option("--model", models_,
                        "a forecaster (repeatable; default all: seasonal_naive, holt_winters, "
                        "gbt, lstm); their ensemble is scored too");
  backtest_->add_option("--horizons", horizons_, "minutes, multiples of 5 up to 60 (15,30,60)");
  backtest_->add_option("--train", train_, "history before the first forecast (7d)");
  backtest_->add_option("--refit", refit_, "retraining interval along the trace (1d)");
  backtest_->add_option("--service-time", service_,
                        "mean run time for the MAE in agents (lognormal:20s)");
  backtest_->add_option("--slots", slots_, "tasks per agent, for the MAE in agents (1)");
  backtest_->add_option("--wait-objective", objective_, "the sizing's p95 wait (60s)");
  backtest_->add_option("--scale", scale_, "multiply every bucket's arrivals by this");
  backtest_->add_option("--seed", seed_, "the models' seed (1)");
}

int ForecastCommand::RunOffline() {
  absl::StatusOr<sim::Trace> trace = sim::LoadTrace(trace_);
  if (!trace.ok()) return Fail(trace.status());
  if (!(scale_ > 0 && scale_ <= 1000)) {
    return Fail(absl::InvalidArgumentError("--scale: must be > 0 and <= 1000"));
  }
  if (scale_ != 1) *trace = sim::ScaleTrace(*trace, scale_, seed_);
  scale::Series s;
  for (int64_t a : sim::PerMinute(*trace)) s.arrivals.push_back(static_cast<double>(a));
  scale::BacktestOptions o;
  o.models = models_.empty() ? scale::ForecasterNames() : models_;
  for (const std::string& m : o.models) {
    if (absl::Status st = scale::CheckForecasterName(m); !st.ok()) {
      return Fail(absl::InvalidArgumentError(absl::StrCat("--model: ", st.message().substr(7))));
    }
  }
  std::vector<int> horizons;
  for (absl::string_view h : absl::StrSplit(horizons_, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(h, &v) || v < 5 || v > 60 || v % 5 != 0) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--horizons: '", h, "' is not a multiple of 5 minutes from 5 to 60")));
    }
    horizons.push_back(v);
  }
  absl::StatusOr<absl::Duration> train = ParseDuration("--train", train_);
  if (!train.ok()) return Fail(train.status());
  absl::StatusOr<absl::Duration> refit = ParseDuration("--refit", refit_);
  if (!refit.ok()) return Fail(refit.status());
  absl::StatusOr<absl::Duration> objective = ParseDuration("--wait-objective", objective_);
  if (!objective.ok()) return Fail(objective.status());
  absl::StatusOr<sim::ServiceTime> service = sim::ParseServiceTime(service_);
  if (!service.ok()) return Fail(service.status());
  if (slots_ < 1 || slots_ > 1024) return Fail(absl::InvalidArgumentError("--slots: 1 to 1024"));
  o.train_minutes = absl::ToInt64Minutes(*train);
  o.refit_minutes = absl::ToInt64Minutes(*refit);
  o.sizing.service_s = absl::ToDoubleSeconds(service->mean);
  o.sizing.slots = slots_;
  o.sizing.objective_s = absl::ToDoubleSeconds(*objective);
  o.seed = seed_;
  fmt::print("backtest of {} on {}: {} minutes, first forecast after {}, retrained every {}\n",
             fmt::format("{}", fmt::join(o.models, ", ")), trace_, s.size(), train_, refit_);
  absl::StatusOr<scale::BacktestReport> r = scale::Backtest(s, o);
  if (!r.ok()) return Fail(r.status());
  fmt::print("{:<15} {:>7} {:>9} {:>8} {:>9} {:>10} {:>9}\n", "model", "horizon", "MAE/min", "MAPE",
             "p10-p90", "MAE agents", "fit s");
  for (size_t i = 0; i < r->scores.size(); ++i) {
    const scale::Ensemble::ModelScores& m = r->scores[i];
    for (int h : horizons) {
      const scale::Scores& sc = m.at[static_cast<size_t>(h / 5 - 1)];
      fmt::print("{:<15} {:>6}m {:>9.2f} {:>7.1f}% {:>8.1f}% {:>10.2f} {:>9}\n", m.model, h, sc.mae,
                 sc.mape * 100, sc.coverage * 100, sc.mae_agents,
                 i < r->fit_seconds.size() ? fmt::format("{:.1f}", r->fit_seconds[i]) : "-");
    }
  }
  // The ensemble against seasonal naive, where both ran.
  const scale::Ensemble::ModelScores* naive = nullptr;
  for (const auto& m : r->scores) {
    if (m.model == "seasonal_naive") naive = &m;
  }
  if (naive != nullptr) {
    for (int h : horizons) {
      const size_t k = static_cast<size_t>(h / 5 - 1);
      const double base = naive->at[k].mae;
      if (base > 0) {
        fmt::print("ensemble vs seasonal_naive at {}m: {:+.1f}% MAE\n", h,
                   100 * (r->scores.back().at[k].mae / base - 1));
      }
    }
  }
  fmt::print("{} forecasts, {} trainings, {:.1f} s\n", r->origins, r->fits, r->seconds);
  return 0;
}

int ForecastCommand::Run(client::Client& c) {
  if (pool_.empty())
    return Fail(absl::InvalidArgumentError("pool: which pool? (drover forecast POOL)"));
  absl::StatusOr<v1::ListPoolsResponse> pools = c.ListPools();
  if (!pools.ok()) return Fail(pools.status());
  for (const v1::PoolStatus& p : pools->pools()) {
    if (p.name() != pool_) continue;
    if (p.mode() == "reactive" || p.mode().empty()) {
      fmt::print(
          "pool {} is in mode reactive: it does not forecast (set mode shadow or "
          "predictive: drover pools apply)\n",
          p.name());
      return 0;
    }
    const v1::PoolForecast& f = p.forecast();
    fmt::print(
        "pool {}  mode {}  model {}  history {} minutes  service {:.1f} s  start-up {:.0f} s"
        "  trainings {}  fallbacks {}\n",
        p.name(), p.mode(), f.model().empty() ? "-" : f.model(), f.history_minutes(), f.service_s(),
        f.startup_s(), p.model_fits_total(), p.fallbacks_total());
    if (!p.model_error().empty()) fmt::print("model error: {}\n", p.model_error());
    if (f.horizons_size() == 0) {
      fmt::print("no forecast yet (the forecasters train once the pool has an hour of history)\n");
      return 0;
    }
    fmt::print("{:>7} {:>9} {:>9} {:>9} {:>9} {:>7} {:>10}   (arrivals per minute)\n", "horizon",
               "mean", "p10", "p50", "p90", "agents", "confidence");
    for (const v1::ForecastHorizon& h : f.horizons()) {
      fmt::print("{:>6}m {:>9.1f} {:>9.1f} {:>9.1f} {:>9.1f} {:>7} {:>10.2f}\n", h.minutes(),
                 h.mean(), h.p10(), h.p50(), h.p90(), h.agents(), h.confidence());
    }
    if (f.scores_size() > 0) {
      fmt::print("{:<15} {:>7} {:>7} {:>8} {:>10} {:>9} {:>8}\n", "model", "horizon", "weight",
                 "MAE/min", "MAE agents", "p10-p90", "scored");
      for (const v1::ModelScore& s : f.scores()) {
        fmt::print("{:<15} {:>6}m {:>7.2f} {:>8.2f} {:>10.2f} {:>8.0f}% {:>8}\n", s.model(),
                   s.minutes(), s.model() == "ensemble" ? 1.0 : s.weight(), s.mae(), s.mae_agents(),
                   s.coverage() * 100, s.samples());
      }
    }
    return 0;
  }
  return Fail(absl::NotFoundError(absl::StrCat("pool: no pool named \"", pool_, "\"")));
}

}  // namespace drover::cli
