#include "cluster/ownership.h"

#include <algorithm>

namespace drover::cluster {

absl::Duration ActingDeadline(absl::Duration sent_local, absl::Duration ttl,
                              absl::Duration margin) {
  return sent_local + ttl - margin;
}

absl::Duration MinSafeMargin(absl::Duration ttl, double drift) {
  if (ttl <= absl::ZeroDuration()) return absl::ZeroDuration();
  if (drift >= 1) return ttl;
  absl::Duration m = kClockGranularity;
  if (drift > 0) m += absl::Ceil(ttl * drift, absl::Microseconds(1));
  return std::min(m, ttl);
}

uint64_t Fnv1a64(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (const char c : s) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t PartitionWeight(std::string_view server, int partition) {
  // The server's hash and the partition's are each mixed on their own before they meet, so
  // neither similar ids ("host-1", "host-2") nor neighbouring partitions give correlated
  // weights; the final mix spreads their combination over all 64 bits.
  const uint64_t p = SplitMix64(static_cast<uint64_t>(static_cast<uint32_t>(partition)));
  return SplitMix64(SplitMix64(Fnv1a64(server)) ^ p);
}

int OwnerOf(int partition, const std::vector<std::string>& live) {
  int best = -1;
  uint64_t best_w = 0;
  for (int i = 0; i < static_cast<int>(live.size()); ++i) {
    const uint64_t w = PartitionWeight(live[i], partition);
    if (best < 0 || w > best_w || (w == best_w && live[i] < live[best])) {
      best = i;
      best_w = w;
    }
  }
  return best;
}

std::vector<int> AssignedPartitions(int partitions, const std::vector<std::string>& live_servers,
                                    const std::string& me) {
  std::vector<int> mine;
  if (std::find(live_servers.begin(), live_servers.end(), me) == live_servers.end()) return mine;
  for (int p = 0; p < partitions; ++p) {
    const int owner = OwnerOf(p, live_servers);
    if (owner >= 0 && live_servers[owner] == me) mine.push_back(p);
  }
  return mine;
}

}  // namespace drover::cluster
