// pool/drivers: members as real processes and containers (drover serve).
//
// A process member is a child process group (setsid) running `drover agent --label
// drover.pool=<pool> --label drover.member=<pool>/<n> -- <command>`, stdout and stderr to
// <log_dir>/<pool>/<n>.log, with the pool's setrlimit limits and, when the pool sets
// memory/cpu/pids limits, a cgroup of its own (v1 hierarchies or v2, whichever offers the
// controller). A container member is a long-running podman container plus the agent on the
// host, which runs each task's command in it with `exec`.
//
// Threading: thread-compatible; PoolManager calls it under its mutex.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "pool/controller.h"

namespace drover::pool {

// The cgroup controllers this machine offers drover, and member cgroups under drover's own.
class Cgroups {
 public:
  enum Controller : uint8_t { kMemory, kCpu, kPids, kControllers };
  // Reads /proc/self/mountinfo and /proc/self/cgroup.
  static Cgroups Detect();
  // From given texts (tests): mountinfo, /proc/self/cgroup, and the v2 root's
  // cgroup.controllers (empty when there is none).
  static Cgroups Parse(const std::string& mountinfo, const std::string& self_cgroup,
                       const std::string& v2_controllers);

  // The directory a member cgroup for `c` goes under ("" when the machine offers no such
  // controller), and whether it is a v2 (unified) hierarchy.
  const std::string& parent(Controller c) const { return parent_[c]; }
  bool v2(Controller c) const { return v2_[c]; }
  // "memory (v1), cpu (v1), pids (v1)".
  std::string Describe() const;

  // Creates cgroup `name` with the limits that are set (> 0), in each needed hierarchy;
  // returns the directories made (join one by writing "0" to its cgroup.procs). Errors name
  // the limit and the file.
  absl::StatusOr<std::vector<std::string>> Create(const std::string& name, int64_t memory_bytes,
                                                  double cpus, int64_t pids) const;
  // Removes them (false: some still busy; try again later).
  static bool Remove(std::vector<std::string>& dirs);
  // Whether the kernel's OOM killer killed a process in one of them (v1
  // memory.oom_control or v2 memory.events: "oom_kill N" with N > 0).
  static bool OomKilled(const std::vector<std::string>& dirs);

 private:
  std::string parent_[kControllers];
  bool v2_[kControllers] = {};
};

class ProcessDriver : public MemberDriver {
 public:
  // `self` is the drover binary (for `drover agent`), `server` the gRPC address agents
  // connect to, `log_dir` where members' logs and work directories go.
  ProcessDriver(std::string self, std::string server, std::string log_dir);

  // Before a pool's first member: its log directory, and (containers) what a killed server
  // of this data directory left behind. Errors name `field` when the machine cannot apply
  // the pool's limits (no such cgroup controller).
  absl::Status Prepare(const PoolSpec& spec, const std::string& field);
  // Whether this machine can apply the pool's limits; the error names `field`.
  absl::Status CheckLimits(const PoolSpec& spec, const std::string& field) const;

  // What members' `drover agent` gets in its environment ("KEY=value": DROVER_TOKEN, its
  // credential; DROVER_CA_FILE and the like when the server serves TLS).
  void set_agent_env(std::vector<std::string> env) { agent_env_ = std::move(env); }

  absl::Status Start(const PoolSpec& spec, Member& m, absl::Time now) override;
  void Stop(const PoolSpec& spec, Member& m, bool kill) override;
  std::optional<std::string> Exited(const PoolSpec& spec, Member& m) override;
  void Forget(const PoolSpec& spec, const Member& m) override;
  absl::Status StartCheck(const PoolSpec& spec, Member& m) override;
  std::optional<bool> CheckDone(Member& m) override;
  void KillCheck(Member& m) override;

  // Each round: reaps background container removals, retries busy cgroup removals.
  void Poll();
  // Shutdown: SIGTERM to every member, waits (SIGKILL after 10 s), removes what is left.
  void StopAll(PoolController& pools);

  const Cgroups& cgroups() const { return cgroups_; }

 private:
  // "drover-<pool>-<n>-<hash of the data directory>": its container and its cgroup.
  std::string MemberName(const PoolSpec& spec, const Member& m) const;
  std::string MemberKey(const PoolSpec& spec, const Member& m) const;
  void RemoveContainer(const PoolSpec& spec, const Member& m, bool wait);
  void RemoveStaleContainers(const PoolSpec& spec);

  std::string self_, server_, log_dir_;
  std::vector<std::string> agent_env_;
  Cgroups cgroups_;
  std::map<std::string, std::vector<std::string>> member_cgroups_;  // by "pool/n"
  std::vector<std::vector<std::string>> cgroup_leftovers_;          // still busy when removed
  std::vector<pid_t> cleanups_;  // background `rm -f` of containers
};

}  // namespace drover::pool
