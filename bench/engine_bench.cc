// engine_bench: the engine plus the SQLite store in one process, with durability on.
//
// Each round submits a batch, the engine dispatches it to the agents' free slots, and the
// round's mutations are committed (group commit) before the "acks"; then the agents
// complete their oldest leases (keeping --inflight leases outstanding) and that is
// committed too. Tasks are counted when submitted, dispatched and completed.
//
//   engine_bench [--tasks N] [--batch B] [--types T] [--agents A] [--slots S]
//                [--inflight F] [--db PATH|:memory-store:] [--durability normal|full] [--direct]
//                [--events off|notable|all] [--trace-endpoint URL --trace-sampling R]
//
// By default (no --inflight) the commands go through api::Runtime exactly as in drover
// serve: engine thread, group-committing store thread, acks and pushes after commit.
// --direct (and --inflight) drive the engine and the store from one thread, round by round.
// --events sets which task changes go to the event log (default notable, as drover serve);
// through the Runtime the events are written with each commit and published to an event
// hub, as in drover serve (bench/run_events.sh compares the levels back to back).
// --trace-endpoint exports finished tasks' spans to an OTLP/HTTP receiver, a share
// --trace-sampling of the traces (bench/run_tracing.sh).
//
// Prints one line of figures. Also: --recover-only reopens the database and times
// recovery; --queue-only N queues N tasks and prints resident memory (bench/run_all.sh
// runs both for 1,000,000 tasks).
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "api/runtime.h"
#include "api/server.h"
#include "core/codec.h"
#include "core/engine.h"
#include "fmt/core.h"
#include "store/store.h"
#include "util/clock.h"

namespace {

using drover::core::Engine;
namespace v1 = drover::v1;

struct Args {
  int64_t tasks = 200'000;
  int batch = 1000;
  int types = 1;
  int agents = 16;
  int slots = 64;
  int inflight = 0;
  int64_t queue_only = 0;  // submit this many and stop (memory figure)
  std::string db = "/tmp/drover-engine-bench.db";
  std::string durability = "normal";
  bool recover_only = false;
  bool direct = false;  // engine and store on one thread, no runtime
  std::string events = "notable";
  std::string trace_endpoint;
  double trace_sampling = 0.01;
};

int64_t RssKiB() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  }
  return 0;
}

Args Parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        fmt::print(stderr, "{} needs a value\n", k);
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--tasks")
      a.tasks = std::stoll(next());
    else if (k == "--batch")
      a.batch = std::stoi(next());
    else if (k == "--types")
      a.types = std::stoi(next());
    else if (k == "--agents")
      a.agents = std::stoi(next());
    else if (k == "--slots")
      a.slots = std::stoi(next());
    else if (k == "--inflight")
      a.inflight = std::stoi(next());
    else if (k == "--queue-only")
      a.queue_only = std::stoll(next());
    else if (k == "--db")
      a.db = next();
    else if (k == "--durability")
      a.durability = next();
    else if (k == "--recover-only")
      a.recover_only = true;
    else if (k == "--direct")
      a.direct = true;
    else if (k == "--events")
      a.events = next();
    else if (k == "--trace-endpoint")
      a.trace_endpoint = next();
    else if (k == "--trace-sampling")
      a.trace_sampling = std::stod(next());
    else {
      fmt::print(stderr, "unknown flag {}\n", k);
      std::exit(2);
    }
  }
  return a;
}

// Turns the engine's outbox into one committed batch; returns rows written.
size_t Commit(Engine& engine, drover::store::Store& store, drover::store::WriteBatch& batch,
              std::deque<v1::TaskLease>* leases) {
  drover::core::Outbox out = engine.TakeOutbox();
  batch.upserts.resize(out.dirty.size());
  for (size_t i = 0; i < out.dirty.size(); ++i) {
    drover::core::TaskToRow(*engine.Snapshot(out.dirty[i]), batch.upserts[i]);
  }
  absl::Status st = store.Commit(batch);
  if (!st.ok()) {
    fmt::print(stderr, "commit: {}\n", st.ToString());
    std::exit(1);
  }
  // Only after the commit do pushes reach agents (as in drover serve).
  for (auto& p : out.pushes) {
    if (p.item.has_lease()) leases->push_back(std::move(*p.item.mutable_lease()));
  }
  return out.dirty.size();
}

