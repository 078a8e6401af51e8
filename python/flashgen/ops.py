"""Autograd and torch.compile: attention as the torch.library custom ops flashgen::attn_fwd and
flashgen::attn_bwd, joined by register_autograd, and the path of flash_attn_func /
flash_attn_varlen_func when a call needs gradients or is being compiled.

The ops are opaque to torch.compile: their fake implementations give shapes and dtypes, and
the real ones run the direct path's host checks (_prepare) at run time, so tracing never
reads a data pointer or calls into the library. Dropout's Philox (seed, offset) is drawn
inside attn_fwd and returned as a CPU int64 tensor that attn_bwd replays: the backward kernel
regenerates the mask instead of storing it.

(No `from __future__ import annotations` here: custom_op infers the schema from the
annotations, which must be real types.)
"""

from typing import Optional

import torch

from . import _args_cache, _checks
from ._launch import run_backward, run_backward_cached, run_forward
from ._prepare import check_fixed_shapes, check_varlen_shapes, loadable, prepare_fixed, prepare_varlen
from .dropout import dropout_mask

_U64 = 1 << 64

# attn_fwd's inputs in order: setup_context unpacks them and the backward returns one gradient each.
_FWD_INPUTS = ("q", "k", "v", "cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q", "max_seqlen_k", "block_table",
               "softmax_scale", "causal", "window_left", "window_right", "softcap", "alibi_slopes", "sinks",
               "dropout_p", "num_splits", "deterministic", "needs_backward")


def pack_philox(seed: int, offset: int) -> torch.Tensor:
    """(seed, offset) as a CPU int64 tensor; the uint64 seed is stored by its bits."""
    return torch.tensor([seed - _U64 if seed >= 1 << 63 else seed, offset], dtype=torch.int64)


def unpack_philox(rng_state: torch.Tensor) -> tuple[int, int]:
    if rng_state.numel() != 2:
        raise ValueError("rng_state must hold the forward call's Philox (seed, offset): an int64 tensor of 2 values")
    seed, offset = rng_state.tolist()
    return seed % _U64, offset


