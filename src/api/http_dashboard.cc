// The dashboard's routes (docs/dashboard.md): its embedded assets (with the page paths
// answered by index.html, so every page has a URL of its own), sign-in with a session
// cookie, and the push stream of "this changed" notices (Server-Sent Events).
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "api/http_decode.h"
#include "api/http_internal.h"
#include "api/status_map.h"
#include "auth/access.h"
#include "web/assets.h"

namespace drover::api {

using namespace http;

struct HttpServer::Streams {
  explicit Streams(int max) : max(max) {}
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  int active = 0;
  const int max;
};

namespace {

constexpr const char* kSecurityPolicy =
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'";

// A file of the dashboard: /assets/* by name (immutable: the names carry a content hash),
// every page path by index.html (revalidated each time).
void ServeAsset(const httplib::Request& req, httplib::Response& res) {
  const bool is_asset = req.path.starts_with("/assets/");
  const web::Asset* a = web::FindAsset(is_asset ? std::string_view(req.path) : "/index.html");
  if (a == nullptr) {
    return WriteError(
        res, absl::NotFoundError(absl::StrCat("path: the dashboard has no file ", req.path)));
  }
  res.set_header("ETag", std::string(a->etag));
  res.set_header("Cache-Control", is_asset ? "public, max-age=31536000, immutable" : "no-cache");
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("Referrer-Policy", "no-referrer");
  if (!is_asset) {
    res.set_header("Content-Security-Policy", kSecurityPolicy);
    res.set_header("X-Frame-Options", "DENY");
  }
  if (req.get_header_value("If-None-Match") == a->etag) {
    res.status = 304;
    return;
  }
  const bool gzip =
      !a->gzip.empty() && absl::StrContains(req.get_header_value("Accept-Encoding"), "gzip");
  if (gzip) {
    res.set_header("Content-Encoding", "gzip");
    res.set_header("Vary", "Accept-Encoding");
  }
  const std::string_view body = gzip ? a->gzip : a->data;
  res.set_content(body.data(), body.size(), std::string(a->content_type).c_str());
}

bool TokenChars(const std::string& t) {
  return std::all_of(t.begin(), t.end(), [](unsigned char c) {
    return absl::ascii_isalnum(c) || c == '_' || c == '-' || c == '.';
  });
}

std::string Cookie(absl::string_view value, int64_t max_age_s, bool secure) {
  return absl::StrCat(kSessionCookie, "=", value,
                      "; Path=/; HttpOnly; SameSite=Strict; Max-Age=", max_age_s,
                      secure ? "; Secure" : "");
}

// Which kinds of object an event says changed.
void EventTopics(absl::string_view type, std::set<std::string>* topics) {
  topics->insert("events");
  if (absl::StartsWith(type, "task.")) {
    topics->insert("tasks");
    topics->insert("stats");
    if (absl::StrContains(type, "dead") || absl::StrContains(type, "reprocess") ||
        absl::StrContains(type, "purge")) {
      topics->insert("dlq");
    }
  } else if (absl::StartsWith(type, "workflow.")) {
    topics->insert("workflows");
  } else if (absl::StartsWith(type, "agent.")) {
    topics->insert("agents");
  } else if (absl::StartsWith(type, "pool.") || absl::StartsWith(type, "config.")) {
    topics->insert("pools");
  } else {
    topics->insert("stats");
  }
}

// One follower of the push stream: what it saw last, to say what changed since.
struct Follower {
  auth::Caller caller;
  Service* svc = nullptr;
  absl::Duration interval;
  bool can_stats = false;
  bool hello_sent = false;
  bool events_ok = true;  // false once the caller cannot read events unnarrowed
  std::string page_token;
  int64_t since_ms = 0;
  std::string last_stats;  // the figures that tell tasks, dead letters and agents changed
  std::string last_dead, last_agents;
  int64_t seq = 0;
  absl::Time last_write = absl::Now();
  absl::Time until = absl::InfiniteFuture();  // max_ms: the stream ends then

