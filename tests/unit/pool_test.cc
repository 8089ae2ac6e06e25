// The pool controller on a manual clock with the real engine: the health command's
// failures in a row, a hung check, time to acquire an agent (warm and cold) and agent start
// times; and where cgroups are found (v1, v2, a container's view).
//
// The member driver here only records what the controller asks of it: starting a member
// is the test registering an agent with the member's labels, as `drover agent` would.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "core/engine.h"
#include "gtest/gtest.h"
#include "pool/controller.h"
#include "pool/drivers.h"
#include "util/clock.h"

namespace drover::pool {
namespace {

class RecordingDriver : public MemberDriver {
 public:
  absl::Status Start(const PoolSpec&, Member& m, absl::Time) override {
    m.pid = 1000 + m.n;
    started.push_back(m.n);
    return absl::OkStatus();
  }
  void Stop(const PoolSpec&, Member& m, bool kill) override {
    (kill ? killed : stopped).push_back(m.n);
  }
  std::optional<std::string> Exited(const PoolSpec&, Member& m) override {
    for (int n : exited) {
      if (n == m.n) return std::string("status 0");
    }
    return std::nullopt;
  }
  absl::Status StartCheck(const PoolSpec&, Member& m) override {
    m.check_pid = 5000 + m.n;
    checks++;
    return absl::OkStatus();
  }
  // The next check's result: scripted, true/false; nullopt = still running.
  std::optional<bool> CheckDone(Member& m) override {
    if (results.empty()) return std::nullopt;
    std::optional<bool> r = results.front();
    results.erase(results.begin());
    if (r) m.check_pid = -1;
    return r;
  }
  void KillCheck(Member& m) override {
    m.check_pid = -1;
    killed_checks++;
  }

  std::vector<int> started, stopped, killed, exited;
  std::vector<std::optional<bool>> results;
  int checks = 0, killed_checks = 0;
};

class PoolTest : public ::testing::Test {
 protected:
  PoolTest() : engine_(Options(), clock_), pools_(driver_) {
    pools_.set_log([this](const std::string& line) { log_.push_back(line); });
  }
  static core::EngineOptions Options() {
    core::EngineOptions o;
    o.lease_ttl = absl::Hours(1);
    return o;
  }
  static PoolSpec Spec(int min) {
    PoolSpec s;
    s.name = "p";
    s.types = {"t"};
    s.command = {"agent"};
    s.scaler.min = min;
    s.scaler.max = 10;
    return s;
  }
  // A round of the controller at the clock's time.
  void Round() {
    Observation seen = ObserveEngine(engine_, drains_, {"t"});
    drains_.clear();
    pools_.Tick(clock_.Now(), seen, &drains_);
  }
  // What `drover agent` does when member n starts: register with its labels.
  core::AgentId Register(int n) {
    v1::RegisterAgentRequest req;
    req.add_types("t");
    req.set_max_concurrency(1);
    (*req.mutable_labels())[kPoolLabel] = "p";
    (*req.mutable_labels())[kMemberLabel] = "p/" + std::to_string(n);
    absl::StatusOr<core::AgentId> id = engine_.RegisterAgent(req);
    EXPECT_TRUE(id.ok());
    (void)engine_.OpenStream(*id);
    return *id;
  }
  v1::PoolStatus Status() { return pools_.ListPools().pools(0); }
  void Submit(const std::string& key) {
    v1::TaskSpec t;
    t.set_type("t");
    t.set_idempotency_key(key);
    ASSERT_TRUE(engine_.Submit({t}, "task").ok());
  }

