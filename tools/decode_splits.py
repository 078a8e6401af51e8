"""Decode time against the split count on a few shapes (bf16 dense cache, GQA 32/8, head dim
128, graph replay): checks the automatic choice (num_splits=0) against its neighbours."""

import torch

import flashgen
from flashgen.bench.decode import HEAD_DIM, HEADS_KV, HEADS_Q, _graph_ms


def main():
    for batch, seqlen_k in ((1, 4096), (1, 32768), (4, 16384), (8, 8192), (16, 8192)):
        q = torch.randn(batch, 1, HEADS_Q, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(batch, seqlen_k, HEADS_KV, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        lengths = torch.full((batch,), seqlen_k, dtype=torch.int32, device="cuda")
        nbytes = 2 * k.numel() * 2
        cells = []
        for splits in (0, 1, 2, 4, 8, 16, 32):
            ms = _graph_ms(lambda: flashgen.flash_attn_with_kvcache(q, k, v, cache_seqlens=lengths, num_splits=splits))
            cells.append(f"{splits or 'auto'}: {nbytes / ms / 1e9:.2f}")
        print(f"batch {batch} seqlen_k {seqlen_k} TB/s by splits: " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
