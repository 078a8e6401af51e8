"""Fills the C API's argument structs from tensors and runs the forward and backward kernels."""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Optional

import torch

from . import _args_cache
from ._library import lib

_DTYPE_ENUM = {torch.float16: "DTYPE_FP16", torch.bfloat16: "DTYPE_BF16"}


@dataclass
class Varlen:
    cu_seqlens_q: torch.Tensor  # int32 (batch + 1,)
    cu_seqlens_k: torch.Tensor
    max_seqlen_q: int
    max_seqlen_k: int


@dataclass
class KVCache:
    seqused_k: Optional[torch.Tensor] = None  # int32 (batch,)
    seqused_k_add: int = 0
    batch_idx: Optional[torch.Tensor] = None  # int32 (batch,)
    kv_batch_count: int = 0


@dataclass
class Paged:
    block_table: torch.Tensor  # int32 (batch, max_pages)
    page_size: int
    num_pages: int


@dataclass
class Fp8CacheScales:
    """Dequantisation scales of an e4m3 KV cache: float32 tensors of shape (), (1,),
    (nheads_kv,) or (cache entries or pages, nheads_kv); None means 1."""

    k: Optional[torch.Tensor] = None
    v: Optional[torch.Tensor] = None

    @staticmethod
    def fill(arg, t: Optional[torch.Tensor]) -> None:
        """Points a flashgen_fp8_scale_t at t: (entries, heads) strides, 0 along what t lacks."""
        if t is None:
            return
        arg.scale = t.data_ptr()
        if t.dim() == 2:
            arg.batch_stride, arg.head_stride = t.stride(0), t.stride(1)
        elif t.numel() > 1:  # (nheads_kv,)
            arg.batch_stride, arg.head_stride = 0, t.stride(0)
        else:  # () or (1,): one scale
            arg.batch_stride, arg.head_stride = 0, 0


@dataclass
class Options:
    softmax_scale: float
    causal: bool = False
    window: tuple[int, int] = (-1, -1)
    softcap: float = 0.0
    alibi_slopes: Optional[torch.Tensor] = None  # float32 (batch, nheads) or (nheads,)
    sinks: Optional[torch.Tensor] = None  # float32 (nheads,)
    dropout_p: float = 0.0
    philox: tuple[int, int] = (0, 0)
    num_splits: int = 0

    def features(self) -> dict[str, bool]:
        """The kernel-spec flags these options need (compile-time features of the kernels)."""
        return dict(softcap=self.softcap > 0.0, alibi=self.alibi_slopes is not None, dropout=self.dropout_p > 0.0)


