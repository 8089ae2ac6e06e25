// The engine's dependencies and workflows: WAITING tasks, edges between parents and
// children, the cascade when a parent fails, and workflow records with their progress.
//
// Rules (docs/workflows.md):
// - A task waits while any parent over a depends_on edge has not SUCCEEDED, or any parent
//   over a depends_on_finished edge has not ended (DEAD counts as ended).
// - A parent over a depends_on edge that ends any other way (DEAD, CANCELED, EXPIRED)
//   cancels its WAITING children, which cancels theirs, and so on.
// - Parents stay in memory while a child that may still run needs their result (a child
//   not yet terminal, or DEAD and so reprocessable).
// - A workflow is RUNNING until every task of it is terminal; then SUCCEEDED when all
//   succeeded, CANCELED when it was canceled as a whole, FAILED otherwise. Reprocessing a
//   dead task of it reopens it.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/engine.h"
#include "core/names.h"
#include "util/json.h"

namespace drover::core {
namespace {

using internal::kMaxParents;
using internal::NameError;
using internal::ValidName;

constexpr size_t kMaxWorkflowName = 256;

bool Active(v1::TaskState s) {
  return s == v1::TASK_STATE_READY || s == v1::TASK_STATE_LEASED || s == v1::TASK_STATE_RETRY_WAIT;
}

constexpr char kFailFastPrefix[] = "fail_fast: ";

bool EndedBadly(v1::TaskState s) {
  return s == v1::TASK_STATE_DEAD || s == v1::TASK_STATE_CANCELED || s == v1::TASK_STATE_EXPIRED;
}

// Whether a parent in state `s` lets its child go over an edge of this kind.
bool Satisfied(v1::TaskState s, bool finished_only) {
  return s == v1::TASK_STATE_SUCCEEDED || (finished_only && IsTerminal(s));
}

bool IsFinishedOnlyEdge(const v1::TaskSpec& child, TaskId parent) {
  const auto& f = child.depends_on_finished();
  return std::find(f.begin(), f.end(), parent) != f.end();
}

// A child that may still run needs its parents' results: not terminal, or DEAD.
bool NeedsParents(v1::TaskState s) { return !IsTerminal(s) || s == v1::TASK_STATE_DEAD; }

std::string Describe(const v1::Task& t) {
  return t.step().empty() ? absl::StrCat("task ", t.id())
                          : absl::StrCat("task ", t.id(), " (step \"", t.step(), "\")");
}

// Adds `delta` to the workflow's progress for one task in state `s`.
void AddProgress(v1::Workflow& w, v1::TaskState s, int delta) {
  if (!IsTerminal(s)) return;
  w.set_done(w.done() + delta);
  switch (s) {
    case v1::TASK_STATE_SUCCEEDED:
      w.set_succeeded(w.succeeded() + delta);
      break;
    case v1::TASK_STATE_CANCELED:
      w.set_canceled(w.canceled() + delta);
      break;
    default:  // DEAD, EXPIRED
      w.set_failed(w.failed() + delta);
      break;
  }
}

}  // namespace

std::string WorkflowStateName(v1::WorkflowState s) {
  std::string n = v1::WorkflowState_Name(s);
  if (n.rfind("WORKFLOW_STATE_", 0) == 0) n = n.substr(15);
  return absl::AsciiStrToLower(n);
}

// ---------------------------------------------------------------------------------------
// Edges

absl::Status Engine::ValidateParents(const v1::TaskSpec& s, const std::string& field,
                                     const std::string& tenant) const {
  absl::flat_hash_set<TaskId> seen;
  auto check = [&](const google::protobuf::RepeatedField<uint64_t>& ids, const char* list,
                   bool strict) -> absl::Status {
    for (int i = 0; i < ids.size(); ++i) {
      const std::string f = absl::StrCat(field, ".", list, "[", i, "]");
      const TaskId id = ids[i];
      if (!seen.insert(id).second) {
        return absl::InvalidArgumentError(absl::StrCat(f, ": task ", id, " is listed twice"));
      }
      const Entry* p = Find(id);
      // Another tenant's task is reported like an unknown one: ids do not leak tenants.
      if (p == nullptr || p->task.spec().tenant() != tenant) {
        return absl::InvalidArgumentError(absl::StrCat(
            f, ": task ", id, " is not a task of tenant \"", tenant,
            "\" held by the server (unknown, another tenant's, or finished and evicted)"));
      }
      if (strict && EndedBadly(p->task.state())) {
        return absl::InvalidArgumentError(absl::StrCat(
            f, ": task ", id, " already ended ", StateName(p->task.state()),
            ", so this task could never run (depends_on_finished runs after any end)"));
      }
    }
    return absl::OkStatus();
  };
  if (auto st = check(s.depends_on(), "depends_on", true); !st.ok()) return st;
  return check(s.depends_on_finished(), "depends_on_finished", false);
}

void Engine::LinkParents(Entry& e) {
  const v1::TaskSpec& s = e.task.spec();
  if (s.depends_on_size() == 0 && s.depends_on_finished_size() == 0) {
    if (e.links) e.links->unmet_parents = 0;
    return;  // no parents: a standalone task allocates no links
  }
  e.L().unmet_parents = 0;
  const bool needs = NeedsParents(e.task.state());
  auto link = [&](TaskId pid, bool finished_only) {
    Entry* p = Find(pid);
    if (p == nullptr) {
      // Only recovery meets this: the parent's row is gone (a dead letter purged, or a
      // finished row pruned). Any end satisfies a depends_on_finished edge; over a
      // depends_on edge its outcome is unknown and the child cannot run.
      if (needs && !finished_only && e.L().missing_parent == 0) e.L().missing_parent = pid;
      return;
    }
    p->L().children.push_back(e.task.id());
    if (needs) p->L().live_children++;
    if (!Satisfied(p->task.state(), finished_only)) e.L().unmet_parents++;
  };
  for (TaskId pid : s.depends_on()) link(pid, false);
  for (TaskId pid : s.depends_on_finished()) link(pid, true);
}

void Engine::Start(Entry& e) {
  LinkParents(e);
  if (e.links && e.links->unmet_parents > 0) {
    SetState(e, v1::TASK_STATE_WAITING);
  } else {
    Release(e);
  }
}

void Engine::Release(Entry& e) {
  if (e.task.workflow_id() != 0) {
    auto it = workflows_.find(e.task.workflow_id());
    if (it != workflows_.end()) {
      WorkflowEntry& we = it->second;
      const int limit = we.record.max_parallel();
      if (limit > 0 && we.active >= limit) {
        if (e.task.state() != v1::TASK_STATE_WAITING) SetState(e, v1::TASK_STATE_WAITING);
        e.L().held = true;
        we.held.push_back(e.task.id());
        return;
      }
    }
  }
  e.L().held = false;
  MakeReady(e);
}

void Engine::ReleaseHeld(WorkflowEntry& we) {
  const int limit = we.record.max_parallel();
  while (!we.held.empty() && (limit == 0 || we.active < limit)) {
    Entry* e = Find(we.held.front());
    we.held.pop_front();
    if (e == nullptr || !e->L().held || e->task.state() != v1::TASK_STATE_WAITING) continue;
    e->L().held = false;
    MakeReady(*e);
  }
}

void Engine::FailFast(WorkflowEntry& we, const Entry& failed) {
  const std::string reason = absl::StrCat(kFailFastPrefix, Describe(failed.task), " ended ",
                                          StateName(failed.task.state()));
  we.record.set_reason(reason);
  MarkWorkflowDirty(we.record.id());
  for (const v1::WorkflowTaskRef& ref : we.record.tasks()) {
    const Entry* t = Find(ref.task_id());
    if (t == nullptr || IsTerminal(t->task.state())) continue;
    probe_.canceled_by_fail_fast++;
    (void)Cancel(ref.task_id(), reason);
  }
}

std::array<int64_t, 5> Engine::WorkflowsByState() const {
  std::array<int64_t, 5> n{};
  for (const auto& [id, we] : workflows_) n[we.record.state()]++;
  return n;
}

void Engine::Reevaluate(Entry& e) {
  if (e.L().missing_parent != 0) {
    Finish(e, v1::TASK_STATE_CANCELED,
           absl::StrCat("parent task ", e.L().missing_parent, " is no longer stored"));
    return;
  }
  for (TaskId pid : e.task.spec().depends_on()) {
    const Entry* p = Find(pid);
    if (p != nullptr && EndedBadly(p->task.state())) {
      Finish(e, v1::TASK_STATE_CANCELED,
             absl::StrCat("parent ", Describe(p->task), " ended ", StateName(p->task.state())));
      return;
    }
  }
  if (e.L().unmet_parents == 0) Release(e);
}

void Engine::OnTaskEnded(Entry& e) {
  ended_.push_back(e.task.id());
  if (propagating_) return;  // the loop below, further up the stack, takes it
  propagating_ = true;
  while (!ended_.empty()) {
    const TaskId id = ended_.front();
    ended_.pop_front();
    if (Entry* x = Find(id); x != nullptr) PropagateEnd(*x);
  }
  propagating_ = false;
}

void Engine::ReleaseParents(Entry& e) {
  const v1::TaskSpec& s = e.task.spec();
  auto release = [&](TaskId pid) {
    Entry* p = Find(pid);
    if (p == nullptr || p->L().live_children == 0) return;
    if (--p->L().live_children == 0 && p->L().evict_deferred) {
      p->L().evict_deferred = false;
      finished_.emplace_back(now(), pid);  // evicted after a retention from now
    }
  };
  for (TaskId pid : s.depends_on()) release(pid);
  for (TaskId pid : s.depends_on_finished()) release(pid);
}

void Engine::PropagateEnd(Entry& e) {
  const v1::TaskState st = e.task.state();
  if (!IsTerminal(st)) return;  // reprocessed before its end was propagated
  if (!NeedsParents(st)) ReleaseParents(e);
  for (TaskId cid : e.L().children) {
    Entry* c = Find(cid);
    if (c == nullptr || c->task.state() != v1::TASK_STATE_WAITING) continue;
    if (Satisfied(st, IsFinishedOnlyEdge(c->task.spec(), e.task.id()))) {
      if (--c->L().unmet_parents == 0) Release(*c);
    } else {
      probe_.canceled_by_parent++;
      Finish(*c, v1::TASK_STATE_CANCELED,
             absl::StrCat("parent ", Describe(e.task), " ended ", StateName(st),
                          e.task.reason().empty() ? "" : ": ", e.task.reason().substr(0, 200)));
    }
  }
  if (e.task.workflow_id() != 0) {
    auto it = workflows_.find(e.task.workflow_id());
    if (it == workflows_.end()) return;
    WorkflowEntry& we = it->second;
    if (we.record.fail_fast() && EndedBadly(st) && !we.cancel_requested && !we.failed_fast) {
      we.failed_fast = true;
      FailFast(we, e);
    }
    ReleaseHeld(we);
  }
}

void Engine::ReopenForChildren(Entry& e) {
  // A dead parent is reprocessed: over a depends_on_finished edge it had let its WAITING
  // children count it as ended; now it runs again, so they wait for it again.
  for (TaskId cid : e.L().children) {
    Entry* c = Find(cid);
    // (A held child had every parent satisfied already; it waits only for a slot.)
    if (c == nullptr || c->task.state() != v1::TASK_STATE_WAITING || c->L().held) continue;
    if (IsFinishedOnlyEdge(c->task.spec(), e.task.id())) c->L().unmet_parents++;
  }
}

void Engine::FillParents(const v1::Task& task, v1::TaskLease* lease) const {
  auto add = [&](TaskId pid) {
    const Entry* p = Find(pid);
    if (p == nullptr) return;  // recovery could not find it; the child was told at start
    v1::ParentResult* r = lease->add_parents();
    r->set_task_id(pid);
    r->set_step(p->task.step());
    r->set_state(p->task.state());
    if (p->task.state() == v1::TASK_STATE_SUCCEEDED) {
      r->set_result(p->task.result());
      r->set_result_json(p->task.result_json());
    } else {
      r->set_error(p->task.reason().empty() ? p->task.last_error() : p->task.reason());
    }
  };
  for (TaskId pid : task.spec().depends_on()) add(pid);
  for (TaskId pid : task.spec().depends_on_finished()) add(pid);
}

std::vector<TaskId> Engine::MissingParents() const {
  absl::flat_hash_set<TaskId> missing;
  for (const auto& [id, ptr] : tasks_) {
    const v1::Task& t = ptr->task;
    if (!NeedsParents(t.state())) continue;
    for (TaskId pid : t.spec().depends_on()) {
      if (Find(pid) == nullptr) missing.insert(pid);
    }
    for (TaskId pid : t.spec().depends_on_finished()) {
      if (Find(pid) == nullptr) missing.insert(pid);
    }
  }
  std::vector<TaskId> out(missing.begin(), missing.end());
  std::sort(out.begin(), out.end());
  return out;
}

// ---------------------------------------------------------------------------------------
// Workflows

void Engine::MarkWorkflowDirty(WorkflowId id) {
  if (dirty_workflow_set_.insert(id).second) outbox_.dirty_workflows.push_back(id);
}

void Engine::CountInWorkflow(const v1::Task& t, v1::TaskState from, v1::TaskState to) {
  auto it = workflows_.find(t.workflow_id());
  if (it == workflows_.end()) return;
  WorkflowEntry& we = it->second;
  we.active += static_cast<int>(Active(to)) - static_cast<int>(Active(from));
  if (!IsTerminal(from) && !IsTerminal(to)) return;
  v1::Workflow& w = we.record;
  AddProgress(w, from, -1);
  AddProgress(w, to, +1);
  const v1::WorkflowState before = w.state();
  if (w.done() >= w.total()) {
    if (we.cancel_requested) {
      w.set_state(v1::WORKFLOW_STATE_CANCELED);
    } else if (w.succeeded() == w.total()) {
      w.set_state(v1::WORKFLOW_STATE_SUCCEEDED);
    } else {
      w.set_state(v1::WORKFLOW_STATE_FAILED);
    }
    if (before == v1::WORKFLOW_STATE_RUNNING) {
      w.set_finished_unix_ms(now_ms());
      outbox_.terminal_workflows.push_back(w.id());
    }
  } else {
    w.set_state(v1::WORKFLOW_STATE_RUNNING);
    w.set_finished_unix_ms(0);
  }
  w.set_updated_unix_ms(now_ms());
  MarkWorkflowDirty(w.id());
  if (w.state() != before) WorkflowEvent(w, before);
}

absl::StatusOr<const v1::Workflow*> Engine::SubmitWorkflow(const v1::WorkflowSpec& spec) {
  auto invalid = [&](const std::string& msg) {
    probe_.rejected_invalid += std::max(1, spec.steps_size());
    return absl::InvalidArgumentError(msg);
  };
  const std::string tenant = spec.tenant().empty() ? "default" : spec.tenant();
  if (!ValidName(tenant)) {
    probe_.rejected_invalid += std::max(1, spec.steps_size());
    return NameError("workflow.tenant", spec.tenant());
  }
  if (spec.name().size() > kMaxWorkflowName) {
    return invalid(absl::StrCat("workflow.name: ", spec.name().size(),
                                " bytes exceeds the limit of ", kMaxWorkflowName));
  }
  const size_t n = static_cast<size_t>(spec.steps_size());
  if (n == 0) return invalid("workflow.steps: no steps given");
  if (spec.max_parallel() < 0) {
    return invalid(absl::StrCat("workflow.max_parallel: must be >= 0 (0 = no limit), got ",
                                spec.max_parallel()));
  }
  if (n > options_.max_batch) {
    return invalid(absl::StrCat("workflow.steps: ", n, " steps exceed the batch limit of ",
                                options_.max_batch));
  }
  // Step names, each step's task, and its existing-task parents.
  absl::flat_hash_map<std::string, size_t> index;
  std::vector<std::string> fields(n);
  for (size_t i = 0; i < n; ++i) {
    const v1::WorkflowStep& step = spec.steps(static_cast<int>(i));
    fields[i] = absl::StrCat("workflow.steps[", i, "]");
    if (!ValidName(step.name())) {
      probe_.rejected_invalid += static_cast<int64_t>(n);
      return NameError(fields[i] + ".name", step.name());
    }
    if (auto [it, fresh] = index.emplace(step.name(), i); !fresh) {
      return invalid(absl::StrCat(fields[i], ".name: \"", step.name(), "\" is already the name of ",
                                  fields[it->second]));
    }
    fields[i] = absl::StrCat(fields[i], " (\"", step.name(), "\")");
    const v1::TaskSpec& task = step.task();
    if (!task.tenant().empty() && task.tenant() != tenant) {
      return invalid(absl::StrCat(fields[i], ".task.tenant: \"", task.tenant(),
                                  "\" differs from the workflow's tenant \"", tenant,
                                  "\" (leave it empty)"));
    }
    if (!task.idempotency_key().empty()) {
      return invalid(
          absl::StrCat(fields[i], ".task.idempotency_key: not supported inside a workflow"));
    }
    if (absl::Status st = ValidateSpec(task, fields[i] + ".task"); !st.ok()) {
      probe_.rejected_invalid += static_cast<int64_t>(n);
      return st;
    }
    if (absl::Status st = ValidateParents(task, fields[i] + ".task", tenant); !st.ok()) {
      probe_.rejected_invalid += static_cast<int64_t>(n);
      return st;
    }
    const int parents = task.depends_on_size() + task.depends_on_finished_size() +
                        step.depends_on_size() + step.depends_on_finished_size();
    if (parents > kMaxParents) {
      return invalid(absl::StrCat(fields[i], ".depends_on: ", parents,
                                  " parents exceed the limit of ", kMaxParents));
    }
  }
  // Edges between steps, by name: parents[i] = (step index, finished_only).
  std::vector<std::vector<std::pair<size_t, bool>>> parents(n);
  std::vector<std::vector<size_t>> children(n);
  for (size_t i = 0; i < n; ++i) {
    const v1::WorkflowStep& step = spec.steps(static_cast<int>(i));
    absl::flat_hash_set<size_t> seen;
    auto add = [&](const google::protobuf::RepeatedPtrField<std::string>& refs, const char* list,
                   bool finished_only) -> absl::Status {
      for (int j = 0; j < refs.size(); ++j) {
        const std::string f = absl::StrCat(fields[i], ".", list, "[", j, "]");
        auto it = index.find(refs[j]);
        if (it == index.end()) {
          return absl::InvalidArgumentError(
              absl::StrCat(f, ": no step named \"", refs[j].substr(0, 80), "\""));
        }
        if (it->second == i) {
          return absl::InvalidArgumentError(
              absl::StrCat(f, ": step \"", refs[j], "\" depends on itself (a cycle)"));
        }
        if (!seen.insert(it->second).second) {
          return absl::InvalidArgumentError(
              absl::StrCat(f, ": step \"", refs[j], "\" is listed twice"));
        }
        parents[i].emplace_back(it->second, finished_only);
        children[it->second].push_back(i);
      }
      return absl::OkStatus();
    };
    absl::Status st = add(step.depends_on(), "depends_on", false);
    if (st.ok()) st = add(step.depends_on_finished(), "depends_on_finished", true);
    if (!st.ok()) {
      probe_.rejected_invalid += static_cast<int64_t>(n);
      return st;
    }
  }
  // Topological order (Kahn); what is left over lies on or behind a cycle.
  std::vector<size_t> order;
  order.reserve(n);
  std::vector<int> indegree(n);
  for (size_t i = 0; i < n; ++i) indegree[i] = static_cast<int>(parents[i].size());
  for (size_t i = 0; i < n; ++i) {
    if (indegree[i] == 0) order.push_back(i);
  }
  for (size_t k = 0; k < order.size(); ++k) {
    for (size_t c : children[order[k]]) {
      if (--indegree[c] == 0) order.push_back(c);
    }
  }
  if (order.size() < n) {
    // Walk parent edges among the leftovers until a step repeats: that loop is a cycle.
    size_t at = 0;
    while (indegree[at] == 0) ++at;
    std::vector<size_t> path;
    std::vector<int> pos(n, -1);
    while (pos[at] < 0) {
      pos[at] = static_cast<int>(path.size());
      path.push_back(at);
      for (auto [p, unused] : parents[at]) {
        if (indegree[p] > 0) {
          at = p;
          break;
        }
      }
    }
    // Parent before child, starting at the step listed first, so the message is stable.
    std::vector<size_t> cycle(path.begin() + pos[at], path.end());
    std::reverse(cycle.begin(), cycle.end());
    std::rotate(cycle.begin(), std::min_element(cycle.begin(), cycle.end()), cycle.end());
    std::vector<std::string> names;
    for (size_t k : cycle) {
      names.push_back(absl::StrCat("\"", spec.steps(static_cast<int>(k)).name(), "\""));
    }
    names.push_back(names.front());
    return invalid(absl::StrCat("workflow.steps: dependency cycle ", absl::StrJoin(names, " -> ")));
  }
  std::vector<const v1::TaskSpec*> fresh;
  for (const v1::WorkflowStep& step : spec.steps()) fresh.push_back(&step.task());
  // Its tasks are the workflow's tenant's, whatever their specs say (they are left empty).
  if (absl::Status st = Admit(fresh, &tenant); !st.ok()) return st;

  // Accepted: the workflow record, then its tasks in dependency order (parents get lower
  // ids), each with its step edges resolved to task ids in its durable spec.
  const WorkflowId wid = next_workflow_id_++;
  WorkflowEntry& we = workflows_[wid];
  v1::Workflow& w = we.record;
  const int64_t t_ms = now_ms();
  w.set_id(wid);
  w.set_tenant(tenant);
  w.set_name(spec.name());
  *w.mutable_labels() = spec.labels();
  w.set_state(v1::WORKFLOW_STATE_RUNNING);
  w.set_created_unix_ms(t_ms);
  w.set_updated_unix_ms(t_ms);
  w.set_total(static_cast<int32_t>(n));
  w.set_max_parallel(spec.max_parallel());
  w.set_fail_fast(spec.fail_fast());
  WorkflowEvent(w, v1::WORKFLOW_STATE_UNSPECIFIED);
  // Each step's remaining critical path: its expected duration plus the longest of its
  // children's (reverse dependency order).
  std::vector<int64_t> critical(n, 0);
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    int64_t longest = 0;
    for (size_t c : children[*it]) longest = std::max(longest, critical[c]);
    critical[*it] = ExpectedDurationMs(spec.steps(static_cast<int>(*it)).task()) + longest;
  }
  std::vector<TaskId> ids(n);
  std::vector<Entry*> entries(n);
  for (size_t i : order) {
    const v1::WorkflowStep& step = spec.steps(static_cast<int>(i));
    v1::TaskSpec s = step.task();
    s.set_tenant(tenant);
    for (auto [p, finished_only] : parents[i]) {
      if (finished_only) {
        s.add_depends_on_finished(ids[p]);
      } else {
        s.add_depends_on(ids[p]);
      }
    }
    Entry& e = CreateTask(s, t_ms);
    e.task.set_workflow_id(wid);
    e.task.set_step(step.name());
    e.L().critical_path_ms = critical[i];
    ids[i] = e.task.id();
    entries[i] = &e;
  }
  for (size_t i = 0; i < n; ++i) {
    v1::WorkflowTaskRef* ref = w.add_tasks();
    ref->set_step(spec.steps(static_cast<int>(i)).name());
    ref->set_task_id(ids[i]);
  }
  MarkWorkflowDirty(wid);
  probe_.workflows_submitted++;
  for (size_t i : order) Start(*entries[i]);
  return &we.record;
}

