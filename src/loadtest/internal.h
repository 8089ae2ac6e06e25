// Private to drover_loadtest: what a scenario records while it runs, the agents and the
// server it may start, and the report writer.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "loadtest/loadtest.h"
#include "util/histogram.h"

namespace drover::loadtest {

// What a task's payload says: when it was due (ns since the epoch) and what kind it is.
enum class Kind : char { kTask = 't', kStep = 's', kSink = 'w', kMax = 'm' };
std::string Payload(int64_t due_ns, Kind kind);
bool ParsePayload(const std::string& payload, int64_t* due_ns, Kind* kind);

// Latency buckets: 50 us .. 10 min, 15 % apart.
std::vector<double> FineBounds();

// Everything a scenario counts, per second of its run and in total. Thread-safe.
class Recorder {
 public:
  static constexpr int kMaxSeconds = 7200;
  explicit Recorder(absl::Time start);
  absl::Time start() const { return start_; }
  int SecondOf(absl::Time t) const;

  // A submission call answered: `tasks` tasks acknowledged (their ids), `latency` from
  // the due time of its first task.
  void Acked(const std::vector<uint64_t>& ids, double latency_s, bool max_phase);
  void Refused(int64_t tasks) { refused_ += tasks; }
  void SubmitRetry() { submit_retries_++; }
  // Agents: completions acknowledged by the server, with their end-to-end latencies.
  struct Done {
    uint64_t id;
    int64_t due_ns;
    Kind kind;
  };
  void Completed(const std::vector<Done>& done, absl::Time now);
  void Attempt(int attempt);            // a lease received (attempt > 1 is a retry)
  void Failed();                        // an attempt the agent failed (or never answered)
  void Event(const std::string& what);  // "12.3 s: agent 4 crashed"
  void Sample(int64_t outstanding, int64_t agents);  // once a second from the server's stats

  struct Second {
    int64_t acked = 0, completed = 0, failed = 0, retries = 0, outstanding = -1, agents = -1;
    Histogram submit{FineBounds()}, e2e{FineBounds()};
  };
  // Copies (for the report).
  std::vector<Second> Timeline() const;
  std::vector<uint64_t> AckedIds() const;
  std::vector<uint64_t> CompletedIds() const;
  std::vector<std::string> Events() const;
  Histogram SubmitLatency(bool max_phase) const;
  Histogram TaskLatency(bool max_phase) const;
  Histogram WorkflowLatency() const;
  int64_t acked() const { return acked_; }
  int64_t completed() const { return completed_; }
  int64_t max_acked() const { return max_acked_; }
  int64_t max_completed() const { return max_completed_; }
  absl::Time max_last_completion() const;
  int64_t refused() const { return refused_; }
  int64_t submit_retries() const { return submit_retries_; }
  int64_t retries() const { return retries_; }
  int64_t failed_attempts() const { return failed_attempts_; }

 private:
  const absl::Time start_;
  mutable std::mutex mu_;
  Second& At(int s);             // under mu_
  std::vector<Second> seconds_;  // up to the latest second touched
  std::vector<uint64_t> acked_ids_, completed_ids_;
  std::vector<std::string> events_;
  Histogram submit_{FineBounds()}, submit_max_{FineBounds()}, task_{FineBounds()},
      task_max_{FineBounds()}, workflow_{FineBounds()};
  absl::Time max_last_ = absl::InfinitePast();
  std::atomic<int64_t> acked_{0}, completed_{0}, max_acked_{0}, max_completed_{0}, refused_{0},
      submit_retries_{0}, retries_{0}, failed_attempts_{0};
};

// The built-in agents: threads in this process, each registered as an agent with its own
// channel, answering on a work stream (completions batched with CompleteTasks, as a busy
// agent would). With chaos rates they crash, hang and fail; after a crash or a lost server
// they register again.
class SimFleet {
 public:
  SimFleet(const Options& o, const std::string& address, Recorder* rec, const std::string& type,
           bool chaos);
  ~SimFleet();
  void Start();
  void Stop();
  int64_t crashes() const { return crashes_; }
  int64_t hangs() const { return hangs_; }

 private:
  void RunAgent(int index);
  const Options& o_;
  const std::string address_;
  Recorder* rec_;
  const std::string type_;
  const bool chaos_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> crashes_{0}, hangs_{0};
  std::vector<std::thread> threads_;
};

// Real `drover agent` processes running Options::agent_command.
class ProcessFleet {
 public:
  ProcessFleet(const Options& o, const std::string& address, const std::string& type);
  ~ProcessFleet();
  absl::Status Start();
  void Stop();
  // SIGKILLs one agent process at random and starts another in its place.
  void CrashOne(uint64_t roll);

 private:
  absl::StatusOr<pid_t> StartOne(int index);
  const Options& o_;
  const std::string address_, type_;
  std::vector<pid_t> pids_;
};

// The `drover serve` loadtest starts when no --server is given: loopback ports chosen by
// the kernel at the first start and kept across a restart, SQLite store, auth on (the
// admin token it writes is what loadtest uses).
class OwnServer {
 public:
  explicit OwnServer(const Options& o);
  ~OwnServer();
  absl::Status Start();
  void Kill();  // SIGKILL, then reaped
  void Stop();  // SIGTERM, then reaped
  std::string address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  std::string dashboard() const { return "http://127.0.0.1:" + std::to_string(http_port_) + "/"; }
  std::string log() const { return dir_ + "/serve.log"; }
  std::string token_file() const { return data_dir_ + "/admin.token"; }
  std::string data_dir() const { return data_dir_; }

 private:
  const Options& o_;
  std::string dir_, data_dir_;
  bool own_dir_ = false;
  int grpc_port_ = 0, http_port_ = 0;
  pid_t pid_ = -1;
};

// Starts argv with stdin from /dev/null and stdout/stderr appended to `log` ("" = /dev/null)
// and `env` ("K=V") added; the error names the program.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, const std::string& log,
                            const std::vector<std::string>& env = {});

// What the report says of one scenario.
struct ScenarioReport {
  Scenario scenario;
  double rate = 0;
  absl::Duration duration;
  std::string setup;  // a sentence: agents, work, what chaos does
  std::unique_ptr<Recorder> rec;
  // The end of every acknowledged task, from the agents' acknowledgements and the server.
  int64_t succeeded = 0, dead = 0, canceled = 0, expired = 0, unfinished = 0, missing = 0;
  int64_t workflows = 0;
  double open_loop_secs = 0;  // the steady phase, as run
  double max_secs = 0;        // throughput's fast phase: first submission to last completion
  double drain_secs = 0;
  double server_down_secs = -1;  // chaos: kill to serving again
  int64_t crashes = 0, hangs = 0;
  bool lost_none() const { return missing == 0 && unfinished == 0; }
};

absl::Status WriteReport(const Options& o, const std::string& server_desc,
                         const std::vector<ScenarioReport>& reports);

}  // namespace drover::loadtest
