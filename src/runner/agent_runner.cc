#include "runner/agent_runner.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "core/engine.h"
#include "fmt/core.h"
#include "util/file.h"
#include "util/json.h"

extern char** environ;

namespace drover::runner {
namespace {

constexpr int kExitRetryable = 75;  // EX_TEMPFAIL
constexpr size_t kStderrTail = 4096;

struct Running {
  pid_t pid = 0;
  uint64_t token = 0;
  bool canceled = false;
};

std::string ReadFile(const std::string& path) { return ReadWholeFile(path).value_or(""); }

int64_t MtimeNs(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

void SetNonBlocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

class Agent {
 public:
  Agent(const AgentOptions& o, const std::atomic<bool>& stop)
      : o_(o), stop_(stop), client_(client::Client::Connect(o.server)) {}

  int Run();

 private:
  enum class Registration { kOk, kRetry, kRefused };
  Registration Register();
  // SIGTERM to every running command's process group; their results will not be reported.
  void KillRunning(const std::string& why);
  void HeartbeatLoop(client::Client::WorkStream* stream, std::atomic<bool>& session_over);
  void OnItem(const drover::v1::WorkItem& item);
  void RunTask(drover::v1::TaskLease lease, uint64_t agent_id);
  // Reports with a few retries while the server is unreachable.
  template <typename F>
  absl::Status Report(F call);
  void Log(const std::string& line) {
    std::lock_guard<std::mutex> lk(log_mu_);
    fmt::print(stderr, "drover agent {}: {}\n", name_, line);
  }

  const AgentOptions& o_;
  const std::atomic<bool>& stop_;
  std::unique_ptr<client::Client> client_;
  std::string name_;
  std::atomic<uint64_t> agent_id_{0};
  int64_t heartbeat_ms_ = 1000;
  std::string work_dir_;
  std::string messages_file_;  // <work_dir>/messages: one line per message received
  std::mutex mu_;
  std::map<uint64_t, Running> running_;
  int workers_ = 0;
  std::condition_variable workers_cv_;
  std::mutex log_mu_;
};

Agent::Registration Agent::Register() {
  drover::v1::RegisterAgentRequest req;
  for (const auto& t : o_.types) req.add_types(t);
  req.set_max_concurrency(o_.concurrency);
  req.set_cost_factor(o_.cost_factor);
  req.set_max_uses(o_.max_uses);
  req.set_name(name_);
  for (const auto& [k, v] : o_.labels) (*req.mutable_labels())[k] = v;
  auto r = client_->Register(req);
  if (!r.ok()) {
    if (r.status().code() == absl::StatusCode::kInvalidArgument) {
      Log(absl::StrCat("registration refused: ", r.status().message()));
      return Registration::kRefused;
    }
    return Registration::kRetry;
  }
  agent_id_ = r->agent_id();
  heartbeat_ms_ = r->heartbeat_interval_ms();
  Log(absl::StrCat("registered as agent ", r->agent_id(), " for ", absl::StrJoin(o_.types, ","),
                   " with ", o_.concurrency, " slots"));
  return Registration::kOk;
}

void Agent::KillRunning(const std::string& why) {
  std::lock_guard<std::mutex> lk(mu_);
  if (running_.empty()) return;
  Log(absl::StrCat("stopping ", running_.size(), " running command(s): ", why));
  for (auto& [task, r] : running_) {
    r.canceled = true;
    ::kill(-r.pid, SIGTERM);
  }
}

void Agent::HeartbeatLoop(client::Client::WorkStream* stream, std::atomic<bool>& session_over) {
  auto next = absl::Now() + absl::Milliseconds(heartbeat_ms_);
  while (!session_over) {
    if (stop_) {
      stream->Cancel();
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (absl::Now() < next) continue;
    next = absl::Now() + absl::Milliseconds(heartbeat_ms_);
    absl::Status st = client_->Heartbeat(agent_id_);
    if (st.code() == absl::StatusCode::kNotFound) {
      // The server forgot us (restart, or we were silent past the lease TTL): start over.
      Log("server no longer knows this agent; registering again");
      agent_id_ = 0;
      stream->Cancel();
      return;
    }
  }
}

void Agent::OnItem(const drover::v1::WorkItem& item) {
  if (item.has_lease()) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      workers_++;
    }
    std::thread([this, lease = item.lease(), id = agent_id_.load()]() mutable {
      RunTask(std::move(lease), id);
      std::lock_guard<std::mutex> lk(mu_);
      workers_--;
      workers_cv_.notify_all();
    }).detach();
    return;
  }
  if (item.has_message()) {
    // Appended as one line "<id>\t<topic>\t<body>" (newlines in the body become spaces),
    // so a command can follow the file with `tail -f` or read its last line.
    const drover::v1::AgentMessage& m = item.message();
    std::string body = m.body();
    std::replace(body.begin(), body.end(), '\n', ' ');
    std::lock_guard<std::mutex> lk(mu_);
    std::ofstream(messages_file_, std::ios::app)
        << m.id() << '\t' << m.topic() << '\t' << body << '\n';
    Log(absl::StrCat("message ", m.id(), m.topic().empty() ? "" : " (" + m.topic() + ")",
                     " appended to ", messages_file_));
    return;
  }
  if (item.has_cancel()) {
    const auto& c = item.cancel();
    std::lock_guard<std::mutex> lk(mu_);
    auto it = running_.find(c.task_id());
    if (it == running_.end() || it->second.token != c.lease_token()) return;
    it->second.canceled = true;
    Log(absl::StrCat("task ", c.task_id(), " canceled by the server (", c.reason(),
                     "); stopping its command"));
    ::kill(-it->second.pid, SIGTERM);
    const pid_t pid = it->second.pid;
    const uint64_t token = c.lease_token();
    const uint64_t task = c.task_id();
    std::thread([this, pid, token, task] {
      std::this_thread::sleep_for(std::chrono::seconds(5));
      std::lock_guard<std::mutex> lk2(mu_);
      auto it2 = running_.find(task);
      if (it2 != running_.end() && it2->second.token == token) ::kill(-pid, SIGKILL);
    }).detach();
  }
}

template <typename F>
absl::Status Agent::Report(F call) {
  absl::Status st;
  for (int i = 0; i < 20; ++i) {
    st = call();
    if (st.code() != absl::StatusCode::kUnavailable &&
        st.code() != absl::StatusCode::kDeadlineExceeded &&
        st.code() != absl::StatusCode::kResourceExhausted) {
      return st;
    }
    if (stop_) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  return st;
}

void Agent::RunTask(drover::v1::TaskLease lease, uint64_t agent_id) {
  const absl::Time start = absl::Now();
  const uint64_t task = lease.task_id();
  const uint64_t token = lease.lease_token();
  const TaskPlan plan = PlanTask(lease, work_dir_, o_.server, messages_file_);
  const std::string& ckpt = plan.checkpoint_file;
  const std::string& parents_dir = plan.parents_dir;
  if (!parents_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parents_dir, ec);
  }
  for (const auto& [path, content] : plan.files) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
  }
  int64_t ckpt_mtime = MtimeNs(ckpt);
  auto cleanup = [&] {
    std::remove(ckpt.c_str());
    if (!parents_dir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(parents_dir, ec);
    }
  };

