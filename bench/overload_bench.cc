// overload_bench: drover under a flood of submissions far beyond what its agents can do
// (issue 12's overload figure). N clients, each on its own channel, submit single tasks as
// fast as the server answers for S seconds while a prober reads /healthz and the server's
// resident memory. Then it waits for the queue to drain and checks that every accepted
// task succeeded.
//   overload_bench --server ADDR --http HOST:PORT --pid PID [--clients 64] [--seconds 60]
//                  [--type flood] [--max-rss-mib 1024]
// Exit status 0 when: the offered load was at least 10x the completion rate, every refusal
// was RESOURCE_EXHAUSTED with a retry-after, /healthz answered every probe within 1 s,
// agents completed work during the flood, resident memory stayed under the bound, and
// every accepted task ended SUCCEEDED.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "fmt/core.h"
#include "httplib.h"

using drover::client::Client;
namespace v1 = drover::v1;

namespace {

struct Args {
  std::string server = "127.0.0.1:7070", http = "127.0.0.1:7071", type = "flood";
  int pid = 0, clients = 64, seconds = 60, max_rss_mib = 1024;
};

int64_t RssKiB(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      int64_t kib = 0;
      (void)absl::SimpleAtoi(line.substr(6, line.find(" kB") - 6), &kib);
      return kib;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--server")
      a.server = v;
    else if (k == "--http")
      a.http = v;
    else if (k == "--pid")
      a.pid = std::stoi(v);
    else if (k == "--clients")
      a.clients = std::stoi(v);
    else if (k == "--seconds")
      a.seconds = std::stoi(v);
    else if (k == "--type")
      a.type = v;
    else if (k == "--max-rss-mib")
      a.max_rss_mib = std::stoi(v);
    else {
      fmt::print(stderr, "unknown flag {}\n", k);
      return 2;
    }
  }
  auto probe = Client::Connect(a.server);
  auto before = probe->Stats();
  if (!before.ok()) {
    fmt::print(stderr, "stats: {}\n", before.status().ToString());
    return 2;
  }
  const absl::Time start = absl::Now(), end = start + absl::Seconds(a.seconds);
  std::atomic<bool> flooding{true};
  std::atomic<int64_t> offered{0}, exhausted{0}, no_hint{0}, other{0};
  std::mutex ids_mu;
  std::vector<uint64_t> accepted;
  std::vector<std::thread> clients;
  for (int c = 0; c < a.clients; ++c) {
    clients.emplace_back([&, c] {
      auto client = Client::Connect(a.server);
      std::vector<uint64_t> mine;
      v1::TaskSpec spec;
      spec.set_type(a.type);
      spec.set_tenant(absl::StrCat("flood-", c % 4));
      spec.set_payload("x");
      int64_t n = 0;
      while (absl::Now() < end) {
        spec.set_idempotency_key(absl::StrCat("o-", c, "-", n++));
        auto r = client->Submit(spec);
        offered++;
        if (r.ok()) {
          mine.push_back(r->task().id());
        } else if (r.status().code() == absl::StatusCode::kResourceExhausted) {
          exhausted++;
          if (drover::client::RetryAfterMs(r.status()) <= 0) no_hint++;
        } else {
          if (other.fetch_add(1) < 5) fmt::print(stderr, "submit: {}\n", r.status().ToString());
        }
      }
      std::lock_guard<std::mutex> lk(ids_mu);
      accepted.insert(accepted.end(), mine.begin(), mine.end());
    });
  }
  // Health and memory, sampled while the flood lasts; completions every 5 s.
  int64_t probes = 0, probe_failures = 0, max_rss = 0, stalled_windows = 0, windows = 0;
  double worst_probe_s = 0;
  const auto colon = a.http.rfind(':');
  httplib::Client http(a.http.substr(0, colon), std::stoi(a.http.substr(colon + 1)));
  http.set_connection_timeout(2);
  http.set_read_timeout(2);
  int64_t last_done = before->succeeded_total();
  absl::Time next_window = start + absl::Seconds(5);
  while (absl::Now() < end) {
    const absl::Time t0 = absl::Now();
    auto res = http.Get("/healthz");
    const double took = absl::ToDoubleSeconds(absl::Now() - t0);
    probes++;
    worst_probe_s = std::max(worst_probe_s, took);
    if (!res || res->status != 200 || took > 1.0) probe_failures++;
    if (a.pid > 0) max_rss = std::max(max_rss, RssKiB(a.pid));
    if (absl::Now() >= next_window) {
      next_window += absl::Seconds(5);
      auto s = probe->Stats();
      windows++;
      if (!s.ok() || s->succeeded_total() <= last_done) stalled_windows++;
      if (s.ok()) last_done = s->succeeded_total();
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  for (auto& t : clients) t.join();
  flooding = false;
  const double flood_s = absl::ToDoubleSeconds(absl::Now() - start);
  auto after = probe->Stats();
  const int64_t done_in_flood =
      after.ok() ? after->succeeded_total() - before->succeeded_total() : 0;
  // Drain, then every accepted task must have succeeded.
  const absl::Time drain_by = absl::Now() + absl::Minutes(5);
  while (absl::Now() < drain_by) {
    auto s = probe->Stats();
    if (s.ok() && s->outstanding() == 0) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  int64_t lost = 0, unfinished = 0;
  for (uint64_t id : accepted) {
    auto t = probe->Get(id);
    if (!t.ok()) {
      if (lost++ < 5) fmt::print(stderr, "task {}: {}\n", id, t.status().ToString());
    } else if (t->state() != v1::TASK_STATE_SUCCEEDED) {
      unfinished++;
    }
  }
  const double offered_rate = offered / flood_s, done_rate = done_in_flood / flood_s;
  const double ratio = done_rate > 0 ? offered_rate / done_rate : 0;
  fmt::print(
      "overload: {} clients for {:.0f} s offered {} submissions ({:.0f}/s), {:.1f} x the {:.0f} "
      "tasks/s the agents completed; accepted {}, refused {} (all RESOURCE_EXHAUSTED: {}, "
      "without a retry-after: {}), other errors {}\n",
      a.clients, flood_s, offered.load(), offered_rate, ratio, done_rate, accepted.size(),
      exhausted.load(), other.load() == 0 ? "yes" : "no", no_hint.load(), other.load());
  fmt::print(
      "overload: /healthz {} probes, {} failed or over 1 s, slowest {:.3f} s; completions went "
      "on in {} of {} 5-second windows; server resident memory at most {} MiB (bound {} MiB); "
      "accepted tasks lost {}, not succeeded after the drain {}\n",
      probes, probe_failures, worst_probe_s, windows - stalled_windows, windows, max_rss / 1024,
      a.max_rss_mib, lost, unfinished);
  const bool ok = ratio >= 10 && other == 0 && no_hint == 0 && exhausted > 0 &&
                  probe_failures == 0 && stalled_windows == 0 && max_rss / 1024 < a.max_rss_mib &&
                  lost == 0 && unfinished == 0 && !accepted.empty();
  fmt::print("overload: {}\n", ok ? "every check held" : "FAILED");
  return ok ? 0 : 1;
}
