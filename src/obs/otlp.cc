#include "obs/otlp.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"

namespace drover::obs {
namespace {

constexpr int kInternal = 1, kProducer = 4, kConsumer = 5;
constexpr int kStatusOk = 1, kStatusError = 2;

int64_t Nanos(int64_t unix_ms) { return unix_ms * 1'000'000; }

Span::Attr Str(std::string key, std::string v) {
  Span::Attr a;
  a.key = std::move(key);
  a.string_value = std::move(v);
  return a;
}
Span::Attr Int(std::string key, int64_t v) {
  Span::Attr a;
  a.key = std::move(key);
  a.int_value = v;
  a.is_int = true;
  return a;
}

// Appends `s` as a JSON string: quotes, backslashes and control characters escaped, valid
// UTF-8 kept, any other byte replaced by U+FFFD (agents' errors are arbitrary bytes).
void AppendJsonString(std::string& out, const std::string& s) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
    } else if (c < 0x20) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 15];
      ++i;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
    } else {
      const int n = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
      bool ok = n > 0 && i + n <= s.size() && c < 0xf5;
      for (int k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80;
      if (ok) {
        out.append(s, i, static_cast<size_t>(n));
        i += static_cast<size_t>(n);
      } else {
        out += "\xef\xbf\xbd";
        ++i;
      }
    }
  }
  out += '"';
}

void AppendAttributes(std::string& out, const std::vector<Span::Attr>& attrs) {
  out += "[";
  for (size_t i = 0; i < attrs.size(); ++i) {
    if (i > 0) out += ",";
    out += "{\"key\":";
    AppendJsonString(out, attrs[i].key);
    if (attrs[i].is_int) {
      // OTLP/JSON: 64-bit integers as decimal strings.
      absl::StrAppend(&out, ",\"value\":{\"intValue\":\"", attrs[i].int_value, "\"}}");
    } else {
      out += ",\"value\":{\"stringValue\":";
      AppendJsonString(out, attrs[i].string_value);
      out += "}}";
    }
  }
  out += "]";
}

}  // namespace

bool Sampled(const v1::Task& task, double ratio) {
  if (!task.spec().traceparent().empty()) {
    if (std::optional<TraceContext> c = ParseTraceparent(task.spec().traceparent())) {
      return (c->flags & 1) != 0;  // the submitter decided
    }
  }
  if (ratio >= 1) return true;
  if (ratio <= 0) return false;
  const TraceId id = TaskTraceId(task);
  uint64_t low = 0;
  for (int i = 8; i < 16; ++i) low = low << 8 | id[i];
  return static_cast<double>(low >> 11) < ratio * static_cast<double>(uint64_t{1} << 53);
}

