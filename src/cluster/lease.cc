#include "cluster/lease.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "fmt/core.h"
#include "store/pg_conn.h"

namespace drover::cluster {
namespace pg = drover::store::pg;

namespace {

// Takes the row if it is free: absent, expired, or released. The new epoch is one more than
// the old (1 for a new row). An expired row of our own id is taken the same way.
constexpr char kAcquire[] =
    "INSERT INTO leases AS l (name, owner, epoch, expires_at, renewed_at, address) "
    "VALUES ($1::text, $2::text, 1, now() + $3::int8 * interval '1 millisecond', now(), "
    "$4::text) "
    "ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, epoch = l.epoch + 1, "
    "expires_at = EXCLUDED.expires_at, renewed_at = EXCLUDED.renewed_at, "
    "address = EXCLUDED.address WHERE l.expires_at < now() RETURNING epoch";
constexpr char kLockRow[] = "SELECT 1 FROM leases WHERE name = $1::text FOR UPDATE";
constexpr char kRenew[] =
    "UPDATE leases SET expires_at = now() + $4::int8 * interval '1 millisecond', "
    "renewed_at = now(), address = $5::text "
    "WHERE name = $1::text AND owner = $2::text AND epoch = $3::int8 "
    "AND expires_at <> '-infinity' RETURNING epoch";
constexpr char kRelease[] =
    "UPDATE leases SET expires_at = '-infinity' WHERE name = $1::text AND owner = $2::text "
    "AND epoch = $3::int8";
constexpr char kList[] =
    "SELECT name, owner, address, epoch, "
    "(extract(epoch FROM (expires_at - now())) * 1000)::int8, "
    "(extract(epoch FROM (now() - renewed_at)) * 1000)::int8 FROM leases ORDER BY name";
constexpr char kOne[] =
    "SELECT name, owner, address, epoch, "
    "(extract(epoch FROM (expires_at - now())) * 1000)::int8, "
    "(extract(epoch FROM (now() - renewed_at)) * 1000)::int8 FROM leases WHERE name = $1::text";

constexpr char kHeartbeat[] =
    "WITH gone AS (DELETE FROM servers WHERE heartbeat_at < now() - interval '1 hour') "
    "INSERT INTO servers (id, address, role, started_at, heartbeat_at) VALUES ($1::text, "
    "$2::text, $3::text, to_timestamp($4::int8 / 1000.0), now()) ON CONFLICT (id) DO UPDATE "
    "SET address = EXCLUDED.address, role = EXCLUDED.role, heartbeat_at = now()";
constexpr char kForget[] = "DELETE FROM servers WHERE id = $1::text";
constexpr char kServers[] =
    "SELECT id, address, role, (extract(epoch FROM (now() - heartbeat_at)) * 1000)::int8, "
    "(extract(epoch FROM started_at) * 1000)::int8 FROM servers ORDER BY started_at, id";

LeaseRow ReadRow(const pg::Result& r, int i) {
  LeaseRow row;
  row.name = std::string(r.Bytes(i, 0));
  row.owner = std::string(r.Bytes(i, 1));
  row.address = std::string(r.Bytes(i, 2));
  row.epoch = r.Int8(i, 3);
  // -infinity (released) comes back NULL from the extract: long expired.
  row.expires_in = r.null(i, 4) ? -absl::Hours(1) : absl::Milliseconds(r.Int8(i, 4));
  row.renewed_ago = r.null(i, 5) ? absl::ZeroDuration() : absl::Milliseconds(r.Int8(i, 5));
  return row;
}

}  // namespace

std::string ServerId() {
  char host[256] = {0};
  if (::gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return fmt::format("{}/{}/{}", host, ::getpid(), absl::ToUnixMillis(absl::Now()));
}

Lease::Lease(LeaseOptions options) : options_(std::move(options)), address_(options_.address) {}

void Lease::SetAddress(std::string address) {
  std::lock_guard<std::mutex> lk(mu_);
  address_ = std::move(address);
}

std::string Lease::address() {
  std::lock_guard<std::mutex> lk(mu_);
  return address_;
}

Lease::~Lease() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::Status Lease::Connect(absl::Duration timeout) {
  if (conn_ != nullptr && conn_->healthy()) return absl::OkStatus();
  conn_.reset();
  auto c = pg::Conn::Connect(options_.url, std::min(timeout, absl::Seconds(5)));
  if (!c.ok()) return c.status();
  conn_ = std::move(*c);
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Lease::Acquire(const std::function<void(const LeaseRow&)>& waiting,
                                       const std::function<bool()>& give_up) {
  absl::Time last_report = absl::InfinitePast();
  for (;;) {
    if (give_up && give_up()) {
      return absl::CancelledError(absl::StrCat("lease ", options_.name, ": gave up waiting"));
    }
    absl::Status st = Connect(options_.ttl / 3);
    if (st.ok()) {
      const absl::Time sent = absl::Now();
      const int64_t sent_mono = MonoNs();
      // FOR UPDATE first: it waits for every writer's fence (FOR KEY SHARE) to end, so a
      // write of the old holder that passed its fence commits before the epoch moves.
      // Renewals (plain UPDATEs of non-key columns) do not conflict with the fences.
      auto p = conn_->Pipeline(
          {{"BEGIN", {}, false},
           {kLockRow, {pg::Text(options_.name)}, false},
           {kAcquire,
            {pg::Text(options_.name), pg::Text(options_.owner),
             pg::Int8(absl::ToInt64Milliseconds(options_.ttl)), pg::Text(options_.address)},
            false},
           {"COMMIT", {}, false}},
          sent + options_.ttl / 2);
      absl::StatusOr<pg::Result> r =
          p.ok() ? absl::StatusOr<pg::Result>((*p)[2]) : absl::StatusOr<pg::Result>(p.status());
      if (r.ok() && r->rows() == 1) {
        epoch_.store(r->Int8(0, 0));
        last_sent_ns_ = sent_mono;
        valid_until_ns_.store(sent_mono + absl::ToInt64Nanoseconds(options_.ttl - options_.margin));
        last_heartbeat_ = absl::InfinitePast();
        Heartbeat("owner");
        return epoch_.load();
      }
      if (r.ok()) Heartbeat("standby");
      if (r.ok()) {
        // Held by someone else: say who, now and then.
        if (absl::Now() - last_report > absl::Seconds(5) && waiting) {
          auto one = conn_->Query({kOne, {pg::Text(options_.name)}, false},
                                  absl::Now() + options_.ttl / 2);
          if (one.ok() && one->rows() == 1) waiting(ReadRow(*one, 0));
          last_report = absl::Now();
        }
      } else if (!absl::IsUnavailable(r.status())) {
        return r.status();
      }
    } else if (!absl::IsUnavailable(st)) {
      return st;
    }
    absl::SleepFor(options_.poll);
  }
}

// The local deadline's clock: monotonic, so a step of the wall clock (NTP) cannot stretch
// the time a holder acts.
int64_t Lease::MonoNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

absl::Duration Lease::Left() const { return absl::Nanoseconds(valid_until_ns_.load() - MonoNs()); }

absl::Status Lease::Renew() {
  // No call may outlast the local deadline: past it the holder must already have stopped.
  const absl::Duration left = std::min(options_.ttl / 3, Left());
  if (left <= absl::ZeroDuration()) {
    return absl::UnavailableError("the local deadline passed before the renewal was sent");
  }
  if (absl::Status st = Connect(left); !st.ok()) return st;
  const int64_t sent = MonoNs();
  auto r =
      conn_->Query({kRenew,
                    {pg::Text(options_.name), pg::Text(options_.owner), pg::Int8(epoch_.load()),
                     pg::Int8(absl::ToInt64Milliseconds(options_.ttl)), pg::Text(address())},
                    false},
                   absl::Now() + std::min(options_.ttl / 3, Left()));
  if (!r.ok()) return r.status();
  if (r->rows() != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "lease ", options_.name, " was taken over (epoch ", epoch_.load(), " is no longer ours)"));
  }
  // The database set expires_at = its now() + ttl, and its now() is later than `sent`.
  last_sent_ns_ = sent;
  const int64_t until = sent + absl::ToInt64Nanoseconds(options_.ttl - options_.margin);
  if (until > valid_until_ns_.load()) valid_until_ns_.store(until);
  return absl::OkStatus();
}

void Lease::Heartbeat(const char* role) {
  const absl::Time now = absl::Now();
  const std::string addr = address();
  // Once per TTL, and at once when the role or the address changed.
  if (now - last_heartbeat_ < options_.ttl && addr == heartbeat_address_ &&
      role == heartbeat_role_) {
    return;
  }
  if (conn_ == nullptr || !conn_->healthy()) return;
  heartbeat_address_ = addr;
  heartbeat_role_ = role;
  auto r = conn_->Query({kHeartbeat,
                         {pg::Text(options_.owner), pg::Text(addr), pg::Text(role),
                          pg::Int8(absl::ToUnixMillis(started_))},
                         false},
                        now + options_.ttl / 6);
  if (r.ok()) last_heartbeat_ = now;
}

bool Lease::valid() const { return MonoNs() < valid_until_ns_.load(); }

void Lease::Run(std::function<void(const std::string& why)> lost) {
  on_lost_ = std::move(lost);
  thread_ = std::thread([this] { Loop(); });
}

void Lease::Loop() {
  std::string why;
  for (;;) {
    // The next renewal is due a third of the TTL after the last one was sent; wake at the
    // local deadline at the latest, so a lease that cannot be renewed is given up on time.
    const absl::Duration until_renewal =
        absl::Nanoseconds(last_sent_ns_ + absl::ToInt64Nanoseconds(options_.ttl / 3) - MonoNs());
    {
      std::unique_lock<std::mutex> lk(mu_);
      const absl::Duration wait = std::max(absl::ZeroDuration(), std::min(until_renewal, Left()));
      cv_.wait_for(lk, absl::ToChronoNanoseconds(wait), [&] { return stopping_; });
      if (stopping_) return;
    }
    if (!valid()) {
      why = absl::StrCat("no renewal of lease ", options_.name, " succeeded within its ttl");
      break;
    }
    if (until_renewal > absl::ZeroDuration() &&
        MonoNs() < last_sent_ns_ + absl::ToInt64Nanoseconds(options_.ttl / 3)) {
      continue;  // woke early
    }
    absl::Status st = Renew();
    // A failed renewal is retried every 100 ms until it works or the local deadline passes
    // (a short outage of the database does not cost the lease).
    while (!st.ok() && absl::IsUnavailable(st) && valid()) {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait_for(lk, std::chrono::milliseconds(100), [&] { return stopping_; });
      if (stopping_) return;
      lk.unlock();
      st = Renew();
    }
    if (st.ok() && valid()) {
      Heartbeat("owner");
      continue;
    }
    why = st.ok() ? "the renewal came back after the local deadline" : std::string(st.message());
    if (st.ok() || absl::IsUnavailable(st)) {
      why = absl::StrCat("no renewal of lease ", options_.name, " succeeded within its ttl (", why,
                         ")");
    }
    break;
  }
  valid_until_ns_.store(0);
  {
    std::lock_guard<std::mutex> lk(mu_);
    lost_ = true;
  }
  if (on_lost_) on_lost_(why);
}

absl::Status Lease::Release() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (lost_) return absl::OkStatus();
  }
  valid_until_ns_.store(0);
  if (absl::Status st = Connect(absl::Seconds(2)); !st.ok()) return st;
  auto r =
      conn_->Query({kRelease,
                    {pg::Text(options_.name), pg::Text(options_.owner), pg::Int8(epoch_.load())},
                    false},
                   absl::Now() + absl::Seconds(2));
  (void)conn_->Query({kForget, {pg::Text(options_.owner)}, false}, absl::Now() + absl::Seconds(2));
  return r.ok() ? absl::OkStatus() : r.status();
}

