"""The FP8 forward sweep: flashgen's e4m3 kernels (per-block and per-tensor scales) against the
same run's fp8 matmul rate (torch._scaled_mm), flashgen bf16 and torch SDPA's CUDNN backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import flashgen

from .cells import fmt
from .sweep import Case, reference_rows
from .timing import median_ms


def available() -> bool:
    """Whether this GPU runs FP8 attention (sm90) and the build has an FP8 kernel."""
    return torch.cuda.get_device_capability() == (9, 0) and any("_e4m3_" in n for n in flashgen.built_kernels())


def fp8_matmul_tflops(n: int = 8192) -> Optional[float]:
    """torch._scaled_mm e4m3 x e4m3 -> bf16 (B column-major, as cuBLASLt's FP8 path needs)."""
    try:
        a = torch.randn(n, n, device="cuda").to(torch.float8_e4m3fn)
        b = torch.randn(n, n, device="cuda").to(torch.float8_e4m3fn).t()
        one = torch.ones((), device="cuda")
        ms = median_ms(lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
    except (RuntimeError, AttributeError):
        return None
    return 2 * n**3 / (ms * 1e-3) / 1e12


@dataclass
class Fp8Result:
    case: Case
    tflops: dict[str, Optional[float]]  # fp8 block, fp8 tensor, bf16 flashgen, cudnn
    quantize_ms: Optional[float]  # the pre-pass (q, k, v per block, v to the PV layout)
    rmse: Optional[float]  # fp8 per block, relative to the fp32 reference of the bf16 inputs
    max_err: Optional[float]
    note: str = ""


def run_case(case: Case) -> Fp8Result:
    from .. import fp8

    q, k, v = case.qkv(dtype=torch.bfloat16)
    tflops: dict[str, Optional[float]] = {}
    notes = []

    def quantize_all(granularity):
        return (fp8.quantize(q, granularity=granularity), fp8.quantize(k, granularity=granularity),
                fp8.quantize(v, granularity=granularity, layout="pv"))

    rmse = max_err = quantize_ms = None
    try:
        blocks = quantize_all("block")
        tensors = quantize_all("tensor")
        out = torch.empty(case.shape(case.dv), device="cuda", dtype=torch.bfloat16)
        for name, operands in (("fp8 block", blocks), ("fp8 tensor", tensors)):
            tflops[name] = case.flops() / (median_ms(
                lambda: fp8.flash_attn_fp8_func(*operands, causal=case.causal, out=out)) * 1e-3) / 1e12
        quantize_ms = median_ms(lambda: quantize_all("block"))
        o = fp8.flash_attn_fp8_func(*blocks, causal=case.causal)
        ref = reference_rows(q, k, v, case.causal)
        diff = o[0, :, : ref.shape[1]].float() - ref
        rmse = (diff.pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()).item()
        max_err = diff.abs().max().item()
    except (RuntimeError, LookupError, ValueError) as err:
        notes.append(f"fp8: {str(err).splitlines()[0][:100]}")
    try:
        out16 = torch.empty(case.shape(case.dv), device="cuda", dtype=torch.bfloat16)
        tflops["bf16"] = case.flops() / (median_ms(
            lambda: flashgen.flash_attn_func(q, k, v, causal=case.causal, out=out16)) * 1e-3) / 1e12
    except (RuntimeError, LookupError, ValueError) as err:
        tflops["bf16"] = None
        notes.append(f"bf16: {str(err).splitlines()[0][:80]}")
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))

    def cudnn():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=case.causal)
    try:
        tflops["cudnn"] = case.flops() / (median_ms(cudnn) * 1e-3) / 1e12
    except RuntimeError as err:
        tflops["cudnn"] = None
        notes.append(f"cudnn: {str(err).splitlines()[0][:80]}")
    return Fp8Result(case, tflops, quantize_ms, rmse, max_err, "; ".join(notes))


def table(results: list[Fp8Result], fp8_mm: Optional[float]) -> list[str]:
    rows = ["| hdim | seqlen | causal | fp8 block | fp8 tensor | block/tensor | vs fp8 matmul | bf16 flashgen | "
            "cuDNN bf16 | fp8 vs cuDNN | quantize ms | fp8 rmse | fp8 max err |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        t = r.tflops
        blk, ten = t.get("fp8 block"), t.get("fp8 tensor")
        rows.append(
            f"| {r.case.label} | {r.case.seqlen} | {'yes' if r.case.causal else 'no'} | {fmt(blk)} | "
            f"{fmt(ten)} | {fmt(blk / ten if blk and ten else None, '.3f')} | "
            f"{fmt(blk / fp8_mm if blk and fp8_mm else None, '.2f')} | {fmt(t.get('bf16'))} | "
            f"{fmt(t.get('cudnn'))} | {fmt(blk / t['cudnn'] if blk and t.get('cudnn') else None, '.2f')} | "
            f"{fmt(r.quantize_ms, '.3f')} | {fmt(r.rmse, '.1e')} | {fmt(r.max_err, '.1e')} |"
        )
    return rows
