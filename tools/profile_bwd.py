"""Runs flashgen's backward (and a peer's: torch FLASH, or cuDNN) a few times on one shape, for ncu/nsys.

    ncu --kernel-name regex:bwd_kernel -c 1 --section WarpStateStats python3 tools/profile_bwd.py 4096 128 [causal]
    ncu --kernel-name regex:bprop -c 1 --set full python3 tools/profile_bwd.py 4096 128 --peer cudnn
"""

import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import flashgen

parser = argparse.ArgumentParser()
parser.add_argument("seqlen", type=int)
parser.add_argument("head_dim", type=int)
parser.add_argument("causal", nargs="?", default="")
parser.add_argument("--peer", choices=["flash", "cudnn"], default="flash")
parser.add_argument("--skip-ours", action="store_true", help="run the peer only (its kernel alone for ncu)")
args = parser.parse_args()
seqlen, head_dim, causal = args.seqlen, args.head_dim, args.causal == "causal"
batch, heads = max(1, 16384 // seqlen), 2048 // head_dim
q, k, v = (torch.randn(batch, seqlen, heads, head_dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
           for _ in range(3))
dout = torch.randn_like(q)
if not args.skip_ours:
    out = flashgen.flash_attn_func(q, k, v, causal=causal)
    for _ in range(3):
        torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
backend = SDPBackend.FLASH_ATTENTION if args.peer == "flash" else SDPBackend.CUDNN_ATTENTION
with sdpa_kernel(backend):
    ref = F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
for _ in range(3):
    torch.autograd.grad(ref, (q, k, v), dout.transpose(1, 2), retain_graph=True)
torch.cuda.synchronize()
