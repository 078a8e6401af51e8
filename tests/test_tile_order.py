"""The CTA tile order shared by the host and the kernels (kernels/common/tile_order.h), checked on
the host: tests/cpp/tile_order_check.cpp compiled with nvcc (a host-only program; no GPU)."""

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT


def _cutlass_include():
    if os.environ.get("CUTLASS_DIR"):
        return Path(os.environ["CUTLASS_DIR"]) / "include"
    spec = importlib.util.find_spec("cutlass_library")
    if spec is None or spec.origin is None:
        pytest.skip("nvidia-cutlass is not installed (CUTLASS_DIR unset)")
    return Path(spec.origin).parent / "source" / "include"


def test_sectioned_order(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH")
    binary = tmp_path / "tile_order_check"
    build = subprocess.run([nvcc, "-std=c++17", "-O1", "-I", str(REPO_ROOT / "kernels"), "-I", str(_cutlass_include()),
                            str(REPO_ROOT / "tests" / "cpp" / "tile_order_check.cpp"), "-o", str(binary)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith(", 0 failures"), run.stdout
