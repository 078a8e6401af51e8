"""Where a Hopper forward tile's time goes: per-tile timestamps from a build with the kernel's
trace compiled in (`CMAKE_ARGS=-DFLASHGEN_FWD_TRACE=ON pip install ...`;
kernels/sm90/sm90_fwd_trace.hpp), for standard-sweep shapes (batch 16384 / seqlen, heads
2048 / head_dim, bf16, or e4m3 with per-tensor scales).

Per consumer and tile (SM clock cycles, medians over the grid; "blocks" = the tile's key blocks):
  loop      first S issued -> last P V complete; per block = loop / blocks
  epilogue  last P V complete -> output and LSE stored
  start     previous tile's epilogue done -> this tile's first S issued (coordinates, Q, turn)
  tile      epilogue done -> next epilogue done: overhead = tile / per block - blocks
and per CTA the idle tail (the last CTA's end minus this one's), i.e. the wave quantization.

    python3 tools/fwd_trace.py --shapes 2048:128:0,4096:128:0 [--flags 0,1,2,4]

--flags: each shape once per value of FLASHGEN_FWD_TRACE_FLAGS (sm90_fwd_trace.hpp's TraceFlag,
bits added up): 1 = K/V loads skipped after each pipeline slot's first, 2 = the producer order
before session 39 (the first K before Q, the next tile claimed after the loads), 4 = Q loads
skipped after each buffer's first, 8 = the output stored by the threads, not by TMA. 1 and 4
are timing experiments with wrong results; 2 and 8 are earlier code paths (same-build baselines).
"""

import argparse
import os
import statistics

import torch

import flashgen

TILES, SLOTS, EVENTS, PRODUCER, BLOCKS = 64, 32, 8, 24, 30  # sm90_fwd_trace.hpp
TAKEN, QREADY, FIRST, KEYS_DONE, EPI_DONE, FINALIZED, O_STAGED = range(7)


