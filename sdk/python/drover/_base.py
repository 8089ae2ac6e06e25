"""What the sync and asyncio clients share: connection settings, request builders and the
conversions of answers. Each public method is written once here; a client's ``_call`` makes
it blocking (Client) or awaitable (AsyncClient)."""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, Generator, Iterable, List, Optional, Sequence, Tuple

import grpc
from google.protobuf import json_format

from . import _payload
from .types import Task, WaitTimeout, Workflow, ids, task_spec
from .v1 import drover_pb2 as pb
from .v1 import drover_pb2_grpc as rpc

DEFAULT_SERVER = "127.0.0.1:7070"
# Large batches and pages: drover's own limit is 64 MiB per message.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20),
                   ("grpc.max_send_message_length", 64 << 20)]

_STRATEGIES = {"fail_fast": pb.FAIL_FAST, "continue_on_partial": pb.CONTINUE_ON_PARTIAL}


def _read(path: Optional[str]) -> Optional[bytes]:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


class Connection:
    """Where the server is and how to prove who we are.

    Defaults come from the environment the CLI also reads: DROVER_SERVER, DROVER_TOKEN or
    DROVER_TOKEN_FILE, DROVER_CA_FILE, DROVER_CERT_FILE, DROVER_KEY_FILE,
    DROVER_TLS_SERVER_NAME.
    """

    def __init__(self, server: Optional[str] = None, *, token: Optional[str] = None,
                 token_file: Optional[str] = None, tls: Optional[bool] = None,
                 ca_file: Optional[str] = None, cert_file: Optional[str] = None,
                 key_file: Optional[str] = None, server_name: Optional[str] = None) -> None:
        env = os.environ.get
        self.server = server or env("DROVER_SERVER") or DEFAULT_SERVER
        if token is None:
            token = env("DROVER_TOKEN") or None
        if token is None:
            path = token_file or env("DROVER_TOKEN_FILE")
            if path:
                with open(path, encoding="utf-8") as f:
                    token = f.read().strip()
        self.token = token
        self.ca_file = ca_file or env("DROVER_CA_FILE")
        self.cert_file = cert_file or env("DROVER_CERT_FILE")
        self.key_file = key_file or env("DROVER_KEY_FILE")
        self.server_name = server_name or env("DROVER_TLS_SERVER_NAME")
        self.tls = bool(self.ca_file or self.cert_file) if tls is None else tls
        self.metadata: Tuple[Tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ())

    def options(self) -> List[Tuple[str, Any]]:
        opts = list(CHANNEL_OPTIONS)
        if self.server_name:
            opts.append(("grpc.ssl_target_name_override", self.server_name))
        return opts

    def credentials(self) -> Optional[grpc.ChannelCredentials]:
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(root_certificates=_read(self.ca_file),
                                            private_key=_read(self.key_file),
                                            certificate_chain=_read(self.cert_file))

    def channel(self, aio: bool = False) -> Any:
        mod = grpc.aio if aio else grpc
        creds = self.credentials()
        if creds is None:
            return mod.insecure_channel(self.server, options=self.options())
        return mod.secure_channel(self.server, creds, options=self.options())


class Stubs:
    def __init__(self, channel: Any) -> None:
        self.tasks = rpc.TaskServiceStub(channel)
        self.workflows = rpc.WorkflowServiceStub(channel)
        self.agents = rpc.AgentServiceStub(channel)
        self.admin = rpc.AdminServiceStub(channel)
        self.auth = rpc.AuthServiceStub(channel)


def to_dict(msg: Any) -> Dict[str, Any]:
    """A protobuf answer as a plain dict (proto field names, ints as ints)."""
    return json_format.MessageToDict(msg, preserving_proto_field_name=True,
                                     including_default_value_fields=False)


def _submitted(r: pb.SubmitTaskResponse) -> Task:
    return Task(r.task)


