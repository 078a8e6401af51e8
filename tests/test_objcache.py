"""tools/objcache.py (the nvcc launcher that lets prebuilt objects travel to the GPU machine),
driven with a stand-in compiler: hits across machines whose paths differ, misses when a header
the compile read has changed, a depfile naming the local headers, and plain passthrough."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "objcache.py"

# Writes an "object" made of the source and the header it includes, and a gcc-style depfile
# listing the source, that header, a CUTLASS header and a system header (which is not keyed).
FAKE_NVCC = textwrap.dedent("""\
    import os, sys
    args = sys.argv[1:]
    if args == ["--version"]:
        print("Cuda compilation tools, release 13.0, V13.0.88")
        sys.exit(0)
    get = lambda opt: args[args.index(opt) + 1]
    inc = [a[2:] for a in args if a.startswith("-I")][1]
    cut = [a.split("=", 1)[1] for a in args if a.startswith("-isystem=")][0]
    src, header = get("-c"), inc + "/common/h.hpp"
    if "FAIL" in open(src).read():
        sys.exit(3)
    with open(get("-o"), "w") as f:
        f.write(open(src).read() + open(header).read())
    extra = " " + os.environ["FAKE_CUDA_HEADER"] if os.environ.get("FAKE_CUDA_HEADER") else ""
    with open(get("-MF"), "w") as f:
        f.write(get("-MT") + ": " + src + " \\\\\\n " + header + " " + cut + "/cute/tensor.hpp /usr/include/stdio.h"
                + extra + "\\n")
""")


def make_machine(base: Path, header: str = "int h;\n") -> tuple[Path, Path, Path]:
    """A source tree with a kernels/ include dir, a CUTLASS root and a build dir inside the tree."""
    root, cutlass = base / "src", base / "cutlass" / "include"
    (root / "kernels" / "common").mkdir(parents=True)
    (root / "codegen").mkdir()
    (root / "include").mkdir()
    (root / "kernels" / "common" / "h.hpp").write_text(header)
    (cutlass / "cute").mkdir(parents=True)
    (cutlass / "cute" / "tensor.hpp").write_text("// cute\n")
    build = root / "build" / "cp3xx"
    (build / "generated").mkdir(parents=True)
    (build / "generated" / "k.cu").write_text("__global__ void k() {}\n")
    (base / "nvcc.py").write_text(FAKE_NVCC)
    return root, cutlass, build


def compile_on(base: Path, cache: Path | None, cuda_include: Path | None = None,
               cuda_header: Path | None = None, strict: bool = False,
               define: str = "-DX=1", ccbin: Path | None = None) -> subprocess.CompletedProcess:
    root, cutlass, build = base / "src", base / "cutlass" / "include", base / "src" / "build" / "cp3xx"
    (build / "out").mkdir(exist_ok=True)
    wrapper = base / "nvcc"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {base / 'nvcc.py'} \"$@\"\n")
    wrapper.chmod(0o755)
    cmd = [sys.executable, str(TOOL), str(wrapper), "-forward-unknown-to-host-compiler", define,
           *([f"-ccbin={ccbin}"] if ccbin else []),
           f"-I{root / 'include'}", f"-I{root / 'kernels'}", f"-isystem={cutlass}",
           *([f"-isystem={cuda_include}"] if cuda_include else []), "-O3",
           "-MD", "-MT", "out/k.o", "-MF", "out/k.o.d", "-x", "cu", "-c", str(build / "generated" / "k.cu"),
           "-o", "out/k.o"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHGEN_OBJCACHE")}
    if strict:
        env["FLASHGEN_OBJCACHE_STRICT"] = "1"
    if cache is not None:
        env["FLASHGEN_OBJCACHE"] = str(cache)
    if cuda_header is not None:
        env["FAKE_CUDA_HEADER"] = str(cuda_header)
    return subprocess.run(cmd, cwd=build, env=env, capture_output=True, text=True)


def log_lines(cache: Path) -> list[str]:
    return [line.split()[0] for line in (cache / "log.txt").read_text().splitlines()]


def test_hit_on_another_machine_with_other_paths(tmp_path):
    cache = tmp_path / "cache"
    make_machine(tmp_path / "cpu")
    assert compile_on(tmp_path / "cpu", cache).returncode == 0
    assert log_lines(cache) == ["miss"]
    gpu = tmp_path / "gpu_machine_elsewhere"
    make_machine(gpu)
    obj = gpu / "src" / "build" / "cp3xx" / "out" / "k.o"
    assert compile_on(gpu, cache).returncode == 0
    assert log_lines(cache) == ["miss", "hit"]
    assert obj.read_text() == "__global__ void k() {}\nint h;\n"
    deps = (obj.parent / "k.o.d").read_text()
    # The depfile names this machine's copies of the keyed headers, and no system header.
    assert str(gpu / "src" / "kernels" / "common" / "h.hpp") in deps
    assert str(gpu / "cutlass" / "include" / "cute" / "tensor.hpp") in deps
    assert "cpu" not in deps.replace(str(gpu), "") and "stdio.h" not in deps


def test_changed_header_misses_and_both_versions_stay(tmp_path):
    cache = tmp_path / "cache"
    make_machine(tmp_path / "a")
    make_machine(tmp_path / "b", header="int h2;\n")
    assert compile_on(tmp_path / "a", cache).returncode == 0
    assert compile_on(tmp_path / "b", cache).returncode == 0
    obj = tmp_path / "b" / "src" / "build" / "cp3xx" / "out" / "k.o"
    assert obj.read_text().endswith("int h2;\n")
    assert log_lines(cache) == ["miss", "miss"]
    # The first version is still served where its header is back.
    shutil.rmtree(tmp_path / "a" / "src" / "build" / "cp3xx" / "out")
    assert compile_on(tmp_path / "a", cache).returncode == 0
    assert log_lines(cache) == ["miss", "miss", "hit"]
    assert (tmp_path / "a" / "src" / "build" / "cp3xx" / "out" / "k.o").read_text().endswith("int h;\n")


def test_a_tampered_object_is_not_served(tmp_path):
    cache = tmp_path / "cache"
    make_machine(tmp_path / "a")
    assert compile_on(tmp_path / "a", cache).returncode == 0
    (obj,) = (cache / "o").iterdir()
    obj.write_text("truncated")
    assert compile_on(tmp_path / "a", cache).returncode == 0
    assert log_lines(cache) == ["miss", "miss"]


def test_compile_errors_pass_through_and_are_not_cached(tmp_path):
    cache = tmp_path / "cache"
    make_machine(tmp_path / "a")
    (tmp_path / "a" / "src" / "build" / "cp3xx" / "generated" / "k.cu").write_text("FAIL\n")
    assert compile_on(tmp_path / "a", cache).returncode == 3
    assert not (cache / "m").exists()


def test_without_a_cache_dir_the_compiler_runs_alone(tmp_path):
    make_machine(tmp_path / "a")
    assert compile_on(tmp_path / "a", None).returncode == 0
    assert (tmp_path / "a" / "src" / "build" / "cp3xx" / "out" / "k.o").exists()
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("sep", ["=", " "])
def test_isystem_spellings_key_alike(tmp_path, sep):
    sys.path.insert(0, str(TOOL.parent))
    try:
        import objcache
    finally:
        sys.path.pop(0)
    args = ["-isystem" + sep + "/x/include"] if sep == "=" else ["-isystem", "/x/include"]
    assert objcache._tokens(args + ["-I/y", "-o", "a.o"]) == [("-isystem", "/x/include"), ("-I", "/y"), ("-o", "a.o")]


def test_toolkit_include_spelled_or_linked_differently_still_hits(tmp_path):
    """CMake 3.25 passes -isystem=<cuda>/include, 3.31 the directory it links to (or nothing),
    while nvcc's depfile names the link: the key and the header check must not care."""
    cache = tmp_path / "cache"
    for machine in ("cpu", "gpu"):
        make_machine(tmp_path / machine)
        real = tmp_path / machine / "cuda" / "targets" / "x86_64-linux" / "include"
        real.mkdir(parents=True)
        (real / "cuda_runtime.h").write_text("// runtime\n")
        (tmp_path / machine / "cuda" / "include").symlink_to(real)
    link = tmp_path / "cpu" / "cuda" / "include"
    assert compile_on(tmp_path / "cpu", cache, link, link / "cuda_runtime.h").returncode == 0
    real = tmp_path / "gpu" / "cuda" / "targets" / "x86_64-linux" / "include"
    header = tmp_path / "gpu" / "cuda" / "include" / "cuda_runtime.h"
    assert compile_on(tmp_path / "gpu", cache, real, header).returncode == 0
    assert log_lines(cache) == ["miss", "hit"]
    # The toolkit's headers stand behind nvcc's release line (another packaging of the same
    # release still hits) unless FLASHGEN_OBJCACHE_STRICT=1, which checks them and reports which.
    (real / "cuda_runtime.h").write_text("// runtime, packaged differently\n")
    assert compile_on(tmp_path / "gpu", cache, real, header).returncode == 0
    assert log_lines(cache) == ["miss", "hit", "hit"]
    strict = tmp_path / "strict"
    assert compile_on(tmp_path / "cpu", strict, link, link / "cuda_runtime.h", strict=True).returncode == 0
    assert compile_on(tmp_path / "gpu", strict, real, header, strict=True).returncode == 0
    assert log_lines(strict) == ["miss", "miss"]
    (report,) = (strict / "k").iterdir()
    assert json.loads(report.read_text())["earlier entries differ in"] == ["<CUDA>/cuda_runtime.h"]


