"""The asyncio client: every method of :class:`drover.Client` as a coroutine."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Optional

import grpc

from ._base import MAX_WAIT_CHUNK_S, Api, Connection, Stubs, backoff, wait_steps
from ._progress import Progress
from .errors import ResourceExhausted, from_rpc_error
from .types import Task, Workflow, ids


class AsyncClient(Api):
    """``await client.submit(...)``, ``await client.wait(...)``... over grpc.aio.

    Same arguments as :class:`drover.Client`. Use it as ``async with AsyncClient() as c``
    or call ``await c.close()``."""

    def __init__(self, server: Optional[str] = None, *, retries: int = 5,
                 timeout: float = 30.0, **connection: Any) -> None:
        self._conn = Connection(server, **connection)
        self._channel = self._conn.channel(aio=True)
        self._stubs = Stubs(self._channel)
        self._retries = retries
        self._timeout = timeout

    async def _call(self, method: Any, request: Any, convert: Any, retry: bool = True,
                    timeout: Optional[float] = None) -> Any:
        attempt = 0
        while True:
            try:
                answer = await method(request, metadata=self._conn.metadata,
                                      timeout=timeout or self._timeout)
                return convert(answer)
            except grpc.RpcError as e:
                err = from_rpc_error(e)
                attempt += 1
                if retry and isinstance(err, ResourceExhausted) and attempt <= self._retries:
                    await asyncio.sleep(backoff(attempt, err.retry_after))
                    continue
                raise err from None

    @staticmethod
    async def _drive(steps: Any, once: Any) -> Any:
        try:
            left = next(steps)
            while True:
                left = steps.send(await once(left))
        except StopIteration as done:
            return done.value

    async def wait(self, task: Any, timeout: Optional[float] = None) -> Task:
        """Until the task ends; raises WaitTimeout after ``timeout`` seconds."""
        task_id = ids([task])[0]
        return await self._drive(wait_steps(f"task {task_id}", timeout, MAX_WAIT_CHUNK_S),
                                 lambda left: self._wait_once(task_id, left))

    async def wait_workflow(self, workflow: Any, timeout: Optional[float] = None,
                            progress: Optional[bool] = None) -> Workflow:
        """Until the workflow ends, with a progress bar on a terminal."""
        wid = workflow.id if isinstance(workflow, Workflow) else int(workflow)
        bar = Progress(progress)

        async def once(left: float) -> Any:
            w, timed_out = await self._wait_workflow_once(wid, left)
            bar.show(w)
            return w, timed_out
        try:
            return await self._drive(wait_steps(f"workflow {wid}", timeout, 1.0), once)
        finally:
            bar.end()

    async def list(self, *, limit: Optional[int] = None, page_size: int = 100,
                   **filters: Any) -> AsyncIterator[Task]:
        token, n = "", 0
        while True:
            page, token = await self.list_page(page_size=page_size, page_token=token, **filters)
            for t in page:
                if limit is not None and n >= limit:
                    return
                n += 1
                yield t
            if not token:
                return

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
