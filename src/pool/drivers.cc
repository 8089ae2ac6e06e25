#include "pool/drivers.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "fmt/core.h"
#include "util/file.h"

namespace drover::pool {
namespace {

constexpr absl::Duration kKillAfter = absl::Seconds(10);
constexpr const char* kControllerNames[] = {"memory", "cpu", "pids"};

std::string ReadFile(const std::string& path) { return ReadWholeFile(path).value_or(""); }

// Writes `value` to a cgroup file; the error names the file.
absl::Status WriteFile(const std::string& path, const std::string& value) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat(path, ": ", strerror(errno)));
  const ssize_t n = ::write(fd, value.data(), value.size());
  const int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(value.size())) {
    return absl::InternalError(
        absl::StrCat("writing \"", value, "\" to ", path, ": ", strerror(n < 0 ? err : EIO)));
  }
  return absl::OkStatus();
}

// One argument for `sh -c`: single-quoted, with ' written as '\''.
std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// Runs argv (no shell) and returns its pid; stdout/stderr to /dev/null.
pid_t Run(const std::vector<std::string>& args) {
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    const int devnull = ::open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      dup2(devnull, STDIN_FILENO);
      dup2(devnull, STDOUT_FILENO);
      dup2(devnull, STDERR_FILENO);
    }
    execvp(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

}  // namespace

Cgroups Cgroups::Detect() {
  std::string v2;
  const std::string mountinfo = ReadFile("/proc/self/mountinfo");
  for (absl::string_view line : absl::StrSplit(mountinfo, '\n')) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    for (size_t i = 6; i + 1 < f.size(); ++i) {
      if (f[i] == "-" && f[i + 1] == "cgroup2") {
        v2 = ReadFile(f[4] + "/cgroup.controllers");
        break;
      }
    }
  }
  return Parse(mountinfo, ReadFile("/proc/self/cgroup"), v2);
}

