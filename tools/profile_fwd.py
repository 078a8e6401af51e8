"""Forward calls of flashgen and torch SDPA's FLASH and CUDNN backends on one standard-sweep
shape, for profiling with ncu (tools/gpu_check.sh does not run this; bench/NOTES.md says how
it was used). Usage: profile_fwd.py [seqlen] [head_dim] [causal 0/1] [fp8 0/1/block/tensor];
fp8=1 or block adds flashgen's FP8 kernel with per-block scales on the same inputs, tensor with
one scale per tensor."""

import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import flashgen

seqlen = int(sys.argv[1]) if len(sys.argv) > 1 else 512
head_dim = int(sys.argv[2]) if len(sys.argv) > 2 else 64
causal = bool(int(sys.argv[3])) if len(sys.argv) > 3 else True
fp8_arg = sys.argv[4] if len(sys.argv) > 4 else "0"
if fp8_arg not in ("0", "1", "block", "tensor"):
    sys.exit(f"profile_fwd.py: fp8 must be 0, 1, block or tensor, not {fp8_arg!r}")
with_fp8 = fp8_arg != "0"
granularity = "tensor" if fp8_arg == "tensor" else "block"
batch, heads = max(1, 16384 // seqlen), 2048 // head_dim
q, k, v = (torch.randn(batch, seqlen, heads, head_dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
if with_fp8:
    from flashgen import fp8

    q8, k8 = fp8.quantize(q, granularity=granularity), fp8.quantize(k, granularity=granularity)
    v8 = fp8.quantize(v, granularity=granularity, layout="pv")
for _ in range(3):
    flashgen.flash_attn_func(q, k, v, causal=causal)
    if with_fp8:
        fp8.flash_attn_fp8_func(q8, k8, v8, causal=causal)
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION):
        with sdpa_kernel(backend):
            F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal)
torch.cuda.synchronize()