  // Everything the child needs is prepared before fork.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    // The task's own values replace the runner's: DROVER_* and the trace context.
    if (std::strncmp(*e, "DROVER_", 7) != 0 && std::strncmp(*e, "TRACEPARENT=", 12) != 0) {
      env_strings.emplace_back(*e);
    }
  }
  env_strings.insert(env_strings.end(), plan.env.begin(), plan.env.end());
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_strings = o_.command;
  std::vector<char*> argv;
  for (auto& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) != 0 || ::pipe2(out_pipe, O_CLOEXEC) != 0 ||
      ::pipe2(err_pipe, O_CLOEXEC) != 0) {
    (void)Report([&] { return client_->Fail(agent_id, task, token, "agent: pipe failed", true); });
    cleanup();
    return;
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::dup2(in_pipe[0], 0);
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    ::execvpe(argv[0], argv.data(), envp.data());
    const char* msg = "drover agent: cannot execute the command\n";
    (void)!::write(2, msg, std::strlen(msg));
    ::_exit(127);
  }
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (pid < 0) {
    ::close(in_pipe[1]);
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    (void)Report([&] { return client_->Fail(agent_id, task, token, "agent: fork failed", true); });
    cleanup();
    return;
  }
  ::setpgid(pid, pid);
  {
    std::lock_guard<std::mutex> lk(mu_);
    running_[task] = Running{pid, token, false};
  }

  SetNonBlocking(in_pipe[1]);
  SetNonBlocking(out_pipe[0]);
  SetNonBlocking(err_pipe[0]);
  const std::string& payload = lease.payload();
  size_t written = 0;
  int in_fd = in_pipe[1];
  if (payload.empty()) {
    ::close(in_fd);
    in_fd = -1;
  }
  std::string result, err_tail;
  bool result_too_large = false;
  int out_fd = out_pipe[0], err_fd = err_pipe[0];
  char buf[65536];
  while (out_fd >= 0 || err_fd >= 0) {
    pollfd fds[3];
    int n = 0;
    int idx_in = -1, idx_out = -1, idx_err = -1;
    if (in_fd >= 0) {
      fds[n] = {in_fd, POLLOUT, 0};
      idx_in = n++;
    }
    if (out_fd >= 0) {
      fds[n] = {out_fd, POLLIN, 0};
      idx_out = n++;
    }
    if (err_fd >= 0) {
      fds[n] = {err_fd, POLLIN, 0};
      idx_err = n++;
    }
    const int r = ::poll(fds, n, 500);
    if (r < 0 && errno != EINTR) break;
    if (idx_in >= 0 && fds[idx_in].revents != 0) {
      const ssize_t w = ::write(in_fd, payload.data() + written, payload.size() - written);
      if (w > 0) written += static_cast<size_t>(w);
      if (w < 0 && errno != EAGAIN) written = payload.size();  // EPIPE: the command stopped reading
      if (written >= payload.size()) {
        ::close(in_fd);
        in_fd = -1;
      }
    }
    if (idx_out >= 0 && fds[idx_out].revents != 0) {
      const ssize_t got = ::read(out_fd, buf, sizeof(buf));
      if (got > 0) {
        if (result.size() + static_cast<size_t>(got) > o_.max_result_bytes) {
          result_too_large = true;
        } else {
          result.append(buf, static_cast<size_t>(got));
        }
      } else if (got == 0 || errno != EAGAIN) {
        ::close(out_fd);
        out_fd = -1;
      }
    }
    if (idx_err >= 0 && fds[idx_err].revents != 0) {
      const ssize_t got = ::read(err_fd, buf, sizeof(buf));
      if (got > 0) {
        err_tail.append(buf, static_cast<size_t>(got));
        if (err_tail.size() > kStderrTail) err_tail.erase(0, err_tail.size() - kStderrTail);
        if (o_.verbose) (void)!::write(2, buf, static_cast<size_t>(got));
      } else if (got == 0 || errno != EAGAIN) {
        ::close(err_fd);
        err_fd = -1;
      }
    }
    // A checkpoint written while the command runs reaches the server at once, so a crash
    // of this agent does not lose it.
    if (const int64_t m = MtimeNs(ckpt); m != ckpt_mtime) {
      ckpt_mtime = m;
      (void)client_->Checkpoint(agent_id, task, token, ReadFile(ckpt));
    }
  }
  if (in_fd >= 0) ::close(in_fd);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  bool canceled = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    canceled = running_[task].canceled;
    running_.erase(task);
  }
  const int64_t ms = absl::ToInt64Milliseconds(absl::Now() - start);
  if (canceled || stop_) {
    cleanup();
    return;  // the server already ended this attempt, or we are leaving (deregister requeues)
  }
  if (const int64_t m = MtimeNs(ckpt); m != ckpt_mtime) {
    (void)Report([&] { return client_->Checkpoint(agent_id, task, token, ReadFile(ckpt)); });
  }
  cleanup();
  absl::Status st;
  std::string outcome;
  auto tail = [&] {
    std::string t = err_tail;
    while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
    return t.empty() ? std::string() : absl::StrCat(": ", t);
  };
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && !result_too_large) {
    // Output that parses as JSON is marked so (shown as a JSON value): its bytes are the same.
    const bool json = !result.empty() && util::CheckJson(result, "result").ok();
    st = Report([&] { return client_->Complete(agent_id, task, token, result, json); });
    outcome = "succeeded";
  } else if (result_too_large) {
    st = Report([&] {
      return client_->Fail(agent_id, task, token,
                           absl::StrCat("result exceeds ", o_.max_result_bytes, " bytes"), false);
    });
    outcome = "failed (result too large)";
  } else if (WIFEXITED(status) && WEXITSTATUS(status) == kExitRetryable) {
    st = Report([&] {
      return client_->Fail(agent_id, task, token, absl::StrCat("exit status 75", tail()), true);
    });
    outcome = "failed, retryable (exit 75)";
  } else {
    const std::string why = WIFEXITED(status) ? absl::StrCat("exit status ", WEXITSTATUS(status))
                                              : absl::StrCat("killed by signal ", WTERMSIG(status));
    st = Report([&] { return client_->Fail(agent_id, task, token, why + tail(), false); });
    outcome = absl::StrCat("failed (", why, ")");
  }
  Log(absl::StrCat("task ", task, " attempt ", lease.attempt(), " ", outcome, " in ", ms, " ms",
                   st.ok() ? "" : absl::StrCat("; report refused: ", st.message())));
}

