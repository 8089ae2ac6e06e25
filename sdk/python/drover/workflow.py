"""Workflows from Python: ``@workflow`` with ``@step`` methods, or a builder function, and
``@mapreduce``; each turns into one SubmitWorkflow / SubmitMapReduce call.

Steps as methods (the seeds' form)::

    @drover.workflow(name="etl", max_parallel=4)
    class Etl:
        @drover.step(type="extract")
        def extract(self, source):            # returns the step's payload
            return {"source": source}

        @drover.step(type="transform", depends_on=["extract"], parallel=True)
        def transform(self, source):          # parallel: one task per item returned
            return [{"part": i} for i in range(4)]

        @drover.step(type="load", depends_on=["transform"])
        def load(self, source):
            return {"table": "events"}

    wf = Etl.run(client, "s3://bucket/day")   # submit, progress bar, wait

A builder function::

    @drover.workflow(name="release")
    def release(wf, version):
        build = wf.step("build", "compile", {"version": version})
        wf.step("publish", "publish", depends_on=[build])

Map-reduce::

    @drover.mapreduce(mapper="summarize", reducer="merge", max_parallel=8,
                      error_strategy="continue_on_partial")
    def summarize_all(docs):
        return [{"doc": d} for d in docs]     # the items (or {"items": [...],
                                              #  "reduce_payload": ...})

    reduce_task = summarize_all.run(client, docs)
    print(reduce_task.result)
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from .types import Task, Workflow, task_spec
from .v1 import drover_pb2 as pb

StepRef = Union[str, "StepHandle"]


class StepHandle:
    """A step added to a builder; pass it (or its name) in another step's depends_on."""

    def __init__(self, names: List[str]) -> None:
        self.names = names  # a parallel step is several tasks

    def __repr__(self) -> str:
        return f"StepHandle({self.names})"


class Builder:
    """Collects a workflow's steps; ``spec`` is the drover.v1.WorkflowSpec."""

    def __init__(self, name: str = "", *, max_parallel: int = 0, fail_fast: bool = False,
                 labels: Optional[Dict[str, str]] = None, tenant: str = "") -> None:
        self.spec = pb.WorkflowSpec(name=name, max_parallel=max_parallel, fail_fast=fail_fast,
                                    tenant=tenant)
        if labels:
            self.spec.labels.update(labels)
        self._steps: Dict[str, StepHandle] = {}

    def _names(self, refs: Optional[Sequence[StepRef]], field: str) -> List[str]:
        out: List[str] = []
        for r in refs or ():
            if isinstance(r, StepHandle):
                out.extend(r.names)
            elif r in self._steps:
                out.extend(self._steps[r].names)
            else:
                raise ValueError(f"{field}: no step named {r!r} before this one")
        return out

    def step(self, name: str, task_type: str, payload: Any = None, *,
             depends_on: Optional[Sequence[StepRef]] = None,
             depends_on_finished: Optional[Sequence[StepRef]] = None,
             **options: Any) -> StepHandle:
        """Adds a step: one task of ``task_type`` (options as :func:`drover.task_spec`)."""
        if name in self._steps:
            raise ValueError(f"step {name!r}: named twice")
        s = self.spec.steps.add(name=name, task=task_spec(task_type, payload, **options))
        s.depends_on.extend(self._names(depends_on, f"step {name!r}: depends_on"))
        s.depends_on_finished.extend(
            self._names(depends_on_finished, f"step {name!r}: depends_on_finished"))
        handle = StepHandle([name])
        self._steps[name] = handle
        return handle

    def parallel(self, name: str, task_type: str, payloads: Sequence[Any], **kw: Any) -> StepHandle:
        """One task per payload, named ``name-1`` ... ``name-N``; a step depending on it waits
        for all of them."""
        if not payloads:
            raise ValueError(f"step {name!r}: parallel=True needs at least one item")
        names: List[str] = []
        for i, p in enumerate(payloads, 1):
            names.extend(self.step(f"{name}-{i}", task_type, p, **kw).names)
        handle = StepHandle(names)
        self._steps[name] = handle
        return handle


