"""pip installs the package from the repository (stubs generated on the way) into a venv."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

SDK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
REPO = os.path.join(SDK, "..", "..")


def test_pip_install_from_the_repo(server):
    try:
        import venv  # noqa: F401
        import pip  # noqa: F401
    except ImportError:
        pytest.fail("pip and venv are needed: apt-get install python3-pip python3-venv")
    import shutil
    with tempfile.TemporaryDirectory() as d:
        # A copy of the repository's parts the build reads, so the build leaves no files here.
        src = os.path.join(d, "src", "sdk", "python")
        shutil.copytree(SDK, src, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                "__pycache__", "tests"))
        shutil.copytree(os.path.join(REPO, "proto"), os.path.join(d, "src", "proto"))
        env_dir = os.path.join(d, "venv")
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", env_dir],
                       check=True)
        py = os.path.join(env_dir, "bin", "python")
        # Offline: no index, the build backend is the system's setuptools.
        subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        "--no-build-isolation", src], check=True, cwd=d,
                       env=dict(os.environ, PIP_NO_CACHE_DIR="1"))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        out = subprocess.run(
            [py, "-c", "import drover, sys; c = drover.Client(sys.argv[1], token_file=sys.argv[2]);"
             " print(drover.__file__); print(c.health())", server.grpc, server.token_file],
            check=True, capture_output=True, text=True, cwd=d, env=env).stdout.split()
        assert out[0].startswith(env_dir) and out[1] == "SERVING"
