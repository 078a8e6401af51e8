"""flash-attn compatible attention entry points: fixed length and variable length."""

from __future__ import annotations

from typing import Optional

import torch

from . import _args_cache, ops
from ._launch import run_forward, run_forward_cached
from ._prepare import prepare_fixed, prepare_out, prepare_varlen
from .dropout import dropout_mask


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

    Differentiable in q, k, v and sinks (see flashgen.ops): when one of them requires grad, or
    under torch.compile, the call runs as the flashgen::attn_fwd custom op. deterministic=True
    (or torch.use_deterministic_algorithms) makes the backward pass bitwise reproducible; the
    forward pass always is. The LSE output is not differentiable.
    """
    if ops.use_ops(q, k, v, sinks):
        return ops.attention(q, k, v, None, None, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                             sinks, num_splits, deterministic, return_lse, return_attn_probs, out)
    key = None
    if alibi_slopes is None and sinks is None and dropout_p == 0 and not return_attn_probs:
        # A repeat of an earlier call's signature reuses its validated launch arguments.
        key = _forward_key(q, k, v, out, softmax_scale, causal, window_size, softcap, num_splits, return_lse)
        entry = _args_cache.FWD.lookup(key)
        if entry is not None:
            out, lse = run_forward_cached(entry, q, k, v, out, return_lse)
            return (out, lse) if return_lse else out
    p = prepare_fixed(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, sinks, num_splits)
    batch, seqlen_q = q.shape[:2]
    seqlen_k = k.shape[1]
    out = prepare_out(out, (batch, seqlen_q, p.nheads, p.head_dim_v), p.dtype, p.device)
    want_lse = return_lse or return_attn_probs
    lse = torch.empty((batch, p.nheads, seqlen_q), dtype=torch.float32, device=p.device) if want_lse else None
    if out.numel() > 0:
        run_forward(q, k, v, out, lse, p.opts, cache_key=key)
    if return_attn_probs:
        mask = None
        if p.opts.dropout_p > 0.0:
            mask = dropout_mask(*p.opts.philox, p.opts.dropout_p, batch, p.nheads, seqlen_q, seqlen_k, p.device)
        return out, lse, mask
    return (out, lse) if return_lse else out


def _forward_key(q, k, v, out, softmax_scale, causal, window_size, softcap, num_splits, return_lse):
    """flashgen._args_cache.FWD's key of a flash_attn_func call, or None (arguments of types the
    key cannot stand for: those calls are validated in full every time)."""
    plain = (int, float, bool)
    try:
        window = tuple(window_size)
    except TypeError:
        return None
    if not (all(type(x) in plain for x in (causal, softcap, num_splits, return_lse, *window))
            and (softmax_scale is None or type(softmax_scale) in plain)):
        return None
    return _args_cache.FWD.signature((q, k, v, out), (softmax_scale, causal, window, softcap, num_splits, return_lse))


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
    if return_attn_probs:
        raise NotImplementedError("return_attn_probs is only available in flash_attn_func")
    if ops.use_ops(q, k, v, sinks):
        return ops.attention(q, k, v, (cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k), block_table,
                             dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, sinks, num_splits,
                             deterministic, return_lse, False, out)
    p = prepare_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale, causal,
                       window_size, softcap, alibi_slopes, sinks, num_splits, block_table)
    out = prepare_out(out, (q.shape[0], p.nheads, p.head_dim_v), p.dtype, p.device)
    lse = torch.empty((p.nheads, q.shape[0]), dtype=torch.float32, device=p.device) if return_lse else None
    if out.numel() > 0 and cu_seqlens_q.numel() > 1:
        run_forward(q, k, v, out, lse, p.opts, varlen=p.varlen, paged=p.paged)
    elif lse is not None:
        lse.fill_(float("inf"))
    return (out, lse) if return_lse else out
