// e2e_bench: drover end to end over loopback gRPC, with the load and the agents in
// separate processes (bench/run_e2e.sh starts the server and both).
//
//   e2e_bench agents --server ADDR [--agents N] [--slots S] [--types T] [--workers W]
//       runs N agents (threads, each with its own channel) that complete every task at once,
//       W completion calls in flight per agent, each carrying every lease waiting by then;
//       on SIGTERM prints the submission-to-receipt latency of the tasks it received.
//   e2e_bench load --server ADDR --tasks N [--batch B] [--threads C] [--rate R] [--types T]
//       (with --rate it also prints due time to acknowledgement percentiles)
//       submits N tasks (R per second when given, open loop: one task per call, or batches
//       of B when --batch is given; else as fast as it can) and waits until
//       the server counts them all succeeded (unless --wait off); prints throughput.
//
// Latency: each payload carries its submission time (CLOCK_REALTIME ns); the agent
// subtracts it from the time the lease arrives. Both processes share the machine's clock.
#include <signal.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "fmt/core.h"
#include "util/histogram.h"

namespace {

namespace v1 = drover::v1;
using drover::client::Client;

struct Args {
  std::string mode, server = "127.0.0.1:7070";
  int agents = 8, slots = 256, types = 1, workers = 4, batch = 500, threads = 4;
  int64_t tasks = 100'000;
  double rate = 0;
  bool wait = true;        // --wait off: stop once every submission is acknowledged
  bool batch_set = false;  // --batch given: with --rate, batches leave at their due time
};

Args Parse(int argc, char** argv) {
  Args a;
  if (argc < 2) {
    fmt::print(stderr, "usage: e2e_bench agents|load [flags]\n");
    std::exit(2);
  }
  a.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string k = argv[i];
    if (i + 1 >= argc) {
      fmt::print(stderr, "{} needs a value\n", k);
      std::exit(2);
    }
    std::string v = argv[++i];
    if (k == "--server")
      a.server = v;
    else if (k == "--agents")
      a.agents = std::stoi(v);
    else if (k == "--slots")
      a.slots = std::stoi(v);
    else if (k == "--types")
      a.types = std::stoi(v);
    else if (k == "--workers")
      a.workers = std::stoi(v);
    else if (k == "--batch") {
      a.batch = std::stoi(v);
      a.batch_set = true;
    } else if (k == "--threads")
      a.threads = std::stoi(v);
    else if (k == "--tasks")
      a.tasks = std::stoll(v);
    else if (k == "--rate")
      a.rate = std::stod(v);
    else if (k == "--wait")
      a.wait = v != "off";
    else {
      fmt::print(stderr, "unknown flag {}\n", k);
      std::exit(2);
    }
  }
  return a;
}

std::atomic<bool> g_stop{false};

// Fine buckets for the latency figure: 50 us .. 30 s.
std::vector<double> FineBounds() {
  std::vector<double> b;
  for (double v = 0.00005; v < 30.0; v *= 1.15) b.push_back(v);
  return b;
}

int RunAgents(const Args& a) {
  std::mutex hist_mu;
  drover::Histogram latency(FineBounds());
  std::atomic<int64_t> received{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < a.agents; ++i) {
    threads.emplace_back([&, i] {
      auto client = Client::Connect(a.server);
      v1::RegisterAgentRequest req;
      req.add_types(absl::StrCat("bench-", i % a.types));
      req.set_max_concurrency(a.slots);
      req.set_name(absl::StrCat("bench-agent-", i));
      auto reg = client->Register(req);
      if (!reg.ok()) {
        fmt::print(stderr, "register: {}\n", reg.status().ToString());
        return;
      }
      const uint64_t id = reg->agent_id();
      std::mutex mu;
      std::condition_variable cv;
      std::deque<v1::TaskLease> work;
      bool done = false;
      std::vector<std::thread> workers;
      for (int w = 0; w < a.workers; ++w) {
        workers.emplace_back([&] {
          // Completes everything waiting in one call (CompleteTasks), as a busy agent would.
          v1::CompleteTasksRequest batch;
          batch.set_agent_id(id);
          while (true) {
            batch.clear_items();
            {
              std::unique_lock<std::mutex> lk(mu);
              cv.wait(lk, [&] { return done || !work.empty(); });
              if (work.empty()) return;
              while (!work.empty() && batch.items_size() < 1000) {
                auto* item = batch.add_items();
                item->set_task_id(work.front().task_id());
                item->set_lease_token(work.front().lease_token());
                item->set_result("ok");
                work.pop_front();
              }
            }
            (void)client->CompleteBatch(batch);
          }
        });
      }
      std::thread hb([&] {
        while (!g_stop) {
          std::this_thread::sleep_for(std::chrono::milliseconds(reg->heartbeat_interval_ms()));
          (void)client->Heartbeat(id);
        }
      });
      auto stream = client->OpenWorkStream(id);
      Client::WorkStream* raw = stream.get();
      std::thread watcher([&] {
        while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(50));
        raw->Cancel();
      });
      v1::WorkItem item;
      while (stream->Read(&item)) {
        if (!item.has_lease()) continue;
        const int64_t now_ns = absl::GetCurrentTimeNanos();
        int64_t sent_ns = 0;
        if (absl::SimpleAtoi(item.lease().payload(), &sent_ns) && sent_ns > 0) {
          std::lock_guard<std::mutex> lk(hist_mu);
          latency.Observe(static_cast<double>(now_ns - sent_ns) / 1e9);
        }
        received++;
        {
          std::lock_guard<std::mutex> lk(mu);
          work.push_back(std::move(*item.mutable_lease()));
        }
        cv.notify_one();
      }
      {
        std::lock_guard<std::mutex> lk(mu);
        done = true;
      }
      cv.notify_all();
      for (auto& w : workers) w.join();
      watcher.join();
      hb.join();
      (void)client->Deregister(id);
    });
  }
  for (auto& t : threads) t.join();
  fmt::print(
      "agents: received {} tasks; submission-to-receipt latency p50 {:.3f} ms, "
      "p90 {:.3f} ms, p99 {:.3f} ms, p99.9 {:.3f} ms\n",
      received.load(), latency.Quantile(0.5) * 1000, latency.Quantile(0.9) * 1000,
      latency.Quantile(0.99) * 1000, latency.Quantile(0.999) * 1000);
  return 0;
}

