"""gRPC's own conventions against the real server, with clients built from the upstream
protos Debian ships (grpc-proto: grpc.health.v1, grpc.reflection.v1alpha) and from the
google.rpc protos in proto/google/rpc: the health service per service, server reflection,
and rich error details (BadRequest field violations, RetryInfo).

The messages come from descriptor sets protoc writes (--include_imports), so the test needs
no generated module whose package would collide with the grpc or google packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

UPSTREAM = "/usr/share/grpc-proto"
REPO_PROTO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "proto")


def _messages(include: str, *files: str):
    protoc = shutil.which("protoc")
    assert protoc, "protoc is needed (apt-get install protobuf-compiler)"
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "set.pb")
        subprocess.run([protoc, f"-I{include}", "-I/usr/include", "--include_imports",
                        f"--descriptor_set_out={out}", *files], check=True)
        fds = descriptor_pb2.FileDescriptorSet.FromString(open(out, "rb").read())
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    factory = message_factory.MessageFactory(pool)  # protobuf 4.21's API

    def cls(name: str):
        return factory.GetPrototype(pool.FindMessageTypeByName(name))
    return cls


@pytest.fixture(scope="module")
def upstream():
    if not os.path.exists(f"{UPSTREAM}/grpc/health/v1/health.proto"):
        pytest.fail("the upstream gRPC protos are missing: apt-get install grpc-proto")
    return _messages(UPSTREAM, "grpc/health/v1/health.proto",
                     "grpc/reflection/v1alpha/reflection.proto")


def _unary(channel, method, req_cls, resp_cls):
    return channel.unary_unary(method, request_serializer=req_cls.SerializeToString,
                               response_deserializer=resp_cls.FromString)


def test_health_service_per_service(server, upstream):
    Req, Resp = upstream("grpc.health.v1.HealthCheckRequest"), upstream(
        "grpc.health.v1.HealthCheckResponse")
    with grpc.insecure_channel(server.grpc) as ch:  # no token: probes need none
        check = _unary(ch, "/grpc.health.v1.Health/Check", Req, Resp)
        serving = Resp.ServingStatus.Value("SERVING")
        for name in ("", "drover.v1.TaskService", "drover.v1.AgentService",
                     "drover.v1.AdminService"):
            assert check(Req(service=name), timeout=5).status == serving, name
        with pytest.raises(grpc.RpcError) as e:
            check(Req(service="no.such.Service"), timeout=5)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        watch = ch.unary_stream("/grpc.health.v1.Health/Watch",
                                request_serializer=Req.SerializeToString,
                                response_deserializer=Resp.FromString)
        stream = watch(Req(service="drover.v1.TaskService"), timeout=5)
        assert next(stream).status == serving
        stream.cancel()


def test_server_reflection_lists_and_describes_the_services(server, upstream):
    Req = upstream("grpc.reflection.v1alpha.ServerReflectionRequest")
    Resp = upstream("grpc.reflection.v1alpha.ServerReflectionResponse")
    with grpc.insecure_channel(server.grpc) as ch:
        call = ch.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                request_serializer=Req.SerializeToString,
                                response_deserializer=Resp.FromString)
        answers = list(call(iter([Req(list_services=""),
                                  Req(file_containing_symbol="drover.v1.TaskService")]),
                            timeout=10))
    names = {s.name for s in answers[0].list_services_response.service}
    assert {"drover.v1.TaskService", "drover.v1.WorkflowService", "drover.v1.AgentService",
            "drover.v1.AdminService", "drover.v1.AuthService", "grpc.health.v1.Health"} <= names
    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in answers[1].file_descriptor_response.file_descriptor_proto]
    drover_file = next(f for f in files if f.name == "drover/v1/drover.proto")
    assert "SubmitTask" in [m.name for s in drover_file.service for m in s.method]


def test_rich_error_details(server, tmp_path):
    rpc = _messages(REPO_PROTO, "google/rpc/status.proto", "google/rpc/error_details.proto")
    Status, BadRequest, RetryInfo = (rpc("google.rpc.Status"), rpc("google.rpc.BadRequest"),
                                     rpc("google.rpc.RetryInfo"))

    def details(err):
        for k, v in err.trailing_metadata() or ():
            if k == "grpc-status-details-bin":
                return Status.FromString(v)
        raise AssertionError("no grpc-status-details-bin trailer")

    import drover
    from drover.v1 import drover_pb2 as pb, drover_pb2_grpc as stubs
    md = (("authorization", "Bearer " + open(server.token_file).read().strip()),)
    with grpc.insecure_channel(server.grpc) as ch:
        tasks = stubs.TaskServiceStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            tasks.SubmitTask(pb.SubmitTaskRequest(task=pb.TaskSpec(type="bad type!")),
                             metadata=md, timeout=5)
        st = details(e.value)
        assert st.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        bad = BadRequest()
        assert st.details[0].Unpack(bad)
        assert bad.field_violations[0].field == "task.type"
        assert "[A-Za-z0-9_.-]" in bad.field_violations[0].description

    # RetryInfo: a tenant over its quota.
    from conftest import Server
    cfg = tmp_path / "c.json"
    cfg.write_text('{"tenants": {"default": {"max_submits_per_second": 1, "submit_burst": 1}}}')
    s = Server(str(tmp_path), ["--config", str(cfg)])
    try:
        md = (("authorization", "Bearer " + open(s.token_file).read().strip()),)
        with grpc.insecure_channel(s.grpc) as ch:
            tasks = stubs.TaskServiceStub(ch)
            err = None
            for _ in range(5):
                try:
                    tasks.SubmitTask(pb.SubmitTaskRequest(task=pb.TaskSpec(type="q")),
                                     metadata=md, timeout=5)
                except grpc.RpcError as x:
                    err = x
                    break
            assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            info = RetryInfo()
            assert any(d.Unpack(info) for d in details(err).details)
            delay = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
            assert 0 < delay <= 1.5
            assert drover.errors.from_rpc_error(err).retry_after == pytest.approx(delay,
                                                                                 abs=0.002)
    finally:
        s.stop()
