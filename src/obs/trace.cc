#include "obs/trace.h"

#include <algorithm>

namespace drover::obs {
namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;  // uppercase is not valid in a traceparent
}

template <size_t N>
bool ParseHex(absl::string_view s, std::array<uint8_t, N>* out) {
  if (s.size() != 2 * N) return false;
  for (size_t i = 0; i < N; ++i) {
    const int hi = HexDigit(s[2 * i]), lo = HexDigit(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    (*out)[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

template <size_t N>
std::string ToHex(const std::array<uint8_t, N>& a) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s(2 * N, '0');
  for (size_t i = 0; i < N; ++i) {
    s[2 * i] = kDigits[a[i] >> 4];
    s[2 * i + 1] = kDigits[a[i] & 15];
  }
  return s;
}

template <size_t N>
bool AllZero(const std::array<uint8_t, N>& a) {
  return std::all_of(a.begin(), a.end(), [](uint8_t b) { return b == 0; });
}

// splitmix64: a fixed, well-mixed function of its input (ids, not secrets).
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

void Put(uint64_t v, uint8_t* out) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(v >> (56 - 8 * i));
}

uint64_t Get(const uint8_t* in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | in[i];
  return v;
}

bool Fill(absl::string_view header, google::protobuf::RepeatedPtrField<v1::TaskSpec>* tasks) {
  if (header.empty()) return false;
  std::optional<TraceContext> c = ParseTraceparent(header);
  if (!c) return false;
  const std::string value = FormatTraceparent(*c);
  bool changed = false;
  for (v1::TaskSpec& t : *tasks) {
    if (!t.traceparent().empty()) continue;
    t.set_traceparent(value);
    changed = true;
  }
  return changed;
}

}  // namespace

std::optional<TraceContext> ParseTraceparent(absl::string_view s) {
  // version "-" trace-id "-" parent-id "-" flags
  if (s.size() < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-') return std::nullopt;
  std::array<uint8_t, 1> version{}, flags{};
  if (!ParseHex(s.substr(0, 2), &version) || version[0] == 0xff) return std::nullopt;
  // Version 00 is exactly 55 characters; a later one may add fields after a '-'.
  if (version[0] == 0 ? s.size() != 55 : (s.size() > 55 && s[55] != '-')) return std::nullopt;
  TraceContext c;
  if (!ParseHex(s.substr(3, 32), &c.trace_id) || !ParseHex(s.substr(36, 16), &c.span_id) ||
      !ParseHex(s.substr(53, 2), &flags)) {
    return std::nullopt;
  }
  if (AllZero(c.trace_id) || AllZero(c.span_id)) return std::nullopt;
  c.flags = flags[0];
  return c;
}

std::string FormatTraceparent(const TraceContext& c) {
  const std::array<uint8_t, 1> flags{c.flags};
  return "00-" + ToHex(c.trace_id) + "-" + ToHex(c.span_id) + "-" + ToHex(flags);
}

std::string Hex(const TraceId& id) { return ToHex(id); }
std::string Hex(const SpanId& id) { return ToHex(id); }

TraceId TaskTraceId(const v1::Task& task) {
  if (!task.spec().traceparent().empty()) {
    if (std::optional<TraceContext> c = ParseTraceparent(task.spec().traceparent())) {
      return c->trace_id;
    }
  }
  TraceId id{};
  const uint64_t a = Mix(task.id() ^ 0x64726f7665720001ULL);  // "drover", 1
  const uint64_t b = Mix(a ^ static_cast<uint64_t>(task.created_unix_ms()));
  Put(a, id.data());
  Put(b | 1, id.data() + 8);  // never all zeros
  return id;
}

SpanId TaskSpanId(const TraceId& trace, uint64_t task_id, int attempt, SpanKind kind) {
  uint64_t h = Mix(Get(trace.data()) ^ Mix(Get(trace.data() + 8)));
  h = Mix(h ^ task_id);
  h = Mix(h ^ (static_cast<uint64_t>(static_cast<uint32_t>(attempt)) << 8 |
               static_cast<uint64_t>(kind)));
  if (h == 0) h = 1;
  SpanId id{};
  Put(h, id.data());
  return id;
}

std::string AttemptTraceparent(const v1::Task& task, int attempt) {
  TraceContext c;
  c.trace_id = TaskTraceId(task);
  c.span_id = TaskSpanId(c.trace_id, task.id(), attempt, SpanKind::kAttempt);
  c.flags = 1;
  if (!task.spec().traceparent().empty()) {
    if (std::optional<TraceContext> given = ParseTraceparent(task.spec().traceparent())) {
      c.flags = given->flags;
    }
  }
  return FormatTraceparent(c);
}

bool ApplyTraceparent(absl::string_view header, v1::SubmitTaskRequest* req) {
  if (header.empty() || !req->has_task() || !req->task().traceparent().empty()) return false;
  std::optional<TraceContext> c = ParseTraceparent(header);
  if (!c) return false;
  req->mutable_task()->set_traceparent(FormatTraceparent(*c));
  return true;
}

bool ApplyTraceparent(absl::string_view header, v1::SubmitTasksRequest* req) {
  return Fill(header, req->mutable_tasks());
}

}  // namespace drover::obs
