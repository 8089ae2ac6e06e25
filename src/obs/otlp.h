// obs/otlp: drover's own spans of a task's trace (docs/tracing.md), exported over OTLP/HTTP
// with JSON (the OTLP/JSON encoding: ids as hex, enums as integers, 64-bit integers and
// times as decimal strings).
//
// TaskSpans turns a finished task's record into its spans: the submission (PRODUCER,
// child of the submitter's span), each wait in the queue (INTERNAL) and each attempt
// (CONSUMER: agent, outcome, error; a link to the submission), with the span ids of
// obs/trace.h — the attempt's is the one its agent got as TRACEPARENT.
//
// OtlpExporter sends them from a thread of its own, in batches, from a bounded queue: a
// producer never waits; when the queue is full or the receiver fails, spans are dropped and
// counted. Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "drover/v1/drover.pb.h"
#include "obs/trace.h"

namespace drover::obs {

struct Span {
  TraceId trace_id{};
  SpanId span_id{};
  SpanId parent_span_id{};  // all zeros: a root span
  std::string name;
  int kind = 1;  // OTLP SpanKind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer
  int64_t start_unix_nano = 0;
  int64_t end_unix_nano = 0;
  struct Attr {
    std::string key;
    std::string string_value;
    int64_t int_value = 0;
    bool is_int = false;
  };
  std::vector<Attr> attributes;
  int status_code = 0;  // 0 unset, 1 ok, 2 error
  std::string status_message;
  std::vector<std::pair<TraceId, SpanId>> links;
};

// Whether a task's trace is exported: the submitter's sampled flag when it gave one (a
// parent that is not sampled is not), else the trace id against `ratio` (0 to 1; the same
// answer for every task of a trace).
bool Sampled(const v1::Task& task, double ratio);

// The spans of a task that has ended (its attempts' history), in start order.
std::vector<Span> TaskSpans(const v1::Task& task);

// One ExportTraceServiceRequest in OTLP/JSON.
std::string EncodeOtlpJson(const std::vector<Span>& spans, const std::string& service_name);

struct OtlpOptions {
  std::string endpoint;  // "http://host:port" (the OTLP/HTTP base; /v1/traces is added)
  std::string service_name = "drover";
  size_t max_queue = 20'000;  // spans waiting; beyond it new ones are dropped
  size_t max_batch = 512;
  absl::Duration flush_interval = absl::Seconds(1);
  absl::Duration timeout = absl::Seconds(2);  // per export request
};

// "http://host:port[/path]" → host, port and base path; InvalidArgument naming `field`.
struct Endpoint {
  std::string host;
  int port = 0;
  std::string path;  // "" or "/prefix"
};
absl::StatusOr<Endpoint> ParseOtlpEndpoint(const std::string& url, const std::string& field);

struct OtlpStats {
  int64_t exported = 0;
  int64_t dropped_queue_full = 0;
  int64_t dropped_export_failed = 0;
  int64_t requests_failed = 0;
};

class OtlpExporter {
 public:
  // `options.endpoint` must parse (ParseOtlpEndpoint); Start begins sending.
  explicit OtlpExporter(OtlpOptions options);
  ~OtlpExporter();
  absl::Status Start();
  // Sends what is queued (up to the timeout of one request), then stops. Idempotent.
  void Stop();
  // Never blocks for long: spans beyond max_queue are dropped and counted.
  void Offer(std::vector<Span> spans);
  OtlpStats stats() const;

 private:
  void Loop();
  bool Send(const std::vector<Span>& batch);

  const OtlpOptions options_;
  Endpoint endpoint_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Span> queue_;
  bool stopping_ = false;
  OtlpStats stats_;
  std::thread thread_;
};

}  // namespace drover::obs
