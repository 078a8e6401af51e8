"""Where the time of a short-query GQA forward goes (bench/NOTES.md session 36: 1 x 64 / 8k takes
twice as long as 8 x 16 / 8k with the same FLOPs). For each shape, pack setting and num_splits:
the benchmark's burst time per call, the host's time per call while the GPU is kept busy, and
each kernel's GPU time (torch.profiler), so that host cost, the split / combine plan and the
attention kernel's own time separate; burst and host time again with every call validated in
full (the launch-argument cache, flashgen._args_cache.FWD, bypassed).

    python3 tools/gqa_profile.py [--splits 0,1,2,4,8] [--shapes 1x64x8192,8x16x8192]
Shapes: batch x seqlen_q x seqlen_k, GQA 64 / 8, head dim 128, bf16, causal (bottom-right).
"""

import argparse
import contextlib
import os
import time

import torch

import flashgen
from flashgen.bench.timing import median_ms

from bwd_kernel_times import kernel_times  # tools/ is on sys.path when run as a script


def kernel_us(fn):
    """GPU time per call of each kernel name (microseconds), largest first."""
    return dict(sorted(kernel_times(fn).items(), key=lambda kv: -kv[1]))


@contextlib.contextmanager
def full_path():
    """Every call validated and filled in full (flashgen._args_cache.FWD bypassed)."""
    from flashgen._args_cache import FWD

    saved = FWD.lookup
    FWD.lookup = lambda key: None
    try:
        yield
    finally:
        FWD.lookup = saved


def host_us(fn, calls=50):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    torch.cuda._sleep(500_000_000)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / calls * 1e6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--splits", default="0,1,2,4,8,16")
    parser.add_argument("--shapes", default="1x64x8192,8x16x8192")
    parser.add_argument("--pack", default="auto,off")
    args = parser.parse_args()
    for shape in args.shapes.split(","):
        b, sq, sk = (int(x) for x in shape.split("x"))
        q = torch.randn(b, sq, 64, 128, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(b, sk, 8, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        out = torch.empty_like(q)
        offset = sk - sq
        pairs = sum(min(sk, offset + i + 1) for i in range(sq))
        flops = 4.0 * b * 64 * pairs * 128
        qt, kt, vt = q.transpose(1, 2), *(t.repeat_interleave(8, dim=2).transpose(1, 2) for t in (k, v))
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.nn.attention.bias import causal_lower_right
        mask = causal_lower_right(sq, sk)
        for name, backend in (("FA2", SDPBackend.FLASH_ATTENTION), ("cuDNN", SDPBackend.CUDNN_ATTENTION)):
            def peer():
                with sdpa_kernel(backend):
                    return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask)
            try:
                ms = median_ms(peer)
                kernels = kernel_us(peer)
                print(f"{shape} {name}: burst {ms * 1e3:.1f} us ({flops / (ms * 1e-3) / 1e12:.0f} TFLOP/s), "
                      f"kernels {sum(kernels.values()):.1f} us | " + "; ".join(f"{n} {t:.1f}" for n, t in kernels.items()),
                      flush=True)
            except Exception as err:  # noqa: BLE001
                print(f"{shape} {name}: {str(err).splitlines()[0][:100]}")
        for pack in args.pack.split(","):
            os.environ["FLASHGEN_SM90_PACK_GQA"] = pack
            for splits in (int(s) for s in args.splits.split(",")):
                def fn():
                    return flashgen.flash_attn_func(q, k, v, causal=True, num_splits=splits, out=out)
                ms = median_ms(fn)
                kernels = kernel_us(fn)
                gpu = sum(kernels.values())
                host = host_us(fn)
                with full_path():
                    full_ms = median_ms(fn)
                    full_host = host_us(fn)
                print(f"{shape} pack={pack} splits={splits}: burst {ms * 1e3:.1f} us "
                      f"({flops / (ms * 1e-3) / 1e12:.0f} TFLOP/s), kernels {gpu:.1f} us, host {host:.1f} us; "
                      f"uncached: burst {full_ms * 1e3:.1f} us, host {full_host:.1f} us | "
                      + "; ".join(f"{name} {t:.1f}" for name, t in kernels.items()), flush=True)
    os.environ.pop("FLASHGEN_SM90_PACK_GQA", None)


if __name__ == "__main__":
    main()