def traced_call(seqlen, head_dim, causal, flags=0, dtype="bf16"):
    batch, heads = max(1, 16384 // seqlen), 2048 // head_dim
    q, k, v = (torch.randn(batch, seqlen, heads, head_dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    if dtype == "e4m3":  # per-tensor scales, as the FP8 benchmark's per-tensor column
        from flashgen import fp8

        q, k = fp8.quantize(q, granularity="tensor"), fp8.quantize(k, granularity="tensor")
        v = fp8.quantize(v, granularity="tensor", layout="pv")

        def call():
            return fp8.flash_attn_fp8_func(q, k, v, causal=causal)
    else:
        def call():
            return flashgen.flash_attn_func(q, k, v, causal=causal)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    trace = torch.zeros(sms * TILES * SLOTS + 2 * sms, dtype=torch.int64, device="cuda")
    for _ in range(5):
        call()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    os.environ["FLASHGEN_FWD_TRACE"] = str(trace.data_ptr())
    os.environ["FLASHGEN_FWD_TRACE_FLAGS"] = str(flags)
    try:
        start.record()
        call()
        end.record()
    finally:
        del os.environ["FLASHGEN_FWD_TRACE"], os.environ["FLASHGEN_FWD_TRACE_FLAGS"]
    torch.cuda.synchronize()
    ms = start.elapsed_time(end)
    flops = 4 * batch * heads * seqlen * seqlen * head_dim / (2 if causal else 1)
    return trace.cpu(), sms, ms, flops


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def analyse(trace, sms, ms, flops, label):
    tiles = trace[: sms * TILES * SLOTS].view(sms, TILES, SLOTS)
    edges = trace[sms * TILES * SLOTS:].view(sms, 2)
    grid = int((edges[:, 0] != 0).sum())
    loop, epi, start, per_block, overhead, q_wait, turn_wait, lead = [], [], [], [], [], [], [], []
    finalize, stage, store = [], [], []
    for cta in range(grid):
        rows = tiles[cta]
        for c in range(3):
            base = c * EVENTS
            prev_epi = None
            for k in range(TILES):
                ev = rows[k, base:base + EVENTS].tolist()
                blocks = int(rows[k, BLOCKS])
                if ev[FIRST] == 0 or ev[KEYS_DONE] == 0 or blocks <= 0:
                    prev_epi = None if ev[TAKEN] == 0 else prev_epi
                    continue
                t_loop = ev[KEYS_DONE] - ev[FIRST]
                loop.append(t_loop)
                per_block.append(t_loop / blocks)
                epi.append(ev[EPI_DONE] - ev[KEYS_DONE])
                if ev[FINALIZED] and ev[O_STAGED]:
                    finalize.append(ev[FINALIZED] - ev[KEYS_DONE])
                    stage.append(ev[O_STAGED] - ev[FINALIZED])
                    store.append(ev[EPI_DONE] - ev[O_STAGED])
                q_wait.append(ev[QREADY] - ev[TAKEN])
                turn_wait.append(ev[FIRST] - ev[QREADY])
                if rows[k, PRODUCER + QREADY] != 0:
                    lead.append(ev[FIRST] - int(rows[k, PRODUCER + TAKEN]))
                if prev_epi is not None:
                    start.append(ev[FIRST] - prev_epi)
                    overhead.append(((ev[EPI_DONE] - prev_epi) - t_loop) / (t_loop / blocks))
                prev_epi = ev[EPI_DONE]
    span = (edges[:grid, 1] - edges[:grid, 0]).tolist()
    tail = [max(span) - s for s in span]
    pb = median(per_block)
    print(f"{label}: {ms * 1e3:.1f} us, {flops / ms / 1e9:.0f} TFLOP/s, grid {grid}, "
          f"{len(loop)} consumer tiles traced")
    print(f"  cycles (median): per block {pb:.0f}, loop {median(loop):.0f}, epilogue {median(epi):.0f} "
          f"({median(epi) / pb:.2f} blocks), start gap {median(start):.0f} ({median(start) / pb:.2f} blocks), "
          f"q wait {median(q_wait):.0f}, turn wait {median(turn_wait):.0f}")
    if finalize:
        print(f"  epilogue parts (median): normalise {median(finalize):.0f}, O into shared memory (with barriers) "
              f"{median(stage):.0f}, global stores and LSE {median(store):.0f}")
    print(f"  per-tile overhead beyond the key loop: median {median(overhead):.2f} blocks, "
          f"p10 {quantile(overhead, 0.1):.2f}, p90 {quantile(overhead, 0.9):.2f}")
    print(f"  CTA span median {median(span):.0f} cycles; idle tail median {median(tail):.0f} "
          f"({sum(tail) / (max(span) * grid):.1%} of the grid's SM time); producer lead (published -> "
          f"first S) median {median(lead):.0f}")


def quantile(xs, q):
    if not xs:
        return float("nan")
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(q * len(ys)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="2048:128:0,4096:128:0", help="seqlen:head_dim:causal, comma-separated")
    parser.add_argument("--flags", default="0", help="FLASHGEN_FWD_TRACE_FLAGS values, comma-separated")
    parser.add_argument("--dtype", choices=("bf16", "e4m3"), default="bf16",
                        help="e4m3: the FP8 forward with per-tensor scales (flashgen.fp8)")
    args = parser.parse_args()
    for shape in args.shapes.split(","):
        seqlen, head_dim, causal = (int(x) for x in shape.split(":"))
        for flags in (int(f) for f in args.flags.split(",")):
            trace, sms, ms, flops = traced_call(seqlen, head_dim, bool(causal), flags, args.dtype)
            if int(trace[sms * TILES * SLOTS:].view(sms, 2)[:, 0].ne(0).sum()) == 0:
                print(f"{shape}: no trace recorded (a build without FLASHGEN_FWD_TRACE, or not the sm90 kernel)")
                break
            label = (f"{args.dtype} seqlen {seqlen} head_dim {head_dim} causal {causal}" +
                     (f" flags {flags}" if flags else ""))
            analyse(trace, sms, ms, flops, label)


if __name__ == "__main__":
    main()
