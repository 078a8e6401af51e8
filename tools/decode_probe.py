"""Times the decode kernels on a few shapes under variations (dense / paged, bf16 / FP8 cache,
with and without scales, token-major or head-major cache memory), each replayed from a CUDA
graph: a quick way to see what a change moved.

Layouts: "nhd" is flash_attn's (entries, rows, heads, head_dim) memory, where one key of one
KV head is a run of head_dim * element bytes (128 bytes for FP8 at head dim 128) and the next
key of that head lies heads_kv runs further; "hnd" (FlashInfer's other paged layout) keeps
each head's keys of an entry (a page, or a dense batch entry) contiguous. Both are passed as
the same logical (entries, rows, heads, head_dim) shape, hnd as a permuted view.

    python tools/decode_probe.py [--shapes 64x8192] [--page 16] [--layouts nhd,hnd] [--quick]
--quick: only the unscaled dense and paged cases.
"""

import argparse

import torch

import flashgen
from flashgen.bench.decode import HEAD_DIM, HEADS_KV, HEADS_Q, _graph_ms


def cache(entries: int, rows: int, dtype: torch.dtype, layout: str) -> torch.Tensor:
    """A (entries, rows, HEADS_KV, HEAD_DIM) cache of random values in the given memory layout."""
    if layout == "nhd":
        return torch.randn(entries, rows, HEADS_KV, HEAD_DIM, device="cuda").to(dtype)
    if layout == "hnd":
        return torch.randn(entries, HEADS_KV, rows, HEAD_DIM, device="cuda").to(dtype).permute(0, 2, 1, 3)
    raise ValueError(f"layout {layout!r}: expected nhd or hnd")


def probe(batch: int, seqlen_k: int, page: int, layout: str, quick: bool) -> None:
    q = torch.randn(batch, 1, HEADS_Q, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    lengths = torch.full((batch,), seqlen_k, dtype=torch.int32, device="cuda")
    pages = batch * seqlen_k // page
    table = torch.randperm(pages, device="cuda").view(batch, -1).int()
    for kv_dtype, nbytes in ((torch.bfloat16, 2), (torch.float8_e4m3fn, 1)):
        dense_k, dense_v = cache(batch, seqlen_k, kv_dtype, layout), cache(batch, seqlen_k, kv_dtype, layout)
        paged_k, paged_v = cache(pages, page, kv_dtype, layout), cache(pages, page, kv_dtype, layout)
        fp8 = kv_dtype == torch.float8_e4m3fn
        head_scale = torch.full((HEADS_KV,), 0.01, device="cuda")
        page_scale = torch.full((pages, HEADS_KV), 0.01, device="cuda")
        cases = {"dense": dict(k_cache=dense_k, v_cache=dense_v),
                 f"paged{page}": dict(k_cache=paged_k, v_cache=paged_v, block_table=table)}
        if fp8 and not quick:
            cases["dense+head scales"] = dict(cases["dense"], k_descale=head_scale, v_descale=head_scale)
            cases[f"paged{page}+page scales"] = dict(cases[f"paged{page}"], k_descale=page_scale, v_descale=page_scale)
        total = 2 * batch * seqlen_k * HEADS_KV * HEAD_DIM * nbytes
        for name, kw in cases.items():
            ms = _graph_ms(lambda: flashgen.flash_attn_with_kvcache(q, cache_seqlens=lengths, **kw))
            print(f"{batch:>4} x {seqlen_k:<6} {layout} {str(kv_dtype):>20} {name:>22}: {ms * 1e3:8.1f} us "
                  f"{total / ms / 1e9:6.2f} TB/s", flush=True)
        del dense_k, dense_v, paged_k, paged_v


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="64x8192", help="batch x seqlen_k, comma-separated")
    parser.add_argument("--page", type=int, default=16)
    parser.add_argument("--layouts", default="nhd")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for shape in args.shapes.split(","):
        batch, seqlen_k = (int(x) for x in shape.split("x"))
        for layout in args.layouts.split(","):
            probe(batch, seqlen_k, args.page, layout, args.quick)


if __name__ == "__main__":
    main()
