"""GPU tests of every built forward kernel against a float32 reference.

The kernels under test are read from the build manifest, so a build with other head dims or
dtypes is tested without editing this file.
"""

import dataclasses

import pytest
import torch

import flashgen
from flashgen.codegen.estimate import sm80_forward_tiles

from conftest import requires_gpu
from gpu_common import kernels, make_qkv, ramped_keys, record_calls
from reference import TORCH_DTYPES, assert_close_to_reference, assert_lse_close

pytestmark = [requires_gpu, pytest.mark.gpu]

FWD_KERNELS = kernels()
# (2111, 2201): causal head-dim-64 sm90 kernels switch to 192-row tiles from 2048 queries on.
SEQLENS = [(1, 1), (1, 239), (17, 17), (113, 203), (239, 113), (1023, 1023), (2048, 2048), (113, 2048), (2111, 2201)]


def poisoned_out(q, v):
    return torch.full((*q.shape[:3], v.shape[-1]), float("nan"), dtype=q.dtype, device=q.device)


def run_and_check(spec, q, k, v, softmax_scale=None, **options):
    out = poisoned_out(q, v)
    result, lse = flashgen.flash_attn_func(q, k, v, softmax_scale=softmax_scale, causal=spec.causal,
                                           return_lse=True, out=out, **options)
    torch.cuda.synchronize()
    assert result.data_ptr() == out.data_ptr()
    ref_options = {("window" if key == "window_size" else key): val for key, val in options.items()
                   if key != "num_splits"}
    assert_close_to_reference(out, q, k, v, softmax_scale=softmax_scale, causal=spec.causal, **ref_options)
    assert_lse_close(lse, q, k, v, softmax_scale=softmax_scale, causal=spec.causal, **ref_options)
    return out, lse


@pytest.mark.parametrize("seqlens", SEQLENS, ids=lambda s: f"sq{s[0]}_sk{s[1]}")
@pytest.mark.parametrize("spec", FWD_KERNELS, ids=lambda s: s.name)
def test_forward_matches_reference(spec, seqlens):
    sq, sk = seqlens
    q, k, v = make_qkv(spec, b=2, sq=sq, sk=sk, h=3, hkv=3)
    run_and_check(spec, q, k, v)


# gentle: the running max grows by less than the kernels' rescale slack (2^8), so probabilities
# above 1 reach P V; steep: it grows by more, so acc_o is rescaled block after block.
@pytest.mark.parametrize("top", [3.0, 40.0], ids=["gentle", "steep"])
@pytest.mark.parametrize("spec", FWD_KERNELS, ids=lambda s: s.name)
def test_row_max_growing_across_key_blocks(spec, top):
    q, k, v = make_qkv(spec, b=1, sq=239, sk=1023, h=2, hkv=2)
    run_and_check(spec, q, ramped_keys(k, top), v)


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


@pytest.mark.parametrize("spec", FWD_KERNELS, ids=lambda s: s.name)
def test_output_views_are_written_exactly(spec):
    """out= as views into larger buffers (wider rows, a gap after each batch entry's rows, a
    head-major buffer): the kernels write exactly the view. The sm90 16-bit kernels store the
    output by TMA over the view's strides, clipped at each entry's last row; the rest of the
    buffer keeps its sentinel."""
    dtype = TORCH_DTYPES[spec.dtype]
    b, sq, sk, h, dv = 2, 239, 203, 4, spec.head_dim_v
    q, k, v = make_qkv(spec, b=b, sq=sq, sk=sk, h=h, hkv=2)
    sentinel = 7.0
    wide = torch.full((b, sq + 5, h, dv + 8), sentinel, dtype=dtype, device="cuda")
    head_major = torch.full((b, h, sq, dv), sentinel, dtype=dtype, device="cuda")
    for buffer, out in ((wide, wide[:, :sq, :, :dv]), (head_major, head_major.transpose(1, 2))):
        result = flashgen.flash_attn_func(q, k, v, causal=spec.causal, out=out)
        torch.cuda.synchronize()
        assert result.data_ptr() == out.data_ptr()
        assert_close_to_reference(out, q, k, v, causal=spec.causal)
    assert torch.all(wide[:, sq:] == sentinel) and torch.all(wide[..., dv:] == sentinel)


