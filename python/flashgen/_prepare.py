"""From user arguments to launch Options: the checks shared by the direct forward path and the
autograd ops, all raised before any GPU work.

The shape-level checks (`check_fixed_shapes`, `check_varlen_shapes`) read only shapes and
dtypes, so they also run while torch.compile traces a call (on fake tensors); everything that
reads data pointers, devices or the library runs inside the ops, outside of tracing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from . import _checks, config
from ._launch import Options, Paged, Varlen
from .dispatch import check_device_arch, select_kernel
from .dropout import philox_seed_offset


@dataclass
class Prepared:
    """A validated call: its launch options and what the output allocation needs."""

    opts: Options
    device: torch.device
    dtype: torch.dtype
    nheads: int
    head_dim_v: int
    varlen: Optional[Varlen] = None
    paged: Optional[Paged] = None


def options(nheads, batch, head_dim, softmax_scale, causal, window_size, softcap, alibi_slopes, sinks, dropout_p,
            num_splits) -> Options:
    opts = Options(
        softmax_scale=_checks.resolve_softmax_scale(softmax_scale, head_dim),
        causal=bool(causal),
        window=_checks.check_window(window_size),
        softcap=_checks.check_softcap(softcap),
        dropout_p=_checks.check_dropout(dropout_p),
        num_splits=_checks.check_num_splits(num_splits),
    )
    if alibi_slopes is not None:
        opts.alibi_slopes = _checks.check_float_vector("alibi_slopes", alibi_slopes, [(nheads,), (batch, nheads)])
    if sinks is not None:
        opts.sinks = _checks.check_float_vector("sinks", sinks, [(nheads,)])
    return opts


def check_qkv_shapes(q, k, v, rank, kv_rank=None, cache=False):
    """Types, ranks, dtypes, heads and head dims: (dtype, nheads, head_dim, head_dim_v).
    cache: k and v are a KV cache, which may be FP8 (e4m3) under fp16/bf16 queries."""
    for name, t, r in (("q", q, rank), ("k", k, kv_rank or rank), ("v", v, kv_rank or rank)):
        _checks.check_tensor(name, t, rank=r)
    if cache and _checks.check_cache_dtypes(q, k, v):
        dtype = q.dtype
    else:
        dtype = _checks.check_dtypes(q=q, k=k, v=v)
    nheads, head_dim = q.shape[-2], q.shape[-1]
    nheads_kv, head_dim_v = v.shape[-2], v.shape[-1]
    if k.shape[-1] != head_dim:
        raise ValueError(f"q and k head dims differ: {head_dim} vs {k.shape[-1]}")
    if k.shape[-2] != nheads_kv:
        raise ValueError(f"k has {k.shape[-2]} heads, v has {nheads_kv}: they must match")
    if nheads_kv == 0 or nheads % nheads_kv != 0:
        raise ValueError(f"nheads of q ({nheads}) must be a multiple of nheads of k/v ({nheads_kv})")
    _checks.check_head_dim("head_dim", head_dim)
    _checks.check_head_dim("head_dim_v", head_dim_v)
    return dtype, nheads, head_dim, head_dim_v


def check_qkv_common(q, k, v, rank, kv_rank=None, cache=False):
    """check_qkv_shapes plus the strides and alignment the kernels load with."""
    result = check_qkv_shapes(q, k, v, rank, kv_rank, cache)
    for name, t in (("q", q), ("k", k), ("v", v)):
        _checks.check_layout(name, t)
    return result


def check_fixed_shapes(q, k, v):
    """flash_attn_func's shape rules: (dtype, nheads, head_dim, head_dim_v)."""
    dims = check_qkv_shapes(q, k, v, rank=4)
    if k.shape[:2] != v.shape[:2] or k.shape[0] != q.shape[0]:
        raise ValueError(f"shapes disagree: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; k and v must "
                         "share (batch, seqlen_k) and q's batch")
    return dims


def check_varlen_shapes(q, k, v, cu_seqlens_q, paged: bool):
    """flash_attn_varlen_func's shape rules: (dtype, nheads, head_dim, head_dim_v, batch)."""
    dims = check_qkv_shapes(q, k, v, rank=3, kv_rank=4 if paged else 3)
    if not isinstance(cu_seqlens_q, torch.Tensor) or cu_seqlens_q.dim() != 1 or cu_seqlens_q.numel() < 2:
        raise ValueError("cu_seqlens_q must be a 1-D int32 tensor of batch + 1 offsets")
    if k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must agree except in head_dim")
    return (*dims, cu_seqlens_q.numel() - 1)


def prepare_out(out, shape, dtype, device):
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    _checks.check_tensor("out", out, rank=len(shape))
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype or out.device != device:
        raise ValueError(f"out must be a {dtype} tensor of shape {tuple(shape)} on {device}, got "
                         f"{out.dtype} {tuple(out.shape)} on {out.device}")
    _checks.check_layout("out", out)
    return out


def finish(opts: Options, tensors_on_device, philox: Optional[tuple[int, int]] = None) -> torch.device:
    """Device checks, then the dropout randomness: `philox` replays a forward call's (seed,
    offset) (the backward pass), None draws a fresh one from torch's generator."""
    device = _checks.check_same_cuda_device(**tensors_on_device)
    check_device_arch(device)
    if opts.dropout_p > 0.0:
        opts.philox = philox if philox is not None else philox_seed_offset(device)
    return device