def _submitted_all(r: pb.SubmitTasksResponse) -> List[Task]:
    return [Task(x.task) for x in r.results]


class Api:
    """The calls, once. Subclasses provide ``_call(stub_method, request, convert, retry)``."""

    _stubs: Stubs
    _conn: Connection

    def _call(self, method: Callable, request: Any, convert: Callable[[Any], Any],
              retry: bool = True, timeout: Optional[float] = None) -> Any:
        raise NotImplementedError

    # ---- tasks -----------------------------------------------------------------------

    def submit(self, task_type: str, payload: Any = None, **options: Any) -> Task:
        """Submits one task and returns it as stored (``.id``, ``.state``...).

        ``options`` are those of :func:`drover.task_spec`: priority, deadline,
        dependencies, dependencies_finished, cost_budget, estimated_complexity,
        idempotency_key, max_attempts, timeout, labels, resources, tenant, pool,
        backoff_base, backoff_cap, traceparent. RESOURCE_EXHAUSTED (overload, a quota) is
        retried after the server's retry-after, up to the client's ``retries``."""
        spec = task_spec(task_type, payload, **options)
        return self._call(self._stubs.tasks.SubmitTask, pb.SubmitTaskRequest(task=spec),
                          _submitted)

    def submit_task(self, task_type: str, payload: Any = None, **options: Any) -> int:
        """As :meth:`submit`, answering the new task's id (the seeds' interface)."""
        spec = task_spec(task_type, payload, **options)
        return self._call(self._stubs.tasks.SubmitTask, pb.SubmitTaskRequest(task=spec),
                          lambda r: r.task.id)

    def submit_batch(self, tasks: Iterable[Any]) -> List[Task]:
        """Submits many tasks in one call, all or none. Each item is a TaskSpec (see
        :func:`drover.task_spec`) or a dict of submit()'s arguments
        (``{"task_type": "x", "payload": {...}, "priority": "high"}``)."""
        specs = [t if isinstance(t, pb.TaskSpec) else task_spec(**t) for t in tasks]
        return self._call(self._stubs.tasks.SubmitTasks, pb.SubmitTasksRequest(tasks=specs),
                          _submitted_all)

    def get(self, task_id: Any) -> Task:
        """The task now."""
        return self._call(self._stubs.tasks.GetTask, pb.GetTaskRequest(id=ids([task_id])[0]),
                          Task)

    def cancel(self, task_id: Any, reason: str = "") -> Task:
        """Cancels a task that has not ended (a running one's agent is told)."""
        return self._call(self._stubs.tasks.CancelTask,
                          pb.CancelTaskRequest(id=ids([task_id])[0], reason=reason), Task)

    def list_page(self, *, state: Optional[str] = None, type: str = "", tenant: str = "",
                  label: str = "", error_contains: str = "", workflow_id: int = 0,
                  newest_first: bool = False, page_size: int = 100,
                  page_token: str = "") -> Tuple[List[Task], str]:
        """One page of tasks and the token of the next ("" at the end)."""
        req = pb.ListTasksRequest(
            state=pb.TaskState.Value("TASK_STATE_" + state.upper()) if state else 0,
            type=type, tenant=tenant, label=label, error_contains=error_contains,
            workflow_id=workflow_id, newest_first=newest_first, page_size=page_size,
            page_token=page_token)
        return self._call(self._stubs.tasks.ListTasks, req,
                          lambda r: ([Task(t) for t in r.tasks], r.next_page_token))

    # ---- workflows -------------------------------------------------------------------

    def submit_workflow(self, spec: pb.WorkflowSpec) -> Workflow:
        """Submits a workflow (all its tasks, all or none). The decorators in
        :mod:`drover.workflow` build the spec from Python."""
        return self._call(self._stubs.workflows.SubmitWorkflow,
                          pb.SubmitWorkflowRequest(workflow=spec), Workflow)

    def submit_mapreduce(self, mapper: str, reducer: str, items: Sequence[Any], *,
                         reduce_payload: Any = None, max_parallel: int = 0,
                         error_strategy: str = "fail_fast", name: str = "",
                         labels: Optional[Dict[str, str]] = None, tenant: str = "",
                         mapper_options: Optional[Dict[str, Any]] = None,
                         reducer_options: Optional[Dict[str, Any]] = None) -> Workflow:
        """One map task per item (its payload), then one reduce task whose parents are every
        map task in item order. ``error_strategy``: "fail_fast" (a failed item cancels the
        job) or "continue_on_partial" (the reducer runs anyway and is told which failed).
        Items are JSON values (or all bytes)."""
        if error_strategy not in _STRATEGIES:
            raise ValueError(f"error_strategy: unknown value {error_strategy!r} "
                             "(use fail_fast or continue_on_partial)")
        encoded = [_payload.encode(i) for i in items]
        kinds = {j for _, j in encoded}
        if len(kinds) > 1:
            raise TypeError("items: all JSON values or all bytes, not a mix")
        job = pb.MapReduceSpec(
            tenant=tenant, name=name, mapper=task_spec(mapper, **(mapper_options or {})),
            reducer=task_spec(reducer, reduce_payload, **(reducer_options or {})),
            items=[d for d, _ in encoded], items_json=bool(kinds and kinds.pop()),
            parallelism=max_parallel, on_error=_STRATEGIES[error_strategy])
        if labels:
            job.labels.update(labels)
        return self._call(self._stubs.workflows.SubmitMapReduce,
                          pb.SubmitMapReduceRequest(job=job), Workflow)

    def get_workflow(self, workflow_id: int) -> Workflow:
        return self._call(self._stubs.workflows.GetWorkflow,
                          pb.GetWorkflowRequest(id=workflow_id), Workflow)

    def cancel_workflow(self, workflow_id: int, reason: str = "") -> Workflow:
        return self._call(self._stubs.workflows.CancelWorkflow,
                          pb.CancelWorkflowRequest(id=workflow_id, reason=reason), Workflow)

    def list_workflows(self, *, state: Optional[str] = None, tenant: str = "",
                       page_size: int = 100, page_token: str = "") -> Tuple[List[Workflow], str]:
        req = pb.ListWorkflowsRequest(
            state=pb.WorkflowState.Value("WORKFLOW_STATE_" + state.upper()) if state else 0,
            tenant=tenant, page_size=page_size, page_token=page_token)
        return self._call(self._stubs.workflows.ListWorkflows, req,
                          lambda r: ([Workflow(w) for w in r.workflows], r.next_page_token))

    # ---- dead letters, pools, stats, messages ---------------------------------------

    def dead_letters(self, *, type: str = "", tenant: str = "", page_size: int = 100,
                     page_token: str = "") -> Tuple[List[Task], str]:
        req = pb.ListDeadLettersRequest(type=type, tenant=tenant, page_size=page_size,
                                        page_token=page_token)
        return self._call(self._stubs.admin.ListDeadLetters, req,
                          lambda r: ([Task(t) for t in r.tasks], r.next_page_token))

    def reprocess_dead_letters(self, task_ids: Any = None, *, all: bool = False,
                               type: str = "") -> List[int]:
        """Queues dead letters again (fresh attempts); answers the ids."""
        req = pb.ReprocessDeadLettersRequest(ids=ids(task_ids), all=all, type=type)
        return self._call(self._stubs.admin.ReprocessDeadLetters, req,
                          lambda r: list(r.reprocessed))

    def purge_dead_letters(self, task_ids: Any = None, *, all: bool = False,
                           type: str = "") -> int:
        req = pb.PurgeDeadLettersRequest(ids=ids(task_ids), all=all, type=type)
        return self._call(self._stubs.admin.PurgeDeadLetters, req, lambda r: r.purged)

    def stats(self) -> Dict[str, Any]:
        return self._call(self._stubs.admin.Stats, pb.StatsRequest(), to_dict)

    def usage(self) -> Dict[str, Any]:
        return self._call(self._stubs.admin.GetUsage, pb.UsageRequest(), to_dict)

    def pools(self) -> List[Dict[str, Any]]:
        return self._call(self._stubs.admin.ListPools, pb.ListPoolsRequest(),
                          lambda r: [to_dict(p) for p in r.pools])

    def apply_pool(self, pool: Dict[str, Any]) -> None:
        """Creates or changes a pool (PoolConfig fields, docs/pools.md)."""
        from .v1 import config_pb2
        cfg = json_format.ParseDict(pool, config_pb2.PoolConfig())
        return self._call(self._stubs.admin.ApplyPool, pb.ApplyPoolRequest(pool=cfg),
                          lambda r: None)

    def delete_pool(self, name: str, force: bool = False) -> None:
        return self._call(self._stubs.admin.DeletePool, pb.DeletePoolRequest(name=name,
                                                                             force=force),
                          lambda r: None)

    def agents(self) -> List[Dict[str, Any]]:
        return self._call(self._stubs.admin.ListAgents, pb.ListAgentsRequest(),
                          lambda r: [to_dict(a) for a in r.agents])

    def send_message(self, body: Any = None, *, agent_id: int = 0, agent_type: str = "",
                     all: bool = False, topic: str = "") -> Dict[str, Any]:
        """Pushes a message to connected agents (best effort: not stored)."""
        data, is_json = _payload.encode(body)
        req = pb.SendMessageRequest(agent_id=agent_id, agent_type=agent_type, all=all,
                                    topic=topic, body=data, body_json=is_json)
        return self._call(self._stubs.admin.SendMessage, req, to_dict)

    def health(self) -> str:
        """"SERVING" or "NOT_SERVING"."""
        return self._call(self._stubs.admin.Health, pb.HealthRequest(), lambda r: r.status,
                          retry=False)

    def whoami(self) -> Dict[str, Any]:
        return self._call(self._stubs.auth.WhoAmI, pb.WhoAmIRequest(), to_dict)

    # ---- waiting (a call per at most an hour; the clients loop) -------------------------

    def _wait_once(self, task_id: int, timeout_s: float) -> Tuple[Task, bool]:
        req = pb.WaitTaskRequest(id=task_id, timeout_ms=max(1, int(timeout_s * 1000)))
        return self._call(self._stubs.tasks.WaitTask, req,
                          lambda r: (Task(r.task), r.timed_out), timeout=timeout_s + 30)

    def _wait_workflow_once(self, workflow_id: int, timeout_s: float) -> Tuple[Workflow, bool]:
        req = pb.WaitWorkflowRequest(id=workflow_id, timeout_ms=max(1, int(timeout_s * 1000)))
        return self._call(self._stubs.workflows.WaitWorkflow, req,
                          lambda r: (Workflow(r.workflow), r.timed_out), timeout=timeout_s + 30)


def backoff(attempt: int, retry_after: Optional[float]) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based) of a refused call."""
    if retry_after is not None and retry_after > 0:
        return retry_after
    return min(5.0, 0.05 * (2 ** (attempt - 1)))


MAX_WAIT_CHUNK_S = 3600.0


def wait_steps(what: str, timeout: Optional[float], chunk: float) -> Generator[float, Any, Any]:
    """The waiting logic both clients drive: yields how long the next server-side wait may
    be and receives its (object, timed_out); returns the object once it ended, raises
    WaitTimeout once ``timeout`` seconds passed."""
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        left = chunk if end is None else min(chunk, end - time.monotonic())
        obj, timed_out = yield max(left, 0.001)
        if not timed_out:
            return obj
        if end is not None and time.monotonic() >= end:
            raise WaitTimeout(what, obj)

