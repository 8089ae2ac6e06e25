// cluster/lease: ownership of a named piece of work through a lease row in PostgreSQL.
//
// A Lease is held by at most one live server at a time. Acquiring increments the row's
// epoch (after locking the row FOR UPDATE, which waits for writes in flight); the holder
// renews every third of the TTL after its last renewal was sent, on a connection of its own
// (the fence's key-share lock does not block renewals); every write the holder makes is
// fenced by the epoch
// (store::Store::SetFence). Expiry is the database's clock (now()); the holder's own
// deadline is measured on its monotonic clock (steady_clock) from the moment it *sent* the last
// renewal that succeeded, minus a margin, so it always ends before the database's: the holder stops
// acting (self-fences) before anyone else can take over.
//
// Threading: Acquire and Release from one thread; Run starts the renewal thread; valid()
// and epoch() from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace drover::store::pg {
class Conn;
}

namespace drover::cluster {

struct LeaseOptions {
  std::string url;      // the PostgreSQL URL (drover's own options stripped)
  std::string name;     // the lease row, e.g. "partition/0"
  std::string owner;    // this server's id (ServerId())
  std::string address;  // where this server serves gRPC (shown by drover cluster)
  absl::Duration ttl = absl::Seconds(6);
  // The holder acts only until (send time of its last successful renewal) + ttl - margin.
  absl::Duration margin = absl::Seconds(1);
  // How often a waiting server looks at the row while another holds it.
  absl::Duration poll = absl::Milliseconds(250);
};

// A row of the servers table (drover cluster).
struct ServerRow {
  std::string id, address, role;
  absl::Duration heartbeat_age;
  absl::Time started;
};

// What a lease row says (drover cluster, logs).
struct LeaseRow {
  std::string name, owner, address;
  int64_t epoch = 0;
  absl::Duration expires_in;  // negative once expired
  absl::Duration renewed_ago;
};

class Lease {
 public:
  explicit Lease(LeaseOptions options);
  ~Lease();
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  // Takes the lease once it is free (expired or released), waiting and polling meanwhile;
  // `waiting` is called (at most every few seconds) with the current holder while it waits.
  // Returns the new epoch. Fails when `give_up` returns true, or on a database error other
  // than Unavailable (which is retried).
  absl::StatusOr<int64_t> Acquire(const std::function<void(const LeaseRow&)>& waiting,
                                  const std::function<bool()>& give_up);

  // Starts renewing. `lost` runs once, on the renewal thread, when the lease can no longer
  // be held: the row changed owner or epoch, or no renewal succeeded before the local
  // deadline. Its argument says why.
  void Run(std::function<void(const std::string& why)> lost);

  // Stops renewing and, if still held, gives the lease up at once (expires_at in the past,
  // same epoch), so the next server takes it without waiting for the TTL.
  absl::Status Release();

  // True while this server may act on the lease (the local deadline has not passed).
  bool valid() const;
  int64_t epoch() const { return epoch_.load(); }
  // The gRPC address the row shows from the next renewal on (known once gRPC listens).
  void SetAddress(std::string address);
  const LeaseOptions& options() const { return options_; }

  // Reads every lease row (any server; for drover cluster).
  static absl::StatusOr<std::vector<LeaseRow>> List(const std::string& url);
  // Reads every server row, oldest first.
  static absl::StatusOr<std::vector<ServerRow>> Servers(const std::string& url);

 private:
  absl::Status Connect(absl::Duration timeout);
  static int64_t MonoNs();
  // Time left until the local deadline (negative once past).
  absl::Duration Left() const;
  // One renewal; OK when the row still names us at our epoch.
  absl::Status Renew();
  // Refreshes this server's row in the servers table (role owner or standby); failures are
  // ignored (the row is informational).
  void Heartbeat(const char* role);
  void Loop();
  std::string address();

  const LeaseOptions options_;
  std::unique_ptr<store::pg::Conn> conn_;
  std::atomic<int64_t> epoch_{0};
  // Monotonic ns (MonoNs) at which acting must stop; only grows while renewals succeed.
  std::atomic<int64_t> valid_until_ns_{0};
  int64_t last_sent_ns_ = 0;  // MonoNs when the last successful acquire/renewal was sent

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool lost_ = false;
  std::function<void(const std::string&)> on_lost_;
  std::string address_;
  absl::Time started_ = absl::Now();
  absl::Time last_heartbeat_ = absl::InfinitePast();
  std::string heartbeat_address_, heartbeat_role_;  // what the last heartbeat wrote
  std::thread thread_;
};

// This process's id for lease rows: "host/pid/start-ms".
std::string ServerId();

}  // namespace drover::cluster
