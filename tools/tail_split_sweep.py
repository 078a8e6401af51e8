"""The Hopper backward's tail split against its piece count, in one process: for each standard
sweep case (batch 16384 / seqlen, heads 2048 / head_dim, bf16, non-causal) the backward call's
median time (the benchmark's timer) with FLASHGEN_BWD_TAIL_SPLIT=off, auto and each forced piece
count, the settings alternating over the rounds so that drift falls on all. Samples hold at least
--min-burst back-to-back calls, so that they time the kernels rather than the host's first launch.

    python3 tools/tail_split_sweep.py 2048:128 8192:64 --pieces 2,3,4,6,8,16 --rounds 3
"""

import argparse
import os
import statistics

import torch

import flashgen
from flashgen.bench.backward import BWD_FLOPS_FACTOR
from flashgen.bench.sweep import Case
from flashgen.bench.timing import median_ms


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("cases", nargs="+", help="seqlen:head_dim")
    parser.add_argument("--pieces", default="2,3,4,6,8,16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-burst", type=int, default=4,
                        help="calls per timed sample at least (one-call samples at 8k-16k were host-bound)")
    args = parser.parse_args()
    settings = ["off", "auto"] + args.pieces.split(",")
    print("| case | " + " | ".join(settings) + " | best / off |")
    print("| --- " * (len(settings) + 2) + "|")
    for text in args.cases:
        s, d = (int(x) for x in text.split(":"))
        case = Case(d, s, False)
        q, k, v = case.qkv(requires_grad=True)
        dout = torch.randn_like(q)
        out = flashgen.flash_attn_func(q, k, v)
        times = {name: [] for name in settings}
        for _ in range(args.rounds):
            for name in settings:
                os.environ["FLASHGEN_BWD_TAIL_SPLIT"] = name
                times[name].append(median_ms(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True),
                                             budget_ms=150, min_burst=args.min_burst))
        med = {name: statistics.median(t) for name, t in times.items()}
        flops = BWD_FLOPS_FACTOR * case.flops()
        best = min(med, key=med.get)
        print(f"| {d} / {s} | " + " | ".join(f"{med[n]:.3f} ms ({flops / med[n] / 1e9:.0f})" for n in settings)
              + f" | {best}: {med['off'] / med[best]:.3f} |")
    os.environ.pop("FLASHGEN_BWD_TAIL_SPLIT", None)


if __name__ == "__main__":
    main()
