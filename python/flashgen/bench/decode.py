"""Decode benchmark: one query token per sequence over a KV cache (GQA 32/8, head dim 128),
paged with several page sizes and dense, beside torch SDPA on the dense cache. Decode is
memory-bound: the figure of merit is bytes moved (K and V read once, Q and O) per second."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import flashgen

from .timing import median_ms

HEADS_Q, HEADS_KV, HEAD_DIM = 32, 8, 128
CASES = ((1, 2048), (1, 32768), (8, 8192), (8, 32768), (32, 8192), (64, 8192), (128, 2048), (128, 4096))
PAGE_SIZES = (16, 256)


@dataclass
class DecodeResult:
    batch: int
    seqlen_k: int
    tbps: dict[str, Optional[float]]
    max_err: Optional[float]


def _bytes(batch, seqlen_k) -> int:
    kv = 2 * batch * seqlen_k * HEADS_KV * HEAD_DIM * 2
    return kv + 2 * batch * HEADS_Q * HEAD_DIM * 2


def run_case(batch: int, seqlen_k: int) -> DecodeResult:
    dtype = torch.bfloat16
    q = torch.randn(batch, 1, HEADS_Q, HEAD_DIM, device="cuda", dtype=dtype)
    k = torch.randn(batch, seqlen_k, HEADS_KV, HEAD_DIM, device="cuda", dtype=dtype)
    v = torch.randn_like(k)
    lengths = torch.full((batch,), seqlen_k, dtype=torch.int32, device="cuda")
    nbytes = _bytes(batch, seqlen_k)
    tbps: dict[str, Optional[float]] = {}

    def record(name, fn):
        try:
            fn()
            tbps[name] = nbytes / (median_ms(fn) * 1e-3) / 1e12
        except (RuntimeError, ValueError, LookupError):
            tbps[name] = None

    dense = flashgen.flash_attn_with_kvcache(q, k, v, cache_seqlens=lengths)
    record("dense", lambda: flashgen.flash_attn_with_kvcache(q, k, v, cache_seqlens=lengths))
    max_err = 0.0
    for page in PAGE_SIZES:
        pages_per_seq = seqlen_k // page
        perm = torch.randperm(batch * pages_per_seq, device="cuda")
        table = perm.view(batch, pages_per_seq).int()
        k_pages = torch.empty(batch * pages_per_seq, page, HEADS_KV, HEAD_DIM, device="cuda", dtype=dtype)
        v_pages = torch.empty_like(k_pages)
        k_pages[perm] = k.reshape(batch * pages_per_seq, page, HEADS_KV, HEAD_DIM)
        v_pages[perm] = v.reshape(batch * pages_per_seq, page, HEADS_KV, HEAD_DIM)
        run = lambda: flashgen.flash_attn_with_kvcache(q, k_pages, v_pages, cache_seqlens=lengths, block_table=table)
        max_err = max(max_err, (run().float() - dense.float()).abs().max().item())
        record(f"paged{page}", run)
        del k_pages, v_pages
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    for name, backend in (("sdpa_fa2", SDPBackend.FLASH_ATTENTION), ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)):
        def sdpa(backend=backend):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True)
        record(name, sdpa)
    return DecodeResult(batch, seqlen_k, tbps, max_err)


def table(results: list[DecodeResult], copy_tbps: float) -> list[str]:
    names = ["dense"] + [f"paged{p}" for p in PAGE_SIZES] + ["sdpa_fa2", "sdpa_cudnn"]
    rows = ["| batch | seqlen_k | " + " | ".join(names) + " | best flashgen / copy | paged max err vs dense |",
            "| --- | --- | " + " | ".join("---" for _ in names) + " | --- | --- |"]
    for r in results:
        cells = ["n/a" if r.tbps.get(n) is None else f"{r.tbps[n]:.2f}" for n in names]
        ours = [r.tbps[n] for n in names[:3] if r.tbps.get(n) is not None]
        frac = f"{max(ours) / copy_tbps:.2f}" if ours else "n/a"
        rows.append(f"| {r.batch} | {r.seqlen_k} | " + " | ".join(cells) + f" | {frac} | {r.max_err:.1e} |")
    return rows
