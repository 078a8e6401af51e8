"""Sustained backward timing: N back-to-back backward calls of each contender (flashgen, FA2 =
torch SDPA FLASH, cuDNN), each call between its own pair of CUDA events, so a clock that drops
under sustained load shows as calls getting slower (first / last ten against the median). With
--marks FILE, writes each contender's wall-clock window (name start end, epoch seconds) there, for
tools/gpu_power_trace.sh to match against its clock and power samples.

    python3 tools/bwd_sustained.py 8192:256:0 --calls 200 --marks out/marks.txt [--bench-timing]
Shapes follow the standard sweep: batch 16384 / seqlen, heads 2048 / head_dim, bf16.
"""

import argparse
import statistics
import time

import torch

from flashgen.bench.backward import BWD_FLOPS_FACTOR, attentions  # the benchmark's contenders
from flashgen.bench.sweep import Case
from flashgen.bench.timing import median_ms


def sustained(fn, calls):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(calls)]
    start = time.time()
    for begin, end in events:
        begin.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return start, time.time(), [b.elapsed_time(e) for b, e in events]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("case", help="seqlen:head_dim:causal")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--marks", help="write 'name start end' lines (epoch seconds) here")
    parser.add_argument("--bench-timing", action="store_true",
                        help="also time each contender with the benchmark's median_ms (bursts as it picks them, "
                             "then at least 4 calls a burst)")
    args = parser.parse_args()
    s, d, c = (int(x) for x in args.case.split(":"))
    causal = bool(c)
    case = Case(d, s, causal)
    b, h = case.batch, case.nheads
    flops = BWD_FLOPS_FACTOR * case.flops()
    q, k, v = case.qkv(requires_grad=True)
    dout = torch.randn_like(q)
    marks = []
    print(f"== s{s} d{d} causal {causal} (b {b}, h {h}), {args.calls} back-to-back backward calls: ms per call")
    for name, attn in attentions(causal).items():
        out = attn(q, k, v)
        start, end, ms = sustained(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True), args.calls)
        med = statistics.median(ms)
        first, last = statistics.median(ms[:10]), statistics.median(ms[-10:])
        print(f"  {name:8s} median {med:.3f} ({flops / med / 1e9:.0f} TFLOP/s), first ten {first:.3f}, "
              f"last ten {last:.3f}, min {min(ms):.3f}, max {max(ms):.3f}, window {end - start:.2f} s")
        marks.append(f"{name} {start:.3f} {end:.3f}")
        if args.bench_timing:  # the benchmark's own timer, then with bursts of at least 4 calls
            fn = lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)  # noqa: E731
            print(f"  {name:8s} bench timer {median_ms(fn):.3f} ms, bursts >= 4 calls {median_ms(fn, min_burst=4):.3f}")
        del out
        torch.cuda.empty_cache()
    if args.marks:
        with open(args.marks, "w") as f:
            f.write("\n".join(marks) + "\n")


if __name__ == "__main__":
    main()
