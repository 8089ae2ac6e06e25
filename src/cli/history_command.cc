#include "cli/history_command.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/common.h"
#include "fmt/core.h"
#include "sim/simulator.h"

namespace drover::cli {
namespace {

namespace v1 = ::drover::v1;

// The server's largest page (GetLoadHistoryRequest.limit): export reads page by page.
constexpr int kExportPageRows = 10'000;

int64_t UnixMinute(absl::Time t) { return absl::ToUnixSeconds(t) / 60; }

std::string MinuteUtc(int64_t minute) {
  return absl::FormatTime("%Y-%m-%d %H:%M", absl::FromUnixSeconds(minute * 60),
                          absl::UTCTimeZone());
}

// A minute given on the command line: a Unix minute (only digits, e.g. 28512000), or a
// duration before `now` ("90m", "6h", "3d").
absl::StatusOr<int64_t> ParseMinute(const std::string& flag, const std::string& text,
                                    absl::Time now) {
  int64_t minute = 0;
  if (!text.empty() && std::all_of(text.begin(), text.end(), absl::ascii_isdigit) &&
      absl::SimpleAtoi(text, &minute)) {
    return minute;
  }
  constexpr int64_t kMaxDays = 100 * 365;
  absl::StatusOr<absl::Duration> ago = ParseDuration(flag, text);
  if (!ago.ok() || *ago > absl::Hours(24 * kMaxDays)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": '", text,
                     "' is not a Unix minute (e.g. 28512000) or a duration before now like 90m, "
                     "6h or 3d"));
  }
  return std::max<int64_t>(0, UnixMinute(now - *ago));
}

}  // namespace

void HistoryCommand::Add(CLI::App& app) {
  cmd_ = app.add_subcommand(
      "history",
      "A pool's load history per minute (arrivals, dispatches, service times, queue, agents)");
  cmd_->add_option("pool", pool_, "pool name");
  cmd_->add_option("--since", since_,
                   "from this Unix minute, or this long ago (90m, 6h, 3d; default 1h)");
  cmd_->add_option("--until", until_, "before this Unix minute, or this long ago (default: now)");
  cmd_->add_option("--limit", limit_, "rows at most, oldest first (default 1440, at most 10000)");
  cmd_->add_flag("--json", json_, "print JSON");

  import_ = cmd_->add_subcommand(
      "import", "Write a trace's arrivals (minute,arrivals or second,arrivals CSV) as the history");
  import_->add_option("--pool", pool_, "pool name")->required();
  import_->add_option("--trace", trace_, "CSV in `drover simulate --trace` form")->required();
  start_option_ = import_->add_option(
      "--start", start_, "Unix minute of the trace's first row (default: it ends this minute)");

  export_ = cmd_->add_subcommand(
      "export", "Write a pool's arrivals as minute,arrivals CSV (re-imports; `drover simulate`)");
  export_->add_option("--pool", pool_, "pool name")->required();
  export_->add_option("--since", since_,
                      "from this Unix minute, or this long ago (default: the first row)");
  export_->add_option("--until", until_, "before this Unix minute, or this long ago");
  export_->add_option("--out", out_, "file to write (default: standard output)");
}

int HistoryCommand::Run(client::Client& c) {
  if (import_->parsed()) return Import(c);
  if (export_->parsed()) return Export(c);
  return Show(c);
}

int HistoryCommand::Show(client::Client& c) {
  if (pool_.empty()) {
    return Fail(absl::InvalidArgumentError(
        "pool: required (drover history POOL, drover history import|export --pool POOL)"));
  }
  const absl::Time now = absl::Now();
  v1::GetLoadHistoryRequest req;
  req.set_pool(pool_);
  absl::StatusOr<int64_t> since = ParseMinute("--since", since_.empty() ? "1h" : since_, now);
  if (!since.ok()) return Fail(since.status());
  req.set_since_unix_minute(*since);
  if (!until_.empty()) {
    absl::StatusOr<int64_t> until = ParseMinute("--until", until_, now);
    if (!until.ok()) return Fail(until.status());
    req.set_until_unix_minute(*until);
  }
  req.set_limit(limit_);
  absl::StatusOr<v1::GetLoadHistoryResponse> r = c.GetLoadHistory(req);
  if (!r.ok()) return Fail(r.status());
  if (json_) {
    fmt::print("{}", Json(*r));
    return 0;
  }
  if (r->minutes().empty()) {
    fmt::print("no load history for pool {} from {} UTC\n", pool_, MinuteUtc(*since));
    return 0;
  }
  fmt::print("{:<16} {:>9} {:>10} {:>11} {:>9} {:>9} {:>7} {:>8} {:>5} {:>5} {:>8}\n",
             "MINUTE (UTC)", "ARRIVALS", "DISPATCHES", "COMPLETIONS", "SVC MEAN", "SVC P95",
             "QUEUE", "STARTING", "IDLE", "BUSY", "DRAINING");
  for (const v1::LoadMinute& m : r->minutes()) {
    fmt::print("{:<16} {:>9} {:>10} {:>11} {:>8.2f}s {:>8.2f}s {:>7} {:>8} {:>5} {:>5} {:>8}\n",
               MinuteUtc(m.unix_minute()), m.arrivals(), m.dispatches(), m.completions(),
               m.service_mean_s(), m.service_p95_s(), m.queue_depth(), m.agents_starting(),
               m.agents_idle(), m.agents_busy(), m.agents_draining());
  }
  if (r->next_since_unix_minute() != 0) {
    fmt::print("(more rows: --since {})\n", r->next_since_unix_minute());
  }
  return 0;
}

