"""python -m flashgen.bench: the standard forward and backward sweeps beside torch SDPA's FLASH
and CUDNN, and the decode sweep (TB/s over a paged and a dense KV cache).

Prints max error against a float32 reference, TFLOP/s and ratios, plus the same-run bf16
matmul and copy ceilings. --markdown FILE also writes the tables for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

import torch

import flashgen

from ..dispatch import select_kernel
from . import backward, decode, fp8, gqa
from .cells import fmt, ratio
from .sweep import Result, parse_head_dims, run_case, standard_cases
from .timing import copy_tbps, matmul_tflops, read_tbps


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.replace(";", ",").split(",") if x)


def table(results: list[Result]) -> list[str]:
    rows = ["| hdim | seqlen | causal | flashgen | FA2 | cuDNN | vs FA2 | vs cuDNN | err flashgen | err FA2 | err cuDNN |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        t, e = r.tflops, r.max_err
        rows.append(
            f"| {r.case.label} | {r.case.seqlen} | {'yes' if r.case.causal else 'no'} | {fmt(t['flashgen'])} | "
            f"{fmt(t['fa2'])} | {fmt(t['cudnn'])} | {fmt(ratio(t['flashgen'], t['fa2']), '.2f')} | "
            f"{fmt(ratio(t['flashgen'], t['cudnn']), '.2f')} | {fmt(e['flashgen'], '.1e')} | "
            f"{fmt(e['fa2'], '.1e')} | {fmt(e['cudnn'], '.1e')} |"
        )
    return rows


def bwd_table(results: list[backward.BwdResult]) -> list[str]:
    rows = ["| hdim | seqlen | causal | flashgen | FA2 | cuDNN | vs FA2 | vs cuDNN | dq err flashgen | dq err FA2 | "
            "dq err cuDNN | MiB flashgen | MiB FA2 | MiB cuDNN |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        t, e, m = r.tflops, r.max_err, r.peak_mib
        rows.append(
            f"| {r.case.label} | {r.case.seqlen} | {'yes' if r.case.causal else 'no'} | {fmt(t['flashgen'])} | "
            f"{fmt(t['fa2'])} | {fmt(t['cudnn'])} | {fmt(ratio(t['flashgen'], t['fa2']), '.2f')} | "
            f"{fmt(ratio(t['flashgen'], t['cudnn']), '.2f')} | {fmt(e['flashgen'], '.1e')} | "
            f"{fmt(e['fa2'], '.1e')} | {fmt(e['cudnn'], '.1e')} | {fmt(m['flashgen'])} | {fmt(m['fa2'])} | "
            f"{fmt(m['cudnn'])} |"
        )
    return rows


def _family(direction: str = "fwd") -> str:
    """Which family the standard sweep's calls of `direction` dispatch to (bf16, head dim 128)."""
    try:
        spec = select_kernel(direction, torch.bfloat16, 128, 128, False, torch.device("cuda"))
    except (ValueError, RuntimeError, LookupError) as err:
        return f"unknown ({str(err).splitlines()[0][:60]})"
    return spec.arch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flashgen.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head-dims", type=parse_head_dims, default=(64, 128, 256),
                        help="e.g. 64,128,256 or 192,192x128 (qk x v)")
    parser.add_argument("--seqlens", type=_ints, default=(512, 1024, 2048, 4096, 8192, 16384))
    parser.add_argument("--causal", choices=("both", "yes", "no"), default="both")
    parser.add_argument("--mode", choices=("all", "fwd", "bwd", "decode", "gqa", "fp8"), default="all",
                        help="all = fwd, bwd, decode and gqa (short GQA queries), plus fp8 on Hopper when FP8 "
                             "kernels are built; fp8 = the FP8 forward sweep alone")
    parser.add_argument("--markdown", help="also write the tables to this file")
    parser.add_argument("--backend", choices=("auto", "sm80", "sm90"), default=None,
                        help="force the forward kernel family (sets FLASHGEN_FWD_BACKEND)")
    parser.add_argument("--bwd-backend", choices=("auto", "sm80", "sm90"), default=None,
                        help="force the backward kernel family (sets FLASHGEN_BWD_BACKEND)")
    parser.add_argument("--sm80-rows", choices=("auto", "wide", "narrow"), default=None,
                        help="force the sm80 forward's tile above head dim 128: 128 or 64 query rows "
                             "(sets FLASHGEN_SM80_FWD_ROWS)")
    parser.add_argument("--sm90-rows", choices=("auto", "tall", "short"), default=None,
                        help="force the sm90 causal forward's tile at head dim 64: 192 or 128 query rows "
                             "(sets FLASHGEN_SM90_FWD_ROWS)")
    args = parser.parse_args(argv)
    if args.backend is not None:
        os.environ["FLASHGEN_FWD_BACKEND"] = args.backend
    for knob, value in (("FLASHGEN_SM80_FWD_ROWS", args.sm80_rows), ("FLASHGEN_SM90_FWD_ROWS", args.sm90_rows)):
        if value is not None:
            os.environ[knob] = value
    if args.bwd_backend is not None:
        os.environ["FLASHGEN_BWD_BACKEND"] = args.bwd_backend
    if not torch.cuda.is_available():
        print("flashgen.bench needs a CUDA GPU", file=sys.stderr)
        return 2

    causal = {"both": (False, True), "yes": (True,), "no": (False,)}[args.causal]
    device = torch.cuda.get_device_name()
    header = [
        f"flashgen {flashgen.__version__} attention sweep, {datetime.date.today()}, {device}, torch {torch.__version__}, "
        f"cuDNN {torch.backends.cudnn.version()}",
        "TFLOP/s (fwd FLOPs = 4*b*h*s^2*d, halved when causal); b*s = 16384, h*d = 2048, bf16; "
        "err = max |out - fp32 reference| on batch 0, heads 0-1",
        f"flashgen kernel families (bf16, head dim 128): forward {_family('fwd')}, backward {_family('bwd')}"
        + "".join(f"; {knob}={os.environ[knob]}"
                  for knob in ("FLASHGEN_SM80_FWD_ROWS", "FLASHGEN_SM90_FWD_ROWS", "FLASHGEN_SM90_FP8_KEYS")
                  if os.environ.get(knob)),
    ]
    for line in header:
        print(line, flush=True)
    copy_rate = copy_tbps()
    ceilings = f"ceilings (same run): bf16 matmul 8192^3 {matmul_tflops():.0f} TFLOP/s, copy {copy_rate:.2f} TB/s"
    print(ceilings, flush=True)
    flashgen.config.check_device_inputs = False  # no host synchronisation inside timed calls

    lines = header + [ceilings, ""]
    if args.mode in ("all", "fwd"):
        results = []
        for case in standard_cases(args.head_dims, args.seqlens, causal):
            result = run_case(case)
            results.append(result)
            print(table([result])[-1] + (f"  # {result.note}" if result.note else ""), flush=True)
            torch.cuda.empty_cache()
        lines += table(results)
        lines += [f"- hdim {r.case.label} seqlen {r.case.seqlen} causal {r.case.causal}: {r.note}"
                  for r in results if r.note]
    if args.mode in ("all", "bwd"):
        bwd_results = []
        for case in standard_cases(args.head_dims, args.seqlens, causal):
            result = backward.run_case(case)
            bwd_results.append(result)
            print(bwd_table([result])[-1] + (f"  # {result.note}" if result.note else ""), flush=True)
            torch.cuda.empty_cache()
        lines += ["", "Backward (the forward once, untimed; autograd.grad per timed call): TFLOP/s with bwd FLOPs = "
                  "2.5x fwd; dq err = max |dq - fp32 reference| on batch 0, heads 0-1; MiB = peak memory of one "
                  "fwd + bwd beyond q, k, v and dout", ""]
        lines += bwd_table(bwd_results)
        lines += [f"- bwd hdim {r.case.label} seqlen {r.case.seqlen} causal {r.case.causal}: {r.note}"
                  for r in bwd_results if r.note]
    if args.mode in ("all", "decode"):
        read_rate = read_tbps()
        print(f"streaming read (float32 sum, same run): {read_rate:.2f} TB/s", flush=True)
        decode_results = []
        for batch, seqlen_k in decode.CASES:
            decode_results.append(decode.run_case(batch, seqlen_k))
            print(decode.table(decode_results[-1:], read_rate)[-1], flush=True)
            torch.cuda.empty_cache()
        lines += ["", f"Decode, bf16 queries, GQA {decode.HEADS_Q}/{decode.HEADS_KV}, head dim {decode.HEAD_DIM}, one "
                  f"query token, all keys in use, every call replayed from a CUDA graph: TB/s (K+V read once, Q and O; "
                  f"the FP8 cache counts its own bytes) "
                  f"against the same run's streaming read, {read_rate:.2f} TB/s. dense/pagedN: the decode kernels; "
                  "fwd-path: the sm80 forward kernel (packed GQA, split-KV) on the dense cache; read_same: a streaming read "
                  "(float32 sum) of the dense call's bytes, timed the same way (the ceiling at this size); fp8 x bf16 = "
                  "tokens/s of the FP8 paged16 cache over the bf16 one; err: max |out - fp32 reference| of the "
                  "dense bf16 call and of the FP8 call (against the reference of its dequantised cache)", ""]
        lines += decode.table(decode_results, read_rate)
        layer_results = []
        lines += ["", f"Decode inside one CUDA graph of {decode.LAYERS} calls, each over its own cache (a serving "
                  "engine's decode step holds every layer's attention in one graph): TB/s per call as above; "
                  "dense x single = the dense call's rate here over its one-call graph's in the table above", ""]
        try:
            for batch, seqlen_k in decode.LAYER_CASES:
                layer_results.append(decode.run_layers_case(batch, seqlen_k))
                print(decode.layers_table(layer_results[-1:], read_rate, decode_results)[-1], flush=True)
                torch.cuda.empty_cache()
            lines += decode.layers_table(layer_results, read_rate, decode_results)
        except Exception as exc:  # a secondary table: say why it is missing, keep the rest of the run
            note = f"layers table failed: {exc!r}"
            print(note, flush=True)
            lines += decode.layers_table(layer_results, read_rate, decode_results) + ["", note]
    if args.mode in ("all", "gqa"):
        gqa_results = []
        for case in gqa.CASES:
            gqa_results.append(gqa.run_case(case))
            r = gqa_results[-1]
            print(gqa.table([r])[-1] + (f"  # {r.note}" if r.note else ""), flush=True)
            torch.cuda.empty_cache()
        lines += ["", f"Short GQA queries, head dim {gqa.HEAD_DIM}, bf16: TFLOP/s over the visible (query, key) pairs "
                  "(bottom-right causal). auto: flashgen as dispatched (the Hopper kernel packs a group's query heads "
                  "into its tiles' rows where that fills them better); sm90 one head: the Hopper kernel with one head "
                  "per tile (FLASHGEN_SM90_PACK_GQA=off); sm80: the SM80-path kernel; FA2 / cuDNN: torch SDPA on K/V "
                  "expanded to every query head (untimed); err: max |out - fp32 reference| of auto", ""]
        lines += gqa.table(gqa_results)
        lines += [f"- gqa {r.case.label}: {r.note}" for r in gqa_results if r.note]
    if args.mode == "fp8" or (args.mode == "all" and fp8.available()):
        fp8_mm = fp8.fp8_matmul_tflops()
        print(f"fp8 matmul 8192^3 (torch._scaled_mm, same run): {fmt(fp8_mm)} TFLOP/s", flush=True)
        fp8_results = []
        for case in standard_cases(args.head_dims, args.seqlens, causal):
            fp8_results.append(fp8.run_case(case))
            r = fp8_results[-1]
            print(fp8.table([r], fp8_mm)[-1] + (f"  # {r.note}" if r.note else ""), flush=True)
            torch.cuda.empty_cache()
        lines += ["", f"FP8 forward (e4m3 q, k, v; bf16 out): TFLOP/s; fp8 matmul {fmt(fp8_mm)} TFLOP/s same run; "
                  "quantize ms = q, k, v per block of 128 rows (v into the PV layout), not in the TFLOP/s; rmse "
                  "relative to the fp32 reference of the bf16 inputs (batch 0, heads 0-1)", ""]
        lines += fp8.table(fp8_results, fp8_mm)
    print("\n".join([""] + lines))
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
