#include "api/service.h"

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "api/pool_metrics.h"
#include "core/codec.h"
#include "core/names.h"
#include "obs/metrics.h"

namespace drover::api {
namespace {

using core::Engine;

absl::Status Busy();

// Why a command could not be queued.
absl::Status Refused(const Runtime& runtime) {
  if (runtime.stopping()) return absl::UnavailableError("server is shutting down; retry shortly");
  if (absl::Status st = runtime.store_status(); !st.ok()) return st;
  return Busy();
}

absl::Status Busy() {
  absl::Status st =
      absl::ResourceExhaustedError("server busy: the command queue is full; retry shortly");
  st.SetPayload(core::kRetryAfterPayload, absl::Cord("100"));
  return st;
}

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

v1::ListTasksResponse Page(const std::vector<const v1::Task*>& tasks, int limit) {
  v1::ListTasksResponse resp;
  for (const v1::Task* t : tasks) *resp.add_tasks() = *t;
  if (static_cast<int>(tasks.size()) == limit && !tasks.empty()) {
    resp.set_next_page_token(absl::StrCat(tasks.back()->id()));
  }
  return resp;
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

void Service::SubmitTask(const v1::SubmitTaskRequest& req, Reply<v1::SubmitTaskResponse> done) {
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

void Service::SubmitTasks(const v1::SubmitTasksRequest& req, Reply<v1::SubmitTasksResponse> done) {
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

void Service::GetTask(const v1::GetTaskRequest& req, Reply<v1::Task> done) {
  auto shared = std::make_shared<Reply<v1::Task>>(std::move(done));
  store::Store& store = store_;
  const bool queued = runtime_.Post([shared, id = req.id(), &store](Engine& e, Batch& batch) {
    auto t = e.Get(id);
    if (!t.ok()) {
      FromStore(batch, store, id, t.status(),
                [shared](absl::StatusOr<v1::Task> r) { (*shared)(std::move(r)); });
      return;
    }
    batch.AfterCommit([shared, task = **t](const absl::Status& st) {
      if (!st.ok()) return (*shared)(st);
      (*shared)(task);
    });
  });
  if (!queued) (*shared)(Refused(runtime_));
}

void Service::ListTasks(const v1::ListTasksRequest& req, Reply<v1::ListTasksResponse> done) {
  RunOn<v1::ListTasksResponse>(
      runtime_, std::move(done), [req](Engine& e) -> absl::StatusOr<v1::ListTasksResponse> {
        if (absl::Status st = CheckPageSize(req.page_size()); !st.ok()) return st;
        if (!v1::TaskState_IsValid(req.state())) {
          return absl::InvalidArgumentError(absl::StrCat("state: unknown value ", req.state()));
        }
        if (!v1::Priority_IsValid(req.priority())) {
          return absl::InvalidArgumentError(
              absl::StrCat("priority: unknown value ", req.priority()));
        }
        auto after = ParsePageToken(req.page_token());
        if (!after.ok()) return after.status();
        core::ListFilter f;
        f.state = req.state();
        f.type = req.type();
        f.tenant = req.tenant();
        f.priority = req.priority();
        f.after = *after;
        f.limit = req.page_size() == 0 ? 100 : req.page_size();
        return Page(e.List(f), f.limit);
      });
}

void Service::CancelTask(const v1::CancelTaskRequest& req, Reply<v1::Task> done) {
  RunOn<v1::Task>(runtime_, std::move(done), [req](Engine& e) -> absl::StatusOr<v1::Task> {
    auto t = e.Cancel(req.id(), req.reason());
    if (!t.ok()) return t.status();
    return **t;
  });
}

void Service::WaitTask(const v1::WaitTaskRequest& req, Reply<v1::WaitTaskResponse> done) {
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
  const bool queued = runtime_.Post([shared, id = req.id(), timeout, &runtime, &store](
                                        Engine& e, Batch& batch) {
    auto t = e.Get(id);
    if (!t.ok()) {
      // Evicted from memory means finished: answer from the store at once.
      FromStore(batch, store, id, t.status(), [shared](absl::StatusOr<v1::Task> r) {
        if (!r.ok()) return (*shared)(r.status());
        v1::WaitTaskResponse resp;
        *resp.mutable_task() = std::move(*r);
        (*shared)(std::move(resp));
      });
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

void Service::SubmitWorkflow(const v1::SubmitWorkflowRequest& req, Reply<v1::Workflow> done) {
  auto spec = std::make_shared<v1::WorkflowSpec>(req.workflow());
  RunOn<v1::Workflow>(runtime_, std::move(done), [spec](Engine& e) -> absl::StatusOr<v1::Workflow> {
    auto w = e.SubmitWorkflow(*spec);
    if (!w.ok()) return w.status();
    return **w;
  });
}

void Service::SubmitMapReduce(const v1::SubmitMapReduceRequest& req, Reply<v1::Workflow> done) {
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

void Service::GetWorkflow(const v1::GetWorkflowRequest& req, Reply<v1::Workflow> done) {
  auto shared = std::make_shared<Reply<v1::Workflow>>(std::move(done));
  store::Store& store = store_;
  const bool queued = runtime_.Post([shared, id = req.id(), &store](Engine& e, Batch& batch) {
    auto w = e.DescribeWorkflow(id);
    if (!w.ok()) {
      WorkflowFromStore(batch, store, id, w.status(),
                        [shared](absl::StatusOr<v1::Workflow> r) { (*shared)(std::move(r)); });
      return;
    }
    batch.AfterCommit([shared, wf = std::move(*w)](const absl::Status& st) {
      if (!st.ok()) return (*shared)(st);
      (*shared)(wf);
    });
  });
  if (!queued) (*shared)(Refused(runtime_));
}

void Service::ListWorkflows(const v1::ListWorkflowsRequest& req,
                            Reply<v1::ListWorkflowsResponse> done) {
  RunOn<v1::ListWorkflowsResponse>(
      runtime_, std::move(done), [req](Engine& e) -> absl::StatusOr<v1::ListWorkflowsResponse> {
        if (absl::Status st = CheckPageSize(req.page_size()); !st.ok()) return st;
        if (!v1::WorkflowState_IsValid(req.state())) {
          return absl::InvalidArgumentError(absl::StrCat("state: unknown value ", req.state()));
        }
        auto after = ParsePageToken(req.page_token());
        if (!after.ok()) return after.status();
        core::WorkflowFilter f;
        f.state = req.state();
        f.tenant = req.tenant();
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

void Service::CancelWorkflow(const v1::CancelWorkflowRequest& req, Reply<v1::Workflow> done) {
  auto shared = std::make_shared<Reply<v1::Workflow>>(std::move(done));
  store::Store& store = store_;
  const bool queued = runtime_.Post([shared, req, &store](Engine& e, Batch& batch) {
    auto w = e.CancelWorkflow(req.id(), req.reason());
    if (!w.ok()) {
      if (w.status().code() != absl::StatusCode::kNotFound) {
        batch.AfterCommit([shared, st = w.status()](const absl::Status&) { (*shared)(st); });
        return;
      }
      // Not in memory: finished long ago (in the store), or unknown.
      WorkflowFromStore(
          batch, store, req.id(), w.status(),
          [shared, id = req.id()](absl::StatusOr<v1::Workflow> r) {
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

void Service::WaitWorkflow(const v1::WaitWorkflowRequest& req,
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
  const bool queued =
      runtime_.Post([shared, id = req.id(), timeout, &runtime, &store](Engine& e, Batch& batch) {
        auto w = e.GetWorkflow(id);
        if (!w.ok()) {
          // Not in memory: it ended long ago (the store has it), or it is unknown.
          WorkflowFromStore(batch, store, id, w.status(), [shared](absl::StatusOr<v1::Workflow> r) {
            if (!r.ok()) return (*shared)(r.status());
            v1::WaitWorkflowResponse resp;
            *resp.mutable_workflow() = std::move(*r);
            (*shared)(std::move(resp));
          });
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

void Service::RegisterAgent(const v1::RegisterAgentRequest& req,
                            Reply<v1::RegisterAgentResponse> done) {
  RunOn<v1::RegisterAgentResponse>(
      runtime_, std::move(done), [req](Engine& e) -> absl::StatusOr<v1::RegisterAgentResponse> {
        auto id = e.RegisterAgent(req);
        if (!id.ok()) return id.status();
        v1::RegisterAgentResponse resp;
        resp.set_agent_id(*id);
        const int64_t ttl = absl::ToInt64Milliseconds(e.options().lease_ttl);
        resp.set_lease_ttl_ms(ttl);
        resp.set_heartbeat_interval_ms(std::max<int64_t>(100, ttl / 3));
        return resp;
      });
}

void Service::Heartbeat(const v1::HeartbeatRequest& req, Reply<v1::HeartbeatResponse> done) {
  RunOn<v1::HeartbeatResponse>(
      runtime_, std::move(done),
      [id = req.agent_id()](Engine& e) -> absl::StatusOr<v1::HeartbeatResponse> {
        if (absl::Status st = e.Heartbeat(id); !st.ok()) return st;
        return v1::HeartbeatResponse();
      },
      Runtime::kControl);
}

void Service::OpenStream(uint64_t agent_id, Reply<bool> done) {
  RunOn<bool>(
      runtime_, std::move(done),
      [agent_id](Engine& e) -> absl::StatusOr<bool> {
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

void Service::CompleteTask(const v1::CompleteTaskRequest& req, Reply<v1::Ack> done) {
  RunOn<v1::Ack>(
      runtime_, std::move(done),
      [req](Engine& e) -> absl::StatusOr<v1::Ack> {
        if (absl::Status st =
                e.Complete(req.agent_id(), req.task_id(), req.lease_token(), req.result());
            !st.ok()) {
          return st;
        }
        return v1::Ack();
      },
      Runtime::kControl);
}

void Service::CompleteTasks(const v1::CompleteTasksRequest& req,
                            Reply<v1::CompleteTasksResponse> done) {
  if (req.items_size() > 10'000) {
    done(absl::InvalidArgumentError(
        absl::StrCat("items: ", req.items_size(), " completions exceed the limit of 10000")));
    return;
  }
  auto shared = std::make_shared<v1::CompleteTasksRequest>(req);
  RunOn<v1::CompleteTasksResponse>(
      runtime_, std::move(done),
      [shared](Engine& e) -> absl::StatusOr<v1::CompleteTasksResponse> {
        v1::CompleteTasksResponse resp;
        for (const auto& item : shared->items()) {
          absl::Status st =
              e.Complete(shared->agent_id(), item.task_id(), item.lease_token(), item.result());
          resp.add_errors(st.ok() ? std::string() : std::string(st.message()));
          if (st.ok()) resp.set_accepted(resp.accepted() + 1);
        }
        return resp;
      },
      Runtime::kControl);
}

void Service::FailTask(const v1::FailTaskRequest& req, Reply<v1::Ack> done) {
  RunOn<v1::Ack>(
      runtime_, std::move(done),
      [req](Engine& e) -> absl::StatusOr<v1::Ack> {
        if (absl::Status st = e.Fail(req.agent_id(), req.task_id(), req.lease_token(), req.error(),
                                     req.retryable());
            !st.ok()) {
          return st;
        }
        return v1::Ack();
      },
      Runtime::kControl);
}

void Service::Checkpoint(const v1::CheckpointRequest& req, Reply<v1::Ack> done) {
  RunOn<v1::Ack>(
      runtime_, std::move(done),
      [req](Engine& e) -> absl::StatusOr<v1::Ack> {
        if (absl::Status st =
                e.Checkpoint(req.agent_id(), req.task_id(), req.lease_token(), req.checkpoint());
            !st.ok()) {
          return st;
        }
        return v1::Ack();
      },
      Runtime::kControl);
}

void Service::ExtendLease(const v1::ExtendLeaseRequest& req, Reply<v1::ExtendLeaseResponse> done) {
  RunOn<v1::ExtendLeaseResponse>(
      runtime_, std::move(done),
      [req](Engine& e) -> absl::StatusOr<v1::ExtendLeaseResponse> {
        auto t = e.ExtendLease(req.agent_id(), req.task_id(), req.lease_token());
        if (!t.ok()) return t.status();
        v1::ExtendLeaseResponse resp;
        resp.set_lease_expires_unix_ms(absl::ToUnixMillis(*t));
        return resp;
      },
      Runtime::kControl);
}

void Service::DeregisterAgent(const v1::DeregisterAgentRequest& req, Reply<v1::Ack> done) {
  RunOn<v1::Ack>(
      runtime_, std::move(done),
      [id = req.agent_id()](Engine& e) -> absl::StatusOr<v1::Ack> {
        if (absl::Status st = e.Deregister(id); !st.ok()) return st;
        return v1::Ack();
      },
      Runtime::kControl);
}

void Service::Health(Reply<v1::HealthResponse> done) {
  // Liveness: the process answers. It does not touch the engine, so a busy engine does not
  // get the server killed.
  v1::HealthResponse resp;
  resp.set_status("SERVING");
  done(resp);
}

void Service::Ready(Reply<v1::HealthResponse> done) {
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

void Service::Stats(Reply<v1::StatsResponse> done) {
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
        r.set_rejected_total(p.rejected_full + p.rejected_shed + p.rejected_invalid);
        r.set_succeeded_total(p.succeeded);
        r.set_retries_total(p.retries);
        r.set_dead_lettered_total(p.dead_lettered);
        r.set_leases_expired_total(p.leases_expired);
        r.set_uptime_ms(absl::ToInt64Milliseconds(absl::Now() - started));
        r.set_store(desc);
        return r;
      });
}

void Service::ListDeadLetters(const v1::ListDeadLettersRequest& req,
                              Reply<v1::ListTasksResponse> done) {
  RunOn<v1::ListTasksResponse>(runtime_, std::move(done),
                               [req](Engine& e) -> absl::StatusOr<v1::ListTasksResponse> {
                                 if (absl::Status st = CheckPageSize(req.page_size()); !st.ok())
                                   return st;
                                 auto after = ParsePageToken(req.page_token());
                                 if (!after.ok()) return after.status();
                                 core::ListFilter f;
                                 f.dead_only = true;
                                 f.type = req.type();
                                 f.tenant = req.tenant();
                                 f.after = *after;
                                 f.limit = req.page_size() == 0 ? 100 : req.page_size();
                                 return Page(e.List(f), f.limit);
                               });
}

void Service::ReprocessDeadLetters(const v1::ReprocessDeadLettersRequest& req,
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

void Service::PurgeDeadLetters(const v1::PurgeDeadLettersRequest& req,
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

void Service::SendMessage(const v1::SendMessageRequest& req, Reply<v1::SendMessageResponse> done) {
  RunOn<v1::SendMessageResponse>(
      runtime_, std::move(done),
      [req](Engine& e) -> absl::StatusOr<v1::SendMessageResponse> { return e.SendMessage(req); });
}

void Service::GetUsage(Reply<v1::UsageResponse> done) {
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

void Service::ListPools(Reply<v1::ListPoolsResponse> done) {
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

void Service::ApplyPool(const v1::ApplyPoolRequest& req, Reply<v1::Ack> done) {
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

void Service::DeletePool(const v1::DeletePoolRequest& req, Reply<v1::Ack> done) {
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

void Service::StopPoolAgent(const v1::StopPoolAgentRequest& req, Reply<v1::Ack> done) {
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

void Service::ListScalingDecisions(const v1::ListScalingDecisionsRequest& req,
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

void Service::GetLoadHistory(const v1::GetLoadHistoryRequest& req,
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

void Service::ImportLoadHistory(const v1::ImportLoadHistoryRequest& req,
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

void Service::GetCluster(const v1::GetClusterRequest&, Reply<v1::ClusterStatus> done) {
  if (!cluster_) return done(absl::UnavailableError("server is starting; retry shortly"));
  done(cluster_());
}

void Service::ListAgents(Reply<v1::ListAgentsResponse> done) {
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

void Service::Metrics(Reply<std::string> done) {
  auto shared = std::make_shared<Reply<std::string>>(std::move(done));
  store::Store& store = store_;
  Runtime& runtime = runtime_;
  pool::PoolManager* pools = pools_;
  const bool queued = runtime_.Post([shared, &store, &runtime, pools](Engine& e, Batch& batch) {
    obs::PromWriter w;
    w.Family("drover_tasks", "gauge", "Tasks known to the engine, by state.");
    for (int s = v1::TASK_STATE_WAITING; s <= v1::TASK_STATE_EXPIRED; ++s) {
      w.Sample({{"state", core::StateName(static_cast<v1::TaskState>(s))}},
               static_cast<double>(e.CountInState(static_cast<v1::TaskState>(s))));
    }
    w.Family("drover_queue_depth", "gauge", "Ready tasks by agent type and priority.");
    for (const auto& [key, depth] : e.queue_depths()) {
      w.Sample({{"type", key.first},
                {"priority", core::PriorityName(static_cast<v1::Priority>(key.second))}},
               static_cast<double>(depth));
    }
    w.Gauge("drover_outstanding_tasks", "Non-terminal tasks (admission control counts these).",
            static_cast<double>(e.outstanding()));
    w.Gauge("drover_capacity_tasks", "Configured capacity of outstanding tasks.",
            static_cast<double>(e.options().capacity));
    const core::EngineProbe& p = e.probe();
    w.Counter("drover_tasks_submitted_total", "Tasks accepted.", p.submitted);
    w.Counter("drover_tasks_deduplicated_total",
              "Submissions answered with an earlier task by idempotency key.", p.deduplicated);
    w.Family("drover_tasks_rejected_total", "counter", "Submissions refused, by reason.");
    w.Sample({{"reason", "queue_full"}}, p.rejected_full);
    w.Sample({{"reason", "load_shedding"}}, p.rejected_shed);
    w.Sample({{"reason", "invalid"}}, p.rejected_invalid);
    w.Counter("drover_tasks_dispatched_total", "Leases handed to agents.", p.dispatched);
    w.Counter("drover_tasks_succeeded_total", "Tasks completed successfully.", p.succeeded);
    w.Counter("drover_task_attempts_failed_total", "Attempts counted as failures.",
              p.failed_attempts);
    w.Counter("drover_task_retries_total", "Tasks queued again after a failed attempt.", p.retries);
    w.Counter("drover_leases_expired_total", "Leases that expired without a heartbeat.",
              p.leases_expired);
    w.Counter("drover_tasks_timed_out_total", "Attempts past their execution timeout.",
              p.timed_out);
    w.Counter("drover_tasks_dead_lettered_total", "Tasks moved to the dead-letter queue.",
              p.dead_lettered);
    w.Counter("drover_tasks_canceled_total", "Tasks canceled.", p.canceled);
    w.Counter("drover_tasks_expired_total", "Tasks not started by their deadline.", p.expired);
    w.Counter("drover_stale_reports_total",
              "Completions, failures, checkpoints and lease extensions refused for a stale "
              "lease token.",
              p.stale_reports);
    w.Counter("drover_dead_letters_purged_total", "Dead letters deleted for good.", p.purged);
    w.Counter("drover_dead_letters_reprocessed_total", "Dead letters queued again.", p.reprocessed);
    w.Counter("drover_workflows_evicted_total",
              "Finished workflows dropped from memory with their last task (still in the store).",
              p.workflows_evicted);
    w.Counter("drover_tasks_evicted_total",
              "Finished tasks dropped from memory after their retention (kept in the store).",
              p.evicted);
    w.Family("drover_workflows", "gauge",
             "Workflows (and map-reduce jobs) in memory by state (a finished one leaves with its "
             "last task).");
    const std::array<int64_t, 5> wf = e.WorkflowsByState();
    for (int s = v1::WORKFLOW_STATE_RUNNING; s <= v1::WORKFLOW_STATE_CANCELED; ++s) {
      w.Sample({{"state", core::WorkflowStateName(static_cast<v1::WorkflowState>(s))}},
               static_cast<double>(wf[s]));
    }
    w.Counter("drover_workflows_submitted_total", "Workflows and map-reduce jobs accepted.",
              p.workflows_submitted);
    w.Family("drover_workflow_critical_path_seconds", "gauge",
             "Expected time left on the longest remaining path of a running workflow (the 100 "
             "oldest running workflows).");
    core::WorkflowFilter running;
    running.state = v1::WORKFLOW_STATE_RUNNING;
    running.limit = 100;
    std::vector<core::WorkflowId> running_ids;
    for (const v1::Workflow* rw : e.ListWorkflows(running)) running_ids.push_back(rw->id());
    for (core::WorkflowId id : running_ids) {
      absl::StatusOr<v1::Workflow> d = e.DescribeWorkflow(id);
      if (d.ok()) {
        w.Sample({{"workflow", absl::StrCat(id)}},
                 static_cast<double>(d->critical_path_ms()) / 1000.0);
      }
    }
    w.Family("drover_tasks_canceled_by_dependency_total", "counter",
             "Tasks canceled because a parent did not succeed, or by their workflow's fail_fast.");
    w.Sample({{"cause", "parent_failed"}}, p.canceled_by_parent);
    w.Sample({{"cause", "fail_fast"}}, p.canceled_by_fail_fast);
    w.Family("drover_dispatch_latency_seconds", "histogram",
             "Time from a task becoming ready to its lease.");
    w.HistogramSample({}, p.dispatch_latency);
    w.Family("drover_completion_latency_seconds", "histogram", "Time from submission to success.");
    w.HistogramSample({}, p.completion_latency);
    w.Family("drover_task_run_seconds", "histogram", "Time an attempt held its lease.");
    w.HistogramSample({}, p.run_time);
    int64_t slots = 0, busy = 0, streams = 0;
    for (const auto& [id, a] : e.agents()) {
      slots += a.max_concurrency;
      busy += static_cast<int64_t>(a.leased.size());
      streams += a.stream_open ? 1 : 0;
    }
    w.Gauge("drover_agents", "Registered agents.", static_cast<double>(e.agents().size()));
    int64_t breakers[3] = {0, 0, 0};
    for (const auto& [id, a] : e.agents()) breakers[static_cast<int>(a.breaker)]++;
    w.Family("drover_agent_breakers", "gauge", "Registered agents by circuit breaker state.");
    for (core::Breaker b :
         {core::Breaker::kClosed, core::Breaker::kOpen, core::Breaker::kHalfOpen}) {
      w.Sample({{"state", core::BreakerName(b)}},
               static_cast<double>(breakers[static_cast<int>(b)]));
    }
    w.Family("drover_breaker_transitions_total", "counter",
             "Circuit breaker transitions of agents, by the state entered.");
    w.Sample({{"to", "open"}}, p.breaker_opened);
    w.Sample({{"to", "half_open"}}, p.breaker_half_opened);
    w.Sample({{"to", "closed"}}, p.breaker_closed);
    w.Counter("drover_agent_messages_sent_total", "SendMessage calls accepted.", p.messages_sent);
    w.Counter("drover_agent_messages_pushed_total",
              "Messages pushed to connected agents (one per agent reached).", p.messages_pushed);
    w.Counter("drover_task_failures_blamed_on_agent_total",
              "Failed attempts not counted against their task: the agent's breaker was at fault.",
              p.failures_blamed_on_agent);
    w.Counter("drover_tasks_preempted_total",
              "Low or background attempts stopped for a critical task (not counted).", p.preempted);
    w.Family("drover_tasks_held_total", "counter",
             "Times a ready task was held back: a named resource, or no agent within its cost "
             "budget.");
    w.Sample({{"reason", "resource"}}, p.resource_waits);
    w.Sample({{"reason", "cost_budget"}}, p.budget_waits);
    w.Gauge("drover_tasks_ready_held",
            "READY tasks held back now: waiting for a named resource or an agent within budget.",
            static_cast<double>(e.CountInState(v1::TASK_STATE_READY) - e.RunnableReadyAll()));
    w.Counter("drover_tasks_budget_exhausted_total",
              "Tasks dead-lettered because their attempts spent their cost budget.",
              p.budget_exhausted);
    const std::vector<core::ResourceUsage> resources = e.Resources();
    w.Family("drover_resource_capacity", "gauge", "Capacity of a named resource.");
    for (const core::ResourceUsage& u : resources) {
      w.Sample({{"resource", u.name}, {"kind", core::ResourceKindName(u.spec.kind)}},
               static_cast<double>(u.spec.capacity));
    }
    w.Family("drover_resource_in_use", "gauge",
             "Semaphore units held by running attempts (token buckets: 0).");
    for (const core::ResourceUsage& u : resources) {
      w.Sample({{"resource", u.name}}, static_cast<double>(u.in_use));
    }
    w.Family("drover_resource_available", "gauge",
             "Free semaphore units, or tokens in a bucket now.");
    for (const core::ResourceUsage& u : resources) w.Sample({{"resource", u.name}}, u.available);
    w.Family("drover_resource_waiting_tasks", "gauge", "Ready tasks held back for a resource.");
    for (const core::ResourceUsage& u : resources) {
      w.Sample({{"resource", u.name}}, static_cast<double>(u.waiting));
    }
    w.Family("drover_resource_acquired_total", "counter", "Attempts that took the resource.");
    for (const core::ResourceUsage& u : resources) {
      w.Sample({{"resource", u.name}}, static_cast<double>(u.acquired_total));
    }
    w.Family("drover_task_cost_total", "counter",
             "Actual cost of attempts (agent cost_factor x run seconds), by tenant and type.");
    for (const auto& [key, sum] : e.costs()) {
      w.Sample({{"tenant", key.first}, {"type", key.second}}, sum.cost);
    }
    w.Family("drover_task_attempt_seconds_total", "counter",
             "Run time of attempts, by tenant and type.");
    for (const auto& [key, sum] : e.costs()) {
      w.Sample({{"tenant", key.first}, {"type", key.second}}, sum.run_seconds);
    }
    const std::vector<core::TenantUsage> tenants = e.Tenants();
    w.Family("drover_tenant_ready_tasks", "gauge", "Ready tasks in the queues, by tenant.");
    for (const core::TenantUsage& t : tenants) {
      w.Sample({{"tenant", t.tenant}}, static_cast<double>(t.ready));
    }
    w.Family("drover_tenant_dispatched_total", "counter", "Leases handed out, by tenant.");
    for (const core::TenantUsage& t : tenants) {
      w.Sample({{"tenant", t.tenant}}, static_cast<double>(t.dispatched_total));
    }
    // For an external HPA or KEDA: the same inputs drover's autoscaler uses.
    w.Family("task_queue_depth", "gauge", "Ready tasks by priority (all types).");
    {
      std::array<int64_t, 6> by_priority{};
      for (const auto& [key, depth] : e.queue_depths()) by_priority[key.second] += depth;
      for (int p = v1::PRIORITY_CRITICAL; p <= v1::PRIORITY_BACKGROUND; ++p) {
        w.Sample({{"priority", core::PriorityName(static_cast<v1::Priority>(p))}},
                 static_cast<double>(by_priority[p]));
      }
    }
    if (pools != nullptr) {
      const v1::ListPoolsResponse ps = pools->ListPools();
      w.Family("drover_pool_agents", "gauge", "Agents of a pool by state.");
      for (const v1::PoolStatus& p : ps.pools()) {
        w.Sample({{"pool", p.name()}, {"state", "starting"}}, p.starting());
        w.Sample({{"pool", p.name()}, {"state", "idle"}}, p.idle());
        w.Sample({{"pool", p.name()}, {"state", "busy"}}, p.busy());
        w.Sample({{"pool", p.name()}, {"state", "draining"}}, p.draining());
      }
      w.Family("drover_pool_scaling_decisions_total", "counter",
               "Autoscaler decisions of a pool, by the rule that settled them.");
      for (const v1::PoolStatus& p : ps.pools()) {
        for (const auto& [rule, n] : p.decisions_by_rule()) {
          w.Sample({{"pool", p.name()}, {"rule", rule}}, static_cast<double>(n));
        }
      }
      w.Family("drover_pool_desired_agents", "gauge", "The autoscaler's last decision per pool.");
      for (const v1::PoolStatus& p : ps.pools()) w.Sample({{"pool", p.name()}}, p.desired());
      w.Family("pending_tasks_per_agent", "gauge",
               "Ready tasks of a pool's types per agent of the pool (the HPA metric).");
      for (const v1::PoolStatus& p : ps.pools()) {
        const int agents = p.starting() + p.idle() + p.busy();
        w.Sample({{"pool", p.name()}}, agents > 0 ? static_cast<double>(p.pending()) / agents
                                                  : static_cast<double>(p.pending()));
      }
      w.Family("agent_utilization_ratio", "gauge", "Busy slots over slots of a pool's agents.");
      for (const v1::PoolStatus& p : ps.pools()) w.Sample({{"pool", p.name()}}, p.utilization());
      w.Family("drover_pool_agents_started_total", "counter", "Agents a pool started.");
      for (const v1::PoolStatus& p : ps.pools()) w.Sample({{"pool", p.name()}}, p.started_total());
      w.Family("drover_pool_agents_crashed_total", "counter", "Pool agents that exited unasked.");
      for (const v1::PoolStatus& p : ps.pools()) w.Sample({{"pool", p.name()}}, p.crashed_total());
      w.Family("drover_pool_agents_retired_total", "counter",
               "Pool agents replaced after max_uses attempts.");
      for (const v1::PoolStatus& p : ps.pools()) w.Sample({{"pool", p.name()}}, p.retired_total());
      w.Family("drover_pool_agent_seconds_total", "counter",
               "Agent time a pool has run (paid), in seconds.");
      for (const v1::PoolStatus& p : ps.pools()) {
        w.Sample({{"pool", p.name()}}, p.agent_hours() * 3600);
      }
      w.Family("drover_pool_spend_total", "counter",
               "What a pool's agents have cost so far (agent-hours x price per agent-hour).");
      for (const v1::PoolStatus& p : ps.pools()) w.Sample({{"pool", p.name()}}, p.spend());
      w.Family("drover_pool_burn_rate", "gauge", "What a pool's agents cost per hour now.");
      for (const v1::PoolStatus& p : ps.pools()) w.Sample({{"pool", p.name()}}, p.burn_rate());
      w.Gauge("drover_fleet_burn_rate", "What every pool's agents cost per hour now.",
              ps.fleet_burn_rate());
      w.Family("drover_pool_cold_start_seconds", "gauge",
               "Mean time from starting a pool agent to its registration.");
      for (const v1::PoolStatus& p : ps.pools()) {
        w.Sample({{"pool", p.name()}}, p.cold_start_ms_avg() / 1000.0);
      }
      w.Family("drover_pool_unhealthy_total", "counter",
               "Pool agents replaced after failing their health command.");
      for (const v1::PoolStatus& p : ps.pools())
        w.Sample({{"pool", p.name()}}, p.unhealthy_total());
      WritePredictivePoolMetrics(ps, w);
      const std::vector<pool::PoolController::Latencies> lat = pools->Latencies();
      w.Family("drover_pool_acquire_seconds", "histogram",
               "From a task being ready to a pool agent taking it; start=\"warm\": the agent "
               "was running already, \"cold\": the task waited for an agent to start.");
      for (const auto& l : lat) {
        w.HistogramSample({{"pool", l.pool}, {"start", "warm"}}, l.acquire_warm);
        w.HistogramSample({{"pool", l.pool}, {"start", "cold"}}, l.acquire_cold);
      }
      w.Family("drover_pool_agent_start_seconds", "histogram",
               "From starting a pool agent to its registration (its cold start).");
      for (const auto& l : lat) w.HistogramSample({{"pool", l.pool}}, l.agent_start);
    }
    w.Gauge("drover_agents_connected", "Agents with an open work stream.",
            static_cast<double>(streams));
    w.Gauge("drover_agent_slots", "Task slots of registered agents.", static_cast<double>(slots));
    w.Gauge("drover_agent_slots_busy", "Task slots holding a lease.", static_cast<double>(busy));
    w.Gauge("drover_command_queue_depth", "Requests waiting for the engine thread.",
            static_cast<double>(runtime.queue_depth()));
    auto text = std::make_shared<std::string>(w.text());
    // Store and runtime figures are read on the store thread, which owns them.
    batch.AfterCommit([shared, text, &store, &runtime](const absl::Status&) {
      obs::PromWriter s;
      const store::StoreStats ss = store.Stats();
      const RuntimeStats rs = runtime.stats();
      s.Counter("drover_store_commits_total", "Store transactions committed.", ss.commits);
      s.Counter("drover_store_rows_written_total", "Task rows written.", ss.rows_written);
      s.Counter("drover_store_commit_failures_total", "Store transactions that failed.",
                rs.commit_failures);
      s.Counter("drover_store_commit_retries_total",
                "Commits sent again because the store was unavailable (PostgreSQL down).",
                rs.commit_retries);
      s.Gauge("drover_store_up", "1 while commits reach the store, 0 while it is unavailable.",
              runtime.store_status().ok() ? 1.0 : 0.0);
      s.Counter("drover_store_rows_pruned_total",
                "Finished task rows deleted from the store after store_retention_ms.",
                ss.rows_pruned);
      s.Counter("drover_store_prune_sweeps_total",
                "Sweeps of the store for finished rows past their retention, completed.",
                rs.sweeps_completed);
      s.Counter("drover_store_prune_failures_total", "Prune steps that failed.", rs.prune_failures);
      s.Counter("drover_load_history_rows_written_total",
                "Pools' per-minute load history rows written (recorded and imported).",
                ss.load_rows_written);
      s.Counter("drover_load_history_rows_pruned_total",
                "Load history rows deleted after load_history_retention_ms.", ss.load_rows_pruned);
      s.Counter("drover_load_history_prune_failures_total", "Load history prunes that failed.",
                rs.load_prune_failures);
      s.Family("drover_store_commit_seconds", "histogram", "Time to commit one group.");
      s.HistogramSample({}, rs.commit_seconds);
      s.Family("drover_engine_batch_commands", "histogram", "Commands per engine batch.");
      s.HistogramSample({}, rs.batch_commands);
      (*shared)(*text + s.text());
    });
  });
  if (!queued) (*shared)(Refused(runtime_));
}

}  // namespace drover::api
