"""Short GQA queries (speculative decoding, chunked prefill, prefix sharing): a few to a few
hundred query tokens over a long K/V, where the query heads of a group share one tile (packed
GQA rows) instead of filling a tile each. Contenders: flashgen as dispatched (auto), the Hopper
kernel one head per tile (FLASHGEN_SM90_PACK_GQA=off), the SM80-path kernel, and torch SDPA's
FLASH and CUDNN backends on K/V expanded to every query head beforehand (untimed), with the
bottom-right causal mask flashgen uses (torch's causal_lower_right)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel

import flashgen

from .cells import fmt, ratio
from .sweep import PEERS, Result, reference_rows
from .timing import median_ms

HEAD_DIM = 128


@dataclass(frozen=True)
class GqaCase:
    batch: int
    seqlen_q: int
    seqlen_k: int
    heads_q: int
    heads_kv: int
    causal: bool

    @property
    def label(self) -> str:
        return f"{self.batch} x {self.seqlen_q} / {self.seqlen_k}"

    def visible_pairs(self) -> int:
        """(query, key) pairs the mask leaves: all, or bottom-right causal (query i sees keys up to
        seqlen_k - seqlen_q + i)."""
        if not self.causal:
            return self.seqlen_q * self.seqlen_k
        offset = self.seqlen_k - self.seqlen_q
        return sum(max(0, min(self.seqlen_k, offset + i + 1)) for i in range(self.seqlen_q))

    def flops(self) -> float:
        return 4.0 * self.batch * self.heads_q * self.visible_pairs() * HEAD_DIM


# GQA 64 / 8 (a 70B-class model) and 32 / 8 (8B-class), head dim 128, bf16.
CASES = [
    GqaCase(1, 64, 8192, 64, 8, True), GqaCase(8, 16, 8192, 64, 8, True), GqaCase(8, 64, 8192, 64, 8, True),
    GqaCase(8, 128, 4096, 64, 8, True), GqaCase(16, 32, 4096, 32, 8, False), GqaCase(4, 100, 16384, 32, 8, True),
    GqaCase(2, 512, 8192, 32, 8, True), GqaCase(1, 1000, 32768, 32, 8, True),
]

# flashgen contenders: the environment each call runs under.
FLASHGEN_RUNS = {
    "auto": {},
    "sm90 one head": {"FLASHGEN_FWD_BACKEND": "sm90", "FLASHGEN_SM90_PACK_GQA": "off"},
    "sm80": {"FLASHGEN_FWD_BACKEND": "sm80"},
}
NAMES = list(FLASHGEN_RUNS) + list(PEERS)


@contextlib.contextmanager
def environment(settings: dict[str, str]):
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def runners(case: GqaCase, q, k, v) -> dict[str, tuple[dict, Callable[[], torch.Tensor]]]:
    """Each contender: (environment, zero-argument call returning (b, seqlen_q, heads_q, d))."""
    out = torch.empty_like(q)
    group = case.heads_q // case.heads_kv
    # SDPA layout (b, h, s, d), K/V expanded to every query head once, outside the timing.
    qt = q.transpose(1, 2)
    kt, vt = (t.repeat_interleave(group, dim=2).transpose(1, 2) for t in (k, v))
    mask = None
    if case.causal:
        from torch.nn.attention.bias import causal_lower_right
        mask = causal_lower_right(case.seqlen_q, case.seqlen_k)

    def sdpa(backend):
        def run():
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask).transpose(1, 2)
        return run

    result = {name: (env, lambda: flashgen.flash_attn_func(q, k, v, causal=case.causal, out=out))
              for name, env in FLASHGEN_RUNS.items()}
    result.update({name: ({}, sdpa(backend)) for name, backend in PEERS.items()})
    return result


def run_case(case: GqaCase) -> Result:
    shape_q = (case.batch, case.seqlen_q, case.heads_q, HEAD_DIM)
    shape_kv = (case.batch, case.seqlen_k, case.heads_kv, HEAD_DIM)
    q = torch.randn(shape_q, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(shape_kv, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    ref = reference_rows(q, k, v, case.causal)
    tflops: dict[str, Optional[float]] = {}
    errs: dict[str, Optional[float]] = {}
    notes = []
    for name, (env, fn) in runners(case, q, k, v).items():
        try:
            with environment(env):
                got = fn()
                errs[name] = (got[0, :, : ref.shape[1]].float() - ref).abs().max().item()
                tflops[name] = case.flops() / (median_ms(fn) * 1e-3) / 1e12
        except Exception as err:  # noqa: BLE001 (a contender without a kernel or mask support for this shape)
            tflops[name] = errs[name] = None
            notes.append(f"{name}: {str(err).splitlines()[0][:80]}")
    return Result(case, tflops, errs, "; ".join(notes))


def table(results: list[Result]) -> list[str]:
    rows = ["| batch x q / k | heads q/kv | causal | auto | sm90 one head | sm80 | FA2 | cuDNN | auto / sm90 one head | "
            "auto / sm80 | auto / FA2 | auto / cuDNN | err auto |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        t = r.tflops
        rows.append(
            f"| {r.case.label} | {r.case.heads_q}/{r.case.heads_kv} | {'yes' if r.case.causal else 'no'} | "
            + " | ".join(fmt(t[name]) for name in NAMES) + " | "
            + " | ".join(fmt(ratio(t["auto"], t[name]), ".2f") for name in NAMES[1:]) + " | "
            + f"{fmt(r.max_err['auto'], '.1e')} |"
        )
    return rows
