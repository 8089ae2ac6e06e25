"""drover: the Python SDK of the drover orchestrator.

- :class:`Client` / :class:`AsyncClient`: submit tasks (any JSON value or bytes as the
  payload), batches, workflows and map-reduce jobs; get, list, wait, cancel; dead letters,
  pools, stats, messages.
- :class:`Worker`: an agent process running many tasks at once on one work stream.
- :func:`workflow`, :func:`step`, :func:`mapreduce`: workflows from Python definitions.

Errors the server answers are :class:`DroverError` subclasses carrying its message, code
and retry-after.
"""

from .aio import AsyncClient
from .client import Client
from .errors import (AlreadyExists, DeadlineExceeded, DroverError, FailedPrecondition,
                     InvalidArgument, NotFound, PermissionDenied, ResourceExhausted,
                     Unauthenticated, Unavailable)
from .types import Priority, Task, TaskPriority, WaitTimeout, Workflow, task_spec
from .worker import Context, Fail, Job, Message, Parent, Retry, Worker
from .workflow import Builder, mapreduce, step, workflow

__version__ = "0.1.0"

__all__ = [
    "AlreadyExists", "AsyncClient", "Builder", "Client", "Context", "DeadlineExceeded",
    "DroverError", "Fail", "FailedPrecondition", "InvalidArgument", "Job", "Message",
    "NotFound", "Parent", "PermissionDenied", "Priority", "ResourceExhausted", "Retry", "Task",
    "TaskPriority", "Unauthenticated", "Unavailable", "WaitTimeout", "Worker", "Workflow",
    "mapreduce", "step", "task_spec", "workflow",
]
