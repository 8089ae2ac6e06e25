#include "cli/events_command.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cli/common.h"
#include "fmt/core.h"
#include "google/protobuf/util/json_util.h"

namespace drover::cli {

namespace v1 = ::drover::v1;

namespace {

std::string When(int64_t unix_ms) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixMillis(unix_ms),
                          absl::UTCTimeZone());
}

// What the event is about, most specific first.
std::string Subject(const v1::Event& e) {
  if (e.task_id() != 0) return absl::StrCat("task ", e.task_id());
  if (e.workflow_id() != 0) return absl::StrCat("workflow ", e.workflow_id());
  if (e.agent_id() != 0) return absl::StrCat("agent ", e.agent_id());
  if (!e.pool().empty()) return absl::StrCat("pool ", e.pool());
  return "-";
}

void Print(const v1::Event& e, bool jsonl) {
  if (jsonl) {
    std::string out;
    google::protobuf::util::JsonPrintOptions o;
    o.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(e, &out, o);
    fmt::print("{}\n", out);
  } else {
    fmt::print("{:<8} {:<24} {:<20} {:<16} {:<12} {}\n", e.seq(), When(e.unix_ms()), e.type(),
               Subject(e), e.tenant().empty() ? "-" : e.tenant(), e.message());
  }
  std::fflush(stdout);
}

}  // namespace

void EventsCommand::Add(CLI::App& app) {
  cmd_ = app.add_subcommand(
      "events", "The event log: task changes, agents, breakers, workflows, pools, refusals");
  cmd_->add_option("--type", type_,
                   "only these types or subjects, comma-separated (task, task.dead, agent.breaker, "
                   "pool, admission.refused)");
  cmd_->add_option("--task", task_, "only this task's events");
  cmd_->add_option("--workflow", workflow_, "only this workflow's events");
  cmd_->add_option("--pool", pool_, "only this pool's events (its agents and scaling)");
  cmd_->add_option("--tenant", tenant_, "only this tenant's events");
  cmd_->add_option("--since", since_,
                   "from this long ago (e.g. 10m, 2d; default 1h, or now with --follow)");
  cmd_->add_option("--limit", limit_,
                   "at most this many (default 1000; 0: all); not with --follow");
  cmd_->add_flag("--follow,-f", follow_, "keep printing events as they happen (Ctrl-C stops)");
  cmd_->add_flag("--jsonl", jsonl_, "one JSON event per line");
}

int EventsCommand::Run(client::Client& c) {
  v1::ListEventsRequest req;
  req.set_type(type_);
  req.set_task_id(task_);
  req.set_workflow_id(workflow_);
  req.set_pool(pool_);
  req.set_tenant(tenant_);
  if (limit_ < 0) return Fail(absl::InvalidArgumentError("--limit: must be >= 0"));
  // A task's or workflow's whole story by default; otherwise the last hour, or from now on.
  const bool scoped = task_ != 0 || workflow_ != 0;
  absl::Duration since = absl::Hours(1);
  if (!since_.empty()) {
    auto d = ParseDuration("--since", since_);
    if (!d.ok()) return Fail(d.status());
    since = *d;
  } else if (follow_) {
    since = absl::ZeroDuration();
  }
  if (!scoped || !since_.empty()) {
    req.set_since_unix_ms(std::max<int64_t>(0, absl::ToUnixMillis(absl::Now() - since)));
  }
  if (!jsonl_) {
    fmt::print("{:<8} {:<24} {:<20} {:<16} {:<12} {}\n", "SEQ", "TIME", "TYPE", "SUBJECT", "TENANT",
               "MESSAGE");
  }
  int printed = 0;
  absl::Duration backoff = absl::Milliseconds(250);
  while (true) {
    req.set_page_size(follow_ || limit_ == 0 ? 1000 : std::min(1000, limit_ - printed));
    req.set_wait_ms(follow_ ? 25'000 : 0);
    auto r = c.ListEvents(req);
    if (!r.ok()) {
      // Following goes on across a restart of the server: wait for it.
      if (follow_ && (absl::IsUnavailable(r.status()) || absl::IsDeadlineExceeded(r.status()))) {
        fmt::print(stderr, "drover: {}; retrying\n", std::string(r.status().message()));
        absl::SleepFor(backoff);
        backoff = std::min(backoff * 2, absl::Seconds(5));
        continue;
      }
      return Fail(r.status());
    }
    backoff = absl::Milliseconds(250);
    for (const v1::Event& e : r->events()) {
      Print(e, jsonl_);
      ++printed;
    }
    // Once placed in the log, `since` has done its work: the token says where to go on.
    req.set_page_token(r->next_page_token());
    if (follow_) continue;
    if (!r->more() || (limit_ != 0 && printed >= limit_)) {
      if (r->more()) {
        fmt::print(stderr,
                   "drover: more events match; narrow with --since/--type or raise --limit\n");
      }
      break;
    }
  }
  return 0;
}

}  // namespace drover::cli
