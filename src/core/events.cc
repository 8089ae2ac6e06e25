// The engine's part of the event log (docs/events.md): what it did, as v1::Event records in
// the outbox. The runtime gives them their seq, writes them with the batch and publishes
// them once durable.

#include <array>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/engine.h"

namespace drover::core {
namespace {

// "task.<state>" for each task state, built once: the hot path copies a string.
const std::array<std::string, 9>& TaskEventTypes() {
  static const std::array<std::string, 9> types = [] {
    std::array<std::string, 9> t;
    for (int s = 0; s < 9; ++s) t[s] = "task." + StateName(static_cast<v1::TaskState>(s));
    return t;
  }();
  return types;
}

bool Notable(v1::TaskState from, v1::TaskState to) {
  switch (to) {
    case v1::TASK_STATE_RETRY_WAIT:
    case v1::TASK_STATE_DEAD:
    case v1::TASK_STATE_CANCELED:
    case v1::TASK_STATE_EXPIRED:
      return true;
    case v1::TASK_STATE_READY:
      // Back in the queue from an agent (a lost lease, a preemption, a restart) or out of
      // the dead-letter queue; not the first READY nor the end of a backoff.
      return from == v1::TASK_STATE_LEASED || from == v1::TASK_STATE_DEAD;
    default:
      return false;
  }
}

// The refusal's kind, for grouping: the text before the first ':' of the message.
std::string RefusalKind(const absl::Status& st) {
  const absl::string_view m = st.message();
  const size_t colon = m.find(':');
  return std::string(colon == absl::string_view::npos || colon > 40 ? m.substr(0, 40)
                                                                    : m.substr(0, colon));
}

}  // namespace

v1::Event& Engine::Emit(const char* type) {
  v1::Event& e = outbox_.events.emplace_back();
  e.set_unix_ms(now_ms());
  e.set_type(type);
  return e;
}

void Engine::TaskEvent(const Entry& e, v1::TaskState from) {
  const v1::Task& t = e.task;
  const v1::TaskState to = t.state();
  if (options_.task_events != TaskEvents::kAll && !Notable(from, to)) return;
  const int to_index = static_cast<int>(to);
  if (to_index < 0 || to_index >= 9) return;
  v1::Event& ev = outbox_.events.emplace_back();
  ev.set_unix_ms(now_ms());
  ev.set_type(TaskEventTypes()[to_index]);
  ev.set_tenant(t.spec().tenant());
  ev.set_task_id(t.id());
  ev.set_workflow_id(t.workflow_id());
  ev.set_agent_id(t.agent_id());
  auto& attrs = *ev.mutable_attrs();
  if (from == v1::TASK_STATE_UNSPECIFIED) {
    ev.set_message("submitted");
  } else {
    attrs["from"] = StateName(from);
  }
  attrs["type"] = t.spec().type();
  if (t.attempts() > 0) attrs["attempts"] = absl::StrCat(t.attempts());
  if (IsTerminal(to)) {
    ev.set_message(t.reason());
  } else if (from == v1::TASK_STATE_DEAD) {
    ev.set_message("reprocessed from the dead-letter queue");
  } else if (t.history_size() > 0 &&
             (to == v1::TASK_STATE_RETRY_WAIT ||
              (to == v1::TASK_STATE_READY && from == v1::TASK_STATE_LEASED))) {
    const v1::Attempt& a = t.history(t.history_size() - 1);
    ev.set_message(a.error().empty() ? a.outcome() : absl::StrCat(a.outcome(), ": ", a.error()));
    if (a.agent_id() != 0) ev.set_agent_id(a.agent_id());
    if (to == v1::TASK_STATE_RETRY_WAIT) {
      attrs["retry_at_unix_ms"] = absl::StrCat(t.not_before_unix_ms());
    }
  }
}

void Engine::AgentEvent(const AgentInfo& agent, const char* type, const std::string& message) {
  v1::Event& ev = Emit(type);
  ev.set_agent_id(agent.id);
  ev.set_message(message);
  if (auto it = agent.labels.find(kPoolAgentLabel); it != agent.labels.end()) {
    ev.set_pool(it->second);
  }
  if (!agent.name.empty()) (*ev.mutable_attrs())["name"] = agent.name;
}

void Engine::WorkflowEvent(const v1::Workflow& w, v1::WorkflowState from) {
  std::string type = from == v1::WORKFLOW_STATE_UNSPECIFIED
                         ? "workflow.submitted"
                         : "workflow." + WorkflowStateName(w.state());
  v1::Event& ev = outbox_.events.emplace_back();
  ev.set_unix_ms(now_ms());
  ev.set_type(std::move(type));
  ev.set_tenant(w.tenant());
  ev.set_workflow_id(w.id());
  if (!w.name().empty()) (*ev.mutable_attrs())["name"] = w.name();
  if (from == v1::WORKFLOW_STATE_UNSPECIFIED) {
    ev.set_message(absl::StrCat(w.total(), " tasks"));
  } else {
    (*ev.mutable_attrs())["from"] = WorkflowStateName(from);
    ev.set_message(absl::StrCat(w.succeeded(), " of ", w.total(), " tasks succeeded"));
  }
}

void Engine::NoteRefusal(const absl::Status& st, const std::string& tenant, size_t n) {
  if (!absl::IsResourceExhausted(st)) return;  // only admission refusals, not bad input
  if (refusals_.empty()) refusals_since_ = now();
  RefusalCount& c = refusals_[{RefusalKind(st), tenant.empty() ? "default" : tenant}];
  c.calls++;
  c.tasks += static_cast<int64_t>(n);
  c.last_message = std::string(st.message().substr(0, 300));
}

void Engine::FlushRefusals(bool force) {
  if (refusals_.empty() || (!force && now() < refusals_since_ + kRefusalWindow)) return;
  const int64_t window_ms = ToUnixMs(now()) - ToUnixMs(refusals_since_);
  for (const auto& [key, c] : refusals_) {
    v1::Event& ev = Emit("admission.refused");
    ev.set_tenant(key.second);
    ev.set_message(c.calls == 1 ? c.last_message
                                : absl::StrCat(c.calls, " calls (", c.tasks,
                                               " tasks) refused; the last: ", c.last_message));
    auto& attrs = *ev.mutable_attrs();
    attrs["reason"] = key.first;
    attrs["calls"] = absl::StrCat(c.calls);
    attrs["tasks"] = absl::StrCat(c.tasks);
    attrs["window_ms"] = absl::StrCat(window_ms);
  }
  refusals_.clear();
}

}  // namespace drover::core
