"""The seeds' examples, written with the drover SDK. Run against a server:

    DROVER_SERVER=127.0.0.1:7070 DROVER_TOKEN_FILE=drover-data/admin.token \
        python3 examples/seeds.py

It starts its own worker for the example task types, runs each example, and prints what
came back.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta

import drover
from drover import TaskPriority

worker = drover.Worker(concurrency=32, name="seed-examples")


@worker.task("backend_development")
async def backend_development(task):
    return {"built": task.payload["service"]}


@worker.task("api_design")
def api_design(task):
    return {"spec": task.payload["spec"], "endpoints": 12}


@worker.task("code_generation")
def code_generation(task):
    (parent,) = task.parents
    return {"generated_from": parent.result["spec"], "files": parent.result["endpoints"]}


@worker.task("testing")
def testing(task):
    return {"suite": task.payload["suite"], "passed": True}


@worker.task("processor")
def processor(task):
    return {"rows": len(task.payload["source"])}


@worker.task("aggregator")
def aggregator(task):
    return {"total_rows": sum(p.result["rows"] for p in task.parents if p.result)}


# Map-reduce (seed 001): a processor per data source, then one aggregator.
@drover.mapreduce(mapper="processor", reducer="aggregator", pool_size=10,
                  error_strategy="continue_on_partial")
def batch_process(data_sources):
    return [{"source": s, "batch_size": 1000} for s in data_sources]


async def examples(manager: drover.AsyncClient) -> dict:
    out = {}
    # High-throughput task submission (seed 002).
    task_id = await manager.submit_task(
        task_type="backend_development",
        payload={"service": "payment-api"},
        priority=TaskPriority.HIGH,
        estimated_complexity=2.0,
        deadline=datetime.utcnow() + timedelta(hours=2),
    )
    out["high_throughput"] = (await manager.wait(task_id, timeout=30)).result

    # Task with dependencies.
    parent_id = await manager.submit_task(task_type="api_design",
                                          payload={"spec": "openapi.yaml"})
    child_id = await manager.submit_task(task_type="code_generation",
                                         payload={"from_spec": "openapi.yaml"},
                                         dependencies=[parent_id])
    out["dependencies"] = (await manager.wait(child_id, timeout=30)).result

    # Cost-budgeted submission.
    task_id = await manager.submit_task(task_type="testing", payload={"suite": "integration"},
                                        cost_budget=50.0)
    out["cost_budget"] = (await manager.wait(task_id, timeout=30)).result

    # Map-reduce.
    reduced = await batch_process.run(manager, ["s3://a/x", "s3://b/yy", "s3://c/zzz"],
                                      timeout=60)
    out["mapreduce"] = reduced.result
    return out


def main() -> dict:
    done = threading.Event()
    result = {}

    def run_worker():
        asyncio.run(worker.arun())
        done.set()

    threading.Thread(target=run_worker, daemon=True).start()

    async def client_side():
        async with drover.AsyncClient() as manager:
            result.update(await examples(manager))

    try:
        asyncio.run(client_side())
    finally:
        worker.stop()
        done.wait(30)
    return result


if __name__ == "__main__":
    for name, value in main().items():
        print(f"{name}: {value}")
