"""The standard backward sweep: flashgen against torch SDPA's FLASH and CUDNN backends.

Each contender runs its forward once, outside the timed region; a timed call is one backward
pass through autograd (torch.autograd.grad with retain_graph), as a training step pays it.
FLOPs follow FlashAttention's convention: the backward does 2.5x the forward's (five matmuls
to the forward's two). Also measured: max error of dq against a float32 reference on batch 0,
heads 0-1, and the peak memory a full forward + backward allocates beyond its inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel

import flashgen

from .sweep import PEERS, Case
from .timing import median_ms

BWD_FLOPS_FACTOR = 2.5

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class BwdResult:
    case: Case
    tflops: dict[str, Optional[float]]
    max_err: dict[str, Optional[float]]  # dq against the float32 reference
    peak_mib: dict[str, Optional[float]]  # forward + backward, beyond q, k, v and dout
    note: str = ""


def reference_dq_rows(q, k, v, dout, causal, heads=2, chunk=2048) -> torch.Tensor:
    """float32 dq for batch 0 and the first `heads` heads, (seqlen, heads, head_dim).

    dq of a row block needs only that block's probabilities (dq = (P * (dP - rowsum(dO * O))) K),
    so the reference runs in row chunks and never holds a full seqlen x seqlen matrix.
    """
    s = q.shape[1]
    scale = 1.0 / math.sqrt(q.shape[-1])
    qh, kh, vh, doh = (t[0, :, :heads].transpose(0, 1).float() for t in (q, k, v, dout))
    dq = torch.empty_like(qh)
    cols = torch.arange(s, device=q.device)
    for r0 in range(0, s, chunk):
        r1 = min(r0 + chunk, s)
        scores = qh[:, r0:r1] @ kh.transpose(-1, -2) * scale
        if causal:
            rows = torch.arange(r0, r1, device=q.device)
            scores.masked_fill_(cols.view(1, -1) > rows.view(-1, 1), float("-inf"))
        p = torch.softmax(scores, dim=-1)
        do = doh[:, r0:r1]
        delta = (do * (p @ vh)).sum(-1, keepdim=True)
        dq[:, r0:r1] = (p * (do @ vh.transpose(-1, -2) - delta)) @ kh * scale
    return dq.transpose(0, 1)


def attentions(causal) -> dict[str, Attention]:
    """Each contender as a differentiable call on (batch, seqlen, heads, head_dim) tensors."""

    def sdpa(backend):
        def attn(q, k, v):
            with sdpa_kernel(backend):  # SDPA layout views; no copies
                out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                     is_causal=causal)
            return out.transpose(1, 2)
        return attn

    result: dict[str, Attention] = {"flashgen": lambda q, k, v: flashgen.flash_attn_func(q, k, v, causal=causal)}
    result.update({name: sdpa(backend) for name, backend in PEERS.items()})
    return result


def peak_extra_mib(attn: Attention, q, k, v, dout) -> float:
    """Peak memory of one forward + backward beyond what is allocated before it, in MiB."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    grads = torch.autograd.grad(attn(q, k, v), (q, k, v), dout)
    torch.cuda.synchronize()
    del grads
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def run_case(case: Case) -> BwdResult:
    q, k, v = case.qkv(requires_grad=True)
    dout = torch.randn(case.shape(case.dv), device="cuda", dtype=case.dtype)
    ref = reference_dq_rows(q.detach(), k.detach(), v.detach(), dout, case.causal)
    flops = BWD_FLOPS_FACTOR * case.flops()
    tflops: dict[str, Optional[float]] = {}
    errs: dict[str, Optional[float]] = {}
    peaks: dict[str, Optional[float]] = {}
    notes = []
    for name, attn in attentions(case.causal).items():
        try:
            out = attn(q, k, v)  # the forward, once; its graph is kept for the timed backward passes

            def backward():
                return torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)[0]

            dq = backward()
            errs[name] = (dq[0, :, : ref.shape[1]].float() - ref).abs().max().item()
            del dq
            tflops[name] = flops / (median_ms(backward) * 1e-3) / 1e12
            del out
            peaks[name] = peak_extra_mib(attn, q, k, v, dout)
        except (RuntimeError, LookupError) as err:  # a peer without a kernel for this shape
            tflops[name] = errs[name] = peaks[name] = None
            notes.append(f"{name}: {str(err).splitlines()[0][:80]}")
        torch.cuda.empty_cache()
    return BwdResult(case, tflops, errs, peaks, "; ".join(notes))