  ManualClock clock_;
  core::Engine engine_;
  RecordingDriver driver_;
  PoolController pools_;
  std::vector<uint64_t> drains_;
  std::vector<std::string> log_;
};

TEST_F(PoolTest, ThreeFailedHealthChecksInARowReplaceTheAgent) {
  PoolSpec s = Spec(1);
  s.health_command = {"check"};  // every 10 s, 3 failures in a row
  pools_.AddFromConfig(s);
  Round();  // warm-up: member 1
  ASSERT_EQ(driver_.started, std::vector<int>{1});
  Register(1);
  clock_.Advance(absl::Seconds(2));
  Round();  // registered at +2 s: first check due at +12 s
  EXPECT_EQ(Status().idle(), 1);
  clock_.Advance(absl::Seconds(9));
  Round();
  EXPECT_EQ(driver_.checks, 0) << "not due before +12 s";
  // fail, pass (resets), fail, fail, fail: the third failure in a row replaces it.
  driver_.results = {false, true, false, false, false};
  for (int i = 0; i < 5; ++i) {
    clock_.Advance(absl::Seconds(10));
    Round();  // starts a check
    Round();  // takes its result
  }
  EXPECT_EQ(driver_.checks, 5);
  EXPECT_EQ(driver_.stopped, std::vector<int>{1});
  EXPECT_EQ(Status().unhealthy_total(), 1);
  EXPECT_EQ(Status().members(0).health_failures(), 3);
  ASSERT_FALSE(log_.empty());
  EXPECT_NE(log_.back().find("failed its health command 3 times in a row"), std::string::npos);
  // Stopping it is no crash; a replacement starts at once (the pool wants 1).
  EXPECT_EQ(driver_.started, (std::vector<int>{1, 2}));
  driver_.exited.push_back(1);
  Round();
  EXPECT_EQ(Status().crashed_total(), 0);
  EXPECT_EQ(Status().members_size(), 1);
  EXPECT_EQ(Status().members(0).id(), "p/2");
}

TEST_F(PoolTest, AHealthCheckThatHangsIsKilledAfterItsTimeoutAndCountsAsAFailure) {
  PoolSpec s = Spec(1);
  s.health_command = {"check"};
  s.health_timeout = absl::Seconds(5);
  s.health_failures = 1;
  pools_.AddFromConfig(s);
  Round();
  Register(1);
  Round();
  clock_.Advance(absl::Seconds(10));
  Round();  // the check starts and never answers (results empty: still running)
  ASSERT_EQ(driver_.checks, 1);
  clock_.Advance(absl::Seconds(5));
  Round();  // exactly 5 s: not over the timeout yet
  EXPECT_EQ(driver_.killed_checks, 0);
  EXPECT_TRUE(driver_.stopped.empty());
  clock_.Advance(absl::Milliseconds(1));
  Round();
  EXPECT_EQ(driver_.killed_checks, 1);
  EXPECT_EQ(driver_.stopped, std::vector<int>{1});
  EXPECT_EQ(Status().unhealthy_total(), 1);
}

TEST_F(PoolTest, TimeToAcquireAnAgentIsSplitIntoWarmAndColdAndAgentStartsAreTimed) {
  pools_.AddFromConfig(Spec(1));
  Round();  // member 1 starts at t0
  clock_.Advance(absl::Milliseconds(1500));
  Register(1);
  Round();  // registered 1.5 s after its start
  // A task while member 1 is idle: taken at once by a running agent (warm, 0 s).
  Submit("a");
  // Another while it is busy: it waits 4 s for member 2, which registers after the task was
  // ready (cold, 4 s).
  Submit("b");
  clock_.Advance(absl::Seconds(4));
  Register(2);  // (not started by the pool: a member number it does not know is ignored)
  Round();
  const v1::PoolStatus st = Status();
  EXPECT_EQ(st.acquire_warm().count(), 1);
  EXPECT_NEAR(st.acquire_warm().mean_ms(), 0, 1e-6);
  EXPECT_EQ(st.acquire_cold().count(), 0) << "member 2 is no member of this pool";
  EXPECT_EQ(st.agent_start().count(), 1);
  EXPECT_NEAR(st.agent_start().mean_ms(), 1500, 1e-6);
  EXPECT_NEAR(st.cold_start_ms_avg(), 1500, 1e-6);
}

TEST_F(PoolTest, ATaskThatWaitedForAStartingMemberIsAColdAcquisition) {
  PoolSpec s = Spec(0);
  pools_.AddFromConfig(s);
  Round();  // min 0: no member
  EXPECT_TRUE(driver_.started.empty());
  Submit("a");
  clock_.Advance(absl::Seconds(15));
  Round();  // the autoscaler activates from zero: member 1 starts
  ASSERT_EQ(driver_.started, std::vector<int>{1});
  clock_.Advance(absl::Seconds(3));
  Register(1);  // takes the task, ready since 18 s before
  Round();
  const v1::PoolStatus st = Status();
  EXPECT_EQ(st.acquire_cold().count(), 1);
  EXPECT_NEAR(st.acquire_cold().mean_ms(), 18'000, 1e-3);
  EXPECT_EQ(st.acquire_warm().count(), 0);
  EXPECT_NEAR(st.agent_start().mean_ms(), 3'000, 1e-6);
}

TEST_F(PoolTest, NextDueIsTheEarliestOfSyncIdleTimeoutAndHealthCheck) {
  PoolSpec s = Spec(1);
  s.idle_timeout = absl::Seconds(7);
  s.health_command = {"check"};
  s.health_interval = absl::Seconds(30);
  pools_.AddFromConfig(s);
  const absl::Time t0 = clock_.Now();
  Round();
  // Starting: the start timeout (60 s) and the next sync (15 s).
  EXPECT_EQ(pools_.NextDue(), t0 + absl::Seconds(15));
  Register(1);
  clock_.Advance(absl::Seconds(1));
  Round();
  // Idle since registration at t0: idle timeout at t0 + 7 s comes first.
  EXPECT_EQ(pools_.NextDue(), t0 + absl::Seconds(7));
}

TEST(HistogramTest, QuantilesStayWithinWhatWasObserved) {
  // One wait of 46 s falls in the (45, 60] bucket: plain interpolation would say p95 =
  // 45 + 15 x 0.95 = 59.25 s, more than was ever seen; narrowed to [46, 46] it is 46.
  Histogram h(Histogram::WaitBounds());
  h.Observe(46);
  EXPECT_DOUBLE_EQ(h.Quantile(0.95), 46);
  // Above the last bound (600 s) the +Inf bucket ends at the largest observation.
  Histogram big(Histogram::WaitBounds());
  big.Observe(700);
  big.Observe(900);
  EXPECT_DOUBLE_EQ(big.Quantile(1.0), 900);
  EXPECT_DOUBLE_EQ(big.Quantile(0.5), 800);  // rank 1 of 2: halfway from 700 to 900
  // Merge keeps the smallest and largest.
  h.Merge(big);
  EXPECT_DOUBLE_EQ(h.Quantile(0.0), 46);
  EXPECT_DOUBLE_EQ(h.Quantile(1.0), 900);
  EXPECT_EQ(h.count(), 3u);
}

TEST(CgroupsTest, AHybridV1MachineUsesItsV1HierarchiesAndDroversOwnCgroup) {
  const std::string mountinfo =
      "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
      "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
      "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
      "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
      "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
  const std::string self = "8:pids:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/\n";
  const Cgroups c = Cgroups::Parse(mountinfo, self, "hugetlb\n");
  EXPECT_EQ(c.parent(Cgroups::kMemory), "/sys/fs/cgroup/memory/process_api/abc");
  EXPECT_EQ(c.parent(Cgroups::kCpu), "/sys/fs/cgroup/cpu,cpuacct");
  EXPECT_EQ(c.parent(Cgroups::kPids), "/sys/fs/cgroup/pids");
  EXPECT_FALSE(c.v2(Cgroups::kMemory));
  EXPECT_EQ(c.Describe(), "memory (v1), cpu (v1), pids (v1)");
}

TEST(CgroupsTest, AV2MachineUsesTheUnifiedHierarchyForTheControllersItOffers) {
  const std::string mountinfo =
      "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
  const Cgroups c =
      Cgroups::Parse(mountinfo, "0::/system.slice/drover.service\n", "cpuset cpu io memory pids\n");
  EXPECT_EQ(c.parent(Cgroups::kMemory), "/sys/fs/cgroup/system.slice/drover.service");
  EXPECT_TRUE(c.v2(Cgroups::kPids));
  EXPECT_EQ(c.Describe(), "memory (v2), cpu (v2), pids (v2)");
  // A controller the machine does not offer is absent.
  const Cgroups none = Cgroups::Parse(mountinfo, "0::/\n", "cpuset io\n");
  EXPECT_EQ(none.parent(Cgroups::kMemory), "");
  EXPECT_EQ(none.Describe(), "none");
}

TEST(CgroupsTest, InAContainerTheMountsRootIsStrippedFromDroversPath) {
  // The container sees its own cgroup mounted at /sys/fs/cgroup; /proc/self/cgroup gives
  // the full path from the host's root.
  const std::string mountinfo =
      "500 400 0:26 /kubepods/pod1/ctr /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
  const Cgroups c = Cgroups::Parse(mountinfo, "0::/kubepods/pod1/ctr\n", "memory pids\n");
  EXPECT_EQ(c.parent(Cgroups::kMemory), "/sys/fs/cgroup");
  EXPECT_EQ(c.parent(Cgroups::kCpu), "");
}

TEST(CgroupsTest, AnOomKillIsReadFromV1OomControlOrV2MemoryEvents) {
  char tmpl[] = "/tmp/drover-cg-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string v1 = std::string(tmpl) + "/v1", v2 = std::string(tmpl) + "/v2";
  ASSERT_EQ(mkdir(v1.c_str(), 0755), 0);
  ASSERT_EQ(mkdir(v2.c_str(), 0755), 0);
  auto write = [](const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
  };
  write(v1 + "/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n");
  write(v2 + "/memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n");
  EXPECT_FALSE(Cgroups::OomKilled({v1, v2}));
  write(v2 + "/memory.events", "low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n");
  EXPECT_TRUE(Cgroups::OomKilled({v2}));
  write(v1 + "/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
  EXPECT_TRUE(Cgroups::OomKilled({v1}));
  EXPECT_FALSE(Cgroups::OomKilled({std::string(tmpl) + "/gone"}));
  std::filesystem::remove_all(tmpl);
}

TEST(CgroupsTest, LimitsWithNoControllerAreRefusedNamingIt) {
  const Cgroups none = Cgroups::Parse("", "", "");
  absl::StatusOr<std::vector<std::string>> r = none.Create("x", 64 << 20, 0, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "this machine offers no memory cgroup controller");
}

}  // namespace
}  // namespace drover::pool