class _Submittable:
    """What a decorated definition does: build, submit, run."""

    def build(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _submit_spec(self, client: Any, spec: Any) -> Any:
        raise NotImplementedError

    def submit(self, client: Any, *args: Any, **kwargs: Any) -> Any:
        """Submits it with ``client`` (a Client, or an AsyncClient: then await the answer)."""
        return self._submit_spec(client, self.build(*args, **kwargs))

    def run(self, client: Any, *args: Any, timeout: Optional[float] = None,
            progress: Optional[bool] = None, **kwargs: Any) -> Any:
        """Submits, waits with a progress bar on a terminal, and answers the end (see
        subclasses). With an AsyncClient, await it."""
        if _is_async(client):
            return self._run_async(client, args, kwargs, timeout, progress)
        w = self.submit(client, *args, **kwargs)
        return self._finish(client, client.wait_workflow(w, timeout=timeout, progress=progress))

    async def _run_async(self, client: Any, args: Any, kwargs: Any, timeout: Optional[float],
                         progress: Optional[bool]) -> Any:
        w = await self.submit(client, *args, **kwargs)
        done = await client.wait_workflow(w, timeout=timeout, progress=progress)
        end = self._finish(client, done)
        return await end if inspect.isawaitable(end) else end

    def _finish(self, client: Any, w: Workflow) -> Any:
        return w


class WorkflowDefinition(_Submittable):
    """A ``@workflow``: ``.build(*args)`` gives the WorkflowSpec, ``.submit(client, *args)``
    the Workflow, ``.run(client, *args)`` the ended Workflow."""

    def __init__(self, target: Any, name: str, options: Dict[str, Any]) -> None:
        self.target = target
        self.name = name
        self.options = options

    def build(self, *args: Any, **kwargs: Any) -> pb.WorkflowSpec:
        b = Builder(self.name, **self.options)
        if inspect.isclass(self.target):
            obj = self.target()
            steps = [(n, m) for n, m in inspect.getmembers(type(obj))
                     if isinstance(getattr(m, "_drover_step", None), dict)]
            steps.sort(key=lambda nm: nm[1]._drover_step["order"])
            for attr, fn in _in_dependency_order(steps):
                opts = dict(fn._drover_step)
                opts.pop("order")
                step_name = opts.pop("name") or attr
                task_type = opts.pop("type") or step_name
                parallel = opts.pop("parallel")
                payload = getattr(obj, attr)(*args, **kwargs)
                if parallel:
                    b.parallel(step_name, task_type, list(payload), **opts)
                else:
                    b.step(step_name, task_type, payload, **opts)
        else:
            self.target(b, *args, **kwargs)
        if not b.spec.steps:
            raise ValueError(f"workflow {self.name!r}: no steps")
        return b.spec

    def _submit_spec(self, client: Any, spec: pb.WorkflowSpec) -> Any:
        return client.submit_workflow(spec)

    def __call__(self, *args: Any, **kwargs: Any) -> pb.WorkflowSpec:
        return self.build(*args, **kwargs)


def _in_dependency_order(steps: List[Any]) -> List[Any]:
    """Steps so that each comes after those it depends on (definition order otherwise)."""
    by_name = {(fn._drover_step["name"] or attr): (attr, fn) for attr, fn in steps}
    out: List[Any] = []
    seen: Dict[str, int] = {}

    def visit(name: str, path: List[str]) -> None:
        if seen.get(name) == 2:
            return
        if seen.get(name) == 1:
            raise ValueError(f"workflow steps: a cycle through {' -> '.join(path + [name])}")
        if name not in by_name:
            raise ValueError(f"step {path[-1]!r}: depends on {name!r}, which is not a step")
        seen[name] = 1
        attr, fn = by_name[name]
        for dep in list(fn._drover_step.get("depends_on") or ()) + list(
                fn._drover_step.get("depends_on_finished") or ()):
            visit(dep, path + [name])
        seen[name] = 2
        out.append((attr, fn))

    for attr, fn in steps:
        visit(fn._drover_step["name"] or attr, [])
    return out


def workflow(name: Optional[str] = None, *, max_parallel: int = 0, fail_fast: bool = False,
             labels: Optional[Dict[str, str]] = None,
             tenant: str = "") -> Callable[[Any], WorkflowDefinition]:
    """Makes a workflow of a class with ``@step`` methods or of a builder function
    ``fn(wf: Builder, *args)``.

    Args:
        max_parallel: at most this many of its tasks queued or running at once (0: no limit).
        fail_fast: the first task that ends without success cancels the rest.
    """
    def wrap(target: Any) -> WorkflowDefinition:
        return WorkflowDefinition(target, name or target.__name__,
                                  dict(max_parallel=max_parallel, fail_fast=fail_fast,
                                       labels=labels, tenant=tenant))
    return wrap


_order = [0]


def step(type: Optional[str] = None, *, name: Optional[str] = None,
         depends_on: Optional[Sequence[str]] = None,
         depends_on_finished: Optional[Sequence[str]] = None, parallel: bool = False,
         **options: Any) -> Callable[[Callable], Callable]:
    """Marks a method of a ``@workflow`` class as a step. The method returns the step's
    payload (with ``parallel=True``: a list, one task per item). ``type`` is the agent type
    (default: the step's name); ``depends_on`` names steps that must succeed first and
    ``depends_on_finished`` steps that must only finish; other options as
    :func:`drover.task_spec` (priority, timeout, max_attempts, cost_budget...)."""
    def mark(fn: Callable) -> Callable:
        _order[0] += 1
        fn._drover_step = dict(type=type, name=name, depends_on=list(depends_on or ()),
                               depends_on_finished=list(depends_on_finished or ()),
                               parallel=parallel, order=_order[0], **options)
        return fn
    return mark


class MapReduceDefinition(_Submittable):
    """A ``@mapreduce``: ``.submit(client, *args)`` gives the Workflow, ``.run(client,
    *args)`` the reduce task once it ended (its ``.result``)."""

    def __init__(self, fn: Callable, options: Dict[str, Any]) -> None:
        self.fn = fn
        self.options = options

    def build(self, *args: Any, **kwargs: Any) -> Any:
        out = self.fn(*args, **kwargs)
        if inspect.isawaitable(out):
            return out
        return self._spec(out)

    def _spec(self, out: Any) -> Dict[str, Any]:
        if isinstance(out, dict) and "items" in out:
            items, reduce_payload = out["items"], out.get("reduce_payload")
        else:
            items, reduce_payload = out, None
        return dict(items=list(items), reduce_payload=reduce_payload)

    def submit(self, client: Any, *args: Any, **kwargs: Any) -> Any:
        built = self.build(*args, **kwargs)
        if inspect.isawaitable(built):
            async def later() -> Any:
                return await self._submit_spec(client, self._spec(await built))
            return later()
        return self._submit_spec(client, built)

    def _submit_spec(self, client: Any, spec: Dict[str, Any]) -> Any:
        o = self.options
        return client.submit_mapreduce(o["mapper"], o["reducer"], spec["items"],
                                       reduce_payload=spec["reduce_payload"],
                                       max_parallel=o["max_parallel"],
                                       error_strategy=o["error_strategy"], name=o["name"],
                                       labels=o["labels"], tenant=o["tenant"],
                                       mapper_options=o["mapper_options"],
                                       reducer_options=o["reducer_options"])

    def _finish(self, client: Any, w: Workflow) -> Task:
        return client.get(w.tasks["reduce"])


def mapreduce(mapper: str, reducer: str, *, max_parallel: int = 0,
              error_strategy: str = "fail_fast", name: Optional[str] = None,
              labels: Optional[Dict[str, str]] = None, tenant: str = "",
              mapper_options: Optional[Dict[str, Any]] = None,
              reducer_options: Optional[Dict[str, Any]] = None,
              pool_size: Optional[int] = None) -> Callable[[Callable], MapReduceDefinition]:
    """Makes a map-reduce job of a function that returns its items.

    Args:
        mapper, reducer: the agent types of the map tasks and of the reduce task.
        max_parallel: map tasks queued or running at once (0: no limit); ``pool_size`` is
            the seeds' name for it.
        error_strategy: "fail_fast" or "continue_on_partial".
    """
    if error_strategy not in ("fail_fast", "continue_on_partial"):
        raise ValueError(f"error_strategy: unknown value {error_strategy!r} "
                         "(use fail_fast or continue_on_partial)")

    def wrap(fn: Callable) -> MapReduceDefinition:
        return MapReduceDefinition(fn, dict(
            mapper=mapper, reducer=reducer,
            max_parallel=pool_size if pool_size is not None else max_parallel,
            error_strategy=error_strategy, name=name or fn.__name__, labels=labels,
            tenant=tenant, mapper_options=mapper_options, reducer_options=reducer_options))
    return wrap


def _is_async(client: Any) -> bool:
    return inspect.iscoroutinefunction(getattr(client, "wait_workflow", None))
