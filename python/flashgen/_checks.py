"""Validation of user tensors, before anything reaches the GPU.

Checks run in a fixed order (type, rank, dtype, shapes, head dims, strides, device) so that
the message names the first thing wrong. Device checks come last: the others can be
exercised with CPU tensors.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .dispatch import DTYPE_NAMES

MAX_HEAD_DIM = 256
_ALIGN_BYTES = 16


def check_tensor(name: str, t: object, rank: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != rank:
        raise ValueError(f"{name} must have {rank} dimensions, got shape {tuple(t.shape)}")
    return t


def check_dtypes(**tensors: torch.Tensor) -> torch.dtype:
    names = list(tensors)
    dtype = tensors[names[0]].dtype
    if dtype not in DTYPE_NAMES:
        raise TypeError(f"{names[0]} has dtype {dtype}; flashgen supports torch.float16 and torch.bfloat16")
    for name in names[1:]:
        if tensors[name].dtype != dtype:
            raise TypeError(f"{name} has dtype {tensors[name].dtype}, {names[0]} has {dtype}: they must match")
    return dtype


def check_head_dim(name: str, head_dim: int) -> None:
    if head_dim <= 0 or head_dim > MAX_HEAD_DIM or head_dim % 8 != 0:
        raise ValueError(f"{name} is {head_dim}; flashgen supports multiples of 8 up to {MAX_HEAD_DIM}")


def check_layout(name: str, t: torch.Tensor) -> None:
    """Last dim contiguous; other strides and the base address aligned for 16-byte loads."""
    if t.stride(-1) != 1:
        raise ValueError(f"{name} must be contiguous in its last dimension (stride {t.stride(-1)}); call .contiguous()")
    elems = _ALIGN_BYTES // t.element_size()
    bad = [s for s in t.stride()[:-1] if s % elems != 0]
    if bad:
        raise ValueError(
            f"{name} strides {t.stride()} are not multiples of {elems} elements (16 bytes); call .contiguous()"
        )
    if t.data_ptr() % _ALIGN_BYTES != 0:
        raise ValueError(f"{name} data pointer is not 16-byte aligned; call .contiguous()")


def check_same_cuda_device(**tensors: Optional[torch.Tensor]) -> torch.device:
    present = {n: t for n, t in tensors.items() if t is not None}
    first_name, first = next(iter(present.items()))
    if first.device.type != "cuda":
        raise ValueError(f"{first_name} is on {first.device}; flashgen runs on CUDA tensors")
    for name, t in present.items():
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device}, {first_name} on {first.device}: they must match")
    return first.device


def resolve_softmax_scale(softmax_scale: Optional[float], head_dim: int) -> float:
    if softmax_scale is None:
        return 1.0 / math.sqrt(head_dim)
    scale = float(softmax_scale)
    if not math.isfinite(scale) or scale <= 0.0:
        raise ValueError(f"softmax_scale must be a finite positive number, got {softmax_scale!r}")
    return scale


def check_window(window_size) -> tuple[int, int]:
    try:
        left, right = (int(x) for x in window_size)
    except (TypeError, ValueError):
        raise ValueError(f"window_size must be a pair of ints (left, right), got {window_size!r}") from None
    if left < -1 or right < -1:
        raise ValueError(f"window_size entries must be >= -1 (-1 = unbounded), got {window_size!r}")
    return left, right


def check_softcap(softcap) -> float:
    value = float(softcap)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"softcap must be a finite number >= 0 (0 = off), got {softcap!r}")
    return value


def check_dropout(dropout_p) -> float:
    value = float(dropout_p)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p!r}")
    return value


def check_cache_dtypes(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> bool:
    """Whether the KV cache is FP8 (e4m3, read with fp16/bf16 queries); raises on mixed types."""
    fp8 = [isinstance(t, torch.Tensor) and t.dtype == torch.float8_e4m3fn for t in (k_cache, v_cache)]
    if not any(fp8):
        return False
    if not all(fp8):
        raise TypeError("k_cache and v_cache must both be float8_e4m3fn for an FP8 cache")
    if not isinstance(q, torch.Tensor) or q.dtype not in (torch.float16, torch.bfloat16):
        raise TypeError(f"an FP8 KV cache is read with float16 or bfloat16 queries, got "
                        f"{getattr(q, 'dtype', type(q).__name__)}")
    return True


def check_float_vector(name: str, t, shapes: list[tuple[int, ...]], allow_none: bool = False) -> torch.Tensor:
    """A float32 per-head (or per-batch-and-head) parameter tensor such as alibi slopes or sinks."""
    if t is None and allow_none:
        return None
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.float32:
        raise TypeError(f"{name} must be float32, got {t.dtype}")
    if tuple(t.shape) not in shapes:
        raise ValueError(f"{name} must have shape {' or '.join(str(s) for s in shapes)}, got {tuple(t.shape)}")
    if t.dim() > 0 and t.stride(-1) != 1:
        raise ValueError(f"{name} must be contiguous in its last dimension")
    return t


def check_int32_vector(name: str, t, length: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.int32:
        raise TypeError(f"{name} must be int32, got {t.dtype}")
    if t.dim() != 1 or t.shape[0] != length:
        raise ValueError(f"{name} must have shape ({length},), got {tuple(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    return t


def check_num_splits(num_splits) -> int:
    value = int(num_splits)
    if value < 0 or value > 256:
        raise ValueError(f"num_splits must be in 0..256 (0 = automatic), got {num_splits!r}")
    return value


def raise_if_any(conditions: list[tuple[torch.Tensor, str]]) -> None:
    """Evaluates device-side boolean checks with a single synchronisation."""
    if not conditions:
        return
    flags = torch.stack([c.reshape(()).to(torch.bool) for c, _ in conditions]).cpu().tolist()
    for failed, (_, message) in zip(flags, conditions):
        if failed:
            raise ValueError(message)