std::vector<Span> TaskSpans(const v1::Task& task) {
  std::vector<Span> spans;
  const TraceId trace = TaskTraceId(task);
  const v1::TaskSpec& spec = task.spec();
  Span submit;
  submit.trace_id = trace;
  submit.span_id = TaskSpanId(trace, task.id(), 0, SpanKind::kSubmit);
  if (std::optional<TraceContext> c = ParseTraceparent(spec.traceparent())) {
    submit.parent_span_id = c->span_id;
  }
  submit.name = "submit " + spec.type();
  submit.kind = kProducer;
  submit.start_unix_nano = submit.end_unix_nano = Nanos(task.created_unix_ms());
  submit.attributes = {Int("drover.task.id", static_cast<int64_t>(task.id())),
                       Str("drover.task.type", spec.type()), Str("drover.tenant", spec.tenant()),
                       Int("drover.priority", static_cast<int64_t>(spec.priority())),
                       Int("drover.task.state", static_cast<int64_t>(task.state()))};
  if (task.workflow_id() != 0) {
    submit.attributes.push_back(
        Int("drover.workflow.id", static_cast<int64_t>(task.workflow_id())));
  }
  if (!task.reason().empty()) submit.attributes.push_back(Str("drover.reason", task.reason()));
  spans.push_back(submit);

  auto queued = [&](int attempt, int64_t from_ms, int64_t to_ms) {
    Span q;
    q.trace_id = trace;
    q.span_id = TaskSpanId(trace, task.id(), attempt, SpanKind::kQueue);
    q.parent_span_id = submit.span_id;
    q.name = "queued " + spec.type();
    q.kind = kInternal;
    q.start_unix_nano = Nanos(from_ms);
    q.end_unix_nano = Nanos(std::max(from_ms, to_ms));
    q.attributes = {Int("drover.task.id", static_cast<int64_t>(task.id())),
                    Int("drover.attempt", attempt)};
    spans.push_back(std::move(q));
  };
  int64_t ready_since = task.created_unix_ms();
  for (const v1::Attempt& a : task.history()) {
    queued(a.number(), ready_since, a.started_unix_ms());
    Span run;
    run.trace_id = trace;
    run.span_id = TaskSpanId(trace, task.id(), a.number(), SpanKind::kAttempt);
    run.parent_span_id = submit.span_id;
    run.name = "run " + spec.type();
    run.kind = kConsumer;
    const int64_t end = a.ended_unix_ms() > 0 ? a.ended_unix_ms() : task.updated_unix_ms();
    run.start_unix_nano = Nanos(a.started_unix_ms());
    run.end_unix_nano = Nanos(std::max(end, a.started_unix_ms()));
    run.attributes = {Int("drover.task.id", static_cast<int64_t>(task.id())),
                      Int("drover.attempt", a.number()),
                      Int("drover.agent.id", static_cast<int64_t>(a.agent_id())),
                      Str("drover.outcome", a.outcome())};
    if (!a.error().empty()) run.attributes.push_back(Str("drover.error", a.error()));
    if (a.outcome() == "succeeded") {
      run.status_code = kStatusOk;
    } else {
      run.status_code = kStatusError;
      run.status_message = a.error().empty() ? a.outcome() : a.error();
    }
    run.links.emplace_back(trace, submit.span_id);
    spans.push_back(std::move(run));
    ready_since = end;
  }
  // Ended while waiting (canceled, expired, dead before a new attempt): the last wait.
  if (task.history().empty() ||
      (task.state() != v1::TASK_STATE_SUCCEEDED && task.finished_unix_ms() > ready_since)) {
    if (task.finished_unix_ms() > 0) {
      queued(task.history_size() + 1, ready_since, task.finished_unix_ms());
    }
  }
  return spans;
}

std::string EncodeOtlpJson(const std::vector<Span>& spans, const std::string& service_name) {
  std::string out;
  out.reserve(256 + spans.size() * 400);
  out += "{\"resourceSpans\":[{\"resource\":{\"attributes\":";
  AppendAttributes(out, {Str("service.name", service_name)});
  out += "},\"scopeSpans\":[{\"scope\":{\"name\":\"drover\"},\"spans\":[";
  for (size_t i = 0; i < spans.size(); ++i) {
    const Span& s = spans[i];
    if (i > 0) out += ",";
    absl::StrAppend(&out, "{\"traceId\":\"", Hex(s.trace_id), "\",\"spanId\":\"", Hex(s.span_id),
                    "\"");
    if (std::any_of(s.parent_span_id.begin(), s.parent_span_id.end(),
                    [](uint8_t b) { return b != 0; })) {
      absl::StrAppend(&out, ",\"parentSpanId\":\"", Hex(s.parent_span_id), "\"");
    }
    out += ",\"name\":";
    AppendJsonString(out, s.name);
    absl::StrAppend(&out, ",\"kind\":", s.kind, ",\"startTimeUnixNano\":\"", s.start_unix_nano,
                    "\",\"endTimeUnixNano\":\"", s.end_unix_nano, "\",\"attributes\":");
    AppendAttributes(out, s.attributes);
    if (!s.links.empty()) {
      out += ",\"links\":[";
      for (size_t l = 0; l < s.links.size(); ++l) {
        if (l > 0) out += ",";
        absl::StrAppend(&out, "{\"traceId\":\"", Hex(s.links[l].first), "\",\"spanId\":\"",
                        Hex(s.links[l].second), "\"}");
      }
      out += "]";
    }
    if (s.status_code != 0) {
      absl::StrAppend(&out, ",\"status\":{\"code\":", s.status_code);
      if (!s.status_message.empty()) {
        out += ",\"message\":";
        AppendJsonString(out, s.status_message);
      }
      out += "}";
    }
    out += "}";
  }
  out += "]}]}]}";
  return out;
}