absl::StatusOr<const v1::Workflow*> Engine::SubmitMapReduce(const v1::MapReduceSpec& spec) {
  const size_t n = static_cast<size_t>(spec.items_size());
  auto invalid = [&](const std::string& msg) {
    probe_.rejected_invalid += static_cast<int64_t>(n) + 1;
    return absl::InvalidArgumentError(msg);
  };
  if (n == 0) return invalid("mapreduce.items: no items given");
  if (n + 1 > options_.max_batch) {
    return invalid(absl::StrCat("mapreduce.items: ", n, " items exceed the limit of ",
                                options_.max_batch - 1, " (max_batch less the reducer)"));
  }
  if (!ValidName(spec.mapper().type())) {
    probe_.rejected_invalid += static_cast<int64_t>(n) + 1;
    return NameError("mapreduce.mapper.type", spec.mapper().type());
  }
  if (!ValidName(spec.reducer().type())) {
    probe_.rejected_invalid += static_cast<int64_t>(n) + 1;
    return NameError("mapreduce.reducer.type", spec.reducer().type());
  }
  if (spec.items_json()) {
    for (size_t i = 0; i < n; ++i) {
      absl::Status st = util::CheckJson(spec.items(static_cast<int>(i)),
                                        absl::StrCat("mapreduce.items[", i, "]"));
      if (!st.ok()) return invalid(std::string(st.message()));
    }
  }
  if (!spec.mapper().payload().empty()) {
    return invalid("mapreduce.mapper.payload: leave it empty; each map task's payload is its item");
  }
  if (spec.parallelism() < 0) {
    return invalid(absl::StrCat("mapreduce.parallelism: must be >= 0 (0 = no limit), got ",
                                spec.parallelism()));
  }
  if (!v1::MapReduceErrorStrategy_IsValid(spec.on_error())) {
    return invalid(absl::StrCat("mapreduce.on_error: unknown value ", spec.on_error(),
                                " (use FAIL_FAST or CONTINUE_ON_PARTIAL)"));
  }
  const bool partial = spec.on_error() == v1::CONTINUE_ON_PARTIAL;
  v1::WorkflowSpec w;
  w.set_tenant(spec.tenant());
  w.set_name(spec.name());
  *w.mutable_labels() = spec.labels();
  w.set_max_parallel(spec.parallelism());
  w.set_fail_fast(!partial);
  v1::WorkflowStep reduce;
  reduce.set_name("reduce");
  *reduce.mutable_task() = spec.reducer();
  for (size_t i = 0; i < n; ++i) {
    v1::WorkflowStep* step = w.add_steps();
    step->set_name(absl::StrCat("map-", i + 1));
    *step->mutable_task() = spec.mapper();
    step->mutable_task()->set_payload(spec.items(static_cast<int>(i)));
    step->mutable_task()->set_payload_json(spec.items_json());
    if (partial) {
      reduce.add_depends_on_finished(step->name());
    } else {
      reduce.add_depends_on(step->name());
    }
  }
  *w.add_steps() = std::move(reduce);
  absl::StatusOr<const v1::Workflow*> r = SubmitWorkflow(w);
  if (r.ok() || !absl::StartsWith(r.status().message(), "workflow.steps[")) return r;
  // Name the job's fields: workflow.steps[i] ("map-(i+1)").task.X -> mapreduce.mapper.X
  // (item i), and the last step -> mapreduce.reducer.X.
  const std::string msg(r.status().message());
  const size_t close = msg.find(']');
  size_t index = 0;
  const size_t after_name = msg.find("\")", close);
  if (close == std::string::npos || after_name == std::string::npos ||
      !absl::SimpleAtoi(msg.substr(15, close - 15), &index)) {
    return r;
  }
  std::string rest = msg.substr(after_name + 2);
  if (absl::StartsWith(rest, ".task")) rest = rest.substr(5);
  const std::string field = index < n
                                ? absl::StrCat("mapreduce.mapper", rest, " (item ", index, ")")
                                : absl::StrCat("mapreduce.reducer", rest);
  return absl::Status(r.status().code(), field);
}

