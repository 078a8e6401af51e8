"""The Hopper forward with packed GQA rows: the query heads of a KV head share one tile, tile row
r being query token r // group of head kv_head * group + r % group (FwdParams::pack_gqa, the
kernel's kPackGqa instantiation). FLASHGEN_SM90_PACK_GQA=on forces it on every GQA call
(auto packs short queries, sm90_fwd_tile.h's fwd_pack_gqa), FLASHGEN_FWD_BACKEND=sm90 keeps
the calls off the decode and SM80 kernels. Against the float32 reference (output and LSE), and
against the same kernel with one head per tile."""

import pytest
import torch

import flashgen

from conftest import requires_gpu
from gpu_common import FWD_KERNELS, make_qkv
from reference import TORCH_DTYPES, assert_close_to_reference, attention_ref
from test_forward import run_and_check
from test_varlen import check_varlen_over_paged_cache

pytestmark = [requires_gpu, pytest.mark.gpu]

# ALiBi and dropout kernels keep one head per tile (per-head slopes and Philox streams).
PACKABLE = [s for s in FWD_KERNELS if s.arch == "sm90" and not s.alibi and not s.dropout]
DENSE = [s for s in PACKABLE if not s.paged]
PAGED = [s for s in PACKABLE if s.paged]

# (batch, seqlen_q, seqlen_k, heads_q, heads_kv): groups of 2, 3, 7 and 8, one token up to
# several packed row blocks, fewer keys than queries (causal rows that see no key).
SHAPES = [(2, 1, 239, 8, 1), (2, 5, 1023, 12, 4), (1, 17, 2048, 14, 2), (3, 64, 301, 16, 2), (2, 100, 1500, 4, 2),
          (1, 239, 113, 6, 2)]


@pytest.fixture
def packed(monkeypatch):
    monkeypatch.setenv("FLASHGEN_FWD_BACKEND", "sm90")
    monkeypatch.setenv("FLASHGEN_SM90_PACK_GQA", "on")


def _options(spec, h):
    runs = [{}, {"window_size": (60, 5) if not spec.causal else (60, 0)},
            {"sinks": torch.randn(h, device="cuda")}, {"num_splits": 3}]
    if spec.softcap:
        runs.append({"softcap": 20.0})
    return runs


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}_sq{}_sk{}_h{}_{}".format(*s))
@pytest.mark.parametrize("spec", DENSE, ids=lambda s: s.name)
def test_packed_rows_match_reference(spec, shape, packed):
    b, sq, sk, h, hkv = shape
    q, k, v = make_qkv(spec, b=b, sq=sq, sk=sk, h=h, hkv=hkv)
    for options in _options(spec, h):
        run_and_check(spec, q, k, v, **options)


@pytest.mark.parametrize("spec", DENSE, ids=lambda s: s.name)
def test_packed_rows_agree_with_one_head_per_tile(spec, monkeypatch):
    monkeypatch.setenv("FLASHGEN_FWD_BACKEND", "sm90")
    q, k, v = make_qkv(spec, b=2, sq=37, sk=1031, h=12, hkv=4)
    outs = {}
    for mode in ("on", "off"):
        monkeypatch.setenv("FLASHGEN_SM90_PACK_GQA", mode)
        outs[mode] = flashgen.flash_attn_func(q, k, v, causal=spec.causal, return_lse=True)
    (o_on, lse_on), (o_off, lse_off) = outs["on"], outs["off"]
    # Same products and key order per row; only where a warp rescales (its rows differ) may differ.
    torch.testing.assert_close(o_on.float(), o_off.float(), atol=1e-2, rtol=0)
    torch.testing.assert_close(lse_on, lse_off, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("spec", DENSE, ids=lambda s: s.name)
def test_packed_rows_auto_mode(spec, monkeypatch):
    """auto: short GQA queries (packed where that fills the tiles better) and a long one."""
    monkeypatch.setenv("FLASHGEN_FWD_BACKEND", "sm90")
    for b, sq, sk, h, hkv in ((2, 9, 777, 8, 2), (1, 300, 513, 8, 1), (1, 1100, 900, 4, 2)):
        q, k, v = make_qkv(spec, b=b, sq=sq, sk=sk, h=h, hkv=hkv)
        run_and_check(spec, q, k, v)


@pytest.mark.parametrize("spec", DENSE, ids=lambda s: s.name)
def test_packed_rows_varlen(spec, packed):
    dtype = TORCH_DTYPES[spec.dtype]
    lens_q, lens_k, h, hkv = [1, 17, 0, 45, 3], [300, 17, 5, 1, 129], 8, 2
    cu_q = torch.tensor([0, *torch.tensor(lens_q).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    cu_k = torch.tensor([0, *torch.tensor(lens_k).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    q = torch.randn(sum(lens_q), h, spec.head_dim_qk, device="cuda", dtype=dtype)
    k = torch.randn(sum(lens_k), hkv, spec.head_dim_qk, device="cuda", dtype=dtype)
    v = torch.randn(sum(lens_k), hkv, spec.head_dim_v, device="cuda", dtype=dtype)
    for options in ({}, {"num_splits": 2}):
        out, lse = flashgen.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), causal=spec.causal,
                                                   return_lse=True, **options)
        for i, lq in enumerate(lens_q):
            if lq == 0:
                continue
            qs = q[cu_q[i]:cu_q[i + 1]].unsqueeze(0)
            ks, vs = k[cu_k[i]:cu_k[i + 1]].unsqueeze(0), v[cu_k[i]:cu_k[i + 1]].unsqueeze(0)
            assert_close_to_reference(out[cu_q[i]:cu_q[i + 1]].unsqueeze(0), qs, ks, vs, causal=spec.causal)
            _, lse_ref = attention_ref(qs, ks, vs, causal=spec.causal)
            torch.testing.assert_close(lse[:, cu_q[i]:cu_q[i + 1]], lse_ref[0], atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("spec", PAGED, ids=lambda s: s.name)
def test_packed_rows_over_a_paged_cache(spec, packed):
    # Pages of 128 keys hold whole key blocks (64 at head dim 256).
    check_varlen_over_paged_cache(spec, 128, [3, 1, 40], [50, 1, 300], h=8, hkv=2)
