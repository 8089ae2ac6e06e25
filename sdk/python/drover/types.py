"""Views of the server's records: tasks, workflows, and the option types a submission takes."""

from __future__ import annotations

import datetime as _dt
import enum
from typing import Any, Dict, List, Optional

from . import _payload
from .v1 import drover_pb2 as pb


class Priority(enum.IntEnum):
    """Five priorities; a lower number is more urgent."""

    CRITICAL = 1
    HIGH = 2
    NORMAL = 3
    LOW = 4
    BACKGROUND = 5


#: The seeds' name for it.
TaskPriority = Priority

TERMINAL_STATES = frozenset({"succeeded", "dead", "canceled", "expired"})


def state_name(value: int) -> str:
    """"succeeded" for TASK_STATE_SUCCEEDED."""
    return pb.TaskState.Name(value).replace("TASK_STATE_", "").lower()


class Task:
    """A task as the server keeps it. ``raw`` is the protobuf message (drover.v1.Task)."""

    __slots__ = ("raw",)

    def __init__(self, raw: pb.Task) -> None:
        self.raw = raw

    @property
    def id(self) -> int:
        return self.raw.id

    @property
    def type(self) -> str:
        return self.raw.spec.type

    @property
    def tenant(self) -> str:
        return self.raw.spec.tenant

    @property
    def state(self) -> str:
        """waiting, ready, leased, retry_wait, succeeded, dead, canceled or expired."""
        return state_name(self.raw.state)

    @property
    def done(self) -> bool:
        """The task reached a terminal state."""
        return self.state in TERMINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.raw.state == pb.TASK_STATE_SUCCEEDED

    @property
    def priority(self) -> Priority:
        return Priority(self.raw.spec.priority or Priority.NORMAL)

    @property
    def payload(self) -> Any:
        """The payload: a JSON value, bytes, or None."""
        return _payload.decode(self.raw.spec.payload, self.raw.spec.payload_json)

    @property
    def result(self) -> Any:
        """The agent's result once it succeeded: a JSON value, bytes, or None."""
        return _payload.decode(self.raw.result, self.raw.result_json)

    @property
    def checkpoint(self) -> Any:
        return _payload.decode(self.raw.checkpoint, self.raw.checkpoint_json)

    @property
    def error(self) -> str:
        """The last attempt's error."""
        return self.raw.last_error

    @property
    def reason(self) -> str:
        """Why it reached its terminal state (a cancel's reason, ...)."""
        return self.raw.reason

    @property
    def attempts(self) -> int:
        return self.raw.attempts

    @property
    def labels(self) -> Dict[str, str]:
        return dict(self.raw.spec.labels)

    @property
    def workflow_id(self) -> int:
        return self.raw.workflow_id

    @property
    def step(self) -> str:
        return self.raw.step

    @property
    def cost(self) -> float:
        return self.raw.cost

    @property
    def created(self) -> _dt.datetime:
        return _from_ms(self.raw.created_unix_ms)

    @property
    def finished(self) -> Optional[_dt.datetime]:
        return _from_ms(self.raw.finished_unix_ms) if self.raw.finished_unix_ms else None

    def __repr__(self) -> str:
        return f"Task(id={self.id}, type={self.type!r}, state={self.state!r})"


class Workflow:
    """A workflow or map-reduce job. ``raw`` is the protobuf message (drover.v1.Workflow)."""

    __slots__ = ("raw",)

    def __init__(self, raw: pb.Workflow) -> None:
        self.raw = raw

    @property
    def id(self) -> int:
        return self.raw.id

    @property
    def name(self) -> str:
        return self.raw.name

    @property
    def state(self) -> str:
        """running, succeeded, failed or canceled."""
        return pb.WorkflowState.Name(self.raw.state).replace("WORKFLOW_STATE_", "").lower()

    @property
    def done(self) -> bool:
        return self.raw.state not in (pb.WORKFLOW_STATE_RUNNING, pb.WORKFLOW_STATE_UNSPECIFIED)

    @property
    def succeeded(self) -> bool:
        return self.raw.state == pb.WORKFLOW_STATE_SUCCEEDED

    @property
    def tasks(self) -> Dict[str, int]:
        """Step name -> task id, in step order."""
        return {t.step: t.task_id for t in self.raw.tasks}

    @property
    def total(self) -> int:
        return self.raw.total

    @property
    def progress(self) -> Dict[str, int]:
        r = self.raw
        return {"total": r.total, "done": r.done, "succeeded": r.succeeded, "failed": r.failed,
                "canceled": r.canceled}

    @property
    def reason(self) -> str:
        return self.raw.reason

    @property
    def cost(self) -> float:
        return self.raw.cost

    def __repr__(self) -> str:
        return f"Workflow(id={self.id}, name={self.name!r}, state={self.state!r}, " \
               f"{self.raw.done}/{self.raw.total} done)"


