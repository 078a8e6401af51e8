"""One decode configuration called a few times, for profilers (ncu --kernel-name regex:decode).
Usage: python tools/decode_one.py {bf16,fp8} {dense,paged} [batch] [seqlen_k] [num_splits]
(num_splits 0, the default: the automatic count)."""

import sys

import torch

import flashgen
from flashgen.bench.decode import HEAD_DIM, HEADS_KV, HEADS_Q


def main():
    kind, layout = sys.argv[1], sys.argv[2]
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    seqlen_k = int(sys.argv[4]) if len(sys.argv) > 4 else 8192
    num_splits = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    dtype = torch.float8_e4m3fn if kind == "fp8" else torch.bfloat16
    q = torch.randn(batch, 1, HEADS_Q, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    lengths = torch.full((batch,), seqlen_k, dtype=torch.int32, device="cuda")
    kw = {}
    if layout == "paged":
        page = 16
        k = torch.randn(batch * seqlen_k // page, page, HEADS_KV, HEAD_DIM, device="cuda").to(dtype)
        kw["block_table"] = torch.randperm(k.shape[0], device="cuda").view(batch, -1).int()
    else:
        k = torch.randn(batch, seqlen_k, HEADS_KV, HEAD_DIM, device="cuda").to(dtype)
    v = torch.randn_like(k, dtype=torch.float32).to(dtype)
    flashgen.config.check_device_inputs = False
    for _ in range(4):
        flashgen.flash_attn_with_kvcache(q, k, v, cache_seqlens=lengths, num_splits=num_splits, **kw)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
