"""The blocking client. ``AsyncClient`` (drover.aio) has the same methods as coroutines."""

from __future__ import annotations

import time
from typing import Any, Iterator, Optional

import grpc

from ._base import MAX_WAIT_CHUNK_S, Api, Connection, Stubs, backoff, wait_steps
from ._progress import Progress
from .errors import ResourceExhausted, from_rpc_error
from .types import Task, Workflow, ids


class Client(Api):
    """A connection to a drover server over gRPC.

    >>> with drover.Client("127.0.0.1:7070", token_file="drover-data/admin.token") as c:
    ...     t = c.submit("summarize", {"doc": 1}, priority="high")
    ...     print(c.wait(t).result)

    Args:
        server: host:port of the gRPC API (default DROVER_SERVER or 127.0.0.1:7070).
        token, token_file: the API token (default DROVER_TOKEN / DROVER_TOKEN_FILE).
        retries: how many times a call refused with RESOURCE_EXHAUSTED is sent again,
            after the server's retry-after (0: never).
        timeout: seconds each call may take (waits take their own timeout).
        tls, ca_file, cert_file, key_file, server_name: TLS (default from DROVER_CA_FILE...).
    """

    def __init__(self, server: Optional[str] = None, *, retries: int = 5,
                 timeout: float = 30.0, **connection: Any) -> None:
        self._conn = Connection(server, **connection)
        self._channel = self._conn.channel()
        self._stubs = Stubs(self._channel)
        self._retries = retries
        self._timeout = timeout

    def _call(self, method: Any, request: Any, convert: Any, retry: bool = True,
              timeout: Optional[float] = None) -> Any:
        attempt = 0
        while True:
            try:
                answer = method(request, metadata=self._conn.metadata,
                                timeout=timeout or self._timeout)
                return convert(answer)
            except grpc.RpcError as e:
                err = from_rpc_error(e)
                attempt += 1
                if retry and isinstance(err, ResourceExhausted) and attempt <= self._retries:
                    time.sleep(backoff(attempt, err.retry_after))
                    continue
                raise err from None

    @staticmethod
    def _drive(steps: Any, once: Any) -> Any:
        try:
            left = next(steps)
            while True:
                left = steps.send(once(left))
        except StopIteration as done:
            return done.value

    def wait(self, task: Any, timeout: Optional[float] = None) -> Task:
        """Blocks until the task ends; raises WaitTimeout after ``timeout`` seconds."""
        task_id = ids([task])[0]
        return self._drive(wait_steps(f"task {task_id}", timeout, MAX_WAIT_CHUNK_S),
                           lambda left: self._wait_once(task_id, left))

    def wait_workflow(self, workflow: Any, timeout: Optional[float] = None,
                      progress: Optional[bool] = None) -> Workflow:
        """Blocks until the workflow ends, drawing a progress bar on a terminal (it asks
        every second, so the bar moves)."""
        wid = workflow.id if isinstance(workflow, Workflow) else int(workflow)
        bar = Progress(progress)

        def once(left: float) -> Any:
            w, timed_out = self._wait_workflow_once(wid, left)
            bar.show(w)
            return w, timed_out
        try:
            return self._drive(wait_steps(f"workflow {wid}", timeout, 1.0), once)
        finally:
            bar.end()

    def list(self, *, limit: Optional[int] = None, page_size: int = 100,
             **filters: Any) -> Iterator[Task]:
        """Every task matching the filters (state, type, tenant, label, error_contains,
        workflow_id, newest_first), page after page."""
        token, n = "", 0
        while True:
            page, token = self.list_page(page_size=page_size, page_token=token, **filters)
            for t in page:
                if limit is not None and n >= limit:
                    return
                n += 1
                yield t
            if not token:
                return

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
