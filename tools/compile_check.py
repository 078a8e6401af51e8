"""Front-end compile check: `nvcc -ptx` over one generated kernel per (direction, kernel family,
FP8 or 16-bit, head dim), so that a template error in a kernel that filtered builds (CI, GPU
sessions) never compile still fails before a user's full build does (session 12 found the sm90
backward at head dim 96 broken this way for several sessions).

    python3 tools/compile_check.py [--head-dims "64;96"] [--jobs 2]

Runs codegen into a temporary directory (plain variants; FLASHGEN_* settings do not apply), picks
the kernels from its manifest, then nvcc with the flags the CMake build gives a kernel (the first
of codegen's gencode flags for its family; ptxas is skipped). Exit status 1 if any kernel fails; its first errors are printed.
"""

import argparse
import concurrent.futures
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def cutlass_include() -> pathlib.Path:
    """CUTLASS's headers where the CMake build looks: CUTLASS_DIR, else the nvidia-cutlass wheel."""
    if os.environ.get("CUTLASS_DIR"):
        return pathlib.Path(os.environ["CUTLASS_DIR"]) / "include"
    spec = importlib.util.find_spec("cutlass_library")
    if spec is None or spec.origin is None:
        sys.exit("compile_check: nvidia-cutlass is not installed (pip install nvidia-cutlass, or set CUTLASS_DIR)")
    return pathlib.Path(spec.origin).parent / "source" / "include"


def representatives(gen_dir: pathlib.Path) -> list[dict]:
    """One kernel of the manifest per (direction, family, FP8 or not, head dims); bf16 before fp16."""
    kernels = json.loads((gen_dir / "manifest.json").read_text())["kernels"]
    chosen: dict[tuple, dict] = {}
    for k in sorted(kernels, key=lambda k: k["name"]):
        key = (k["direction"], k["arch"], k["dtype"] == "e4m3", k["head_dim_qk"], k["head_dim_v"])
        chosen.setdefault(key, k)
    return list(chosen.values())


def gencode_flags(gen_dir: pathlib.Path) -> dict[str, str]:
    """The first gencode flag codegen gives each family (kernels.cmake; -ptx takes one)."""
    text = (gen_dir / "kernels.cmake").read_text()
    first = {name: re.search(rf"set\({name}\s+\"([^\"]+)\"", text).group(1)
             for name in ("FLASHGEN_GENCODE_FLAGS", "FLASHGEN_SM90_GENCODE_FLAGS")}
    return {"sm90": first["FLASHGEN_SM90_GENCODE_FLAGS"], "other": first["FLASHGEN_GENCODE_FLAGS"]}


def compile_ptx(src: pathlib.Path, arch_flag: str, include: pathlib.Path,
                out_dir: pathlib.Path) -> tuple[str, bool, str, float]:
    cmd = ["nvcc", "-std=c++17", arch_flag, "--expt-relaxed-constexpr", "--use_fast_math",
           "-DCUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED", "-I", str(ROOT / "kernels"), "-I", str(ROOT / "include"),
           "-isystem", str(include), "-ptx", str(src), "-o", str(out_dir / (src.stem + ".ptx"))]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    return src.stem, proc.returncode == 0, "\n".join(errors[:6]), time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head-dims", help="codegen's --head-dims (default: every default head dim)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    include = cutlass_include()
    with tempfile.TemporaryDirectory(prefix="flashgen-compile-check-") as tmp:
        tmp_dir = pathlib.Path(tmp)
        gen = [sys.executable, "-m", "codegen", "--out", str(tmp_dir / "gen"), "--cuda-archs", "80;90a",
               "--variants", "plain"]
        if args.head_dims:
            gen += ["--head-dims", args.head_dims]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHGEN_")}  # not the build's filter
        subprocess.run(gen, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        gen_dir = tmp_dir / "gen"
        kernels = representatives(gen_dir)
        flags = gencode_flags(gen_dir)
        jobs = [(gen_dir / k["source"], flags["sm90" if k["arch"] == "sm90" else "other"]) for k in kernels]
        print(f"compile_check: nvcc -ptx over {len(jobs)} kernels, {args.jobs} at a time", flush=True)
        failed = []
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            for name, ok, errors, seconds in pool.map(lambda j: compile_ptx(*j, include, tmp_dir), jobs):
                print(f"  {'ok  ' if ok else 'FAIL'} {name} ({seconds:.0f} s)", flush=True)
                if not ok:
                    failed.append(name)
                    print("    " + errors.replace("\n", "\n    "), flush=True)
    if failed:
        print(f"compile_check: {len(failed)} kernel(s) fail to compile: {', '.join(failed)}")
        return 1
    print("compile_check: every kernel compiles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