@torch.library.custom_op("flashgen::attn_fwd", mutates_args=())
def attn_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: Optional[torch.Tensor],
    cu_seqlens_k: Optional[torch.Tensor],
    max_seqlen_q: int,
    max_seqlen_k: int,
    block_table: Optional[torch.Tensor],
    softmax_scale: float,
    causal: bool,
    window_left: int,
    window_right: int,
    softcap: float,
    alibi_slopes: Optional[torch.Tensor],
    sinks: Optional[torch.Tensor],
    dropout_p: float,
    num_splits: int,
    deterministic: bool,
    needs_backward: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention forward: (out, lse, rng_state).

    Fixed length (cu_seqlens_q None): q (b, sq, h, d), out (b, sq, h, dv), lse float32 (b, h, sq).
    Varlen: packed q (total_q, h, d), out (total_q, h, dv), lse float32 (h, total_q); k/v packed,
    or a paged cache with block_table. rng_state: CPU int64 (seed, offset) when dropout_p > 0,
    else empty. `deterministic` is only carried to the backward; `needs_backward` also checks
    that the backward kernel was built, before the forward runs.
    """
    del deterministic
    directions = ("fwd", "bwd") if needs_backward else ("fwd",)
    window = (window_left, window_right)
    if cu_seqlens_q is None:
        p = prepare_fixed(q, k, v, dropout_p, softmax_scale, causal, window, softcap, alibi_slopes, sinks, num_splits,
                          directions)
        batch, seqlen_q = q.shape[:2]
        out = torch.empty((batch, seqlen_q, p.nheads, p.head_dim_v), dtype=p.dtype, device=p.device)
        lse = torch.empty((batch, p.nheads, seqlen_q), dtype=torch.float32, device=p.device)
        if out.numel() > 0:
            run_forward(q, k, v, out, lse, p.opts)
    else:
        p = prepare_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                           causal, window, softcap, alibi_slopes, sinks, num_splits, block_table, directions)
        out = torch.empty((q.shape[0], p.nheads, p.head_dim_v), dtype=p.dtype, device=p.device)
        lse = torch.empty((p.nheads, q.shape[0]), dtype=torch.float32, device=p.device)
        if out.numel() > 0 and cu_seqlens_q.numel() > 1:
            run_forward(q, k, v, out, lse, p.opts, varlen=p.varlen, paged=p.paged)
        else:
            lse.fill_(float("inf"))
    rng_state = pack_philox(*p.opts.philox) if p.opts.dropout_p > 0.0 else torch.empty(0, dtype=torch.int64)
    return out, lse, rng_state


@attn_fwd.register_fake
def _attn_fwd_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, block_table, softmax_scale,
                   causal, window_left, window_right, softcap, alibi_slopes, sinks, dropout_p, num_splits,
                   deterministic, needs_backward):
    out = q.new_empty((*q.shape[:-1], v.shape[-1]))
    if cu_seqlens_q is None:
        lse = q.new_empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32)
    else:
        lse = q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)
    rng_state = torch.empty(2 if dropout_p > 0.0 else 0, dtype=torch.int64, device="cpu")
    return out, lse, rng_state


def _attn_bwd_impl(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale,
                   causal, window_left, window_right, softcap, alibi_slopes, sinks, dropout_p, rng_state,
                   deterministic):
    """attn_bwd's implementation; eager backward passes call it directly (_backward)."""
    philox = unpack_philox(rng_state) if dropout_p > 0.0 else None
    key = None
    if cu_seqlens_q is None and alibi_slopes is None and sinks is None:
        # A repeat of an earlier call's signature reuses its validated launch arguments.
        key = _args_cache.BWD.signature((dout, q, k, v, out, lse), (softmax_scale, causal, window_left,
                                                                    window_right, softcap, dropout_p,
                                                                    bool(deterministic)))
        entry = _args_cache.BWD.lookup(key)
        if entry is not None:
            dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
            run_backward_cached(entry, dout, q, k, v, out, lse, dq, dk, dv, philox)
            return dq, dk, dv, torch.empty(0, dtype=torch.float32, device=q.device)
    window = (window_left, window_right)
    if cu_seqlens_q is None:
        p = prepare_fixed(q, k, v, dropout_p, softmax_scale, causal, window, softcap, alibi_slopes, sinks, 0, ("bwd",),
                          philox)
        lse_shape = (q.shape[0], p.nheads, q.shape[1])
    else:
        # The forward call already read the metadata back from the GPU.
        p = prepare_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                           causal, window, softcap, alibi_slopes, sinks, 0, None, ("bwd",), philox,
                           check_metadata=False)
        lse_shape = (p.nheads, q.shape[0])
    out_shape = (*q.shape[:-1], p.head_dim_v)
    for name, t, shape, dtype in (("out", out, out_shape, p.dtype), ("dout", dout, out_shape, p.dtype),
                                  ("lse", lse, lse_shape, torch.float32)):
        if tuple(t.shape) != shape or t.dtype != dtype or t.device != p.device:
            raise ValueError(f"{name} must be a {dtype} tensor of shape {shape} on {p.device}, got {t.dtype} "
                             f"{tuple(t.shape)} on {t.device}")
    dout_ok, out_ok = loadable(dout), loadable(out)
    as_given = dout_ok and out_ok and lse.is_contiguous()
    if not dout_ok:  # e.g. the expanded ones of out.sum().backward()
        dout = dout.contiguous()
    out = out if out_ok else out.contiguous()
    lse = lse.contiguous()
    # Varlen: packed rows past cu_seqlens[-1] belong to no sequence and get no gradient from the
    # kernel, so they start at zero.
    alloc = torch.empty if cu_seqlens_q is None else torch.zeros
    dq = alloc(q.shape, dtype=q.dtype, device=q.device)
    dk = alloc(k.shape, dtype=k.dtype, device=k.device)
    dv = alloc(v.shape, dtype=v.dtype, device=v.device)
    dsinks = torch.zeros(sinks.shape if sinks is not None else (0,), dtype=torch.float32, device=q.device)
    rows_q = q.shape[0] if cu_seqlens_q is not None else q.shape[0] * q.shape[1]
    rows_k = k.shape[0] if cu_seqlens_q is not None else k.shape[0] * k.shape[1]
    if rows_q > 0 and rows_k > 0:
        # Cached only when dout, out and lse go to the kernels as given (not copies), so that a later
        # call of the signature may pass its own.
        run_backward(dout, q, k, v, out, lse, dq, dk, dv, dsinks if sinks is not None else None, p.opts,
                     varlen=p.varlen, deterministic=deterministic, cache_key=key if as_given else None)
    else:  # no query or no key: every gradient is zero (a row without keys has out = 0)
        for t in (dq, dk, dv):
            t.zero_()
    return dq, dk, dv, dsinks


