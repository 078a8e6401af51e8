"""One causal forward call each of flashgen and torch SDPA's FLASH backend, for profiling with
ncu (tools/gpu_check.sh does not run this; see bench/NOTES.md for how it was used)."""

import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import flashgen

seqlen = int(sys.argv[1]) if len(sys.argv) > 1 else 512
head_dim = int(sys.argv[2]) if len(sys.argv) > 2 else 64
batch, heads = 16384 // seqlen, 2048 // head_dim
q, k, v = (torch.randn(batch, seqlen, heads, head_dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
for _ in range(3):
    flashgen.flash_attn_func(q, k, v, causal=True)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
torch.cuda.synchronize()
