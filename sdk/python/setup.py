"""Generates the protobuf and gRPC stubs from the repository's protos (../../proto) while
the package is built, with protoc and grpc_python_plugin (Debian: protobuf-compiler,
protobuf-compiler-grpc): ``pip install sdk/python``."""

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "..", "..", "proto")


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        protoc = shutil.which("protoc")
        plugin = shutil.which("grpc_python_plugin")
        if not protoc or not plugin:
            raise SystemExit("drover SDK: protoc and grpc_python_plugin are needed to build "
                             "the stubs (apt-get install protobuf-compiler protobuf-compiler-grpc)")
        protos = [os.path.join(PROTO_DIR, "drover", "v1", n) for n in ("drover.proto",
                                                                       "config.proto")]
        subprocess.check_call([protoc, f"-I{PROTO_DIR}", f"--python_out={self.build_lib}",
                               f"--grpc_python_out={self.build_lib}",
                               f"--plugin=protoc-gen-grpc_python={plugin}", *protos])


setup(cmdclass={"build_py": BuildWithStubs})
