"""Runs flashgen's backward (and torch FLASH's) a few times on one shape, for ncu/nsys.

    ncu --kernel-name regex:bwd_kernel -c 1 --section WarpStateStats python3 tools/profile_bwd.py 4096 128 [causal]
"""

import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import flashgen

seqlen, head_dim = int(sys.argv[1]), int(sys.argv[2])
causal = len(sys.argv) > 3 and sys.argv[3] == "causal"
batch, heads = max(1, 16384 // seqlen), 2048 // head_dim
q, k, v = (torch.randn(batch, seqlen, heads, head_dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
           for _ in range(3))
dout = torch.randn_like(q)
out = flashgen.flash_attn_func(q, k, v, causal=causal)
for _ in range(3):
    torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
    ref = F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
for _ in range(3):
    torch.autograd.grad(ref, (q, k, v), dout.transpose(1, 2), retain_graph=True)
torch.cuda.synchronize()