int Agent::Run() {
  name_ = o_.name.empty() ? absl::StrCat(o_.types.empty() ? "agent" : o_.types[0], "-", ::getpid())
                          : o_.name;
  work_dir_ = o_.work_dir;
  if (work_dir_.empty()) {
    char tmpl[] = "/tmp/drover-agent-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      Log("cannot create a work directory in /tmp");
      return 1;
    }
    work_dir_ = tmpl;
  } else {
    ::mkdir(work_dir_.c_str(), 0755);
  }
  messages_file_ = work_dir_ + "/messages";
  int failures = 0;
  while (!stop_) {
    if (agent_id_ == 0) {
      const Registration r = Register();
      if (r == Registration::kRefused) return 2;
      if (r == Registration::kRetry) {
        if (failures++ % 20 == 0) Log(absl::StrCat("waiting for the server at ", o_.server));
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
        continue;
      }
      // A new registration: leases of the old one are void (the server requeued them), so
      // their commands only hold slots.
      KillRunning("their leases ended with the previous registration");
    }
    failures = 0;
    auto stream = client_->OpenWorkStream(agent_id_);
    std::atomic<bool> session_over{false};
    std::thread hb([&] { HeartbeatLoop(stream.get(), session_over); });
    drover::v1::WorkItem item;
    while (stream->Read(&item)) OnItem(item);
    session_over = true;
    hb.join();
    absl::Status st = stream->Finish();
    if (stop_) break;
    // The same agent reconnects its stream when the server still knows it; its running
    // commands keep their leases.
    if (agent_id_ != 0 && client_->Heartbeat(agent_id_).code() == absl::StatusCode::kNotFound) {
      agent_id_ = 0;
    }
    Log(absl::StrCat("work stream ended (", st.message(), "); reconnecting"));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  // Leaving: stop running commands (SIGKILL after 5 s); deregistering returns their tasks to
  // the queue at once.
  KillRunning("the agent is stopping");
  {
    std::unique_lock<std::mutex> lk(mu_);
    if (!workers_cv_.wait_for(lk, std::chrono::seconds(5), [&] { return workers_ == 0; })) {
      for (auto& [task, r] : running_) ::kill(-r.pid, SIGKILL);
      workers_cv_.wait_for(lk, std::chrono::seconds(2), [&] { return workers_ == 0; });
    }
  }
  if (agent_id_ != 0) (void)client_->Deregister(agent_id_);
  if (o_.work_dir.empty()) ::rmdir(work_dir_.c_str());
  Log("stopped");
  return 0;
}

}  // namespace

