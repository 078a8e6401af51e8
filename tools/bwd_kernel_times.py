"""Per-kernel GPU time of one backward call, flashgen's against a torch SDPA backend's (FLASH,
i.e. FA2, or cuDNN), from torch.profiler: where the gap between the two lies (main kernel, dQ
conversion, preprocess, memsets).

    python3 tools/bwd_kernel_times.py 2048:64:0 2048:128:1 ...   (seqlen:head_dim:causal)
    FLASHGEN_BWD_BACKEND=sm90 python3 tools/bwd_kernel_times.py --peer cudnn 2048:64:0
Shapes follow the standard sweep: batch 16384 / seqlen, heads 2048 / head_dim, bf16.
"""

import argparse
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

import flashgen

ITERS = 10


def kernel_times(fn):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(ITERS):
            fn()
        torch.cuda.synchronize()
    times = defaultdict(float)
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            times[e.name[:60]] += e.device_time_total / ITERS
    return times


def case(spec, peer_name):
    s, d, c = (int(x) for x in spec.split(":"))
    causal = bool(c)
    b, h = max(1, 16384 // s), 2048 // d
    q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    dout = torch.randn_like(q)
    out = flashgen.flash_attn_func(q, k, v, causal=causal)
    ours = kernel_times(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True))
    qt, kt, vt = (t.detach().transpose(1, 2).requires_grad_() for t in (q, k, v))
    backend = SDPBackend.FLASH_ATTENTION if peer_name == "FA2" else SDPBackend.CUDNN_ATTENTION
    with sdpa_kernel(backend):
        ref = F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
    dref = dout.transpose(1, 2)
    peer = kernel_times(lambda: torch.autograd.grad(ref, (qt, kt, vt), dref, retain_graph=True))
    print(f"== s{s} d{d} causal {causal} (b {b}, h {h}): microseconds per call")
    for name, t in (("flashgen", ours), (peer_name, peer)):
        total = sum(t.values())
        print(f"  {name}: total {total:.1f}")
        for k_, v_ in sorted(t.items(), key=lambda kv: -kv[1]):
            print(f"    {v_:9.1f}  {k_}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("cases", nargs="+", help="seqlen:head_dim:causal")
    parser.add_argument("--peer", choices=["flash", "cudnn"], default="flash")
    args = parser.parse_args()
    for spec in args.cases:
        case(spec, "FA2" if args.peer == "flash" else "cuDNN")


if __name__ == "__main__":  # tools/gqa_profile.py imports kernel_times
    main()
