"""The Python SDK's figures (issue 10): the asyncio client's batched submission rate, and
one Worker process's completion rate with trivial handlers. bench/run_python_sdk.sh starts
the server and runs both phases, each in a process of its own.

  python_sdk_bench.py submit --server ADDR --tasks N [--batch 500] [--inflight 4] [--type T]
  python_sdk_bench.py worker --server ADDR --tasks N [--concurrency 1024] [--type T] [--sync]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import drover


async def submit(a: argparse.Namespace) -> None:
    async with drover.AsyncClient(a.server) as c:
        queue = list(range(0, a.tasks, a.batch))
        accepted = 0

        async def sender() -> None:
            nonlocal accepted
            while queue:
                first = queue.pop()
                # Built as a user would: dicts of submit()'s arguments, JSON payloads.
                batch = [{"task_type": a.type, "payload": {"i": first + j}, "priority": "high"}
                         for j in range(min(a.batch, a.tasks - first))]
                n = len(await c.submit_batch(batch))  # not `accepted += await`: it reads first
                accepted += n

        start = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(a.inflight)))
        s = time.perf_counter() - start
    print(f"submit: {accepted} tasks in {s:.2f} s = {accepted / s:,.0f} tasks/s "
          f"(batches of {a.batch}, {a.inflight} in flight, one asyncio client, building "
          f"each task from a dict)")


async def worker(a: argparse.Namespace) -> None:
    w = drover.Worker([a.type], concurrency=a.concurrency, server=a.server,
                      batch_size=a.batch_size, threads=8)
    if a.sync:
        w.task(a.type)(lambda job: {"ok": job.payload["i"]})
    else:
        async def handle(job: drover.Job) -> dict:
            return {"ok": job.payload["i"]}
        w.task(a.type)(handle)
    run = asyncio.create_task(w.arun())
    start = time.perf_counter()
    last_print = start
    while w.completed < a.tasks:
        await asyncio.sleep(0.05)
        if run.done():
            run.result()
        now = time.perf_counter()
        if now - last_print > 5:
            print(f"  {w.completed} done ({w.completed / (now - start):,.0f}/s)", flush=True)
            last_print = now
    s = time.perf_counter() - start
    w.stop()
    await run
    cpu = os.times()
    print(f"worker: {w.completed} tasks in {s:.2f} s = {w.completed / s:,.0f} tasks/s "
          f"({'sync' if a.sync else 'async'} handler, concurrency {a.concurrency}, one "
          f"process; its CPU {cpu.user + cpu.system:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["submit", "worker"])
    ap.add_argument("--server", required=True)
    ap.add_argument("--tasks", type=int, default=100000)
    ap.add_argument("--type", default="py-bench")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--inflight", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--sync", action="store_true")
    a = ap.parse_args()
    asyncio.run(submit(a) if a.phase == "submit" else worker(a))


if __name__ == "__main__":
    main()