absl::StatusOr<std::vector<ServerRow>> Lease::Servers(const std::string& url) {
  bool prepare = true;
  auto c = pg::Conn::Connect(pg::StripDroverOptions(url, &prepare), absl::Seconds(5));
  if (!c.ok()) return c.status();
  auto r = (*c)->Query({kServers, {}, false}, absl::Now() + absl::Seconds(5));
  if (!r.ok()) return r.status();
  std::vector<ServerRow> rows;
  for (int i = 0; i < r->rows(); ++i) {
    ServerRow row;
    row.id = std::string(r->Bytes(i, 0));
    row.address = std::string(r->Bytes(i, 1));
    row.role = std::string(r->Bytes(i, 2));
    row.heartbeat_age = absl::Milliseconds(r->Int8(i, 3));
    row.started = absl::FromUnixMillis(r->Int8(i, 4));
    rows.push_back(std::move(row));
  }
  return rows;
}

absl::StatusOr<std::vector<LeaseRow>> Lease::List(const std::string& url) {
  bool prepare = true;
  auto c = pg::Conn::Connect(pg::StripDroverOptions(url, &prepare), absl::Seconds(5));
  if (!c.ok()) return c.status();
  auto r = (*c)->Query({kList, {}, false}, absl::Now() + absl::Seconds(5));
  if (!r.ok()) return r.status();
  std::vector<LeaseRow> rows;
  for (int i = 0; i < r->rows(); ++i) rows.push_back(ReadRow(*r, i));
  return rows;
}

}  // namespace drover::cluster
