"""Agents in Python: a Worker takes tasks of its types over one work stream and runs many
at once, sync handlers on threads and async handlers on its event loop.

>>> worker = drover.Worker(concurrency=32)
>>> @worker.task("summarize")
... def summarize(task):
...     return {"summary": task.payload["text"][:100]}
>>> worker.run()          # until SIGTERM/SIGINT: then in-flight tasks finish first
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as _dt
import inspect
import logging
import signal
import threading
import traceback
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Union

import grpc

from . import _payload
from ._base import Connection, Stubs
from .errors import DroverError, from_rpc_error
from .types import state_name
from .v1 import drover_pb2 as pb

log = logging.getLogger("drover.worker")


class Retry(Exception):
    """Raise from a handler: this attempt failed, try again (counted against max_attempts)."""


class Fail(Exception):
    """Raise from a handler: the task failed for good (dead-lettered, no retry)."""


class Parent:
    """A parent of the task, as it ended."""

    __slots__ = ("task_id", "step", "state", "result", "error")

    def __init__(self, p: pb.ParentResult) -> None:
        self.task_id: int = p.task_id
        self.step: str = p.step
        self.state: str = state_name(p.state)
        self.result: Any = _payload.decode(p.result, p.result_json)
        self.error: str = p.error

    def __repr__(self) -> str:
        return f"Parent(task_id={self.task_id}, step={self.step!r}, state={self.state!r})"


class Message:
    """A message pushed to the agent (Client.send_message)."""

    __slots__ = ("id", "topic", "body", "sent")

    def __init__(self, m: pb.AgentMessage) -> None:
        self.id: int = m.id
        self.topic: str = m.topic
        self.body: Any = _payload.decode(m.body, m.body_json)
        self.sent = _dt.datetime.fromtimestamp(m.sent_unix_ms / 1000, tz=_dt.timezone.utc)


class Job:
    """The task a handler runs: what it needs to do the work.

    Attributes: id, type, attempt (1-based), payload (decoded), checkpoint (the last one an
    earlier attempt saved, decoded, or None), parents (each parent's result), deadline
    (datetime or None), tenant, priority, labels, workflow_id, step, traceparent, lease (the
    raw TaskLease)."""

    def __init__(self, lease: pb.TaskLease) -> None:
        self.lease = lease
        self.id: int = lease.task_id
        self.type: str = lease.type
        self.attempt: int = lease.attempt
        self.payload: Any = _payload.decode(lease.payload, lease.payload_json)
        self.checkpoint: Any = _payload.decode(lease.checkpoint, lease.checkpoint_json)
        self.parents: List[Parent] = [Parent(p) for p in lease.parents]
        self.deadline: Optional[_dt.datetime] = (
            _dt.datetime.fromtimestamp(lease.deadline_unix_ms / 1000, tz=_dt.timezone.utc)
            if lease.deadline_unix_ms else None)
        self.tenant: str = lease.tenant
        self.priority: int = lease.priority
        self.labels: Dict[str, str] = dict(lease.labels)
        self.workflow_id: int = lease.workflow_id
        self.step: str = lease.step
        self.traceparent: str = lease.traceparent

    def __repr__(self) -> str:
        return f"Job(id={self.id}, type={self.type!r}, attempt={self.attempt})"


class Context:
    """What a handler can do while it runs. ``checkpoint`` and ``heartbeat`` block in a sync
    handler and return an awaitable in an async one."""

    def __init__(self, worker: "Worker", job: Job) -> None:
        self._worker = worker
        self.job = job
        self._cancelled = threading.Event()
        self.cancel_reason = ""
        self._task: Optional[asyncio.Task] = None

    @property
    def cancelled(self) -> bool:
        """The task was canceled (or its lease lost): stop, the result will not count."""
        return self._cancelled.is_set()

    def checkpoint(self, data: Any) -> Any:
        """Saves progress (any JSON value, or bytes); a retry gets it as ``job.checkpoint``."""
        blob, is_json = _payload.encode(data)
        req = pb.CheckpointRequest(agent_id=self._worker.agent_id, task_id=self.job.id,
                                   lease_token=self.job.lease.lease_token, checkpoint=blob,
                                   checkpoint_json=is_json)
        return self._worker._rpc_from_handler(self._worker._stubs.agents.Checkpoint, req)

    def heartbeat(self) -> Any:
        """Renews this task's lease now (the worker also heartbeats on its own)."""
        req = pb.ExtendLeaseRequest(agent_id=self._worker.agent_id, task_id=self.job.id,
                                    lease_token=self.job.lease.lease_token)
        return self._worker._rpc_from_handler(self._worker._stubs.agents.ExtendLease, req)


Handler = Callable[..., Any]


class Worker:
    """An agent process: registers, takes tasks of its types on one work stream, runs up to
    ``concurrency`` at once, reports results in batches, heartbeats, and on stop lets the
    tasks it holds finish before it leaves.

    Args:
        types: agent types it runs (each ``@worker.task`` adds its own).
        concurrency: tasks held at once.
        server, token, token_file, tls...: as :class:`drover.Client`.
        name, labels, cost_factor, max_uses: the agent's registration.
        threads: threads for sync handlers (default ``concurrency``).
        batch_size, batch_delay: completions are sent together, at most ``batch_size`` per
            call and at most ``batch_delay`` seconds after the first is ready.
        drain_timeout: on stop, how long in-flight tasks may take to finish (None: no limit);
            tasks still running then go back to the queue.
    """

    def __init__(self, types: Sequence[str] = (), concurrency: int = 16, *,
                 server: Optional[str] = None, name: str = "",
                 labels: Optional[Dict[str, str]] = None, cost_factor: float = 1.0,
                 max_uses: int = 0, threads: Optional[int] = None, batch_size: int = 500,
                 batch_delay: float = 0.002, drain_timeout: Optional[float] = None,
                 **connection: Any) -> None:
        if not 1 <= concurrency <= 1024:
            raise ValueError(f"concurrency: {concurrency} is out of range 1..1024")
        self.types: List[str] = list(types)
        self.concurrency = concurrency
        self.name = name
        self.labels = dict(labels or {})
        self.cost_factor = cost_factor
        self.max_uses = max_uses
        self.batch_size = batch_size
        self.batch_delay = batch_delay
        self.drain_timeout = drain_timeout
        self._conn = Connection(server, **connection)
        self._handlers: Dict[str, Handler] = {}
        self._default: Optional[Handler] = None
        self._on_message: Optional[Callable[[Message], Any]] = None
        self._threads = threads or concurrency
        self.agent_id = 0
        self._running: Dict[int, Context] = {}
        self._pending: List[pb.CompleteTasksRequest.Item] = []
        self._flush_wake: Optional[asyncio.Event] = None
        self._stop: Optional[asyncio.Event] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stubs: Any = None
        self.completed = 0
        self.failed = 0

    # ---- set-up ----------------------------------------------------------------------

    def task(self, task_type: Optional[str] = None) -> Callable[[Handler], Handler]:
        """Registers a handler for ``task_type`` (default: the function's name). It gets the
        Job, and the Context too if it takes two arguments; it returns a JSON value or
        bytes (the result), or raises Retry / Fail."""
        def register(fn: Handler) -> Handler:
            t = task_type or fn.__name__
            self._handlers[t] = fn
            if t not in self.types:
                self.types.append(t)
            return fn
        return register

    def default(self, fn: Handler) -> Handler:
        """The handler for types in ``types`` without one of their own."""
        self._default = fn
        return fn

    def on_message(self, fn: Callable[[Message], Any]) -> Callable[[Message], Any]:
        """A callback (sync or async) for messages sent to this agent."""
        self._on_message = fn
        return fn

    # ---- running ---------------------------------------------------------------------

    def run(self) -> None:
        """Runs until SIGTERM or SIGINT (or stop()), then drains and leaves."""
        asyncio.run(self.arun(handle_signals=True))

    def stop(self) -> None:
        """Asks the worker to stop taking tasks, finish those it holds, and leave. Safe from
        any thread and from handlers."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def arun(self, handle_signals: bool = False) -> None:
        """The worker on the running event loop; returns after a stop has drained."""
        if not self.types:
            raise ValueError("types: give at least one task type (or use @worker.task)")
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._flush_wake = asyncio.Event()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._stop.set)
        pool = concurrent.futures.ThreadPoolExecutor(self._threads,
                                                     thread_name_prefix="drover-task")
        channel = self._conn.channel(aio=True)
        self._stubs = Stubs(channel)
        md = self._conn.metadata
        stopper: Optional[asyncio.Task] = None
        try:
            reg = await self._stubs.agents.RegisterAgent(pb.RegisterAgentRequest(
                types=self.types, max_concurrency=self.concurrency,
                cost_factor=self.cost_factor, labels=self.labels, name=self.name,
                max_uses=self.max_uses), metadata=md)
            self.agent_id = reg.agent_id
            log.info("agent %d registered for %s", self.agent_id, ", ".join(self.types))
            interval = max(0.05, (reg.heartbeat_interval_ms or reg.lease_ttl_ms // 3) / 1000)
            stream = self._stubs.agents.OpenWorkStream(
                pb.OpenWorkStreamRequest(agent_id=self.agent_id), metadata=md)
            helpers = [asyncio.create_task(self._heartbeats(interval)),
                       asyncio.create_task(self._flusher())]
            reader = asyncio.create_task(self._read(stream, pool))
            stopper = asyncio.create_task(self._stop.wait())
            await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            # Stop: the stream closes (the server pushes no more), held tasks finish.
            stream.cancel()
            if not reader.done():
                reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await self._drain()
            self._flush_wake.set()
            for h in helpers:
                h.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._flush_all()
            try:
                await self._stubs.agents.DeregisterAgent(
                    pb.DeregisterAgentRequest(agent_id=self.agent_id), metadata=md, timeout=10)
            except grpc.RpcError as e:
                log.warning("deregistering: %s", from_rpc_error(e))
            log.info("agent %d stopped: %d completed, %d failed", self.agent_id,
                     self.completed, self.failed)
        finally:
            if stopper is not None:
                stopper.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            await channel.close()

    async def _read(self, stream: Any, pool: concurrent.futures.Executor) -> None:
        try:
            async for item in stream:
                kind = item.WhichOneof("item")
                if kind == "lease":
                    self._start(item.lease, pool)
                elif kind == "leases":
                    for lease in item.leases.leases:
                        self._start(lease, pool)
                elif kind == "cancel":
                    self._cancel(item.cancel)
                elif kind == "message":
                    self._message(item.message, pool)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                log.error("work stream ended: %s", from_rpc_error(e))
                raise from_rpc_error(e) from None

    def _start(self, lease: pb.TaskLease, pool: concurrent.futures.Executor) -> None:
        handler = self._handlers.get(lease.type, self._default)
        ctx = Context(self, Job(lease))
        self._running[lease.task_id] = ctx
        ctx._task = asyncio.create_task(self._run_one(ctx, handler, pool))

    async def _run_one(self, ctx: Context, handler: Optional[Handler],
                       pool: concurrent.futures.Executor) -> None:
        job = ctx.job
        try:
            if handler is None:
                raise Fail(f"no handler for task type {job.type!r} in this worker")
            args = (job, ctx) if _arity(handler) >= 2 else (job,)
            if inspect.iscoroutinefunction(handler):
                value = await handler(*args)
            else:
                value = await self._loop.run_in_executor(pool, lambda: handler(*args))
            if ctx.cancelled:
                return
            data, is_json = _payload.encode(value)
            self._pending.append(pb.CompleteTasksRequest.Item(
                task_id=job.id, lease_token=job.lease.lease_token, result=data,
                result_json=is_json))
            if len(self._pending) >= self.batch_size or len(self._pending) == 1:
                self._flush_wake.set()
        except asyncio.CancelledError:
            if not ctx.cancelled:
                raise
        except Exception as e:  # the handler's failure is the task's
            if ctx.cancelled:
                return
            retryable = not isinstance(e, Fail)
            msg = str(e) if isinstance(e, (Retry, Fail)) else \
                f"{type(e).__name__}: {e}\n{_short_traceback(e)}"
            await self._fail(job, msg or type(e).__name__, retryable)
        finally:
            self._running.pop(job.id, None)

    async def _fail(self, job: Job, error: str, retryable: bool) -> None:
        self.failed += 1
        try:
            await self._stubs.agents.FailTask(pb.FailTaskRequest(
                agent_id=self.agent_id, task_id=job.id, lease_token=job.lease.lease_token,
                error=error[:4000], retryable=retryable), metadata=self._conn.metadata,
                timeout=30)
        except grpc.RpcError as e:
            log.warning("task %d: reporting its failure: %s", job.id, from_rpc_error(e))

    def _cancel(self, notice: pb.CancelNotice) -> None:
        ctx = self._running.get(notice.task_id)
        if ctx is None or ctx.job.lease.lease_token != notice.lease_token:
            return
        ctx.cancel_reason = notice.reason
        ctx._cancelled.set()
        if ctx._task is not None and inspect.iscoroutinefunction(
                self._handlers.get(ctx.job.type, self._default)):
            ctx._task.cancel()

    def _message(self, m: pb.AgentMessage, pool: concurrent.futures.Executor) -> None:
        if self._on_message is None:
            return
        msg = Message(m)
        cb = self._on_message
        if inspect.iscoroutinefunction(cb):
            asyncio.create_task(cb(msg))
        else:
            self._loop.run_in_executor(pool, cb, msg)

    async def _heartbeats(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self._stubs.agents.Heartbeat(pb.HeartbeatRequest(agent_id=self.agent_id),
                                                   metadata=self._conn.metadata, timeout=10)
            except grpc.RpcError as e:
                log.warning("heartbeat: %s", from_rpc_error(e))

    async def _flusher(self) -> None:
        while True:
            await self._flush_wake.wait()
            self._flush_wake.clear()
            if len(self._pending) < self.batch_size:
                await asyncio.sleep(self.batch_delay)
            await self._flush_all()

    async def _flush_all(self) -> None:
        while self._pending:
            items, self._pending = self._pending[:self.batch_size], self._pending[self.batch_size:]
            req = pb.CompleteTasksRequest(agent_id=self.agent_id, items=items)
            try:
                r = await self._stubs.agents.CompleteTasks(req, metadata=self._conn.metadata,
                                                           timeout=30)
            except grpc.RpcError as e:
                log.error("reporting %d results: %s", len(items), from_rpc_error(e))
                continue
            self.completed += r.accepted
            for item, err in zip(items, r.errors):
                if err:
                    log.warning("task %d: result refused: %s", item.task_id, err)

    async def _drain(self) -> None:
        running = [c._task for c in self._running.values() if c._task is not None]
        if not running:
            return
        log.info("stopping: waiting for %d running task(s)", len(running))
        done, late = await asyncio.wait(running, timeout=self.drain_timeout)
        for t in late:
            t.cancel()

    def _rpc_from_handler(self, method: Any, req: Any) -> Any:
        async def call() -> Any:
            try:
                return await method(req, metadata=self._conn.metadata, timeout=30)
            except grpc.RpcError as e:
                raise from_rpc_error(e) from None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            return asyncio.ensure_future(call())
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result()


def _arity(fn: Handler) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _short_traceback(e: BaseException) -> str:
    return "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=-3)).strip()


__all__ = ["Worker", "Job", "Context", "Parent", "Message", "Retry", "Fail", "DroverError"]