@pytest.mark.parametrize("spec", [s for s in FWD_KERNELS if s.causal], ids=lambda s: s.name)
def test_causal_rows_without_keys_are_zero(spec):
    # seqlen_q > seqlen_k: the first seqlen_q - seqlen_k query rows see no key at all.
    q, k, v = make_qkv(spec, b=1, sq=300, sk=17, h=2, hkv=2)
    out, lse = run_and_check(spec, q, k, v)
    assert torch.all(out[:, :283] == 0)
    assert torch.all(torch.isposinf(lse[:, :, :283]))
    # With sinks the sink is such a row's whole denominator: LSE = the sink, output still zero,
    # in query tiles that hold keys for some rows and in those that hold none.
    sinks = torch.randn(2, device="cuda")
    out, lse = run_and_check(spec, q, k, v, sinks=sinks)
    assert torch.all(out[:, :283] == 0)
    torch.testing.assert_close(lse[0, :, :283], sinks[:, None].expand(2, 283), atol=1e-5, rtol=0)


@pytest.mark.parametrize("spec", FWD_KERNELS[:2], ids=lambda s: s.name)
def test_empty_keys_and_empty_batch(spec):
    q, k, v = make_qkv(spec, b=2, sq=5, sk=0, h=2, hkv=2)
    out, lse = flashgen.flash_attn_func(q, k, v, causal=spec.causal, return_lse=True)
    assert torch.all(out == 0) and torch.all(torch.isposinf(lse))
    q, k, v = make_qkv(spec, b=0, sq=5, sk=5, h=2, hkv=2)
    assert flashgen.flash_attn_func(q, k, v, causal=spec.causal).shape == (0, 5, 2, spec.head_dim_v)


@pytest.mark.parametrize("spec", [s for s in FWD_KERNELS if s.head_dim_qk == s.head_dim_v and not s.paged][:2],
                         ids=lambda s: s.name)
def test_repeated_signature_reuses_the_launch_arguments(spec, monkeypatch):
    """An inference call of an earlier call's signature (shapes, strides, dtypes, options, the
    backend setting) copies its filled launch arguments (flashgen._args_cache.FWD): fresh inputs
    every call, each against the reference, with and without out= / return_lse, a strided layout
    and split keys (a workspace per call); only a signature's first call takes the full path."""
    import flashgen.attention as attention
    from flashgen._args_cache import FWD

    FWD.clear()
    calls = record_calls(monkeypatch, attention, ("run_forward", "run_forward_cached"))
    for layout in ("contiguous", "packed", "split", "no_lse"):
        for _ in range(3):
            if layout == "packed":
                qkv = torch.randn(2, 203, 3, 4, spec.head_dim_qk, device="cuda", dtype=TORCH_DTYPES[spec.dtype])
                q, k, v = qkv.unbind(dim=2)
            else:
                q, k, v = make_qkv(spec, b=2, sq=113, sk=1203 if layout == "split" else 203, h=4, hkv=2)
            if layout == "contiguous" or layout == "packed":
                run_and_check(spec, q, k, v)
            else:
                result = flashgen.flash_attn_func(q, k, v, causal=spec.causal,
                                                  num_splits=3 if layout == "split" else 0)
                assert_close_to_reference(result, q, k, v, causal=spec.causal)
    assert calls == ["run_forward", "run_forward_cached", "run_forward_cached"] * 4
    assert len(FWD) == 4
    # Another backend setting is another signature; what the library reads itself (rows, splits)
    # it reads on every call.
    monkeypatch.setenv("FLASHGEN_FWD_BACKEND", "auto")  # conftest set spec.arch
    q, k, v = make_qkv(spec, b=2, sq=113, sk=203, h=4, hkv=2)
    run_and_check(spec, q, k, v)
    assert calls[-1] == "run_forward" and len(FWD) == 5
    # Calls with ALiBi, sinks, dropout or attention probabilities are validated in full each time.
    sinks = torch.randn(4, device="cuda")
    for _ in range(2):
        run_and_check(spec, q, k, v, sinks=sinks)
    assert calls[-2:] == ["run_forward"] * 2 and len(FWD) == 5


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


WINDOWS = [(16, 0), (100, 37), (-1, 37), (0, 0), (300, -1)]


@pytest.mark.parametrize("window", WINDOWS, ids=str)
@pytest.mark.parametrize("spec", FWD_KERNELS, ids=lambda s: s.name)
def test_sliding_window(spec, window):
    for sq, sk in ((113, 239), (239, 113), (1023, 1023)):
        q, k, v = make_qkv(spec, b=2, sq=sq, sk=sk, h=2, hkv=1)
        run_and_check(spec, q, k, v, window_size=window)


