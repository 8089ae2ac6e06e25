#include "api/service.h"

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "api/service_internal.h"
#include "core/codec.h"
#include "core/names.h"

namespace drover::api {
namespace {

using core::Engine;
using internal::Busy;
using internal::Refused;

absl::StatusOr<uint64_t> ParsePageToken(const std::string& token) {
  if (token.empty()) return 0;
  uint64_t after = 0;
  if (!absl::SimpleAtoi(token, &after)) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_token: '", token.substr(0, 40), "' is not a token from a listing"));
  }
  return after;
}

absl::Status CheckPageSize(int32_t size) {
  if (size < 0 || size > 1000) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: must be 0 (default 100) to 1000, got ", size));
  }
  return absl::OkStatus();
}

v1::ListTasksResponse Page(const core::ListPage& page) {
  v1::ListTasksResponse resp;
  for (const v1::Task* t : page.tasks) *resp.add_tasks() = *t;
  if (page.next != 0) resp.set_next_page_token(absl::StrCat(page.next));
  return resp;
}

// What another tenant's object answers: the same as an unknown id, so ids leak nothing.
absl::Status Hidden(const char* kind, uint64_t id, const char* field = "id") {
  return absl::NotFoundError(absl::StrCat(field, ": ", kind, " ", id, " not found"));
}

}  // namespace

// Runs `body` on the engine thread; its answer is delivered once its batch commits.
template <typename T, typename F>
static void RunOn(Runtime& runtime, Reply<T> done, F body, Runtime::Lane lane = Runtime::kRequest) {
  auto shared = std::make_shared<Reply<T>>(std::move(done));
  const bool queued = runtime.Post(
      [shared, body = std::move(body)](Engine& engine, Batch& batch) mutable {
        absl::StatusOr<T> result = body(engine);
        batch.AfterCommit([shared, result = std::move(result)](const absl::Status& st) mutable {
          if (!st.ok()) {
            (*shared)(st);
          } else {
            (*shared)(std::move(result));
          }
        });
      },
      lane);
  if (!queued) (*shared)(Refused(runtime));
}

void Service::SubmitTask(const auth::Caller& caller, const v1::SubmitTaskRequest& req,
                         Reply<v1::SubmitTaskResponse> done) {
  RunOn<v1::SubmitTaskResponse>(
      runtime_, std::move(done),
      [spec = req.task()](Engine& e) -> absl::StatusOr<v1::SubmitTaskResponse> {
        auto r = e.Submit({spec}, "task");
        if (!r.ok()) return r.status();
        v1::SubmitTaskResponse resp;
        *resp.mutable_task() = *e.Snapshot((*r)[0].id);
        resp.set_deduplicated((*r)[0].deduplicated);
        return resp;
      });
}

void Service::SubmitTasks(const auth::Caller& caller, const v1::SubmitTasksRequest& req,
                          Reply<v1::SubmitTasksResponse> done) {
  auto specs = std::make_shared<std::vector<v1::TaskSpec>>(req.tasks().begin(), req.tasks().end());
  RunOn<v1::SubmitTasksResponse>(runtime_, std::move(done),
                                 [specs](Engine& e) -> absl::StatusOr<v1::SubmitTasksResponse> {
                                   auto r = e.Submit(*specs, "tasks");
                                   if (!r.ok()) return r.status();
                                   v1::SubmitTasksResponse resp;
                                   for (const auto& one : *r) {
                                     v1::SubmitTaskResponse* out = resp.add_results();
                                     *out->mutable_task() = *e.Snapshot(one.id);
                                     out->set_deduplicated(one.deduplicated);
                                   }
                                   return resp;
                                 });
}

// A task missing from the engine may have finished long enough ago to leave memory; the
// store still has it. The store is read on the store thread, which owns it.
static void FromStore(Batch& batch, store::Store& store, uint64_t id, absl::Status not_found,
                      std::function<void(absl::StatusOr<v1::Task>)> done) {
  batch.AfterCommit([&store, id, not_found, done = std::move(done)](const absl::Status& st) {
    if (!st.ok()) return done(st);
    auto row = store.GetTask(id);
    if (!row.ok()) return done(row.status());
    if (!row->has_value()) return done(not_found);
    done(core::RowToTask(**row));
  });
}

void Service::GetTask(const auth::Caller& caller, const v1::GetTaskRequest& req,
                      Reply<v1::Task> done) {
  done = Redacting(caller, std::move(done));
  auto shared = std::make_shared<Reply<v1::Task>>(std::move(done));
  store::Store& store = store_;
  const bool queued =
      runtime_.Post([shared, id = req.id(), &store, caller](Engine& e, Batch& batch) {
        auto t = e.Get(id);
        if (!t.ok()) {
          FromStore(batch, store, id, t.status(), [shared, caller, id](absl::StatusOr<v1::Task> r) {
            if (r.ok() && !caller.Can(auth::kRead, r->spec().tenant())) r = Hidden("task", id);
            (*shared)(std::move(r));
          });
          return;
        }
        if (!caller.Can(auth::kRead, (*t)->spec().tenant())) {
          batch.AfterCommit([shared, id](const absl::Status&) { (*shared)(Hidden("task", id)); });
          return;
        }
        batch.AfterCommit([shared, task = **t](const absl::Status& st) {
          if (!st.ok()) return (*shared)(st);
          (*shared)(task);
        });
      });
  if (!queued) (*shared)(Refused(runtime_));
}