def _ptr(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(batch, row, head) element strides of a 4-D or packed 3-D tensor."""
    return (0, t.stride(0), t.stride(1)) if t.dim() == 3 else (t.stride(0), t.stride(1), t.stride(2))


def _fill_forward_args(a, q, k, v, out, lse, opts: Options, varlen: Optional[Varlen] = None,
                       kv: Optional[KVCache] = None, paged: Optional[Paged] = None) -> None:
    """Fills a FwdArgs: the forward call itself, or the description of it that the backward
    pass reads (BwdArgs.fwd)."""
    _C = lib()
    a.dtype = getattr(_C, _DTYPE_ENUM[q.dtype])
    a.q, a.k, a.v, a.out, a.lse = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), _ptr(lse)
    a.num_heads_q, a.head_dim_qk = q.shape[-2], q.shape[-1]
    a.num_heads_kv, a.head_dim_v = v.shape[-2], v.shape[-1]
    a.q_batch_stride, a.q_row_stride, a.q_head_stride = _strides(q)
    a.k_batch_stride, a.k_row_stride, a.k_head_stride = _strides(k)
    a.v_batch_stride, a.v_row_stride, a.v_head_stride = _strides(v)
    a.out_batch_stride, a.out_row_stride, a.out_head_stride = _strides(out)
    if varlen is not None:
        a.cu_seqlens_q, a.cu_seqlens_k = varlen.cu_seqlens_q.data_ptr(), varlen.cu_seqlens_k.data_ptr()
        a.batch = varlen.cu_seqlens_q.numel() - 1
        a.seqlen_q = varlen.max_seqlen_q
        a.total_q = q.shape[0]
        a.seqlen_k = k.shape[0] if paged is None else 0
    else:
        a.batch, a.seqlen_q = q.shape[0], q.shape[1]
        a.seqlen_k = k.shape[1]
        a.total_q = q.shape[0] * q.shape[1]
    if kv is not None:
        a.seqused_k, a.seqused_k_add = _ptr(kv.seqused_k), kv.seqused_k_add
        a.kv_batch_idx, a.kv_batch_count = _ptr(kv.batch_idx), kv.kv_batch_count
    if paged is not None:
        a.block_table = paged.block_table.data_ptr()
        a.block_table_batch_stride = paged.block_table.stride(0)
        a.max_pages_per_seq = paged.block_table.shape[1]
        a.page_size, a.num_pages = paged.page_size, paged.num_pages

    a.softmax_scale = opts.softmax_scale
    a.causal = int(opts.causal)
    a.window_left, a.window_right = opts.window
    a.softcap = opts.softcap
    if opts.alibi_slopes is not None:
        a.alibi_slopes = opts.alibi_slopes.data_ptr()
        a.alibi_batch_stride = opts.alibi_slopes.stride(0) if opts.alibi_slopes.dim() == 2 else 0
    a.sinks = _ptr(opts.sinks)
    a.dropout_p = opts.dropout_p
    a.philox_seed, a.philox_offset = opts.philox
    a.num_splits = opts.num_splits


def device_guard(device: torch.device):
    """torch.cuda.device(device), or nothing when it is already the current device (the usual
    case; switching costs a few microseconds of host time each way)."""
    if device.index is None or torch.cuda.current_device() == device.index:
        return contextlib.nullcontext()
    return torch.cuda.device(device)


@dataclass(frozen=True)
class ForwardEntry:
    """What a cached forward call needs (flashgen._args_cache.FWD): the filled FwdArgs, whose
    data pointers each call replaces, and the output's and LSE's allocation."""

    args: object
    out_shape: tuple
    dtype: torch.dtype
    lse_shape: Optional[tuple]


def run_forward(q, k, v, out, lse, opts: Options, varlen: Optional[Varlen] = None, kv: Optional[KVCache] = None,
                paged: Optional[Paged] = None, fp8_cache: Optional[Fp8CacheScales] = None,
                workspace: Optional[torch.Tensor] = None, cache_key: Optional[tuple] = None) -> None:
    """q/k/v/out in flash-attn layouts: (b, s, h, d), or packed (total, h, d) when varlen,
    or k/v as (num_pages, page_size, h_kv, d) when paged. fp8_cache: k/v are an e4m3 cache
    with these scales. workspace: a caller-owned uint8 CUDA tensor for split-KV partials (then
    nothing is allocated here: CUDA-graph replays reuse it); too small raises. cache_key: keep
    the filled arguments for later calls of this signature (flashgen._args_cache.FWD)."""
    _C = lib()
    a = _C.FwdArgs()
    _fill_forward_args(a, q, k, v, out, lse, opts, varlen, kv, paged)
    if fp8_cache is not None:
        a.kv_cache_e4m3 = 1
        Fp8CacheScales.fill(a.k_scale, fp8_cache.k)
        Fp8CacheScales.fill(a.v_scale, fp8_cache.v)
    if cache_key is not None:
        _args_cache.FWD.store(cache_key, ForwardEntry(copy.copy(a), tuple(out.shape), out.dtype,
                                                      None if lse is None else tuple(lse.shape)))
    _launch_forward(_C, a, q.device, workspace)


def run_forward_cached(entry: ForwardEntry, q, k, v, out: Optional[torch.Tensor], return_lse: bool):
    """flash_attn_func for a call whose signature an earlier call left in
    flashgen._args_cache.FWD: (out, lse or None)."""
    a = copy.copy(entry.args)
    device = q.device
    if out is None:
        out = torch.empty(entry.out_shape, dtype=entry.dtype, device=device)
    lse = torch.empty(entry.lse_shape, dtype=torch.float32, device=device) if return_lse else None
    a.q, a.k, a.v, a.out, a.lse = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), _ptr(lse)
    _launch_forward(lib(), a, device, None)
    return out, lse


def _launch_forward(_C, a, device: torch.device, workspace: Optional[torch.Tensor]) -> None:
    with device_guard(device):
        nbytes, _ = _C.fwd_workspace(a)
        if nbytes:
            if workspace is None:
                workspace = torch.empty(nbytes, dtype=torch.uint8, device=device)
            elif workspace.numel() * workspace.element_size() < nbytes:
                raise ValueError(f"workspace holds {workspace.numel() * workspace.element_size()} bytes; this call "
                                 f"needs {nbytes}")
            a.workspace, a.workspace_bytes = workspace.data_ptr(), nbytes
        _C.fwd(a, torch.cuda.current_stream(device).cuda_stream)


def run_backward(dout, q, k, v, out, lse, dq, dk, dv, dsinks: Optional[torch.Tensor], opts: Options,
                 varlen: Optional[Varlen] = None, deterministic: bool = False,
                 cache_key: Optional[tuple] = None) -> None:
    """dq, dk, dv (and dsinks when opts.sinks is set) of the forward call run_forward(q, k, v,
    out, lse, opts, varlen) made; opts must carry that call's Philox (seed, offset). Gradients
    take the layout of their tensor (any batch/row/head strides, last dim contiguous); dk/dv
    have k/v's num_heads_kv heads. cache_key: keep the filled arguments for later calls of this
    signature (flashgen._args_cache.BWD; the tensors passed are the call's own, not copies)."""
    _C = lib()
    a = _C.BwdArgs()
    _fill_forward_args(a.fwd, q, k, v, out, lse, opts, varlen)
    a.max_seqlen_k = varlen.max_seqlen_k if varlen is not None else k.shape[1]
    a.dout = dout.data_ptr()
    a.dout_batch_stride, a.dout_row_stride, a.dout_head_stride = _strides(dout)
    a.dq = dq.data_ptr()
    a.dq_batch_stride, a.dq_row_stride, a.dq_head_stride = _strides(dq)
    a.dk = dk.data_ptr()
    a.dk_batch_stride, a.dk_row_stride, a.dk_head_stride = _strides(dk)
    a.dv = dv.data_ptr()
    a.dv_batch_stride, a.dv_row_stride, a.dv_head_stride = _strides(dv)
    a.dsinks = _ptr(dsinks)
    a.deterministic = int(deterministic)
    device = q.device
    with device_guard(device):
        nbytes = _C.bwd_workspace(a)
        if cache_key is not None:
            _args_cache.BWD.store(cache_key, (copy.copy(a), nbytes))
        _launch_backward(_C, a, nbytes, device)


def _launch_backward(_C, a, nbytes: int, device: torch.device) -> None:
    # Freed on return, which is safe: the caching allocator hands the block only to work
    # queued after these kernels on this stream.
    workspace = torch.empty(nbytes, dtype=torch.uint8, device=device) if nbytes else None
    if workspace is not None:
        a.workspace, a.workspace_bytes = workspace.data_ptr(), nbytes
    _C.bwd(a, torch.cuda.current_stream(device).cuda_stream)


def run_backward_cached(entry, dout, q, k, v, out, lse, dq, dk, dv, philox: Optional[tuple[int, int]]) -> None:
    """run_backward for a call whose signature an earlier call left in flashgen._args_cache.BWD
    (`entry`): its filled arguments with this call's data pointers and Philox."""
    template, nbytes = entry
    a = copy.copy(template)
    f = a.fwd
    f.q, f.k, f.v, f.out, f.lse = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr()
    if philox is not None:
        f.philox_seed, f.philox_offset = philox
    a.dout, a.dq, a.dk, a.dv = dout.data_ptr(), dq.data_ptr(), dk.data_ptr(), dv.data_ptr()
    with device_guard(q.device):
        _launch_backward(lib(), a, nbytes, q.device)