Cgroups Cgroups::Parse(const std::string& mountinfo, const std::string& self_cgroup,
                       const std::string& v2_controllers) {
  // Where drover itself is: per v1 controller ("4:memory:/a/b"), and in v2 ("0::/a").
  std::map<std::string, std::string> own;
  std::string own_v2;
  bool has_v2_line = false;
  for (absl::string_view line : absl::StrSplit(self_cgroup, '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (f.size() != 3) continue;
    if (f[0] == "0" && f[1].empty()) {
      own_v2 = f[2];
      has_v2_line = true;
      continue;
    }
    for (absl::string_view c : absl::StrSplit(f[1], ',')) own[std::string(c)] = f[2];
  }
  // Mount root "/" and a path "/a": the directory is <mountpoint>/a. (In a container the
  // mount's root may be the container's own cgroup: strip it.)
  auto dir = [](const std::string& mountpoint, const std::string& root, std::string path) {
    if (root != "/" && path.rfind(root, 0) == 0) path = path.substr(root.size());
    if (path == "/") path.clear();
    return mountpoint + path;
  };
  Cgroups out;
  std::string v2_dir;
  for (absl::string_view line : absl::StrSplit(mountinfo, '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    size_t dash = 6;
    while (dash < f.size() && f[dash] != "-") ++dash;
    if (dash + 3 >= f.size() || f.size() < 5) continue;
    const std::string& type = f[dash + 1];
    if (type == "cgroup") {
      for (absl::string_view opt : absl::StrSplit(f[dash + 3], ',')) {
        for (int c = 0; c < kControllers; ++c) {
          if (opt != kControllerNames[c]) continue;
          auto it = own.find(kControllerNames[c]);
          if (it != own.end()) out.parent_[c] = dir(f[4], f[3], it->second);
        }
      }
    } else if (type == "cgroup2" && has_v2_line) {
      v2_dir = dir(f[4], f[3], own_v2);
    }
  }
  // v2 serves what no v1 hierarchy has.
  for (absl::string_view c :
       absl::StrSplit(v2_controllers, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
    for (int i = 0; i < kControllers; ++i) {
      if (c == kControllerNames[i] && out.parent_[i].empty() && !v2_dir.empty()) {
        out.parent_[i] = v2_dir;
        out.v2_[i] = true;
      }
    }
  }
  return out;
}

std::string Cgroups::Describe() const {
  std::vector<std::string> parts;
  for (int c = 0; c < kControllers; ++c) {
    if (!parent_[c].empty()) {
      parts.push_back(absl::StrCat(kControllerNames[c], v2_[c] ? " (v2)" : " (v1)"));
    }
  }
  return parts.empty() ? "none" : absl::StrJoin(parts, ", ");
}

absl::StatusOr<std::vector<std::string>> Cgroups::Create(const std::string& name,
                                                         int64_t memory_bytes, double cpus,
                                                         int64_t pids) const {
  const bool want[kControllers] = {memory_bytes > 0, cpus > 0, pids > 0};
  std::vector<std::string> dirs;
  auto fail = [&](absl::Status st) {
    Remove(dirs);
    return st;
  };
  for (int c = 0; c < kControllers; ++c) {
    if (!want[c]) continue;
    if (parent_[c].empty()) {
      return fail(absl::FailedPreconditionError(
          absl::StrCat("this machine offers no ", kControllerNames[c], " cgroup controller")));
    }
    const std::string d = absl::StrCat(parent_[c], "/", name);
    if (std::find(dirs.begin(), dirs.end(), d) == dirs.end()) {
      if (v2_[c]) {
        // v2: the parent hands the controller down (fails while it has processes of its
        // own, unless it is the root: run drover serve in a cgroup delegated to it).
        if (absl::Status st = WriteFile(parent_[c] + "/cgroup.subtree_control",
                                        absl::StrCat("+", kControllerNames[c]));
            !st.ok()) {
          return fail(st);
        }
      }
      if (::mkdir(d.c_str(), 0755) != 0 && errno != EEXIST) {
        return fail(absl::InternalError(absl::StrCat("mkdir ", d, ": ", strerror(errno))));
      }
      dirs.push_back(d);
    }
    absl::Status st;
    switch (c) {
      case kMemory:
        st = WriteFile(d + (v2_[c] ? "/memory.max" : "/memory.limit_in_bytes"),
                       absl::StrCat(memory_bytes));
        break;
      case kCpu: {
        const int64_t period = 100'000;
        const int64_t quota = std::max<int64_t>(1000, std::llround(cpus * period));
        if (v2_[c]) {
          st = WriteFile(d + "/cpu.max", absl::StrCat(quota, " ", period));
        } else {
          st = WriteFile(d + "/cpu.cfs_period_us", absl::StrCat(period));
          if (st.ok()) st = WriteFile(d + "/cpu.cfs_quota_us", absl::StrCat(quota));
        }
        break;
      }
      case kPids:
        st = WriteFile(d + "/pids.max", absl::StrCat(pids));
        break;
    }
    if (!st.ok()) return fail(st);
  }
  return dirs;
}

bool Cgroups::OomKilled(const std::vector<std::string>& dirs) {
  for (const std::string& d : dirs) {
    for (const char* file : {"/memory.oom_control", "/memory.events"}) {
      for (absl::string_view line : absl::StrSplit(ReadFile(d + file), '\n')) {
        int64_t n = 0;
        if (absl::ConsumePrefix(&line, "oom_kill ") && absl::SimpleAtoi(line, &n) && n > 0) {
          return true;
        }
      }
    }
  }
  return false;
}

bool Cgroups::Remove(std::vector<std::string>& dirs) {
  std::erase_if(dirs,
                [](const std::string& d) { return ::rmdir(d.c_str()) == 0 || errno == ENOENT; });
  return dirs.empty();
}

ProcessDriver::ProcessDriver(std::string self, std::string server, std::string log_dir)
    : self_(std::move(self)),
      server_(std::move(server)),
      log_dir_(std::move(log_dir)),
      cgroups_(Cgroups::Detect()) {}

absl::Status ProcessDriver::CheckLimits(const PoolSpec& spec, const std::string& field) const {
  if (spec.runtime == PoolSpec::Runtime::kProcess) {
    const std::pair<const char*, bool> limits[] = {{"memory_bytes", spec.memory_bytes > 0},
                                                   {"cpus", spec.cpus > 0},
                                                   {"pids_limit", spec.pids_limit > 0}};
    for (int c = 0; c < Cgroups::kControllers; ++c) {
      if (limits[c].second && cgroups_.parent(static_cast<Cgroups::Controller>(c)).empty()) {
        return absl::FailedPreconditionError(absl::StrCat(
            field, ".", limits[c].first, ": this machine offers drover no ", kControllerNames[c],
            " cgroup controller (it offers: ", cgroups_.Describe(), ")"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ProcessDriver::Prepare(const PoolSpec& spec, const std::string& field) {
  if (absl::Status st = CheckLimits(spec, field); !st.ok()) return st;
  std::error_code ec;
  std::filesystem::create_directories(absl::StrCat(log_dir_, "/", spec.name), ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("pools: cannot create ", log_dir_, "/", spec.name, ": ", ec.message()));
  }
  if (spec.runtime == PoolSpec::Runtime::kContainer) RemoveStaleContainers(spec);
  return absl::OkStatus();
}

std::string ProcessDriver::MemberKey(const PoolSpec& spec, const Member& m) const {
  return absl::StrCat(spec.name, "/", m.n);
}

std::string ProcessDriver::MemberName(const PoolSpec& spec, const Member& m) const {
  // The member's container and cgroup. Unique per data directory (one server per data
  // directory), so two servers on one machine never touch each other's.
  return fmt::format("drover-{}-{}-{:08x}", spec.name, m.n,
                     static_cast<uint32_t>(std::hash<std::string>{}(log_dir_)));
}

void ProcessDriver::RemoveContainer(const PoolSpec& spec, const Member& m, bool wait) {
  std::vector<std::string> args = spec.container_engine;
  args.insert(args.end(), {"rm", "-f", "-t", "0", MemberName(spec, m)});
  const pid_t pid = Run(args);
  if (pid <= 0) return;
  if (wait) {
    waitpid(pid, nullptr, 0);
  } else {
    cleanups_.push_back(pid);
  }
}

void ProcessDriver::RemoveStaleContainers(const PoolSpec& spec) {
  // Left behind by a server of this data directory that was killed: remove them before
  // starting new ones.
  std::vector<std::string> args = spec.container_engine;
  args.insert(args.end(), {"ps", "-a", "-q", "--filter",
                           absl::StrCat("label=drover.pool_dir=", log_dir_, "/", spec.name)});
  std::string cmd;
  for (const std::string& a : args) cmd += ShellQuote(a) + " ";
  cmd += "| xargs -r ";
  for (const std::string& a : spec.container_engine) cmd += ShellQuote(a) + " ";
  cmd += "rm -f -t 0";
  const pid_t pid = Run({"/bin/sh", "-c", cmd});
  if (pid > 0) waitpid(pid, nullptr, 0);
}

absl::Status ProcessDriver::Start(const PoolSpec& spec, Member& m, absl::Time) {
  const std::string id = absl::StrCat(spec.name, "/", m.n);
  const std::string work_dir = absl::StrCat(log_dir_, "/", spec.name, "/", m.n, ".work");
  // (--server is the global option: before the subcommand.)
  std::vector<std::string> args = {self_,           "--server",
                                   server_,         "agent",
                                   "--name",        absl::StrCat("pool-", spec.name, "-", m.n),
                                   "--concurrency", absl::StrCat(spec.concurrency),
                                   "--label",       absl::StrCat(kPoolLabel, "=", spec.name),
                                   "--label",       absl::StrCat(kMemberLabel, "=", id),
                                   "--work-dir",    work_dir};
  for (const std::string& t : spec.types) args.insert(args.end(), {"--type", t});
  if (m.capacity_class >= 0) {
    args.insert(
        args.end(),
        {"--label",
         absl::StrCat("drover.class=", spec.classes[static_cast<size_t>(m.capacity_class)].name)});
  }
  if (spec.max_uses > 0) {
    // The engine then gives it no more than max_uses tasks; the pool retires it after.
    args.insert(args.end(), {"--max-uses", absl::StrCat(spec.max_uses)});
  }
  args.push_back("--");  // everything after it is the command
  if (spec.runtime == PoolSpec::Runtime::kContainer) {
    // The member is a long-running container plus the agent on the host, which runs each
    // task's command in it with `exec` (the task's variables passed through; the work
    // directory — checkpoint, parents', messages files — mounted at the same path). The
    // container starts in the member's own process, then that process becomes the agent.
    const std::string name = MemberName(spec, m);
    std::vector<std::string> run = spec.container_engine;
    run.insert(run.end(), {"run", "-d", "--name", name, "--network", "none", "--label",
                           absl::StrCat("drover.pool_dir=", log_dir_, "/", spec.name), "-v",
                           absl::StrCat(work_dir, ":", work_dir)});
    if (spec.memory_bytes > 0) run.insert(run.end(), {"--memory", absl::StrCat(spec.memory_bytes)});
    if (spec.cpus > 0) run.insert(run.end(), {"--cpus", absl::StrCat(spec.cpus)});
    if (spec.pids_limit > 0) run.insert(run.end(), {"--pids-limit", absl::StrCat(spec.pids_limit)});
    run.insert(run.end(), spec.container_run_args.begin(), spec.container_run_args.end());
    if (!spec.rootfs.empty()) {
      run.insert(run.end(), {"--rootfs", spec.rootfs});
    } else {
      run.push_back(spec.image);
    }
    run.insert(run.end(), {"sleep", "2147483647"});
    args.insert(args.end(), spec.container_engine.begin(), spec.container_engine.end());
    args.insert(args.end(), {"exec", "-i"});
    for (const char* v :
         {"DROVER_TASK_ID", "DROVER_ATTEMPT", "DROVER_DEADLINE_UNIX_MS", "DROVER_TASK_TYPE",
          "DROVER_TENANT", "DROVER_PRIORITY", "DROVER_CHECKPOINT_FILE", "DROVER_MESSAGES_FILE",
          "DROVER_WORKFLOW_ID", "DROVER_STEP", "DROVER_PARENTS_DIR", "DROVER_PARENTS"}) {
      args.insert(args.end(), {"-e", v});
    }
    args.push_back(name);
    args.insert(args.end(), spec.command.begin(), spec.command.end());
    std::string script = "mkdir -p " + ShellQuote(work_dir) + " && ";
    for (const std::string& a : run) script += ShellQuote(a) + " ";
    script += ">/dev/null && exec \"$@\"";
    args.insert(args.begin(), {"/bin/sh", "-c", script, "sh"});
  } else {
    args.insert(args.end(), spec.command.begin(), spec.command.end());
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log = absl::StrCat(log_dir_, "/", spec.name, "/", m.n, ".log");
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot open ", log, ": ", strerror(errno)));
  // Its own cgroup when the pool sets limits (processes; containers pass them to podman).
  std::vector<std::string> cgroup_dirs;
  std::vector<int> join;  // cgroup.procs of each, written "0" by the child
  if (spec.runtime == PoolSpec::Runtime::kProcess &&
      (spec.memory_bytes > 0 || spec.cpus > 0 || spec.pids_limit > 0)) {
    absl::StatusOr<std::vector<std::string>> dirs =
        cgroups_.Create(MemberName(spec, m), spec.memory_bytes, spec.cpus, spec.pids_limit);
    if (!dirs.ok()) {
      ::close(fd);
      return absl::Status(dirs.status().code(), absl::StrCat("cgroup: ", dirs.status().message()));
    }
    cgroup_dirs = std::move(*dirs);
    for (const std::string& d : cgroup_dirs) {
      const int j = ::open((d + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
      if (j < 0) {
        const std::string err = strerror(errno);
        for (int k : join) ::close(k);
        ::close(fd);
        Cgroups::Remove(cgroup_dirs);
        return absl::InternalError(absl::StrCat("cgroup: ", d, "/cgroup.procs: ", err));
      }
      join.push_back(j);
    }
  }
  const rlim_t nofile = static_cast<rlim_t>(spec.rlimit_nofile);
  const rlim_t as = static_cast<rlim_t>(spec.rlimit_as_bytes);
  // The agent's credential (scoped to the agent role) and TLS settings replace any the
  // server itself was given.
  std::vector<char*> envp;
  for (std::string& e : agent_env_) envp.push_back(e.data());
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view v(*e);
    if (v.starts_with("DROVER_TOKEN") || v.starts_with("DROVER_CA_FILE=") ||
        v.starts_with("DROVER_CERT_FILE=") || v.starts_with("DROVER_KEY_FILE=") ||
        v.starts_with("DROVER_TLS_SERVER_NAME=")) {
      continue;
    }
    envp.push_back(*e);
  }
  envp.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) {
    ::close(fd);
    for (int k : join) ::close(k);
    Cgroups::Remove(cgroup_dirs);
    return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  }
  if (pid == 0) {
    // The child: only async-signal-safe calls until exec.
    for (int j : join) {
      if (::write(j, "0", 1) != 1) _exit(126);  // into its cgroup (a limit not applied: no start)
    }
    setsid();
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);  // drover serve blocks SIGTERM/SIGINT
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    if (nofile > 0) {
      struct rlimit r = {nofile, nofile};
      setrlimit(RLIMIT_NOFILE, &r);
    }
    if (as > 0) {
      struct rlimit r = {as, as};
      setrlimit(RLIMIT_AS, &r);
    }
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  ::close(fd);
  for (int k : join) ::close(k);
  if (!cgroup_dirs.empty()) member_cgroups_[MemberKey(spec, m)] = std::move(cgroup_dirs);
  m.pid = pid;
  return absl::OkStatus();
}

void ProcessDriver::Stop(const PoolSpec&, Member& m, bool kill) {
  if (m.pid > 0) ::kill(-m.pid, kill ? SIGKILL : SIGTERM);  // the process group (setsid)
}

std::optional<std::string> ProcessDriver::Exited(const PoolSpec& spec, Member& m) {
  if (m.pid <= 0) return "not started";
  int status = 0;
  const pid_t r = waitpid(m.pid, &status, WNOHANG);
  if (r == 0) return std::nullopt;
  if (r < 0) return std::string("gone");
  if (WIFEXITED(status)) return absl::StrCat("status ", WEXITSTATUS(status));
  std::string how = absl::StrCat("signal ", WTERMSIG(status));
  if (WTERMSIG(status) == SIGKILL) {
    auto it = member_cgroups_.find(MemberKey(spec, m));
    if (it != member_cgroups_.end() && Cgroups::OomKilled(it->second)) {
      how += absl::StrCat(": out of memory in its cgroup (memory_bytes ", spec.memory_bytes, ")");
    }
  }
  return how;
}

void ProcessDriver::Forget(const PoolSpec& spec, const Member& m) {
  if (spec.runtime == PoolSpec::Runtime::kContainer) RemoveContainer(spec, m, /*wait=*/false);
  auto it = member_cgroups_.find(MemberKey(spec, m));
  if (it == member_cgroups_.end()) return;
  if (!Cgroups::Remove(it->second)) cgroup_leftovers_.push_back(std::move(it->second));
  member_cgroups_.erase(it);
}

absl::Status ProcessDriver::StartCheck(const PoolSpec& spec, Member& m) {
  std::vector<std::string> args;
  if (spec.runtime == PoolSpec::Runtime::kContainer) {
    args = spec.container_engine;
    args.insert(args.end(), {"exec", MemberName(spec, m)});
  }
  args.insert(args.end(), spec.health_command.begin(), spec.health_command.end());
  std::vector<std::string> env = {
      absl::StrCat("DROVER_POOL=", spec.name), absl::StrCat("DROVER_MEMBER=", MemberKey(spec, m)),
      absl::StrCat("DROVER_AGENT_PID=", m.pid), absl::StrCat("DROVER_AGENT_ID=", m.agent)};
  std::vector<char*> argv, envp;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (std::string& e : env) envp.push_back(e.data());  // first: they win over inherited ones
  for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
  envp.push_back(nullptr);
  // Its output goes to the member's log.
  const std::string log = absl::StrCat(log_dir_, "/", spec.name, "/", m.n, ".log");
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot open ", log, ": ", strerror(errno)));
  const pid_t pid = fork();
  if (pid < 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  }
  if (pid == 0) {
    setsid();
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    execvpe(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  ::close(fd);
  m.check_pid = pid;
  return absl::OkStatus();
}

std::optional<bool> ProcessDriver::CheckDone(Member& m) {
  if (m.check_pid <= 0) return false;
  int status = 0;
  const pid_t r = waitpid(m.check_pid, &status, WNOHANG);
  if (r == 0) return std::nullopt;
  m.check_pid = -1;
  return r > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

void ProcessDriver::KillCheck(Member& m) {
  if (m.check_pid <= 0) return;
  ::kill(-m.check_pid, SIGKILL);
  waitpid(m.check_pid, nullptr, 0);
  m.check_pid = -1;
}

void ProcessDriver::Poll() {
  std::erase_if(cleanups_, [](pid_t c) { return waitpid(c, nullptr, WNOHANG) != 0; });
  std::erase_if(cgroup_leftovers_, [](std::vector<std::string>& d) { return Cgroups::Remove(d); });
}

void ProcessDriver::StopAll(PoolController& pools) {
  // SIGTERM every agent; `drover agent` returns its tasks and deregisters.
  const absl::Time start = absl::Now();
  pools.StopAll(/*kill=*/false);
  pools.ForEachMember([&](const PoolSpec& spec, Member& m) {
    while (m.pid > 0) {
      int status = 0;
      const pid_t r = waitpid(m.pid, &status, WNOHANG);
      if (r == m.pid || (r < 0 && errno == ECHILD)) break;
      if (absl::Now() - start > kKillAfter) {
        Stop(spec, m, /*kill=*/true);
        waitpid(m.pid, &status, 0);
        break;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    m.pid = -1;
    KillCheck(m);
    if (spec.runtime == PoolSpec::Runtime::kContainer) RemoveContainer(spec, m, /*wait=*/true);
    auto it = member_cgroups_.find(MemberKey(spec, m));
    if (it != member_cgroups_.end()) {
      for (int i = 0; i < 50 && !Cgroups::Remove(it->second); ++i) {
        absl::SleepFor(absl::Milliseconds(20));
      }
      member_cgroups_.erase(it);
    }
  });
  pools.ClearMembers();
  for (pid_t c : cleanups_) waitpid(c, nullptr, 0);
  cleanups_.clear();
  for (auto& d : cgroup_leftovers_) Cgroups::Remove(d);
}

}  // namespace drover::pool