@pytest.mark.parametrize("spec", FWD_KERNELS, ids=lambda s: s.name)
def test_sinks(spec):
    h = 4
    q, k, v = make_qkv(spec, b=2, sq=239, sk=301, h=h, hkv=2)
    run_and_check(spec, q, k, v, sinks=torch.randn(h, device="cuda") * 2)
    run_and_check(spec, q, k, v, sinks=torch.randn(h, device="cuda"), window_size=(64, 16), softmax_scale=0.1)


@pytest.mark.parametrize("spec", kernels(softcap=True), ids=lambda s: s.name)
def test_softcap(spec):
    q, k, v = make_qkv(spec, b=2, sq=239, sk=301, h=4, hkv=2)
    run_and_check(spec, q, k, v, softcap=5.0)
    run_and_check(spec, q, k, v, softcap=30.0, window_size=(64, 16), sinks=torch.randn(4, device="cuda"))


@pytest.mark.parametrize("spec", kernels(alibi=True), ids=lambda s: s.name)
def test_alibi(spec):
    b, h = 2, 4
    q, k, v = make_qkv(spec, b=b, sq=239, sk=301, h=h, hkv=2)
    run_and_check(spec, q, k, v, alibi_slopes=torch.rand(h, device="cuda") * 0.5)
    run_and_check(spec, q, k, v, alibi_slopes=torch.rand(b, h, device="cuda"), window_size=(100, -1))


@pytest.mark.parametrize("spec", kernels(softcap=True, alibi=True), ids=lambda s: s.name)
def test_softcap_with_alibi(spec):
    q, k, v = make_qkv(spec, b=2, sq=113, sk=239, h=4, hkv=4)
    run_and_check(spec, q, k, v, softcap=20.0, alibi_slopes=torch.rand(4, device="cuda"),
                  sinks=torch.randn(4, device="cuda"))


@pytest.mark.parametrize("spec", FWD_KERNELS, ids=lambda s: s.name)
def test_split_kv(spec):
    for sq, sk, splits in ((1, 2048, 0), (1, 2048, 5), (17, 1023, 3), (113, 4001, 0), (5, 97, 8), (3, 8001, 70)):
        q, k, v = make_qkv(spec, b=2, sq=sq, sk=sk, h=4, hkv=2)
        run_and_check(spec, q, k, v, num_splits=splits)
    q, k, v = make_qkv(spec, b=1, sq=3, sk=1500, h=2, hkv=2)
    run_and_check(spec, q, k, v, num_splits=4, sinks=torch.randn(2, device="cuda"), window_size=(200, 0))


@pytest.mark.parametrize("spec", kernels(causal=False)[:1], ids=lambda s: s.name)
def test_merge_attention_states_equals_full_attention(spec):
    q, k, v = make_qkv(spec, b=2, sq=77, sk=500, h=4, hkv=4)
    full, full_lse = flashgen.flash_attn_func(q, k, v, return_lse=True)
    parts = [flashgen.flash_attn_func(q, k[:, a:b], v[:, a:b], return_lse=True) for a, b in ((0, 123), (123, 500))]
    merged, merged_lse = flashgen.merge_attention_states([p[0] for p in parts], [p[1] for p in parts])
    torch.testing.assert_close(merged_lse, full_lse, atol=1e-3, rtol=1e-3)
    assert (merged.float() - full.float()).abs().max().item() < 2e-2


SM90_KERNELS = [s for s in FWD_KERNELS if s.arch == "sm90"]


@pytest.mark.parametrize("spec", SM90_KERNELS, ids=lambda s: s.name)
def test_sm90_agrees_with_sm80(spec, monkeypatch):
    twin = dataclasses.replace(spec, arch="sm80")
    if twin not in FWD_KERNELS:
        pytest.skip(f"{twin.name} is not built")
    q, k, v = make_qkv(spec, b=2, sq=777, sk=1031, h=4, hkv=2)
    options = dict(causal=spec.causal, return_lse=True, window_size=(300, 40) if not spec.causal else (-1, -1))
    if spec.softcap:
        options["softcap"] = 20.0
    if spec.alibi:
        options["alibi_slopes"] = torch.rand(4, device="cuda") * 0.3
    if spec.dropout:
        options["dropout_p"] = 0.17
    outs = {}
    for family in ("sm90", "sm80"):
        monkeypatch.setenv("FLASHGEN_FWD_BACKEND", family)
        torch.manual_seed(1234)  # the same Philox seed and offset: the same dropout mask
        outs[family] = flashgen.flash_attn_func(q, k, v, **options)
    (o90, lse90), (o80, lse80) = outs["sm90"], outs["sm80"]
    # Both round an fp32 accumulator once; they differ by summation order only.
    torch.testing.assert_close(o90.float(), o80.float(), atol=2e-2, rtol=0)
    torch.testing.assert_close(lse90, lse80, atol=1e-3, rtol=1e-4)
    assert (o90.float() - o80.float()).abs().mean() < 2e-3


