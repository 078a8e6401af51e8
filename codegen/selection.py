"""Build selection: which kernels a build instantiates, read in this one place.

Every knob comes from a command-line value, else the environment variable of the same name
(CMake forwards its cache variables as command-line values):

  FLASHGEN_CUDA_ARCHS      CUDA targets, e.g. "80;90a" (default: the GPU on this machine, else 80)
  FLASHGEN_HEAD_DIMS       head dims, e.g. "64;128" or "192x128" for head_dim_qk x head_dim_v
  FLASHGEN_DTYPES          e.g. "bf16"
  FLASHGEN_VARIANTS        feature sets, '+'-joined: e.g. "plain;paged;softcap+alibi"
                           (default: plain;softcap;alibi;dropout;paged)
  FLASHGEN_DIRECTIONS      "fwd", "bwd", "decode" (default: all three; bwd covers the non-paged
                           variants; decode kernels have no variants, one per dtype and head dim)
  FLASHGEN_KERNELS         include globs over kernel names, e.g. "fwd_sm80_bf16_*"
  FLASHGEN_KERNELS_EXCLUDE exclude globs over kernel names

Lists may be separated by ';', ',' or spaces.
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from .spec import DIRECTIONS, DTYPES, FAMILIES, KernelSpec, is_valid

DEFAULT_HEAD_DIMS = ((32, 32), (64, 64), (96, 96), (128, 128), (192, 192), (256, 256), (192, 128))
# Feature sets (besides causal, always built both ways) each (dtype, head dims) is built with.
VARIANT_FEATURES = ("softcap", "alibi", "dropout", "paged")
DEFAULT_VARIANTS = ("plain", "softcap", "alibi", "dropout", "paged")
DEFAULT_DTYPES = ("fp16", "bf16", "e4m3")  # e4m3: the sm90 FP8 forward, and decode over an FP8 cache
FALLBACK_CUDA_ARCH = "80"

ENV_KNOBS = (
    "FLASHGEN_CUDA_ARCHS",
    "FLASHGEN_HEAD_DIMS",
    "FLASHGEN_DTYPES",
    "FLASHGEN_VARIANTS",
    "FLASHGEN_DIRECTIONS",
    "FLASHGEN_KERNELS",
    "FLASHGEN_KERNELS_EXCLUDE",
)


class SelectionError(ValueError):
    """A build-selection value that cannot be understood, or that selects nothing."""


def split_list(value: Optional[str]) -> list[str]:
    if not value:
        return []
    return [item for item in re.split(r"[;,\s]+", value.strip()) if item]


def parse_cuda_arch(item: str) -> str:
    """'80', '8.0', 'sm_80', '90a', 'sm_90a' -> '80' / '90a'."""
    match = re.fullmatch(r"(?:sm_?|compute_)?(\d+)\.?(\d)?(a|f)?", item.strip().lower())
    if match is None:
        raise SelectionError(f"cannot read CUDA arch {item!r} (expected e.g. 80, 86, 90a)")
    major, minor, suffix = match.groups()
    digits = major + (minor or "")
    if len(digits) < 2:
        digits += "0"
    arch = digits + (suffix or "")
    if int(digits) < 80:
        raise SelectionError(f"CUDA arch {item!r}: flashgen needs sm80 or newer")
    return arch


def detect_cuda_arch() -> str:
    """The first GPU's arch via nvidia-smi (Hopper as 90a), else the fallback."""
    if shutil.which("nvidia-smi") is None:
        return FALLBACK_CUDA_ARCH
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return FALLBACK_CUDA_ARCH
    caps = split_list(out.replace("\n", ";"))
    if not caps:
        return FALLBACK_CUDA_ARCH
    arch = parse_cuda_arch(caps[0])
    return arch + "a" if arch == "90" else arch


def parse_head_dim(item: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)(?:[x:](\d+))?", item.strip())
    if match is None:
        raise SelectionError(f"cannot read head dim {item!r} (expected e.g. 128 or 192x128)")
    qk = int(match[1])
    return qk, int(match[2]) if match[2] else qk


def parse_variant(item: str) -> frozenset[str]:
    """'plain' -> {}; 'softcap+alibi' -> {'softcap', 'alibi'}."""
    features = frozenset(f for f in item.strip().split("+") if f and f != "plain")
    unknown = features - set(VARIANT_FEATURES)
    if unknown:
        raise SelectionError(f"unknown variant feature(s) {sorted(unknown)} in {item!r} "
                             f"(known: plain, {', '.join(VARIANT_FEATURES)}, joined with '+')")
    return features


