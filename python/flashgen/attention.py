"""flash-attn compatible attention entry points."""

from __future__ import annotations

from typing import Optional, Union

import torch

from . import _checks
from ._library import lib
from .dispatch import check_device_arch, select_kernel

_DTYPE_ENUM = {torch.float16: "DTYPE_FP16", torch.bfloat16: "DTYPE_BF16"}


def flash_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    *,
    return_lse: bool = False,
    out: Optional[torch.Tensor] = None,
) -> Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Exact attention softmax(q k^T * softmax_scale) v, as flash_attn.flash_attn_func.

    q: (batch, seqlen_q, nheads, head_dim); k: (batch, seqlen_k, nheads_kv, head_dim);
    v: (batch, seqlen_k, nheads_kv, head_dim_v). nheads must be a multiple of nheads_kv
    (MQA/GQA). causal masks aligned to the bottom-right corner (query i sees keys
    j <= i + seqlen_k - seqlen_q); a query row that sees no key gets zeros and lse = +inf.
    Returns out (batch, seqlen_q, nheads, head_dim_v), and with return_lse=True also the
    natural-log log-sum-exp of the scaled scores, float32 (batch, nheads, seqlen_q).
    `out`, if given, is written in place (same shape and dtype, on q's device).
    """
    if dropout_p != 0.0:
        raise NotImplementedError("dropout is not implemented in flashgen yet; pass dropout_p=0.0")
    for name, t in (("q", q), ("k", k), ("v", v)):
        _checks.check_tensor(name, t, rank=4)
    dtype = _checks.check_dtypes(q=q, k=k, v=v)
    batch, seqlen_q, nheads, head_dim = q.shape
    _, seqlen_k, nheads_kv, head_dim_v = v.shape
    if k.shape[:3] != v.shape[:3] or k.shape[0] != batch:
        raise ValueError(
            f"shapes disagree: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; k and v must share "
            "(batch, seqlen_k, nheads_kv) and q's batch"
        )
    if k.shape[3] != head_dim:
        raise ValueError(f"q and k head dims differ: {head_dim} vs {k.shape[3]}")
    if nheads_kv == 0 or nheads % nheads_kv != 0:
        raise ValueError(f"nheads of q ({nheads}) must be a multiple of nheads of k/v ({nheads_kv})")
    _checks.check_head_dim("head_dim", head_dim)
    _checks.check_head_dim("head_dim_v", head_dim_v)
    for name, t in (("q", q), ("k", k), ("v", v)):
        _checks.check_layout(name, t)
    scale = _checks.resolve_softmax_scale(softmax_scale, head_dim)
    device = q.device if q.device.type == "cuda" else None
    select_kernel("fwd", dtype, head_dim, head_dim_v, bool(causal), device)
    device = _checks.check_same_cuda_device(q=q, k=k, v=v)
    check_device_arch(device)

    out_shape = (batch, seqlen_q, nheads, head_dim_v)
    if out is None:
        out = torch.empty(out_shape, dtype=dtype, device=device)
    else:
        _checks.check_tensor("out", out, rank=4)
        if tuple(out.shape) != out_shape or out.dtype != dtype or out.device != device:
            raise ValueError(f"out must be a {dtype} tensor of shape {out_shape} on {device}, got "
                             f"{out.dtype} {tuple(out.shape)} on {out.device}")
        _checks.check_layout("out", out)
    lse = torch.empty((batch, nheads, seqlen_q), dtype=torch.float32, device=device) if return_lse else None
    if out.numel() > 0:
        _C = lib()
        with torch.cuda.device(device):
            _C.fwd(
                dtype=getattr(_C, _DTYPE_ENUM[dtype]),
                q=q.data_ptr(), k=k.data_ptr(), v=v.data_ptr(), out=out.data_ptr(),
                lse=lse.data_ptr() if lse is not None else 0,
                batch=batch, seqlen_q=seqlen_q, seqlen_k=seqlen_k,
                num_heads_q=nheads, num_heads_kv=nheads_kv, head_dim_qk=head_dim, head_dim_v=head_dim_v,
                q_strides=q.stride()[:3], k_strides=k.stride()[:3], v_strides=v.stride()[:3],
                out_strides=out.stride()[:3],
                softmax_scale=scale, causal=bool(causal),
                stream=torch.cuda.current_stream(device).cuda_stream,
            )
    return (out, lse) if return_lse else out
