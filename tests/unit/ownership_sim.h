// The model behind ownership_sim_test.cc: a simulated PostgreSQL (true clock, the lease
// statements of lease.cc with their SQL semantics, the fence) and servers with drifting
// clocks, delays, losses, crashes, pauses and cuts; `Sim` runs one seed and checks every
// step (ownership_sim_test.cc says what is checked). Test-only.
#pragma once

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

namespace drover::cluster::sim {

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

}  // namespace drover::cluster::sim