void Service::ListTasks(const auth::Caller& caller, const v1::ListTasksRequest& req,
                        Reply<v1::ListTasksResponse> done) {
  done = Redacting(caller, std::move(done));
  auto tenant = NarrowTenant(caller, auth::kRead, req.tenant());
  if (!tenant.ok()) return done(tenant.status());
  RunOn<v1::ListTasksResponse>(
      runtime_, std::move(done),
      [req, tenant = *tenant](Engine& e) -> absl::StatusOr<v1::ListTasksResponse> {
        if (absl::Status st = CheckPageSize(req.page_size()); !st.ok()) return st;
        if (!v1::TaskState_IsValid(req.state())) {
          return absl::InvalidArgumentError(absl::StrCat("state: unknown value ", req.state()));
        }
        if (!v1::Priority_IsValid(req.priority())) {
          return absl::InvalidArgumentError(
              absl::StrCat("priority: unknown value ", req.priority()));
        }
        if (req.label().size() > 256 || req.label().starts_with('=')) {
          return absl::InvalidArgumentError(
              absl::StrCat("label: must be key=value or key, with a key, at most 256 bytes (got ",
                           req.label().size(), " bytes)"));
        }
        if (req.error_contains().size() > 256) {
          return absl::InvalidArgumentError(
              absl::StrCat("error_contains: at most 256 bytes, got ", req.error_contains().size()));
        }
        auto after = ParsePageToken(req.page_token());
        if (!after.ok()) return after.status();
        core::ListFilter f;
        f.state = req.state();
        f.type = req.type();
        f.tenant = tenant;
        f.priority = req.priority();
        f.label = req.label();
        f.error_contains = req.error_contains();
        f.newest_first = req.newest_first();
        f.workflow_id = req.workflow_id();
        f.after = *after;
        f.limit = req.page_size() == 0 ? 100 : req.page_size();
        return Page(e.List(f));
      });
}

void Service::CancelTask(const auth::Caller& caller, const v1::CancelTaskRequest& req,
                         Reply<v1::Task> done) {
  RunOn<v1::Task>(runtime_, std::move(done), [req, caller](Engine& e) -> absl::StatusOr<v1::Task> {
    // Another tenant's task is unknown (evicted ones are finished: Cancel says so).
    if (auto t = e.Get(req.id()); t.ok() && !caller.Can(auth::kCancel, (*t)->spec().tenant())) {
      return Hidden("task", req.id());
    }
    auto t = e.Cancel(req.id(), req.reason());
    if (!t.ok()) return t.status();
    return **t;
  });
}

