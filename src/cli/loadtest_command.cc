#include "cli/loadtest_command.h"

#include "absl/strings/str_cat.h"
#include "cli/common.h"
#include "fmt/core.h"

namespace drover::cli {

void LoadtestCommand::Add(CLI::App& app) {
  cmd_ = app.add_subcommand("loadtest",
                            "Drive a server with open-loop load and agents of its own; write a "
                            "report (docs/loadtest.md)");
  cmd_->add_option(
      "--scenario", scenarios_,
      "baseline (100/s), throughput (1000/s, then as fast as it goes), dag (500/s, half "
      "in workflows), chaos (200/s, crashing agents, a server kill), all (default; "
      "repeatable)");
  cmd_->add_option("--duration", duration_, "each scenario's open-loop phase (default 60s)");
  cmd_->add_option("--rate", o_.rate,
                   "tasks per second for every scenario (default: each its own)");
  cmd_->add_option(
      "--max-tasks", o_.max_tasks,
      "throughput: tasks sent as fast as the server takes them (default 200000; 0 skips)");
  cmd_->add_option("--batch", o_.batch, "throughput: tasks per call in that phase (default 500)");
  cmd_->add_option("--threads", o_.threads, "throughput: calls at once in that phase (default 4)");
  cmd_->add_option("--agents", o_.agents, "agents (default 8)");
  cmd_->add_option("--slots", o_.slots, "tasks each agent holds at once (default 256)");
  cmd_->add_option("--work", work_,
                   "built-in agents: each task takes fixed:D, exp:D or lognormal:D[:SIGMA] "
                   "(default: answered at once)");
  cmd_->add_option("--agent-command", agent_command_,
                   "run real `drover agent` processes with this shell command per task instead "
                   "of the built-in agents");
  cmd_->add_option("--crash-rate", o_.chaos.crash,
                   "chaos: share of tasks whose agent crashes (0.002)");
  cmd_->add_option("--hang-rate", o_.chaos.hang, "chaos: share of tasks never answered (0.002)");
  cmd_->add_option("--fail-rate", o_.chaos.fail,
                   "chaos: share of attempts failed, retryable (0.05)");
  cmd_->add_option("--poison-rate", o_.chaos.poison,
                   "chaos: share of attempts failed for good (dead-lettered) (0.001)");
  cmd_->add_flag("--no-server-kill", no_kill_, "chaos: do not kill and restart the server");
  cmd_->add_option(
      "--restart-command", o_.restart_command,
      "chaos with --server: a shell command that kills the server and starts it again");
  cmd_->add_option("--data-dir", o_.data_dir,
                   "without --server: the data directory of the server loadtest starts "
                   "(default: a temporary one, removed at the end)");
  cmd_->add_option("--tenant", o_.tenant, "tenant of the tasks (default: the token's)");
  cmd_->add_option("--drain", drain_, "how long to wait for the last tasks to end (default 120s)");
  cmd_->add_option("--out", o_.out, "report directory (default loadtest-report)");
  cmd_->add_option("--seed", o_.seed, "randomness of the chaos (default 1)");
  cmd_->add_flag("--quiet", quiet_, "no progress bar");
}

int LoadtestCommand::Run(const std::string& server) {
  o_.server = server;
  o_.binary = "/proc/self/exe";
  o_.progress = !quiet_;
  o_.chaos.kill_server = !no_kill_;
  for (auto [flag, text, target] : {std::tuple{"--duration", &duration_, &o_.duration},
                                    std::tuple{"--drain", &drain_, &o_.drain}}) {
    absl::StatusOr<absl::Duration> d = ParseDuration(flag, *text);
    if (!d.ok()) return Fail(d.status());
    *target = *d;
  }
  if (!work_.empty()) {
    absl::StatusOr<sim::ServiceTime> w = sim::ParseServiceTime(work_, "--work");
    if (!w.ok()) return Fail(w.status());
    o_.work = *w;
  }
  if (!agent_command_.empty()) o_.agent_command = {"sh", "-c", agent_command_};
  std::vector<loadtest::Scenario> scenarios;
  if (scenarios_.empty()) scenarios_ = {"all"};
  for (const std::string& s : scenarios_) {
    if (s == "all") {
      for (loadtest::Scenario a : loadtest::AllScenarios()) scenarios.push_back(a);
      continue;
    }
    absl::StatusOr<loadtest::Scenario> p = loadtest::ParseScenario(s);
    if (!p.ok()) return Fail(p.status());
    scenarios.push_back(*p);
  }
  absl::StatusOr<bool> ok = loadtest::Run(o_, scenarios);
  if (!ok.ok()) return Fail(ok.status());
  if (!*ok) {
    fmt::print(stderr,
               "drover: loadtest: tasks were lost or submissions refused (see the report)\n");
    return 1;
  }
  return 0;
}

}  // namespace drover::cli
