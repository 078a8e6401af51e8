"""The standard forward sweep: flashgen against torch SDPA's FLASH and CUDNN backends."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import flashgen

from .timing import median_ms

TOKENS = 16384
MODEL_DIM = 2048
PEERS = {"fa2": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}


@dataclass(frozen=True)
class Case:
    head_dim: int  # q and k
    seqlen: int
    causal: bool
    dtype: torch.dtype = torch.bfloat16
    head_dim_v: Optional[int] = None  # v and the output; None: head_dim

    @property
    def dv(self) -> int:
        return self.head_dim_v or self.head_dim

    @property
    def label(self) -> str:
        return str(self.head_dim) if self.dv == self.head_dim else f"{self.head_dim}x{self.dv}"

    @property
    def batch(self) -> int:
        return max(1, TOKENS // self.seqlen)

    @property
    def nheads(self) -> int:
        return MODEL_DIM // self.head_dim

    def flops(self) -> float:
        """Forward FLOPs: 2 b h s^2 (d_qk + d_v), halved when causal."""
        f = 2 * self.batch * self.nheads * self.seqlen * self.seqlen * (self.head_dim + self.dv)
        return f / 2 if self.causal else f

    def shape(self, dim: int) -> tuple[int, int, int, int]:
        return (self.batch, self.seqlen, self.nheads, dim)

    def qkv(self, requires_grad: bool = False, dtype: Optional[torch.dtype] = None):
        """Fresh random q, k (head_dim) and v (head_dim_v) on the GPU."""
        dims = (self.head_dim, self.head_dim, self.dv)
        return tuple(torch.randn(self.shape(d), device="cuda", dtype=dtype or self.dtype, requires_grad=requires_grad)
                     for d in dims)


@dataclass
class Result:
    """One case's TFLOP/s and max error per contender (the forward sweep's Case, or another
    mode's case type: the GQA mode's GqaCase)."""

    case: Any
    tflops: dict[str, Optional[float]]
    max_err: dict[str, Optional[float]]
    note: str = ""


def reference_rows(q, k, v, causal, heads=2, chunk=2048) -> torch.Tensor:
    """float32 attention for batch 0 and the first `heads` query heads, (seqlen_q, heads, head_dim_v).
    GQA: query head h reads KV head h // (q heads / KV heads); causal is bottom-right aligned
    (query i sees keys up to seqlen_k - seqlen_q + i), as flashgen's."""
    sq, sk = q.shape[1], k.shape[1]
    scale = 1.0 / math.sqrt(q.shape[-1])
    kv_heads = [h // (q.shape[2] // k.shape[2]) for h in range(heads)]
    qh = q[0, :, :heads].transpose(0, 1).float()
    kh, vh = (t[0, :, kv_heads].transpose(0, 1).float() for t in (k, v))
    out = qh.new_empty(*qh.shape[:-1], vh.shape[-1])
    cols = torch.arange(sk, device=q.device)
    for r0 in range(0, sq, chunk):
        scores = qh[:, r0:r0 + chunk] @ kh.transpose(-1, -2) * scale
        if causal:
            rows = torch.arange(r0, min(r0 + chunk, sq), device=q.device) + sk - sq
            scores.masked_fill_(cols.view(1, -1) > rows.view(-1, 1), float("-inf"))
        out[:, r0:r0 + chunk] = torch.softmax(scores, dim=-1) @ vh
    return out.transpose(0, 1)


def runners(q, k, v, causal) -> dict[str, Callable[[], torch.Tensor]]:
    """Each contender as a zero-argument call returning (batch, seqlen, heads, head_dim)."""
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # SDPA layout views; no copies timed

    def sdpa(backend):
        def run():
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal).transpose(1, 2)
        return run

    out = q.new_empty(*q.shape[:-1], v.shape[-1])
    result = {"flashgen": lambda: flashgen.flash_attn_func(q, k, v, causal=causal, out=out)}
    result.update({name: sdpa(backend) for name, backend in PEERS.items()})
    return result


def run_case(case: Case) -> Result:
    q, k, v = case.qkv()
    ref = reference_rows(q, k, v, case.causal)
    tflops: dict[str, Optional[float]] = {}
    errs: dict[str, Optional[float]] = {}
    notes = []
    for name, fn in runners(q, k, v, case.causal).items():
        try:
            out = fn()
            errs[name] = (out[0, :, : ref.shape[1]].float() - ref).abs().max().item()
            tflops[name] = case.flops() / (median_ms(fn) * 1e-3) / 1e12
        except (RuntimeError, LookupError) as err:  # a peer without a kernel for this shape
            tflops[name] = errs[name] = None
            notes.append(f"{name}: {str(err).splitlines()[0][:80]}")
    return Result(case, tflops, errs, "; ".join(notes))


def standard_cases(head_dims=(64, 128, 256), seqlens=(512, 1024, 2048, 4096, 8192, 16384),
                   causal=(False, True)) -> list[Case]:
    """head_dims: ints, or (qk, v) pairs for head_dim_v != head_dim."""
    pairs = [d if isinstance(d, tuple) else (d, d) for d in head_dims]
    return [Case(qk, s, c, head_dim_v=None if v == qk else v) for qk, v in pairs for c in causal for s in seqlens]


def parse_head_dims(text: str) -> tuple:
    """'64,128,192x128' -> (64, 128, (192, 128))."""
    dims = []
    for item in text.replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        qk, _, v = item.partition("x")
        dims.append((int(qk), int(v)) if v and int(v) != int(qk) else int(qk))
    return tuple(dims)
