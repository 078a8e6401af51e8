"""Build and run a host-only C++ check program from tests/cpp against the kernel headers (no
GPU): nvcc when the headers need CuTe's configuration, else any C++ compiler."""

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT


def cutlass_include() -> Path:
    if os.environ.get("CUTLASS_DIR"):
        return Path(os.environ["CUTLASS_DIR"]) / "include"
    spec = importlib.util.find_spec("cutlass_library")
    if spec is None or spec.origin is None:
        pytest.skip("nvidia-cutlass is not installed (CUTLASS_DIR unset)")
    return Path(spec.origin).parent / "source" / "include"


def run_check(tmp_path, source: str, stdin: str = "", cute: bool = True) -> str:
    """Compile tests/cpp/<source> and run it; returns its stdout. cute: the headers it includes
    need CuTe's configuration (nvcc and the CUTLASS headers), else any C++ compiler does."""
    if cute:
        compiler = shutil.which("nvcc")
        includes = ["-I", str(REPO_ROOT / "kernels"), "-I", str(cutlass_include())]
    else:
        compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("nvcc")
        includes = ["-I", str(REPO_ROOT / "kernels")]
    if compiler is None:
        pytest.skip("no suitable compiler on PATH (nvcc for CuTe headers)")
    binary = tmp_path / Path(source).stem
    build = subprocess.run([compiler, "-std=c++17", "-O1", *includes, str(REPO_ROOT / "tests" / "cpp" / source),
                            "-o", str(binary)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(binary)], input=stdin, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout
