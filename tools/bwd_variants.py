"""Times one backward call (autograd.grad after one forward) of flashgen for the plain, dropout
and softcap variants at one shape: b = 4, s = 4096, h = 16, head dim 128, bf16, with the
benchmark's timing (flashgen.bench.timing.median_ms) and FLOP convention. The standard benchmark
times plain and causal only; session 17 used this for same-call A/Bs of the SM80 backward
(FLASHGEN_BWD_BACKEND=sm80, the two builds on PYTHONPATH in turn). Needs the bwd kernels bf16
head dim 128 plain / dropout / softcap and their forwards.

    python3 tools/bwd_variants.py
"""

import torch

import flashgen
from flashgen.bench.backward import BWD_FLOPS_FACTOR
from flashgen.bench.timing import median_ms

torch.manual_seed(0)
b, s, h, d = 4, 4096, 16, 128
flops = BWD_FLOPS_FACTOR * 4 * b * h * s * s * d
results = []
for name, options in (("plain", {}), ("dropout0.1", {"dropout_p": 0.1}), ("softcap30", {"softcap": 30.0})):
    q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    out = flashgen.flash_attn_func(q, k, v, **options)
    dout = torch.randn_like(out)
    ms = median_ms(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True))
    results.append(f"{name} {ms:.3f} ms {flops / ms / 1e9:.0f} TFLOP/s")
print(" | ".join(results))
