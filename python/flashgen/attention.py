"""flash-attn compatible attention entry points: fixed length and variable length."""

from __future__ import annotations

from typing import Optional

import torch

from . import _checks, config
from ._launch import Options, Paged, Varlen, run_forward
from .dispatch import check_device_arch, select_kernel
from .dropout import dropout_mask, philox_seed_offset


def _options(nheads, batch, head_dim, softmax_scale, causal, window_size, softcap, alibi_slopes, sinks,
             dropout_p, num_splits) -> Options:
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


def _check_qkv_common(q, k, v, rank, kv_rank=None):
    for name, t, r in (("q", q, rank), ("k", k, kv_rank or rank), ("v", v, kv_rank or rank)):
        _checks.check_tensor(name, t, rank=r)
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
    for name, t in (("q", q), ("k", k), ("v", v)):
        _checks.check_layout(name, t)
    return dtype, nheads, head_dim, head_dim_v


def _prepare_out(out, shape, dtype, device):
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    _checks.check_tensor("out", out, rank=len(shape))
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype or out.device != device:
        raise ValueError(f"out must be a {dtype} tensor of shape {tuple(shape)} on {device}, got "
                         f"{out.dtype} {tuple(out.shape)} on {out.device}")
    _checks.check_layout("out", out)
    return out


def _finish(opts, tensors_on_device):
    device = _checks.check_same_cuda_device(**tensors_on_device)
    check_device_arch(device)
    if opts.dropout_p > 0.0:
        opts.philox = philox_seed_offset(device)
    return device


def flash_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Optional[torch.Tensor] = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    *,
    sinks: Optional[torch.Tensor] = None,
    return_lse: bool = False,
    out: Optional[torch.Tensor] = None,
    num_splits: int = 0,
):
    """Exact attention softmax(q k^T * softmax_scale) v, as flash_attn.flash_attn_func.

    q: (batch, seqlen_q, nheads, head_dim); k: (batch, seqlen_k, nheads_kv, head_dim);
    v: (batch, seqlen_k, nheads_kv, head_dim_v); nheads a multiple of nheads_kv (MQA/GQA).
    causal: bottom-right aligned (query i sees keys j <= i + seqlen_k - seqlen_q).
    window_size=(left, right): query i sees keys in [i + d - left, i + d + right], d = seqlen_k -
    seqlen_q, -1 = unbounded. softcap > 0: logits = softcap * tanh(logits / softcap).
    alibi_slopes: float32 (nheads,) or (batch, nheads): logits -= slope * |i + d - j|.
    sinks: float32 (nheads,) logits added to each row's softmax denominator (gpt-oss).
    dropout_p: dropout on the attention probabilities, seeded from torch's CUDA generator.
    num_splits: split the keys across CTAs and combine (flash-decoding); 0 = automatic.
    Returns out (batch, seqlen_q, nheads, head_dim_v); with return_lse=True also the natural-log
    LSE float32 (batch, nheads, seqlen_q) (+inf for a row that sees no key, whose out is 0);
    with return_attn_probs=True, (out, lse, dropout keep-mask or None) as a debugging aid.
    `deterministic` is accepted for flash-attn compatibility: the forward pass always is.
    """
    del deterministic
    dtype, nheads, head_dim, head_dim_v = _check_qkv_common(q, k, v, rank=4)
    batch, seqlen_q = q.shape[:2]
    seqlen_k = k.shape[1]
    if k.shape[:2] != v.shape[:2] or k.shape[0] != batch:
        raise ValueError(f"shapes disagree: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; k and v must "
                         "share (batch, seqlen_k) and q's batch")
    opts = _options(nheads, batch, head_dim, softmax_scale, causal, window_size, softcap, alibi_slopes, sinks,
                    dropout_p, num_splits)
    select_kernel("fwd", dtype, head_dim, head_dim_v, opts.causal, q.device if q.is_cuda else None,
                  **opts.features())
    device = _finish(opts, dict(q=q, k=k, v=v, alibi_slopes=opts.alibi_slopes, sinks=opts.sinks))
    out = _prepare_out(out, (batch, seqlen_q, nheads, head_dim_v), dtype, device)
    want_lse = return_lse or return_attn_probs
    lse = torch.empty((batch, nheads, seqlen_q), dtype=torch.float32, device=device) if want_lse else None
    if out.numel() > 0:
        run_forward(q, k, v, out, lse, opts)
    if return_attn_probs:
        mask = None
        if opts.dropout_p > 0.0:
            mask = dropout_mask(*opts.philox, opts.dropout_p, batch, nheads, seqlen_q, seqlen_k, device)
        return out, lse, mask
    return (out, lse) if return_lse else out


