// loadtest: `drover loadtest` — drives a running drover server (or one it starts itself)
// through four scenarios with open-loop arrivals and agents of its own, and writes a
// report directory: CSVs, SVG charts and a markdown report (docs/loadtest.md).
//
//   baseline    100 tasks/s
//   throughput  1,000 tasks/s, then as fast as the server goes (batches from several threads)
//   dag         500 tasks/s, half of them in DAG workflows (fan-out then join)
//   chaos       200 tasks/s while agents crash, hang and fail at set rates, and the server
//               is killed (SIGKILL) and restarted once
//
// Open loop: task k is due at start + k / rate whatever happened before, and latency is
// measured from that due time, so a slow answer cannot hide the wait behind it
// (coordinated omission). Every acknowledged task is followed to its end: "lost" counts the
// ones the server no longer knows or that never end within the drain time.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "sim/simulator.h"

namespace drover::loadtest {

enum class Scenario : uint8_t { kBaseline, kThroughput, kDag, kChaos };
const char* ScenarioName(Scenario s);
// "baseline", "throughput", "dag", "chaos"; "all" is the caller's to expand.
absl::StatusOr<Scenario> ParseScenario(const std::string& name);
std::vector<Scenario> AllScenarios();

// What the chaos scenario does, as shares of the tasks an agent receives.
struct ChaosRates {
  double crash = 0.002;   // the agent dies holding the task (no deregistration, no heartbeats)
  double hang = 0.002;    // the agent keeps the task and never answers (the attempt times out)
  double fail = 0.05;     // the attempt fails, retryable
  double poison = 0.001;  // the attempt fails, not retryable (the task is dead-lettered)
  bool kill_server = true;
};

struct Options {
  // Where the server is. Empty: loadtest starts `binary serve` on loopback with a SQLite
  // store in `data_dir` (a temporary directory when empty) and stops it at the end.
  std::string server;
  std::string binary;    // the drover binary (own server, process agents)
  std::string data_dir;  // own server's
  std::string
      restart_command;  // chaos against --server: a shell command that kills and restarts it
  client::ClientOptions client;
  std::string tenant;                           // "" = the token's default
  absl::Duration duration = absl::Seconds(60);  // each scenario's open-loop phase
  double rate = 0;                              // > 0 replaces every scenario's own rate
  // throughput: the as-fast-as-it-goes phase submits this many tasks in batches of `batch`
  // from `threads` threads; 0 skips it.
  int64_t max_tasks = 200'000;
  int batch = 500, threads = 4;
  // Built-in simulated agents: `agents` of them, `slots` tasks each at once, each task
  // taking `work` (none: answered at once).
  int agents = 8, slots = 256;
  std::optional<sim::ServiceTime> work;
  // Non-empty: real `drover agent` processes (as many as `agents`, `slots` each) run this
  // command per task, instead of the built-in agents.
  std::vector<std::string> agent_command;
  ChaosRates chaos;
  absl::Duration drain = absl::Seconds(120);  // how long to wait for the last tasks to end
  std::string out = "loadtest-report";
  bool progress = true;  // a progress bar on stderr (a line every 10 s when not a terminal)
  uint64_t seed = 1;
};

// Checks the options; the error names the flag and its limit.
absl::Status Validate(const Options& o);

// Runs the scenarios one after another and writes the report under `o.out`. The result
// is whether every scenario ended with no task lost and no submission refused.
absl::StatusOr<bool> Run(const Options& o, const std::vector<Scenario>& scenarios);

}  // namespace drover::loadtest
