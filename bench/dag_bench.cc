// dag_bench: what critical-path scheduling gains on generated DAG workflows.
//
// The real engine on a virtual clock, with simulated agents that take exactly each task's
// duration (its type's mean times its estimated_complexity, so the engine's learned
// estimate can match the truth). Each DAG runs twice on identical agents: with
// critical_path_first (the default) and without (deadline, then FIFO within a priority).
// Prints the makespan of each and the gain.
//
//   dag_bench [--sizes 10,100,1000,10000] [--seed N] [--agents-per-100 K]
//
// Shapes: wide (one root, a wide middle of uneven tasks, one sink), deep (many chains
// of different lengths), mixed (random layers with random edges).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <queue>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/engine.h"
#include "fmt/core.h"
#include "util/clock.h"

namespace {

namespace v1 = drover::v1;
using drover::core::Engine;

// Mean run time of each task type, in ms.
const std::map<std::string, int64_t> kTypes = {
    {"fast", 1'000}, {"medium", 5'000}, {"slow", 20'000}};

struct Dag {
  std::string shape;
  v1::WorkflowSpec spec;
};

v1::WorkflowStep Node(int i, std::mt19937_64& rng) {
  static const std::vector<std::string> kNames = {"fast", "medium", "slow"};
  v1::WorkflowStep s;
  s.set_name(absl::StrCat("n", i));
  s.mutable_task()->set_type(kNames[std::uniform_int_distribution<int>(0, 2)(rng)]);
  // Complexities in quarter steps, so durations are whole milliseconds.
  s.mutable_task()->set_estimated_complexity(0.25 * std::uniform_int_distribution<int>(2, 8)(rng));
  return s;
}

Dag Wide(int n, std::mt19937_64& rng) {
  Dag d{"wide", {}};
  *d.spec.add_steps() = Node(0, rng);
  for (int i = 1; i < n - 1; ++i) {
    v1::WorkflowStep s = Node(i, rng);
    s.add_depends_on("n0");
    *d.spec.add_steps() = s;
  }
  v1::WorkflowStep sink = Node(n - 1, rng);
  for (int i = 1; i < n - 1; ++i) sink.add_depends_on(absl::StrCat("n", i));
  *d.spec.add_steps() = sink;
  return d;
}

Dag Deep(int n, std::mt19937_64& rng) {
  // Chains of random lengths (1 to n/10), listed shortest first so FIFO favours them.
  Dag d{"deep", {}};
  std::vector<int> lengths;
  for (int left = n; left > 0;) {
    const int len = std::min(left, std::uniform_int_distribution<int>(1, std::max(1, n / 10))(rng));
    lengths.push_back(len);
    left -= len;
  }
  std::sort(lengths.begin(), lengths.end());
  int i = 0;
  for (int len : lengths) {
    for (int k = 0; k < len; ++k, ++i) {
      v1::WorkflowStep s = Node(i, rng);
      if (k > 0) s.add_depends_on(absl::StrCat("n", i - 1));
      *d.spec.add_steps() = s;
    }
  }
  return d;
}

Dag Mixed(int n, std::mt19937_64& rng) {
  Dag d{"mixed", {}};
  const int layers = std::max(2, static_cast<int>(std::sqrt(static_cast<double>(n)) / 2));
  std::vector<std::vector<int>> layer(static_cast<size_t>(layers));
  for (int i = 0; i < n; ++i) {
    const int l = i < layers ? i : std::uniform_int_distribution<int>(0, layers - 1)(rng);
    layer[static_cast<size_t>(l)].push_back(i);
  }
  std::vector<v1::WorkflowStep> steps(static_cast<size_t>(n));
  for (int l = 0; l < layers; ++l) {
    for (int i : layer[static_cast<size_t>(l)]) {
      v1::WorkflowStep s = Node(i, rng);
      if (l > 0) {
        const auto& prev = layer[static_cast<size_t>(l - 1)];
        const int edges = std::uniform_int_distribution<int>(1, 3)(rng);
        std::vector<int> picked;
        for (int e = 0; e < edges; ++e) {
          const int p = prev[std::uniform_int_distribution<size_t>(0, prev.size() - 1)(rng)];
          if (std::find(picked.begin(), picked.end(), p) == picked.end()) picked.push_back(p);
        }
        for (int p : picked) s.add_depends_on(absl::StrCat("n", p));
      }
      steps[static_cast<size_t>(i)] = s;
    }
  }
  for (auto& s : steps) *d.spec.add_steps() = s;
  return d;
}

int64_t DurationMs(const v1::TaskLease& l, const std::map<uint64_t, double>& complexity) {
  return static_cast<int64_t>(static_cast<double>(kTypes.at(l.type())) *
                              complexity.at(l.task_id()));
}

struct Run {
  int64_t makespan_ms = 0;
  int64_t bound_ms = 0;  // no schedule beats max(critical path, total work / agents)
};

// Runs the DAG on `agents` single-slot agents (each serves every type).
Run Makespan(const v1::WorkflowSpec& spec, int agents, bool critical_path_first) {
  drover::ManualClock clock;
  drover::core::EngineOptions o;
  o.critical_path_first = critical_path_first;
  o.lease_ttl = absl::Hours(24);
  o.defaults.execution_timeout = absl::Hours(24);
  o.max_batch = 20'000;
  Engine engine(o, clock);
  std::vector<uint64_t> agent_ids;
  for (int i = 0; i < agents; ++i) {
    v1::RegisterAgentRequest req;
    for (const auto& [type, ms] : kTypes) req.add_types(type);
    req.set_max_concurrency(1);
    agent_ids.push_back(*engine.RegisterAgent(req));
  }
  // Teach the engine each type's mean, as a warmed-up server would know it.
  for (const auto& [type, ms] : kTypes) {
    v1::TaskSpec s;
    s.set_type(type);
    (void)engine.Submit({s}, "task");
  }
  for (uint64_t a : agent_ids) (void)engine.OpenStream(a);
  struct Running {
    int64_t done_ms;
    uint64_t agent, task, token;
    bool operator>(const Running& o) const { return done_ms > o.done_ms; }
  };
  std::priority_queue<Running, std::vector<Running>, std::greater<Running>> running;
  std::map<uint64_t, double> complexity;
  auto collect = [&] {
    drover::core::Outbox out = engine.TakeOutbox();
    for (auto& p : out.pushes) {
      if (!p.item.has_lease()) continue;
      const v1::TaskLease& l = p.item.lease();
      const v1::Task* t = engine.Snapshot(l.task_id());
      const double c = t->spec().estimated_complexity() > 0 ? t->spec().estimated_complexity() : 1;
      complexity[l.task_id()] = c;
      running.push({drover::ToUnixMs(clock.Now()) + DurationMs(l, complexity), p.agent, l.task_id(),
                    l.lease_token()});
    }
  };
  auto step = [&] {
    const Running r = running.top();
    running.pop();
    clock.Set(drover::FromUnixMs(r.done_ms));
    engine.Tick();
    (void)engine.Complete(r.agent, r.task, r.token, "");
    collect();
  };
  collect();
  while (!running.empty()) step();  // the warm-up tasks
  const int64_t start = drover::ToUnixMs(clock.Now());
  auto w = engine.SubmitWorkflow(spec);
  if (!w.ok()) {
    fmt::print(stderr, "{}\n", w.status().ToString());
    std::exit(1);
  }
  const uint64_t id = (*w)->id();
  Run run;
  int64_t work = 0;
  for (const v1::WorkflowStep& st : spec.steps()) work += engine.ExpectedDurationMs(st.task());
  run.bound_ms = std::max(engine.DescribeWorkflow(id)->critical_path_ms(), work / agents);
  collect();
  while (!running.empty()) step();
  const v1::Workflow* done = engine.WorkflowSnapshot(id);
  if (done->state() != v1::WORKFLOW_STATE_SUCCEEDED) {
    fmt::print(stderr, "workflow ended {}\n", static_cast<int>(done->state()));
    std::exit(1);
  }
  run.makespan_ms = done->finished_unix_ms() - start;
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> sizes = {10, 100, 1000, 10000};
  uint64_t seed = 1;
  int per100 = 10;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    const std::string v = i + 1 < argc ? argv[i + 1] : "";
    if (k == "--sizes") {
      sizes.clear();
      for (absl::string_view part : absl::StrSplit(v, ',')) {
        int n = 0;
        if (!absl::SimpleAtoi(part, &n) || n < 3) {
          fmt::print(stderr, "--sizes: '{}' is not a size >= 3\n", std::string(part));
          return 2;
        }
        sizes.push_back(n);
      }
      ++i;
    } else if (k == "--seed" && absl::SimpleAtoi(v, &seed)) {
      ++i;
    } else if (k == "--agents-per-100" && absl::SimpleAtoi(v, &per100) && per100 > 0) {
      ++i;
    } else {
      fmt::print(stderr,
                 "usage: dag_bench [--sizes 10,100,1000] [--seed N] [--agents-per-100 K]\n");
      return 2;
    }
  }
  fmt::print("{:<6} {:>6} {:>6}  {:>10} {:>14} {:>7}  {:>10}\n", "shape", "nodes", "agents",
             "fifo (s)", "crit.path (s)", "gain", "bound (s)");
  for (int n : sizes) {
    std::mt19937_64 rng(seed * 1000 + static_cast<uint64_t>(n));
    for (Dag d : {Wide(n, rng), Deep(n, rng), Mixed(n, rng)}) {
      const int agents = std::max(2, n * per100 / 100);
      const Run fifo = Makespan(d.spec, agents, false);
      const Run cp = Makespan(d.spec, agents, true);
      fmt::print("{:<6} {:>6} {:>6}  {:>10.1f} {:>14.1f} {:>6.1f}%  {:>10.1f}\n", d.shape, n,
                 agents, fifo.makespan_ms / 1000.0, cp.makespan_ms / 1000.0,
                 100.0 * static_cast<double>(fifo.makespan_ms - cp.makespan_ms) /
                     static_cast<double>(fifo.makespan_ms),
                 cp.bound_ms / 1000.0);
    }
  }
  return 0;
}
