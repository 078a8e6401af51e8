"""Host time of one forward and one backward call of each contender (flashgen, FA2 = torch SDPA
FLASH, cuDNN) while the GPU is kept busy, so that no call waits on the GPU: what a call costs
the CPU before its kernels are queued. The benchmark's timer starts each sample on an idle GPU,
so a long call's sample includes this time once per burst. With --profile, the flashgen
backward's top Python functions by own time (cProfile over the same calls); with --breakdown,
the wall time of its parts (flashgen.ops' prepare_fixed / run_backward / the attn_bwd op, the
library's bwd_workspace / bwd) timed by wrappers, the engine on the calling thread.

    python3 tools/host_overhead.py 4096:128:0 [--calls 20] [--profile] [--breakdown]
Shapes follow the standard sweep: batch 16384 / seqlen, heads 2048 / head_dim, bf16.
"""

import argparse
import collections
import cProfile
import pstats
import time

import torch

from flashgen.bench.backward import attentions
from flashgen.bench.sweep import Case


def host_ms(fn, calls, profiler=None):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    torch.cuda._sleep(2_000_000_000)  # ~1 s of GPU time queued ahead of the calls
    if profiler is not None:
        profiler.enable()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    if profiler is not None:
        profiler.disable()
    torch.cuda.synchronize()
    return elapsed / calls * 1e3


def breakdown(q, k, v, dout, calls, causal):
    """Microseconds per flashgen backward call spent in each wrapped part."""
    import flashgen._launch as launch
    import flashgen.ops as ops

    totals = collections.defaultdict(float)

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] += time.perf_counter() - start
        return wrapper

    class Library:  # the extension module, its bwd / bwd_workspace timed
        def __init__(self, lib):
            self._lib = lib

        def __getattr__(self, name):
            attr = getattr(self._lib, name)
            return timed(f"library {name}", attr) if name in ("bwd", "bwd_workspace") else attr

    proxy = Library(launch.lib())
    launch.lib = lambda: proxy
    launch._fill_forward_args = timed("_fill_forward_args", launch._fill_forward_args)
    ops.prepare_fixed = timed("prepare_fixed", ops.prepare_fixed)
    ops.run_backward = timed("run_backward (all of it)", ops.run_backward)
    ops.attn_bwd = timed("attn_bwd op (all of it)", ops.attn_bwd)
    out = attentions(causal)["flashgen"](q, k, v)
    with torch.autograd.set_multithreading_enabled(False):
        total = host_ms(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True), calls)
    print(f"  flashgen backward on the calling thread {total * 1e3:.0f} us per call; parts (us per call, "
          "warm-up calls included in the count):")
    for name, seconds in totals.items():
        print(f"    {name:28s} {seconds / (calls + 3) * 1e6:8.1f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("case", help="seqlen:head_dim:causal")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--breakdown", action="store_true")
    args = parser.parse_args()
    s, d, c = (int(x) for x in args.case.split(":"))
    case = Case(d, s, bool(c))
    b, h = case.batch, case.nheads
    q, k, v = case.qkv(requires_grad=True)
    dout = torch.randn_like(q)
    print(f"== s{s} d{d} causal {bool(c)} (b {b}, h {h}): host ms per call, GPU busy")
    for name, attn in attentions(bool(c)).items():
        with torch.no_grad():
            fwd = host_ms(lambda: attn(q, k, v), args.calls)
        out = attn(q, k, v)
        profiler = cProfile.Profile() if args.profile and name == "flashgen" else None
        bwd = host_ms(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True), args.calls)
        print(f"  {name:8s} forward {fwd:.3f} ms, backward (autograd.grad) {bwd:.3f} ms")
        if profiler is not None:  # the engine on this thread, so that cProfile sees the backward's Python
            with torch.autograd.set_multithreading_enabled(False):
                bwd = host_ms(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True), args.calls,
                              profiler)
            print(f"  {name:8s} backward on the calling thread {bwd:.3f} ms, profiled:")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(18)
        del out
        torch.cuda.empty_cache()
    if args.breakdown:
        breakdown(q, k, v, dout, args.calls, bool(c))


if __name__ == "__main__":
    main()
