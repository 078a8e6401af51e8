"""Per-kernel GPU time of one backward call, flashgen's against torch SDPA's FLASH backend (FA2),
from torch.profiler: where the gap between the two lies (main kernel, dQ conversion,
preprocess, memsets).

    python3 tools/bwd_kernel_times.py 2048:64:0 2048:128:1 ...   (seqlen:head_dim:causal)
Shapes follow the standard sweep: batch 16384 / seqlen, heads 2048 / head_dim, bf16.
"""

import sys
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


def case(spec):
    s, d, c = (int(x) for x in spec.split(":"))
    causal = bool(c)
    b, h = max(1, 16384 // s), 2048 // d
    q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    dout = torch.randn_like(q)
    out = flashgen.flash_attn_func(q, k, v, causal=causal)
    ours = kernel_times(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True))
    qt, kt, vt = (t.detach().transpose(1, 2).requires_grad_() for t in (q, k, v))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        ref = F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
    dref = dout.transpose(1, 2)
    peer = kernel_times(lambda: torch.autograd.grad(ref, (qt, kt, vt), dref, retain_graph=True))
    print(f"== s{s} d{d} causal {causal} (b {b}, h {h}): microseconds per call")
    for name, t in (("flashgen", ours), ("FA2", peer)):
        total = sum(t.values())
        print(f"  {name}: total {total:.1f}")
        for k_, v_ in sorted(t.items(), key=lambda kv: -kv[1]):
            print(f"    {v_:9.1f}  {k_}")


for spec in sys.argv[1:]:
    case(spec)
