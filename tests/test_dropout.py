"""GPU tests of dropout: exact against the reference with the kernel's own mask, statistics,
and reproducibility under torch.manual_seed."""

import pytest
import torch

import flashgen

from conftest import requires_gpu
from gpu_common import kernels, make_qkv
from reference import assert_close_to_reference, attention_ref

pytestmark = [requires_gpu, pytest.mark.gpu]

DROPOUT_KERNELS = kernels(dropout=True)


@pytest.mark.parametrize("spec", DROPOUT_KERNELS, ids=lambda s: s.name)
def test_dropout_matches_reference_with_the_returned_mask(spec):
    for sq, sk, p in ((17, 17, 0.1), (113, 239, 0.3), (239, 113, 0.5), (1, 1023, 0.2)):
        q, k, v = make_qkv(spec, b=2, sq=sq, sk=sk, h=3, hkv=3)
        out, lse, mask = flashgen.flash_attn_func(q, k, v, dropout_p=p, causal=spec.causal, return_attn_probs=True)
        assert mask.shape == (2, 3, sq, sk) and mask.dtype == torch.bool
        assert_close_to_reference(out, q, k, v, causal=spec.causal, dropout_mask=mask, dropout_p=p)


@pytest.mark.parametrize("spec", DROPOUT_KERNELS[:1], ids=lambda s: s.name)
def test_dropout_statistics_and_seeding(spec):
    p = 0.17
    q, k, v = make_qkv(spec, b=4, sq=1024, sk=1024, h=8, hkv=8)
    torch.manual_seed(1234)
    first, _, mask = flashgen.flash_attn_func(q, k, v, dropout_p=p, return_attn_probs=True, causal=spec.causal)
    kept = mask.float().mean().item()
    # 33.5M Bernoulli draws: the standard deviation of the mean is ~6.5e-5.
    assert abs(kept - (1 - p)) < 1e-3, kept
    # Rows and columns are not correlated: every row's keep rate is near 1 - p.
    per_row = mask.float().mean(dim=-1)
    assert (per_row - (1 - p)).abs().max().item() < 0.08
    torch.manual_seed(1234)
    again = flashgen.flash_attn_func(q, k, v, dropout_p=p, causal=spec.causal)
    assert torch.equal(first, again)
    different = flashgen.flash_attn_func(q, k, v, dropout_p=p, causal=spec.causal)
    assert not torch.equal(first, different)
    # In expectation dropout leaves attention unchanged.
    qs, ks, vs = q[:1, :64], k[:1], v[:1]
    mean = torch.stack([flashgen.flash_attn_func(qs, ks, vs, dropout_p=p, causal=spec.causal)
                        for _ in range(64)]).float().mean(0)
    ref, _ = attention_ref(qs, ks, vs, causal=spec.causal)
    assert (mean - ref).abs().mean().item() < 0.01
