"""The Worker against a real server: concurrency on one stream, heartbeats, checkpoints,
retries, cancel, graceful shutdown."""

from __future__ import annotations

import asyncio
import threading
import time

import drover
from conftest import Running, unique


def test_many_concurrent_tasks_outliving_the_lease_on_heartbeats(client, server):
    kind = unique("conc")
    w = server.worker(kind, concurrency=40)
    live, peak, lock = [0], [0], threading.Lock()

    @w.task(kind)
    def slow(job):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(2.0)  # longer than the 1.5 s lease: only heartbeats keep it
        with lock:
            live[0] -= 1
        return {"i": job.payload["i"], "attempt": job.attempt}

    with Running(w):
        tasks = client.submit_batch([{"task_type": kind, "payload": {"i": i}} for i in range(40)])
        done = [client.wait(t, timeout=30) for t in tasks]
    assert [d.state for d in done] == ["succeeded"] * 40
    assert [d.result for d in done] == [{"i": i, "attempt": 1} for i in range(40)]
    assert peak[0] == 40  # all at once, on one agent
    assert len({d.raw.history[0].agent_id for d in done}) == 1


def test_async_handlers_and_parents(client, server):
    kind = unique("async")
    w = server.worker(kind, concurrency=8)

    @w.task(kind)
    async def handler(job):
        await asyncio.sleep(0.01)
        return {"sum": sum(p.result["sum"]["v"] for p in job.parents) if job.parents else job.payload}

    with Running(w):
        a = client.submit(kind, {"v": 2})
        b = client.submit(kind, {"v": 3})
        c = client.submit(kind, "join", dependencies=[a, b])
        assert client.wait(a, timeout=20).result == {"sum": {"v": 2}}
        assert client.wait(c, timeout=20).result == {"sum": 5}


def test_checkpoint_is_handed_to_the_retry(client, server):
    kind = unique("ckpt")
    w = server.worker(kind)

    @w.task(kind)
    def resumable(job, ctx):
        if job.attempt == 1:
            ctx.checkpoint({"done": 7})
            raise drover.Retry("transient trouble")
        return {"resumed_from": job.checkpoint, "attempt": job.attempt}

    with Running(w):
        t = client.wait(client.submit(kind, {}), timeout=20)
    assert t.result == {"resumed_from": {"done": 7}, "attempt": 2}
    assert t.raw.history[0].error == "transient trouble"


def test_unexpected_exceptions_retry_and_fail_does_not(client, server):
    kind = unique("exc")
    w = server.worker(kind)

    @w.task(kind)
    def broken(job):
        if job.payload == "fail":
            raise drover.Fail("bad input")
        raise KeyError("missing")

    with Running(w):
        f = client.wait(client.submit(kind, "fail"), timeout=20)
        k = client.wait(client.submit(kind, "key"), timeout=20)
    assert f.state == "dead" and f.attempts == 1 and f.error == "bad input"
    assert k.state == "dead" and k.attempts == 3 and "KeyError: 'missing'" in k.error


def test_cancel_reaches_a_running_handler(client, server):
    kind, akind = unique("cancel"), unique("acancel")
    w = server.worker(kind, akind, concurrency=2)
    seen = []

    @w.task(kind)
    def sync_loop(job, ctx):
        while not ctx.cancelled:
            time.sleep(0.01)
        seen.append(("sync", ctx.cancel_reason))

    @w.task(akind)
    async def async_loop(job):
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append(("async", None))
            raise

    with Running(w):
        s = client.submit(kind, {})
        a = client.submit(akind, {})
        for t in (s, a):
            for _ in range(200):
                if client.get(t).state == "leased":
                    break
                time.sleep(0.02)
        client.cancel(s, reason="stop it")
        client.cancel(a)
        for _ in range(200):
            if len(seen) == 2:
                break
            time.sleep(0.02)
    assert sorted(seen) == [("async", None), ("sync", "stop it")]
    assert client.get(s).state == "canceled" and client.get(a).state == "canceled"


def test_graceful_shutdown_finishes_in_flight_tasks_and_loses_nothing(client, server):
    kind = unique("drain")
    w = server.worker(kind, concurrency=10)
    started = threading.Event()
    ran = set()

    @w.task(kind)
    def work(job):
        ran.add(job.id)
        started.set()
        time.sleep(0.5)
        return job.payload

    r = Running(w)
    tasks = client.submit_batch([{"task_type": kind, "payload": i} for i in range(30)])
    assert started.wait(10)
    time.sleep(0.1)
    r.stop()  # while up to ten are running
    done = [client.get(t) for t in tasks]
    # Every task the worker started finished with its result; the rest went back unharmed.
    assert ran and {d.id for d in done if d.state == "succeeded"} == ran
    assert all(d.result == d.payload for d in done if d.state == "succeeded")
    assert all(d.state in ("succeeded", "ready") for d in done), [d.state for d in done]
    assert all(d.attempts <= 1 for d in done)  # none was cut short
    # A second worker finishes the rest: none was lost.
    w2 = server.worker(kind, concurrency=10)
    w2.task(kind)(lambda job: job.payload)
    with Running(w2):
        rest = [client.wait(t, timeout=20) for t in tasks]
    assert [d.state for d in rest] == ["succeeded"] * 30


def test_heartbeat_and_bytes_results(client, server):
    kind = unique("bytes")
    w = server.worker(kind)

    @w.task(kind)
    def raw(job, ctx):
        ctx.heartbeat()
        return bytes(reversed(job.payload))

    with Running(w):
        t = client.wait(client.submit(kind, b"\x01\x02\x03"), timeout=20)
    assert t.result == b"\x03\x02\x01" and not t.raw.result_json
