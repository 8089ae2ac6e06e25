// cluster/ownership: until when the holder of a lease may act, and which live server owns
// which partition. Pure logic: no I/O, no clocks read here, no PostgreSQL.
//
// The lease protocol (lease.h, migrations/postgres/0002_leases.sql) keeps expiry on the
// database's clock: acquire and renew set expires_at = now() + ttl at the moment the
// statement runs, and another server can take the row only once now() > expires_at. A
// holder cannot read the database's clock, so it measures on its own monotonic clock from
// the moment it *sent* its last successful acquire or renewal (the statement ran later, so
// the database's expiry is at least ttl after that moment) and stops acting `margin`
// earlier than ttl. ActingDeadline is that rule; MinSafeMargin says how large the margin
// must be for clocks that run at a slightly different rate than the database's.
//
// Partitions are spread over the live servers by rendezvous (highest-random-weight)
// hashing: partition p belongs to the live server s with the highest PartitionWeight(s, p).
// Every server that sees the same live set computes the same owner for every partition,
// with no coordination; when a server joins, it takes only the partitions it now wins
// (about P/(N+1)) and no partition moves between the others; when one leaves, only its own
// partitions move. Servers that see different live sets (membership news travels) may
// disagree for a while; the lease rows keep that safe, the hashing only keeps it rare.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"

namespace drover::cluster {

// --- the acting deadline ---------------------------------------------------------------------
//
// Local monotonic time is written as an absl::Duration since an arbitrary origin (e.g.
// CLOCK_MONOTONIC): only differences of it mean anything.

// The local time at which the holder must stop acting: sent_local + ttl - margin, where
// sent_local is the local time at which the holder sent the acquire or renewal that
// succeeded last (the latest such deadline counts; a deadline never moves back).
absl::Duration ActingDeadline(absl::Duration sent_local, absl::Duration ttl, absl::Duration margin);

// Whether a holder whose deadline is `deadline` may act at local time `local_now`.
inline bool MayAct(absl::Duration local_now, absl::Duration deadline) {
  return local_now < deadline;
}

// The resolution the safety bound allows for: PostgreSQL timestamps (now(), expires_at)
// are whole microseconds, and a local clock reading may be off by its own tick.
inline constexpr absl::Duration kClockGranularity = absl::Microseconds(1);

// The smallest margin that keeps acting inside the database's lease, for local clocks whose
// rate differs from the database clock's by at most the fraction `drift` (1e-3: at most
// 1 ms per second, fast or slow):
//
//   Safety condition. Let the holder send its last successful acquire/renewal at true
//   (database) time t_s, when its local clock reads L_s. The statement runs at t_x >= t_s
//   and sets expires_at = t_x + ttl >= t_s + ttl; nobody else can take the row before
//   now() > expires_at, i.e. strictly after t_s + ttl. The holder acts while its local clock
//   reads less than L_s + ttl - margin. Its clock advances at least (1 - drift) local
//   seconds per true second, so it stops acting by true time
//       t_s + (ttl - margin) / (1 - drift),
//   which is at most t_s + ttl exactly when margin >= drift * ttl. Allowing for the
//   granularity of timestamps (a microsecond each for the database's now() and the local
//   reading) gives
//       margin >= drift * ttl + kClockGranularity           (MinSafeMargin)
//   and with it, at no instant do two servers act on the same lease.
//
// The result is drift * ttl rounded up to a microsecond, plus kClockGranularity; at most
// ttl (a margin of ttl means never acting, which is safe for any drift). drift <= 0 gives
// kClockGranularity.
//
// What the bound assumes (and a margin cannot cover):
// - The ttl the database applies is exactly `ttl` (lease.cc sends whole milliseconds: a ttl
//   with a fraction of a millisecond would shorten the database's lease by that fraction).
// - The local clock is monotonic (never steps back); a wall clock that NTP steps back by X
//   extends acting by X. The database clock never steps forward either: a jump ahead of X
//   (or a failover to a primary whose clock is X ahead) ends every lease X early.
// - "Acting" is checked at the moment of each action; an action decided while valid and
//   carried out after a pause (GC, SIGSTOP, a slow disk) is outside any lease's control:
//   that is what the epoch fence on every write is for.
absl::Duration MinSafeMargin(absl::Duration ttl, double drift);

// --- partition assignment ------------------------------------------------------------------

// FNV-1a, 64 bits (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
uint64_t Fnv1a64(std::string_view s);
// The SplitMix64 finalizer applied to x + 0x9e3779b97f4a7c15 (so SplitMix64(0) is the first
// output of a SplitMix64 generator seeded with 0).
uint64_t SplitMix64(uint64_t x);

// The rendezvous weight of `server` for `partition`: a stable function of both (the same on
// every platform and build), uniform over 64 bits.
uint64_t PartitionWeight(std::string_view server, int partition);

// The index in `live` of the server that owns `partition`: the highest weight, ties (two
// distinct ids with one weight: about 2^-64) broken by the smaller id. -1 when `live` is
// empty. The order of `live` does not matter (a duplicated id counts once; its first index
// is returned).
int OwnerOf(int partition, const std::vector<std::string>& live);

// The partitions in [0, partitions) that `me` owns among `live`, ascending; empty when `me`
// is not in `live`. Each partition is owned by exactly one server of `live`.
std::vector<int> AssignedPartitions(int partitions, const std::vector<std::string>& live_servers,
                                    const std::string& me);

}  // namespace drover::cluster
