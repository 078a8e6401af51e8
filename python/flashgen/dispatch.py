"""Choosing the kernel instantiation for a call, and explaining why none fits."""

from __future__ import annotations

import functools
import os
from typing import Optional

import torch

from ._library import built_kernels, cuda_archs, manifest
from .codegen.spec import KernelSpec, rejection
from .errors import KernelNotBuiltError, UnsupportedDeviceError

DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float8_e4m3fn: "e4m3"}


@functools.lru_cache(maxsize=None)
def _capability(device_index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device_index)


def _device_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


FWD_BACKENDS = ("auto", "sm80", "sm90", "decode")
BWD_BACKENDS = ("auto", "sm80", "sm90")
# Packed rows (query tokens x GQA group) up to which auto mode sends a call to a decode kernel
# (the C library's kDecodeMaxRows).
DECODE_MAX_ROWS = 32


def _backend_setting(variable: str, allowed: tuple[str, ...]) -> str:
    value = os.environ.get(variable, "") or "auto"
    if value not in allowed:
        raise ValueError(f"{variable}={value!r}: expected one of {', '.join(allowed)}")
    return value


def forward_backend() -> str:
    """FLASHGEN_FWD_BACKEND: 'sm80' or 'sm90' forces a forward kernel family, 'decode' the
    decode kernels (the C library reads the same variable); unset or 'auto' prefers sm90 on
    Hopper, and the decode kernels for short queries."""
    return _backend_setting("FLASHGEN_FWD_BACKEND", FWD_BACKENDS)


def backward_backend() -> str:
    """FLASHGEN_BWD_BACKEND: the same for the backward pass (the C library reads it too)."""
    return _backend_setting("FLASHGEN_BWD_BACKEND", BWD_BACKENDS)


def decode_spec(cache_dtype: torch.dtype, head_dim: int) -> KernelSpec:
    """The decode kernel for a cache of this dtype (float8_e4m3fn: an FP8 cache)."""
    return KernelSpec("sm80", "decode", DTYPE_NAMES[cache_dtype], head_dim, head_dim, False)


def decode_kernel_for(q_dtype: torch.dtype, cache_dtype: torch.dtype, head_dim: int, head_dim_v: int,
                      packed_rows: int, dropout: bool = False) -> Optional[KernelSpec]:
    """The decode kernel the C library will use for a non-varlen call, or None (then a forward
    kernel serves it). Raises when a decode kernel is required (FP8 cache, or
    FLASHGEN_FWD_BACKEND=decode) but cannot serve the call or was not built."""
    backend = forward_backend()
    fp8_cache = cache_dtype == torch.float8_e4m3fn
    required = fp8_cache or backend == "decode"
    if backend in ("sm80", "sm90") and not fp8_cache:
        return None
    if dropout or head_dim != head_dim_v:
        if required:
            raise ValueError("the decode kernels (an FP8 KV cache, or FLASHGEN_FWD_BACKEND=decode) take no dropout "
                             "and need head_dim_qk = head_dim_v")
        return None
    spec = decode_spec(cache_dtype, head_dim)
    if not required and packed_rows > DECODE_MAX_ROWS:
        return None
    if spec.name in _built_names():
        return spec
    if not required:
        return None
    reason = rejection(spec)
    if reason is not None:
        raise ValueError(f"flashgen has no decode kernel for head_dim={head_dim} over a {spec.dtype} cache: {reason}")
    raise KernelNotBuiltError(
        f"flashgen kernel '{spec.name}' was not built. Rebuild with FLASHGEN_DIRECTIONS including decode, "
        f"FLASHGEN_DTYPES including {spec.dtype} and FLASHGEN_HEAD_DIMS including {head_dim}, or "
        f"FLASHGEN_KERNELS='{spec.name}'.",
        kernel_name=spec.name,
    )