@dataclass(frozen=True)
class BuildSelection:
    cuda_archs: tuple[str, ...]
    head_dims: tuple[tuple[int, int], ...]
    dtypes: tuple[str, ...]
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    variants: tuple[frozenset, ...] = tuple(parse_variant(v) for v in DEFAULT_VARIANTS)
    directions: tuple[str, ...] = DIRECTIONS

    @classmethod
    def from_values(
        cls,
        cuda_archs: Optional[str] = None,
        head_dims: Optional[str] = None,
        dtypes: Optional[str] = None,
        variants: Optional[str] = None,
        directions: Optional[str] = None,
        kernels: Optional[str] = None,
        kernels_exclude: Optional[str] = None,
        env: Optional[Mapping[str, str]] = None,
    ) -> "BuildSelection":
        """Explicit values win; missing ones fall back to the environment, then to defaults."""
        env = os.environ if env is None else env

        def pick(value: Optional[str], knob: str) -> Optional[str]:
            return value if value else env.get(knob) or None

        arch_items = split_list(pick(cuda_archs, "FLASHGEN_CUDA_ARCHS"))
        archs = tuple(dict.fromkeys(parse_cuda_arch(a) for a in arch_items)) or (detect_cuda_arch(),)

        hdim_items = split_list(pick(head_dims, "FLASHGEN_HEAD_DIMS"))
        hdims = tuple(dict.fromkeys(parse_head_dim(h) for h in hdim_items)) or DEFAULT_HEAD_DIMS

        dtype_items = split_list(pick(dtypes, "FLASHGEN_DTYPES"))
        for d in dtype_items:
            if d not in DTYPES:
                raise SelectionError(f"unknown dtype {d!r} (known: {', '.join(DTYPES)})")
        dts = tuple(dict.fromkeys(dtype_items)) or DEFAULT_DTYPES

        variant_items = split_list(pick(variants, "FLASHGEN_VARIANTS")) or list(DEFAULT_VARIANTS)
        vars_ = tuple(dict.fromkeys(parse_variant(v) for v in variant_items))

        direction_items = split_list(pick(directions, "FLASHGEN_DIRECTIONS"))
        for d in direction_items:
            if d not in DIRECTIONS:
                raise SelectionError(f"unknown direction {d!r} (known: {', '.join(DIRECTIONS)})")
        dirs = tuple(d for d in DIRECTIONS if d in direction_items) or DIRECTIONS

        include = tuple(split_list(pick(kernels, "FLASHGEN_KERNELS"))) or ("*",)
        exclude = tuple(split_list(pick(kernels_exclude, "FLASHGEN_KERNELS_EXCLUDE")))
        return cls(cuda_archs=archs, head_dims=hdims, dtypes=dts, include=include, exclude=exclude, variants=vars_,
                   directions=dirs)

    @property
    def families(self) -> tuple[str, ...]:
        """Kernel families the archs can run: sm80 on any target, sm90 only with 90a."""
        fams = ["sm80"]
        if "90a" in self.cuda_archs:
            fams.append("sm90")
        return tuple(f for f in FAMILIES if f in fams)

    def gencode_flags(self) -> list[str]:
        return [f"-gencode=arch=compute_{a},code=sm_{a}" for a in self.cuda_archs]

    def matches(self, name: str) -> bool:
        included = any(fnmatch.fnmatchcase(name, pattern) for pattern in self.include)
        return included and not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.exclude)

    def candidates(self) -> Iterable[KernelSpec]:
        """Every spec over the selected axes, valid or not, before the name globs."""
        for family, direction, dtype, (qk, v), causal, features in itertools.product(
            self.families, self.directions, self.dtypes, self.head_dims, (False, True), self.variants
        ):
            if direction == "decode":
                # Decode kernels take every feature at run time: one per (dtype, head dims).
                yield KernelSpec(family, direction, dtype, qk, v, False)
                continue
            yield KernelSpec(family, direction, dtype, qk, v, causal, **{f: f in features for f in VARIANT_FEATURES})

    def specs(self) -> list[KernelSpec]:
        """The kernels this selection builds, in spec order, each valid and unique."""
        chosen = {s.name: s for s in self.candidates() if is_valid(s) and self.matches(s.name)}
        return sorted(chosen.values())

    def describe(self) -> dict:
        return {
            "cuda_archs": list(self.cuda_archs),
            "head_dims": [f"{qk}x{v}" if qk != v else str(qk) for qk, v in self.head_dims],
            "dtypes": list(self.dtypes),
            "variants": ["+".join(sorted(v)) or "plain" for v in self.variants],
            "directions": list(self.directions),
            "kernels": list(self.include),
            "kernels_exclude": list(self.exclude),
        }
