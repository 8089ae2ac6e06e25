// Tests of cluster/ownership: the acting deadline and its margin, rendezvous assignment of
// partitions, and a deterministic simulation of the lease protocol over many partitions.
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
#include "cluster/ownership.h"

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
#include "fmt/core.h"
#include "gtest/gtest.h"

namespace drover::cluster {
namespace {

// --- the acting deadline ---------------------------------------------------------------------

TEST(ActingDeadline, IsSendTimePlusTtlMinusMargin) {
  EXPECT_EQ(ActingDeadline(absl::Seconds(100), absl::Seconds(6), absl::Seconds(1)),
            absl::Seconds(105));
  EXPECT_EQ(ActingDeadline(absl::ZeroDuration(), absl::Seconds(6), absl::Seconds(6)),
            absl::ZeroDuration());
  EXPECT_TRUE(MayAct(absl::Seconds(104), absl::Seconds(105)));
  EXPECT_FALSE(MayAct(absl::Seconds(105), absl::Seconds(105)));
}

TEST(MinSafeMargin, IsDriftTimesTtlPlusGranularity) {
  EXPECT_EQ(MinSafeMargin(absl::Seconds(6), 1e-3), absl::Milliseconds(6) + kClockGranularity);
  EXPECT_EQ(MinSafeMargin(absl::Seconds(6), 0), kClockGranularity);
  EXPECT_EQ(MinSafeMargin(absl::Seconds(6), -1), kClockGranularity);
  // Rounded up to a microsecond: 100 ns of drift cost a whole microsecond.
  EXPECT_EQ(MinSafeMargin(absl::Seconds(1), 1e-7), absl::Microseconds(2));
  // A clock that may stop: never act.
  EXPECT_EQ(MinSafeMargin(absl::Seconds(6), 1), absl::Seconds(6));
  EXPECT_EQ(MinSafeMargin(absl::Milliseconds(1), 0.9999), absl::Milliseconds(1));
  EXPECT_EQ(MinSafeMargin(absl::ZeroDuration(), 0.1), absl::ZeroDuration());
}

// The bound on the slowest allowed clock: acting ends no later than send + ttl (true time),
// and one microsecond less of margin would not do (for drift * ttl a whole microsecond).
TEST(MinSafeMargin, SlowestClockStopsByTheDatabaseExpiry) {
  for (const double drift : {1e-4, 1e-3, 1e-2, 0.05, 0.2}) {
    for (const absl::Duration ttl : {absl::Seconds(1), absl::Seconds(6), absl::Seconds(30)}) {
      const absl::Duration m = MinSafeMargin(ttl, drift);
      // Local time elapsed (ttl - m) on a clock of rate (1 - drift) takes this true time:
      const double true_s = absl::ToDoubleSeconds(ttl - m) / (1 - drift);
      EXPECT_LE(true_s, absl::ToDoubleSeconds(ttl)) << drift << " " << ttl;
      const double less = absl::ToDoubleSeconds(ttl - (m - 2 * kClockGranularity)) / (1 - drift);
      EXPECT_GT(less, absl::ToDoubleSeconds(ttl)) << drift << " " << ttl;
    }
  }
}

// --- hashing and assignment ---------------------------------------------------------------------

// Server ids shaped like ServerId(): "host/pid/start-ms".
std::vector<std::string> Servers(int n, int set = 0) {
  std::vector<std::string> v;
  for (int i = 0; i < n; ++i) {
    v.push_back(absl::StrCat("drover-", set, "-", i, ".prod.internal/", 4000 + 17 * i + set, "/",
                             1790000000000LL + 1000LL * set + 37 * i));
  }
  return v;
}

std::map<std::string, std::vector<int>> Assignment(int partitions,
                                                   const std::vector<std::string>& live) {
  std::map<std::string, std::vector<int>> a;
  for (const std::string& s : live) a[s] = AssignedPartitions(partitions, live, s);
  return a;
}

// Owner id of every partition.
std::vector<std::string> Owners(int partitions, const std::vector<std::string>& live) {
  std::vector<std::string> o;
  for (int p = 0; p < partitions; ++p) o.push_back(live[OwnerOf(p, live)]);
  return o;
}

TEST(Hash, KnownValues) {
  // FNV-1a test vectors.
  EXPECT_EQ(Fnv1a64(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(Fnv1a64("foobar"), 0x85944171f73967e8ULL);
  // The first outputs of a SplitMix64 generator seeded with 0.
  EXPECT_EQ(SplitMix64(0), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(SplitMix64(0x9e3779b97f4a7c15ULL), 0x6e789e6aa1b965f4ULL);
}

// Weights are part of the cluster's wire contract: servers of two builds that disagree on
// them would each claim partitions the other owns (safe, but a takeover fight). Pinned.
TEST(Hash, PartitionWeightIsPinned) {
  EXPECT_EQ(PartitionWeight("", 0), 0x97a7e8de67b775bbULL);
  EXPECT_EQ(PartitionWeight("host-a/4242/1796195760891", 0), 0x71731a02135c95c5ULL);
  EXPECT_EQ(PartitionWeight("host-a/4242/1796195760891", 7), 0xdc1d4cf5e1aa5e01ULL);
  EXPECT_EQ(PartitionWeight("host-b/4242/1796195760891", 7), 0xf78ffe9964230e36ULL);
}

TEST(Assignment, EmptyAndAbsent) {
  EXPECT_EQ(OwnerOf(3, {}), -1);
  EXPECT_TRUE(AssignedPartitions(16, {}, "a").empty());
  EXPECT_TRUE(AssignedPartitions(16, {"a", "b"}, "c").empty());
  EXPECT_TRUE(AssignedPartitions(0, {"a", "b"}, "a").empty());
  const std::vector<int> all = AssignedPartitions(5, {"only"}, "only");
  EXPECT_EQ(all, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(Assignment, EveryPartitionOwnedExactlyOnce) {
  for (int n = 1; n <= 12; ++n) {
    for (const int partitions : {1, 7, 16, 256}) {
      const std::vector<std::string> live = Servers(n);
      std::vector<int> owned(partitions, 0);
      for (const auto& [server, mine] : Assignment(partitions, live)) {
        EXPECT_TRUE(std::is_sorted(mine.begin(), mine.end()));
        for (int p : mine) {
          ASSERT_GE(p, 0);
          ASSERT_LT(p, partitions);
          ++owned[p];
          EXPECT_EQ(live[OwnerOf(p, live)], server);
        }
      }
      for (int p = 0; p < partitions; ++p) {
        EXPECT_EQ(owned[p], 1) << "n=" << n << " partitions=" << partitions << " p=" << p;
      }
    }
  }
}

TEST(Assignment, DeterministicAndIndependentOfOrder) {
  const std::vector<std::string> live = Servers(7);
  const std::vector<std::string> owners = Owners(256, live);
  EXPECT_EQ(Owners(256, live), owners);
  std::vector<std::string> shuffled = live;
  std::mt19937_64 rng(1);
  for (int i = 0; i < 20; ++i) {
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    EXPECT_EQ(Owners(256, shuffled), owners);
  }
  // A duplicated id is one server.
  std::vector<std::string> dup = live;
  dup.push_back(live[2]);
  dup.insert(dup.begin(), live[5]);
  EXPECT_EQ(Owners(256, dup), owners);
  for (const std::string& s : live) {
    EXPECT_EQ(AssignedPartitions(256, dup, s), AssignedPartitions(256, live, s));
  }
}

// Per-server partition counts.
std::vector<int> Counts(int partitions, const std::vector<std::string>& live) {
  std::vector<int> c(live.size(), 0);
  for (int p = 0; p < partitions; ++p) ++c[static_cast<size_t>(OwnerOf(p, live))];
  return c;
}

// Even spread. Each partition lands on a server as if by a fair die, so a server's count is
// binomial(P, 1/N): its standard deviation is sqrt((N-1)/P) of the mean P/N, 9% for N=3 and
// 19% for N=10 at P=256. So +-25% of P/N is a promise only for enough partitions per
// server: it holds for P=4096 (5 standard deviations at N=10); at P=256 no hash can keep it
// for every id set (the most loaded of 10 servers is typically 35% over), and what is
// checked there is 4 standard deviations.
TEST(Assignment, Balanced) {
  for (const int partitions : {256, 4096}) {
    for (int n = 3; n <= 10; ++n) {
      const double mean = static_cast<double>(partitions) / n;
      const double sd = std::sqrt(partitions * (1.0 / n) * (1.0 - 1.0 / n));
      const double bound = partitions >= 4096 ? 0.25 * mean : 4 * sd;
      for (int set = 0; set < 4; ++set) {
        const std::vector<int> counts = Counts(partitions, Servers(n, set));
        for (size_t i = 0; i < counts.size(); ++i) {
          EXPECT_LE(std::abs(counts[i] - mean), bound)
              << "P=" << partitions << " N=" << n << " set=" << set << " server " << i << " has "
              << counts[i];
        }
      }
    }
  }
}

// Over many id sets the per-server counts have the binomial mean and variance (the hash
// neither favours some ids nor clumps partitions).
TEST(Assignment, SpreadLooksBinomial) {
  constexpr int kPartitions = 256;
  for (int n = 3; n <= 10; ++n) {
    double sum = 0, sum_sq = 0;
    int samples = 0;
    for (int set = 0; set < 300; ++set) {
      for (const int c : Counts(kPartitions, Servers(n, 1000 + set))) {
        sum += c;
        sum_sq += static_cast<double>(c) * c;
        ++samples;
      }
    }
    const double mean = sum / samples;
    const double var = sum_sq / samples - mean * mean;
    const double expected_var = kPartitions * (1.0 / n) * (1.0 - 1.0 / n);
    EXPECT_NEAR(mean, static_cast<double>(kPartitions) / n, 1e-9);  // the counts sum to P
    EXPECT_GT(var, 0.8 * expected_var) << "n=" << n;
    EXPECT_LT(var, 1.2 * expected_var) << "n=" << n;
  }
}

// A joining server takes only partitions it now wins (about P/(N+1)); nothing moves between
// the others.
TEST(Assignment, JoinMovesOnlyToTheNewServer) {
  constexpr int kPartitions = 256;
  for (int n = 1; n <= 10; ++n) {
    for (int set = 0; set < 4; ++set) {
      std::vector<std::string> live = Servers(n + 1, set);
      const std::string joiner = live.back();
      const std::vector<std::string> before = Owners(kPartitions, {live.begin(), live.end() - 1});
      const std::vector<std::string> after = Owners(kPartitions, live);
      int moved = 0;
      for (int p = 0; p < kPartitions; ++p) {
        if (before[p] == after[p]) continue;
        ++moved;
        EXPECT_EQ(after[p], joiner) << "n=" << n << " p=" << p;
      }
      const double expect = static_cast<double>(kPartitions) / (n + 1);
      const double sd = std::sqrt(kPartitions * (1.0 / (n + 1)) * (1.0 - 1.0 / (n + 1)));
      EXPECT_LE(std::abs(moved - expect), std::max(0.25 * expect, 3.3 * sd))
          << "n=" << n << " set=" << set << " moved=" << moved;
    }
  }
}

// A leaving server's partitions move, and no other.
TEST(Assignment, LeaveMovesOnlyTheLeaversPartitions) {
  constexpr int kPartitions = 256;
  for (int n = 2; n <= 10; ++n) {
    const std::vector<std::string> live = Servers(n, 7);
    const std::vector<std::string> before = Owners(kPartitions, live);
    for (int gone = 0; gone < n; ++gone) {
      std::vector<std::string> rest = live;
      rest.erase(rest.begin() + gone);
      const std::vector<std::string> after = Owners(kPartitions, rest);
      for (int p = 0; p < kPartitions; ++p) {
        if (before[p] != live[gone]) {
          EXPECT_EQ(after[p], before[p]) << "n=" << n << " gone=" << gone << " p=" << p;
        } else {
          EXPECT_NE(after[p], live[gone]);
        }
      }
    }
  }
}

// =============================================================================================
// The simulation
// =============================================================================================

using Ns = int64_t;  // nanoseconds, true (database) time or a local clock's reading
constexpr Ns kUs = 1000;
constexpr Ns kMs = 1000 * kUs;
constexpr Ns kSec = 1000 * kMs;
constexpr Ns kMinusInfinity = std::numeric_limits<Ns>::min();  // expires_at = '-infinity'

Ns ToNs(absl::Duration d) { return absl::ToInt64Nanoseconds(d); }

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  int n = 0;
  return v != nullptr && absl::SimpleAtoi(v, &n) ? n : fallback;
}

std::string Sec(Ns t) {
  if (t == kMinusInfinity) return "-inf";
  return fmt::format("{:.6f}s", static_cast<double>(t) / kSec);
}

// floor(a / b) for b > 0.
int64_t FloorDiv(__int128 a, int64_t b) {
  __int128 q = a / b;
  if (a % b != 0 && a < 0) --q;
  return static_cast<int64_t>(q);
}

// A local monotonic clock: offset + t * (1 + ppm / 1e6), in whole nanoseconds.
struct LocalClock {
  Ns offset = 0;
  int64_t ppm = 0;

  Ns Local(Ns t) const { return offset + t + FloorDiv(static_cast<__int128>(t) * ppm, 1000000); }
  // The first true instant (>= 0) at which the clock reads `local` or more.
  Ns TrueAt(Ns local) const {
    if (local <= Local(0)) return 0;
    Ns t = static_cast<Ns>(static_cast<__int128>(local - offset) * 1000000 / (1000000 + ppm));
    t = std::max<Ns>(t, 0);
    while (Local(t) < local) ++t;
    while (t > 0 && Local(t - 1) >= local) --t;
    return t;
  }
};

struct SimOptions {
  int servers = 4;
  int partitions = 16;
  Ns ttl = 6 * kSec;
  double drift = 0.02;  // local clock rates are within 1 +- drift of the database's
  Ns margin = -1;       // -1: MinSafeMargin(ttl, drift)
  Ns poll = 250 * kMs;  // a server's look at its assignment (acquire what it lacks)
  // A refused acquire is tried again right when the row's expiry is due (the reply says when)
  // rather than at the next poll: takeovers land as close to the expiry as they can, which is
  // where the margin is tested.
  bool eager_acquire = true;
  Ns renew_retry = 100 * kMs;
  Ns work_every = 1 * kSec;          // how often an acting server writes to each partition
  Ns max_delay = 20 * kMs;           // one way, usually
  double stall_chance = 0.02;        // a message delayed up to max_stall instead
  Ns max_stall = 3 * kSec;           //
  double write_stall_chance = 0.05;  // a write stuck up to max_write_stall (fencing matters)
  Ns max_write_stall = 15 * kSec;
  double loss = 0.03;  // each request and each reply, during the faults
  Ns view_delay_max = 1 * kSec;
  Ns fault_every = 2 * kSec;    // mean time between faults
  double crash_chance = 0.2;    // per fault: crash one server (restarts with a new id)
  double pause_chance = 0.3;    // ... pause one server
  double isolate_chance = 0.3;  // ... cut one server off the database
  Ns max_down = 10 * kSec;
  Ns max_pause = 20 * kSec;  // half of pauses are shorter than the ttl, half up to this
  Ns max_isolation = 20 * kSec;
  Ns suspect_after = 3 * kSec;  // a pause or cut longer than this makes the server suspected
  int steps = 6000;             // events in the fault phase
  // Variants, to show the checker bites.
  bool db_no_epoch_bump = false;     // acquire keeps the epoch
  bool db_fence_owner_only = false;  // the fence checks the owner but not the epoch
  // lease.cc's renewal loop as it stands: the holder stops acting only when the loop notices
  // (a renewal that failed, or timed out with the deadline past), not at the deadline itself.
  bool act_until_noticed = false;
  // With act_until_noticed: the fix, a renewal's timeout never later than the local deadline.
  bool cap_renew_timeout = false;
  bool check_db_lease = true;  // check (e)
};

// Counters summed over seeds, to show the schedules reach the interesting corners.
struct SimStats {
  int64_t seeds = 0, steps = 0;
  int64_t acquired = 0, takeovers = 0, expiry_takeovers = 0, renewed = 0, row_changed = 0;
  int64_t self_fenced = 0, released = 0, writes_accepted = 0, writes_fenced = 0;
  int64_t crashes = 0, pauses = 0, pauses_past_ttl = 0, isolations = 0, suspicions = 0;
  int64_t lost_messages = 0, late_replies = 0, acquire_unknown = 0, released_row_revived = 0;
  // Grants after the previous holder's deadline ended its acting: how soon after that end.
  int64_t tight_takeovers = 0;  // within 1 ms
  Ns min_gap = std::numeric_limits<Ns>::max();

  void Add(const SimStats& o) {
    seeds += o.seeds;
    steps += o.steps;
    acquired += o.acquired;
    takeovers += o.takeovers;
    expiry_takeovers += o.expiry_takeovers;
    renewed += o.renewed;
    row_changed += o.row_changed;
    self_fenced += o.self_fenced;
    released += o.released;
    writes_accepted += o.writes_accepted;
    writes_fenced += o.writes_fenced;
    crashes += o.crashes;
    pauses += o.pauses;
    pauses_past_ttl += o.pauses_past_ttl;
    isolations += o.isolations;
    suspicions += o.suspicions;
    lost_messages += o.lost_messages;
    late_replies += o.late_replies;
    acquire_unknown += o.acquire_unknown;
    released_row_revived += o.released_row_revived;
    tight_takeovers += o.tight_takeovers;
    min_gap = std::min(min_gap, o.min_gap);
  }
  std::string ToString() const {
    return absl::StrCat(
        "seeds=", seeds, " steps=", steps, " acquired=", acquired, " takeovers=", takeovers,
        " (after expiry ", expiry_takeovers, ", granted within 1ms of the old holder's end ",
        tight_takeovers, ", closest ",
        min_gap == std::numeric_limits<Ns>::max() ? "-" : Sec(min_gap), ") renewed=", renewed,
        " row_changed=", row_changed, " self_fenced=", self_fenced, " released=", released,
        " writes_accepted=", writes_accepted, " writes_fenced=", writes_fenced,
        " crashes=", crashes, " pauses=", pauses, " (past ttl ", pauses_past_ttl,
        ") isolations=", isolations, " suspicions=", suspicions, " lost_messages=", lost_messages,
        " late_replies=", late_replies, " acquire_outcome_unknown=", acquire_unknown,
        " released_row_revived=", released_row_revived);
  }
};

enum class Op : uint8_t { kAcquire, kRenew, kRelease, kWrite };
enum class Kind : uint8_t {
  kTick,          // server: look at the assignment
  kWork,          // server: write to the partitions it acts on
  kRenewTimer,    // server: renew (id = timer generation)
  kAcquireTimer,  // server: try to acquire `part` again (the row's expiry is due)
  kTimeout,       // server: request `id` got no reply in time
  kReply,         // server: the database's reply to `id`
  kView,          // server: membership view `id`
  kDb,            // database: request `id` arrives
  kFault,
  kRestart,
  kSuspect,
  kUnsuspect,
};

const char* OpName(Op op) {
  switch (op) {
    case Op::kAcquire:
      return "acquire";
    case Op::kRenew:
      return "renew";
    case Op::kRelease:
      return "release";
    case Op::kWrite:
      return "write";
  }
  return "?";
}

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kTick:
      return "tick";
    case Kind::kWork:
      return "work";
    case Kind::kRenewTimer:
      return "renew-timer";
    case Kind::kAcquireTimer:
      return "acquire-timer";
    case Kind::kTimeout:
      return "timeout";
    case Kind::kReply:
      return "reply";
    case Kind::kView:
      return "view";
    case Kind::kDb:
      return "db";
    case Kind::kFault:
      return "fault";
    case Kind::kRestart:
      return "restart";
    case Kind::kSuspect:
      return "suspect";
    case Kind::kUnsuspect:
      return "unsuspect";
  }
  return "?";
}

struct Event {
  Ns t = 0;     // when it is processed
  Ns orig = 0;  // when it was first due (a paused server handles its queue in this order)
  uint64_t seq = 0;
  Kind kind = Kind::kTick;
  Op op = Op::kAcquire;
  int server = -1;
  uint64_t inc = 0;  // the server's incarnation it is meant for
  int part = -1;
  int64_t epoch = 0;
  int64_t owner = 0;  // the owner key of a request
  uint64_t id = 0;
  bool ok = false;
  Ns expires_in = 0;  // a refused acquire's reply: how long the row still runs
};

struct Later {
  bool operator()(const Event& a, const Event& b) const {
    if (a.t != b.t) return a.t > b.t;
    if (a.orig != b.orig) return a.orig > b.orig;
    return a.seq > b.seq;
  }
};

class Sim {
 public:
  Sim(SimOptions o, uint64_t seed)
      : o_(o), seed_(seed), rng_(seed), verbose_(EnvInt("DROVER_OWNERSHIP_VERBOSE", 0) != 0) {
    margin_ = o_.margin >= 0 ? o_.margin : ToNs(MinSafeMargin(absl::Nanoseconds(o_.ttl), o_.drift));
    max_ppm_ = static_cast<int64_t>(o_.drift * 1e6);
    rows_.resize(o_.partitions);
    grants_.resize(o_.partitions);
    last_end_.resize(o_.partitions);
    servers_.resize(o_.servers);
    stats_.seeds = 1;
  }

  // Runs the schedule; false at the first violation (failure() says which).
  bool Run() {
    for (int s = 0; s < o_.servers; ++s) {
      servers_[s].up = false;
      servers_[s].inc = 0;
    }
    for (int s = 0; s < o_.servers; ++s) Restart(s);
    Push({.t = Exp(o_.fault_every), .kind = Kind::kFault});
    Ns quiet_end = -1;
    for (step_ = 0; !queue_.empty(); ++step_) {
      Event ev = queue_.top();
      queue_.pop();
      now_ = ev.t;
      Process(ev);
      if (!failure_.empty()) return false;
      if (!Check()) return false;
      if (phase_ == kFaults && step_ >= o_.steps) phase_ = kHealing;
      if (phase_ == kHealing && AllBack()) {
        phase_ = kQuiet;
        quiet_end = now_ + o_.view_delay_max + 3 * o_.ttl;
      }
      if (phase_ == kQuiet && now_ >= quiet_end) {
        stats_.steps = step_;
        return CheckLiveness();
      }
    }
    return Violation("the event queue ran dry");
  }

  const std::string& failure() const { return failure_; }
  const SimStats& stats() const { return stats_; }
  // A digest of what happened (same seed, same digest).
  uint64_t digest() const { return digest_; }

 private:
  enum Phase { kFaults, kHealing, kQuiet };
  enum class St : uint8_t { kIdle, kAcquiring, kHeld };

  struct Part {
    St st = St::kIdle;
    int64_t epoch = 0;
    Ns deadline = 0;  // local
    uint64_t acquire_req = 0, renew_req = 0, timer_gen = 0;
  };
  struct Pending {
    Op op;
    int part;
    Ns sent_local;
    int64_t epoch;
  };
  struct Server {
    bool up = false;
    uint64_t inc = 0;
    int64_t key = 0;  // the owner id as the database row stores it (one per incarnation)
    std::string id;   // the owner id as the hashing sees it
    LocalClock clock;
    Ns paused_until = 0, isolated_until = 0;
    bool replies_only = false;  // the cut drops replies only (requests still arrive)
    bool suspected = false;
    uint64_t view_version = 0;
    std::vector<char> mine;
    std::vector<Part> parts;
    std::unordered_map<uint64_t, Pending> pending;
  };
  struct Row {
    bool exists = false;
    int64_t owner = 0, epoch = 0;
    Ns expires = 0;
  };
  struct Grant {
    int64_t owner = 0, epoch = 0;
  };
  // How the last holder of a partition stopped acting.
  struct End {
    int64_t owner = 0;
    Ns at = -1;
    bool by_deadline = false;
  };

  // --- randomness (portable: the same seed replays the same run with any standard library) ---

  uint64_t Next() { return rng_(); }
  Ns Uniform(Ns lo, Ns hi) {
    return hi <= lo ? lo : lo + static_cast<Ns>(Next() % static_cast<uint64_t>(hi - lo + 1));
  }
  bool Chance(double p) { return static_cast<double>(Next() >> 11) * 0x1.0p-53 < p; }
  Ns Exp(Ns mean) {
    const double u = (static_cast<double>(Next() >> 11) + 1) * 0x1.0p-53;
    return static_cast<Ns>(-std::log(u) * static_cast<double>(mean));
  }

  // --- events ----------------------------------------------------------------------------------

  void Push(Event ev) {
    if (ev.orig == 0) ev.orig = ev.t;
    ev.seq = ++seq_;
    queue_.push(ev);
  }
  // A server's timer at its local time `local`.
  void Timer(int s, Ns local, Event ev) {
    ev.t = std::max(now_, servers_[s].clock.TrueAt(local));
    ev.server = s;
    ev.inc = servers_[s].inc;
    Push(ev);
  }
  Ns LocalNow(int s) const { return servers_[s].clock.Local(now_); }

  std::string Describe(const Event& ev) const {
    std::string d = absl::StrCat(Sec(ev.t), " ", KindName(ev.kind));
    if (ev.kind == Kind::kDb || ev.kind == Kind::kReply || ev.kind == Kind::kTimeout) {
      absl::StrAppend(&d, " #", ev.id);
    }
    if (ev.kind == Kind::kDb) absl::StrAppend(&d, " ", OpName(ev.op), " owner=", ev.owner);
    if (ev.kind == Kind::kReply) absl::StrAppend(&d, ev.ok ? " ok" : " refused");
    if (ev.server >= 0) absl::StrAppend(&d, " server=", ev.server, ".", ev.inc);
    if (ev.part >= 0) absl::StrAppend(&d, " p=", ev.part);
    if (ev.epoch != 0) absl::StrAppend(&d, " epoch=", ev.epoch);
    return d;
  }

  void Note(const std::string& what) {
    if (verbose_) std::cout << "seed=" << seed_ << " step=" << step_ << " " << what << "\n";
    log_.push_back(absl::StrCat("step ", step_, ": ", what));
    if (log_.size() > 40) log_.pop_front();
  }

  // The row and every server's state for partition p, for a failure message.
  std::string PartSummary(int p) const {
    const Row& row = rows_[p];
    std::string d =
        absl::StrCat("\n  partition ", p, ": row owner=", row.owner, " epoch=", row.epoch,
                     " expires=", Sec(row.expires), "; latest grant owner=", grants_[p].owner,
                     " epoch=", grants_[p].epoch);
    for (int s = 0; s < o_.servers; ++s) {
      const Server& sv = servers_[s];
      const Part& pt = sv.parts[p];
      absl::StrAppend(&d, "\n    server ", s, ".", sv.inc, " (owner ", sv.key, ", clock ",
                      sv.clock.ppm, " ppm", sv.up ? "" : ", down",
                      now_ < sv.paused_until ? ", paused" : "",
                      now_ < sv.isolated_until ? ", cut off" : "", "): ");
      if (!sv.up) continue;
      if (pt.st == St::kHeld) {
        absl::StrAppend(&d, "holds epoch ", pt.epoch, ", acting until true time ",
                        Sec(sv.clock.TrueAt(pt.deadline)));
      } else {
        absl::StrAppend(&d, pt.st == St::kAcquiring ? "acquiring" : "idle");
      }
      absl::StrAppend(&d, sv.mine[p] ? " (assigned)" : "");
    }
    return d;
  }

  bool Violation(const std::string& what, int part = -1) {
    if (failure_.empty()) {
      failure_ = absl::StrCat("seed=", seed_, " step=", step_, " t=", Sec(now_), ": ", what,
                              part >= 0 ? PartSummary(part) : "", "\n  last events:\n    ",
                              absl::StrJoin(log_, "\n    "),
                              "\n  replay with DROVER_OWNERSHIP_SEED=", seed_,
                              " DROVER_OWNERSHIP_VERBOSE=1 and this test's --gtest_filter");
    }
    return false;
  }

  void Process(const Event& ev) {
    digest_ = SplitMix64(digest_ ^ static_cast<uint64_t>(ev.t) ^
                         (static_cast<uint64_t>(ev.kind) << 56) ^ ev.id);
    switch (ev.kind) {
      case Kind::kDb:
        Note(Describe(ev));
        return Database(ev);
      case Kind::kFault:
        return Fault();
      case Kind::kRestart:
        Note(Describe(ev));
        return Restart(ev.server);
      case Kind::kSuspect:
      case Kind::kUnsuspect:
        if (servers_[ev.server].inc != ev.inc || !servers_[ev.server].up) return;
        Note(Describe(ev));
        servers_[ev.server].suspected = ev.kind == Kind::kSuspect;
        if (ev.kind == Kind::kSuspect) ++stats_.suspicions;
        return UpdateLive();
      default:
        break;
    }
    Server& s = servers_[ev.server];
    if (!s.up || s.inc != ev.inc) return;  // meant for an incarnation that crashed
    if (now_ < s.paused_until) {
      Event again = ev;
      again.t = s.paused_until;
      queue_.push(again);  // same orig and seq: the queue is handled in its original order
      return;
    }
    if (ev.kind == Kind::kView && now_ < s.isolated_until) {
      Event again = ev;
      again.t = s.isolated_until;
      queue_.push(again);
      return;
    }
    if (ev.kind != Kind::kTick && ev.kind != Kind::kWork) Note(Describe(ev));
    const Ns local = LocalNow(ev.server);
    if (!o_.act_until_noticed) NoticeDeadlines(ev.server, local);
    switch (ev.kind) {
      case Kind::kTick:
        Rebalance(ev.server);
        Timer(ev.server, local + o_.poll, {.kind = Kind::kTick});
        break;
      case Kind::kWork:
        for (int p = 0; p < o_.partitions; ++p) {
          if (Acting(ev.server, p, local)) Send(ev.server, Op::kWrite, p, s.parts[p].epoch);
        }
        Timer(ev.server, local + o_.work_every, {.kind = Kind::kWork});
        break;
      case Kind::kRenewTimer: {
        Part& pt = s.parts[ev.part];
        if (pt.st == St::kHeld && pt.timer_gen == ev.id) SendRenew(ev.server, ev.part, local);
        break;
      }
      case Kind::kAcquireTimer:
        if (s.parts[ev.part].st == St::kIdle && s.mine[ev.part]) {
          TryAcquire(ev.server, ev.part, local);
        }
        break;
      case Kind::kTimeout:
        Timeout(ev.server, ev.id, local);
        break;
      case Kind::kReply:
        Reply(ev.server, ev, local);
        break;
      case Kind::kView:
        if (ev.id > s.view_version) {
          SetView(ev.server, ev.id);
          Rebalance(ev.server);
        }
        break;
      default:
        break;
    }
  }

  // --- the database ----------------------------------------------------------------------------

  // Exactly the statements of lease.cc (kAcquire, kRenew, kRelease) and drover_fence().
  void Database(const Event& ev) {
    Row& row = rows_[ev.part];
    bool ok = false;
    switch (ev.op) {
      case Op::kAcquire:
        // INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE l.expires_at < now()
        if (!row.exists || row.expires < now_) {
          if (row.exists) {
            if (row.owner != ev.owner) ++stats_.takeovers;
            if (row.expires != kMinusInfinity) ++stats_.expiry_takeovers;
          }
          row.epoch = !row.exists ? 1 : (o_.db_no_epoch_bump ? row.epoch : row.epoch + 1);
          row.exists = true;
          row.owner = ev.owner;
          row.expires = now_ + o_.ttl;
          grants_[ev.part] = {row.owner, row.epoch};
          GrantGap(ev.part, row.owner);
          acquired_ids_.insert(ev.id);
          ++stats_.acquired;
          ok = true;
        }
        break;
      case Op::kRenew:
        // UPDATE ... WHERE name = $1 AND owner = $2 AND epoch = $3 (no look at expires_at)
        if (row.exists && row.owner == ev.owner && row.epoch == ev.epoch) {
          if (row.expires == kMinusInfinity) ++stats_.released_row_revived;
          row.expires = now_ + o_.ttl;
          ok = true;
        }
        break;
      case Op::kRelease:
        if (row.exists && row.owner == ev.owner && row.epoch == ev.epoch) {
          row.expires = kMinusInfinity;
          ok = true;
        }
        break;
      case Op::kWrite: {
        const bool pass = row.exists && row.owner == ev.owner &&
                          (o_.db_fence_owner_only || row.epoch == ev.epoch);
        if (!pass) {
          ++stats_.writes_fenced;
          break;
        }
        ++stats_.writes_accepted;
        const Grant& g = grants_[ev.part];
        if (g.owner != ev.owner || g.epoch != ev.epoch) {
          Violation(absl::StrCat("(c) the database accepted a write to partition ", ev.part,
                                 " from owner ", ev.owner, " at epoch ", ev.epoch,
                                 ", but its latest grant is owner ", g.owner, " epoch ", g.epoch),
                    ev.part);
        }
        ok = true;
        break;
      }
    }
    if (ev.op != Op::kAcquire && ev.op != Op::kRenew) return;  // nobody waits for the others
    const Server& s = servers_[ev.server];
    if (Chance(Loss()) || (s.inc == ev.inc && now_ < s.isolated_until)) {
      ++stats_.lost_messages;
      return;
    }
    Event r = ev;
    r.kind = Kind::kReply;
    r.ok = ok;
    r.epoch = ok ? row.epoch : ev.epoch;
    r.expires_in = ok ? 0 : row.expires - now_;
    r.t = now_ + Delay(Op::kRenew);
    r.orig = 0;
    Push(r);
  }

  double Loss() const { return phase_ == kFaults ? o_.loss : 0; }
  Ns Delay(Op op) {
    if (phase_ == kFaults) {
      if (op == Op::kWrite && Chance(o_.write_stall_chance)) return Uniform(0, o_.max_write_stall);
      if (Chance(o_.stall_chance)) return Uniform(0, o_.max_stall);
    }
    // A third of the messages are as quick as a local network gets, so that margins are tested
    // with the least slack delays can give.
    return Chance(1.0 / 3) ? Uniform(0, 200 * kUs) : Uniform(0, o_.max_delay);
  }

  // Sends a request; returns its id. It may be lost (the sender's timeout tells it).
  uint64_t Send(int s, Op op, int part, int64_t epoch) {
    const Server& sv = servers_[s];
    const uint64_t id = ++next_id_;
    if (Chance(Loss()) || (now_ < sv.isolated_until && !sv.replies_only)) {
      ++stats_.lost_messages;
      return id;
    }
    Push({.t = now_ + Delay(op),
          .kind = Kind::kDb,
          .op = op,
          .server = s,
          .inc = sv.inc,
          .part = part,
          .epoch = epoch,
          .owner = sv.key,
          .id = id});
    return id;
  }

  // --- a server --------------------------------------------------------------------------------

  bool Acting(int s, int p, Ns local) const {
    const Server& sv = servers_[s];
    if (!sv.up || sv.parts[p].st != St::kHeld) return false;
    return o_.act_until_noticed ||
           MayAct(absl::Nanoseconds(local), absl::Nanoseconds(sv.parts[p].deadline));
  }

  // The holder stops acting: how and when, for the closest-takeover statistics.
  void StopActing(int s, int p, bool by_deadline) {
    Server& sv = servers_[s];
    Part& pt = sv.parts[p];
    Ns at = now_;
    if (!o_.act_until_noticed) at = std::min(now_, sv.clock.TrueAt(pt.deadline));
    if (at >= last_end_[p].at) last_end_[p] = {sv.key, at, by_deadline};
    pt.st = St::kIdle;
    pt.renew_req = 0;
    ++pt.timer_gen;
  }

  void NoticeDeadlines(int s, Ns local) {
    Server& sv = servers_[s];
    for (int p = 0; p < o_.partitions; ++p) {
      if (sv.parts[p].st == St::kHeld && local >= sv.parts[p].deadline) {
        Note(absl::StrCat("server ", s, " self-fences p=", p, " epoch=", sv.parts[p].epoch));
        ++stats_.self_fenced;
        StopActing(s, p, true);
      }
    }
  }

  void Lost(int s, int p, const std::string& why) {
    Note(absl::StrCat("server ", s, " loses p=", p, ": ", why));
    StopActing(s, p, false);
  }

  void SetView(int s, uint64_t version) {
    Server& sv = servers_[s];
    sv.view_version = version;
    const std::vector<std::string>& view = views_[version];
    std::fill(sv.mine.begin(), sv.mine.end(), 0);
    for (int p : AssignedPartitions(o_.partitions, view, sv.id)) sv.mine[p] = 1;
  }

  void Rebalance(int s) {
    Server& sv = servers_[s];
    const Ns local = LocalNow(s);
    for (int p = 0; p < o_.partitions; ++p) {
      Part& pt = sv.parts[p];
      if (pt.st == St::kHeld && !sv.mine[p]) {
        // Graceful: stop acting first, then give the row up.
        Note(absl::StrCat("server ", s, " releases p=", p, " epoch=", pt.epoch));
        ++stats_.released;
        const int64_t epoch = pt.epoch;
        StopActing(s, p, false);
        Send(s, Op::kRelease, p, epoch);
      } else if (pt.st == St::kIdle && sv.mine[p]) {
        TryAcquire(s, p, local);
      }
    }
  }

  void TryAcquire(int s, int p, Ns local) {
    Server& sv = servers_[s];
    Part& pt = sv.parts[p];
    pt.st = St::kAcquiring;
    pt.acquire_req = Send(s, Op::kAcquire, p, 0);
    sv.pending[pt.acquire_req] = {Op::kAcquire, p, local, 0};
    Timer(s, local + o_.ttl / 2, {.kind = Kind::kTimeout, .id = pt.acquire_req});
  }

  void SendRenew(int s, int p, Ns local) {
    Server& sv = servers_[s];
    Part& pt = sv.parts[p];
    pt.renew_req = Send(s, Op::kRenew, p, pt.epoch);
    sv.pending[pt.renew_req] = {Op::kRenew, p, local, pt.epoch};
    Ns timeout = local + o_.ttl / 3;
    if (o_.cap_renew_timeout) timeout = std::min(timeout, pt.deadline);
    Timer(s, timeout, {.kind = Kind::kTimeout, .id = pt.renew_req});
  }

  void ScheduleRenew(int s, int p, Ns local_at) {
    Part& pt = servers_[s].parts[p];
    Timer(s, local_at, {.kind = Kind::kRenewTimer, .part = p, .id = ++pt.timer_gen});
  }

  void Timeout(int s, uint64_t id, Ns local) {
    Server& sv = servers_[s];
    auto it = sv.pending.find(id);
    if (it == sv.pending.end()) return;  // answered in time
    const Pending pd = it->second;
    sv.pending.erase(it);
    Part& pt = sv.parts[pd.part];
    if (pd.op == Op::kAcquire) {
      if (acquired_ids_.count(id) > 0) ++stats_.acquire_unknown;
      if (pt.st == St::kAcquiring && pt.acquire_req == id) pt.st = St::kIdle;
      return;
    }
    if (pt.st != St::kHeld || pt.epoch != pd.epoch || pt.renew_req != id) return;
    pt.renew_req = 0;
    // lease.cc: a failed renewal is retried after 100 ms while valid(); otherwise lost.
    if (local < pt.deadline) {
      ScheduleRenew(s, pd.part, local + o_.renew_retry);
    } else {
      ++stats_.self_fenced;
      Lost(s, pd.part, "no renewal succeeded before the deadline");
    }
  }

  void Reply(int s, const Event& ev, Ns local) {
    Server& sv = servers_[s];
    auto it = sv.pending.find(ev.id);
    if (it == sv.pending.end()) {
      ++stats_.late_replies;  // after its timeout: the caller gave up on it
      return;
    }
    const Pending pd = it->second;
    sv.pending.erase(it);
    Part& pt = sv.parts[pd.part];
    if (pd.op == Op::kAcquire) {
      if (pt.st != St::kAcquiring || pt.acquire_req != ev.id) return;
      if (!ev.ok) {
        pt.st = St::kIdle;
        if (o_.eager_acquire && ev.expires_in >= 0 && ev.expires_in < o_.poll) {
          Timer(s, pd.sent_local + ev.expires_in + Uniform(0, 200 * kUs),
                {.kind = Kind::kAcquireTimer, .part = pd.part});
        }
        return;
      }
      pt.st = St::kHeld;
      pt.epoch = ev.epoch;
      pt.deadline = ToNs(ActingDeadline(absl::Nanoseconds(pd.sent_local), absl::Nanoseconds(o_.ttl),
                                        absl::Nanoseconds(margin_)));
      if (Acting(s, pd.part, local)) {
        StartActing(s, pd.part);
      } else if (!o_.act_until_noticed) {
        // The reply waited in a paused server's queue past the deadline it implies.
        return NoticeDeadlines(s, local);
      }
      ScheduleRenew(s, pd.part, local + o_.ttl / 3);
      if (!sv.mine[pd.part]) Rebalance(s);
      return;
    }
    // A renewal.
    if (pt.st != St::kHeld || pt.epoch != pd.epoch || pt.renew_req != ev.id) return;
    pt.renew_req = 0;
    if (!ev.ok) {
      ++stats_.row_changed;
      Lost(s, pd.part, "the row changed owner or epoch");
      return;
    }
    ++stats_.renewed;
    pt.deadline = std::max(
        pt.deadline, ToNs(ActingDeadline(absl::Nanoseconds(pd.sent_local),
                                         absl::Nanoseconds(o_.ttl), absl::Nanoseconds(margin_))));
    if (local < pt.deadline) {
      ScheduleRenew(s, pd.part, local + o_.ttl / 3);
    } else {
      ++stats_.self_fenced;
      Lost(s, pd.part, "the renewal came back after the deadline");
    }
  }

  // Server s starts acting on p now: nobody else may still be acting on it.
  void StartActing(int s, int p) {
    for (int o = 0; o < o_.servers; ++o) {
      if (o != s && Acting(o, p, LocalNow(o))) {
        Violation(absl::StrCat("(b) server ", s, " starts acting on partition ", p,
                               " while server ", o, " still acts on it"),
                  p);
      }
    }
  }

  // The database grants p to `owner` now: how long after the previous holder stopped acting,
  // when its deadline (not a release or a crash) stopped it?
  void GrantGap(int p, int64_t owner) {
    End prev = last_end_[p];
    if (prev.owner == owner) prev = End();
    for (const Server& other : servers_) {
      if (!other.up || other.key == owner || other.parts[p].st != St::kHeld ||
          o_.act_until_noticed) {
        continue;
      }
      const Ns end = other.clock.TrueAt(other.parts[p].deadline);
      if (end > prev.at) prev = {other.key, end, true};
    }
    if (prev.at < 0 || !prev.by_deadline) return;
    const Ns gap = now_ - prev.at;
    stats_.min_gap = std::min(stats_.min_gap, gap);
    if (gap < kMs) ++stats_.tight_takeovers;
  }

  // --- faults and membership -------------------------------------------------------------------

  std::vector<int> Candidates() const {
    std::vector<int> c;
    for (int s = 0; s < o_.servers; ++s) {
      const Server& sv = servers_[s];
      if (sv.up && now_ >= sv.paused_until && now_ >= sv.isolated_until) c.push_back(s);
    }
    return c;
  }

  void Fault() {
    if (phase_ != kFaults) return;
    Push({.t = now_ + Exp(o_.fault_every), .kind = Kind::kFault});
    const std::vector<int> c = Candidates();
    if (c.empty()) return;
    const int s = c[static_cast<size_t>(Next() % c.size())];
    Server& sv = servers_[s];
    const double r = static_cast<double>(Next() >> 11) * 0x1.0p-53;
    if (r < o_.crash_chance) {
      Note(absl::StrCat("fault: server ", s, " crashes"));
      ++stats_.crashes;
      for (int p = 0; p < o_.partitions; ++p) {
        if (sv.parts[p].st == St::kHeld) StopActing(s, p, false);
      }
      sv.up = false;
      UpdateLive();
      Push({.t = now_ + Uniform(100 * kMs, o_.max_down), .kind = Kind::kRestart, .server = s});
    } else if (r < o_.crash_chance + o_.pause_chance) {
      const Ns d = Chance(0.5) ? Uniform(0, o_.ttl) : Uniform(o_.ttl, o_.max_pause);
      Note(absl::StrCat("fault: server ", s, " pauses for ", Sec(d)));
      ++stats_.pauses;
      if (d > o_.ttl) ++stats_.pauses_past_ttl;
      sv.paused_until = now_ + d;
      Suspicion(s, d);
    } else if (r < o_.crash_chance + o_.pause_chance + o_.isolate_chance) {
      const Ns d = Uniform(0, o_.max_isolation);
      sv.replies_only = Chance(0.3);
      Note(absl::StrCat("fault: server ", s, " cut off the database for ", Sec(d),
                        sv.replies_only ? " (replies only)" : ""));
      ++stats_.isolations;
      sv.isolated_until = now_ + d;
      Suspicion(s, d);
    }
  }

  void Suspicion(int s, Ns d) {
    if (d <= o_.suspect_after) return;
    Push({.t = now_ + o_.suspect_after,
          .kind = Kind::kSuspect,
          .server = s,
          .inc = servers_[s].inc});
    Push({.t = now_ + d, .kind = Kind::kUnsuspect, .server = s, .inc = servers_[s].inc});
  }

  void Restart(int s) {
    Server& sv = servers_[s];
    ++sv.inc;
    sv.up = true;
    sv.key = static_cast<int64_t>(s) * 1000000 + static_cast<int64_t>(sv.inc);
    sv.id = absl::StrCat("host-", s, "/", 1000 + sv.inc, "/", 1790000000000LL + now_ / kMs);
    sv.clock.offset = Uniform(0, 1000 * kSec);
    const uint64_t r = Next() % 3;
    sv.clock.ppm = r == 0 ? -max_ppm_ : r == 1 ? max_ppm_ : Uniform(-max_ppm_, max_ppm_);
    sv.paused_until = sv.isolated_until = 0;
    sv.suspected = false;
    sv.parts.assign(o_.partitions, Part());
    sv.mine.assign(o_.partitions, 0);
    sv.pending.clear();
    UpdateLive();
    SetView(s, views_.size() - 1);
    const Ns local = LocalNow(s);
    Timer(s, local + Uniform(0, o_.poll), {.kind = Kind::kTick});
    Timer(s, local + Uniform(0, o_.work_every), {.kind = Kind::kWork});
  }

  void UpdateLive() {
    std::vector<std::string> live;
    live_keys_.clear();
    for (const Server& sv : servers_) {
      if (sv.up && !sv.suspected) {
        live.push_back(sv.id);
        live_keys_.push_back(sv.key);
      }
    }
    if (!views_.empty() && views_.back() == live) return;
    views_.push_back(live);
    const uint64_t version = views_.size() - 1;
    Note(absl::StrCat("view ", version, ": ", absl::StrJoin(live, ", ")));
    for (int s = 0; s < o_.servers; ++s) {
      if (!servers_[s].up) continue;
      Push({.t = now_ + Uniform(0, o_.view_delay_max),
            .kind = Kind::kView,
            .server = s,
            .inc = servers_[s].inc,
            .id = version});
    }
  }

  bool AllBack() const {
    for (const Server& sv : servers_) {
      if (!sv.up || now_ < sv.paused_until || now_ < sv.isolated_until || sv.suspected) {
        return false;
      }
    }
    return true;
  }

  // --- the checks ------------------------------------------------------------------------------

  bool Check() {
    Ns local[16];
    for (int s = 0; s < o_.servers; ++s) local[s] = servers_[s].up ? LocalNow(s) : 0;
    for (int p = 0; p < o_.partitions; ++p) {
      int acting = -1;
      for (int s = 0; s < o_.servers; ++s) {
        const Server& sv = servers_[s];
        if (!sv.up || sv.parts[p].st != St::kHeld) continue;
        // (a)
        for (int t = s + 1; t < o_.servers; ++t) {
          const Server& tv = servers_[t];
          if (tv.up && tv.parts[p].st == St::kHeld && tv.parts[p].epoch == sv.parts[p].epoch) {
            return Violation(absl::StrCat("(a) servers ", s, " and ", t, " both believe they hold ",
                                          "partition ", p, " at epoch ", sv.parts[p].epoch),
                             p);
          }
        }
        if (!Acting(s, p, local[s])) continue;
        // (b)
        if (acting >= 0) {
          return Violation(absl::StrCat("(b) servers ", acting, " (epoch ",
                                        servers_[acting].parts[p].epoch, ") and ", s, " (epoch ",
                                        sv.parts[p].epoch, ") both act on partition ", p),
                           p);
        }
        acting = s;
        // (e)
        const Row& row = rows_[p];
        if (o_.check_db_lease &&
            (row.owner != sv.key || row.epoch != sv.parts[p].epoch || row.expires < now_)) {
          return Violation(absl::StrCat("(e) server ", s, " acts on partition ", p, " at epoch ",
                                        sv.parts[p].epoch, " but the row says owner ", row.owner,
                                        " epoch ", row.epoch, " expires ", Sec(row.expires)),
                           p);
        }
      }
    }
    return true;
  }

  bool CheckLiveness() {
    for (int s = 0; s < o_.servers; ++s) {
      if (servers_[s].view_version + 1 != views_.size()) {
        return Violation(absl::StrCat("(d) server ", s, " never got the latest view"));
      }
    }
    const std::vector<std::string>& live = views_.back();
    for (int p = 0; p < o_.partitions; ++p) {
      const int owner = OwnerOf(p, live);
      int s = 0;
      while (servers_[s].key != live_keys_[owner]) ++s;
      const Part& pt = servers_[s].parts[p];
      if (!Acting(s, p, LocalNow(s)) || rows_[p].owner != servers_[s].key ||
          rows_[p].epoch != pt.epoch) {
        return Violation(absl::StrCat("(d) after the quiet period partition ", p,
                                      " has no acting owner: assigned to server ", s,
                                      " whose state is ", static_cast<int>(pt.st), " epoch ",
                                      pt.epoch, "; the row says owner ", rows_[p].owner, " epoch ",
                                      rows_[p].epoch, " expires ", Sec(rows_[p].expires)),
                         p);
      }
      for (int o = 0; o < o_.servers; ++o) {
        if (o != s && servers_[o].parts[p].st == St::kHeld) {
          return Violation(absl::StrCat("(d) partition ", p, " is also held by server ", o));
        }
      }
    }
    return true;
  }

  const SimOptions o_;
  const uint64_t seed_;
  std::mt19937_64 rng_;
  const bool verbose_;
  Ns margin_ = 0;
  int64_t max_ppm_ = 0;
  Phase phase_ = kFaults;
  Ns now_ = 0;
  int64_t step_ = 0;
  uint64_t seq_ = 0, next_id_ = 0, digest_ = 0;
  std::priority_queue<Event, std::vector<Event>, Later> queue_;
  std::vector<Server> servers_;
  std::vector<Row> rows_;
  std::vector<Grant> grants_;
  std::vector<End> last_end_;
  std::vector<std::vector<std::string>> views_;
  std::vector<int64_t> live_keys_;
  std::set<uint64_t> acquired_ids_;
  std::deque<std::string> log_;
  std::string failure_;
  SimStats stats_;
};

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