# sm80 kernels above head dim 128 hold a wide (128-row) and a narrow (64-row) tile, and auto mode
# takes one per device (kernels/sm80/sm80_fwd_tile.h), so the other is run here by forcing it.
# FLASHGEN_SM80_FWD_ROWS is read on every call, like FLASHGEN_FWD_BACKEND.
TWO_TILE_KERNELS = [s for s in FWD_KERNELS if s.arch == "sm80" and sm80_forward_tiles(s.head_dim_qk, s.head_dim_v) == 2]


@pytest.mark.parametrize("rows", ["wide", "narrow"])
@pytest.mark.parametrize("spec", TWO_TILE_KERNELS, ids=lambda s: s.name)
def test_sm80_wide_and_narrow_tiles(spec, rows, monkeypatch):
    monkeypatch.setenv("FLASHGEN_SM80_FWD_ROWS", rows)
    q, k, v = make_qkv(spec, b=2, sq=113, sk=203, h=3, hkv=3)
    try:
        run_and_check(spec, q, k, v)
    except RuntimeError as err:
        # The wide tile needs more shared memory per block than sm86/sm89/sm120 allow.
        if rows == "wide" and "shared memory" in str(err):
            pytest.skip(str(err))
        raise
    for sq, sk in ((1, 239), (17, 17), (239, 113), (1023, 1023), (2111, 2201)):
        q, k, v = make_qkv(spec, b=2, sq=sq, sk=sk, h=3, hkv=3)
        run_and_check(spec, q, k, v)
    # Packed GQA rows (17 x 3 rows fit either tile twice) and split keys, which the planner sizes
    # with the tile it chose; a sliding window's masked blocks.
    q, k, v = make_qkv(spec, b=2, sq=17, sk=1023, h=6, hkv=2)
    run_and_check(spec, q, k, v)
    run_and_check(spec, q, k, v, num_splits=3)
    q, k, v = make_qkv(spec, b=2, sq=239, sk=301, h=4, hkv=2)
    run_and_check(spec, q, k, v, window_size=(100, 37))


# sm90 causal kernels at head dim 64 hold a 192-row and a 128-row tile and take the 128-row one
# below 2048 queries (kernels/sm90/sm90_fwd_tile.h); FLASHGEN_SM90_FWD_ROWS forces either.
SM90_TWO_TILE_KERNELS = [s for s in FWD_KERNELS if s.arch == "sm90" and s.causal and s.dtype != "e4m3"
                         and max(s.head_dim_qk, s.head_dim_v) == 64]


@pytest.mark.parametrize("rows", ["tall", "short"])
@pytest.mark.parametrize("spec", SM90_TWO_TILE_KERNELS, ids=lambda s: s.name)
def test_sm90_tall_and_short_tiles(spec, rows, monkeypatch):
    monkeypatch.setenv("FLASHGEN_SM90_FWD_ROWS", rows)
    monkeypatch.setenv("FLASHGEN_FWD_BACKEND", "sm90")  # split keys too run on it
    for sq, sk in ((113, 203), (239, 113), (1023, 1023), (2111, 2201)):
        q, k, v = make_qkv(spec, b=2, sq=sq, sk=sk, h=4, hkv=2)
        run_and_check(spec, q, k, v)
    # Split keys (auto mode would hand them to the sm80 kernel), sized with the tile chosen.
    q, k, v = make_qkv(spec, b=1, sq=301, sk=2111, h=2, hkv=2)
    run_and_check(spec, q, k, v, num_splits=3)


@pytest.mark.parametrize("variable, value", [("FLASHGEN_FWD_BACKEND", "sm75"), ("FLASHGEN_SM80_FWD_ROWS", "tall"),
                                             ("FLASHGEN_SM90_FWD_ROWS", "narrow"),
                                             ("FLASHGEN_SM90_FP8_KEYS", "256"), ("FLASHGEN_SM90_PACK_GQA", "yes")])
def test_override_is_validated(variable, value, monkeypatch):
    monkeypatch.setenv(variable, value)
    spec = FWD_KERNELS[0]
    q, k, v = make_qkv(spec, b=1, sq=8, sk=8, h=2, hkv=2)
    with pytest.raises(ValueError, match=variable):
        flashgen.flash_attn_func(q, k, v, causal=spec.causal)