int64_t Engine::ExpectedDurationMs(const v1::TaskSpec& spec) const {
  auto it = duration_ms_.find(spec.type());
  const double base = it != duration_ms_.end()
                          ? it->second
                          : absl::ToDoubleMilliseconds(options_.default_task_duration);
  const double c = spec.estimated_complexity() > 0 ? spec.estimated_complexity() : 1.0;
  return std::max<int64_t>(1, static_cast<int64_t>(base * c));
}

void Engine::ComputeCriticalPaths(const WorkflowEntry& we, v1::Workflow* out) {
  // Children have higher ids than their parents within a workflow, so one pass from the
  // highest id down sees every child before its parents.
  std::vector<Entry*> open;
  for (const v1::WorkflowTaskRef& ref : we.record.tasks()) {
    auto it = tasks_.find(ref.task_id());
    if (it != tasks_.end() && !IsTerminal(it->second->task.state())) {
      open.push_back(it->second.get());
    }
  }
  std::sort(open.begin(), open.end(),
            [](const Entry* a, const Entry* b) { return a->task.id() > b->task.id(); });
  absl::flat_hash_map<TaskId, std::pair<int64_t, TaskId>> best;  // id -> (path, next on it)
  for (Entry* e : open) {
    int64_t longest = 0;
    TaskId next = 0;
    for (TaskId cid : e->L().children) {
      auto c = best.find(cid);
      if (c != best.end() && c->second.first > longest) {
        longest = c->second.first;
        next = cid;
      }
    }
    const int64_t path = ExpectedDurationMs(e->task.spec()) + longest;
    best[e->task.id()] = {path, next};
    // A ready task keeps the queue key it was queued with; tasks queued later use this.
    e->L().critical_path_ms = path;
  }
  if (out == nullptr) return;
  out->clear_critical_path();
  out->clear_runnable();
  int64_t top = 0;
  TaskId at = 0;
  for (const Entry* e : open) {
    const v1::TaskState s = e->task.state();
    const bool can_run = s == v1::TASK_STATE_READY || s == v1::TASK_STATE_LEASED ||
                         s == v1::TASK_STATE_RETRY_WAIT ||
                         (s == v1::TASK_STATE_WAITING && e->Lc().unmet_parents == 0);
    if (s == v1::TASK_STATE_READY || s == v1::TASK_STATE_LEASED) out->add_runnable(e->task.id());
    if (can_run && (best[e->task.id()].first > top ||
                    (best[e->task.id()].first == top && e->task.id() < at))) {
      top = best[e->task.id()].first;
      at = e->task.id();
    }
  }
  std::sort(out->mutable_runnable()->begin(), out->mutable_runnable()->end());
  out->set_critical_path_ms(top);
  for (; at != 0; at = best[at].second) out->add_critical_path(at);
}

