"""Front-end compile check: `nvcc -ptx` over one generated kernel per (direction, kernel family,
FP8 or 16-bit, head dim), so that a template error in a kernel that filtered builds (CI, GPU
sessions) never compile still fails before a user's full build does (session 12 found the sm90
backward at head dim 96 broken this way for several sessions).

    python3 tools/compile_check.py [--head-dims "64;96"] [--jobs 2]

Runs codegen into a temporary directory (plain variants; FLASHGEN_* settings do not apply), then
nvcc with the flags the CMake build gives a kernel (sm_80 for the sm80 family, sm_90a for the
sm90 family; ptxas is skipped). Exit status 1 if any kernel fails; its first errors are printed.
"""

import argparse
import concurrent.futures
import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def cutlass_include() -> pathlib.Path:
    spec = importlib.util.find_spec("cutlass_library")
    if spec is None or spec.origin is None:
        sys.exit("compile_check: nvidia-cutlass is not installed (pip install nvidia-cutlass)")
    return pathlib.Path(spec.origin).parent / "source" / "include"


def representatives(kernel_dir: pathlib.Path) -> list[pathlib.Path]:
    """One source per (direction, family, FP8 or not, head dim); bf16 before fp16."""
    chosen: dict[tuple, pathlib.Path] = {}
    for src in sorted(kernel_dir.glob("*.cu")):
        m = re.fullmatch(r"(fwd|bwd|decode)_(sm\d+)_(bf16|fp16|e4m3)_hdim(\d+(?:x\d+)?)", src.stem)
        if m is None:
            continue
        direction, family, dtype, hdim = m.groups()
        chosen.setdefault((direction, family, dtype == "e4m3", hdim), src)
    return list(chosen.values())


def compile_ptx(src: pathlib.Path, include: pathlib.Path, out_dir: pathlib.Path) -> tuple[str, bool, str, float]:
    arch = "-gencode=arch=compute_90a,code=sm_90a" if "_sm90_" in src.name else "-gencode=arch=compute_80,code=sm_80"
    cmd = ["nvcc", "-std=c++17", arch, "--expt-relaxed-constexpr", "--use_fast_math",
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
        sources = representatives(tmp_dir / "gen" / "kernels")
        print(f"compile_check: nvcc -ptx over {len(sources)} kernels, {args.jobs} at a time", flush=True)
        failed = []
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            for name, ok, errors, seconds in pool.map(lambda s: compile_ptx(s, include, tmp_dir), sources):
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
