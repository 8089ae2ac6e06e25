"""A real `drover serve` on loopback ports for the SDK's tests (DROVER names the binary)."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from typing import Iterator

import pytest

import drover


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, work: str, extra: list) -> None:
        binary = os.environ.get("DROVER", "drover")
        self.grpc = f"127.0.0.1:{_free_port()}"
        self.http = f"127.0.0.1:{_free_port()}"
        self.data = os.path.join(work, "data")
        self.log = open(os.path.join(work, "serve.log"), "ab")
        ports = os.path.join(work, "ports")
        self.proc = subprocess.Popen(
            [binary, "serve", "--data-dir", self.data, "--grpc-listen", self.grpc,
             "--http-listen", self.http, "--port-file", ports, *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(400):
            if os.path.exists(ports):
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"drover serve exited: see {work}/serve.log")
            time.sleep(0.025)
        self.token_file = os.path.join(self.data, "admin.token")

    def client(self, **kw) -> drover.Client:
        return drover.Client(self.grpc, token_file=self.token_file, **kw)

    def aclient(self, **kw) -> drover.AsyncClient:
        return drover.AsyncClient(self.grpc, token_file=self.token_file, **kw)

    def worker(self, *types: str, **kw) -> drover.Worker:
        return drover.Worker(types, server=self.grpc, token_file=self.token_file, **kw)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    work = tempfile.mkdtemp(prefix="drover-sdk-")
    cfg = os.path.join(work, "config.json")
    with open(cfg, "w") as f:
        # A short lease: a handler running longer than it lives on the worker's heartbeats.
        f.write('{"lease_ttl_ms": 1500, "defaults": {"backoff_base_ms": 20, "backoff_cap_ms": 50, '
                '"max_attempts": 3}}')
    s = Server(work, ["--config", cfg])
    yield s
    s.stop()


@pytest.fixture
def client(server: Server) -> Iterator[drover.Client]:
    with server.client() as c:
        yield c


def unique(prefix: str) -> str:
    """A task type no other test uses (tests share the module's server)."""
    unique.n += 1  # type: ignore[attr-defined]
    return f"{prefix}-{unique.n}"  # type: ignore[attr-defined]


unique.n = 0  # type: ignore[attr-defined]


class Running:
    """A worker on a thread of its own for a test (stopped gracefully at the end)."""

    def __init__(self, worker: drover.Worker) -> None:
        import asyncio
        import threading
        self.worker = worker
        self.error: list = []

        def main() -> None:
            try:
                asyncio.run(worker.arun())
            except BaseException as e:  # noqa: BLE001 - reported by the test
                self.error.append(e)

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        for _ in range(200):
            if worker.agent_id:
                break
            time.sleep(0.02)

    def stop(self, timeout: float = 30) -> None:
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop"
        assert not self.error, self.error

    def __enter__(self) -> "Running":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