absl::StatusOr<v1::Workflow> Engine::DescribeWorkflow(WorkflowId id) {
  auto it = workflows_.find(id);
  if (it == workflows_.end()) {
    return absl::NotFoundError(absl::StrCat("id: workflow ", id, " not found"));
  }
  v1::Workflow copy = it->second.record;
  ComputeCriticalPaths(it->second, &copy);
  return copy;
}

const v1::Workflow* Engine::WorkflowSnapshot(WorkflowId id) const {
  auto it = workflows_.find(id);
  return it == workflows_.end() ? nullptr : &it->second.record;
}

absl::StatusOr<const v1::Workflow*> Engine::GetWorkflow(WorkflowId id) const {
  const v1::Workflow* w = WorkflowSnapshot(id);
  if (w == nullptr) return absl::NotFoundError(absl::StrCat("id: workflow ", id, " not found"));
  return w;
}

std::vector<const v1::Workflow*> Engine::ListWorkflows(const WorkflowFilter& f) const {
  std::vector<const v1::Workflow*> out;
  const int limit = std::clamp(f.limit, 1, 1000);
  for (auto it = workflows_.upper_bound(f.after); it != workflows_.end(); ++it) {
    const v1::Workflow& w = it->second.record;
    if (f.state != v1::WORKFLOW_STATE_UNSPECIFIED && w.state() != f.state) continue;
    if (!f.tenant.empty() && w.tenant() != f.tenant) continue;
    out.push_back(&w);
    if (static_cast<int>(out.size()) >= limit) break;
  }
  return out;
}

