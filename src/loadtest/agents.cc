// loadtest: the agents — built-in simulated ones (threads on work streams, with chaos) and
// real `drover agent` processes.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <queue>
#include <random>

#include "absl/strings/str_cat.h"
#include "fmt/core.h"
#include "loadtest/internal.h"

namespace drover::loadtest {

namespace v1 = ::drover::v1;
using client::Client;

absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& args, const std::string& log,
                            const std::vector<std::string>& env) {
  if (args.empty()) return absl::InvalidArgumentError("nothing to start");
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_copy = env;
  const pid_t pid = fork();
  if (pid < 0)
    return absl::InternalError(absl::StrCat("fork for ", args[0], ": ", strerror(errno)));
  if (pid == 0) {
    const int in = ::open("/dev/null", O_RDONLY);
    const int out = log.empty() ? ::open("/dev/null", O_WRONLY)
                                : ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (in >= 0) dup2(in, STDIN_FILENO);
    if (out >= 0) {
      dup2(out, STDOUT_FILENO);
      dup2(out, STDERR_FILENO);
    }
    for (std::string& e : env_copy) putenv(e.data());
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

SimFleet::SimFleet(const Options& o, const std::string& address, Recorder* rec,
                   const std::string& type, bool chaos)
    : o_(o), address_(address), rec_(rec), type_(type), chaos_(chaos) {}

SimFleet::~SimFleet() { Stop(); }

void SimFleet::Start() {
  for (int i = 0; i < o_.agents; ++i) threads_.emplace_back([this, i] { RunAgent(i); });
}

void SimFleet::Stop() {
  stop_ = true;
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

namespace {

// A lease waiting for its answer.
struct Held {
  absl::Time due;
  uint64_t task_id, token;
  int64_t due_ns;
  Kind kind;
  int fail;  // 0 complete, 1 fail retryable, 2 fail for good
  bool operator>(const Held& o) const { return due > o.due; }
};

}  // namespace

void SimFleet::RunAgent(int index) {
  std::mt19937_64 rng(o_.seed * 7919 + static_cast<uint64_t>(index));
  std::uniform_real_distribution<double> roll(0, 1);
  auto client = Client::Connect(address_, o_.client);
  int incarnation = 0;
  while (!stop_) {
    v1::RegisterAgentRequest req;
    req.add_types(type_);
    req.set_max_concurrency(o_.slots);
    req.set_name(
        absl::StrCat("loadtest-", index, incarnation > 0 ? absl::StrCat(".", incarnation) : ""));
    (*req.mutable_labels())["loadtest"] = "sim";
    auto reg = client->Register(req);
    if (!reg.ok()) {
      absl::SleepFor(absl::Milliseconds(200));
      continue;
    }
    incarnation++;
    const uint64_t id = reg->agent_id();
    std::mutex mu;
    std::condition_variable cv;
    std::priority_queue<Held, std::vector<Held>, std::greater<Held>> held;
    bool done = false;
    std::atomic<bool> crashed{false}, ended{false};
    auto stream = client->OpenWorkStream(id);
    Client::WorkStream* raw = stream.get();
    std::vector<std::thread> workers;
    for (int w = 0; w < 4; ++w) {
      workers.emplace_back([&] {
        v1::CompleteTasksRequest batch;
        batch.set_agent_id(id);
        std::vector<Held> take;
        std::vector<Recorder::Done> acked;
        while (true) {
          take.clear();
          {
            std::unique_lock<std::mutex> lk(mu);
            while (true) {
              if (done) return;
              if (!held.empty() && held.top().due <= absl::Now()) break;
              if (held.empty()) {
                cv.wait(lk);
              } else {
                cv.wait_for(lk, std::chrono::nanoseconds(
                                    absl::ToInt64Nanoseconds(held.top().due - absl::Now()) + 1));
              }
            }
            const absl::Time now = absl::Now();
            while (!held.empty() && held.top().due <= now && take.size() < 1000) {
              take.push_back(held.top());
              held.pop();
            }
          }
          batch.clear_items();
          for (const Held& h : take) {
            if (h.fail != 0) {
              rec_->Failed();
              (void)client->Fail(id, h.task_id, h.token,
                                 h.fail == 1 ? "loadtest: a simulated failure (retryable)"
                                             : "loadtest: a simulated poison task (not retryable)",
                                 h.fail == 1);
              continue;
            }
            auto* item = batch.add_items();
            item->set_task_id(h.task_id);
            item->set_lease_token(h.token);
            item->set_result("ok");
          }
          if (batch.items_size() == 0) continue;
          auto resp = client->CompleteBatch(batch);
          if (!resp.ok()) continue;  // the server is gone: the leases come back to someone
          acked.clear();
          int k = 0;
          for (const Held& h : take) {
            if (h.fail != 0) continue;
            if (k < resp->errors_size() && resp->errors(k).empty()) {
              acked.push_back({h.task_id, h.due_ns, h.kind});
            }
            ++k;
          }
          rec_->Completed(acked, absl::Now());
        }
      });
    }
    // Heartbeats; and the hand that ends the stream when the fleet stops.
    std::thread beat([&] {
      absl::Time next = absl::Now() + absl::Milliseconds(reg->heartbeat_interval_ms());
      while (!ended) {
        if (stop_) {
          raw->Cancel();
          return;
        }
        if (absl::Now() >= next) {
          if (absl::IsNotFound(client->Heartbeat(id))) {
            raw->Cancel();  // the server forgot us (it restarted): register again
            return;
          }
          next = absl::Now() + absl::Milliseconds(reg->heartbeat_interval_ms());
        }
        absl::SleepFor(absl::Milliseconds(20));
      }
    });
    v1::WorkItem item;
    while (stream->Read(&item)) {
      if (!item.has_lease()) continue;
      const v1::TaskLease& lease = item.lease();
      rec_->Attempt(lease.attempt());
      int64_t due_ns = 0;
      Kind kind = Kind::kTask;
      if (!ParsePayload(lease.payload(), &due_ns, &kind)) due_ns = absl::GetCurrentTimeNanos();
      int fail = 0;
      if (chaos_) {
        const ChaosRates& c = o_.chaos;
        const double r = roll(rng);
        if (r < c.crash) {
          crashes_++;
          rec_->Event(fmt::format("agent {} (loadtest-{}) crashed holding task {}", id, index,
                                  lease.task_id()));
          crashed = true;
          break;
        }
        if (r < c.crash + c.hang) {
          hangs_++;
          continue;  // kept, never answered: the attempt's execution timeout ends it
        }
        if (r < c.crash + c.hang + c.fail) {
          fail = 1;
        } else if (r < c.crash + c.hang + c.fail + c.poison) {
          fail = 2;
        }
      }
      absl::Time due = absl::Now();
      if (o_.work) due += absl::Seconds(sim::SampleSeconds(*o_.work, rng));
      {
        std::lock_guard<std::mutex> lk(mu);
        held.push({due, lease.task_id(), lease.lease_token(), due_ns, kind, fail});
      }
      cv.notify_one();
    }
    // The stream ended: the fleet stops, the agent crashed, or the server went away.
    ended = true;
    raw->Cancel();
    (void)stream->Finish();
    {
      std::lock_guard<std::mutex> lk(mu);
      done = true;
    }
    cv.notify_all();
    for (std::thread& w : workers) w.join();
    beat.join();
    if (crashed) {
      absl::SleepFor(absl::Seconds(1));  // a new process takes a moment to start
    } else if (stop_) {
      (void)client->Deregister(id);
    } else {
      absl::SleepFor(absl::Milliseconds(200));
    }
  }
}

ProcessFleet::ProcessFleet(const Options& o, const std::string& address, const std::string& type)
    : o_(o), address_(address), type_(type) {}

ProcessFleet::~ProcessFleet() { Stop(); }

absl::StatusOr<pid_t> ProcessFleet::StartOne(int index) {
  std::vector<std::string> env;
  if (o_.client.token && !o_.client.token->empty())
    env.push_back("DROVER_TOKEN=" + *o_.client.token);
  std::vector<std::string> argv = {o_.binary,
                                   "--server",
                                   address_,
                                   "agent",
                                   "--type",
                                   type_,
                                   "--concurrency",
                                   std::to_string(o_.slots),
                                   "--name",
                                   absl::StrCat("loadtest-", index),
                                   "--label",
                                   "loadtest=process",
                                   "--"};
  argv.insert(argv.end(), o_.agent_command.begin(), o_.agent_command.end());
  return Spawn(argv, "", env);
}

absl::Status ProcessFleet::Start() {
  for (int i = 0; i < o_.agents; ++i) {
    absl::StatusOr<pid_t> pid = StartOne(i);
    if (!pid.ok()) return pid.status();
    pids_.push_back(*pid);
  }
  return absl::OkStatus();
}

void ProcessFleet::CrashOne(uint64_t roll) {
  if (pids_.empty()) return;
  const size_t i = roll % pids_.size();
  kill(pids_[i], SIGKILL);
  int status = 0;
  waitpid(pids_[i], &status, 0);
  absl::StatusOr<pid_t> pid = StartOne(static_cast<int>(i));
  pids_[i] = pid.ok() ? *pid : -1;
}

void ProcessFleet::Stop() {
  for (pid_t p : pids_) {
    if (p > 0) kill(p, SIGTERM);
  }
  for (pid_t p : pids_) {
    if (p <= 0) continue;
    int status = 0;
    waitpid(p, &status, 0);
  }
  pids_.clear();
}

}  // namespace drover::loadtest