// Collects the leases the runtime pushes after each commit, as agents' streams would.
class LeaseSink final : public drover::api::PushSink {
 public:
  void Push(drover::core::AgentId agent, const v1::WorkItem& item) override {
    if (!item.has_lease()) return;
    std::lock_guard<std::mutex> lk(mu_);
    leases_.push_back({agent, item.lease().task_id(), item.lease().lease_token()});
    if (leases_.size() == 1) cv_.notify_one();  // the taker only sleeps on an empty queue
  }
  struct Lease {
    uint64_t agent, task, token;
  };
  // Waits for leases; returns all waiting (at most `max`).
  std::vector<Lease> Take(size_t max) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_for(lk, std::chrono::milliseconds(50), [&] { return !leases_.empty(); });
    std::vector<Lease> out;
    while (!leases_.empty() && out.size() < max) {
      out.push_back(leases_.front());
      leases_.pop_front();
    }
    return out;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Lease> leases_;
};

// The server's own path without the network: commands posted to the Runtime (engine
// thread), group commit on the store thread, leases pushed after commit, completions
// posted back in batches as agents using CompleteTasks would.
int RunThroughRuntime(const Args& a, drover::store::Store& store, drover::core::EngineOptions opts,
                      const drover::Clock& clock) {
  Engine engine(opts, clock);
  drover::obs::EventHub hub;
  drover::api::Runtime runtime(engine, store, 1'000'000);
  LeaseSink sink;
  runtime.SetPushSink(&sink);
  runtime.SetEventHub(&hub);
  std::unique_ptr<drover::obs::OtlpExporter> tracer;
  if (!a.trace_endpoint.empty()) {
    drover::obs::OtlpOptions to;
    to.endpoint = a.trace_endpoint;
    tracer = std::make_unique<drover::obs::OtlpExporter>(to);
    if (absl::Status st = tracer->Start(); !st.ok()) {
      fmt::print(stderr, "{}\n", st.ToString());
      return 2;
    }
    runtime.SetTracer(tracer.get(), a.trace_sampling);
  }
  runtime.Start();
  std::atomic<int> registered{0};
  for (int i = 0; i < a.agents; ++i) {
    runtime.Post([&, i](Engine& e, drover::api::Batch&) {
      v1::RegisterAgentRequest req;
      req.add_types(absl::StrCat("type-", i % a.types));
      req.set_max_concurrency(a.slots);
      auto id = e.RegisterAgent(req);
      (void)e.OpenStream(*id);
      registered++;
    });
  }
  while (registered < a.agents) std::this_thread::sleep_for(std::chrono::milliseconds(1));

  std::atomic<int64_t> acked{0}, completed{0};
  const absl::Time start = absl::Now();
  std::thread submitter([&] {
    auto specs = std::make_shared<std::vector<v1::TaskSpec>>(static_cast<size_t>(a.batch));
    for (int64_t done = 0; done < a.tasks;) {
      const int n = static_cast<int>(std::min<int64_t>(a.batch, a.tasks - done));
      auto batch = std::make_shared<std::vector<v1::TaskSpec>>(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) {
        (*batch)[i].set_type(absl::StrCat("type-", (done + i) % a.types));
        (*batch)[i].set_payload(R"({"prompt":"summarize the document","doc":42})");
        (*batch)[i].set_priority(static_cast<v1::Priority>(1 + i % 5));
      }
      // At most a few batches unacknowledged, as a client waiting for acks would be.
      while (done - acked.load() > 8 * a.batch)
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      while (!runtime.Post([batch, &acked](Engine& e, drover::api::Batch& b) {
        auto r = e.Submit(*batch, "tasks");
        if (!r.ok()) std::abort();
        const int64_t n = static_cast<int64_t>(batch->size());
        b.AfterCommit([&acked, n](const absl::Status&) { acked += n; });
      })) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
      done += n;
    }
  });
  while (completed < a.tasks) {
    auto leases = sink.Take(1000);
    if (leases.empty()) continue;
    auto shared = std::make_shared<std::vector<LeaseSink::Lease>>(std::move(leases));
    runtime.Post(
        [shared, &completed](Engine& e, drover::api::Batch& b) {
          for (const auto& l : *shared) (void)e.Complete(l.agent, l.task, l.token, "ok");
          const int64_t n = static_cast<int64_t>(shared->size());
          b.AfterCommit([&completed, n](const absl::Status&) { completed += n; });
        },
        drover::api::Runtime::kControl);
  }
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  submitter.join();
  runtime.Stop();
  std::string traced;
  if (tracer) {
    tracer->Stop();
    const auto ts = tracer->stats();
    traced = fmt::format("; tracing {}: {} spans exported, {} dropped", a.trace_sampling,
                         ts.exported, ts.dropped_queue_full + ts.dropped_export_failed);
  }
  const auto rs = runtime.stats();
  const auto ss = store.Stats();
  fmt::print(
      "engine+runtime+{}: {} tasks submitted, dispatched and completed in {:.2f} s = {:.0f} "
      "tasks/s ({} types, {} agents x {} slots, batch {}; {} commits, {} rows, {} events ({}), "
      "commit p50 {:.2f} ms; rss {:.0f} MiB{})\n",
      a.db == ":memory-store:" ? "memory-store" : absl::StrCat("sqlite(", a.durability, ")"),
      completed.load(), secs, completed.load() / secs, a.types, a.agents, a.slots, a.batch,
      ss.commits, ss.rows_written, ss.event_rows_written, a.events,
      rs.commit_seconds.Quantile(0.5) * 1000, RssKiB() / 1024.0, traced);
  return engine.probe().succeeded == a.tasks ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Args a = Parse(argc, argv);
  drover::SystemClock clock;
  const auto durability = a.durability == "full" ? drover::store::Durability::kFull
                                                 : drover::store::Durability::kNormal;
  std::unique_ptr<drover::store::Store> store;
  if (a.db == ":memory-store:") {
    store = drover::store::NewMemoryStore();
  } else {
    if (!a.recover_only) {
      for (const char* ext : {"", "-wal", "-shm"}) std::remove((a.db + ext).c_str());
    }
    auto s = drover::store::OpenSqliteStore(a.db, durability);
    if (!s.ok()) {
      fmt::print(stderr, "{}\n", s.status().ToString());
      return 1;
    }
    store = std::move(*s);
  }
  drover::core::EngineOptions opts;
  opts.capacity = std::max<int64_t>(2'000'000, a.queue_only + 1);
  opts.max_batch = static_cast<size_t>(std::max(a.batch, 10'000));
  if (a.events == "off") {
    opts.task_events = drover::core::TaskEvents::kOff;
  } else if (a.events == "all") {
    opts.task_events = drover::core::TaskEvents::kAll;
  } else if (a.events != "notable") {
    fmt::print(stderr, "--events: '{}' is not off, notable or all\n", a.events);
    return 2;
  }

  if (a.recover_only) {
    const int64_t rss_before = RssKiB();
    drover::api::RecoveryReport report;
    auto engine = drover::api::RecoverEngine(*store, opts, clock, &report);
    if (!engine.ok()) {
      fmt::print(stderr, "{}\n", engine.status().ToString());
      return 1;
    }
    fmt::print(
        "recovery: {} tasks ({} were leased) in {:.2f} s; resident memory {:.0f} MiB "
        "(process before recovery {:.0f} MiB)\n",
        report.tasks, report.requeued, report.seconds, RssKiB() / 1024.0, rss_before / 1024.0);
    return 0;
  }

  if (!a.direct && a.queue_only == 0 && a.inflight == 0) {
    return RunThroughRuntime(a, *store, opts, clock);
  }
  auto engine = std::make_unique<Engine>(opts, clock);
  // Agents: agent i serves type i % types; all streams open.
  for (int i = 0; i < a.agents; ++i) {
    v1::RegisterAgentRequest req;
    req.add_types(absl::StrCat("type-", i % a.types));
    req.set_max_concurrency(a.slots);
    auto id = engine->RegisterAgent(req);
    (void)engine->OpenStream(*id);
  }
  drover::store::WriteBatch batch;
  std::deque<v1::TaskLease> leases;
  std::vector<v1::TaskSpec> specs(static_cast<size_t>(a.batch));
  for (int i = 0; i < a.batch; ++i) {
    specs[i].set_payload(R"({"prompt":"summarize the document","doc":42})");
    specs[i].set_priority(static_cast<v1::Priority>(1 + i % 5));
  }

  if (a.queue_only > 0) {
    // Memory figure: queue this many tasks (no agents take them) and report resident set.
    const absl::Time start = absl::Now();
    int64_t done = 0;
    drover::core::EngineOptions qopts = opts;
    auto qengine = std::make_unique<Engine>(qopts, clock);
    while (done < a.queue_only) {
      const int n = static_cast<int>(std::min<int64_t>(a.batch, a.queue_only - done));
      for (int i = 0; i < n; ++i) specs[i].set_type(absl::StrCat("type-", (done + i) % a.types));
      auto r =
          qengine->Submit(std::vector<v1::TaskSpec>(specs.begin(), specs.begin() + n), "tasks");
      if (!r.ok()) {
        fmt::print(stderr, "{}\n", r.status().ToString());
        return 1;
      }
      std::deque<v1::TaskLease> none;
      Commit(*qengine, *store, batch, &none);
      done += n;
    }
    fmt::print("queued: {} tasks in {:.2f} s; resident memory {:.0f} MiB\n", done,
               absl::ToDoubleSeconds(absl::Now() - start), RssKiB() / 1024.0);
    return 0;
  }

  const absl::Time start = absl::Now();
  int64_t submitted = 0, completed = 0, rows = 0, commits = 0;
  while (completed < a.tasks) {
    if (submitted < a.tasks) {
      const int n = static_cast<int>(std::min<int64_t>(a.batch, a.tasks - submitted));
      for (int i = 0; i < n; ++i)
        specs[i].set_type(absl::StrCat("type-", (submitted + i) % a.types));
      auto r = engine->Submit(std::vector<v1::TaskSpec>(specs.begin(), specs.begin() + n), "tasks");
      if (!r.ok()) {
        fmt::print(stderr, "submit: {}\n", r.status().ToString());
        return 1;
      }
      submitted += n;
      rows += static_cast<int64_t>(Commit(*engine, *store, batch, &leases));
      commits++;
    }
    // Agents finish their oldest work, keeping `inflight` leases outstanding.
    const size_t keep = submitted < a.tasks ? static_cast<size_t>(a.inflight) : 0;
    while (leases.size() > keep) {
      const v1::TaskLease& l = leases.front();
      const auto* t = engine->Snapshot(l.task_id());
      absl::Status st = engine->Complete(t->agent_id(), l.task_id(), l.lease_token(), "ok");
      if (!st.ok()) {
        fmt::print(stderr, "complete: {}\n", st.ToString());
        return 1;
      }
      leases.pop_front();
      completed++;
    }
    rows += static_cast<int64_t>(Commit(*engine, *store, batch, &leases));
    commits++;
  }
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  const auto& p = engine->probe();
  fmt::print(
      "engine+{}: {} tasks submitted, dispatched and completed in {:.2f} s = {:.0f} tasks/s "
      "({} types, {} agents x {} slots, {} in flight, batch {}; {} commits, {} rows, "
      "dispatch p99 {:.2f} ms; rss {:.0f} MiB)\n",
      a.db == ":memory-store:" ? "memory-store" : absl::StrCat("sqlite(", a.durability, ")"),
      completed, secs, completed / secs, a.types, a.agents, a.slots, a.inflight, a.batch, commits,
      rows, p.dispatch_latency.Quantile(0.99) * 1000, RssKiB() / 1024.0);
  if (p.succeeded != a.tasks) {
    fmt::print(stderr, "expected {} successes, engine counted {}\n", a.tasks, p.succeeded);
    return 1;
  }
  return 0;
}