int HistoryCommand::Import(client::Client& c) {
  // The simulator's parser, so a trace `drover simulate` accepts imports and errors name
  // the file and line the same way.
  absl::StatusOr<sim::Trace> trace = sim::LoadTrace(trace_);
  if (!trace.ok()) return Fail(trace.status());
  std::vector<int64_t> minutes;
  if (trace->bucket == absl::Minutes(1)) {
    minutes = std::move(trace->arrivals);
  } else {
    // Seconds summed into minutes; a last partial minute keeps what it has.
    minutes.assign((trace->arrivals.size() + 59) / 60, 0);
    for (size_t i = 0; i < trace->arrivals.size(); ++i) minutes[i / 60] += trace->arrivals[i];
  }
  const int64_t n = static_cast<int64_t>(minutes.size());
  v1::ImportLoadHistoryRequest req;
  req.set_pool(pool_);
  req.set_start_unix_minute(start_option_->count() > 0 ? start_
                                                       : UnixMinute(absl::Now()) - (n - 1));
  req.mutable_arrivals()->Add(minutes.begin(), minutes.end());
  absl::StatusOr<v1::ImportLoadHistoryResponse> r = c.ImportLoadHistory(req);
  if (!r.ok()) return Fail(r.status());
  const int64_t first = req.start_unix_minute();
  fmt::print(
      "imported {} minutes of arrivals{} into pool {}: Unix minutes {} to {} ({} to {} UTC)\n",
      r->rows_written(),
      trace->bucket == absl::Minutes(1)
          ? std::string()
          : absl::StrCat(" (from ", trace->arrivals.size(), " seconds)"),
      pool_, first, first + n - 1, MinuteUtc(first), MinuteUtc(first + n - 1));
  return 0;
}

int HistoryCommand::Export(client::Client& c) {
  const absl::Time now = absl::Now();
  v1::GetLoadHistoryRequest req;
  req.set_pool(pool_);
  req.set_limit(kExportPageRows);
  if (!since_.empty()) {
    absl::StatusOr<int64_t> since = ParseMinute("--since", since_, now);
    if (!since.ok()) return Fail(since.status());
    req.set_since_unix_minute(*since);
  }
  if (!until_.empty()) {
    absl::StatusOr<int64_t> until = ParseMinute("--until", until_, now);
    if (!until.ok()) return Fail(until.status());
    req.set_until_unix_minute(*until);
  }
  std::map<int64_t, int64_t> arrivals;  // by Unix minute
  while (true) {
    absl::StatusOr<v1::GetLoadHistoryResponse> r = c.GetLoadHistory(req);
    if (!r.ok()) return Fail(r.status());
    for (const v1::LoadMinute& m : r->minutes()) arrivals[m.unix_minute()] = m.arrivals();
    if (r->next_since_unix_minute() == 0) break;
    req.set_since_unix_minute(r->next_since_unix_minute());
  }
  if (arrivals.empty()) {
    return Fail(absl::NotFoundError(
        absl::StrCat("pool ", pool_, " has no load history in that range: nothing to export")));
  }
  // Minutes count from the first row, gaps (the server was down) as 0 arrivals: the form
  // ParseTrace reads, so the file re-imports and replays as is.
  const int64_t first = arrivals.begin()->first;
  const int64_t last = arrivals.rbegin()->first;
  std::string csv = "minute,arrivals\n";
  auto it = arrivals.begin();
  for (int64_t m = first; m <= last; ++m) {
    int64_t a = 0;
    if (it != arrivals.end() && it->first == m) a = (it++)->second;
    absl::StrAppend(&csv, m - first, ",", a, "\n");
  }
  if (out_.empty() || out_ == "-") {
    std::fwrite(csv.data(), 1, csv.size(), stdout);
    return 0;
  }
  std::ofstream out(out_, std::ios::binary | std::ios::trunc);
  out << csv;
  out.close();
  if (!out) return Fail(absl::FailedPreconditionError(absl::StrCat("--out: cannot write ", out_)));
  fmt::print(stderr,
             "exported {} minutes of pool {} ({} with a row): Unix minutes {} to {} ({} to {} "
             "UTC) to {}\n",
             last - first + 1, pool_, arrivals.size(), first, last, MinuteUtc(first),
             MinuteUtc(last), out_);
  return 0;
}

}  // namespace drover::cli
