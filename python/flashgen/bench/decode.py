"""Decode benchmark: one query token per sequence over a KV cache (GQA 32/8, head dim 128):
the decode kernels over a dense cache, paged caches and an FP8 paged cache, the sm80 forward
path for comparison, and torch SDPA on the dense cache. Decode is memory-bound: the figure of
merit is bytes moved (K and V read once, Q and O) per second."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import flashgen

from .timing import capture_graph, median_ms


def _graph_ms(fn) -> float:
    """Median time of fn replayed from a CUDA graph: GPU time without Python's per-call cost
    (serving engines replay decode from graphs)."""
    return median_ms(capture_graph(fn).replay)

HEADS_Q, HEADS_KV, HEAD_DIM = 32, 8, 128
CASES = ((1, 4096), (1, 32768), (8, 8192), (8, 32768), (32, 8192), (64, 8192), (128, 4096), (256, 4096))
PAGE_SIZES = (16, 256)
NAMES = ("dense", "paged16", "paged256", "fp8_paged16", "fwd-path", "sdpa_fa2", "sdpa_cudnn", "read_same")
# read_same: a streaming read (float32 sum) of the dense call's bytes, timed as the calls are: the
# ceiling any kernel reaches at this size once its launch and ramp are paid. The issue's target
# stays the large read's rate; this column says how much of the gap is the call's size.


@dataclass
class DecodeResult:
    batch: int
    seqlen_k: int
    tbps: dict[str, Optional[float]]
    fp8_speedup: Optional[float]
    err: Optional[float]
    fp8_err: Optional[float]


def _bytes(batch, seqlen_k, kv_bytes=2) -> int:
    kv = 2 * batch * seqlen_k * HEADS_KV * HEAD_DIM * kv_bytes
    return kv + 2 * batch * HEADS_Q * HEAD_DIM * 2


def _tbps(batch: int, seqlen_k: int, name: str, ms: Optional[float]) -> Optional[float]:
    """TB/s of one call of contender `name` taking ms (the FP8 cache counts its own bytes)."""
    kv_bytes = 1 if name.startswith("fp8") else 2
    return None if ms is None else _bytes(batch, seqlen_k, kv_bytes) / (ms * 1e-3) / 1e12


def same_size_read(batch: int, seqlen_k: int):
    """A float32 sum over as many bytes as the dense bf16 decode call moves."""
    src = torch.randn(_bytes(batch, seqlen_k) // 4, device="cuda")
    return lambda: src.sum()


def _reference(q, k, v) -> torch.Tensor:
    """fp32 decode reference, (b, 1, h, d)."""
    group = HEADS_Q // HEADS_KV
    qf = q.float().view(q.shape[0], HEADS_KV, group, HEAD_DIM)
    scores = torch.einsum("bhgd,bshd->bhgs", qf, k.float()) / math.sqrt(HEAD_DIM)
    out = torch.einsum("bhgs,bshd->bhgd", scores.softmax(-1), v.float())
    return out.reshape(q.shape[0], 1, HEADS_Q, HEAD_DIM)


def _paged(k, v, page):
    batch, seqlen_k = k.shape[:2]
    pages_per_seq = seqlen_k // page
    perm = torch.randperm(batch * pages_per_seq, device="cuda")
    table = perm.view(batch, pages_per_seq).int()
    k_pages = torch.empty(batch * pages_per_seq, page, HEADS_KV, HEAD_DIM, device="cuda", dtype=k.dtype)
    v_pages = torch.empty_like(k_pages)
    k_pages[perm] = k.reshape(batch * pages_per_seq, page, HEADS_KV, HEAD_DIM)
    v_pages[perm] = v.reshape(batch * pages_per_seq, page, HEADS_KV, HEAD_DIM)
    return k_pages, v_pages, table


def _fp8_pages(k_pages, v_pages):
    """e4m3 copies of a paged cache with per-(page, kv head) scales, as a serving engine
    quantising page by page would keep: (k8, v8, (k scales, v scales))."""
    amax = torch.stack([k_pages.abs().amax(dim=(1, 3)), v_pages.abs().amax(dim=(1, 3))]).float()
    scales = (amax / 448.0).clamp_min(1e-12)
    k8 = (k_pages.float() / scales[0][:, None, :, None]).to(torch.float8_e4m3fn)
    v8 = (v_pages.float() / scales[1][:, None, :, None]).to(torch.float8_e4m3fn)
    return k8, v8, scales


def run_case(batch: int, seqlen_k: int) -> DecodeResult:
    """Every call is timed from a CUDA graph (flashgen's device-side input checks, which
    synchronise, are off while capturing)."""
    dtype = torch.bfloat16
    q = torch.randn(batch, 1, HEADS_Q, HEAD_DIM, device="cuda", dtype=dtype)
    k = torch.randn(batch, seqlen_k, HEADS_KV, HEAD_DIM, device="cuda", dtype=dtype)
    v = torch.randn_like(k)
    lengths = torch.full((batch,), seqlen_k, dtype=torch.int32, device="cuda")
    times: dict[str, Optional[float]] = {}

    def record(name, fn):
        try:
            fn()
            times[name] = _graph_ms(fn)
        except (RuntimeError, ValueError, LookupError):
            times[name] = None

    err = fp8_err = None
    try:
        err = (flashgen.flash_attn_with_kvcache(q, k, v, cache_seqlens=lengths).float() - _reference(q, k, v)).abs().max().item()
    except (RuntimeError, ValueError, LookupError):
        pass
    record("dense", lambda: flashgen.flash_attn_with_kvcache(q, k, v, cache_seqlens=lengths))
    previous = os.environ.get("FLASHGEN_FWD_BACKEND")
    os.environ["FLASHGEN_FWD_BACKEND"] = "sm80"
    try:
        record("fwd-path", lambda: flashgen.flash_attn_with_kvcache(q, k, v, cache_seqlens=lengths))
    finally:
        if previous is None:
            del os.environ["FLASHGEN_FWD_BACKEND"]
        else:
            os.environ["FLASHGEN_FWD_BACKEND"] = previous
    for page in PAGE_SIZES:
        k_pages, v_pages, table = _paged(k, v, page)
        record(f"paged{page}", lambda: flashgen.flash_attn_with_kvcache(q, k_pages, v_pages, cache_seqlens=lengths,
                                                                         block_table=table))
        if page == 16:
            k8, v8, scales = _fp8_pages(k_pages, v_pages)
            del k_pages, v_pages

            def fp8_call():
                return flashgen.flash_attn_with_kvcache(q, k8, v8, cache_seqlens=lengths, block_table=table,
                                                        k_descale=scales[0], v_descale=scales[1])
            try:
                out8 = fp8_call()
                rows = torch.arange(seqlen_k, device="cuda")
                pages = table[:, rows // page].long()
                kd = (k8[pages, rows % page].float() * scales[0][pages][..., None])
                vd = (v8[pages, rows % page].float() * scales[1][pages][..., None])
                fp8_err = (out8.float() - _reference(q, kd, vd)).abs().max().item()
                del kd, vd
            except (RuntimeError, ValueError, LookupError):
                pass
            record("fp8_paged16", fp8_call)
            del k8, v8
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    for name, backend in (("sdpa_fa2", SDPBackend.FLASH_ATTENTION), ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)):
        def sdpa(backend=backend):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True)
        record(name, sdpa)
    record("read_same", same_size_read(batch, seqlen_k))
    tbps = {name: _tbps(batch, seqlen_k, name, times.get(name)) for name in NAMES}
    speedup = (times["paged16"] / times["fp8_paged16"]
               if times.get("paged16") and times.get("fp8_paged16") else None)
    return DecodeResult(batch, seqlen_k, tbps, speedup, err, fp8_err)


# Per-call figures inside one graph of LAYERS calls, each over its own cache (as a serving
# engine's decode step replays one graph holding every layer's attention): the calls' launch gaps
# are those inside a graph, not the gap between two graph launches, and no call finds its cache in
# L2 (LAYERS caches of >= 16 MiB each). Batch 1-8 shapes only, where a call is short enough that
# the difference shows; the memory is LAYERS x (dense + paged16 + FP8) caches.
LAYER_CASES = ((1, 4096), (1, 32768), (8, 8192))
LAYERS = 16
LAYER_NAMES = ("dense", "paged16", "fp8_paged16", "sdpa_cudnn", "read_same")


@dataclass
class LayersResult:
    batch: int
    seqlen_k: int
    ms: dict[str, Optional[float]]  # per call

    @property
    def tbps(self) -> dict[str, Optional[float]]:
        return {name: _tbps(self.batch, self.seqlen_k, name, ms) for name, ms in self.ms.items()}


def layer_call(name: str, batch: int, seqlen_k: int):
    """One decode call over a fresh random cache of its own: `name` is one of LAYER_NAMES."""
    if name == "read_same":
        return same_size_read(batch, seqlen_k)
    q = torch.randn(batch, 1, HEADS_Q, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(batch, seqlen_k, HEADS_KV, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    lengths = torch.full((batch,), seqlen_k, dtype=torch.int32, device="cuda")
    if name == "dense":
        return lambda: flashgen.flash_attn_with_kvcache(q, k, v, cache_seqlens=lengths)
    if name == "sdpa_cudnn":
        qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

        def sdpa():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True)
        return sdpa
    k_pages, v_pages, table = _paged(k, v, 16)
    del k, v
    if name == "paged16":
        return lambda: flashgen.flash_attn_with_kvcache(q, k_pages, v_pages, cache_seqlens=lengths, block_table=table)
    if name != "fp8_paged16":
        raise ValueError(f"unknown decode contender {name!r}")
    k8, v8, scales = _fp8_pages(k_pages, v_pages)
    del k_pages, v_pages
    return lambda: flashgen.flash_attn_with_kvcache(q, k8, v8, cache_seqlens=lengths, block_table=table,
                                                    k_descale=scales[0], v_descale=scales[1])


def layers_step(name: str, batch: int, seqlen_k: int, layers: int = LAYERS):
    """One decode step: `layers` calls of contender `name`, each over its own cache (run once, so
    that lazy setup happens before a graph captures it)."""
    calls = [layer_call(name, batch, seqlen_k) for _ in range(layers)]

    def step():
        for fn in calls:
            fn()
    step()
    return step


def run_layers_case(batch: int, seqlen_k: int, layers: int = LAYERS) -> LayersResult:
    """Time per call of `layers` decode calls captured in one CUDA graph, each over its own
    cache, for each of LAYER_NAMES in turn."""
    ms: dict[str, Optional[float]] = {}
    for name in LAYER_NAMES:
        try:
            ms[name] = _graph_ms(layers_step(name, batch, seqlen_k, layers)) / layers
        except (RuntimeError, ValueError, LookupError):
            ms[name] = None
        torch.cuda.empty_cache()
    return LayersResult(batch, seqlen_k, ms)


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.2f}" if a and b else "n/a"


def layers_table(results: list[LayersResult], read_tbps: float, single: list[DecodeResult]) -> list[str]:
    """Per-call TB/s in the layers graph; fp8 x bf16 = tokens/s of the FP8 paged16 cache over the
    bf16 one; dense x single = the dense call's rate against its one-call graph's (`single`)."""
    # The first cell, "LAYERS x batch", keeps these rows apart from the one-call table's in
    # tools/gpu_ab.sh (which keys rows by their leading numeric cells).
    rows = ["| layers x batch | seqlen_k | " + " | ".join(LAYER_NAMES) + " | dense / read | dense / read_same | "
            "dense / cuDNN | fp8 x bf16 | dense x single |",
            "| --- | --- | " + " | ".join("---" for _ in LAYER_NAMES) + " | --- | --- | --- | --- | --- |"]
    for r in results:
        t = r.tbps
        cells = [_cell(t.get(n), ".2f") for n in LAYER_NAMES]
        one = next((s.tbps.get("dense") for s in single if (s.batch, s.seqlen_k) == (r.batch, r.seqlen_k)), None)
        rows.append(f"| {LAYERS} x {r.batch} | {r.seqlen_k} | " + " | ".join(cells) +
                    f" | {_ratio(t.get('dense'), read_tbps)} | {_ratio(t.get('dense'), t.get('read_same'))} | "
                    f"{_ratio(t.get('dense'), t.get('sdpa_cudnn'))} | "
                    f"{_ratio(r.ms.get('paged16'), r.ms.get('fp8_paged16'))} | {_ratio(t.get('dense'), one)} |")
    return rows


def _cell(x, spec):
    return "n/a" if x is None else format(x, spec)


def table(results: list[DecodeResult], read_tbps: float) -> list[str]:
    rows = ["| batch | seqlen_k | " + " | ".join(NAMES) + " | best bf16 / read | dense / read_same | dense / cuDNN | "
            "fp8 x bf16 | err | fp8 err |",
            "| --- | --- | " + " | ".join("---" for _ in NAMES) + " | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        cells = [_cell(r.tbps.get(n), ".2f") for n in NAMES]
        ours = [r.tbps[n] for n in ("dense", "paged16", "paged256") if r.tbps.get(n) is not None]
        frac = f"{max(ours) / read_tbps:.2f}" if ours else "n/a"
        dense = r.tbps.get("dense")
        rows.append(f"| {r.batch} | {r.seqlen_k} | " + " | ".join(cells) +
                    f" | {frac} | {_ratio(dense, r.tbps.get('read_same'))} | "
                    f"{_ratio(dense, r.tbps.get('sdpa_cudnn'))} | "
                    f"{_cell(r.fp8_speedup, '.2f')} | {_cell(r.err, '.1e')} | {_cell(r.fp8_err, '.1e')} |")
    return rows
