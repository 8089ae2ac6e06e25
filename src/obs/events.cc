#include "obs/events.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace drover::obs {

store::EventRow EventKey(const v1::Event& e) {
  store::EventRow k;
  k.seq = e.seq();
  k.unix_ms = e.unix_ms();
  k.type = e.type();
  k.tenant = e.tenant();
  k.task_id = e.task_id();
  k.workflow_id = e.workflow_id();
  k.pool = e.pool();
  return k;
}

EventHub::EventHub(size_t capacity, size_t max_waiters)
    : capacity_(std::max<size_t>(1, capacity)), max_waiters_(max_waiters) {
  timer_ = std::thread([this] { TimerLoop(); });
}

EventHub::~EventHub() {
  Shutdown();
  timer_.join();
}

void EventHub::Reset(int64_t last_seq, int64_t last_unix_ms) {
  std::lock_guard<std::mutex> lk(mu_);
  ring_.clear();
  base_seq_ = last_seq_ = last_seq;
  base_unix_ms_ = last_unix_ms;
}

int64_t EventHub::last_seq() const {
  std::lock_guard<std::mutex> lk(mu_);
  return last_seq_;
}

size_t EventHub::waiters() const {
  std::lock_guard<std::mutex> lk(mu_);
  return waiters_.size();
}

int64_t EventHub::published() const {
  std::lock_guard<std::mutex> lk(mu_);
  return published_;
}

EventHub::Page EventHub::Collect(const store::EventQuery& query) const {
  Page page;
  page.next_after = std::max(query.after_seq, last_seq_);
  if (ring_.empty()) return page;
  // Seqs in the ring are consecutive: jump to the first one after after_seq.
  const int64_t first = ring_.front().event.seq();
  size_t i = query.after_seq < first ? 0 : static_cast<size_t>(query.after_seq - first + 1);
  for (; i < ring_.size(); ++i) {
    const Entry& e = ring_[i];
    if (!store::EventMatches(query, e.key)) continue;
    page.events.push_back(e.event);
    if (static_cast<int64_t>(page.events.size()) == query.limit) {
      page.more = true;
      page.next_after = e.event.seq();
      break;
    }
  }
  return page;
}

std::optional<EventHub::Page> EventHub::Query(const store::EventQuery& query) const {
  std::lock_guard<std::mutex> lk(mu_);
  // Answerable when nothing it asks for was evicted: it starts at or after the ring, or
  // every event at or after `since` is younger than the newest evicted one.
  const bool covered = query.after_seq >= base_seq_ ||
                       (query.since_unix_ms > 0 && query.since_unix_ms > base_unix_ms_);
  if (!covered) return std::nullopt;
  return Collect(query);
}

absl::Status EventHub::Wait(const store::EventQuery& query, absl::Time deadline, WaitFn fn) {
  std::optional<Page> now;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_) return absl::UnavailableError("server is shutting down");
    // Events published since the caller looked answer it at once.
    if (query.after_seq < last_seq_) {
      if (query.after_seq < base_seq_) {
        now.emplace();  // evicted meanwhile: the caller reads the store next time
        now->next_after = query.after_seq;
      } else if (Page page = Collect(query); !page.events.empty()) {
        now = std::move(page);
      }
    }
    if (!now) {
      if (waiters_.size() >= max_waiters_) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "events: ", waiters_.size(), " readers wait already (the limit); retry shortly"));
      }
      const uint64_t id = next_waiter_++;
      store::EventQuery q = query;
      q.after_seq = std::max(q.after_seq, last_seq_);  // everything up to it was looked at
      waiters_.emplace(id, Waiter{std::move(q), deadline, std::move(fn)});
      deadlines_.emplace(deadline, id);
    }
  }
  if (now) {
    fn(std::move(*now));
  } else {
    cv_.notify_one();
  }
  return absl::OkStatus();
}

void EventHub::Publish(std::vector<v1::Event> events) {
  std::vector<store::EventRow> keys;
  keys.reserve(events.size());
  for (const v1::Event& e : events) keys.push_back(EventKey(e));
  Publish(std::move(events), std::move(keys));
}

void EventHub::Publish(std::vector<v1::Event> events, std::vector<store::EventRow> keys) {
  if (events.empty() || keys.size() != events.size()) return;
  std::vector<std::pair<WaitFn, Page>> ready;
  {
    std::lock_guard<std::mutex> lk(mu_);
    const int64_t before = last_seq_;
    for (size_t i = 0; i < events.size(); ++i) {
      keys[i].blob.clear();
      last_seq_ = events[i].seq();
      ring_.push_back(Entry{std::move(keys[i]), std::move(events[i])});
    }
    published_ += static_cast<int64_t>(events.size());
    while (ring_.size() > capacity_) {
      base_seq_ = ring_.front().event.seq();
      base_unix_ms_ = std::max(base_unix_ms_, ring_.front().event.unix_ms());
      ring_.pop_front();
    }
    if (!waiters_.empty()) {
      // A waiter looked at everything up to `before` (or later): only the new events can
      // answer it.
      for (auto it = waiters_.begin(); it != waiters_.end();) {
        Waiter& w = it->second;
        store::EventQuery q = w.query;
        q.after_seq = std::max(q.after_seq, before);
        Page page = Collect(q);
        page.next_after = page.more ? page.next_after : last_seq_;
        if (page.events.empty()) {
          w.query.after_seq = last_seq_;
          ++it;
          continue;
        }
        auto [lo, hi] = deadlines_.equal_range(w.deadline);
        for (auto d = lo; d != hi; ++d) {
          if (d->second == it->first) {
            deadlines_.erase(d);
            break;
          }
        }
        ready.emplace_back(std::move(w.fn), std::move(page));
        it = waiters_.erase(it);
      }
    }
  }
  for (auto& [fn, page] : ready) fn(std::move(page));
}

void EventHub::Shutdown() {
  std::vector<std::pair<WaitFn, Page>> ready;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
    for (auto& [id, w] : waiters_) {
      Page page;
      page.next_after = std::max(w.query.after_seq, last_seq_);
      ready.emplace_back(std::move(w.fn), std::move(page));
    }
    waiters_.clear();
    deadlines_.clear();
  }
  cv_.notify_all();
  for (auto& [fn, page] : ready) fn(std::move(page));
}

void EventHub::TimerLoop() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stopping_) {
    if (deadlines_.empty()) {
      cv_.wait(lk);
      continue;
    }
    const absl::Time next = deadlines_.begin()->first;
    if (absl::Now() < next) {
      cv_.wait_until(lk, absl::ToChronoTime(next));
      continue;
    }
    std::vector<std::pair<WaitFn, Page>> ready;
    const absl::Time now = absl::Now();
    while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
      auto it = waiters_.find(deadlines_.begin()->second);
      deadlines_.erase(deadlines_.begin());
      if (it == waiters_.end()) continue;
      Page page;
      page.next_after = std::max(it->second.query.after_seq, last_seq_);
      ready.emplace_back(std::move(it->second.fn), std::move(page));
      waiters_.erase(it);
    }
    lk.unlock();
    for (auto& [fn, page] : ready) fn(std::move(page));
    lk.lock();
  }
}

}  // namespace drover::obs
