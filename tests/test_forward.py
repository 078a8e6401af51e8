"""GPU tests of every built forward kernel against a float32 reference.

The kernels under test are read from the build manifest, so a build with other head dims or
dtypes is tested without editing this file.
"""

import pytest
import torch

import flashgen
from flashgen._library import manifest
from flashgen.codegen.spec import KernelSpec

from conftest import requires_gpu
from reference import assert_close_to_reference, attention_ref

pytestmark = [requires_gpu, pytest.mark.gpu]

TORCH_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
FWD_KERNELS = [KernelSpec.parse(k["name"]) for k in manifest()["kernels"] if k["direction"] == "fwd"]
SEQLENS = [(1, 1), (1, 239), (17, 17), (113, 203), (239, 113), (1023, 1023), (2048, 2048), (113, 2048)]


def make_qkv(spec, b, sq, sk, h, hkv):
    """Fresh random inputs on every call (never zeros)."""
    dtype = TORCH_DTYPES[spec.dtype]
    q = torch.randn(b, sq, h, spec.head_dim_qk, device="cuda", dtype=dtype)
    k = torch.randn(b, sk, hkv, spec.head_dim_qk, device="cuda", dtype=dtype)
    v = torch.randn(b, sk, hkv, spec.head_dim_v, device="cuda", dtype=dtype)
    return q, k, v


def poisoned_out(q, v):
    return torch.full((*q.shape[:3], v.shape[-1]), float("nan"), dtype=q.dtype, device=q.device)


def run_and_check(spec, q, k, v, softmax_scale=None):
    out = poisoned_out(q, v)
    result, lse = flashgen.flash_attn_func(q, k, v, softmax_scale=softmax_scale, causal=spec.causal,
                                           return_lse=True, out=out)
    torch.cuda.synchronize()
    assert result.data_ptr() == out.data_ptr()
    assert_close_to_reference(out, q, k, v, softmax_scale, spec.causal)
    _, lse_ref = attention_ref(q, k, v, softmax_scale, spec.causal, torch.float32)
    torch.testing.assert_close(lse, lse_ref, atol=2e-3, rtol=1e-3)
    return out, lse


@pytest.mark.parametrize("seqlens", SEQLENS, ids=lambda s: f"sq{s[0]}_sk{s[1]}")
@pytest.mark.parametrize("spec", FWD_KERNELS, ids=lambda s: s.name)
def test_forward_matches_reference(spec, seqlens):
    sq, sk = seqlens
    q, k, v = make_qkv(spec, b=2, sq=sq, sk=sk, h=3, hkv=3)
    run_and_check(spec, q, k, v)


@pytest.mark.parametrize("spec", FWD_KERNELS, ids=lambda s: s.name)
def test_gqa_and_mqa(spec):
    for hkv in (2, 1):
        q, k, v = make_qkv(spec, b=2, sq=239, sk=301, h=6, hkv=hkv)
        run_and_check(spec, q, k, v)


@pytest.mark.parametrize("spec", FWD_KERNELS, ids=lambda s: s.name)
def test_strided_inputs_from_packed_qkv(spec):
    dtype = TORCH_DTYPES[spec.dtype]
    if spec.head_dim_v != spec.head_dim_qk:
        pytest.skip("packed qkv needs equal head dims")
    qkv = torch.randn(3, 113, 3, 4, spec.head_dim_qk, device="cuda", dtype=dtype)
    q, k, v = qkv.unbind(dim=2)
    assert not q.is_contiguous()
    run_and_check(spec, q, k, v, softmax_scale=0.3)


@pytest.mark.parametrize("spec", [s for s in FWD_KERNELS if s.causal], ids=lambda s: s.name)
def test_causal_rows_without_keys_are_zero(spec):
    # seqlen_q > seqlen_k: the first seqlen_q - seqlen_k query rows see no key at all.
    q, k, v = make_qkv(spec, b=1, sq=300, sk=17, h=2, hkv=2)
    out, lse = run_and_check(spec, q, k, v)
    assert torch.all(out[:, :283] == 0)
    assert torch.all(torch.isposinf(lse[:, :, :283]))


@pytest.mark.parametrize("spec", FWD_KERNELS[:2], ids=lambda s: s.name)
def test_empty_keys_and_empty_batch(spec):
    q, k, v = make_qkv(spec, b=2, sq=5, sk=0, h=2, hkv=2)
    out, lse = flashgen.flash_attn_func(q, k, v, causal=spec.causal, return_lse=True)
    assert torch.all(out == 0) and torch.all(torch.isposinf(lse))
    q, k, v = make_qkv(spec, b=0, sq=5, sk=5, h=2, hkv=2)
    assert flashgen.flash_attn_func(q, k, v, causal=spec.causal).shape == (0, 5, 2, spec.head_dim_v)


@pytest.mark.parametrize("spec", FWD_KERNELS[:2], ids=lambda s: s.name)
def test_deterministic_and_stream_ordered(spec):
    q, k, v = make_qkv(spec, b=2, sq=1023, sk=1023, h=4, hkv=4)
    first = flashgen.flash_attn_func(q, k, v, causal=spec.causal)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        second = flashgen.flash_attn_func(q, k, v, causal=spec.causal)
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(first, second)


def test_other_cuda_device_index_is_respected():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    spec = FWD_KERNELS[0]
    with torch.cuda.device(1):
        q, k, v = make_qkv(spec, b=1, sq=65, sk=65, h=2, hkv=2)
    run_and_check(spec, q, k, v)
