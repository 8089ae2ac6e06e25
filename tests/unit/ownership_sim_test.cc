// A deterministic simulation of the lease protocol of cluster/lease and cluster/ownership over
// many partitions (the unit tests of ownership.h are in ownership_test.cc; the model itself
// is ownership_sim.h).
//
// The simulation runs, for each seed, one simulated PostgreSQL (the true clock; the
// acquire, renew and release statements of lease.cc with exactly their SQL semantics, and
// the drover_fence() check of every write) and a few servers. Each server has a local
// monotonic clock with its own offset and a rate off the true one by up to `drift`; every
// request and reply is delayed (usually a little, sometimes long) and sometimes lost, which
// the sender sees as a timeout. Servers crash and restart under a new owner id, pause (stop
// processing for a while, possibly past the TTL, then handle what queued up), and get cut
// off from the database (both ways, or only the replies). A membership view, delivered to
// each server with a delay, lists the servers the simulation considers live (up and not
// suspected: a pause or a cut longer than `suspect_after` makes a server suspected until
// it is back); each server acquires the partitions AssignedPartitions gives it in its own
// view and releases those it no longer has (a rebalance), renews every ttl/3 (retrying
// every 100 ms), self-fences at ActingDeadline, and while acting issues writes fenced by
// its (owner, epoch). A refused acquire is retried right when the row's expiry is due (or
// at the next 250 ms poll, as lease.cc does), so takeovers land as close behind the old
// holder's end as the delays allow: the closest gap is printed with the counters.
//
// After every step (one event), it checks:
//   (a) no two servers believe they hold one partition at one epoch;
//   (b) no two servers act on one partition at the current true instant (acting = the
//       holder's local clock is before its deadline; a paused holder counts as acting until
//       then, since it may be in the middle of an action). Acting only ever starts at an
//       event (an acquire or renewal reply), and ends continuously, so checking at every
//       event instant covers every true instant;
//   (c) every write the database accepted came from the owner and epoch of the partition's
//       latest grant (kept by the checker apart from the row);
//   (e) an acting holder's epoch is the row's and the row has not expired (the margin rule
//       itself; stronger than (b), which needs a second server to be caught).
// After the faults stop, all servers are back and a quiet period has passed, (d): every
// partition has exactly one acting owner, the one the live set assigns, and the row names it.
//
// Variants of the database and of the holder (no margin, 0.1% under MinSafeMargin, an
// acquire that keeps the epoch, a fence without the epoch, lease.cc's renewal loop) must be
// caught, to show the checks bite.
//
// A failure names its seed and step; replay one seed with DROVER_OWNERSHIP_SEED=N (and
// print every event with DROVER_OWNERSHIP_VERBOSE=1). DROVER_OWNERSHIP_SEEDS=N changes the
// number of seeds, DROVER_OWNERSHIP_STEPS=N the events of the fault phase.
#include "ownership_sim.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <limits>
#include <map>
#include <queue>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "cluster/ownership.h"
#include "fmt/core.h"
#include "gtest/gtest.h"

