"""The seeds' examples (examples/seeds.py), run as a test against the real server."""

from __future__ import annotations

import importlib.util
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def test_the_seeds_examples_run(server, monkeypatch):
    monkeypatch.setenv("DROVER_SERVER", server.grpc)
    monkeypatch.setenv("DROVER_TOKEN_FILE", server.token_file)
    spec = importlib.util.spec_from_file_location(
        "seeds", os.path.join(HERE, "..", "examples", "seeds.py"))
    seeds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeds)
    started = time.monotonic()
    out = seeds.main()
    assert out == {
        "high_throughput": {"built": "payment-api"},
        "dependencies": {"generated_from": "openapi.yaml", "files": 12},
        "cost_budget": {"suite": "integration", "passed": True},
        "mapreduce": {"total_rows": 8 + 9 + 10},
    }
    assert time.monotonic() - started < 60
