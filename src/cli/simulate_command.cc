#include "cli/simulate_command.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cli/common.h"
#include "fmt/core.h"
#include "sim/simulator.h"

namespace drover::cli {

void SimulateCommand::Add(CLI::App& app) {
  cmd_ = app.add_subcommand(
      "simulate",
      "Replay a trace of arrivals through the engine and autoscaler on a virtual clock");
  cmd_->add_option("--trace", trace_, "CSV with minute,arrivals or second,arrivals")->required();
  cmd_->add_option("--policy", policies_,
                   "static:N, static-peak, static-mean, hpa[:TARGET pending per agent], "
                   "hpa-util[:TARGET], predictive[:MODEL], shadow, oracle (repeatable; "
                   "default: static-peak, static-mean, hpa)");
  cmd_->add_option("--models", models_,
                   "forecasters of the predictive/shadow ensemble (repeatable; default all: "
                   "seasonal_naive, holt_winters, gbt, lstm)");
  cmd_->add_option("--fallback", fallback_,
                   "the reactive rule of predictive, shadow and oracle: hpa-util (default) or hpa");
  cmd_->add_option("--scale", scale_, "multiply every bucket's arrivals by this (thinning)");
  cmd_->add_option("--history", history_,
                   "a trace the forecasters learn from first, as if it came just before");
  cmd_->add_option("--judge-after", judge_after_,
                   "count the figures only after this much of the trace (e.g. 7d)");
  cmd_->add_option("--service-time", service_,
                   "fixed:D, exp:D or lognormal:D[:SIGMA], mean D (default exp:1s)");
  cmd_->add_option("--startup", startup_, "a new agent's start-up delay (default 30s)");
  cmd_->add_option("--failure-rate", failure_rate_, "share of attempts that fail (default 0)");
  cmd_->add_option("--slots", slots_, "tasks per agent at once (default 1)");
  cmd_->add_option("--price", price_, "price per agent-hour (default 1)");
  cmd_->add_option("--class", classes_,
                   "capacity class NAME:PRICE:INTERRUPTIONS_PER_HOUR[:MAX_AGENTS] (repeatable; "
                   "new agents take the cheapest with room)");
  cmd_->add_option("--wait-objective", objective_,
                   "a minute violates it when its p95 wait exceeds this (default 60s)");
  cmd_->add_option("--max-agents", max_agents_, "upper bound of the reactive policies (1000)");
  cmd_->add_option("--capacity", capacity_, "admission control: outstanding tasks at most");
  cmd_->add_option("--seed", seed_, "randomness of arrivals and service times (default 1)");
  cmd_->add_flag("--even-arrivals", even_, "space a bucket's arrivals evenly (else at random)");
  cmd_->add_option("--out", out_, "directory for a per-minute CSV and an SVG chart per policy");
}

int SimulateCommand::Run() {
  absl::StatusOr<sim::Trace> trace = sim::LoadTrace(trace_);
  if (!trace.ok()) return Fail(trace.status());
  if (!(scale_ > 0 && scale_ <= 1000)) {
    return Fail(absl::InvalidArgumentError("--scale: must be > 0 and <= 1000"));
  }
  if (scale_ != 1) *trace = sim::ScaleTrace(*trace, scale_, seed_);
  sim::SimConfig config;
  absl::StatusOr<sim::ServiceTime> service = sim::ParseServiceTime(service_);
  if (!service.ok()) return Fail(service.status());
  config.service = *service;
  for (auto [flag, text, target] :
       {std::tuple{"--startup", &startup_, &config.startup},
        std::tuple{"--wait-objective", &objective_, &config.wait_objective}}) {
    absl::StatusOr<absl::Duration> d = ParseDuration(flag, *text);
    if (!d.ok()) return Fail(d.status());
    *target = *d;
  }
  {
    absl::StatusOr<absl::Duration> parsed = ParseDuration("--judge-after", judge_after_);
    if (!parsed.ok()) return Fail(parsed.status());
    const absl::Duration d = *parsed;
    if (d >= trace->span()) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("--judge-after: ", judge_after_, " is not shorter than the trace (",
                       absl::FormatDuration(trace->span()), ")")));
    }
    config.judge_after = d;
  }
  if (!history_.empty()) {
    absl::StatusOr<sim::Trace> h = sim::LoadTrace(history_);
    if (!h.ok())
      return Fail(
          absl::Status(h.status().code(), absl::StrCat("--history: ", h.status().message())));
    if (scale_ != 1) *h = sim::ScaleTrace(*h, scale_, seed_ + 1);
    config.history = sim::PerMinute(*h);
  }
  config.failure_rate = failure_rate_;
  config.slots = slots_;
  if (!(price_ >= 0)) return Fail(absl::InvalidArgumentError("--price: must be >= 0"));
  config.price_per_agent_hour = price_;
  for (const std::string& c : classes_) {
    absl::StatusOr<sim::CapacityClass> k = sim::ParseCapacityClass(c);
    if (!k.ok()) return Fail(k.status());
    config.classes.push_back(*k);
  }
  if (max_agents_ < 1) return Fail(absl::InvalidArgumentError("--max-agents: must be >= 1"));
  if (capacity_ < 1) return Fail(absl::InvalidArgumentError("--capacity: must be >= 1"));
  config.capacity = capacity_;
  config.seed = seed_;
  config.even_arrivals = even_;
  if (policies_.empty()) policies_ = {"static-peak", "static-mean", "hpa"};
  std::vector<sim::Policy> policies;
  for (const std::string& p : policies_) {
    absl::StatusOr<sim::Policy> policy = sim::ParsePolicy(p, max_agents_, fallback_, models_);
    if (!policy.ok()) return Fail(policy.status());
    policies.push_back(*policy);
  }
  if (!out_.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(out_, ec);
    if (ec) return Fail(absl::InvalidArgumentError(absl::StrCat("--out: ", ec.message())));
  }
  fmt::print("trace {}: {} {}s, {} arrivals (peak {} per {})\n", trace_, trace->arrivals.size(),
             trace->bucket == absl::Minutes(1) ? "minute" : "second", trace->total(), trace->peak(),
             trace->bucket == absl::Minutes(1) ? "minute" : "second");
  fmt::print(
      "{:<14} {:>10} {:>10} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>6} {:>5} {:>7}\n",
      "policy", "agent-h", "cost", "slack", "wait p50", "p95", "p99", "max", "violated", "dropped",
      "actions", "flaps", "peak", "run s");
  const bool classes = !config.classes.empty();
  if (config.judge_after > absl::ZeroDuration()) {
    fmt::print("figures count from {} on (every policy runs the whole trace)\n",
               absl::FormatDuration(config.judge_after));
  }
  std::vector<std::pair<std::string, double>> hours;  // policy, agent-hours
  for (const sim::Policy& p : policies) {
    absl::StatusOr<sim::SimReport> r = sim::Run(*trace, config, p);
    if (!r.ok()) return Fail(r.status());
    hours.emplace_back(p.name, r->agent_hours);
    fmt::print(
        "{:<14} {:>10.1f} {:>10.2f} {:>5.1f}% {:>8.2f}s {:>8.2f}s {:>8.2f}s {:>8.1f}s {:>5}/{:<4} "
        "{:>7} {:>7} {:>6} {:>5} {:>7.1f}\n",
        r->policy, r->agent_hours, r->cost, r->slack * 100, r->wait_p50_s, r->wait_p95_s,
        r->wait_p99_s, r->wait_max_s, r->minutes_violated, r->minutes, r->dropped, r->scale_actions,
        r->flaps, r->peak_agents, r->seconds);
    if (classes) fmt::print("{:<14} {} interruptions\n", "", r->interruptions);
    fmt::print("{:<14} tasks taken by a running agent {}, by one started after them {}{}\n", "",
               r->acquired_warm, r->acquired_cold,
               r->acquired_cold > 0
                   ? fmt::format(" (they waited p95 {:.1f}s)", r->acquire_cold_p95_s)
                   : "");
    if (p.kind == sim::Policy::Kind::kForecast) {
      fmt::print(
          "{:<14} decisions {}, fallbacks to {} {} ({:.1f}%), answers differing {}, model fits "
          "{}{}\n",
          "", r->decisions, fallback_, r->fallbacks,
          r->decisions > 0 ? 100.0 * r->fallbacks / r->decisions : 0.0, r->disagreements, r->fits,
          r->model_error.empty() ? "" : absl::StrCat(", model error: ", r->model_error));
      for (const scale::Ensemble::ModelScores& ms : r->scores) {
        if (p.oracle) break;  // (the truth needs no scoring)
        std::string line;
        for (int h : {15, 30, 60}) {
          const scale::Scores& sc = ms.at[static_cast<size_t>(h / 5 - 1)];
          line += fmt::format("  {}m MAE {:.2f}/min {:.2f} agents cov {:.0f}%", h, sc.mae,
                              sc.mae_agents, sc.coverage * 100);
        }
        fmt::print("{:<14} {:<15}{}\n", "", ms.model, line);
      }
    }
    if (!out_.empty()) {
      std::string base = p.name;
      for (char& c : base) {
        if (c == ':' || c == '/') c = '_';
      }
      std::ofstream(absl::StrCat(out_, "/", base, ".csv")) << sim::MinuteCsv(*r);
      std::ofstream(absl::StrCat(out_, "/", base, ".svg")) << sim::ChartSvg(*r, *trace);
    }
  }
  for (const auto& [name, h] : hours) {
    if (name != "oracle" || h <= 0) continue;
    std::string line = "agent-hours / oracle's:";
    for (const auto& [other, oh] : hours) line += fmt::format(" {} {:.2f}", other, oh / h);
    fmt::print("{}\n", line);
  }
  if (!out_.empty()) fmt::print("per-minute CSV and SVG chart per policy in {}/\n", out_);
  return 0;
}

}  // namespace drover::cli