  // The topics that changed since the previous call.
  std::set<std::string> Changes() {
    std::set<std::string> topics;
    if (events_ok) {
      for (int page = 0; page < 10; ++page) {
        v1::ListEventsRequest r;
        r.set_page_size(1000);
        if (page_token.empty()) {
          r.set_since_unix_ms(since_ms);
        } else {
          r.set_page_token(page_token);
        }
        auto got = Await<v1::ListEventsResponse>([&](Reply<v1::ListEventsResponse> done) {
          svc->ListEvents(caller, r, std::move(done));
        });
        if (!got.ok()) {
          // A principal of several tenants and not "*" must name one: follow the figures
          // only.
          if (got.status().code() == absl::StatusCode::kInvalidArgument) events_ok = false;
          break;
        }
        for (const v1::Event& e : got->events()) EventTopics(e.type(), &topics);
        page_token = got->next_page_token();
        if (!got->more()) break;
        if (page == 9) {
          // Far behind (a flood of events): everything may have changed; go on from now.
          page_token.clear();
          since_ms = absl::ToUnixMillis(absl::Now());
          for (const char* t : {"tasks", "workflows", "agents", "pools", "dlq", "stats"}) {
            topics.insert(t);
          }
        }
      }
    }
    if (can_stats) {
      auto s = Await<v1::StatsResponse>(
          [&](Reply<v1::StatsResponse> done) { svc->Stats(caller, std::move(done)); });
      if (s.ok()) {
        std::string figures =
            absl::StrCat(s->submitted_total(), ",", s->succeeded_total(), ",", s->retries_total(),
                         ",", s->rejected_total(), ",", s->leases_expired_total());
        for (const auto& [state, n] : s->tasks_by_state()) {
          absl::StrAppend(&figures, ",", state, "=", n);
        }
        const std::string dead =
            absl::StrCat(s->dead_lettered_total(), ",",
                         s->tasks_by_state().count("dead") ? s->tasks_by_state().at("dead") : 0);
        const std::string agents =
            absl::StrCat(s->agents(), ",", s->agent_slots(), ",", s->agent_slots_busy());
        if (figures != last_stats) {
          topics.insert("tasks");
          topics.insert("stats");
        }
        if (dead != last_dead) topics.insert("dlq");
        if (agents != last_agents) {
          topics.insert("agents");
          topics.insert("stats");
        }
        last_stats = figures;
        last_dead = dead;
        last_agents = agents;
      }
    }
    return topics;
  }
};

}  // namespace

void HttpServer::DashboardRoutes() {
  Service* svc = &service_;
  const bool secure = tls_ != nullptr;
  auto asset = [](const httplib::Request& req, httplib::Response& res, const Admit& admit) {
    (void)admit(nullptr);  // public: the assets carry no data
    ServeAsset(req, res);
  };
  Add("GET", "/", asset);
  Add("GET", "/assets/(.+)", asset);
  Add("GET", R"(/(tasks|workflows|pools|dlq|resources|events|signin)(/[^/]*)?)", asset);

  Add("POST", "/v1/session",
      [svc, secure](const httplib::Request& req, httplib::Response& res, const Admit& admit) {
        v1::SignInRequest r;
        if (absl::Status st = ParseBody(req, &r); !st.ok()) {
          admit.Open();
          return WriteError(res, st);
        }
        // The token in the body; without one, the call's own credential (a bearer header,
        // or the session cookie being renewed).
        std::string token = r.token();
        if (token.empty()) {
          token = std::string(BearerToken(req.get_header_value("Authorization")));
          if (token.empty()) token = SessionFromCookies(req.get_header_value("Cookie"));
        }
        if (token.size() > 512 || !TokenChars(token)) {
          admit.Open();
          return WriteError(res, absl::InvalidArgumentError(
                                     "token: not a drover token (letters, digits, '_', '-' "
                                     "and '.', at most 512)"));
        }
        auto caller = token.empty() ? admit(nullptr) : admit.WithToken(token);
        if (!caller.ok()) return WriteError(res, caller.status());
        auto who = Await<v1::WhoAmIResponse>([&](Reply<v1::WhoAmIResponse> done) {
          svc->WhoAmI(*caller, v1::WhoAmIRequest(), std::move(done));
        });
        if (!who.ok()) return WriteError(res, who.status());
        // The session lasts 12 hours, or until the token expires if that comes first.
        int64_t max_age = 12 * 3600;
        if (who->expires_unix_ms() > 0) {
          max_age = std::clamp<int64_t>(
              (who->expires_unix_ms() - absl::ToUnixMillis(absl::Now())) / 1000, 0, max_age);
        }
        if (!token.empty()) res.set_header("Set-Cookie", Cookie(token, max_age, secure));
        res.set_header("Cache-Control", "no-store");
        WriteMessage(res, *who);
      });
  Add("POST", "/v1/session:end",
      [secure](const httplib::Request&, httplib::Response& res, const Admit& admit) {
        (void)admit(nullptr);  // public: it only clears the browser's cookie
        res.set_header("Set-Cookie", Cookie("", 0, secure));
        res.set_content("{}\n", "application/json");
      });

  std::shared_ptr<Streams> streams = streams_;
  Add("GET", "/v1/stream",
      [svc, streams](const httplib::Request& req, httplib::Response& res, const Admit& admit) {
        auto caller = admit(nullptr);
        if (!caller.ok()) return WriteError(res, caller.status());
        int64_t interval_ms = 1000;
        if (absl::Status st = ParseIntParam(req, "interval_ms", &interval_ms); !st.ok()) {
          return WriteError(res, st);
        }
        if (!req.has_param("interval_ms")) interval_ms = 1000;
        int64_t max_ms = 0;
        if (absl::Status st = ParseIntParam(req, "max_ms", &max_ms); !st.ok()) {
          return WriteError(res, st);
        }
        if (max_ms < 0) {
          return WriteError(res, absl::InvalidArgumentError(absl::StrCat(
                                     "max_ms: must be >= 0 (0 follows until the client leaves), "
                                     "got ",
                                     max_ms)));
        }
        if (interval_ms < 250 || interval_ms > 10'000) {
          return WriteError(res, absl::InvalidArgumentError(absl::StrCat(
                                     "interval_ms: must be 250 to 10000, got ", interval_ms)));
        }
        {
          std::lock_guard<std::mutex> lk(streams->mu);
          if (streams->stopping || streams->active >= streams->max) {
            WriteError(res, absl::UnavailableError(absl::StrCat(
                                "stream: ", streams->max,
                                " followers already (the server's limit); poll the API, or "
                                "try again later")));
            res.set_header("Retry-After", "10");
            return;
          }
          ++streams->active;
        }
        auto f = std::make_shared<Follower>();
        f->caller = *caller;
        f->svc = svc;
        f->interval = absl::Milliseconds(interval_ms);
        f->since_ms = absl::ToUnixMillis(absl::Now());
        if (max_ms > 0) f->until = absl::Now() + absl::Milliseconds(max_ms);
        const auth::Rule* stats_rule = auth::FindRule("drover.v1.AdminService/Stats");
        f->can_stats = stats_rule != nullptr && auth::Check(*caller, *stats_rule, nullptr).ok();
        (void)f->Changes();  // the baseline: the next notice says what changed after it
        res.set_header("Cache-Control", "no-store");
        res.set_header("X-Accel-Buffering", "no");
        res.set_chunked_content_provider(
            "text/event-stream",
            [f, streams](size_t, httplib::DataSink& sink) {
              if (!f->hello_sent) {
                f->hello_sent = true;
                const std::string hello =
                    absl::StrCat("retry: 3000\nevent: hello\ndata: {\"interval_ms\":",
                                 absl::ToInt64Milliseconds(f->interval), "}\n\n");
                return sink.write(hello.data(), hello.size());
              }
              if (absl::Now() >= f->until) {
                sink.done();
                return true;
              }
              {
                std::unique_lock<std::mutex> lk(streams->mu);
                streams->cv.wait_for(
                    lk, absl::ToChronoMilliseconds(std::min(f->interval, f->until - absl::Now())),
                    [&] { return streams->stopping; });
                if (streams->stopping) {
                  lk.unlock();
                  sink.done();
                  return true;
                }
              }
              if (!sink.is_writable()) return false;
              std::set<std::string> topics = f->Changes();
              std::string out;
              if (!topics.empty()) {
                ++f->seq;
                std::vector<std::string> quoted;
                for (const std::string& t : topics) quoted.push_back(absl::StrCat("\"", t, "\""));
                out = absl::StrCat("event: change\ndata: {\"topics\":[", absl::StrJoin(quoted, ","),
                                   "],\"seq\":\"", f->seq, "\"}\n\n");
              } else if (absl::Now() - f->last_write >= absl::Seconds(15)) {
                out = ": ping\n\n";  // keeps proxies from closing an idle stream
              }
              if (out.empty()) return true;
              f->last_write = absl::Now();
              return sink.write(out.data(), out.size());
            },
            [streams](bool) {
              std::lock_guard<std::mutex> lk(streams->mu);
              --streams->active;
            });
      });
}

void HttpServer::StopStreams() {
  if (!streams_) return;
  {
    std::lock_guard<std::mutex> lk(streams_->mu);
    streams_->stopping = true;
  }
  streams_->cv.notify_all();
}

std::shared_ptr<HttpServer::Streams> HttpServer::MakeStreams(int max) {
  return std::make_shared<Streams>(max);
}

}  // namespace drover::api