class WaitTimeout(TimeoutError):
    """wait() or wait_workflow() ran out of time; ``last`` is the object as it was."""

    def __init__(self, what: str, last: Any) -> None:
        super().__init__(f"{what} did not end in time")
        self.last = last


def _from_ms(ms: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(ms / 1000.0, tz=_dt.timezone.utc)


def priority_value(p: Any) -> int:
    """A priority from Priority, its number, or its name ("high")."""
    if isinstance(p, str):
        try:
            return Priority[p.upper()].value
        except KeyError:
            raise ValueError(f"priority: unknown value {p!r} (use critical, high, normal, low "
                             "or background)") from None
    if p is None:
        return 0
    v = int(p)
    if not 0 <= v <= 5:
        raise ValueError(f"priority: {v} is out of range 1..5")
    return v


def to_unix_ms(when: Any, field: str) -> int:
    """Milliseconds since the epoch for a datetime (naive = UTC), a timedelta from now, or a
    number of seconds since the epoch."""
    if when is None:
        return 0
    if isinstance(when, _dt.timedelta):
        when = _dt.datetime.now(_dt.timezone.utc) + when
    if isinstance(when, _dt.datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=_dt.timezone.utc)
        return int(when.timestamp() * 1000)
    if isinstance(when, (int, float)):
        return int(when * 1000)
    raise TypeError(f"{field}: a datetime, a timedelta or epoch seconds, not {type(when).__name__}")


def to_ms(d: Any, field: str) -> int:
    """Milliseconds of a timedelta or a number of seconds."""
    if d is None:
        return 0
    if isinstance(d, _dt.timedelta):
        return int(d.total_seconds() * 1000)
    if isinstance(d, (int, float)):
        return int(d * 1000)
    raise TypeError(f"{field}: a timedelta or seconds, not {type(d).__name__}")


def ids(items: Any) -> List[int]:
    """Task ids from ids or Task objects."""
    return [t.id if isinstance(t, Task) else int(t) for t in (items or ())]


def task_spec(task_type: str, payload: Any = None, *, priority: Any = None, deadline: Any = None,
              dependencies: Any = None, dependencies_finished: Any = None,
              cost_budget: float = 0.0, estimated_complexity: float = 0.0,
              idempotency_key: str = "", max_attempts: int = 0, timeout: Any = None,
              labels: Optional[Dict[str, str]] = None,
              resources: Optional[Dict[str, int]] = None, tenant: str = "", pool: str = "",
              backoff_base: Any = None, backoff_cap: Any = None,
              traceparent: str = "") -> pb.TaskSpec:
    """The protobuf TaskSpec for one task; every option of drover.v1.TaskSpec.

    Args:
        task_type: the agent type that runs it ([A-Za-z0-9_.-]{1,64}).
        payload: any JSON value, or bytes for binary data.
        priority: Priority, 1..5, or "critical" ... "background".
        deadline: must start by then: a datetime (naive = UTC) or a timedelta from now.
        dependencies: parents (ids or Tasks) that must succeed first.
        dependencies_finished: parents that must only finish, however they end.
        cost_budget: the most this task may cost (0: unlimited).
        estimated_complexity: scales the type's learned duration.
        idempotency_key: the same key in a tenant returns the original task.
        max_attempts: counted failures before dead-lettering (0: the type's default).
        timeout: per attempt, a timedelta or seconds.
        labels: free key/value pairs.
        resources: named resources each attempt needs, e.g. {"gpu": 1}.
    """
    data, is_json = _payload.encode(payload)
    spec = pb.TaskSpec(type=task_type, payload=data, payload_json=is_json,
                       priority=priority_value(priority),
                       deadline_unix_ms=to_unix_ms(deadline, "deadline"),
                       cost_budget=cost_budget, estimated_complexity=estimated_complexity,
                       idempotency_key=idempotency_key, max_attempts=max_attempts,
                       execution_timeout_ms=to_ms(timeout, "timeout"), tenant=tenant, pool=pool,
                       backoff_base_ms=to_ms(backoff_base, "backoff_base"),
                       backoff_cap_ms=to_ms(backoff_cap, "backoff_cap"), traceparent=traceparent)
    spec.depends_on.extend(ids(dependencies))
    spec.depends_on_finished.extend(ids(dependencies_finished))
    if labels:
        spec.labels.update(labels)
    for name, amount in (resources or {}).items():
        spec.resources.add(name=name, amount=int(amount))
    return spec
