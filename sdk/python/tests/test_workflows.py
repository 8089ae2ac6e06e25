"""Workflows and map-reduce from the decorators, with a failing item under each strategy."""

from __future__ import annotations

import asyncio
import io

import pytest

import drover
from conftest import Running, unique


def _worker(server, *kinds):
    w = server.worker(*kinds, concurrency=16)

    @w.default
    def run(job):
        if job.payload == "boom" or (isinstance(job.payload, dict) and job.payload.get("boom")):
            raise drover.Fail("item failed")
        if job.step == "reduce":
            return {"parents": [(p.step, p.state, p.result) for p in job.parents],
                    "style": job.payload}
        return {"step": job.step, "payload": job.payload,
                "parents": [p.result for p in job.parents]}
    return w


def test_workflow_class_with_steps(client, server):
    ex, tr, lo = unique("extract"), unique("transform"), unique("load")

    @drover.workflow(name="etl", max_parallel=3)
    class Etl:
        @drover.step(type=lo, depends_on=["transform"])   # defined first: order by edges
        def load(self, source):
            return {"table": "events"}

        @drover.step(type=ex)
        def extract(self, source):
            return {"source": source}

        @drover.step(type=tr, depends_on=["extract"], parallel=True)
        def transform(self, source):
            return [{"part": i} for i in range(3)]

    spec = Etl.build("s3://day")
    assert [s.name for s in spec.steps] == ["extract", "transform-1", "transform-2",
                                           "transform-3", "load"]
    assert list(spec.steps[4].depends_on) == ["transform-1", "transform-2", "transform-3"]
    with Running(_worker(server, ex, tr, lo)):
        w = Etl.run(client, "s3://day", timeout=30)
    assert w.state == "succeeded" and w.total == 5
    load = client.get(w.tasks["load"])
    assert load.result["parents"] == [
        {"step": f"transform-{i + 1}", "payload": {"part": i},
         "parents": [{"step": "extract", "payload": {"source": "s3://day"}, "parents": []}]}
        for i in range(3)]


def test_workflow_builder_function_and_fail_fast(client, server):
    a, b = unique("a"), unique("b")

    @drover.workflow(fail_fast=True)
    def pipeline(wf, n):
        first = wf.step("first", a, {"n": n})
        bad = wf.step("bad", a, {"boom": True}, depends_on=[first])
        wf.step("after", b, depends_on=[bad])

    with Running(_worker(server, a, b)):
        w = pipeline.run(client, 1, timeout=30)
    assert w.state == "failed"
    assert client.get(w.tasks["after"]).state == "canceled"
    with pytest.raises(ValueError, match="no step named 'nope'"):
        drover.workflow()(lambda wf: wf.step("x", a, depends_on=["nope"])).build()


def test_step_cycle_is_refused():
    @drover.workflow()
    class Loop:
        @drover.step(depends_on=["two"])
        def one(self):
            return None

        @drover.step(depends_on=["one"])
        def two(self):
            return None

    with pytest.raises(ValueError, match="a cycle"):
        Loop.build()


@pytest.mark.parametrize("strategy", ["fail_fast", "continue_on_partial"])
def test_mapreduce_with_a_failing_item(client, server, strategy):
    m, r = unique("map"), unique("reduce")

    @drover.mapreduce(mapper=m, reducer=r, max_parallel=2, error_strategy=strategy)
    def job(words):
        return {"items": [w if w == "boom" else {"w": w} for w in words],
                "reduce_payload": "brief"}

    with Running(_worker(server, m, r)):
        reduce_task = job.run(client, ["a", "boom", "c"], timeout=30)
    if strategy == "fail_fast":
        assert reduce_task.state == "canceled"  # the failed item canceled the job
    else:
        assert reduce_task.state == "succeeded"
        parents = reduce_task.result["parents"]
        assert [p[0] for p in parents] == ["map-1", "map-2", "map-3"]
        assert [p[1] for p in parents] == ["succeeded", "dead", "succeeded"]
        assert parents[0][2]["payload"] == {"w": "a"} and parents[1][2] is None
        assert reduce_task.result["style"] == "brief"


def test_mapreduce_async_and_progress_bar(server):
    m, r = unique("amap"), unique("areduce")

    @drover.mapreduce(mapper=m, reducer=r)
    async def job(n):
        await asyncio.sleep(0)
        return list(range(n))

    async def main():
        async with server.aclient() as c:
            return await job.run(c, 5, timeout=30, progress=False)

    with Running(_worker(server, m, r)):
        t = asyncio.run(main())
    assert t.state == "succeeded" and [p[2]["payload"] for p in t.result["parents"]] == [0, 1, 2, 3, 4]

    from drover._progress import Progress
    out = io.StringIO()
    bar = Progress(True, out)
    w = drover.Workflow(drover.types.pb.Workflow(id=3, total=4, done=2, succeeded=2))
    bar.show(w)
    bar.end()
    assert "workflow 3 [" in out.getvalue() and "2/4 done (2 ok" in out.getvalue()


def test_bad_error_strategy():
    with pytest.raises(ValueError, match="error_strategy: unknown value 'sometimes'"):
        drover.mapreduce(mapper="m", reducer="r", error_strategy="sometimes")
