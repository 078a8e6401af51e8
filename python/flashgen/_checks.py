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