namespace {

// A lease's strings go into file names and environment values: keep only what is safe.
bool PlainName(const std::string& s) {
  if (s.empty() || s.size() > 64 || s == "." || s == "..") return false;
  for (char c : s) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-')) {
      return false;
    }
  }
  return true;
}

std::string EnvValue(const std::string& v) {
  std::string out = v;
  for (char& c : out) {
    if (c == '\0' || c == '\n' || c == '\r') c = ' ';
  }
  return out;
}

}  // namespace

TaskPlan PlanTask(const drover::v1::TaskLease& lease, const std::string& work_dir,
                  const std::string& server, const std::string& messages_file) {
  TaskPlan plan;
  const uint64_t task = lease.task_id();
  plan.checkpoint_file = absl::StrCat(work_dir, "/task-", task, ".checkpoint");
  plan.files.emplace_back(plan.checkpoint_file, lease.checkpoint());
  // Parents' results as files: <dir>/<step or task id> holds the result (empty unless the
  // parent succeeded), <name>.state its end ("succeeded", "dead", ...), <name>.error why.
  std::string parents_list;
  if (lease.parents_size() > 0) {
    plan.parents_dir = absl::StrCat(work_dir, "/task-", task, ".parents");
    for (const drover::v1::ParentResult& p : lease.parents()) {
      const std::string name = PlainName(p.step()) ? p.step() : absl::StrCat(p.task_id());
      const std::string state = core::StateName(p.state());
      plan.files.emplace_back(absl::StrCat(plan.parents_dir, "/", name), p.result());
      plan.files.emplace_back(absl::StrCat(plan.parents_dir, "/", name, ".state"), state);
      if (!p.error().empty()) {
        plan.files.emplace_back(absl::StrCat(plan.parents_dir, "/", name, ".error"), p.error());
      }
      absl::StrAppend(&parents_list, parents_list.empty() ? "" : " ", name, "=", state);
    }
  }
  auto& env = plan.env;
  env.push_back(absl::StrCat("DROVER_TASK_ID=", task));
  env.push_back(absl::StrCat("DROVER_ATTEMPT=", lease.attempt()));
  env.push_back(absl::StrCat("DROVER_DEADLINE_UNIX_MS=", lease.deadline_unix_ms()));
  env.push_back(absl::StrCat("DROVER_TASK_TYPE=", EnvValue(lease.type())));
  env.push_back(absl::StrCat("DROVER_TENANT=", EnvValue(lease.tenant())));
  env.push_back(absl::StrCat("DROVER_PRIORITY=", static_cast<int>(lease.priority())));
  env.push_back(absl::StrCat("DROVER_CHECKPOINT_FILE=", plan.checkpoint_file));
  env.push_back(absl::StrCat("DROVER_SERVER=", EnvValue(server)));
  env.push_back(absl::StrCat("DROVER_MESSAGES_FILE=", messages_file));
  // The attempt's span in the task's trace (W3C): the command's own spans join it.
  if (!lease.traceparent().empty()) {
    env.push_back(absl::StrCat("TRACEPARENT=", EnvValue(lease.traceparent())));
  }
  if (lease.workflow_id() != 0) {
    env.push_back(absl::StrCat("DROVER_WORKFLOW_ID=", lease.workflow_id()));
    env.push_back(absl::StrCat("DROVER_STEP=", EnvValue(lease.step())));
  }
  if (!plan.parents_dir.empty()) {
    env.push_back(absl::StrCat("DROVER_PARENTS_DIR=", plan.parents_dir));
    env.push_back(absl::StrCat("DROVER_PARENTS=", parents_list));
  }
  return plan;
}

int RunAgent(const AgentOptions& options, const std::atomic<bool>& stop) {
  // Not dumpable: the tasks it runs (same user) cannot read its memory or its environment
  // (/proc/<pid>/environ holds DROVER_TOKEN) through /proc.
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  ::signal(SIGPIPE, SIG_IGN);
  Agent agent(options, stop);
  return agent.Run();
}

}  // namespace drover::runner
