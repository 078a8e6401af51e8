"""FP8 (e4m3) forward attention on Hopper: block-quantized Q, K, V, a bf16 or fp16 output.

    from flashgen import fp8
    q8 = fp8.quantize(q, granularity="block", block=128)
    k8 = fp8.quantize(k, granularity="block", block=128)
    v8 = fp8.quantize(v, granularity="block", block=128, layout="pv")
    out = fp8.flash_attn_fp8_func(q8, k8, v8, causal=True)

or, quantizing inside the call (per-block scales, 128 rows), `fp8.flash_attn_fp8_func(q, k, v)`
with bf16/fp16 tensors.
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from .. import _checks
from .._library import lib
from ..dispatch import select_kernel
from ..errors import UnsupportedDeviceError
from .quantize import Fp8Tensor, quantize

_OUT_DTYPES = {torch.bfloat16: "DTYPE_BF16", torch.float16: "DTYPE_FP16"}
Operand = Union[Fp8Tensor, torch.Tensor]


def _as_fp8(name: str, x: Operand, layout: str, cu_seqlens, max_seqlen) -> Fp8Tensor:
    if isinstance(x, Fp8Tensor):
        if x.layout != layout:
            if name == "v" and x.layout == "rows":
                raise ValueError(
                    "v must be quantized with layout='pv' (keys contiguous, as the FP8 P V wgmma reads "
                    "them): fp8.quantize(v, ..., layout='pv')"
                )
            raise ValueError(f"{name} must be an Fp8Tensor with layout={layout!r}, got {x.layout!r}")
        return x
    if isinstance(x, torch.Tensor) and x.dtype in (torch.float16, torch.bfloat16):
        return quantize(x, granularity="block", block=128, layout=layout, cu_seqlens=cu_seqlens,
                        max_seqlen=max_seqlen)
    raise TypeError(f"{name} must be an fp8.Fp8Tensor (from fp8.quantize) or a float16/bfloat16 tensor, "
                    f"got {type(x).__name__}" + (f" of {x.dtype}" if isinstance(x, torch.Tensor) else ""))


def _set_scale(arg, t: Fp8Tensor) -> None:
    scale, batch_stride, head_stride, block_stride, block_rows = t.scale_arg()
    arg.scale = scale.data_ptr()
    arg.batch_stride, arg.head_stride, arg.block_stride, arg.block_rows = (
        batch_stride, head_stride, block_stride, block_rows)


def flash_attn_fp8_func(
    q: Operand,
    k: Operand,
    v: Operand,
    *,
    causal: bool = False,
    softmax_scale: Optional[float] = None,
    window_size: tuple[int, int] = (-1, -1),
    sinks: Optional[torch.Tensor] = None,
    cu_seqlens_q: Optional[torch.Tensor] = None,
    cu_seqlens_k: Optional[torch.Tensor] = None,
    max_seqlen_q: Optional[int] = None,
    max_seqlen_k: Optional[int] = None,
    seqused_k: Optional[torch.Tensor] = None,
    block_table: Optional[torch.Tensor] = None,
    out_dtype: torch.dtype = torch.bfloat16,
    return_lse: bool = False,
    out: Optional[torch.Tensor] = None,
):
    """softmax(scale * Q K^T) V with e4m3 Q, K, V dequantised by their scales inside the kernel.

    q, k: Fp8Tensor in the rows layout, (batch, seqlen, nheads, d) or varlen (total, nheads, d)
    with cu_seqlens_q / cu_seqlens_k (int32 (batch + 1,)) and max_seqlen_q / max_seqlen_k.
    v: Fp8Tensor in the 'pv' layout. Any granularity (tensor, head, block) per operand; the
    block of k and v must be a multiple of 128 keys. Plain bf16/fp16 tensors are quantized here
    per block of 128 rows. GQA (nheads a multiple of k's), causal (bottom-right aligned),
    sliding window, sinks and seqused_k work as in flash_attn_func. Returns out (like q, head
    dim of v, out_dtype), and the float32 LSE ((batch, nheads, seqlen_q), varlen (nheads,
    total_q)) when return_lse.

    Paged cache (block_table int32 (batch, max_pages), needs an `_e4m3_..._paged` kernel): k and v
    are the cache's pages quantized as a batch of pages, k8 = quantize(k_cache) with k_cache
    (num_pages, page_size, nheads_kv, d), v8 = quantize(v_cache, layout="pv"); page_size a
    multiple of the kernel's key block (128; 64 at head dim 256), block scales within a page;
    seqused_k (int32 (batch,)) gives each sequence's length (default: the table's capacity).
    """
    varlen = cu_seqlens_q is not None or cu_seqlens_k is not None
    if varlen and (cu_seqlens_q is None or cu_seqlens_k is None or max_seqlen_q is None or max_seqlen_k is None):
        raise ValueError("varlen FP8 attention needs cu_seqlens_q, cu_seqlens_k, max_seqlen_q and max_seqlen_k")
    paged = block_table is not None
    if paged and varlen:
        raise ValueError("a paged FP8 cache takes seqused_k, not cu_seqlens")
    q8 = _as_fp8("q", q, "rows", cu_seqlens_q, max_seqlen_q)
    k8 = _as_fp8("k", k, "rows", cu_seqlens_k, max_seqlen_k)
    v8 = _as_fp8("v", v, "pv", cu_seqlens_k, max_seqlen_k)
    if out_dtype not in _OUT_DTYPES:
        raise ValueError(f"out_dtype must be torch.bfloat16 or torch.float16, got {out_dtype}")
    rank = 3 if varlen else 4
    qd, kd, vd = q8.data, k8.data, v8.data
    for name, t in (("q", qd), ("k", kd), ("v", vd)):
        if t.dim() != rank:
            raise ValueError(f"{name} must have rank {rank} ({'varlen' if varlen else 'fixed length'}), got {t.dim()}")
        if t.dtype != torch.float8_e4m3fn:
            raise TypeError(f"{name} data must be torch.float8_e4m3fn, got {t.dtype}")
    device = _checks.check_same_cuda_device(q=qd, k=kd, v=vd, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k)
    if torch.cuda.get_device_capability(device) != (9, 0):
        raise UnsupportedDeviceError(
            f"FP8 attention runs on Hopper (sm90) kernels only; {torch.cuda.get_device_name(device)} is "
            f"sm_{''.join(map(str, torch.cuda.get_device_capability(device)))}")
    nheads, head_dim = qd.shape[-2], qd.shape[-1]
    nheads_kv = kd.shape[-2]
    # PV layout: (batch, heads, head_dim_v, keys) or varlen (heads, head_dim_v, columns).
    nheads_v, head_dim_v = vd.shape[-3], vd.shape[-2]
    if kd.shape[-1] != head_dim:
        raise ValueError(f"q and k head dims differ: {head_dim} vs {kd.shape[-1]}")
    if nheads_v != nheads_kv:
        raise ValueError(f"k has {nheads_kv} heads, v has {nheads_v}: they must match")
    if nheads_kv == 0 or nheads % nheads_kv:
        raise ValueError(f"nheads of q ({nheads}) must be a multiple of nheads of k/v ({nheads_kv})")
    for name, d in (("head_dim", head_dim), ("head_dim_v", head_dim_v)):
        if d % 32 or not 0 < d <= 256:
            raise ValueError(f"FP8 attention needs {name} a multiple of 32 up to 256, got {d}")
    if paged:
        batch, seqlen_q = qd.shape[0], qd.shape[1]
        num_pages, page_size = kd.shape[0], kd.shape[1]
        _checks.check_tensor("block_table", block_table, rank=2)
        if block_table.dtype != torch.int32 or block_table.shape[0] != batch or block_table.stride(-1) != 1:
            raise ValueError(f"block_table must be int32 ({batch}, max_pages) with contiguous rows")
        if vd.shape[0] != num_pages or v8.seqlen != page_size:
            raise ValueError(f"v must hold the same {num_pages} pages of {page_size} keys as k (quantized page by "
                             "page, layout='pv')")
        if page_size % 16:
            raise ValueError(f"a paged FP8 cache needs page_size a multiple of 16, got {page_size}")
        seqlen_k = block_table.shape[1] * page_size
    elif not varlen:
        batch, seqlen_q, seqlen_k = qd.shape[0], qd.shape[1], kd.shape[1]
        if kd.shape[0] != batch or vd.shape[0] != batch:
            raise ValueError(f"q, k and v batch sizes differ: {batch}, {kd.shape[0]}, {vd.shape[0]}")
        if v8.seqlen != seqlen_k:
            raise ValueError(f"v holds {v8.seqlen} keys, k holds {seqlen_k}")
    else:
        batch = cu_seqlens_q.numel() - 1
        seqlen_q, seqlen_k = int(max_seqlen_q), kd.shape[0]
        if v8.seqlen != seqlen_k:
            raise ValueError(f"v holds {v8.seqlen} keys in total, k holds {seqlen_k}")
        _checks.check_int32_vector("cu_seqlens_q", cu_seqlens_q, batch + 1)
        _checks.check_int32_vector("cu_seqlens_k", cu_seqlens_k, batch + 1)
    for name, t in (("q", qd), ("k", kd)):
        _checks.check_layout(name, t)
    if vd.stride(-1) != 1:
        raise ValueError("v (PV layout) must be contiguous along the keys")
    if seqused_k is not None:
        seqused_k = _checks.check_int32_vector("seqused_k", seqused_k, batch)
    if sinks is not None:
        sinks = _checks.check_float_vector("sinks", sinks, [(nheads,)])
    scale = _checks.resolve_softmax_scale(softmax_scale, head_dim)
    window = _checks.check_window(window_size)
    select_kernel("fwd", torch.float8_e4m3fn, head_dim, head_dim_v, bool(causal), device=device, paged=paged)

    out_shape = (*qd.shape[:-1], head_dim_v)
    if out is None:
        out = torch.empty(out_shape, dtype=out_dtype, device=device)
    elif out.shape != out_shape or out.dtype != out_dtype or out.device != device:
        raise ValueError(f"out must be {out_dtype} {tuple(out_shape)} on {device}, got {out.dtype} {tuple(out.shape)}")
    else:
        _checks.check_layout("out", out)
    lse = None
    if return_lse:
        lse_shape = (nheads, qd.shape[0]) if varlen else (batch, nheads, seqlen_q)
        lse = torch.empty(lse_shape, dtype=torch.float32, device=device)

    _C = lib()
    a = _C.FwdArgs()
    a.dtype = _C.DTYPE_E4M3
    a.out_dtype = getattr(_C, _OUT_DTYPES[out_dtype])
    a.q, a.k, a.v, a.out = qd.data_ptr(), kd.data_ptr(), vd.data_ptr(), out.data_ptr()
    a.lse = 0 if lse is None else lse.data_ptr()
    a.batch, a.seqlen_q, a.seqlen_k = batch, seqlen_q, seqlen_k
    a.num_heads_q, a.num_heads_kv, a.head_dim_qk, a.head_dim_v = nheads, nheads_kv, head_dim, head_dim_v
    if varlen:
        a.q_batch_stride, a.q_row_stride, a.q_head_stride = 0, qd.stride(0), qd.stride(1)
        a.k_batch_stride, a.k_row_stride, a.k_head_stride = 0, kd.stride(0), kd.stride(1)
        a.v_batch_stride, a.v_head_stride, a.v_row_stride = 0, vd.stride(0), vd.stride(1)
        a.out_batch_stride, a.out_row_stride, a.out_head_stride = 0, out.stride(0), out.stride(1)
        a.cu_seqlens_q, a.cu_seqlens_k = cu_seqlens_q.data_ptr(), cu_seqlens_k.data_ptr()
        a.total_q = qd.shape[0]
    else:
        a.q_batch_stride, a.q_row_stride, a.q_head_stride = qd.stride(0), qd.stride(1), qd.stride(2)
        a.k_batch_stride, a.k_row_stride, a.k_head_stride = kd.stride(0), kd.stride(1), kd.stride(2)
        a.v_batch_stride, a.v_head_stride, a.v_row_stride = vd.stride(0), vd.stride(1), vd.stride(2)
        a.out_batch_stride, a.out_row_stride, a.out_head_stride = out.stride(0), out.stride(1), out.stride(2)
        a.total_q = batch * seqlen_q
    if seqused_k is not None:
        a.seqused_k = seqused_k.data_ptr()
    if paged:
        a.seqlen_k = 0  # the table's capacity
        a.block_table, a.block_table_batch_stride = block_table.data_ptr(), block_table.stride(0)
        a.max_pages_per_seq, a.page_size, a.num_pages = block_table.shape[1], kd.shape[1], kd.shape[0]
    a.softmax_scale = scale
    a.causal = int(bool(causal))
    a.window_left, a.window_right = window
    a.sinks = 0 if sinks is None else sinks.data_ptr()
    _set_scale(a.q_scale, q8)
    _set_scale(a.k_scale, k8)
    _set_scale(a.v_scale, v8)
    with torch.cuda.device(device):
        nbytes, _ = _C.fwd_workspace(a)
        workspace = torch.empty(max(nbytes, 16), dtype=torch.uint8, device=device)
        a.workspace, a.workspace_bytes = workspace.data_ptr(), workspace.numel()
        _C.fwd(a, torch.cuda.current_stream(device).cuda_stream)
    return (out, lse) if return_lse else out
