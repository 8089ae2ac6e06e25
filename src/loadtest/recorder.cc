// loadtest: the recorder — counts per second and in total, latency histograms, the ids of
// every task acknowledged and completed.
#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "fmt/core.h"
#include "loadtest/internal.h"

namespace drover::loadtest {

std::string Payload(int64_t due_ns, Kind kind) {
  return absl::StrCat(due_ns, ":", std::string(1, static_cast<char>(kind)));
}

bool ParsePayload(const std::string& payload, int64_t* due_ns, Kind* kind) {
  const size_t colon = payload.find(':');
  if (colon == std::string::npos || colon + 2 != payload.size()) return false;
  if (!absl::SimpleAtoi(absl::string_view(payload).substr(0, colon), due_ns)) return false;
  const char k = payload[colon + 1];
  if (k != 't' && k != 's' && k != 'w' && k != 'm') return false;
  *kind = static_cast<Kind>(k);
  return true;
}

std::vector<double> FineBounds() {
  std::vector<double> b;
  for (double v = 0.00005; v < 600.0; v *= 1.15) b.push_back(v);
  return b;
}

Recorder::Recorder(absl::Time start) : start_(start) {}

Recorder::Second& Recorder::At(int s) {
  // Grown as the run goes (a second's two histograms are ~2 KiB each).
  if (static_cast<size_t>(s) >= seconds_.size()) seconds_.resize(static_cast<size_t>(s) + 1);
  return seconds_[static_cast<size_t>(s)];
}

int Recorder::SecondOf(absl::Time t) const {
  const int64_t s = absl::ToInt64Seconds(t - start_);
  return static_cast<int>(std::clamp<int64_t>(s, 0, kMaxSeconds - 1));
}

void Recorder::Acked(const std::vector<uint64_t>& ids, double latency_s, bool max_phase) {
  const absl::Time now = absl::Now();
  const int s = SecondOf(now);
  std::lock_guard<std::mutex> lk(mu_);
  acked_ids_.insert(acked_ids_.end(), ids.begin(), ids.end());
  At(s).acked += static_cast<int64_t>(ids.size());
  At(s).submit.Observe(latency_s);
  (max_phase ? submit_max_ : submit_).Observe(latency_s);
  acked_ += static_cast<int64_t>(ids.size());
  if (max_phase) max_acked_ += static_cast<int64_t>(ids.size());
}

void Recorder::Completed(const std::vector<Done>& done, absl::Time now) {
  if (done.empty()) return;
  const int s = SecondOf(now);
  const int64_t now_ns = absl::ToUnixNanos(now);
  int64_t max_done = 0;
  std::lock_guard<std::mutex> lk(mu_);
  Second& sec = At(s);
  for (const Done& d : done) {
    completed_ids_.push_back(d.id);
    const double latency = static_cast<double>(now_ns - d.due_ns) / 1e9;
    switch (d.kind) {
      case Kind::kTask:
        task_.Observe(latency);
        sec.e2e.Observe(latency);
        break;
      case Kind::kMax:
        task_max_.Observe(latency);
        max_done++;
        break;
      case Kind::kSink:
        workflow_.Observe(latency);
        break;
      case Kind::kStep:
        break;
    }
  }
  sec.completed += static_cast<int64_t>(done.size());
  completed_ += static_cast<int64_t>(done.size());
  if (max_done > 0) {
    max_completed_ += max_done;
    max_last_ = std::max(max_last_, now);
  }
}

void Recorder::Attempt(int attempt) {
  if (attempt <= 1) return;
  retries_++;
  const int s = SecondOf(absl::Now());
  std::lock_guard<std::mutex> lk(mu_);
  At(s).retries++;
}

void Recorder::Failed() {
  failed_attempts_++;
  const int s = SecondOf(absl::Now());
  std::lock_guard<std::mutex> lk(mu_);
  At(s).failed++;
}

void Recorder::Event(const std::string& what) {
  const double t = absl::ToDoubleSeconds(absl::Now() - start_);
  std::lock_guard<std::mutex> lk(mu_);
  events_.push_back(fmt::format("{:.1f} s: {}", t, what));
}

void Recorder::Sample(int64_t outstanding, int64_t agents) {
  const int s = SecondOf(absl::Now());
  std::lock_guard<std::mutex> lk(mu_);
  At(s).outstanding = outstanding;
  At(s).agents = agents;
}

std::vector<Recorder::Second> Recorder::Timeline() const {
  std::lock_guard<std::mutex> lk(mu_);
  return seconds_;
}

std::vector<uint64_t> Recorder::AckedIds() const {
  std::lock_guard<std::mutex> lk(mu_);
  return acked_ids_;
}
std::vector<uint64_t> Recorder::CompletedIds() const {
  std::lock_guard<std::mutex> lk(mu_);
  return completed_ids_;
}
std::vector<std::string> Recorder::Events() const {
  std::lock_guard<std::mutex> lk(mu_);
  return events_;
}
Histogram Recorder::SubmitLatency(bool max_phase) const {
  std::lock_guard<std::mutex> lk(mu_);
  return max_phase ? submit_max_ : submit_;
}
Histogram Recorder::TaskLatency(bool max_phase) const {
  std::lock_guard<std::mutex> lk(mu_);
  return max_phase ? task_max_ : task_;
}
Histogram Recorder::WorkflowLatency() const {
  std::lock_guard<std::mutex> lk(mu_);
  return workflow_;
}
absl::Time Recorder::max_last_completion() const {
  std::lock_guard<std::mutex> lk(mu_);
  return max_last_;
}

}  // namespace drover::loadtest
