"""flash_attn_with_kvcache: attention over a (paged) KV cache, appending new keys in place."""

from __future__ import annotations

from typing import Optional, Union

import torch

from . import _checks, config
from ._launch import Fp8CacheScales, KVCache, Paged, run_forward
from ._library import lib
from ._prepare import check_qkv_common, finish, options, page_check, prepare_out
from .dispatch import decode_kernel_for, select_kernel


def flash_attn_with_kvcache(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    k: Optional[torch.Tensor] = None,
    v: Optional[torch.Tensor] = None,
    rotary_cos: Optional[torch.Tensor] = None,
    rotary_sin: Optional[torch.Tensor] = None,
    cache_seqlens: Optional[Union[int, torch.Tensor]] = None,
    cache_batch_idx: Optional[torch.Tensor] = None,
    cache_leftpad: Optional[torch.Tensor] = None,
    block_table: Optional[torch.Tensor] = None,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    rotary_interleaved: bool = True,
    alibi_slopes: Optional[torch.Tensor] = None,
    num_splits: int = 0,
    return_softmax_lse: bool = False,
    *,
    sinks: Optional[torch.Tensor] = None,
    out: Optional[torch.Tensor] = None,
    k_descale: Optional[torch.Tensor] = None,
    v_descale: Optional[torch.Tensor] = None,
    workspace: Optional[torch.Tensor] = None,
):
    """Decode/prefill attention over a KV cache, as flash_attn.flash_attn_with_kvcache.

    q: (batch, seqlen_q, nheads, head_dim). k_cache/v_cache: (batch_cache, seqlen_cache,
    nheads_kv, head_dim[_v]), or with block_table (int32 (batch, max_pages)) a paged cache
    (num_pages, page_size, nheads_kv, head_dim[_v]) with ANY page_size >= 1.
    k/v (batch, seqlen_new, nheads_kv, d), if given, are written into the cache in place at
    positions cache_seqlens[b] .. cache_seqlens[b] + seqlen_new - 1, with the rotary embedding
    (rotary_cos/sin: (seqlen_ro, rotary_dim / 2), interleaved or not) applied to them; q is then
    rotated too, at positions cache_seqlens[b] + i when causal or windowed, else cache_seqlens[b].
    Attention covers the first cache_seqlens[b] + seqlen_new keys of each cache entry
    (cache_batch_idx[b] picks the entry of an unpaged cache). cache_seqlens is int32 (batch,)
    or an int; it is not updated. num_splits: 0 = automatic split-KV (flash-decoding).
    Returns out (batch, seqlen_q, nheads, head_dim_v), and the float32 LSE (batch, nheads,
    seqlen_q) when return_softmax_lse.

    FP8 cache: k_cache and v_cache torch.float8_e4m3fn (q, k, v, out stay fp16/bf16), read by the
    decode kernels; the real value is descale * x, with k_descale / v_descale float32 of shape
    () or (1,) (per tensor), (nheads_kv,) (per head), or (num_pages, nheads_kv) for a paged cache /
    (cache entries, nheads_kv) for a dense one (per page or entry and head); None means 1. New
    k/v are quantised into the cache with those scales (saturating at +-448).
    workspace: a caller-owned uint8 CUDA tensor for the split-KV partials, so that the call
    allocates nothing (CUDA graphs); it must hold num_splits * nheads * batch * seqlen_q *
    (head_dim_v + 1) * 4 bytes when the call splits. During CUDA-graph capture the device-side
    input checks are skipped (they synchronise).
    """
    if cache_leftpad is not None:
        raise NotImplementedError("cache_leftpad is not supported by flashgen")
    paged = block_table is not None
    fp8_cache = _checks.check_cache_dtypes(q, k_cache, v_cache)
    if not fp8_cache and (k_descale is not None or v_descale is not None):
        raise ValueError("k_descale / v_descale apply to an FP8 (float8_e4m3fn) cache only")
    dtype, nheads, head_dim, head_dim_v = check_qkv_common(q, k_cache, v_cache, rank=4, cache=True)
    batch, seqlen_q = q.shape[:2]
    if k_cache.shape[:-1] != v_cache.shape[:-1]:
        raise ValueError(f"k_cache {tuple(k_cache.shape)} and v_cache {tuple(v_cache.shape)} must agree except in "
                         "head_dim")
    if (k is None) != (v is None):
        raise ValueError("k and v come together")
    seqlen_new = 0
    if k is not None:
        for name, t in (("k", k), ("v", v)):
            _checks.check_tensor(name, t, rank=4)
            _checks.check_layout(name, t)
        _checks.check_dtypes(q=q, k=k, v=v)
        seqlen_new = k.shape[1]
        if (k.shape[0], k.shape[2], k.shape[3]) != (batch, k_cache.shape[2], head_dim) or \
                tuple(v.shape) != (batch, seqlen_new, v_cache.shape[2], head_dim_v):
            raise ValueError(f"new k {tuple(k.shape)} / v {tuple(v.shape)} do not match q {tuple(q.shape)} and the cache")
    if cache_seqlens is None:
        if k is not None:
            raise ValueError("appending k/v needs cache_seqlens (where to write)")
        cache_seqlens = k_cache.shape[1] if not paged else None
        if cache_seqlens is None:
            raise ValueError("a paged cache needs cache_seqlens")
    if isinstance(cache_seqlens, int):
        cache_seqlens = torch.full((batch,), cache_seqlens, dtype=torch.int32, device=q.device)
    _checks.check_int32_vector("cache_seqlens", cache_seqlens, batch)
    if paged:
        _checks.check_tensor("block_table", block_table, rank=2)
        if block_table.dtype != torch.int32 or block_table.shape[0] != batch or block_table.stride(-1) != 1:
            raise ValueError(f"block_table must be int32 ({batch}, max_pages) with contiguous rows")
        if cache_batch_idx is not None:
            raise ValueError("cache_batch_idx does not apply to a paged cache")
        capacity = block_table.shape[1] * k_cache.shape[1]
    else:
        capacity = k_cache.shape[1]
        if cache_batch_idx is not None:
            _checks.check_int32_vector("cache_batch_idx", cache_batch_idx, batch)
        elif k_cache.shape[0] != batch:
            raise ValueError(f"k_cache holds {k_cache.shape[0]} entries for a batch of {batch}; pass cache_batch_idx")
    opts = options(nheads, batch, head_dim, softmax_scale, causal, window_size, softcap, alibi_slopes, sinks,
                    0.0, num_splits)
    rotary_dim = 0
    if rotary_cos is not None or rotary_sin is not None:
        if rotary_cos is None or rotary_sin is None:
            raise ValueError("rotary_cos and rotary_sin come together")
        for name, t in (("rotary_cos", rotary_cos), ("rotary_sin", rotary_sin)):
            _checks.check_tensor(name, t, rank=2)
            if t.dtype != dtype or not t.is_contiguous():
                raise ValueError(f"{name} must be a contiguous {dtype} tensor")
        if rotary_cos.shape != rotary_sin.shape:
            raise ValueError("rotary_cos and rotary_sin shapes differ")
        rotary_dim = 2 * rotary_cos.shape[1]
        if rotary_dim > head_dim:
            raise ValueError(f"rotary_dim ({rotary_dim}) exceeds head_dim ({head_dim})")
    scales = None
    if fp8_cache:
        hkv = k_cache.shape[2]
        shapes = [(), (1,), (hkv,), (k_cache.shape[0], hkv)]  # per tensor, per head, per (entry | page, head)
        scales = Fp8CacheScales(k=_checks.check_float_vector("k_descale", k_descale, shapes, allow_none=True),
                                v=_checks.check_float_vector("v_descale", v_descale, shapes, allow_none=True))
    packed_rows = seqlen_q * (nheads // k_cache.shape[2])
    if decode_kernel_for(dtype, k_cache.dtype, head_dim, head_dim_v, packed_rows) is None:
        select_kernel("fwd", dtype, head_dim, head_dim_v, opts.causal, q.device if q.is_cuda else None, paged=paged,
                      **opts.features())
    device = finish(opts, dict(q=q, k_cache=k_cache, v_cache=v_cache, k=k, v=v, cache_seqlens=cache_seqlens,
                                          cache_batch_idx=cache_batch_idx, block_table=block_table,
                                          rotary_cos=rotary_cos, rotary_sin=rotary_sin,
                                          alibi_slopes=opts.alibi_slopes, sinks=opts.sinks,
                                          k_descale=k_descale, v_descale=v_descale, workspace=workspace))
    if workspace is not None and (workspace.dtype != torch.uint8 or not workspace.is_contiguous()):
        raise ValueError("workspace must be a contiguous torch.uint8 tensor")
    if config.check_device_inputs and batch > 0 and not torch.cuda.is_current_stream_capturing():
        used = cache_seqlens + seqlen_new
        checks = [((cache_seqlens < 0).any() | (used > capacity).any(),
                   f"cache_seqlens + seqlen_new must be in 0..{capacity} (the cache capacity)")]
        if paged:
            checks.append(page_check(block_table, used, k_cache.shape[1], k_cache.shape[0]))
        if cache_batch_idx is not None:
            checks.append(((cache_batch_idx < 0).any() | (cache_batch_idx >= k_cache.shape[0]).any(),
                           f"cache_batch_idx must be in 0..{k_cache.shape[0] - 1}"))
        if rotary_dim and (k is not None):
            checks.append(((used > rotary_cos.shape[0]).any(),
                           f"positions reach past the {rotary_cos.shape[0]} rows of rotary_cos/sin"))
        _checks.raise_if_any(checks)

    q_attn = q
    if k is not None:
        q_attn = _append(q, k, v, k_cache, v_cache, cache_seqlens, cache_batch_idx, block_table, capacity,
                         rotary_cos, rotary_sin, rotary_dim, rotary_interleaved,
                         rotate_q=rotary_dim > 0 and k is not None,
                         q_per_row=opts.causal or opts.window != (-1, -1), scales=scales)
    out = prepare_out(out, (batch, seqlen_q, nheads, head_dim_v), dtype, device)
    lse = torch.empty((batch, nheads, seqlen_q), dtype=torch.float32, device=device) if return_softmax_lse else None
    if out.numel() > 0:
        kv = KVCache(seqused_k=cache_seqlens, seqused_k_add=seqlen_new, batch_idx=cache_batch_idx,
                     kv_batch_count=k_cache.shape[0])
        paged_info = Paged(block_table, k_cache.shape[1], k_cache.shape[0]) if paged else None
        run_forward(q_attn, k_cache, v_cache, out, lse, opts, kv=kv, paged=paged_info, fp8_cache=scales,
                    workspace=workspace)
    return (out, lse) if return_softmax_lse else out


def _append(q, k, v, k_cache, v_cache, cache_seqlens, cache_batch_idx, block_table, capacity, rotary_cos,
            rotary_sin, rotary_dim, interleaved, rotate_q, q_per_row, scales: Optional[Fp8CacheScales] = None):
    """Writes k/v into the cache (rotating k; quantising into an FP8 cache) and returns q,
    rotated when rotary applies."""
    _C = lib()
    a = _C.KvAppendArgs()
    if scales is not None:
        a.cache_e4m3 = 1
        Fp8CacheScales.fill(a.k_scale, scales.k)
        Fp8CacheScales.fill(a.v_scale, scales.v)
    a.dtype = _C.DTYPE_FP16 if q.dtype == torch.float16 else _C.DTYPE_BF16
    a.batch, a.num_heads_kv = q.shape[0], k_cache.shape[2]
    a.head_dim_qk, a.head_dim_v = k_cache.shape[3], v_cache.shape[3]
    if k is not None:
        a.seqlen_new = k.shape[1]
        a.k_new, a.v_new = k.data_ptr(), v.data_ptr()
        a.k_new_batch_stride, a.k_new_row_stride, a.k_new_head_stride = k.stride()[:3]
        a.v_new_batch_stride, a.v_new_row_stride, a.v_new_head_stride = v.stride()[:3]
    a.k_cache, a.v_cache = k_cache.data_ptr(), v_cache.data_ptr()
    a.k_cache_batch_stride, a.k_cache_row_stride, a.k_cache_head_stride = k_cache.stride()[:3]
    a.v_cache_batch_stride, a.v_cache_row_stride, a.v_cache_head_stride = v_cache.stride()[:3]
    a.cache_seqlens = cache_seqlens.data_ptr()
    a.capacity = capacity
    a.kv_batch_count = k_cache.shape[0]
    if cache_batch_idx is not None:
        a.kv_batch_idx = cache_batch_idx.data_ptr()
    if block_table is not None:
        a.block_table = block_table.data_ptr()
        a.block_table_batch_stride = block_table.stride(0)
        a.page_size, a.num_pages = k_cache.shape[1], k_cache.shape[0]
    q_out = q
    if rotary_dim:
        a.rotary_cos, a.rotary_sin = rotary_cos.data_ptr(), rotary_sin.data_ptr()
        a.rotary_dim, a.rotary_seqlen = rotary_dim, rotary_cos.shape[0]
        a.rotary_interleaved = int(interleaved)
        if rotate_q:
            q_out = torch.empty_like(q, memory_format=torch.contiguous_format)
            a.q, a.q_out = q.data_ptr(), q_out.data_ptr()
            a.seqlen_q, a.num_heads_q = q.shape[1], q.shape[2]
            a.q_batch_stride, a.q_row_stride, a.q_head_stride = q.stride()[:3]
            a.q_out_batch_stride, a.q_out_row_stride, a.q_out_head_stride = q_out.stride()[:3]
            a.q_positions_per_row = int(q_per_row)
    with torch.cuda.device(q.device):
        _C.kv_append(a, torch.cuda.current_stream(q.device).cuda_stream)
    return q_out
