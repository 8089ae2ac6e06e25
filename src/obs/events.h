// obs/events: the live end of the event log (docs/events.md).
//
// The store keeps every event; the hub keeps the newest ones in memory (a ring) so that
// followers — `drover events --follow`, the dashboard — are answered without a store read,
// and lets a reader wait for the next matching event (a long poll) instead of polling.
//
// The store thread publishes each commit's events, in seq order, once they are durable; a
// reader asks with a store::EventQuery. A query the ring cannot answer wholly (it asks for
// events older than the ring holds) gets nullopt, and the caller reads the store.
//
// Threading: every method is thread-safe. Wait callbacks run on the publishing thread or
// the hub's timer thread, outside the hub's lock, and must not block.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "drover/v1/drover.pb.h"
#include "store/store.h"

namespace drover::obs {

// The key columns of an event, as the store filters on them.
store::EventRow EventKey(const v1::Event& e);

class EventHub {
 public:
  struct Page {
    std::vector<v1::Event> events;
    int64_t next_after = 0;  // the seq up to which the log was looked through
    bool more = false;       // the page is full
  };
  using WaitFn = std::function<void(Page)>;

  explicit EventHub(size_t capacity = 8192, size_t max_waiters = 10'000);
  ~EventHub();

  // Before the first Publish: the last seq already stored (events up to it are in the store
  // only) and the time they end by.
  void Reset(int64_t last_seq, int64_t last_unix_ms);
  // After the commit that made them durable, in increasing seq order, each seq one above
  // the one before.
  void Publish(std::vector<v1::Event> events);
  // The same with each event's key columns already built (`keys[i]` is events[i]'s, its
  // blob unused): the store thread hands over the rows it committed instead of copying the
  // columns again.
  void Publish(std::vector<v1::Event> events, std::vector<store::EventRow> keys);
  int64_t last_seq() const;

  // The page of matching events after query.after_seq, when the ring holds every event it
  // could contain; nullopt when some may be older than the ring (read the store).
  std::optional<Page> Query(const store::EventQuery& query) const;

  // Calls `fn` once: with the first matching events published after query.after_seq, or
  // with an empty page at `deadline`. The events between after_seq and last_seq() must
  // have been looked through already (the caller's Query came back empty).
  // ResourceExhausted, and `fn` is not called, when max_waiters already wait.
  absl::Status Wait(const store::EventQuery& query, absl::Time deadline, WaitFn fn);

  // Answers every waiter with an empty page and refuses new ones (server shutdown).
  void Shutdown();

  size_t waiters() const;
  int64_t published() const;

 private:
  struct Entry {
    store::EventRow key;  // without the blob
    v1::Event event;
  };
  struct Waiter {
    store::EventQuery query;
    absl::Time deadline;
    WaitFn fn;
  };
  // Under mu_: the matching entries after query.after_seq, at most query.limit.
  Page Collect(const store::EventQuery& query) const;
  void TimerLoop();

  const size_t capacity_;
  const size_t max_waiters_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Entry> ring_;
  int64_t base_seq_ = 0;      // every event up to this seq is in the store only
  int64_t base_unix_ms_ = 0;  // and none of them is later than this
  int64_t last_seq_ = 0;
  int64_t published_ = 0;
  uint64_t next_waiter_ = 0;
  std::map<uint64_t, Waiter> waiters_;
  std::multimap<absl::Time, uint64_t> deadlines_;
  bool stopping_ = false;
  std::thread timer_;
};

}  // namespace drover::obs