def test_a_toolkit_subdirectory_alone_is_left_out_of_the_key(tmp_path):
    """CMake 4 adds -isystem <cuda>/include/cccl; with no other toolkit include on the line
    (nothing else names the toolkit's root) it must still not reach the key."""
    cache = tmp_path / "cache"
    make_machine(tmp_path / "cpu")
    make_machine(tmp_path / "gpu")
    cuda = tmp_path / "gpu" / "cuda-13.0" / "include"
    (cuda / "cccl").mkdir(parents=True)
    (cuda / "cuda_runtime.h").write_text("// runtime\n")
    assert compile_on(tmp_path / "cpu", cache).returncode == 0
    assert compile_on(tmp_path / "gpu", cache, cuda / "cccl").returncode == 0
    assert log_lines(cache) == ["miss", "hit"]


def test_a_broken_cache_never_fails_the_build(tmp_path):
    make_machine(tmp_path / "a")
    not_a_dir = tmp_path / "cache_is_a_file"
    not_a_dir.write_text("")
    result = compile_on(tmp_path / "a", not_a_dir)
    assert result.returncode == 0, result.stderr
    assert "objcache: could not store k.o" in result.stderr
    assert (tmp_path / "a" / "src" / "build" / "cp3xx" / "out" / "k.o").read_text().endswith("int h;\n")


def test_prune_keeps_what_the_log_names_after_a_line(tmp_path):
    cache = tmp_path / "cache"
    make_machine(tmp_path / "a")
    make_machine(tmp_path / "b", header="int h2;\n")
    assert compile_on(tmp_path / "a", cache).returncode == 0  # log line 1
    assert compile_on(tmp_path / "b", cache).returncode == 0  # line 2: same key, a second entry
    (tmp_path / "a" / "src" / "build" / "cp3xx" / "generated" / "k.cu").write_text("__global__ void k2() {}\n")
    assert compile_on(tmp_path / "a", cache).returncode == 0  # line 3: another key
    assert len(list((cache / "m").glob("*.json"))) == 2 and len(list((cache / "o").iterdir())) == 3
    out = subprocess.run([sys.executable, str(TOOL), "--prune-since", "2", str(cache)], capture_output=True,
                         text=True, check=True).stdout
    assert "kept 1 keys and 1 objects" in out
    assert len(list((cache / "m").glob("*.json"))) == 1 and len(list((cache / "o").iterdir())) == 1
    assert (cache / "log.txt").read_text() == ""
    assert compile_on(tmp_path / "a", cache).returncode == 0
    assert log_lines(cache) == ["hit"]


def test_compare_names_what_made_another_machine_miss(tmp_path):
    cache, other = tmp_path / "cache", tmp_path / "other_cache"  # other: the device's, with its miss
    make_machine(tmp_path / "a")
    make_machine(tmp_path / "b")
    assert compile_on(tmp_path / "a", cache).returncode == 0
    assert compile_on(tmp_path / "b", other, define="-DX=2").returncode == 0
    (report,) = (other / "k").iterdir()
    out = subprocess.run([sys.executable, str(TOOL), "--compare", str(report), str(cache)], capture_output=True,
                         text=True, check=True).stdout
    assert "flags: only here ['-D X=1'], only there ['-D X=2']" in out, out


def test_nvcc_flags_from_the_environment_are_keyed(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    make_machine(tmp_path / "a")
    assert compile_on(tmp_path / "a", cache).returncode == 0
    monkeypatch.setenv("NVCC_APPEND_FLAGS", "-G")
    assert compile_on(tmp_path / "a", cache).returncode == 0
    monkeypatch.delenv("NVCC_APPEND_FLAGS")
    assert compile_on(tmp_path / "a", cache).returncode == 0
    assert log_lines(cache) == ["miss", "miss", "hit"]


def fake_gxx(directory: Path, version: str) -> Path:
    """A g++ that answers -dumpfullversion / -dumpmachine like gcc."""
    directory.mkdir(parents=True)
    exe = directory / "g++"
    exe.write_text(f"#!/bin/sh\ncase $1 in -dumpfullversion) echo {version};; *) echo x86_64-linux-gnu;; esac\n")
    exe.chmod(0o755)
    return exe


def test_host_compiler_is_keyed_by_version_not_path(tmp_path, monkeypatch):
    """A machine whose CMake passes -ccbin /opt/gcc/bin/g++ hits what one with g++ on the PATH
    (no -ccbin) compiled, when both are the same gcc; another gcc version misses."""
    cache = tmp_path / "cache"
    make_machine(tmp_path / "cpu")
    make_machine(tmp_path / "gpu")
    monkeypatch.setenv("PATH", f"{fake_gxx(tmp_path / 'usr_bin', '12.2.0').parent}:{os.environ['PATH']}")
    assert compile_on(tmp_path / "cpu", cache).returncode == 0
    assert compile_on(tmp_path / "gpu", cache, ccbin=fake_gxx(tmp_path / "opt_gcc", "12.2.0")).returncode == 0
    assert compile_on(tmp_path / "gpu", cache, ccbin=fake_gxx(tmp_path / "gcc13", "13.3.0")).returncode == 0
    assert log_lines(cache) == ["miss", "hit", "miss"]
