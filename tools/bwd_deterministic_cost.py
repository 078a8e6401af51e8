"""Backward time with and without deterministic=True on one shape (bench/NOTES.md, v2 bwd).

    python3 tools/bwd_deterministic_cost.py 4096 128 [causal]
"""

import sys

import torch

import flashgen
from flashgen.bench.timing import median_ms

seqlen, head_dim = int(sys.argv[1]), int(sys.argv[2])
causal = len(sys.argv) > 3 and sys.argv[3] == "causal"
batch, heads = max(1, 16384 // seqlen), 2048 // head_dim
q, k, v = (torch.randn(batch, seqlen, heads, head_dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
           for _ in range(3))
dout = torch.randn_like(q)
for deterministic in (False, True):
    out = flashgen.flash_attn_func(q, k, v, causal=causal, deterministic=deterministic)
    ms = median_ms(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True))
    print(f"seqlen {seqlen} hdim {head_dim} causal {causal} deterministic {deterministic}: {ms:.3f} ms")
