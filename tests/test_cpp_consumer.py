"""The C++ example (examples/cpp) built against the INSTALLED flashgen CMake package.

Building needs cmake, a C++ compiler and the CUDA toolkit (headers and cudart), not a GPU, so
CI builds it; running it needs a GPU. The package is the one pip installed: its directory is a
CMake prefix holding include/, lib/cmake/flashgen and libflashgen.so (flashgen.paths).
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT, requires_gpu

EXAMPLE_DIR = REPO_ROOT / "examples" / "cpp"
# The example's exit codes (flashgen_example.cpp).
EXIT_CODES = {0: "passed", 1: "wrong result", 2: "bad command line", 3: "no usable CUDA device or CUDA error",
              4: "kernel or GPU arch not built"}


def _toolchain_skip_reason():
    if shutil.which("cmake") is None:
        return "cmake is not on PATH"
    cuda_roots = [os.environ.get(v) for v in ("CUDAToolkit_ROOT", "CUDA_HOME", "CUDA_PATH")]
    if shutil.which("nvcc") is None and not any(r and Path(r, "include", "cuda_runtime_api.h").is_file()
                                                 for r in cuda_roots):
        return "no CUDA toolkit (nvcc not on PATH, CUDAToolkit_ROOT/CUDA_HOME unset)"
    if not any(shutil.which(c) for c in (os.environ.get("CXX") or "c++", "g++", "clang++")):
        return "no C++ compiler"
    return None


def _installed_prefix():
    try:
        from flashgen import paths
    except ImportError as err:
        pytest.skip(f"flashgen is not installed: {err}")
    if not Path(paths.cmake_dir(), "flashgenConfig.cmake").is_file():
        pytest.skip(f"the installed flashgen has no CMake package at {paths.cmake_dir()}; reinstall it")
    return paths.cmake_prefix_path()


def _run(cmd, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def example_binary(tmp_path_factory):
    reason = _toolchain_skip_reason()
    if reason:
        pytest.skip(reason)
    prefix = _installed_prefix()
    build = tmp_path_factory.mktemp("cpp_example")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = _run(["cmake", "-S", EXAMPLE_DIR, "-B", build, *generator, "-DCMAKE_BUILD_TYPE=Release",
                      f"-DCMAKE_PREFIX_PATH={prefix}"])
    assert f"from {prefix}" in configure.stdout, configure.stdout  # found the installed package, not another
    _run(["cmake", "--build", build])
    binary = build / "flashgen_example"
    assert binary.is_file()
    return binary


def test_example_builds_against_installed_package(example_binary):
    # Linked against the installed libflashgen.so: its NEEDED entry resolves through the rpath.
    needed = _run(["readelf", "-d", example_binary]).stdout if shutil.which("readelf") else "libflashgen.so"
    assert "libflashgen.so" in needed


def _example_args():
    """A dtype and head dim whose plain non-causal kernels exist, and, when one is built, a kernel
    for the example's paged decode (page_size 16: a decode kernel or the sm80 paged one; the sm90
    paged kernels need pages of whole key blocks)."""
    from flashgen._library import manifest

    kernels = manifest()["kernels"]

    def built(paged, arch=None):
        return {(k["dtype"], k["head_dim_qk"]) for k in kernels
                if k["direction"] == "fwd" and k["head_dim_qk"] == k["head_dim_v"] and k["dtype"] in ("bf16", "fp16")
                and not (k["causal"] or k["softcap"] or k["alibi"] or k["dropout"]) and k["paged"] == paged
                and (arch is None or k["arch"] == arch)}

    decode = {(k["dtype"], k["head_dim_qk"]) for k in kernels if k["direction"] == "decode"}
    plain, paged = built(False), built(True, arch="sm80") | decode
    if not plain:
        pytest.skip("the build has no plain non-causal fp16/bf16 forward kernel for the example")
    both = sorted(plain & paged, key=lambda key: (key != ("bf16", 64), key))
    dtype, head_dim = both[0] if both else sorted(plain)[0]
    return ["--dtype", dtype, "--head-dim", str(head_dim)] + ([] if both else ["--no-paged"])


@requires_gpu
@pytest.mark.gpu
def test_example_matches_cpu_reference_on_gpu(example_binary):
    args = _example_args()
    result = subprocess.run([example_binary, *args], capture_output=True, text=True, timeout=300)
    print(result.stdout)
    assert result.returncode == 0, (f"flashgen_example {' '.join(args)}: "
                                    f"{EXIT_CODES.get(result.returncode, result.returncode)}\n"
                                    f"{result.stdout}\n{result.stderr}")
    assert "PASSED" in result.stdout
