"""Decode time against the split count on a few shapes (GQA 32/8, head dim 128, graph replay):
checks the automatic choice (num_splits=0) against its neighbours. --cache picks the cache: a
dense bf16 one (default), a bf16 one in pages of 16, or an FP8 one in pages of 16 with
per-(page, kv head) scales (the benchmark's fp8_paged16; TB/s of its own bytes). --combine
runs each row under these FLASHGEN_DECODE_COMBINE settings (kernel: the combine kernel; auto:
splits up to 16 combine in a thread-block cluster on Hopper)."""

import argparse
import os

import torch

import flashgen
from flashgen.bench.decode import HEAD_DIM, HEADS_KV, HEADS_Q, _fp8_pages, _graph_ms, _paged


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", choices=("dense", "paged16", "fp8_paged16"), default="dense")
    parser.add_argument("--splits", default="0,1,2,4,8,16,32,64")
    parser.add_argument("--combine", default="kernel", help="comma-separated FLASHGEN_DECODE_COMBINE settings")
    parser.add_argument("--shapes", default="1x4096,1x32768,4x16384,8x8192,16x8192",
                        help="comma-separated BATCHxSEQLEN_K")
    args = parser.parse_args()
    for batch, seqlen_k in (tuple(int(x) for x in shape.split("x")) for shape in args.shapes.split(",")):
        q = torch.randn(batch, 1, HEADS_Q, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(batch, seqlen_k, HEADS_KV, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        lengths = torch.full((batch,), seqlen_k, dtype=torch.int32, device="cuda")
        extra = {}
        if args.cache != "dense":
            k, v, extra["block_table"] = _paged(k, v, 16)
            if args.cache == "fp8_paged16":
                k, v, scales = _fp8_pages(k, v)
                extra.update(k_descale=scales[0], v_descale=scales[1])
        nbytes = 2 * k.numel() * k.element_size()
        for combine in args.combine.split(","):
            os.environ["FLASHGEN_DECODE_COMBINE"] = combine
            cells = []
            for splits in (int(x) for x in args.splits.split(",")):
                ms = _graph_ms(lambda: flashgen.flash_attn_with_kvcache(q, k, v, cache_seqlens=lengths,
                                                                        num_splits=splits, **extra))
                cells.append(f"{splits or 'auto'}: {nbytes / ms / 1e9:.2f}")
            print(f"{args.cache} combine {combine} batch {batch} seqlen_k {seqlen_k} TB/s by splits: " +
                  ", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
