#include "cluster/lease.h"

#include <unistd.h>

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
constexpr char kRenew[] =
    "UPDATE leases SET expires_at = now() + $4::int8 * interval '1 millisecond', "
    "renewed_at = now(), address = $5::text "
    "WHERE name = $1::text AND owner = $2::text AND epoch = $3::int8 "
    "RETURNING epoch";
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

absl::Status Lease::Connect() {
  if (conn_ != nullptr && conn_->healthy()) return absl::OkStatus();
  conn_.reset();
  auto c = pg::Conn::Connect(options_.url, std::min(options_.ttl / 3, absl::Seconds(5)));
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
    absl::Status st = Connect();
    if (st.ok()) {
      const absl::Time sent = absl::Now();
      auto r = conn_->Query(
          {kAcquire,
           {pg::Text(options_.name), pg::Text(options_.owner),
            pg::Int8(absl::ToInt64Milliseconds(options_.ttl)), pg::Text(options_.address)},
           false},
          sent + options_.ttl / 2);
      if (r.ok() && r->rows() == 1) {
        epoch_.store(r->Int8(0, 0));
        valid_until_ns_.store(absl::ToUnixNanos(sent + options_.ttl - options_.margin));
        return epoch_.load();
      }
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

absl::Status Lease::Renew() {
  if (absl::Status st = Connect(); !st.ok()) return st;
  const absl::Time sent = absl::Now();
  auto r =
      conn_->Query({kRenew,
                    {pg::Text(options_.name), pg::Text(options_.owner), pg::Int8(epoch_.load()),
                     pg::Int8(absl::ToInt64Milliseconds(options_.ttl)), pg::Text(address())},
                    false},
                   sent + options_.ttl / 3);
  if (!r.ok()) return r.status();
  if (r->rows() != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "lease ", options_.name, " was taken over (epoch ", epoch_.load(), " is no longer ours)"));
  }
  // The database set expires_at = its now() + ttl, and its now() is later than `sent`.
  const int64_t until = absl::ToUnixNanos(sent + options_.ttl - options_.margin);
  if (until > valid_until_ns_.load()) valid_until_ns_.store(until);
  return absl::OkStatus();
}

bool Lease::valid() const { return absl::ToUnixNanos(absl::Now()) < valid_until_ns_.load(); }

void Lease::Run(std::function<void(const std::string& why)> lost) {
  on_lost_ = std::move(lost);
  thread_ = std::thread([this] { Loop(); });
}

void Lease::Loop() {
  const absl::Duration every = options_.ttl / 3;
  std::string why;
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait_for(lk, absl::ToChronoMilliseconds(every), [&] { return stopping_; });
      if (stopping_) return;
    }
    absl::Status st = Renew();
    // A failed renewal is retried at once, and again, until it works or the local deadline
    // passes (a short outage of the database does not cost the lease).
    while (!st.ok() && absl::IsUnavailable(st) && valid()) {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait_for(lk, std::chrono::milliseconds(100), [&] { return stopping_; });
      if (stopping_) return;
      lk.unlock();
      st = Renew();
    }
    if (st.ok() && valid()) continue;
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
  if (absl::Status st = Connect(); !st.ok()) return st;
  auto r =
      conn_->Query({kRelease,
                    {pg::Text(options_.name), pg::Text(options_.owner), pg::Int8(epoch_.load())},
                    false},
                   absl::Now() + absl::Seconds(2));
  return r.ok() ? absl::OkStatus() : r.status();
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