int RunLoad(const Args& a) {
  auto probe = Client::Connect(a.server);
  if (auto st = probe->WaitForServer(absl::Seconds(10)); !st.ok()) {
    fmt::print(stderr, "{}\n", st.ToString());
    return 1;
  }
  auto before = probe->Stats();
  if (!before.ok()) {
    fmt::print(stderr, "stats: {}\n", before.status().ToString());
    return 1;
  }
  const int64_t base = before->succeeded_total();
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> rejected{0};
  std::mutex ack_mu;
  drover::Histogram ack(FineBounds());  // open loop: due time to the call's answer
  const absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  const int nthreads = a.rate > 0 ? 1 : a.threads;
  for (int t = 0; t < nthreads; ++t) {
    threads.emplace_back([&, t] {
      auto client = Client::Connect(a.server);
      std::vector<v1::TaskSpec> specs;
      while (true) {
        const int n = a.rate > 0 && !a.batch_set ? 1 : a.batch;
        const int64_t first = next.fetch_add(n);
        if (first >= a.tasks) return;
        const int count = static_cast<int>(std::min<int64_t>(n, a.tasks - first));
        if (a.rate > 0) {
          // Open loop: task k leaves at start + k / rate, whatever happened before.
          const absl::Time due = start + absl::Seconds(static_cast<double>(first) / a.rate);
          const absl::Duration wait = due - absl::Now();
          if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
        }
        specs.assign(static_cast<size_t>(count), v1::TaskSpec());
        for (int i = 0; i < count; ++i) {
          specs[i].set_type(absl::StrCat("bench-", (first + i) % a.types));
          specs[i].set_payload(absl::StrCat(absl::GetCurrentTimeNanos()));
        }
        absl::Time due_at = absl::Now();
        if (a.rate > 0) due_at = start + absl::Seconds(static_cast<double>(first) / a.rate);
        absl::Status st;
        if (count == 1) {
          st = client->Submit(specs[0]).status();
        } else {
          st = client->SubmitBatch(specs).status();
        }
        if (a.rate > 0) {
          std::lock_guard<std::mutex> lk(ack_mu);
          ack.Observe(absl::ToDoubleSeconds(absl::Now() - due_at));
        }
        if (!st.ok()) {
          rejected += count;
          if (rejected.load() < 5) fmt::print(stderr, "submit: {}\n", st.ToString());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  const double submit_secs = absl::ToDoubleSeconds(absl::Now() - start);
  if (!a.wait) {
    fmt::print("load: {} tasks submitted in {:.2f} s ({:.0f}/s; {} rejected; not waiting)\n",
               a.tasks, submit_secs, a.tasks / submit_secs, rejected.load());
    return rejected.load() == 0 ? 0 : 1;
  }
  int64_t done = 0;
  const int64_t want = a.tasks - rejected.load();
  while (true) {
    auto s = probe->Stats();
    if (s.ok()) done = s->succeeded_total() - base;
    if (done >= want) break;
    if (absl::Now() - start > absl::Minutes(10)) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  const double secs = absl::ToDoubleSeconds(absl::Now() - start);
  fmt::print(
      "load: {} tasks submitted in {:.2f} s ({:.0f}/s), {} completed end to end in "
      "{:.2f} s = {:.0f} tasks/s ({} rejected; batch {}, {} threads{})\n",
      a.tasks, submit_secs, a.tasks / submit_secs, done, secs, done / secs, rejected.load(),
      a.rate > 0 && !a.batch_set ? 1 : a.batch, nthreads,
      a.rate > 0 ? absl::StrCat(", open loop at ", a.rate, "/s") : "");
  if (a.rate > 0) {
    fmt::print("load: due time to acknowledgement p50 {:.3f} ms, p99 {:.3f} ms, p99.9 {:.3f} ms\n",
               ack.Quantile(0.5) * 1000, ack.Quantile(0.99) * 1000, ack.Quantile(0.999) * 1000);
  }
  return done >= want ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Args a = Parse(argc, argv);
  if (a.mode == "agents") {
    struct sigaction sa {};
    sa.sa_handler = [](int) { g_stop = true; };
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    return RunAgents(a);
  }
  if (a.mode == "load") return RunLoad(a);
  fmt::print(stderr, "unknown mode {}\n", a.mode);
  return 2;
}
