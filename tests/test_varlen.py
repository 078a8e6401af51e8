"""GPU tests of flash_attn_varlen_func against per-sequence references."""

import pytest
import torch

import flashgen

from conftest import requires_gpu
from gpu_common import kernels, one_per_head_dims
from reference import TORCH_DTYPES, assert_close_to_reference, attention_ref

pytestmark = [requires_gpu, pytest.mark.gpu]


def packed(lengths, h, d, dtype):
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32, device="cuda")
    cu[1:] = torch.tensor(lengths, device="cuda").cumsum(0)
    return torch.randn(sum(lengths), h, d, device="cuda", dtype=dtype), cu


@pytest.mark.parametrize("spec", kernels(), ids=lambda s: s.name)
def test_varlen_matches_per_sequence_reference(spec):
    dtype = TORCH_DTYPES[spec.dtype]
    lens_q = [1, 17, 113, 0, 239, 64]
    lens_k = [1, 203, 113, 5, 239, 1]
    h, hkv = 4, 2
    q, cu_q = packed(lens_q, h, spec.head_dim_qk, dtype)
    k, cu_k = packed(lens_k, hkv, spec.head_dim_qk, dtype)
    v = torch.randn(k.shape[0], hkv, spec.head_dim_v, device="cuda", dtype=dtype)
    for options in ({}, {"window_size": (32, 8)}, {"sinks": torch.randn(h, device="cuda"), "num_splits": 3}):
        out, lse = flashgen.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), causal=spec.causal,
                                                   return_lse=True, **options)
        ref_options = {("window" if key == "window_size" else key): val for key, val in options.items()
                       if key != "num_splits"}
        for i, (lq, lk) in enumerate(zip(lens_q, lens_k)):
            if lq == 0:
                continue
            qs = q[cu_q[i]:cu_q[i + 1]].unsqueeze(0)
            ks, vs = k[cu_k[i]:cu_k[i + 1]].unsqueeze(0), v[cu_k[i]:cu_k[i + 1]].unsqueeze(0)
            assert_close_to_reference(out[cu_q[i]:cu_q[i + 1]].unsqueeze(0), qs, ks, vs, causal=spec.causal,
                                      **ref_options)
            _, lse_ref = attention_ref(qs, ks, vs, causal=spec.causal, **ref_options)
            torch.testing.assert_close(lse[:, cu_q[i]:cu_q[i + 1]], lse_ref[0], atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("spec", one_per_head_dims(kernels(paged=True)), ids=lambda s: s.name)
def test_varlen_over_a_paged_cache(spec):
    # The sm90 paged kernel reads whole 128-key blocks (64 at head dim 256) from one page.
    check_varlen_over_paged_cache(spec, 16 if spec.arch == "sm80" else 128, [3, 1, 40], [50, 1, 300], h=4, hkv=4)


def check_varlen_over_paged_cache(spec, page, lens_q, lens_k, h, hkv):
    """Packed queries over a paged cache (pages in random order) against each sequence's reference."""
    dtype = TORCH_DTYPES[spec.dtype]
    q, cu_q = packed(lens_q, h, spec.head_dim_qk, dtype)
    cu_k = torch.tensor([0, *torch.tensor(lens_k).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    batch, max_pages = len(lens_k), (max(lens_k) + page - 1) // page
    num_pages = batch * max_pages + 5
    k_cache = torch.randn(num_pages, page, hkv, spec.head_dim_qk, device="cuda", dtype=dtype)
    v_cache = torch.randn(num_pages, page, hkv, spec.head_dim_v, device="cuda", dtype=dtype)
    block_table = torch.randperm(num_pages, device="cuda")[: batch * max_pages].view(batch, max_pages).int()
    out = flashgen.flash_attn_varlen_func(q, k_cache, v_cache, cu_q, cu_k, max(lens_q), max(lens_k),
                                          causal=spec.causal, block_table=block_table)
    for i, lk in enumerate(lens_k):
        rows = torch.arange(lk, device="cuda")
        pages = block_table[i, rows // page].long()
        ks = k_cache[pages, rows % page].unsqueeze(0)
        vs = v_cache[pages, rows % page].unsqueeze(0)
        assert_close_to_reference(out[cu_q[i]:cu_q[i + 1]].unsqueeze(0), q[cu_q[i]:cu_q[i + 1]].unsqueeze(0), ks, vs,
                                  causal=spec.causal)


def test_varlen_rejects_inconsistent_offsets():
    spec = kernels()[0]
    dtype = TORCH_DTYPES[spec.dtype]
    q, cu = packed([5, 7], 2, spec.head_dim_qk, dtype)
    k, v = q.clone(), q.clone()
    with pytest.raises(ValueError, match="longer than max_seqlen"):
        flashgen.flash_attn_varlen_func(q, k, v, cu, cu, 6, 7, causal=spec.causal)
    bad = cu.clone()
    bad[2] = 100
    with pytest.raises(ValueError, match="exceeds"):
        flashgen.flash_attn_varlen_func(q, k, v, bad, cu, 100, 7, causal=spec.causal)
    bad = torch.tensor([0, 9, 4], dtype=torch.int32, device="cuda")
    with pytest.raises(ValueError, match="non-decreasing"):
        flashgen.flash_attn_varlen_func(q, k, v, bad, cu, 12, 7, causal=spec.causal)