def _select(directions, dtype, head_dim, head_dim_v, opts: Options, q, paged=False) -> None:
    for direction in directions:
        select_kernel(direction, dtype, head_dim, head_dim_v, opts.causal, q.device if q.is_cuda else None,
                      paged=paged, **opts.features())


def prepare_fixed(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, sinks, num_splits,
                  directions=("fwd",), philox=None) -> Prepared:
    """Validates a flash_attn_func call for the kernels of `directions` ("fwd", "bwd"): a call
    that will need gradients learns that the backward kernel is missing before its forward runs."""
    dtype, nheads, head_dim, head_dim_v = check_fixed_shapes(q, k, v)
    for name, t in (("q", q), ("k", k), ("v", v)):
        _checks.check_layout(name, t)
    opts = options(nheads, q.shape[0], head_dim, softmax_scale, causal, window_size, softcap, alibi_slopes, sinks,
                   dropout_p, num_splits)
    _select(directions, dtype, head_dim, head_dim_v, opts, q)
    device = finish(opts, dict(q=q, k=k, v=v, alibi_slopes=opts.alibi_slopes, sinks=opts.sinks), philox)
    return Prepared(opts, device, dtype, nheads, head_dim_v)


def prepare_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale, causal,
                   window_size, softcap, alibi_slopes, sinks, num_splits, block_table=None, directions=("fwd",),
                   philox=None, check_metadata=True) -> Prepared:
    """Validates a flash_attn_varlen_func call; check_metadata reads cu_seqlens and the block
    table back from the GPU (config.check_device_inputs permitting)."""
    paged = block_table is not None
    dtype, nheads, head_dim, head_dim_v, batch = check_varlen_shapes(q, k, v, cu_seqlens_q, paged)
    for name, t in (("q", q), ("k", k), ("v", v)):
        _checks.check_layout(name, t)
    _checks.check_int32_vector("cu_seqlens_q", cu_seqlens_q, batch + 1)
    _checks.check_int32_vector("cu_seqlens_k", cu_seqlens_k, batch + 1)
    max_seqlen_q, max_seqlen_k = int(max_seqlen_q), int(max_seqlen_k)
    if max_seqlen_q < 0 or max_seqlen_k < 0:
        raise ValueError("max_seqlen_q and max_seqlen_k must be >= 0")
    opts = options(nheads, batch, head_dim, softmax_scale, causal, window_size, softcap, alibi_slopes, sinks,
                   dropout_p, num_splits)
    paged_info = None
    if paged:
        _checks.check_tensor("block_table", block_table, rank=2)
        if block_table.dtype != torch.int32 or block_table.shape[0] != batch or block_table.stride(-1) != 1:
            raise ValueError(f"block_table must be int32 ({batch}, max_pages) with contiguous rows")
        paged_info = Paged(block_table, page_size=k.shape[1], num_pages=k.shape[0])
    _select(directions, dtype, head_dim, head_dim_v, opts, q, paged=paged)
    device = finish(opts, dict(q=q, k=k, v=v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
                               block_table=block_table, alibi_slopes=opts.alibi_slopes, sinks=opts.sinks), philox)
    if check_metadata and config.check_device_inputs and batch > 0:
        checks = cu_seqlens_checks("cu_seqlens_q", cu_seqlens_q, q.shape[0], max_seqlen_q)
        if paged:
            capacity = block_table.shape[1] * k.shape[1]
            lengths = cu_seqlens_k[1:] - cu_seqlens_k[:-1]
            checks += [((lengths < 0).any() | (lengths > capacity).any(),
                        f"cu_seqlens_k gives a sequence longer than its block_table holds ({capacity} keys) or "
                        "negative"),
                       page_check(block_table, lengths, k.shape[1], k.shape[0])]
        else:
            checks += cu_seqlens_checks("cu_seqlens_k", cu_seqlens_k, k.shape[0], max_seqlen_k)
        _checks.raise_if_any(checks)
    varlen = Varlen(cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    return Prepared(opts, device, dtype, nheads, head_dim_v, varlen=varlen, paged=paged_info)


def cu_seqlens_checks(name, cu, total, max_seqlen):
    lengths = cu[1:] - cu[:-1]
    return [
        (cu[0] != 0, f"{name}[0] must be 0"),
        ((lengths < 0).any(), f"{name} must be non-decreasing"),
        (cu[-1] > total, f"{name}[-1] exceeds the {total} packed rows"),
        ((lengths > max_seqlen).any(), f"a sequence in {name} is longer than max_seqlen ({max_seqlen})"),
    ]


def page_check(block_table, used_keys, page_size, num_pages):
    """Pages that hold used keys must index an existing page."""
    used_pages = (used_keys.clamp(min=0) + page_size - 1) // page_size  # (batch,)
    slots = torch.arange(block_table.shape[1], device=block_table.device).view(1, -1)
    in_use = slots < used_pages.view(-1, 1)
    bad = in_use & ((block_table < 0) | (block_table >= num_pages))
    return bad.any(), f"block_table has a page index outside 0..{num_pages - 1} among the pages in use"


def loadable(t: torch.Tensor) -> bool:
    """Whether the kernels can read t in place (what _checks.check_layout demands)."""
    elems = 16 // t.element_size()
    return t.stride(-1) == 1 and all(s % elems == 0 for s in t.stride()[:-1]) and t.data_ptr() % 16 == 0
