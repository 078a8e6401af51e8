"""KernelSpec: every compile-time axis of one kernel instantiation, and its one name.

The name is the generated file's stem, the registry key's label, the manifest entry and what
error messages print. `KernelSpec.parse` inverts it. The rules that reject combinations the
kernels do not implement live here and nowhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

FAMILIES = ("sm80", "sm90")
DIRECTIONS = ("fwd", "bwd", "decode")
DTYPES = ("fp16", "bf16", "e4m3")
MAX_HEAD_DIM = 256


@dataclass(frozen=True, order=True)
class KernelSpec:
    """One kernel instantiation.

    `arch` is the kernel family: "sm80" (mma.sync + cp.async, runs on sm80 and newer) or
    "sm90" (TMA + wgmma, sm90a only). Which CUDA archs the family is compiled for is a build
    setting, not part of the identity.
    """

    arch: str
    direction: str
    dtype: str
    head_dim_qk: int
    head_dim_v: int
    causal: bool
    softcap: bool = False
    alibi: bool = False
    dropout: bool = False
    paged: bool = False

    @property
    def features(self) -> tuple[str, ...]:
        """The boolean axes that are on, in name order."""
        return tuple(flag for flag in FLAGS if getattr(self, flag))

    @property
    def name(self) -> str:
        hdim = f"hdim{self.head_dim_qk}"
        if self.head_dim_v != self.head_dim_qk:
            hdim += f"x{self.head_dim_v}"
        return "_".join([self.direction, self.arch, self.dtype, hdim, *self.features])

    @classmethod
    def parse(cls, name: str) -> "KernelSpec":
        match = _NAME_RE.fullmatch(name)
        if match is None:
            raise ValueError(f"not a flashgen kernel name: {name!r}")
        qk = int(match["qk"])
        flags = set(filter(None, (match["flags"] or "").split("_")))
        return cls(
            arch=match["arch"],
            direction=match["dir"],
            dtype=match["dtype"],
            head_dim_qk=qk,
            head_dim_v=int(match["v"]) if match["v"] else qk,
            **{flag: flag in flags for flag in FLAGS},
        )


# Boolean axes in the order they appear in names.
FLAGS = ("causal", "softcap", "alibi", "dropout", "paged")

_NAME_RE = re.compile(
    r"(?P<dir>fwd|bwd|decode)_(?P<arch>sm\d+)_(?P<dtype>[a-z0-9]+)_hdim(?P<qk>\d+)(?:x(?P<v>\d+))?"
    r"(?P<flags>" + "".join(f"(?:_{flag})?" for flag in FLAGS) + ")"
)


@dataclass(frozen=True)
class Rule:
    """A combination the kernels do not implement: `rejects(spec)` is True for it."""

    rejects: Callable[[KernelSpec], bool]
    reason: str


RULES: tuple[Rule, ...] = (
    Rule(lambda s: s.arch not in FAMILIES, f"arch (kernel family) must be one of {FAMILIES}"),
    Rule(lambda s: s.direction not in DIRECTIONS, f"direction must be one of {DIRECTIONS}"),
    Rule(lambda s: s.dtype not in DTYPES, f"dtype must be one of {DTYPES}"),
    Rule(
        lambda s: not (0 < s.head_dim_qk <= MAX_HEAD_DIM and 0 < s.head_dim_v <= MAX_HEAD_DIM),
        f"head dims must be in 1..{MAX_HEAD_DIM}",
    ),
    Rule(lambda s: s.head_dim_qk % 8 or s.head_dim_v % 8, "head dims must be multiples of 8"),
    Rule(lambda s: s.dtype == "e4m3" and s.direction == "fwd" and s.arch != "sm90",
         "e4m3 (FP8) attention kernels exist only in the sm90 family (an FP8 KV cache is read by decode_sm80_e4m3_*)"),
    Rule(lambda s: s.dtype == "e4m3" and s.direction == "bwd", "FP8 (e4m3) attention has no backward pass"),
    # Decode: a few query rows over a long cache (kernels/sm80/sm80_decode_kernel.hpp); dtype is
    # the cache's (e4m3: an FP8 cache read with fp16 or bf16 queries).
    Rule(lambda s: s.direction == "decode" and s.arch != "sm80",
         "decode kernels are in the sm80 family (mma.sync + cp.async), which runs on sm80 and every newer GPU"),
    Rule(lambda s: s.direction == "decode" and (s.causal or s.softcap or s.alibi or s.dropout or s.paged),
         "decode kernels take causal, windows, softcap, ALiBi, sinks and paging at run time: they have no variants"),
    Rule(lambda s: s.direction == "decode" and (s.head_dim_qk != s.head_dim_v or s.head_dim_qk % 16),
         "decode kernels need head_dim_qk = head_dim_v, a multiple of 16"),
    Rule(lambda s: s.direction == "decode" and s.dtype == "e4m3" and s.head_dim_qk % 32,
         "decode kernels over an FP8 cache need head dims that are multiples of 32"),
    Rule(lambda s: s.dtype == "e4m3" and (s.head_dim_qk % 32 or s.head_dim_v % 32),
         "FP8 (e4m3) kernels need head dims that are multiples of 32 (the k width of an FP8 wgmma)"),
    Rule(lambda s: s.dtype == "e4m3" and (s.softcap or s.alibi or s.dropout),
         "FP8 (e4m3) kernels have no softcap, ALiBi or dropout variant"),
    Rule(lambda s: s.arch == "sm90" and (s.head_dim_qk % 16 or s.head_dim_v % 16),
         "sm90 (wgmma) kernels need head dims that are multiples of 16; the sm80 family serves the others"),
    Rule(lambda s: s.direction == "bwd" and s.paged, "the backward pass does not read a paged KV cache"),
    Rule(lambda s: s.dropout and s.paged, "dropout is a training feature; paged-KV kernels are for inference"),
)


def rejection(spec: KernelSpec) -> Optional[str]:
    """The reason `spec` cannot be built, or None if it can."""
    for rule in RULES:
        if rule.rejects(spec):
            return rule.reason
    return None


def is_valid(spec: KernelSpec) -> bool:
    return rejection(spec) is None