absl::StatusOr<const v1::Workflow*> Engine::CancelWorkflow(WorkflowId id,
                                                           const std::string& reason) {
  auto it = workflows_.find(id);
  if (it == workflows_.end()) {
    return absl::NotFoundError(absl::StrCat("id: workflow ", id, " not found"));
  }
  WorkflowEntry& we = it->second;
  if (we.record.state() != v1::WORKFLOW_STATE_RUNNING) {
    return absl::FailedPreconditionError(absl::StrCat("id: workflow ", id, " has already ended ",
                                                      WorkflowStateName(we.record.state())));
  }
  const std::string why = reason.empty() ? "canceled by request" : reason.substr(0, 1024);
  we.cancel_requested = true;
  we.record.set_reason(why);
  MarkWorkflowDirty(id);
  const std::string task_reason = absl::StrCat("workflow ", id, " canceled: ", why);
  for (const v1::WorkflowTaskRef& ref : we.record.tasks()) {
    const Entry* e = Find(ref.task_id());
    if (e == nullptr || IsTerminal(e->task.state())) continue;
    (void)Cancel(ref.task_id(), task_reason);
  }
  return &we.record;
}

absl::Status Engine::CheckDependencyInvariants() const {
  absl::flat_hash_map<TaskId, int> live;  // parent -> children that need it
  for (const auto& [id, ptr] : tasks_) {
    const v1::Task& t = ptr->task;
    int unmet = 0;
    for (TaskId pid : t.spec().depends_on()) {
      const Entry* p = Find(pid);
      if (p == nullptr) continue;
      if (NeedsParents(t.state())) live[pid]++;
      const v1::TaskState ps = p->task.state();
      if (!Satisfied(ps, false)) unmet++;
      // A child that has been dispatched ran after this parent succeeded (which is final).
      if (t.attempts() > 0 && ps != v1::TASK_STATE_SUCCEEDED) {
        return absl::InternalError(
            absl::StrCat("task ", id, " ran but its parent ", pid, " is ", StateName(ps)));
      }
      if (t.state() == v1::TASK_STATE_WAITING && EndedBadly(ps)) {
        return absl::InternalError(absl::StrCat("task ", id, " still waits for parent ", pid,
                                                " which ended ", StateName(ps)));
      }
    }
    for (TaskId pid : t.spec().depends_on_finished()) {
      const Entry* p = Find(pid);
      if (p == nullptr) continue;
      if (NeedsParents(t.state())) live[pid]++;
      if (!Satisfied(p->task.state(), true)) unmet++;
    }
    if (t.state() == v1::TASK_STATE_WAITING && (unmet == 0 || unmet != ptr->Lc().unmet_parents) &&
        ptr->Lc().missing_parent == 0 && !ptr->Lc().held) {
      return absl::InternalError(absl::StrCat("waiting task ", id, " counts ",
                                              ptr->Lc().unmet_parents, " unmet parents, ", unmet,
                                              " are"));
    }
  }
  for (const auto& [id, ptr] : tasks_) {
    auto it = live.find(id);
    const int want = it == live.end() ? 0 : it->second;
    if (ptr->Lc().live_children != want) {
      return absl::InternalError(absl::StrCat("task ", id, " counts ", ptr->Lc().live_children,
                                              " children that need it, ", want, " do"));
    }
  }
  absl::flat_hash_map<WorkflowId, int> active;
  for (const auto& [id, ptr] : tasks_) {
    if (ptr->task.workflow_id() != 0 && Active(ptr->task.state())) {
      active[ptr->task.workflow_id()]++;
    }
  }
  for (const auto& [wid, we] : workflows_) {
    const v1::Workflow& w = we.record;
    const int want = active.contains(wid) ? active.at(wid) : 0;
    if (we.active != want) {
      return absl::InternalError(
          absl::StrCat("workflow ", wid, " counts ", we.active, " active tasks, ", want, " are"));
    }
    if (w.max_parallel() > 0 && we.active > w.max_parallel()) {
      return absl::InternalError(absl::StrCat("workflow ", wid, " has ", we.active,
                                              " active tasks, max_parallel ", w.max_parallel()));
    }
    v1::Workflow count;
    bool all_here = true;
    for (const v1::WorkflowTaskRef& ref : w.tasks()) {
      const Entry* e = Find(ref.task_id());
      if (e == nullptr) {
        all_here = false;
        break;
      }
      AddProgress(count, e->task.state(), 1);
    }
    if (all_here && (count.done() != w.done() || count.succeeded() != w.succeeded() ||
                     count.failed() != w.failed() || count.canceled() != w.canceled())) {
      return absl::InternalError(absl::StrCat("workflow ", wid, " progress says ", w.done(),
                                              " done, its tasks say ", count.done()));
    }
    if ((w.state() == v1::WORKFLOW_STATE_RUNNING) != (w.done() < w.total())) {
      return absl::InternalError(absl::StrCat("workflow ", wid, " is ",
                                              WorkflowStateName(w.state()), " with ", w.done(),
                                              " of ", w.total(), " tasks done"));
    }
  }
  return absl::OkStatus();
}

void Engine::RestoreWorkflow(v1::Workflow workflow) {
  const WorkflowId id = workflow.id();
  next_workflow_id_ = std::max(next_workflow_id_, id + 1);
  WorkflowEntry& we = workflows_[id];
  we.cancel_requested =
      workflow.state() == v1::WORKFLOW_STATE_CANCELED ||
      (!workflow.reason().empty() && !absl::StartsWith(workflow.reason(), kFailFastPrefix));
  we.failed_fast = absl::StartsWith(workflow.reason(), kFailFastPrefix);
  we.record = std::move(workflow);
}

}  // namespace drover::core