@torch.library.custom_op("flashgen::attn_bwd", mutates_args=())
def attn_bwd(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    cu_seqlens_q: Optional[torch.Tensor],
    cu_seqlens_k: Optional[torch.Tensor],
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float,
    causal: bool,
    window_left: int,
    window_right: int,
    softcap: float,
    alibi_slopes: Optional[torch.Tensor],
    sinks: Optional[torch.Tensor],
    dropout_p: float,
    rng_state: torch.Tensor,
    deterministic: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention backward of an attn_fwd call (same inputs, its out, lse and rng_state):
    (dq, dk, dv, dsinks), dq/dk/dv shaped like q/k/v (dk, dv reduced over each GQA group),
    dsinks float32 like sinks, or empty without sinks."""
    return _attn_bwd_impl(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                          softmax_scale, causal, window_left, window_right, softcap, alibi_slopes, sinks, dropout_p,
                          rng_state, deterministic)


@attn_bwd.register_fake
def _attn_bwd_fake(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale,
                   causal, window_left, window_right, softcap, alibi_slopes, sinks, dropout_p, rng_state,
                   deterministic):
    dsinks = q.new_empty((sinks.shape[0] if sinks is not None else 0,), dtype=torch.float32)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), dsinks


def _setup_context(ctx, inputs, output):
    args = dict(zip(_FWD_INPUTS, inputs))
    out, lse, rng_state = output
    # The LSE is an output for merging partial results, not a differentiable quantity here.
    ctx.mark_non_differentiable(lse, rng_state)
    ctx.save_for_backward(args["q"], args["k"], args["v"], out, lse, args["cu_seqlens_q"], args["cu_seqlens_k"],
                          args["alibi_slopes"], args["sinks"], rng_state)
    ctx.paged = args["block_table"] is not None
    ctx.scalars = tuple(args[n] for n in ("max_seqlen_q", "max_seqlen_k", "softmax_scale", "causal", "window_left",
                                          "window_right", "softcap"))
    ctx.dropout_p, ctx.deterministic = args["dropout_p"], args["deterministic"]


def _backward(ctx, dout, _dlse, _drng_state):
    if ctx.paged:
        raise ValueError("flashgen has no backward pass over a paged KV cache (block_table)")
    q, k, v, out, lse, cu_q, cu_k, alibi_slopes, sinks, rng_state = ctx.saved_tensors
    max_q, max_k, scale, causal, left, right, softcap = ctx.scalars
    # A plain eager backward on CUDA tensors (no graph of the gradients, no tracing, no dispatch
    # mode) calls the implementation directly: the custom op's dispatch of 20 arguments costs ~35 us
    # of host time. Anything else goes through the op (and whatever is registered for it).
    eager = dout.is_cuda and not (torch.is_grad_enabled() or torch.compiler.is_compiling() or
                                  torch._C._len_torch_dispatch_stack())
    bwd = _attn_bwd_impl if eager else attn_bwd
    dq, dk, dv, dsinks = bwd(dout, q, k, v, out, lse, cu_q, cu_k, max_q, max_k, scale, causal, left, right, softcap,
                             alibi_slopes, sinks, ctx.dropout_p, rng_state, ctx.deterministic)
    grads = dict(q=dq, k=dk, v=dv, sinks=dsinks if sinks is not None else None)
    return tuple(grads.get(name) for name in _FWD_INPUTS)


attn_fwd.register_autograd(_backward, setup_context=_setup_context)


def _requires_grad(tensors) -> bool:
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def use_ops(q, k, v, sinks) -> bool:
    """Whether a call takes the custom-op path: it needs gradients, or torch.compile traces it
    (the direct path reads data pointers and calls the library, which tracing cannot)."""
    return torch.compiler.is_compiling() or _requires_grad((q, k, v, sinks))


def attention(q, k, v, varlen, block_table, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
              sinks, num_splits, deterministic, return_lse, return_attn_probs, out):
    """flash_attn_func / flash_attn_varlen_func through attn_fwd (varlen: None or (cu_seqlens_q,
    cu_seqlens_k, max_seqlen_q, max_seqlen_k)). Only shape-level checks run here, so that
    torch.compile traces this without a graph break; the rest run inside the op."""
    needs_backward = _requires_grad((q, k, v, sinks))
    if needs_backward and block_table is not None:
        raise ValueError("a paged KV cache (block_table) is for inference: flashgen has no backward pass over it. "
                         "Call under torch.no_grad(), or pass packed k/v for training")
    if varlen is None:
        _, nheads, head_dim, _ = check_fixed_shapes(q, k, v)
        cu_q = cu_k = None
        max_q = max_k = 0
    else:
        cu_q, cu_k, max_q, max_k = varlen
        _, nheads, head_dim, _, _ = check_varlen_shapes(q, k, v, cu_q, block_table is not None)
        max_q, max_k = int(max_q), int(max_k)
    left, right = _checks.check_window(window_size)
    deterministic = bool(deterministic) or torch.are_deterministic_algorithms_enabled()
    result, lse, rng_state = attn_fwd(q, k, v, cu_q, cu_k, max_q, max_k, block_table,
                                      _checks.resolve_softmax_scale(softmax_scale, head_dim), bool(causal), left,
                                      right, float(softcap), alibi_slopes, sinks, float(dropout_p), int(num_splits),
                                      deterministic, needs_backward)
    if out is not None:
        if out.shape != result.shape or out.dtype != result.dtype or out.device != result.device:
            raise ValueError(f"out must be a {result.dtype} tensor of shape {tuple(result.shape)} on "
                             f"{result.device}, got {out.dtype} {tuple(out.shape)} on {out.device}")
        result = out.copy_(result)
    if return_attn_probs:
        mask = None
        if dropout_p > 0.0:
            seed, offset = unpack_philox(rng_state)
            mask = dropout_mask(seed, offset, dropout_p, q.shape[0], nheads, q.shape[1], k.shape[1], q.device)
        return result, lse, mask
    return (result, lse) if return_lse else result
