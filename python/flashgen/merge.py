"""Merging partial attention results (context parallelism, ring attention, cascades)."""

from __future__ import annotations

import torch


def merge_attention_states(outs, lses):
    """Combines attention computed over disjoint key sets into attention over their union.

    outs: sequence (or stacked tensor) of n partial outputs, each (batch, seqlen, nheads, head_dim);
    lses: their log-sum-exps, each float32 (batch, nheads, seqlen) as flashgen returns them.
    A partial that saw no key for a row (lse = +inf in flashgen's convention, or -inf) adds
    nothing. Returns (out, lse) in the same layouts; out has the dtype of outs, lse is +inf
    where no partial saw a key.
    """
    out_stack = outs if isinstance(outs, torch.Tensor) else torch.stack(list(outs))
    lse_stack = lses if isinstance(lses, torch.Tensor) else torch.stack(list(lses))
    if out_stack.dim() != 5 or lse_stack.dim() != 4:
        raise ValueError("outs must be n x (batch, seqlen, nheads, head_dim) and lses n x (batch, nheads, seqlen)")
    n, b, s, h, _ = out_stack.shape
    if tuple(lse_stack.shape) != (n, b, h, s):
        raise ValueError(f"lses shape {tuple(lse_stack.shape)} does not match outs {tuple(out_stack.shape)}")
    lse = lse_stack.float().masked_fill(torch.isposinf(lse_stack), float("-inf"))
    total = torch.logsumexp(lse, dim=0)                             # (b, h, s)
    weights = torch.exp(lse - total.masked_fill(torch.isneginf(total), 0.0))  # (n, b, h, s)
    merged = (weights.permute(0, 1, 3, 2).unsqueeze(-1) * out_stack.float()).sum(dim=0)
    return merged.to(out_stack.dtype), total.masked_fill(torch.isneginf(total), float("inf"))
