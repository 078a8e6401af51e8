"""Reference attention in plain PyTorch, and the tolerance rule the GPU tests apply."""

from __future__ import annotations

import math

import torch

TORCH_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def attention_ref(q, k, v, softmax_scale=None, causal=False, window=(-1, -1), softcap=0.0, alibi_slopes=None,
                  sinks=None, dropout_mask=None, dropout_p=0.0, compute_dtype=torch.float32):
    """out (b, sq, h, dv) and lse (b, h, sq) computed in `compute_dtype`.

    float32/float64 give the reference; the input dtype gives what plain PyTorch achieves at
    that precision (the yardstick of the tolerance rule). Rows that see no key: out 0, lse +inf
    (lse = sink when sinks are given).
    """
    b, sq, h, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    qh = q.transpose(1, 2).to(compute_dtype)
    kh = k.transpose(1, 2).to(compute_dtype).repeat_interleave(h // hkv, dim=1)
    vh = v.transpose(1, 2).to(compute_dtype).repeat_interleave(h // hkv, dim=1)
    scores = (qh @ kh.transpose(-1, -2)).double() * scale
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    rows = torch.arange(sq, device=q.device).view(-1, 1) + (sk - sq)
    cols = torch.arange(sk, device=q.device).view(1, -1)
    if alibi_slopes is not None:
        slopes = alibi_slopes.double().expand(b, h) if alibi_slopes.dim() == 1 else alibi_slopes.double()
        scores = scores - slopes.view(b, h, 1, 1) * (rows - cols).abs()
    left, right = window
    if causal:
        right = 0
    masked = torch.zeros(sq, sk, dtype=torch.bool, device=q.device)
    if right >= 0:
        masked |= cols > rows + right
    if left >= 0:
        masked |= cols < rows - left
    scores = scores.masked_fill(masked, float("-inf"))
    if sinks is not None:
        sink_col = sinks.double().view(1, h, 1, 1).expand(b, h, sq, 1)
        lse = torch.logsumexp(torch.cat([scores, sink_col], dim=-1), dim=-1)
    else:
        lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - lse.unsqueeze(-1)).nan_to_num(0.0)
    if dropout_mask is not None:
        probs = probs * dropout_mask / (1.0 - dropout_p)
    out = probs.to(compute_dtype) @ vh
    lse = lse.masked_fill(torch.isneginf(lse), float("inf")).float()
    return out.transpose(1, 2).contiguous(), lse


def assert_close_to_reference(out, q, k, v, **kw):
    """The field's rule: error vs float32 <= 2x PyTorch's own error in the input dtype + atol."""
    ref, _ = attention_ref(q, k, v, compute_dtype=torch.float32, **kw)
    low, _ = attention_ref(q, k, v, compute_dtype=q.dtype, **kw)
    assert not torch.isnan(out).any(), "output has NaN"
    err = (out.float() - ref.float()).abs().max().item() if out.numel() else 0.0
    low_err = (low.float() - ref.float()).abs().max().item() if out.numel() else 0.0
    rounding = (ref.to(q.dtype).float() - ref.float()).abs().max().item() if out.numel() else 0.0
    bound = 2 * low_err + 2 * rounding + 1e-5
    assert err <= bound, f"max error {err:.3e} > bound {bound:.3e} (pytorch {q.dtype} error {low_err:.3e})"
    return err, low_err


def assert_lse_close(lse, q, k, v, **kw):
    _, ref = attention_ref(q, k, v, compute_dtype=torch.float32, **kw)
    torch.testing.assert_close(lse, ref, atol=2e-3, rtol=1e-3)


def reference_grads(q, k, v, dout, compute_dtype=torch.float32, sinks=None, **kw):
    """(dq, dk, dv, dsinks or None) of attention_ref(...) in `compute_dtype` by autograd, for
    the output gradient dout. Inputs are cloned into fresh leaves; sinks stay float32."""
    leaves = [t.detach().to(compute_dtype).requires_grad_() for t in (q, k, v)]
    sink_leaf = sinks.detach().float().requires_grad_() if sinks is not None else None
    out, _ = attention_ref(*leaves, sinks=sink_leaf, compute_dtype=compute_dtype, **kw)
    inputs = leaves + ([sink_leaf] if sink_leaf is not None else [])
    grads = torch.autograd.grad(out, inputs, dout.to(out.dtype), allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]
    return (*grads[:3], grads[3] if sink_leaf is not None else None)


def assert_grads_close(grads, q, k, v, dout, sinks=None, atol=1e-4, **kw):
    """The forward's rule applied to dq, dk, dv (and dsinks): each gradient's max error against
    the float32 reference is <= 2x the error of the same autograd computation done by PyTorch in
    the input dtype, plus the reference's own rounding to that dtype and a small atol."""
    ref = reference_grads(q, k, v, dout, torch.float32, sinks=sinks, **kw)
    low = reference_grads(q, k, v, dout, q.dtype, sinks=sinks, **kw)
    report = {}
    for name, got, r, lo in zip(("dq", "dk", "dv", "dsinks"), grads, ref, low):
        if r is None:
            continue
        assert got is not None, f"{name} is missing"
        assert got.shape == r.shape, f"{name} has shape {tuple(got.shape)}, expected {tuple(r.shape)}"
        assert not torch.isnan(got).any(), f"{name} has NaN"
        if got.numel() == 0:
            continue
        err = (got.float() - r.float()).abs().max().item()
        low_err = (lo.float() - r.float()).abs().max().item()
        rounding = (r.to(q.dtype).float() - r.float()).abs().max().item()
        bound = 2 * low_err + 2 * rounding + atol
        if name == "dsinks":
            bound += _dsinks_output_rounding(q, k, v, dout, sinks, **kw)
        assert err <= bound, (f"{name}: max error {err:.3e} > bound {bound:.3e} (pytorch {q.dtype} error "
                              f"{low_err:.3e}, max |{name}| {r.abs().max().item():.3e})")
        report[name] = (err, low_err)
    return report


def _dsinks_output_rounding(q, k, v, dout, sinks, **kw):
    """How far dsinks = -sum_rows p_sink * rowsum(dO * O) moves when O is the forward's output in
    the input dtype, as every flash backward reads it: each element of O carries an error of up
    to about one ulp (its rounding plus the forward's P rounded to the input dtype; 2^-8
    relative for bf16, 2^-11 for fp16), independent and uniform, so the per-head error has
    standard deviation sqrt(sum p_sink^2 dO^2 O^2) * ulp / sqrt(3); six of them for the largest
    head."""
    ulp = 2.0 ** -8 if q.dtype == torch.bfloat16 else 2.0 ** -11
    out, lse = attention_ref(q, k, v, sinks=sinks.detach(), **kw)  # (b, sq, h, d), (b, h, sq)
    p_sink = torch.exp(sinks.detach().float().view(1, -1, 1) - lse).nan_to_num(0.0)  # (b, h, sq)
    var = (dout.float() ** 2 * out.float() ** 2).sum(-1).transpose(1, 2)  # (b, h, sq)
    sigma = ((p_sink ** 2 * var).sum(dim=(0, 2)).max().item() / 3.0) ** 0.5 * ulp
    return 6.0 * sigma