void Service::WaitTask(const auth::Caller& caller, const v1::WaitTaskRequest& req,
                       Reply<v1::WaitTaskResponse> done) {
  done = Redacting(caller, std::move(done));
  if (req.timeout_ms() < 0 || req.timeout_ms() > 3'600'000) {
    done(absl::InvalidArgumentError(
        absl::StrCat("timeout_ms: must be 0 (30 s) to 3600000 (1 h), got ", req.timeout_ms())));
    return;
  }
  auto shared = std::make_shared<Reply<v1::WaitTaskResponse>>(std::move(done));
  const absl::Duration timeout =
      absl::Milliseconds(req.timeout_ms() == 0 ? 30'000 : req.timeout_ms());
  Runtime& runtime = runtime_;
  store::Store& store = store_;
  const bool queued = runtime_.Post([shared, id = req.id(), timeout, &runtime, &store, caller](
                                        Engine& e, Batch& batch) {
    auto t = e.Get(id);
    if (!t.ok()) {
      // Evicted from memory means finished: answer from the store at once.
      FromStore(batch, store, id, t.status(), [shared, caller, id](absl::StatusOr<v1::Task> r) {
        if (r.ok() && !caller.Can(auth::kRead, r->spec().tenant())) r = Hidden("task", id);
        if (!r.ok()) return (*shared)(r.status());
        v1::WaitTaskResponse resp;
        *resp.mutable_task() = std::move(*r);
        (*shared)(std::move(resp));
      });
      return;
    }
    if (!caller.Can(auth::kRead, (*t)->spec().tenant())) {
      batch.AfterCommit([shared, id](const absl::Status&) { (*shared)(Hidden("task", id)); });
      return;
    }
    if (core::IsTerminal((*t)->state())) {
      v1::WaitTaskResponse resp;
      *resp.mutable_task() = **t;
      batch.AfterCommit([shared, resp](const absl::Status&) { (*shared)(resp); });
      return;
    }
    runtime.AddWaiter(id, absl::Now() + timeout, [shared](const v1::Task& task, bool timed_out) {
      v1::WaitTaskResponse resp;
      *resp.mutable_task() = task;
      resp.set_timed_out(timed_out);
      (*shared)(std::move(resp));
    });
  });
  if (!queued) (*shared)(Refused(runtime_));
}

// --- workflows ---------------------------------------------------------------------------

void Service::SubmitWorkflow(const auth::Caller& caller, const v1::SubmitWorkflowRequest& req,
                             Reply<v1::Workflow> done) {
  auto spec = std::make_shared<v1::WorkflowSpec>(req.workflow());
  RunOn<v1::Workflow>(runtime_, std::move(done), [spec](Engine& e) -> absl::StatusOr<v1::Workflow> {
    auto w = e.SubmitWorkflow(*spec);
    if (!w.ok()) return w.status();
    return **w;
  });
}

void Service::SubmitMapReduce(const auth::Caller& caller, const v1::SubmitMapReduceRequest& req,
                              Reply<v1::Workflow> done) {
  auto job = std::make_shared<v1::MapReduceSpec>(req.job());
  RunOn<v1::Workflow>(runtime_, std::move(done), [job](Engine& e) -> absl::StatusOr<v1::Workflow> {
    auto w = e.SubmitMapReduce(*job);
    if (!w.ok()) return w.status();
    return **w;
  });
}

// A finished workflow whose last task has left memory is read from the store (on the
// store thread, which owns it).
static void WorkflowFromStore(Batch& batch, store::Store& store, uint64_t id,
                              absl::Status not_found,
                              std::function<void(absl::StatusOr<v1::Workflow>)> done) {
  batch.AfterCommit([&store, id, not_found, done = std::move(done)](const absl::Status& st) {
    if (!st.ok()) return done(st);
    auto row = store.GetWorkflow(id);
    if (!row.ok()) return done(row.status());
    if (!row->has_value()) return done(not_found);
    v1::Workflow w;
    if (!w.ParseFromString((*row)->blob)) {
      return done(absl::DataLossError(absl::StrCat("store: workflow ", id, " is unreadable")));
    }
    done(std::move(w));
  });
}

void Service::GetWorkflow(const auth::Caller& caller, const v1::GetWorkflowRequest& req,
                          Reply<v1::Workflow> done) {
  auto shared = std::make_shared<Reply<v1::Workflow>>(std::move(done));
  store::Store& store = store_;
  const bool queued = runtime_.Post([shared, id = req.id(), &store, caller](Engine& e,
                                                                            Batch& batch) {
    auto w = e.DescribeWorkflow(id);
    if (!w.ok()) {
      WorkflowFromStore(batch, store, id, w.status(),
                        [shared, caller, id](absl::StatusOr<v1::Workflow> r) {
                          if (r.ok() && !caller.Can(auth::kRead, r->tenant())) {
                            r = Hidden("workflow", id);
                          }
                          (*shared)(std::move(r));
                        });
      return;
    }
    if (!caller.Can(auth::kRead, w->tenant())) {
      batch.AfterCommit([shared, id](const absl::Status&) { (*shared)(Hidden("workflow", id)); });
      return;
    }
    batch.AfterCommit([shared, wf = std::move(*w)](const absl::Status& st) {
      if (!st.ok()) return (*shared)(st);
      (*shared)(wf);
    });
  });
  if (!queued) (*shared)(Refused(runtime_));
}

void Service::ListWorkflows(const auth::Caller& caller, const v1::ListWorkflowsRequest& req,
                            Reply<v1::ListWorkflowsResponse> done) {
  auto tenant = NarrowTenant(caller, auth::kRead, req.tenant());
  if (!tenant.ok()) return done(tenant.status());
  RunOn<v1::ListWorkflowsResponse>(
      runtime_, std::move(done),
      [req, tenant = *tenant](Engine& e) -> absl::StatusOr<v1::ListWorkflowsResponse> {
        if (absl::Status st = CheckPageSize(req.page_size()); !st.ok()) return st;
        if (!v1::WorkflowState_IsValid(req.state())) {
          return absl::InvalidArgumentError(absl::StrCat("state: unknown value ", req.state()));
        }
        auto after = ParsePageToken(req.page_token());
        if (!after.ok()) return after.status();
        core::WorkflowFilter f;
        f.state = req.state();
        f.tenant = tenant;
        f.after = *after;
        f.limit = req.page_size() == 0 ? 100 : req.page_size();
        const std::vector<const v1::Workflow*> page = e.ListWorkflows(f);
        v1::ListWorkflowsResponse resp;
        for (const v1::Workflow* w : page) *resp.add_workflows() = *w;
        if (static_cast<int>(page.size()) == f.limit) {
          resp.set_next_page_token(absl::StrCat(page.back()->id()));
        }
        return resp;
      });
}

void Service::CancelWorkflow(const auth::Caller& caller, const v1::CancelWorkflowRequest& req,
                             Reply<v1::Workflow> done) {
  auto shared = std::make_shared<Reply<v1::Workflow>>(std::move(done));
  store::Store& store = store_;
  const bool queued = runtime_.Post([shared, req, &store, caller](Engine& e, Batch& batch) {
    if (auto w = e.GetWorkflow(req.id()); w.ok() && !caller.Can(auth::kCancel, (*w)->tenant())) {
      batch.AfterCommit(
          [shared, id = req.id()](const absl::Status&) { (*shared)(Hidden("workflow", id)); });
      return;
    }
    auto w = e.CancelWorkflow(req.id(), req.reason());
    if (!w.ok()) {
      if (w.status().code() != absl::StatusCode::kNotFound) {
        batch.AfterCommit([shared, st = w.status()](const absl::Status&) { (*shared)(st); });
        return;
      }
      // Not in memory: finished long ago (in the store), or unknown.
      WorkflowFromStore(
          batch, store, req.id(), w.status(),
          [shared, id = req.id(), caller](absl::StatusOr<v1::Workflow> r) {
            if (r.ok() && !caller.Can(auth::kCancel, r->tenant())) r = Hidden("workflow", id);
            if (!r.ok()) return (*shared)(r.status());
            (*shared)(absl::FailedPreconditionError(absl::StrCat(
                "id: workflow ", id, " has already ended ", core::WorkflowStateName(r->state()))));
          });
      return;
    }
    batch.AfterCommit([shared, wf = **w](const absl::Status& st) {
      if (!st.ok()) return (*shared)(st);
      (*shared)(wf);
    });
  });
  if (!queued) (*shared)(Refused(runtime_));
}

void Service::WaitWorkflow(const auth::Caller& caller, const v1::WaitWorkflowRequest& req,
                           Reply<v1::WaitWorkflowResponse> done) {
  if (req.timeout_ms() < 0 || req.timeout_ms() > 3'600'000) {
    done(absl::InvalidArgumentError(
        absl::StrCat("timeout_ms: must be 0 (30 s) to 3600000 (1 h), got ", req.timeout_ms())));
    return;
  }
  auto shared = std::make_shared<Reply<v1::WaitWorkflowResponse>>(std::move(done));
  const absl::Duration timeout =
      absl::Milliseconds(req.timeout_ms() == 0 ? 30'000 : req.timeout_ms());
  Runtime& runtime = runtime_;
  store::Store& store = store_;
  const bool queued = runtime_.Post([shared, id = req.id(), timeout, &runtime, &store, caller](
                                        Engine& e, Batch& batch) {
    auto w = e.GetWorkflow(id);
    if (!w.ok()) {
      // Not in memory: it ended long ago (the store has it), or it is unknown.
      WorkflowFromStore(batch, store, id, w.status(),
                        [shared, caller, id](absl::StatusOr<v1::Workflow> r) {
                          if (r.ok() && !caller.Can(auth::kRead, r->tenant()))
                            r = Hidden("workflow", id);
                          if (!r.ok()) return (*shared)(r.status());
                          v1::WaitWorkflowResponse resp;
                          *resp.mutable_workflow() = std::move(*r);
                          (*shared)(std::move(resp));
                        });
      return;
    }
    if (!caller.Can(auth::kRead, (*w)->tenant())) {
      batch.AfterCommit([shared, id](const absl::Status&) { (*shared)(Hidden("workflow", id)); });
      return;
    }
    if ((*w)->state() != v1::WORKFLOW_STATE_RUNNING) {
      v1::WaitWorkflowResponse resp;
      *resp.mutable_workflow() = *e.DescribeWorkflow(id);
      batch.AfterCommit([shared, resp](const absl::Status&) { (*shared)(resp); });
      return;
    }
    runtime.AddWorkflowWaiter(id, absl::Now() + timeout,
                              [shared](const v1::Workflow& wf, bool timed_out) {
                                v1::WaitWorkflowResponse resp;
                                *resp.mutable_workflow() = wf;
                                resp.set_timed_out(timed_out);
                                (*shared)(std::move(resp));
                              });
  });
  if (!queued) (*shared)(Refused(runtime_));
}

void Service::RegisterAgent(const auth::Caller& caller, const v1::RegisterAgentRequest& req,
                            Reply<v1::RegisterAgentResponse> done) {
  RunOn<v1::RegisterAgentResponse>(
      runtime_, std::move(done),
      [this, req,
       owner = OwnerKey(caller)](Engine& e) -> absl::StatusOr<v1::RegisterAgentResponse> {
        auto id = e.RegisterAgent(req);
        if (!id.ok()) return id.status();
        // Agents that left the engine (deregistered, expired) leave this map now and then.
        std::lock_guard<std::mutex> lk(owners_mu_);
        if (agent_owners_.size() > 1024 && agent_owners_.size() > 2 * e.agents().size()) {
          absl::erase_if(agent_owners_,
                         [&e](const auto& kv) { return !e.agents().contains(kv.first); });
        }
        agent_owners_[*id] = owner;
        v1::RegisterAgentResponse resp;
        resp.set_agent_id(*id);
        const int64_t ttl = absl::ToInt64Milliseconds(e.options().lease_ttl);
        resp.set_lease_ttl_ms(ttl);
        resp.set_heartbeat_interval_ms(std::max<int64_t>(100, ttl / 3));
        return resp;
      });
}

void Service::Heartbeat(const auth::Caller& caller, const v1::HeartbeatRequest& req,
                        Reply<v1::HeartbeatResponse> done) {
  RunOn<v1::HeartbeatResponse>(
      runtime_, std::move(done),
      [this, id = req.agent_id(), caller](Engine& e) -> absl::StatusOr<v1::HeartbeatResponse> {
        if (absl::Status st = CheckAgentOwner(caller, id); !st.ok()) return st;
        if (absl::Status st = e.Heartbeat(id); !st.ok()) return st;
        return v1::HeartbeatResponse();
      },
      Runtime::kControl);
}

void Service::OpenStream(const auth::Caller& caller, uint64_t agent_id, Reply<bool> done) {
  RunOn<bool>(
      runtime_, std::move(done),
      [this, agent_id, caller](Engine& e) -> absl::StatusOr<bool> {
        if (absl::Status st = CheckAgentOwner(caller, agent_id); !st.ok()) return st;
        if (absl::Status st = e.OpenStream(agent_id); !st.ok()) return st;
        return true;
      },
      Runtime::kControl);
}

void Service::CloseStream(uint64_t agent_id) {
  // Best effort: if the queue is full the agent's leases still expire by TTL.
  runtime_.Post([agent_id](Engine& e, Batch&) { e.CloseStream(agent_id); }, Runtime::kControl);
}

void Service::ReturnUndelivered(uint64_t agent_id, const v1::WorkItem& item) {
  std::vector<std::pair<uint64_t, uint64_t>> leases;  // task, token
  if (item.has_lease()) leases.emplace_back(item.lease().task_id(), item.lease().lease_token());
  for (const auto& l : item.leases().leases()) leases.emplace_back(l.task_id(), l.lease_token());
  if (leases.empty()) return;
  // Control traffic: admitted past the queue limit (the lease would otherwise sit until
  // its execution timeout).
  runtime_.Post(
      [agent_id, leases = std::move(leases)](Engine& e, Batch&) {
        for (const auto& [task, token] : leases) e.ReturnUndelivered(agent_id, task, token);
      },
      Runtime::kControl);
}

void Service::CompleteTask(const auth::Caller& caller, const v1::CompleteTaskRequest& req,
                           Reply<v1::Ack> done) {
  RunOn<v1::Ack>(
      runtime_, std::move(done),
      [this, req, caller](Engine& e) -> absl::StatusOr<v1::Ack> {
        if (absl::Status st = CheckAgentOwner(caller, req.agent_id()); !st.ok()) return st;
        if (absl::Status st = e.Complete(req.agent_id(), req.task_id(), req.lease_token(),
                                         req.result(), req.result_json());
            !st.ok()) {
          return st;
        }
        return v1::Ack();
      },
      Runtime::kControl);
}

void Service::CompleteTasks(const auth::Caller& caller, const v1::CompleteTasksRequest& req,
                            Reply<v1::CompleteTasksResponse> done) {
  if (req.items_size() > 10'000) {
    done(absl::InvalidArgumentError(
        absl::StrCat("items: ", req.items_size(), " completions exceed the limit of 10000")));
    return;
  }
  auto shared = std::make_shared<v1::CompleteTasksRequest>(req);
  RunOn<v1::CompleteTasksResponse>(
      runtime_, std::move(done),
      [this, shared, caller](Engine& e) -> absl::StatusOr<v1::CompleteTasksResponse> {
        if (absl::Status st = CheckAgentOwner(caller, shared->agent_id()); !st.ok()) return st;
        v1::CompleteTasksResponse resp;
        for (const auto& item : shared->items()) {
          absl::Status st = e.Complete(shared->agent_id(), item.task_id(), item.lease_token(),
                                       item.result(), item.result_json());
          resp.add_errors(st.ok() ? std::string() : std::string(st.message()));
          if (st.ok()) resp.set_accepted(resp.accepted() + 1);
        }
        return resp;
      },
      Runtime::kControl);
}

void Service::FailTask(const auth::Caller& caller, const v1::FailTaskRequest& req,
                       Reply<v1::Ack> done) {
  RunOn<v1::Ack>(
      runtime_, std::move(done),
      [this, req, caller](Engine& e) -> absl::StatusOr<v1::Ack> {
        if (absl::Status st = CheckAgentOwner(caller, req.agent_id()); !st.ok()) return st;
        if (absl::Status st = e.Fail(req.agent_id(), req.task_id(), req.lease_token(), req.error(),
                                     req.retryable());
            !st.ok()) {
          return st;
        }
        return v1::Ack();
      },
      Runtime::kControl);
}

void Service::Checkpoint(const auth::Caller& caller, const v1::CheckpointRequest& req,
                         Reply<v1::Ack> done) {
  RunOn<v1::Ack>(
      runtime_, std::move(done),
      [this, req, caller](Engine& e) -> absl::StatusOr<v1::Ack> {
        if (absl::Status st = CheckAgentOwner(caller, req.agent_id()); !st.ok()) return st;
        if (absl::Status st = e.Checkpoint(req.agent_id(), req.task_id(), req.lease_token(),
                                           req.checkpoint(), req.checkpoint_json());
            !st.ok()) {
          return st;
        }
        return v1::Ack();
      },
      Runtime::kControl);
}

void Service::ExtendLease(const auth::Caller& caller, const v1::ExtendLeaseRequest& req,
                          Reply<v1::ExtendLeaseResponse> done) {
  RunOn<v1::ExtendLeaseResponse>(
      runtime_, std::move(done),
      [this, req, caller](Engine& e) -> absl::StatusOr<v1::ExtendLeaseResponse> {
        if (absl::Status st = CheckAgentOwner(caller, req.agent_id()); !st.ok()) return st;
        auto t = e.ExtendLease(req.agent_id(), req.task_id(), req.lease_token());
        if (!t.ok()) return t.status();
        v1::ExtendLeaseResponse resp;
        resp.set_lease_expires_unix_ms(absl::ToUnixMillis(*t));
        return resp;
      },
      Runtime::kControl);
}

void Service::DeregisterAgent(const auth::Caller& caller, const v1::DeregisterAgentRequest& req,
                              Reply<v1::Ack> done) {
  RunOn<v1::Ack>(
      runtime_, std::move(done),
      [this, id = req.agent_id(), caller](Engine& e) -> absl::StatusOr<v1::Ack> {
        if (absl::Status st = CheckAgentOwner(caller, id); !st.ok()) return st;
        if (absl::Status st = e.Deregister(id); !st.ok()) return st;
        std::lock_guard<std::mutex> lk(owners_mu_);
        agent_owners_.erase(id);
        return v1::Ack();
      },
      Runtime::kControl);
}

void Service::Health(const auth::Caller& caller, Reply<v1::HealthResponse> done) {
  // Liveness: the process answers. It does not touch the engine, so a busy engine does not
  // get the server killed.
  v1::HealthResponse resp;
  resp.set_status("SERVING");
  done(resp);
}

void Service::Ready(const auth::Caller& caller, Reply<v1::HealthResponse> done) {
  // Readiness: a command makes the round trip through the engine and the store.
  RunOn<v1::HealthResponse>(
      runtime_, std::move(done), [](Engine& e) -> absl::StatusOr<v1::HealthResponse> {
        v1::HealthResponse resp;
        resp.set_status("SERVING");
        resp.set_detail(
            absl::StrCat(e.outstanding(), " of ", e.options().capacity, " outstanding tasks"));
        return resp;
      });
}

void Service::Stats(const auth::Caller& caller, Reply<v1::StatsResponse> done) {
  RunOn<v1::StatsResponse>(
      runtime_, std::move(done),
      [started = started_,
       desc = store_.Describe()](Engine& e) -> absl::StatusOr<v1::StatsResponse> {
        v1::StatsResponse r;
        for (int s = v1::TASK_STATE_WAITING; s <= v1::TASK_STATE_EXPIRED; ++s) {
          (*r.mutable_tasks_by_state())[core::StateName(static_cast<v1::TaskState>(s))] =
              e.CountInState(static_cast<v1::TaskState>(s));
        }
        for (const auto& [key, depth] : e.queue_depths()) {
          v1::QueueDepth* q = r.add_queues();
          q->set_type(key.first);
          q->set_priority(static_cast<v1::Priority>(key.second));
          q->set_depth(depth);
        }
        r.set_outstanding(e.outstanding());
        r.set_ready_held(e.CountInState(v1::TASK_STATE_READY) - e.RunnableReadyAll());
        r.set_capacity(e.options().capacity);
        int64_t slots = 0, busy = 0;
        for (const auto& [id, a] : e.agents()) {
          slots += a.max_concurrency;
          busy += static_cast<int64_t>(a.leased.size());
        }
        r.set_agents(static_cast<int64_t>(e.agents().size()));
        r.set_agent_slots(slots);
        r.set_agent_slots_busy(busy);
        const core::EngineProbe& p = e.probe();
        r.set_submitted_total(p.submitted);
        int64_t quota = 0;
        for (const auto& [tenant, q] : p.rejected_quota) quota += q.rate + q.outstanding;
        r.set_rejected_total(p.rejected_full + p.rejected_shed + p.rejected_invalid + quota);
        r.set_succeeded_total(p.succeeded);
        r.set_retries_total(p.retries);
        r.set_dead_lettered_total(p.dead_lettered);
        r.set_leases_expired_total(p.leases_expired);
        r.set_uptime_ms(absl::ToInt64Milliseconds(absl::Now() - started));
        r.set_store(desc);
        return r;
      });
}

void Service::ListDeadLetters(const auth::Caller& caller, const v1::ListDeadLettersRequest& req,
                              Reply<v1::ListTasksResponse> done) {
  done = Redacting(caller, std::move(done));
  auto tenant = NarrowTenant(caller, auth::kRead, req.tenant());
  if (!tenant.ok()) return done(tenant.status());
  RunOn<v1::ListTasksResponse>(
      runtime_, std::move(done),
      [req, tenant = *tenant](Engine& e) -> absl::StatusOr<v1::ListTasksResponse> {
        if (absl::Status st = CheckPageSize(req.page_size()); !st.ok()) return st;
        auto after = ParsePageToken(req.page_token());
        if (!after.ok()) return after.status();
        core::ListFilter f;
        f.dead_only = true;
        f.type = req.type();
        f.tenant = tenant;
        f.after = *after;
        f.limit = req.page_size() == 0 ? 100 : req.page_size();
        return Page(e.List(f));
      });
}

void Service::ReprocessDeadLetters(const auth::Caller& caller,
                                   const v1::ReprocessDeadLettersRequest& req,
                                   Reply<v1::ReprocessDeadLettersResponse> done) {
  RunOn<v1::ReprocessDeadLettersResponse>(
      runtime_, std::move(done),
      [req](Engine& e) -> absl::StatusOr<v1::ReprocessDeadLettersResponse> {
        std::vector<core::TaskId> ids(req.ids().begin(), req.ids().end());
        auto r = e.Reprocess(ids, req.all(), req.type());
        if (!r.ok()) return r.status();
        v1::ReprocessDeadLettersResponse resp;
        for (auto id : *r) resp.add_reprocessed(id);
        return resp;
      });
}

void Service::PurgeDeadLetters(const auth::Caller& caller, const v1::PurgeDeadLettersRequest& req,
                               Reply<v1::PurgeDeadLettersResponse> done) {
  RunOn<v1::PurgeDeadLettersResponse>(
      runtime_, std::move(done), [req](Engine& e) -> absl::StatusOr<v1::PurgeDeadLettersResponse> {
        std::vector<core::TaskId> ids(req.ids().begin(), req.ids().end());
        auto r = e.Purge(ids, req.all(), req.type());
        if (!r.ok()) return r.status();
        v1::PurgeDeadLettersResponse resp;
        resp.set_purged(*r);
        return resp;
      });
}

void Service::SendMessage(const auth::Caller& caller, const v1::SendMessageRequest& req,
                          Reply<v1::SendMessageResponse> done) {
  RunOn<v1::SendMessageResponse>(
      runtime_, std::move(done),
      [req](Engine& e) -> absl::StatusOr<v1::SendMessageResponse> { return e.SendMessage(req); });
}

void Service::GetUsage(const auth::Caller& caller, Reply<v1::UsageResponse> done) {
  RunOn<v1::UsageResponse>(
      runtime_, std::move(done), [](Engine& e) -> absl::StatusOr<v1::UsageResponse> {
        v1::UsageResponse r;
        for (const core::ResourceUsage& u : e.Resources()) {
          v1::ResourceUsage* o = r.add_resources();
          o->set_name(u.name);
          o->set_kind(core::ResourceKindName(u.spec.kind));
          o->set_capacity(u.spec.capacity);
          if (u.spec.kind == core::ResourceSpec::Kind::kTokenBucket) {
            o->set_refill_period_ms(absl::ToInt64Milliseconds(u.spec.refill_period));
          }
          o->set_in_use(u.in_use);
          o->set_available(u.available);
          o->set_waiting(u.waiting);
          o->set_acquired_total(u.acquired_total);
        }
        for (const auto& [key, sum] : e.costs()) {
          v1::CostSum* c = r.add_costs();
          c->set_tenant(key.first);
          c->set_type(key.second);
          c->set_cost(sum.cost);
          c->set_run_seconds(sum.run_seconds);
          c->set_attempts(sum.attempts);
          (*r.mutable_cost_by_tenant())[key.first] += sum.cost;
          (*r.mutable_cost_by_type())[key.second] += sum.cost;
        }
        for (const core::TenantUsage& t : e.Tenants()) {
          v1::TenantShare* o = r.add_tenants();
          o->set_tenant(t.tenant);
          o->set_weight(t.weight);
          o->set_ready(t.ready);
          o->set_dispatched_total(t.dispatched_total);
        }
        return r;
      });
}

void Service::ListPools(const auth::Caller& caller, Reply<v1::ListPoolsResponse> done) {
  done(pools_ == nullptr ? v1::ListPoolsResponse() : pools_->ListPools());
}

void Service::StorePools(Reply<v1::Ack> done) {
  // The API-defined pools, stored with the next batch; answered once committed.
  auto shared = std::make_shared<Reply<v1::Ack>>(std::move(done));
  const std::string json = pools_->ApiPoolsJson();
  if (!runtime_.Post([shared, json](Engine& e, Batch& batch) {
        e.SetMeta("pools", json);
        batch.AfterCommit([shared](const absl::Status& st) {
          if (st.ok()) {
            (*shared)(v1::Ack());
          } else {
            (*shared)(st);
          }
        });
      })) {
    (*shared)(Refused(runtime_));
  }
}

void Service::ApplyPool(const auth::Caller& caller, const v1::ApplyPoolRequest& req,
                        Reply<v1::Ack> done) {
  if (pools_ == nullptr) {
    done(absl::UnavailableError("pools: the server is not running its pool manager"));
    return;
  }
  absl::StatusOr<pool::PoolSpec> spec = pool::ToPoolSpec(req.pool(), "pool");
  if (!spec.ok()) {
    done(spec.status());
    return;
  }
  if (absl::Status st = pools_->Apply(*spec, req.pool()); !st.ok()) {
    done(st);
    return;
  }
  StorePools(std::move(done));
}

void Service::DeletePool(const auth::Caller& caller, const v1::DeletePoolRequest& req,
                         Reply<v1::Ack> done) {
  if (pools_ == nullptr) {
    done(absl::UnavailableError("pools: the server is not running its pool manager"));
    return;
  }
  if (absl::Status st = pools_->Remove(req.name(), req.force()); !st.ok()) {
    done(st);
    return;
  }
  StorePools(std::move(done));
}

void Service::StopPoolAgent(const auth::Caller& caller, const v1::StopPoolAgentRequest& req,
                            Reply<v1::Ack> done) {
  if (pools_ == nullptr) {
    done(absl::NotFoundError(absl::StrCat("member: no pool member \"", req.member().substr(0, 80),
                                          "\" (no pools are configured)")));
    return;
  }
  if (absl::Status st = pools_->StopMember(req.member(), req.force()); !st.ok()) {
    done(st);
    return;
  }
  done(v1::Ack());
}

void Service::ListScalingDecisions(const auth::Caller& caller,
                                   const v1::ListScalingDecisionsRequest& req,
                                   Reply<v1::ListScalingDecisionsResponse> done) {
  if (pools_ == nullptr) {
    done(absl::NotFoundError(absl::StrCat("pool: no pool named \"", req.pool().substr(0, 80),
                                          "\" (no pools are configured)")));
    return;
  }
  done(pools_->Decisions(req.pool(), req.limit()));
}

// --- load history ------------------------------------------------------------------------

namespace {

constexpr int32_t kDefaultHistoryRows = 1440;  // a day
// A page is read on the store thread while commits wait: about 10 ms at most.
constexpr int32_t kMaxHistoryRows = 10'000;
// One import is one transaction of the store thread (~100 ms at this size); 100,000
// minutes is ten weeks, more than the default retention keeps.
constexpr int kMaxImportMinutes = 100'000;
// 60 times the largest count per bucket that `drover simulate` accepts in a trace
// (sim::ParseTrace), so every trace it takes imports, seconds summed into minutes.
constexpr int64_t kMaxArrivalsPerMinute = 6'000'000'000;

int64_t UnixMinute(absl::Time t) { return absl::ToUnixSeconds(t) / 60; }

void ToProto(const store::LoadMinute& row, v1::LoadMinute* out) {
  out->set_unix_minute(row.minute);
  out->set_arrivals(row.arrivals);
  out->set_dispatches(row.dispatches);
  out->set_completions(row.completions);
  out->set_service_mean_s(row.service_mean_s);
  out->set_service_p95_s(row.service_p95_s);
  out->set_queue_depth(row.queue_depth);
  out->set_agents_starting(row.agents_starting);
  out->set_agents_idle(row.agents_idle);
  out->set_agents_busy(row.agents_busy);
  out->set_agents_draining(row.agents_draining);
}

}  // namespace

void Service::GetLoadHistory(const auth::Caller& caller, const v1::GetLoadHistoryRequest& req,
                             Reply<v1::GetLoadHistoryResponse> done) {
  if (!core::internal::ValidName(req.pool())) {
    return done(core::internal::NameError("pool", req.pool()));
  }
  const int64_t since = req.since_unix_minute();
  const int64_t until = req.until_unix_minute();
  if (since < 0) {
    return done(absl::InvalidArgumentError(
        absl::StrCat("since_unix_minute: must be >= 0 (0: from the first row), got ", since)));
  }
  if (until < 0) {
    return done(absl::InvalidArgumentError(
        absl::StrCat("until_unix_minute: must be >= 0 (0: no end), got ", until)));
  }
  if (until != 0 && until <= since) {
    return done(absl::InvalidArgumentError(absl::StrCat(
        "until_unix_minute: must be after since_unix_minute (", since, "), got ", until)));
  }
  if (req.limit() < 0 || req.limit() > kMaxHistoryRows) {
    return done(
        absl::InvalidArgumentError(absl::StrCat("limit: must be 0 (default ", kDefaultHistoryRows,
                                                ") to ", kMaxHistoryRows, ", got ", req.limit())));
  }
  const size_t limit = req.limit() == 0 ? kDefaultHistoryRows : req.limit();
  // A removed pool's history stays readable until the retention deletes it.
  const bool known = pools_ != nullptr && pools_->Exists(req.pool());
  auto shared = std::make_shared<Reply<v1::GetLoadHistoryResponse>>(std::move(done));
  // One row past the page tells whether another page follows, and where it starts.
  const bool queued = runtime_.ReadLoadHistory(
      req.pool(), since, until == 0 ? std::numeric_limits<int64_t>::max() : until,
      static_cast<int64_t>(limit) + 1,
      [shared, known, limit, pool = req.pool()](Runtime::LoadRows rows) {
        if (!rows.ok()) return (*shared)(rows.status());
        if (rows->empty() && !known) {
          return (*shared)(absl::NotFoundError(absl::StrCat(
              "pool: no pool named \"", pool, "\" and no load history for it in that range")));
        }
        v1::GetLoadHistoryResponse resp;
        for (size_t i = 0; i < rows->size() && i < limit; ++i) {
          ToProto((*rows)[i], resp.add_minutes());
        }
        if (rows->size() > limit) resp.set_next_since_unix_minute((*rows)[limit].minute);
        (*shared)(std::move(resp));
      });
  if (!queued) (*shared)(Refused(runtime_));
}

void Service::ImportLoadHistory(const auth::Caller& caller, const v1::ImportLoadHistoryRequest& req,
                                Reply<v1::ImportLoadHistoryResponse> done) {
  if (!core::internal::ValidName(req.pool())) {
    return done(core::internal::NameError("pool", req.pool()));
  }
  // History of a pool that does not exist would feed no forecast: most likely a typo.
  if (pools_ == nullptr || !pools_->Exists(req.pool())) {
    return done(
        absl::NotFoundError(absl::StrCat("pool: no pool named \"", req.pool(),
                                         "\" (create it first: load history is kept per pool)")));
  }
  const int64_t n = req.arrivals_size();
  if (n == 0) return done(absl::InvalidArgumentError("arrivals: at least one minute is required"));
  if (n > kMaxImportMinutes) {
    return done(absl::InvalidArgumentError(
        absl::StrCat("arrivals: ", n, " minutes exceeds the limit of ", kMaxImportMinutes,
                     " per import; import a longer history in parts")));
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t a = req.arrivals(static_cast<int>(i));
    if (a < 0 || a > kMaxArrivalsPerMinute) {
      return done(absl::InvalidArgumentError(absl::StrCat(
          "arrivals[", i, "]: ", a, " is not a count from 0 to ", kMaxArrivalsPerMinute)));
    }
  }
  const int64_t start = req.start_unix_minute();
  const absl::Time now = absl::Now();
  const int64_t current = UnixMinute(now);
  if (start < 0 || start > current - (n - 1)) {
    return done(absl::InvalidArgumentError(
        absl::StrCat("start_unix_minute: ", start, " puts the last of ", n, " minutes at ",
                     start + n - 1, ", after the current minute ", current,
                     " (history is the past; at most ", current - (n - 1), ")")));
  }
  if (const int64_t first_kept = runtime_.FirstKeptLoadMinute(now); start < first_kept) {
    return done(absl::InvalidArgumentError(absl::StrCat(
        "start_unix_minute: ", start, " is older than load_history_retention_ms keeps (the ",
        "first minute kept now is ", first_kept, "): those rows would be pruned at once")));
  }
  std::vector<store::LoadMinute> rows(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    rows[i].pool = req.pool();
    rows[i].minute = start + i;
    rows[i].arrivals = req.arrivals(static_cast<int>(i));
  }
  auto shared = std::make_shared<Reply<v1::ImportLoadHistoryResponse>>(std::move(done));
  absl::Status st = runtime_.AppendLoadHistory(
      std::move(rows), [this, shared, n, pool = req.pool()](const absl::Status& st) {
        if (!st.ok()) return (*shared)(st);
        // The pool forecasts from it at once (its history is read again).
        if (pools_ != nullptr) pools_->Reseed(pool);
        v1::ImportLoadHistoryResponse resp;
        resp.set_rows_written(n);
        (*shared)(std::move(resp));
      });
  if (!st.ok()) (*shared)(st);
}

void Service::GetCluster(const auth::Caller& caller, const v1::GetClusterRequest&,
                         Reply<v1::ClusterStatus> done) {
  if (!cluster_) return done(absl::UnavailableError("server is starting; retry shortly"));
  done(cluster_());
}

void Service::ListAgents(const auth::Caller& caller, Reply<v1::ListAgentsResponse> done) {
  RunOn<v1::ListAgentsResponse>(runtime_, std::move(done),
                                [](Engine& e) -> absl::StatusOr<v1::ListAgentsResponse> {
                                  v1::ListAgentsResponse r;
                                  for (const auto& [id, a] : e.agents()) {
                                    v1::AgentStatus* o = r.add_agents();
                                    o->set_id(id);
                                    o->set_name(a.name);
                                    for (const std::string& t : a.types) o->add_types(t);
                                    o->set_max_concurrency(a.max_concurrency);
                                    o->set_cost_factor(a.cost_factor);
                                    o->set_leased(static_cast<int32_t>(a.leased.size()));
                                    o->set_breaker(core::BreakerName(a.breaker));
                                    o->set_connected(a.stream_open);
                                    o->mutable_labels()->insert(a.labels.begin(), a.labels.end());
                                    o->set_last_seen_unix_ms(absl::ToUnixMillis(a.last_seen));
                                  }
                                  return r;
                                });
}

}  // namespace drover::api
