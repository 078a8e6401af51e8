"""Reference attention in plain PyTorch, and the tolerance rule the GPU tests apply."""

from __future__ import annotations

import math

import torch


def attention_ref(q, k, v, softmax_scale=None, causal=False, compute_dtype=torch.float32):
    """out (b, sq, h, dv) and lse (b, h, sq) computed in `compute_dtype`.

    float32/float64 give the reference; the input dtype gives what plain PyTorch achieves at
    that precision (the yardstick of the tolerance rule). Rows that see no key: out 0, lse +inf.
    """
    b, sq, h, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    qh = q.transpose(1, 2).to(compute_dtype)
    kh = k.transpose(1, 2).to(compute_dtype).repeat_interleave(h // hkv, dim=1)
    vh = v.transpose(1, 2).to(compute_dtype).repeat_interleave(h // hkv, dim=1)
    scores = (qh @ kh.transpose(-1, -2)).float() * scale
    if causal:
        rows = torch.arange(sq, device=q.device).view(-1, 1)
        cols = torch.arange(sk, device=q.device).view(1, -1)
        scores = scores.masked_fill(cols > rows + sk - sq, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    empty = torch.isneginf(lse)
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    out = probs.to(compute_dtype) @ vh
    lse = lse.masked_fill(empty, float("inf"))
    return out.transpose(1, 2).contiguous(), lse


def assert_close_to_reference(out, q, k, v, softmax_scale=None, causal=False):
    """The field's rule: error vs float32 <= 2x PyTorch's own error in the input dtype + atol."""
    ref, _ = attention_ref(q, k, v, softmax_scale, causal, torch.float32)
    low, _ = attention_ref(q, k, v, softmax_scale, causal, q.dtype)
    assert not torch.isnan(out).any(), "output has NaN"
    err = (out.float() - ref).abs().max().item()
    low_err = (low.float() - ref).abs().max().item()
    rounding = (ref.to(q.dtype).float() - ref).abs().max().item()
    bound = 2 * low_err + 2 * rounding + 1e-5
    assert err <= bound, f"max error {err:.3e} > bound {bound:.3e} (pytorch {q.dtype} error {low_err:.3e})"
    return err, low_err
