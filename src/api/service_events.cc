// The event log's reads (docs/events.md): ListEvents over gRPC and GET /v1/events.
//
// A page comes from the hub (obs/events.h) when it holds every event the query could
// return, else from the store, read on the store thread after what is queued has
// committed. An empty page with wait_ms waits in the hub for the next matching event.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "api/service.h"
#include "api/service_internal.h"
#include "core/names.h"

namespace drover::api {
namespace {

constexpr int64_t kMaxWaitMs = 30'000;
constexpr size_t kMaxTypes = 16;

// "task", "task.dead": a subject, or a subject and what, of [a-z_].
bool ValidEventType(absl::string_view t) {
  if (t.empty() || t.size() > 64) return false;
  int dots = 0;
  char prev = '.';
  for (char c : t) {
    if (c == '.') {
      if (prev == '.' || ++dots > 1) return false;
    } else if (!((c >= 'a' && c <= 'z') || c == '_')) {
      return false;
    }
    prev = c;
  }
  return prev != '.';
}

absl::Status Bad(const std::string& field, const std::string& why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

v1::ListEventsResponse ToResponse(obs::EventHub::Page page) {
  v1::ListEventsResponse resp;
  for (v1::Event& e : page.events) *resp.add_events() = std::move(e);
  resp.set_next_page_token(absl::StrCat(page.next_after));
  resp.set_more(page.more);
  return resp;
}

}  // namespace

void Service::ListEvents(const auth::Caller& caller, const v1::ListEventsRequest& req,
                         Reply<v1::ListEventsResponse> done) {
  if (req.page_size() < 0 || req.page_size() > 1000) {
    return done(
        Bad("page_size", absl::StrCat("must be 0 (default 100) to 1000, got ", req.page_size())));
  }
  int64_t after = 0;
  if (!req.page_token().empty() && (!absl::SimpleAtoi(req.page_token(), &after) || after < 0)) {
    return done(Bad("page_token", absl::StrCat("'", req.page_token().substr(0, 40),
                                               "' is not a token from a listing")));
  }
  if (req.since_unix_ms() < 0) {
    return done(Bad("since_unix_ms", absl::StrCat("must be >= 0, got ", req.since_unix_ms())));
  }
  if (req.wait_ms() < 0 || req.wait_ms() > kMaxWaitMs) {
    return done(Bad("wait_ms", absl::StrCat("must be 0 to ", kMaxWaitMs, ", got ", req.wait_ms())));
  }
  if (!req.pool().empty() && !core::internal::ValidName(req.pool())) {
    return done(Bad("pool", "a pool name is 1 to 64 characters of [A-Za-z0-9_.-]"));
  }
  store::EventQuery q;
  if (!req.type().empty()) {
    for (absl::string_view t : absl::StrSplit(req.type(), ',')) {
      if (!ValidEventType(t)) {
        return done(Bad("type", absl::StrCat("'", t.substr(0, 64),
                                             "' is not an event type or subject (task, "
                                             "task.dead, agent.breaker: [a-z_] with one dot)")));
      }
      q.types.emplace_back(t);
    }
    if (q.types.size() > kMaxTypes) {
      return done(Bad("type", absl::StrCat(q.types.size(), " types; at most ", kMaxTypes)));
    }
  }
  auto tenant = NarrowTenant(caller, auth::kRead, req.tenant());
  if (!tenant.ok()) return done(tenant.status());
  q.after_seq = after;
  q.since_unix_ms = req.since_unix_ms();
  q.task_id = req.task_id();
  q.workflow_id = req.workflow_id();
  q.pool = req.pool();
  q.tenant = *tenant;
  q.limit = req.page_size() == 0 ? 100 : req.page_size();
  const absl::Time deadline = absl::Now() + absl::Milliseconds(req.wait_ms());
  auto shared = std::make_shared<Reply<v1::ListEventsResponse>>(std::move(done));
  obs::EventHub* hub = events_;

  // An empty page: wait in the hub when asked to, else answer it.
  auto finish = [shared, hub, deadline](store::EventQuery q, obs::EventHub::Page page) {
    if (!page.events.empty() || hub == nullptr || absl::Now() >= deadline) {
      return (*shared)(ToResponse(std::move(page)));
    }
    q.after_seq = page.next_after;
    absl::Status st = hub->Wait(
        q, deadline, [shared](obs::EventHub::Page p) { (*shared)(ToResponse(std::move(p))); });
    if (!st.ok()) (*shared)(st);
  };
  if (hub != nullptr) {
    if (const int64_t last = hub->last_seq(); after > last) {
      return (*shared)(Bad("page_token", absl::StrCat(after, " is past the end of this log (", last,
                                                      "): a token from another server?")));
    }
    if (std::optional<obs::EventHub::Page> page = hub->Query(q)) {
      return finish(q, std::move(*page));
    }
  }
  // Older than the hub holds: read the store, on the store thread.
  store::Store& store = store_;
  const bool queued = runtime_.Post([q, &store, hub, finish, shared](core::Engine&, Batch& batch) {
    batch.AfterCommit([q, &store, hub, finish, shared](const absl::Status& st) {
      if (!st.ok()) return (*shared)(st);
      obs::EventHub::Page page;
      absl::Status read = store.ReadEvents(q, [&](store::EventRow&& row) {
        v1::Event& e = page.events.emplace_back();
        if (!e.ParseFromString(row.blob)) {
          e.Clear();
          e.set_type(row.type);
          e.set_message("(event unreadable)");
        }
        e.set_seq(row.seq);
      });
      if (!read.ok()) return (*shared)(read);
      page.more = static_cast<int64_t>(page.events.size()) == q.limit;
      // Every event up to the hub's last is committed (it publishes before this runs):
      // a short page looked through all of them.
      int64_t looked = page.events.empty() ? q.after_seq : page.events.back().seq();
      if (!page.more && hub != nullptr) looked = std::max(looked, hub->last_seq());
      page.next_after = looked;
      finish(q, std::move(page));
    });
  });
  if (!queued) (*shared)(internal::Refused(runtime_));
}

}  // namespace drover::api