def flash_attn_varlen_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Optional[torch.Tensor] = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    block_table: Optional[torch.Tensor] = None,
    *,
    sinks: Optional[torch.Tensor] = None,
    return_lse: bool = False,
    out: Optional[torch.Tensor] = None,
    num_splits: int = 0,
):
    """Attention over packed variable-length sequences, as flash_attn.flash_attn_varlen_func.

    q: (total_q, nheads, head_dim), k/v: (total_k, nheads_kv, head_dim[_v]) with sequence b at
    rows cu_seqlens_q[b]:cu_seqlens_q[b+1] (int32, batch + 1 entries). With block_table
    (int32 (batch, max_pages)), k/v are a paged cache (num_pages, page_size, nheads_kv, d) and
    cu_seqlens_k gives each sequence's key count. Options as flash_attn_func. The LSE is
    float32 (nheads, total_q).
    """
    del deterministic
    if return_attn_probs:
        raise NotImplementedError("return_attn_probs is only available in flash_attn_func")
    paged = block_table is not None
    dtype, nheads, head_dim, head_dim_v = _check_qkv_common(q, k, v, rank=3, kv_rank=4 if paged else 3)
    if not isinstance(cu_seqlens_q, torch.Tensor) or cu_seqlens_q.dim() != 1 or cu_seqlens_q.numel() < 2:
        raise ValueError("cu_seqlens_q must be a 1-D int32 tensor of batch + 1 offsets")
    batch = cu_seqlens_q.numel() - 1
    _checks.check_int32_vector("cu_seqlens_q", cu_seqlens_q, batch + 1)
    _checks.check_int32_vector("cu_seqlens_k", cu_seqlens_k, batch + 1)
    max_seqlen_q, max_seqlen_k = int(max_seqlen_q), int(max_seqlen_k)
    if max_seqlen_q < 0 or max_seqlen_k < 0:
        raise ValueError("max_seqlen_q and max_seqlen_k must be >= 0")
    if k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must agree except in head_dim")
    opts = _options(nheads, batch, head_dim, softmax_scale, causal, window_size, softcap, alibi_slopes, sinks,
                    dropout_p, num_splits)
    paged_info = None
    if paged:
        _checks.check_tensor("block_table", block_table, rank=2)
        if block_table.dtype != torch.int32 or block_table.shape[0] != batch or block_table.stride(-1) != 1:
            raise ValueError(f"block_table must be int32 ({batch}, max_pages) with contiguous rows")
        paged_info = Paged(block_table, page_size=k.shape[1], num_pages=k.shape[0])
    select_kernel("fwd", dtype, head_dim, head_dim_v, opts.causal, q.device if q.is_cuda else None,
                  paged=paged, **opts.features())
    device = _finish(opts, dict(q=q, k=k, v=v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
                                          block_table=block_table, alibi_slopes=opts.alibi_slopes, sinks=opts.sinks))
    if config.check_device_inputs and batch > 0:
        checks = _cu_seqlens_checks("cu_seqlens_q", cu_seqlens_q, q.shape[0], max_seqlen_q)
        if paged:
            capacity = block_table.shape[1] * k.shape[1]
            lengths = cu_seqlens_k[1:] - cu_seqlens_k[:-1]
            checks += [((lengths < 0).any() | (lengths > capacity).any(),
                        f"cu_seqlens_k gives a sequence longer than its block_table holds ({capacity} keys) or "
                        "negative"),
                       _page_check(block_table, lengths, k.shape[1], k.shape[0])]
        else:
            checks += _cu_seqlens_checks("cu_seqlens_k", cu_seqlens_k, k.shape[0], max_seqlen_k)
        _checks.raise_if_any(checks)
    out = _prepare_out(out, (q.shape[0], nheads, head_dim_v), dtype, device)
    lse = torch.empty((nheads, q.shape[0]), dtype=torch.float32, device=device) if return_lse else None
    if out.numel() > 0 and batch > 0:
        run_forward(q, k, v, out, lse, opts, varlen=Varlen(cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k),
                    paged=paged_info)
    elif lse is not None:
        lse.fill_(float("inf"))
    return (out, lse) if return_lse else out


def _cu_seqlens_checks(name, cu, total, max_seqlen):
    lengths = cu[1:] - cu[:-1]
    return [
        (cu[0] != 0, f"{name}[0] must be 0"),
        ((lengths < 0).any(), f"{name} must be non-decreasing"),
        (cu[-1] > total, f"{name}[-1] exceeds the {total} packed rows"),
        ((lengths > max_seqlen).any(), f"a sequence in {name} is longer than max_seqlen ({max_seqlen})"),
    ]


def _page_check(block_table, used_keys, page_size, num_pages):
    """Pages that hold used keys must index an existing page."""
    used_pages = (used_keys.clamp(min=0) + page_size - 1) // page_size  # (batch,)
    slots = torch.arange(block_table.shape[1], device=block_table.device).view(1, -1)
    in_use = slots < used_pages.view(-1, 1)
    bad = in_use & ((block_table < 0) | (block_table >= num_pages))
    return bad.any(), f"block_table has a page index outside 0..{num_pages - 1} among the pages in use"
