"""drover.v1: the protobuf messages and gRPC stubs, generated from proto/drover/v1 by the
project's build (sdk/python/CMakeLists.txt) or by ``pip install`` (setup.py)."""