absl::StatusOr<Endpoint> ParseOtlpEndpoint(const std::string& url, const std::string& field) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": '", url.substr(0, 100), "' ", why,
                     " (expected http://host:port, e.g. http://127.0.0.1:4318)"));
  };
  const std::string kScheme = "http://";
  if (url.rfind(kScheme, 0) != 0) {
    return bad(url.rfind("https://", 0) == 0 ? "uses https, which is not supported yet"
                                             : "is not an http:// URL");
  }
  std::string rest = url.substr(kScheme.size());
  Endpoint e;
  const size_t slash = rest.find('/');
  if (slash != std::string::npos) {
    e.path = rest.substr(slash);
    rest = rest.substr(0, slash);
    while (!e.path.empty() && e.path.back() == '/') e.path.pop_back();
  }
  const size_t colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad("has no host:port");
  e.host = rest.substr(0, colon);
  if (e.host.size() >= 2 && e.host.front() == '[' && e.host.back() == ']') {
    e.host = e.host.substr(1, e.host.size() - 2);
  }
  if (!absl::SimpleAtoi(rest.substr(colon + 1), &e.port) || e.port < 1 || e.port > 65535) {
    return bad("has no port from 1 to 65535");
  }
  return e;
}

OtlpExporter::OtlpExporter(OtlpOptions options) : options_(std::move(options)) {}

OtlpExporter::~OtlpExporter() { Stop(); }

absl::Status OtlpExporter::Start() {
  auto e = ParseOtlpEndpoint(options_.endpoint, "tracing.endpoint");
  if (!e.ok()) return e.status();
  endpoint_ = *e;
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void OtlpExporter::Stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void OtlpExporter::Offer(std::vector<Span> spans) {
  if (spans.empty()) return;
  {
    std::lock_guard<std::mutex> lk(mu_);
    const size_t room = options_.max_queue > queue_.size() ? options_.max_queue - queue_.size() : 0;
    const size_t take = std::min(room, spans.size());
    stats_.dropped_queue_full += static_cast<int64_t>(spans.size() - take);
    for (size_t i = 0; i < take; ++i) queue_.push_back(std::move(spans[i]));
    if (queue_.size() < options_.max_batch) return;  // the timer sends it
  }
  cv_.notify_one();
}

OtlpStats OtlpExporter::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

void OtlpExporter::Loop() {
  std::vector<Span> batch;
  std::unique_lock<std::mutex> lk(mu_);
  while (true) {
    cv_.wait_for(lk, absl::ToChronoMilliseconds(options_.flush_interval),
                 [&] { return stopping_ || queue_.size() >= options_.max_batch; });
    // At shutdown one last round sends what waits.
    const bool last = stopping_;
    while (!queue_.empty()) {
      batch.clear();
      const size_t n = std::min(options_.max_batch, queue_.size());
      for (size_t i = 0; i < n; ++i) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      lk.unlock();
      const bool ok = Send(batch);
      lk.lock();
      if (ok) {
        stats_.exported += static_cast<int64_t>(batch.size());
      } else {
        stats_.requests_failed++;
        stats_.dropped_export_failed += static_cast<int64_t>(batch.size());
        if (last) {  // the receiver is down: do not try each batch at shutdown
          stats_.dropped_export_failed += static_cast<int64_t>(queue_.size());
          queue_.clear();
        }
      }
      if (!last && queue_.size() < options_.max_batch) break;  // wait for more or the timer
    }
    if (last) return;
  }
}

bool OtlpExporter::Send(const std::vector<Span>& batch) {
  httplib::Client client(endpoint_.host, endpoint_.port);
  const auto t = absl::ToChronoMicroseconds(options_.timeout);
  client.set_connection_timeout(t);
  client.set_read_timeout(t);
  client.set_write_timeout(t);
  client.set_tcp_nodelay(true);
  const std::string body = EncodeOtlpJson(batch, options_.service_name);
  auto res = client.Post((endpoint_.path + "/v1/traces").c_str(), body, "application/json");
  return res && res->status >= 200 && res->status < 300;
}

}  // namespace drover::obs
