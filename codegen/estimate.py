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
# sm80-family forward sources at padded head dims above 128 instantiate the kernel twice (the
# wide and the narrow tile, kernels/sm80/sm80_fwd_tile.h): 40-43 s for sm_80 (bf16 hdim 160, 192,
# 224, 256; 32-33 s with one tile at 192 and 256) and 41-46 s for sm_90a (hdim 192x128, 256;
# 32 s with one tile at 256).
SECONDS_PER_TWO_TILE_IMAGE = 42.0
# Backward instantiations (five MMAs per step instead of two): bwd_sm80_bf16_hdim128_causal for
# sm_80 took 49 s of CPU on the same machine.
SECONDS_PER_BWD_IMAGE = 50.0
# Decode instantiations (plain CUDA around mma.sync, two or four small kernels each):
# decode_sm80_bf16_hdim128 15 s and decode_sm80_e4m3_hdim128 17 s for sm_80 on the same machine
# (0.6 GB resident).
SECONDS_PER_DECODE_IMAGE = 16.0
# Peak resident memory of one such nvcc job (cicc + ptxas; 2.9 GB for head dim 256 with one tile;
# 4.0-4.3 GB for two-tile sources at head dims 160-256, 3.2-3.3 GB for one-tile versions of them
# compiled the same way), measured with /usr/bin/time. The build's job pool budgets more
# (cmake/FlashgenJobPool.cmake).
PEAK_GB_PER_JOB = 4.3


@dataclass(frozen=True)
class CompileEstimate:
    kernels: int
    archs: int
    jobs: int
    backward: int = 0  # how many of the kernels are backward ones
    single_arch: int = 0  # forward kernels compiled for one arch only (the sm90 family: sm_90a)
    decode: int = 0  # decode kernels (sm80 family: every arch)
    single_arch_backward: int = 0  # of the single-arch kernels, the backward ones
    two_tile: int = 0  # sm80 forward kernels holding two tiles (sm80_forward_tiles)

    @property
    def images(self) -> int:
        return (self.kernels - self.single_arch) * self.archs + self.single_arch

    @property
    def core_seconds(self) -> float:
        forward = self.kernels - self.backward - self.single_arch - self.decode - self.two_tile
        return ((forward * SECONDS_PER_IMAGE + self.two_tile * SECONDS_PER_TWO_TILE_IMAGE
                 + self.backward * SECONDS_PER_BWD_IMAGE + self.decode * SECONDS_PER_DECODE_IMAGE) * self.archs
                + (self.single_arch - self.single_arch_backward) * SECONDS_PER_IMAGE
                + self.single_arch_backward * SECONDS_PER_BWD_IMAGE)

    @property
    def wall_seconds(self) -> float:
        # One nvcc job per kernel source compiles its archs one after the other.
        if self.kernels == 0:
            return 0.0
        per_source = self.core_seconds / self.kernels
        return math.ceil(self.kernels / self.jobs) * per_source

    def describe(self) -> str:
        return (f"# estimated compile time: {self.core_seconds / 60:.3g} core-minute(s), about "
                f"{self.wall_seconds / 60:.2g} min with {self.jobs} parallel job(s) "
                f"(~{SECONDS_PER_IMAGE:.0f} s per forward (~{SECONDS_PER_TWO_TILE_IMAGE:.0f} s above head dim 128), "
                f"~{SECONDS_PER_BWD_IMAGE:.0f} s per backward and "
                f"~{SECONDS_PER_DECODE_IMAGE:.0f} s per decode image, "
                f"up to ~{PEAK_GB_PER_JOB:g} GB each; "
                "CMAKE_BUILD_PARALLEL_LEVEL sets the jobs)")


def default_jobs(environ=os.environ) -> int:
    """The job count a build would use: CMAKE_BUILD_PARALLEL_LEVEL, else the cores."""
    value = environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "")
    return int(value) if value.isdigit() and int(value) > 0 else (os.cpu_count() or 1)


def sm80_forward_tiles(head_dim_qk: int, head_dim_v: int) -> int:
    """Kernels in one sm80-family forward source: both tiles above padded head dim 128, as
    fwd_has_narrow_tile in kernels/sm80/sm80_fwd_tile.h decides."""
    padded = (max(head_dim_qk, head_dim_v) + 31) // 32 * 32
    return 2 if padded > 128 else 1


def estimate(num_kernels: int, num_archs: int, jobs: int, num_backward: int = 0,
             num_single_arch: int = 0, num_decode: int = 0, num_single_arch_backward: int = 0,
             num_two_tile: int = 0) -> CompileEstimate:
    """num_backward: backward kernels compiled for every arch (sm80 family); num_single_arch:
    kernels compiled for one arch (sm90 family), num_single_arch_backward of them backward;
    num_two_tile: sm80 forward kernels whose source holds two tiles (sm80_forward_tiles)."""
    return CompileEstimate(kernels=num_kernels, archs=num_archs, jobs=max(1, jobs), backward=num_backward,
                           single_arch=num_single_arch, decode=num_decode,
                           single_arch_backward=num_single_arch_backward, two_tile=num_two_tile)