def _families_for(device: Optional[torch.device], direction: str = "fwd") -> list[str]:
    """Kernel families to try, best first. sm90 kernels need exactly compute capability 9.0."""
    backend = forward_backend() if direction == "fwd" else backward_backend()
    if backend not in ("auto", "decode"):
        return [backend]
    if device is not None and device.type == "cuda" and _capability(_device_index(device)) == (9, 0):
        return ["sm90", "sm80"]
    return ["sm80"]


@functools.lru_cache(maxsize=None)
def _built_names() -> frozenset:
    return frozenset(built_kernels())


def select_kernel(
    direction: str,
    dtype: torch.dtype,
    head_dim_qk: int,
    head_dim_v: int,
    causal: bool,
    device: Optional[torch.device] = None,
    softcap: bool = False,
    alibi: bool = False,
    dropout: bool = False,
    paged: bool = False,
) -> KernelSpec:
    """The spec the C library will dispatch to; raises if it cannot exist or was not built."""
    built = _built_names()
    candidates = [
        KernelSpec(family, direction, DTYPE_NAMES[dtype], head_dim_qk, head_dim_v, causal, softcap, alibi, dropout,
                   paged)
        for family in _families_for(device, direction)
    ]
    for spec in candidates:
        if spec.name in built:
            return spec
    buildable = [s for s in candidates if rejection(s) is None]
    if not buildable:
        spec = candidates[-1]
        raise ValueError(
            f"flashgen has no kernel for head_dim_qk={head_dim_qk}, head_dim_v={head_dim_v}, "
            f"dtype={spec.dtype}, features {spec.features}: {rejection(spec)}"
        )
    spec = buildable[0]
    selection = manifest().get("selection", {})
    raise KernelNotBuiltError(
        f"flashgen kernel '{spec.name}' was not built (this build selected head dims "
        f"{selection.get('head_dims')}, dtypes {selection.get('dtypes')}, kernels "
        f"{selection.get('kernels')}, excluding {selection.get('kernels_exclude')}). Rebuild with "
        f"FLASHGEN_HEAD_DIMS including {head_dim_qk if head_dim_v == head_dim_qk else f'{head_dim_qk}x{head_dim_v}'}, "
        f"FLASHGEN_DTYPES including {spec.dtype} and FLASHGEN_VARIANTS including "
        f"{'+'.join(f for f in spec.features if f != 'causal') or 'plain'} (this build: "
        f"{selection.get('variants')}), or FLASHGEN_KERNELS='{spec.name}'; "
        "`python -m flashgen.codegen --list` shows what a selection builds.",
        kernel_name=spec.name,
    )


def arch_is_built(capability: tuple[int, int], archs: tuple[str, ...]) -> bool:
    """Whether machine code for one of `archs` runs on a GPU of this compute capability.

    A plain sm_XY cubin runs on the same major version with minor >= Y; an arch-specific
    sm_XYa cubin runs only on exactly X.Y.
    """
    major, minor = capability
    for arch in archs:
        specific = arch.endswith(("a", "f"))
        digits = int(arch.rstrip("af"))
        a_major, a_minor = divmod(digits, 10)
        if specific and (a_major, a_minor) == (major, minor):
            return True
        if not specific and a_major == major and a_minor <= minor:
            return True
    return False


def check_device_arch(device: torch.device) -> None:
    _check_arch(_device_index(device))


@functools.lru_cache(maxsize=None)
def _check_arch(device_index: int) -> None:
    """Raises once per device (the exception is not cached; a passing device is)."""
    device = torch.device("cuda", device_index)
    capability = _capability(device_index)
    archs = cuda_archs()
    if not arch_is_built(capability, archs):
        sm = f"{capability[0]}{capability[1]}"
        raise UnsupportedDeviceError(
            f"this GPU ({torch.cuda.get_device_name(device)}) is sm_{sm}, but flashgen was built for "
            f"CUDA archs {';'.join(archs)}. Rebuild with FLASHGEN_CUDA_ARCHS including "
            f"{sm + 'a' if sm == '90' else sm}."
        )
