"""What a build selection costs to compile, so `--list` can say it before anything is built.

The figures are measurements, not a model: one kernel instantiation compiled for one CUDA arch
(one "image") is one nvcc job whose time barely depends on the head dim (padding to multiples
of 32 and the tile rules keep the work per instantiation alike). Re-measure on another machine
with the ninja log of a small build: `awk '{print ($2-$1)/1000, $4}' build/*/.ninja_log`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

# sm80-family forward instantiations for sm_80, nvcc 13.0, one core of a 2-core x86 build
# machine: 27-34 s each for head dims 64, 80, 112, 160 and 256 (bf16).
SECONDS_PER_IMAGE = 30.0
# Peak resident memory of one such nvcc job (cicc + ptxas; 2.9 GB for head dim 256), measured
# with /usr/bin/time -v. The build's job pool budgets more (cmake/FlashgenJobPool.cmake).
PEAK_GB_PER_JOB = 3.0


@dataclass(frozen=True)
class CompileEstimate:
    kernels: int
    archs: int
    jobs: int

    @property
    def core_seconds(self) -> float:
        return self.kernels * self.archs * SECONDS_PER_IMAGE

    @property
    def wall_seconds(self) -> float:
        # One nvcc job per kernel source compiles its archs one after the other.
        return math.ceil(self.kernels / self.jobs) * self.archs * SECONDS_PER_IMAGE

    def describe(self) -> str:
        return (f"# estimated compile time: {self.core_seconds / 60:.3g} core-minute(s), about "
                f"{self.wall_seconds / 60:.2g} min with {self.jobs} parallel job(s) "
                f"(~{SECONDS_PER_IMAGE:.0f} s and up to ~{PEAK_GB_PER_JOB:g} GB per image; "
                "CMAKE_BUILD_PARALLEL_LEVEL sets the jobs)")


def default_jobs(environ=os.environ) -> int:
    """The job count a build would use: CMAKE_BUILD_PARALLEL_LEVEL, else the cores."""
    value = environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "")
    return int(value) if value.isdigit() and int(value) > 0 else (os.cpu_count() or 1)


def estimate(num_kernels: int, num_archs: int, jobs: int) -> CompileEstimate:
    return CompileEstimate(kernels=num_kernels, archs=num_archs, jobs=max(1, jobs))