namespace drover::cluster {
namespace {

using namespace sim;  // NOLINT: the model is this file's vocabulary

// =============================================================================================
// The simulation
// =============================================================================================

struct SeedRange {
  uint64_t first;
  int count;
};

SeedRange Seeds(int fallback) {
  const int one = EnvInt("DROVER_OWNERSHIP_SEED", -1);
  if (one >= 0) return {static_cast<uint64_t>(one), 1};
  return {1, EnvInt("DROVER_OWNERSHIP_SEEDS", fallback)};
}

SimOptions WithEnvSteps(SimOptions o) {
  o.steps = EnvInt("DROVER_OWNERSHIP_STEPS", o.steps);
  return o;
}

// Runs seeds until one fails; returns the failure (empty if none did).
std::string FirstFailure(const SimOptions& o, int seeds, SimStats* total) {
  const SeedRange range = Seeds(seeds);
  for (int i = 0; i < range.count; ++i) {
    Sim sim(o, range.first + static_cast<uint64_t>(i));
    const bool ok = sim.Run();
    total->Add(sim.stats());
    if (!ok) return sim.failure();
  }
  return "";
}

// The protocol as specified, with margin = MinSafeMargin, in three shapes.
std::vector<std::pair<std::string, SimOptions>> SafeConfigs() {
  std::vector<std::pair<std::string, SimOptions>> c;
  c.emplace_back("4 servers, 16 partitions, drift 2%, eager takeovers", SimOptions());
  SimOptions wide;
  wide.servers = 5;
  wide.partitions = 32;
  wide.drift = 1e-3;
  wide.eager_acquire = false;  // lease.cc: poll every 250 ms
  c.emplace_back("5 servers, 32 partitions, drift 0.1%, polling takeovers", wide);
  SimOptions fast;
  fast.servers = 3;
  fast.drift = 0.05;
  fast.ttl = 2 * kSec;
  fast.poll = 50 * kMs;
  fast.max_pause = 8 * kSec;
  fast.max_isolation = 8 * kSec;
  fast.suspect_after = 1 * kSec;
  c.emplace_back("3 servers, 16 partitions, drift 5%, ttl 2 s", fast);
  return c;
}

TEST(OwnershipSim, SafeAndLive) {
  for (const auto& [name, config] : SafeConfigs()) {
    SCOPED_TRACE(name);
    const auto start = std::chrono::steady_clock::now();
    const SimOptions o = WithEnvSteps(config);
    SimStats total;
    const std::string failure = FirstFailure(o, 200, &total);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << name << ": margin " << MinSafeMargin(absl::Nanoseconds(o.ttl), o.drift) << "\n  "
              << total.ToString() << "\n  in " << secs << " s\n";
    ASSERT_EQ(failure, "");
    if (Seeds(200).count < 50) continue;
    // The schedules reach the corners that matter.
    EXPECT_GT(total.expiry_takeovers, 1000);
    EXPECT_GT(total.pauses_past_ttl, 100);
    EXPECT_GT(total.crashes, 100);
    EXPECT_GT(total.writes_fenced, 100);
    EXPECT_GT(total.acquire_unknown, 10);
    if (o.eager_acquire) {
      EXPECT_GE(total.tight_takeovers, 5);
    }
  }
}

// lease.cc's loop with the fix: a renewal never waits past the local deadline, so the loop
// notices the deadline when it comes. Safe (no pauses: a stopped process notices nothing
// until it runs again, which is why whatever acts must check valid() itself, or be fenced).
TEST(OwnershipSim, LeaseLoopWithTimeoutCappedAtTheDeadlineIsSafe) {
  SimOptions o;
  o.drift = 1e-3;
  o.margin = o.ttl / 6;
  o.act_until_noticed = true;
  o.cap_renew_timeout = true;
  o.pause_chance = 0;
  SimStats total;
  EXPECT_EQ(FirstFailure(o, 200, &total), "");
}

TEST(OwnershipSim, SameSeedSameRun) {
  const SimOptions o;
  Sim a(o, 42), b(o, 42), c(o, 43);
  ASSERT_TRUE(a.Run()) << a.failure();
  ASSERT_TRUE(b.Run()) << b.failure();
  ASSERT_TRUE(c.Run()) << c.failure();
  EXPECT_EQ(a.digest(), b.digest());
  EXPECT_EQ(a.stats().steps, b.stats().steps);
  EXPECT_NE(a.digest(), c.digest());
}

// --- the checker bites -----------------------------------------------------------------------

// No margin with clocks up to 5% slow: a holder acts past the database's expiry.
TEST(OwnershipSim, CheckerFindsZeroMarginWithDrift) {
  SimOptions o;
  o.drift = 0.05;
  o.margin = 0;
  o.check_db_lease = false;  // let (b) itself find it: two servers acting at once
  SimStats total;
  const std::string failure = FirstFailure(o, 200, &total);
  std::cout << failure.substr(0, failure.find('\n')) << "\n";
  EXPECT_NE(failure.find("(b)"), std::string::npos) << failure;
}

// The bound is tight: 0.1% less than MinSafeMargin (0.3 ms of 300 ms) and a holder on a
// clock 5% slow acts past the row's expiry.
TEST(OwnershipSim, CheckerFindsJustUnderTheSafeMargin) {
  SimOptions o;
  o.drift = 0.05;
  o.margin = ToNs(MinSafeMargin(absl::Nanoseconds(o.ttl), o.drift)) * 999 / 1000;
  SimStats total;
  const std::string failure = FirstFailure(o, 200, &total);
  std::cout << failure.substr(0, failure.find('\n')) << "\n";
  EXPECT_NE(failure.find("(e)"), std::string::npos) << failure;
}

// An acquire that keeps the epoch: a paused former holder and the new one share an epoch.
TEST(OwnershipSim, CheckerFindsAcquireWithoutEpochBump) {
  SimOptions o;
  o.db_no_epoch_bump = true;
  SimStats total;
  const std::string failure = FirstFailure(o, 200, &total);
  std::cout << failure.substr(0, failure.find('\n')) << "\n";
  EXPECT_NE(failure.find("(a)"), std::string::npos) << failure;
}

// A fence on the owner alone lets a server's stale write from an old epoch land after it
// took the partition again.
TEST(OwnershipSim, CheckerFindsFenceWithoutEpoch) {
  SimOptions o;
  o.db_fence_owner_only = true;
  SimStats total;
  const std::string failure = FirstFailure(o, 200, &total);
  std::cout << failure.substr(0, failure.find('\n')) << "\n";
  EXPECT_NE(failure.find("(c)"), std::string::npos) << failure;
}

// lease.cc's loop as it stands (nothing calls valid(); the holder stops when the `lost`
// callback runs): a renewal sent just before the deadline blocks for its ttl/3 timeout, so
// the loop notices up to ttl/3 after the deadline, while the margin is ttl/6 (drover
// serve's): the holder acts past the database's expiry and a new holder acts beside it. No
// pauses here: this is the loop's own delay, not a stopped process.
TEST(OwnershipSim, LeaseLoopNoticesTooLate) {
  SimOptions o;
  o.drift = 1e-3;
  o.margin = o.ttl / 6;
  o.act_until_noticed = true;
  o.pause_chance = 0;
  o.check_db_lease = false;
  SimStats total;
  const std::string failure = FirstFailure(o, 200, &total);
  std::cout << failure.substr(0, failure.find('\n')) << "\n";
  EXPECT_NE(failure.find("(b)"), std::string::npos) << failure;
}

}  // namespace
}  // namespace drover::cluster
