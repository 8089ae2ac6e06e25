// obs/trace: W3C trace context for tasks (docs/tracing.md).
//
// A task's life is one trace. Its trace id comes from the submitter — the task's
// `traceparent` field, or the call's traceparent header (gRPC metadata or HTTP) when the
// field is empty — or, without one, is derived from the task's id and creation time. Span
// ids are derived from (trace, task, attempt, kind), so retries and restarts never fork the
// trace: attempt 2's span is the same whichever server runs it. Each attempt's agent gets
// the trace and its attempt's span as TRACEPARENT (the lease's `traceparent`), so the
// agent's own spans join the trace as children of the attempt.
//
// Pure functions; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "drover/v1/drover.pb.h"

namespace drover::obs {

using TraceId = std::array<uint8_t, 16>;
using SpanId = std::array<uint8_t, 8>;

struct TraceContext {
  TraceId trace_id{};
  SpanId span_id{};
  uint8_t flags = 1;  // bit 0: sampled
};

// A traceparent header or field: "00-<32 hex>-<16 hex>-<2 hex>", lowercase. nullopt when
// malformed, when the trace or span id is all zeros, or for version ff. A later version
// is read by its first four fields (W3C's rule for forward compatibility).
std::optional<TraceContext> ParseTraceparent(absl::string_view s);
std::string FormatTraceparent(const TraceContext& c);
std::string Hex(const TraceId& id);
std::string Hex(const SpanId& id);

// The spans of a task's trace.
enum class SpanKind : uint8_t { kSubmit = 1, kQueue = 2, kAttempt = 3 };

// The task's trace id: its traceparent's, else derived from its id and creation time.
TraceId TaskTraceId(const v1::Task& task);
// A span of the task's trace: never all zeros; the same for the same inputs.
SpanId TaskSpanId(const TraceId& trace, uint64_t task_id, int attempt, SpanKind kind);
// What attempt `attempt` of `task` is handed as TRACEPARENT: the task's trace, that
// attempt's span, the submitter's sampled flag (sampled when it gave none).
std::string AttemptTraceparent(const v1::Task& task, int attempt);

// Fills the traceparent of each task a submission names without one, from the call's
// traceparent `header` when it is valid (a malformed or all-zero one is ignored). Returns
// whether it changed anything.
bool ApplyTraceparent(absl::string_view header, v1::SubmitTaskRequest* req);
bool ApplyTraceparent(absl::string_view header, v1::SubmitTasksRequest* req);

}  // namespace drover::obs
