"""The sync and asyncio clients against a real server: every call, payloads, errors."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

import drover
from conftest import Running, unique


def test_submit_every_option_and_get(client, server):
    parent = client.submit(unique("p"), {"x": 1})
    t = client.submit(unique("opt"), {"doc": 1, "text": "héllo", "n": [1, 2.5, None]},
                      priority=drover.Priority.HIGH, deadline=dt.timedelta(hours=2),
                      dependencies=[parent], cost_budget=50.0, estimated_complexity=2.0,
                      idempotency_key="k-opt-1", max_attempts=4, timeout=dt.timedelta(minutes=5),
                      labels={"team": "red"}, backoff_base=0.5, backoff_cap=10)
    assert t.state == "waiting"
    g = client.get(t.id)
    assert g.payload == {"doc": 1, "text": "héllo", "n": [1, 2.5, None]}
    assert g.priority == drover.Priority.HIGH and g.labels == {"team": "red"}
    raw = g.raw.spec
    assert list(raw.depends_on) == [parent.id] and raw.cost_budget == 50.0
    assert raw.max_attempts == 4 and raw.execution_timeout_ms == 300000
    assert raw.backoff_base_ms == 500 and raw.estimated_complexity == 2.0
    assert raw.deadline_unix_ms > 0
    again = client.submit(unique("other"), None, idempotency_key="k-opt-1")
    assert again.id == t.id  # the same key returns the original


def test_payload_kinds(client):
    for value in ({"a": 1}, [1, "two"], "text", 3, 2.5, True, False):
        assert client.get(client.submit(unique("kinds"), value)).payload == value
    b = client.submit(unique("kinds"), b"\x00\x01binary")
    assert client.get(b).payload == b"\x00\x01binary" and not b.raw.spec.payload_json
    assert client.get(client.submit(unique("kinds"))).payload is None
    with pytest.raises(TypeError, match="payload: not JSON-serialisable"):
        client.submit("x", {"s": {1, 2}})


def test_batch_list_cancel(client):
    kind = unique("batch")
    tasks = client.submit_batch([{"task_type": kind, "payload": {"i": i}} for i in range(250)])
    assert len(tasks) == 250 and tasks[0].payload == {"i": 0}
    listed = list(client.list(type=kind, page_size=100))
    assert [t.id for t in listed] == [t.id for t in tasks]  # three pages, in order
    assert len(list(client.list(type=kind, limit=7))) == 7
    c = client.cancel(tasks[0], reason="not needed")
    assert c.state == "canceled" and c.reason == "not needed"
    assert [t.id for t in client.list(type=kind, state="canceled")] == [tasks[0].id]


def test_errors_carry_the_server_message_and_code(client):
    with pytest.raises(drover.InvalidArgument) as e:
        client.submit("bad type!")
    assert e.value.code == "INVALID_ARGUMENT" and "task.type" in e.value.message
    with pytest.raises(drover.NotFound):
        client.get(987654321)
    with pytest.raises(ValueError, match="priority: unknown value"):
        client.submit("x", priority="urgent")


def test_unauthenticated_without_a_token(server):
    with drover.Client(server.grpc, token="drv_nope_nope") as c:
        with pytest.raises(drover.Unauthenticated):
            c.stats()


def test_wait_and_timeout(client, server):
    kind = unique("wait")
    t = client.submit(kind, {"v": 2})
    with pytest.raises(drover.WaitTimeout) as e:
        client.wait(t, timeout=0.2)
    assert e.value.last.state == "ready"
    w = server.worker(kind)
    w.task(kind)(lambda job: {"double": job.payload["v"] * 2})
    with Running(w):
        done = client.wait(t, timeout=20)
    assert done.state == "succeeded" and done.result == {"double": 4}
    assert done.raw.result_json


def test_dead_letters_reprocess_purge(client, server):
    kind = unique("dead")
    w = server.worker(kind)

    @w.task(kind)
    def always_fails(job):
        raise drover.Fail("cannot handle it")

    with Running(w):
        t = client.wait(client.submit(kind, {"n": 1}), timeout=20)
        assert t.state == "dead" and "cannot handle it" in t.error
        dead, _ = client.dead_letters(type=kind)
        assert [d.id for d in dead] == [t.id]
        assert client.reprocess_dead_letters([t.id]) == [t.id]
        assert client.wait(t, timeout=20).state == "dead"
    assert client.purge_dead_letters([t.id]) == 1
    with pytest.raises(drover.NotFound):
        client.get(t.id)


def test_stats_usage_pools_agents_health_whoami(client):
    assert client.health() == "SERVING"
    before = int(client.stats().get("submitted_total", 0))
    client.submit(unique("stats"))
    stats = client.stats()
    assert int(stats["submitted_total"]) == before + 1 and stats["store"]
    assert "cost_by_tenant" in client.usage() or client.usage() == {}
    assert isinstance(client.pools(), list)
    assert isinstance(client.agents(), list)
    assert client.whoami()["principal"].startswith("admin")


def test_pools_apply_and_delete(client):
    client.apply_pool({"name": "sdkpool", "types": ["sdk-pool-type"], "min": 0, "max": 2,
                       "command": ["sleep", "1000"]})
    assert "sdkpool" in [p["name"] for p in client.pools()]
    client.delete_pool("sdkpool", force=True)
    import time
    for _ in range(100):  # the pool goes once its agents stopped
        if "sdkpool" not in [p["name"] for p in client.pools()]:
            break
        time.sleep(0.05)
    assert "sdkpool" not in [p["name"] for p in client.pools()]


def test_resource_exhausted_is_retried_after_retry_after(tmp_path):
    """A tenant quota of 2 submissions/s: a burst of 6 gets RESOURCE_EXHAUSTED with a
    retry-after; the client waits and resends, so all are accepted."""
    from conftest import Server
    cfg = tmp_path / "c.json"
    cfg.write_text('{"tenants": {"default": {"max_submits_per_second": 4, "submit_burst": 2}}}')
    s = Server(str(tmp_path), ["--config", str(cfg)])
    try:
        with s.client(retries=0) as c0:
            errs = []
            for _ in range(5):
                try:
                    c0.submit("q")
                except drover.ResourceExhausted as e:
                    errs.append(e)
            assert errs and errs[0].retry_after and errs[0].retry_after > 0
        with s.client(retries=10) as c:
            ids = [c.submit("q").id for _ in range(6)]
            assert len(set(ids)) == 6
    finally:
        s.stop()


def test_async_client(server):
    async def main():
        async with server.aclient() as c:
            kind = unique("async")
            t = await c.submit(kind, {"a": 1}, priority="critical")
            assert (await c.get(t.id)).payload == {"a": 1}
            batch = await c.submit_batch([{"task_type": kind, "payload": i} for i in range(50)])
            assert len(batch) == 50
            seen = [x.id async for x in c.list(type=kind)]
            assert len(seen) == 51
            with pytest.raises(drover.NotFound):
                await c.get(999999999)
            with pytest.raises(drover.WaitTimeout):
                await c.wait(t, timeout=0.1)
            assert (await c.cancel(t)).state == "canceled"
            assert (await c.health()) == "SERVING"
    asyncio.run(main())


def test_messages_reach_the_worker_callback(client, server):
    kind = unique("msg")
    got = []
    w = server.worker(kind)
    w.task(kind)(lambda job: None)
    w.on_message(lambda m: got.append((m.topic, m.body)))
    with Running(w):
        r = client.send_message({"reload": True}, agent_type=kind, topic="config")
        assert r["delivered_to"] == [str(w.agent_id)] or r["delivered_to"] == [w.agent_id]
        for _ in range(100):
            if got:
                break
            import time
            time.sleep(0.02)
    assert got == [("config", {"reload": True})]


def test_python_m_drover(server, tmp_path):
    import json
    import os
    import subprocess
    import sys
    env = dict(os.environ, DROVER_SERVER=server.grpc, DROVER_TOKEN_FILE=server.token_file)
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    out = subprocess.run([sys.executable, "-m", "drover", "submit", "cli-type", '{"k": [1]}'],
                         env=env, capture_output=True, text=True, check=True).stdout
    t = json.loads(out)
    assert t["payload"] == {"k": [1]} and t["state"] == "ready"
    got = subprocess.run([sys.executable, "-m", "drover", "get", str(t["id"])], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(got)["id"] == t["id"]
    bad = subprocess.run([sys.executable, "-m", "drover", "get", "99999999"], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "NOT_FOUND" in bad.stderr
