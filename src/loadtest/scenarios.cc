// loadtest: the scenarios — open-loop submission, throughput's fast phase, the chaos
// scenario's server kill, the drain and the check that every acknowledged task ended.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "fmt/core.h"
#include "loadtest/internal.h"

namespace drover::loadtest {

namespace v1 = ::drover::v1;
using client::Client;

const char* ScenarioName(Scenario s) {
  switch (s) {
    case Scenario::kBaseline:
      return "baseline";
    case Scenario::kThroughput:
      return "throughput";
    case Scenario::kDag:
      return "dag";
    case Scenario::kChaos:
      return "chaos";
  }
  return "?";
}

std::vector<Scenario> AllScenarios() {
  return {Scenario::kBaseline, Scenario::kThroughput, Scenario::kDag, Scenario::kChaos};
}

absl::StatusOr<Scenario> ParseScenario(const std::string& name) {
  for (Scenario s : AllScenarios()) {
    if (name == ScenarioName(s)) return s;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--scenario: '", name, "' is not one of baseline, throughput, dag, chaos, all"));
}

absl::Status Validate(const Options& o) {
  auto bad = [](const std::string& m) { return absl::InvalidArgumentError(m); };
  if (o.duration < absl::Seconds(1) || o.duration > absl::Hours(1)) {
    return bad("--duration: must be from 1s to 1h");
  }
  if (o.rate < 0 || o.rate > 100'000)
    return bad("--rate: must be from 0 (each scenario's own) to 100000 tasks/s");
  if (o.max_tasks < 0 || o.max_tasks > 10'000'000)
    return bad("--max-tasks: must be from 0 to 10000000");
  if (o.batch < 1 || o.batch > 10'000) return bad("--batch: must be from 1 to 10000");
  if (o.threads < 1 || o.threads > 64) return bad("--threads: must be from 1 to 64");
  if (o.agents < 1 || o.agents > 256) return bad("--agents: must be from 1 to 256");
  if (o.slots < 1 || o.slots > 1024) return bad("--slots: must be from 1 to 1024");
  if (o.drain < absl::Seconds(1) || o.drain > absl::Hours(1))
    return bad("--drain: must be from 1s to 1h");
  const ChaosRates& c = o.chaos;
  for (auto [flag, v] : {std::pair{"--crash-rate", c.crash}, std::pair{"--hang-rate", c.hang},
                         std::pair{"--fail-rate", c.fail}, std::pair{"--poison-rate", c.poison}}) {
    if (!(v >= 0 && v <= 1)) return bad(absl::StrCat(flag, ": must be a share from 0 to 1"));
  }
  if (c.crash + c.hang + c.fail + c.poison > 1) {
    return bad(
        "--crash-rate + --hang-rate + --fail-rate + --poison-rate: must add up to at most 1");
  }
  if (o.out.empty()) return bad("--out: must name a directory");
  return absl::OkStatus();
}

namespace {

double DefaultRate(Scenario s) {
  switch (s) {
    case Scenario::kBaseline:
      return 100;
    case Scenario::kThroughput:
      return 1000;
    case Scenario::kDag:
      return 500;
    case Scenario::kChaos:
      return 200;
  }
  return 100;
}

bool Transient(const absl::Status& st) {
  return absl::IsUnavailable(st) || absl::IsDeadlineExceeded(st) || absl::IsResourceExhausted(st);
}

// One scenario's run; the parts its threads share.
class Run1 {
 public:
  Run1(const Options& o, Scenario s, const std::string& address, OwnServer* own, Client* probe)
      : o_(o), s_(s), address_(address), own_(own), probe_(probe) {}

  ScenarioReport Go();

 private:
  void Senders(double rate, absl::Duration duration);
  void FastPhase();
  void KillServer();
  void Watch();  // stats sampling and the progress bar
  void Drain();
  void Verify();
  v1::TaskSpec Spec(int64_t due_ns, Kind kind, const std::string& key) const;
  v1::WorkflowSpec Dag(int64_t due_ns, int64_t k) const;
  int64_t Outstanding();

  const Options& o_;
  const Scenario s_;
  const std::string address_;
  OwnServer* own_;
  Client* probe_;
  ScenarioReport r_;
  std::string type_, run_id_;
  int64_t base_outstanding_ = 0;
  std::atomic<int> phase_{0};  // 0 open loop, 1 fast, 2 drain, 3 done
  absl::Time phase_start_;
  std::atomic<bool> watching_{true};
  std::atomic<int64_t> workflows_{0};
  std::unique_ptr<ProcessFleet> procs_;
};

int64_t Run1::Outstanding() {
  auto st = probe_->Stats();
  return st.ok() ? st->outstanding() : -1;
}

v1::TaskSpec Run1::Spec(int64_t due_ns, Kind kind, const std::string& key) const {
  v1::TaskSpec spec;
  spec.set_tenant(o_.tenant);
  spec.set_type(type_);
  spec.set_payload(Payload(due_ns, kind));
  if (!key.empty()) spec.set_idempotency_key(key);
  // A label to find the run's tasks by (the dashboard's label filter); not on the fast
  // phase's, which stay as small as the benchmark's so the two figures compare.
  if (kind != Kind::kMax) (*spec.mutable_labels())["loadtest"] = run_id_;
  if (s_ == Scenario::kChaos) {
    // Room for the crashes, hangs and failures to be retried; a hung attempt ends in 3 s.
    spec.set_max_attempts(10);
    spec.set_execution_timeout_ms(3000);
    spec.set_backoff_base_ms(100);
    spec.set_backoff_cap_ms(1000);
  }
  return spec;
}

// A fan-out and join: fetch, then a, b and c in parallel, then join.
v1::WorkflowSpec Run1::Dag(int64_t due_ns, int64_t k) const {
  v1::WorkflowSpec w;
  w.set_tenant(o_.tenant);
  w.set_name(absl::StrCat("loadtest-", k));
  (*w.mutable_labels())["loadtest"] = run_id_;
  auto step = [&](const char* name, Kind kind, std::vector<std::string> deps) {
    v1::WorkflowStep* st = w.add_steps();
    st->set_name(name);
    *st->mutable_task() = Spec(due_ns, kind, "");
    st->mutable_task()->set_tenant("");
    for (const std::string& d : deps) st->add_depends_on(d);
  };
  step("fetch", Kind::kStep, {});
  step("a", Kind::kStep, {"fetch"});
  step("b", Kind::kStep, {"fetch"});
  step("c", Kind::kStep, {"fetch"});
  step("join", Kind::kSink, {"a", "b", "c"});
  return w;
}

// Open loop: item k is due at start + offset(k) / rate; a pool of threads sends each at
// its time (latency counts from then). In the dag scenario every sixth item is a
// workflow of five tasks, so half the tasks are in workflows.
void Run1::Senders(double rate, absl::Duration duration) {
  const bool dag = s_ == Scenario::kDag;
  const int64_t tasks = static_cast<int64_t>(std::llround(rate * absl::ToDoubleSeconds(duration)));
  const int64_t items = dag ? (tasks / 10) * 6 : tasks;
  const absl::Time start = absl::Now();
  phase_start_ = start;
  auto due_of = [&](int64_t k) {
    const double offset = dag ? static_cast<double>((k / 6) * 10 + k % 6) : static_cast<double>(k);
    return start + absl::Seconds(offset / rate);
  };
  std::atomic<int64_t> next{0};
  const absl::Time give_up = start + duration + absl::Seconds(60);
  const int nthreads = static_cast<int>(std::clamp(rate / 50, 4.0, 32.0));
  std::vector<std::thread> threads;
  for (int t = 0; t < nthreads; ++t) {
    threads.emplace_back([&] {
      auto client = Client::Connect(address_, o_.client);
      while (true) {
        const int64_t k = next.fetch_add(1);
        if (k >= items) return;
        const absl::Time due = due_of(k);
        const absl::Duration wait = due - absl::Now();
        if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
        const int64_t due_ns = absl::ToUnixNanos(due);
        const bool workflow = dag && k % 6 == 5;
        while (true) {
          absl::Status st;
          std::vector<uint64_t> ids;
          if (workflow) {
            auto w = client->SubmitWorkflow(Dag(due_ns, k));
            st = w.status();
            if (w.ok()) {
              for (const auto& ref : w->tasks()) ids.push_back(ref.task_id());
              workflows_++;
            }
          } else {
            auto resp = client->Submit(Spec(due_ns, Kind::kTask, absl::StrCat(run_id_, "-", k)));
            st = resp.status();
            if (resp.ok()) ids.push_back(resp->task().id());
          }
          if (st.ok()) {
            r_.rec->Acked(ids, absl::ToDoubleSeconds(absl::Now() - due), false);
            break;
          }
          // A workflow has no idempotency key: only a refusal by admission is surely not
          // accepted, so only that is tried again.
          const bool again = workflow ? absl::IsResourceExhausted(st) : Transient(st);
          if (!again || absl::Now() > give_up) {
            r_.rec->Refused(workflow ? 5 : 1);
            r_.rec->Event(absl::StrCat("submission refused: ", st.ToString()));
            break;
          }
          r_.rec->SubmitRetry();
          absl::SleepFor(absl::Milliseconds(std::max<int64_t>(100, client::RetryAfterMs(st))));
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  r_.open_loop_secs = absl::ToDoubleSeconds(absl::Now() - start);
}

// As fast as the server goes: batches from several threads, each sent when the last
// answer came back (closed loop, as bench/e2e_bench measures it).
void Run1::FastPhase() {
  phase_.store(1);
  const absl::Time start = absl::Now();
  phase_start_ = start;
  std::atomic<int64_t> next{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < o_.threads; ++t) {
    threads.emplace_back([&] {
      auto client = Client::Connect(address_, o_.client);
      std::vector<v1::TaskSpec> specs;
      std::vector<uint64_t> ids;
      while (true) {
        const int64_t first = next.fetch_add(o_.batch);
        if (first >= o_.max_tasks) return;
        const int count = static_cast<int>(std::min<int64_t>(o_.batch, o_.max_tasks - first));
        const absl::Time sent = absl::Now();
        specs.assign(static_cast<size_t>(count), Spec(absl::ToUnixNanos(sent), Kind::kMax, ""));
        auto resp = client->SubmitBatch(specs);
        if (!resp.ok()) {
          r_.rec->Refused(count);
          r_.rec->Event(absl::StrCat("batch refused: ", resp.status().ToString()));
          continue;
        }
        ids.clear();
        for (const auto& res : resp->results()) ids.push_back(res.task().id());
        r_.rec->Acked(ids, absl::ToDoubleSeconds(absl::Now() - sent), true);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  // Until the last of them completed.
  const absl::Time limit = absl::Now() + o_.drain;
  while (absl::Now() < limit) {
    if (procs_ == nullptr) {
      if (r_.rec->max_completed() >= r_.rec->max_acked()) break;
      absl::SleepFor(absl::Milliseconds(5));
    } else {
      const int64_t out = Outstanding();
      if (out >= 0 && out <= base_outstanding_) break;
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  const absl::Time end = procs_ == nullptr && r_.rec->max_completed() > 0
                             ? r_.rec->max_last_completion()
                             : absl::Now();
  r_.max_secs = absl::ToDoubleSeconds(end - start);
}

void Run1::KillServer() {
  const absl::Time t0 = absl::Now();
  if (own_ != nullptr) {
    own_->Kill();
    r_.rec->Event("server killed (SIGKILL)");
    if (auto st = own_->Start(); !st.ok()) {
      r_.rec->Event(absl::StrCat("server restart failed: ", st.ToString()));
      return;
    }
  } else {
    r_.rec->Event(absl::StrCat("restart command: ", o_.restart_command));
    const int rc = std::system(o_.restart_command.c_str());
    if (rc != 0) r_.rec->Event(absl::StrCat("restart command exited with ", rc));
  }
  while (absl::Now() - t0 < absl::Seconds(60)) {
    auto h = probe_->Ready();
    if (h.ok() && h->status() == "SERVING") break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  r_.server_down_secs = absl::ToDoubleSeconds(absl::Now() - t0);
  r_.rec->Event(fmt::format("server serving again, {:.2f} s after the kill", r_.server_down_secs));
}

void Run1::Watch() {
  const bool tty = o_.progress && isatty(STDERR_FILENO);
  absl::Time next_sample = absl::Now(), next_line = absl::Now() + absl::Seconds(10);
  int64_t outstanding = -1;
  while (watching_) {
    const absl::Time now = absl::Now();
    if (now >= next_sample) {
      auto st = probe_->Stats();
      if (st.ok()) {
        outstanding = st->outstanding();
        r_.rec->Sample(st->outstanding(), st->agents());
      }
      next_sample = now + absl::Seconds(1);
    }
    if (o_.progress && (tty || now >= next_line)) {
      const int phase = phase_.load();
      double frac = 0;
      std::string what;
      if (phase == 0) {
        frac = std::min(
            1.0, absl::ToDoubleSeconds(now - phase_start_) / absl::ToDoubleSeconds(o_.duration));
        what = fmt::format("{:.0f}/s {:>4.0f}/{:.0f} s", r_.rate,
                           absl::ToDoubleSeconds(now - phase_start_),
                           absl::ToDoubleSeconds(o_.duration));
      } else if (phase == 1) {
        frac = o_.max_tasks > 0 ? std::min(1.0, static_cast<double>(r_.rec->max_completed()) /
                                                    static_cast<double>(o_.max_tasks))
                                : 1;
        what = "as fast as it goes";
      } else {
        frac = 1;
        what = "draining";
      }
      const int filled = static_cast<int>(frac * 24);
      std::string bar = std::string(static_cast<size_t>(filled), '#') +
                        std::string(static_cast<size_t>(24 - filled), '.');
      const std::string line =
          fmt::format("{:<10} [{}] {:3.0f}%  {}  acked {}  done {}  outstanding {}",
                      ScenarioName(s_), bar, frac * 100, what, r_.rec->acked(), r_.rec->completed(),
                      outstanding < 0 ? std::string("?") : std::to_string(outstanding));
      if (tty) {
        fmt::print(stderr, "\r{:<110}", line);
      } else {
        fmt::print(stderr, "{}\n", line);
        next_line = now + absl::Seconds(10);
      }
    }
    absl::SleepFor(absl::Milliseconds(250));
  }
  if (tty) fmt::print(stderr, "\r{:<110}\r", "");
}

void Run1::Drain() {
  phase_.store(2);
  const absl::Time start = absl::Now();
  while (absl::Now() - start < o_.drain) {
    if (procs_ == nullptr && r_.rec->completed() >= r_.rec->acked()) break;
    const int64_t out = Outstanding();
    if (out >= 0 && out <= base_outstanding_) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  r_.drain_secs = absl::ToDoubleSeconds(absl::Now() - start);
}

// Every acknowledged task the agents did not see through is looked up; those not yet
// ended are looked up again until the drain time is spent.
void Run1::Verify() {
  std::vector<uint64_t> acked = r_.rec->AckedIds(), done = r_.rec->CompletedIds();
  std::sort(acked.begin(), acked.end());
  acked.erase(std::unique(acked.begin(), acked.end()), acked.end());
  std::sort(done.begin(), done.end());
  std::vector<uint64_t> left;
  std::set_difference(acked.begin(), acked.end(), done.begin(), done.end(),
                      std::back_inserter(left));
  r_.succeeded = static_cast<int64_t>(acked.size() - left.size());
  const absl::Time limit = absl::Now() + o_.drain;
  while (true) {
    std::vector<uint64_t> again;
    std::mutex mu;
    std::atomic<size_t> next{0};
    std::vector<std::thread> threads;
    int64_t missing = 0;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] {
        auto client = Client::Connect(address_, o_.client);
        while (true) {
          const size_t i = next.fetch_add(1);
          if (i >= left.size()) return;
          auto task = client->Get(left[i]);
          std::lock_guard<std::mutex> lk(mu);
          if (!task.ok()) {
            if (absl::IsNotFound(task.status())) {
              missing++;
            } else {
              again.push_back(left[i]);
            }
            continue;
          }
          switch (task->state()) {
            case v1::TASK_STATE_SUCCEEDED: {
              r_.succeeded++;
              int64_t due_ns = 0;
              Kind kind = Kind::kTask;
              if (procs_ != nullptr && ParsePayload(task->spec().payload(), &due_ns, &kind)) {
                r_.rec->Completed({{task->id(), due_ns, kind}},
                                  absl::FromUnixMillis(task->finished_unix_ms()));
              }
              break;
            }
            case v1::TASK_STATE_DEAD:
              r_.dead++;
              break;
            case v1::TASK_STATE_CANCELED:
              r_.canceled++;
              break;
            case v1::TASK_STATE_EXPIRED:
              r_.expired++;
              break;
            default:
              again.push_back(left[i]);
          }
        }
      });
    }
    for (std::thread& t : threads) t.join();
    r_.missing += missing;
    if (again.empty() || absl::Now() >= limit) {
      r_.unfinished = static_cast<int64_t>(again.size());
      return;
    }
    left = std::move(again);
    absl::SleepFor(absl::Milliseconds(500));
  }
}

ScenarioReport Run1::Go() {
  r_.scenario = s_;
  r_.rate = o_.rate > 0 ? o_.rate : DefaultRate(s_);
  r_.duration = o_.duration;
  r_.rec = std::make_unique<Recorder>(absl::Now());
  phase_start_ = absl::Now();
  run_id_ = absl::StrCat("lt", absl::ToUnixMillis(absl::Now()), "-", ScenarioName(s_));
  type_ = absl::StrCat("loadtest-", ScenarioName(s_));
  base_outstanding_ = std::max<int64_t>(0, Outstanding());
  const bool chaos = s_ == Scenario::kChaos;
  std::unique_ptr<SimFleet> sims;
  if (o_.agent_command.empty()) {
    sims = std::make_unique<SimFleet>(o_, address_, r_.rec.get(), type_, chaos);
    sims->Start();
  } else {
    procs_ = std::make_unique<ProcessFleet>(o_, address_, type_);
    if (auto st = procs_->Start(); !st.ok()) r_.rec->Event(absl::StrCat("agents: ", st.ToString()));
  }
  {
    std::string work = o_.work ? "a simulated service time" : "answered at once";
    r_.setup =
        o_.agent_command.empty()
            ? fmt::format("{} built-in agents × {} slots, tasks {}", o_.agents, o_.slots, work)
            : fmt::format("{} `drover agent` processes × {} slots running `{}`", o_.agents,
                          o_.slots, o_.agent_command.front());
  }
  // Until the server counts the agents (at most 10 s).
  for (int i = 0; i < 100; ++i) {
    auto st = probe_->Stats();
    if (st.ok() && st->agents() >= o_.agents) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  std::thread watcher([this] { Watch(); });
  std::thread killer;
  std::atomic<bool> senders_done{false};
  if (chaos && (o_.chaos.kill_server || procs_ != nullptr)) {
    killer = std::thread([&, this] {
      const absl::Time start = absl::Now();
      std::mt19937_64 rng(o_.seed);
      bool killed = !o_.chaos.kill_server;
      // Process agents crash by being killed: as many a second as crash-rate × rate.
      const double crash_every =
          procs_ != nullptr && o_.chaos.crash > 0 ? 1.0 / (o_.chaos.crash * r_.rate) : 1e18;
      absl::Time next_crash = start + absl::Seconds(std::min(crash_every, 1e6));
      while (!senders_done) {
        const absl::Time now = absl::Now();
        if (!killed && now - start >= o_.duration / 2) {
          killed = true;
          KillServer();
        }
        if (procs_ != nullptr && now >= next_crash) {
          procs_->CrashOne(rng());
          r_.crashes++;
          r_.rec->Event("killed an agent process (SIGKILL)");
          next_crash = now + absl::Seconds(crash_every);
        }
        absl::SleepFor(absl::Milliseconds(20));
      }
    });
  }
  Senders(r_.rate, o_.duration);
  senders_done = true;
  if (killer.joinable()) killer.join();
  if (s_ == Scenario::kThroughput && o_.max_tasks > 0) FastPhase();
  Drain();
  Verify();
  phase_.store(3);
  watching_ = false;
  watcher.join();
  if (sims != nullptr) {
    sims->Stop();
    r_.crashes += sims->crashes();
    r_.hangs = sims->hangs();
  }
  if (procs_ != nullptr) procs_->Stop();
  r_.workflows = workflows_;
  return std::move(r_);
}

}  // namespace

absl::StatusOr<bool> Run(const Options& in, const std::vector<Scenario>& scenarios) {
  if (auto st = Validate(in); !st.ok()) return st;
  Options o = in;
  std::unique_ptr<OwnServer> own;
  std::string address = o.server, desc;
  if (address.empty()) {
    own = std::make_unique<OwnServer>(o);
    if (auto st = own->Start(); !st.ok()) return st;
    absl::StatusOr<std::string> token = client::ReadTokenFile(own->token_file());
    if (!token.ok()) return token.status();
    o.client.token = *token;
    address = own->address();
    desc = fmt::format("a `drover serve` of its own on {} (SQLite store, lease TTL 5 s, auth on)",
                       address);
    fmt::print("loadtest: started drover serve on {}; dashboard {} (token in {}); log {}\n",
               address, own->dashboard(), own->token_file(), own->log());
  } else {
    desc = fmt::format("`drover serve` at {}", address);
    if (std::find(scenarios.begin(), scenarios.end(), Scenario::kChaos) != scenarios.end() &&
        o.chaos.kill_server && o.restart_command.empty()) {
      return absl::InvalidArgumentError(
          "--restart-command: the chaos scenario kills and restarts the server once: give the "
          "command that does it for --server (or leave --server out and loadtest starts a server "
          "of its own, or --no-server-kill)");
    }
  }
  auto probe = Client::Connect(address, o.client);
  if (auto st = probe->WaitForServer(absl::Seconds(10)); !st.ok()) {
    return absl::UnavailableError(
        absl::StrCat("server ", address, ": not reachable (", st.message(), ")"));
  }
  if (auto st = probe->Stats(); !st.ok()) return st.status();
  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("--out: ", o.out, ": ", ec.message()));
  std::vector<ScenarioReport> reports;
  bool ok = true;
  for (Scenario s : scenarios) {
    Run1 run(o, s, address, own.get(), probe.get());
    reports.push_back(run.Go());
    const ScenarioReport& r = reports.back();
    ok = ok && r.lost_none() && r.rec->refused() == 0;
    const Histogram e2e = r.rec->TaskLatency(false);
    fmt::print(
        "{:<10} {:>6.0f}/s  acked {:>8}  succeeded {:>8}  dead {:>5}  lost {:>3}  e2e p50 {:.1f} "
        "ms p99 "
        "{:.1f} ms{}\n",
        ScenarioName(s), r.rate, r.rec->acked(), r.succeeded, r.dead, r.missing + r.unfinished,
        e2e.Quantile(0.5) * 1000, e2e.Quantile(0.99) * 1000,
        r.max_secs > 0 ? fmt::format("  fast phase {:.0f} tasks/s",
                                     static_cast<double>(r.rec->max_acked()) / r.max_secs)
                       : "");
    std::fflush(stdout);
  }
  if (auto st = WriteReport(o, desc, reports); !st.ok()) return st;
  fmt::print("loadtest: report in {}/report.md\n", o.out);
  if (own != nullptr) own->Stop();
  return ok;
}

}  // namespace drover::loadtest
