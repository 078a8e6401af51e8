"""Times the decode kernels on one shape under variations (dense / paged, bf16 / FP8 cache, with
and without scales), each replayed from a CUDA graph: a quick way to see what a change moved.
Usage: python tools/decode_probe.py [batch] [seqlen_k] [page_size]"""

import sys

import torch

import flashgen
from flashgen.bench.decode import HEAD_DIM, HEADS_KV, HEADS_Q, _graph_ms


def main():
    batch, seqlen_k, page = (int(a) for a in (sys.argv[1:] + ["64", "8192", "16"][len(sys.argv) - 1:]))
    q = torch.randn(batch, 1, HEADS_Q, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    lengths = torch.full((batch,), seqlen_k, dtype=torch.int32, device="cuda")
    pages = batch * seqlen_k // page
    table = torch.randperm(pages, device="cuda").view(batch, -1).int()
    for kv_dtype, nbytes in ((torch.bfloat16, 2), (torch.float8_e4m3fn, 1)):
        dense_k = torch.randn(batch, seqlen_k, HEADS_KV, HEAD_DIM, device="cuda").to(kv_dtype)
        dense_v = torch.randn_like(dense_k, dtype=torch.float32).to(kv_dtype)
        paged_k = dense_k.view(pages, page, HEADS_KV, HEAD_DIM)
        paged_v = dense_v.view(pages, page, HEADS_KV, HEAD_DIM)
        fp8 = kv_dtype == torch.float8_e4m3fn
        head_scale = torch.full((HEADS_KV,), 0.01, device="cuda")
        page_scale = torch.full((pages, HEADS_KV), 0.01, device="cuda")
        cases = {"dense": dict(k_cache=dense_k, v_cache=dense_v),
                 f"paged{page}": dict(k_cache=paged_k, v_cache=paged_v, block_table=table)}
        if fp8:
            cases["dense+head scales"] = dict(cases["dense"], k_descale=head_scale, v_descale=head_scale)
            cases[f"paged{page}+page scales"] = dict(cases[f"paged{page}"], k_descale=page_scale, v_descale=page_scale)
        total = 2 * batch * seqlen_k * HEADS_KV * HEAD_DIM * nbytes
        for name, kw in cases.items():
            ms = _graph_ms(lambda: flashgen.flash_attn_with_kvcache(q, cache_seqlens=lengths, **kw))
            print(f"{str(kv_dtype):>22} {name:>22}: {ms * 1e3:8.1f} us {total / ms / 1e9:6.2f} TB/s")


if __name__ == "__main__":
    main()
