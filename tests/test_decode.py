"""GPU tests of the decode kernels (decode_sm80_*): few query rows over dense, paged (page sizes
1, 16, 64, 256) and FP8 caches, ragged lengths, GQA 1/4/8/16, 1-8 query tokens, the runtime
features (causal, window, softcap, ALiBi, sinks, LSE), split-KV, FP8 append, CUDA graphs."""

import pytest
import torch

import flashgen
from flashgen._library import manifest
from flashgen.bench.timing import capture_graph
from flashgen.codegen.spec import KernelSpec

from conftest import requires_gpu
from gpu_common import cache_rows
from reference import TORCH_DTYPES, assert_close_to_reference, attention_ref

pytestmark = [requires_gpu, pytest.mark.gpu]

DECODE_KERNELS = [KernelSpec.parse(k["name"]) for k in manifest()["kernels"] if k["direction"] == "decode"]
BF16_CACHE = [s for s in DECODE_KERNELS if s.dtype != "e4m3"]
FP8_CACHE = [s for s in DECODE_KERNELS if s.dtype == "e4m3"]
LENGTHS = [0, 1, 17, 113, 239, 1023, 700]


class Cache:
    """A dense or paged cache holding random keys; FP8 caches keep their dequantised copy."""

    def __init__(self, spec, batch, hkv, capacity, page_size=None, q_dtype=torch.bfloat16, per_page_scales=True):
        d = spec.head_dim_qk
        self.fp8 = spec.dtype == "e4m3"
        dtype = q_dtype if self.fp8 else TORCH_DTYPES[spec.dtype]
        self.page_size = page_size
        if page_size is None:
            entries, rows = batch + 1, capacity
            self.block_table = None
            self.batch_idx = torch.randperm(entries, device="cuda")[:batch].int()
        else:
            max_pages = (capacity + page_size - 1) // page_size
            entries, rows = batch * max_pages + 2, page_size
            self.block_table = torch.randperm(entries, device="cuda")[: batch * max_pages].view(batch, max_pages).int()
            self.batch_idx = None
        k = torch.randn(entries, rows, hkv, d, device="cuda", dtype=dtype)
        v = torch.randn(entries, rows, hkv, d, device="cuda", dtype=dtype)
        # Outlier channels, as real keys have.
        k[..., 3] *= 8
        self.k_descale = self.v_descale = None
        if self.fp8:
            if per_page_scales:
                ks = k.float().abs().amax(dim=(1, 3)) / 448.0 + 1e-6  # (entries, hkv)
                vs = v.float().abs().amax(dim=(1, 3)) / 448.0 + 1e-6
                k8 = (k.float() / ks[:, None, :, None]).to(torch.float8_e4m3fn)
                v8 = (v.float() / vs[:, None, :, None]).to(torch.float8_e4m3fn)
                self.k_deq = k8.float() * ks[:, None, :, None]
                self.v_deq = v8.float() * vs[:, None, :, None]
            else:
                ks = k.float().abs().amax(dim=(0, 1, 3)) / 448.0 + 1e-6  # (hkv,)
                vs = v.float().abs().amax(dim=(0, 1, 3)) / 448.0 + 1e-6
                k8 = (k.float() / ks[:, None]).to(torch.float8_e4m3fn)
                v8 = (v.float() / vs[:, None]).to(torch.float8_e4m3fn)
                self.k_deq, self.v_deq = k8.float() * ks[:, None], v8.float() * vs[:, None]
            self.k, self.v, self.k_descale, self.v_descale = k8, v8, ks.contiguous(), vs.contiguous()
        else:
            self.k, self.v = k, v
            self.k_deq, self.v_deq = k, v

    def rows(self, b, n):
        """Keys and values 0..n-1 of batch entry b (dequantised for FP8)."""
        return cache_rows(self.k_deq, self.v_deq, b, n, self.batch_idx, self.block_table, self.page_size)

    def call(self, q, lengths, **kw):
        extra = dict(k_descale=self.k_descale, v_descale=self.v_descale) if self.fp8 else {}
        return flashgen.flash_attn_with_kvcache(q, self.k, self.v, cache_seqlens=lengths, cache_batch_idx=self.batch_idx,
                                                block_table=self.block_table, **extra, **kw)


def check_against_reference(cache, q, out, lse, lengths, **kw):
    ref_kw = {("window" if key == "window_size" else key): val for key, val in kw.items()
              if key not in ("num_splits", "return_softmax_lse")}
    slopes = ref_kw.pop("alibi_slopes", None)
    for b in range(q.shape[0]):
        if slopes is not None:
            ref_kw["alibi_slopes"] = slopes[b:b + 1] if slopes.dim() == 2 else slopes
        ks, vs = cache.rows(b, int(lengths[b]))
        qb, kb, vb = q[b:b + 1], ks.unsqueeze(0), vs.unsqueeze(0)
        if cache.fp8:
            # The kernel multiplies the exact dequantised cache; the yardstick is PyTorch on the same
            # values rounded to the query dtype.
            ref, ref_lse = attention_ref(qb.float(), kb, vb, compute_dtype=torch.float32, **ref_kw)
            low, _ = attention_ref(qb, kb.to(q.dtype), vb.to(q.dtype), compute_dtype=q.dtype, **ref_kw)
            err = (out[b:b + 1].float() - ref).abs().max().item()
            low_err = (low.float() - ref).abs().max().item()
            assert not torch.isnan(out[b]).any()
            assert err <= 2 * low_err + 1e-3, f"batch {b}: max error {err:.3e}, pytorch {q.dtype} {low_err:.3e}"
        else:
            assert_close_to_reference(out[b:b + 1], qb, kb, vb, **ref_kw)
            _, ref_lse = attention_ref(qb, kb, vb, compute_dtype=torch.float32, **ref_kw)
        if lse is not None:
            finite = torch.isfinite(ref_lse)
            assert torch.equal(torch.isfinite(lse[b:b + 1]), finite)
            torch.testing.assert_close(lse[b:b + 1][finite], ref_lse[finite], atol=2e-3, rtol=1e-3)


def _q(spec, batch, sq, h, q_dtype=torch.bfloat16):
    dtype = q_dtype if spec.dtype == "e4m3" else TORCH_DTYPES[spec.dtype]
    return torch.randn(batch, sq, h, spec.head_dim_qk, device="cuda", dtype=dtype)


@pytest.mark.parametrize("page_size", [None, 1, 16, 64, 256])
@pytest.mark.parametrize("spec", DECODE_KERNELS, ids=lambda s: s.name)
def test_ragged_batch_any_page_size(spec, page_size):
    """GQA 8, one token, ragged lengths including 0 and 1; auto split count."""
    batch, hkv, h = len(LENGTHS), 2, 16
    cache = Cache(spec, batch, hkv, 1100, page_size)
    lengths = torch.tensor(LENGTHS, dtype=torch.int32, device="cuda")
    q = _q(spec, batch, 1, h)
    out, lse = cache.call(q, lengths, return_softmax_lse=True)
    check_against_reference(cache, q, out, lse, lengths)


@pytest.mark.parametrize("sq,group", [(1, 1), (1, 4), (1, 16), (2, 8), (4, 8), (8, 4), (8, 16)])
@pytest.mark.parametrize("spec", DECODE_KERNELS, ids=lambda s: s.name)
def test_query_tokens_and_groups(spec, sq, group):
    """1-8 query tokens x GQA 1-16: 1 to 128 packed rows (several row blocks), causal or not."""
    batch, hkv = 3, 2
    cache = Cache(spec, batch, hkv, 900, page_size=16)
    lengths = torch.tensor([sq, 517, 900], dtype=torch.int32, device="cuda")
    q = _q(spec, batch, sq, hkv * group)
    for causal in (False, True):
        out = cache.call(q, lengths, causal=causal)
        check_against_reference(cache, q, out, None, lengths, causal=causal)


@pytest.mark.parametrize("page_size", [None, 16])
@pytest.mark.parametrize("spec", DECODE_KERNELS, ids=lambda s: s.name)
def test_many_streams_launch_heads_side_by_side(spec, page_size):
    """More than 16 (sequence, kv head) pairs, where the grid runs over the KV heads (x row blocks)
    in x and the splits in y (cta_work): ragged lengths, 4 tokens x GQA 8 (two row blocks per head
    for an FP8 cache), causal or not, forced and automatic split counts."""
    batch, hkv, group, sq = 5, 4, 8, 4
    cache = Cache(spec, batch, hkv, 1300, page_size)
    lengths = torch.tensor([1300, sq, 611, 1029, 257], dtype=torch.int32, device="cuda")
    q = _q(spec, batch, sq, hkv * group)
    for kw in (dict(num_splits=3), dict(num_splits=0, causal=True), dict(num_splits=7, window_size=(400, 0))):
        out, lse = cache.call(q, lengths, return_softmax_lse=True, **kw)
        check_against_reference(cache, q, out, lse, lengths, **kw)


@pytest.mark.parametrize("page_size", [None, 16, 64])
@pytest.mark.parametrize("spec", DECODE_KERNELS, ids=lambda s: s.name)
def test_head_major_cache_memory(spec, page_size):
    """A cache whose memory is head-major ((entries, heads, rows, d), FlashInfer's HND pages),
    passed as the same (entries, rows, heads, d) view permuted: the same output and LSE, bit for
    bit, as the token-major copy of the same values (the loaders take any 16-byte strides), and
    the reference's."""
    batch, hkv, h = len(LENGTHS), 2, 16
    lengths = torch.tensor(LENGTHS, dtype=torch.int32, device="cuda")
    cache = Cache(spec, batch, hkv, 1100, page_size)
    q = _q(spec, batch, 1, h)
    out, lse = cache.call(q, lengths, return_softmax_lse=True)
    cache.k = cache.k.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    cache.v = cache.v.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    assert cache.k.stride(1) == spec.head_dim_qk and cache.k.stride(2) == cache.k.shape[1] * spec.head_dim_qk
    for splits in (0, 3):
        out_hnd, lse_hnd = cache.call(q, lengths, return_softmax_lse=True, num_splits=splits)
        if splits == 0:
            assert torch.equal(out_hnd, out) and torch.equal(lse_hnd, lse)
        check_against_reference(cache, q, out_hnd, lse_hnd, lengths)


@pytest.mark.parametrize("spec", DECODE_KERNELS, ids=lambda s: s.name)
def test_runtime_features(spec):
    """Window, softcap, ALiBi (per head and per batch entry), sinks, LSE, forced split counts."""
    batch, hkv, h, sq = 3, 2, 8, 3
    cache = Cache(spec, batch, hkv, 1500, page_size=64)
    lengths = torch.tensor([1500, 301, 64], dtype=torch.int32, device="cuda")
    q = _q(spec, batch, sq, h)
    slopes = torch.rand(h, device="cuda") * 0.1
    slopes_b = torch.rand(batch, h, device="cuda") * 0.1
    sinks = torch.randn(h, device="cuda")
    cases = [dict(window_size=(200, 0)), dict(window_size=(100, 50), causal=False), dict(softcap=5.0, causal=True),
             dict(alibi_slopes=slopes), dict(alibi_slopes=slopes_b, causal=True), dict(sinks=sinks),
             dict(sinks=sinks, causal=True, window_size=(70, 0))]
    for kw in cases:
        for splits in (1, 3, 40, 0):  # 40: more splits than key blocks, and than one warp's lanes
            out, lse = cache.call(q, lengths, return_softmax_lse=True, num_splits=splits, **kw)
            check_against_reference(cache, q, out, lse, lengths, **kw)


@pytest.mark.parametrize("spec", FP8_CACHE, ids=lambda s: s.name)
def test_fp8_cache_per_head_scales_and_fp16_queries(spec):
    batch, hkv, h = 2, 4, 16
    lengths = torch.tensor([333, 1000], dtype=torch.int32, device="cuda")
    for q_dtype in (torch.float16, torch.bfloat16):
        cache = Cache(spec, batch, hkv, 1000, page_size=None, q_dtype=q_dtype, per_page_scales=False)
        q = _q(spec, batch, 1, h, q_dtype)
        out = cache.call(q, lengths)
        assert out.dtype == q_dtype
        check_against_reference(cache, q, out, None, lengths)


def _poison_unused_rows(cache, lengths, nan_byte=0x7F):
    """Cache rows past each sequence's keys (and pages no sequence uses) become NaN (0x7F: e4m3
    NaN; 0xFF: fp16 / bf16 NaN): a loader that reads them must keep them out of the output."""
    used = torch.zeros(cache.k.shape[:2], dtype=torch.bool, device="cuda")
    for b, n in enumerate(lengths.tolist()):
        if cache.block_table is None:
            used[int(cache.batch_idx[b]), :n] = True
        else:
            pos = torch.arange(n, device="cuda")
            used[cache.block_table[b, pos // cache.page_size].long(), pos % cache.page_size] = True
    for t in (cache.k, cache.v):
        t.view(torch.uint8)[~used] = nan_byte


def _tma_matches_copy_loader(cache, q, lengths, setting, monkeypatch):
    """The TMA loader (`setting`=on) against the cp.async one (off) on the same calls, bitwise
    (outputs and LSE), and against the reference; before Hopper `on` is an error naming it.
    False when refused (the caller stops)."""
    for kw in (dict(), dict(causal=True, num_splits=3), dict(window_size=(150, 0), softcap=4.0)):
        monkeypatch.setenv(setting, "off")
        ref_out, ref_lse = cache.call(q, lengths, return_softmax_lse=True, **kw)
        monkeypatch.setenv(setting, "on")
        if torch.cuda.get_device_capability()[0] < 9:
            with pytest.raises(ValueError, match=f"{setting}=on"):
                cache.call(q, lengths, **kw)
            return False
        out, lse = cache.call(q, lengths, return_softmax_lse=True, **kw)
        assert torch.equal(out, ref_out), kw
        assert torch.equal(lse, ref_lse), kw
        check_against_reference(cache, q, out, lse, lengths, **kw)
    return True


@pytest.mark.parametrize("page_size", [None, 16, 64, 256])
@pytest.mark.parametrize("spec", FP8_CACHE, ids=lambda s: s.name)
def test_fp8_tma_loader_matches_the_copy_loader(spec, page_size, monkeypatch):
    """Hopper's TMA loader (FLASHGEN_DECODE_TMA=on) against the cp.async one (off) on the same
    calls: bitwise equal outputs and LSE, with NaN bytes in every cache row past the keys;
    per-page and per-head scales, ragged lengths, splits."""
    if spec.head_dim_qk not in (64, 128):
        pytest.skip("the TMA loader takes head dims 64 and 128")
    batch, hkv, h = len(LENGTHS), 2, 16
    lengths = torch.tensor(LENGTHS, dtype=torch.int32, device="cuda")
    for per_page in (True, False):
        cache = Cache(spec, batch, hkv, 1100, page_size, per_page_scales=per_page)
        _poison_unused_rows(cache, lengths)
        if not _tma_matches_copy_loader(cache, _q(spec, batch, 2, h), lengths, "FLASHGEN_DECODE_TMA", monkeypatch):
            return


@pytest.mark.parametrize("page_size", [None, 16, 64, 256])
@pytest.mark.parametrize("spec", BF16_CACHE, ids=lambda s: s.name)
def test_16bit_tma_loader_matches_the_copy_loader(spec, page_size, monkeypatch):
    """The 16-bit kernel's TMA loader (FLASHGEN_DECODE_TMA_16BIT=on, Hopper; head dim 128 lands as
    two 128-byte column blocks) against its cp.async loader (off) on the same calls: bitwise
    equal outputs and LSE, with NaN in every cache row past the keys; ragged lengths, splits."""
    if spec.head_dim_qk not in (64, 128):
        pytest.skip("the 16-bit TMA loader takes head dims 64 and 128")
    batch, hkv, h = len(LENGTHS), 2, 16
    lengths = torch.tensor(LENGTHS, dtype=torch.int32, device="cuda")
    cache = Cache(spec, batch, hkv, 1100, page_size)
    _poison_unused_rows(cache, lengths, nan_byte=0xFF)
    q = _q(spec, batch, 2, h)
    if not _tma_matches_copy_loader(cache, q, lengths, "FLASHGEN_DECODE_TMA_16BIT", monkeypatch):
        return
    monkeypatch.setenv("FLASHGEN_DECODE_TMA_16BIT", "sometimes")
    with pytest.raises(ValueError, match="expected auto, on or off"):
        cache.call(q, lengths)


@pytest.mark.parametrize("spec", FP8_CACHE[:1], ids=lambda s: s.name)
def test_fp8_tma_loader_refuses_what_it_cannot_load(spec, monkeypatch):
    """FLASHGEN_DECODE_TMA=on names why a call cannot take the TMA loader (page size 1 here);
    auto falls back to cp.async; a wrong setting is an error."""
    cache = Cache(spec, 2, 2, 300, page_size=1)
    lengths = torch.tensor([300, 17], dtype=torch.int32, device="cuda")
    q = _q(spec, 2, 1, 8)
    monkeypatch.setenv("FLASHGEN_DECODE_TMA", "on")
    with pytest.raises(ValueError, match="FLASHGEN_DECODE_TMA=on"):
        cache.call(q, lengths)
    monkeypatch.setenv("FLASHGEN_DECODE_TMA", "auto")
    check_against_reference(cache, q, cache.call(q, lengths), None, lengths)
    monkeypatch.setenv("FLASHGEN_DECODE_TMA", "sometimes")
    with pytest.raises(ValueError, match="expected auto, on or off"):
        cache.call(q, lengths)


def _cluster_combine_refused(monkeypatch, call):
    """Before Hopper FLASHGEN_DECODE_COMBINE=cluster is an error naming the setting."""
    if torch.cuda.get_device_capability()[0] >= 9:
        return False
    monkeypatch.setenv("FLASHGEN_DECODE_COMBINE", "cluster")
    with pytest.raises(ValueError, match="FLASHGEN_DECODE_COMBINE=cluster"):
        call()
    return True


@pytest.mark.parametrize("page_size", [None, 16])
@pytest.mark.parametrize("spec", DECODE_KERNELS, ids=lambda s: s.name)
def test_cluster_combine_matches_the_combine_kernel(spec, page_size, monkeypatch):
    """Splits combined in a thread-block cluster (FLASHGEN_DECODE_COMBINE=cluster, Hopper) against
    the combine kernel (kernel) on the same calls: 2-16 splits, ragged lengths (splits without
    keys, a sequence without keys), several row blocks, sinks and LSE; both against the float32
    reference. The two sum the splits in different orders: equal to float32 rounding."""
    batch, hkv = len(LENGTHS), 2
    cache = Cache(spec, batch, hkv, 1100, page_size)
    lengths = torch.tensor(LENGTHS, dtype=torch.int32, device="cuda")
    sinks = torch.randn(2 * 24, device="cuda")
    cases = [(1, 8, dict(num_splits=2)), (1, 8, dict(num_splits=16)), (2, 24, dict(num_splits=7, causal=True)),
             (1, 8, dict(num_splits=5, sinks=sinks[:16], window_size=(300, 0))), (1, 8, dict())]
    if _cluster_combine_refused(monkeypatch, lambda: cache.call(_q(spec, batch, 1, 16), lengths, num_splits=4)):
        return
    for sq, group, kw in cases:
        q = _q(spec, batch, sq, hkv * group)
        monkeypatch.setenv("FLASHGEN_DECODE_COMBINE", "kernel")
        ref_out, ref_lse = cache.call(q, lengths, return_softmax_lse=True, **kw)
        monkeypatch.setenv("FLASHGEN_DECODE_COMBINE", "cluster" if kw else "auto")
        out, lse = cache.call(q, lengths, return_softmax_lse=True, **kw)
        torch.testing.assert_close(out.float(), ref_out.float(), atol=1e-3, rtol=8e-3, msg=lambda m: f"{kw}: {m}")
        assert torch.equal(torch.isfinite(lse), torch.isfinite(ref_lse)), kw
        finite = torch.isfinite(ref_lse)
        torch.testing.assert_close(lse[finite], ref_lse[finite], atol=1e-5, rtol=1e-5)
        check_against_reference(cache, q, out, lse, lengths, **kw)


@pytest.mark.parametrize("spec", DECODE_KERNELS[:1], ids=lambda s: s.name)
def test_cluster_combine_refuses_what_it_cannot_combine(spec, monkeypatch):
    """FLASHGEN_DECODE_COMBINE=cluster names why a call cannot combine in a cluster (17 splits
    here); auto falls back to the combine kernel; a wrong setting is an error."""
    cache = Cache(spec, 2, 2, 3000)
    lengths = torch.tensor([3000, 1900], dtype=torch.int32, device="cuda")
    q = _q(spec, 2, 1, 8)
    if _cluster_combine_refused(monkeypatch, lambda: cache.call(q, lengths, num_splits=4)):
        return
    monkeypatch.setenv("FLASHGEN_DECODE_COMBINE", "cluster")
    with pytest.raises(ValueError, match="FLASHGEN_DECODE_COMBINE=cluster.*at most 16 splits"):
        cache.call(q, lengths, num_splits=17)
    monkeypatch.setenv("FLASHGEN_DECODE_COMBINE", "auto")
    out, lse = cache.call(q, lengths, num_splits=17, return_softmax_lse=True)
    check_against_reference(cache, q, out, lse, lengths)
    monkeypatch.setenv("FLASHGEN_DECODE_COMBINE", "sometimes")
    with pytest.raises(ValueError, match="expected kernel, auto or cluster"):
        cache.call(q, lengths, num_splits=4)


@pytest.mark.parametrize("spec", FP8_CACHE, ids=lambda s: s.name)
def test_fp8_append_quantizes_into_the_cache(spec):
    """New bf16 keys/values are stored as saturate(x / scale) in e4m3 at each sequence's end."""
    batch, hkv, h, new = 2, 2, 8, 3
    cache = Cache(spec, batch, hkv, 256, page_size=16)
    lengths = torch.tensor([5, 200], dtype=torch.int32, device="cuda")
    q = _q(spec, batch, new, h)
    k_new = torch.randn(batch, new, hkv, spec.head_dim_qk, device="cuda", dtype=q.dtype) * 3
    v_new = torch.randn_like(k_new)
    k_new[0, 0, 0, 0] = 1e6  # saturates
    out = flashgen.flash_attn_with_kvcache(q, cache.k, cache.v, k_new, v_new, cache_seqlens=lengths,
                                           block_table=cache.block_table, causal=True, k_descale=cache.k_descale,
                                           v_descale=cache.v_descale)
    for b in range(batch):
        for t in range(new):
            pos = int(lengths[b]) + t
            page = int(cache.block_table[b, pos // 16])
            for src, dst, scale in ((k_new, cache.k, cache.k_descale), (v_new, cache.v, cache.v_descale)):
                expect = (src[b, t].float() / scale[page][:, None]).clamp(-448, 448).to(torch.float8_e4m3fn)
                assert torch.equal(dst[page, pos % 16].view(torch.uint8), expect.view(torch.uint8))
    cache.k_deq = cache.k.float() * cache.k_descale[:, None, :, None]
    cache.v_deq = cache.v.float() * cache.v_descale[:, None, :, None]
    check_against_reference(cache, q, out, None, lengths + new, causal=True)


@pytest.mark.parametrize("spec", DECODE_KERNELS[:1] + FP8_CACHE[:1], ids=lambda s: s.name)
def test_decode_graph_replay_with_new_lengths(spec):
    """Captured once with a caller-owned workspace and an automatic split count; replayed with
    other cache_seqlens it matches an eager call bitwise."""
    batch, hkv, h = 2, 2, 8
    cache = Cache(spec, batch, hkv, 4096, page_size=16)
    q = _q(spec, batch, 1, h)
    lengths = torch.tensor([100, 4000], dtype=torch.int32, device="cuda")
    out = torch.empty_like(q)
    workspace = torch.empty(64 << 20, dtype=torch.uint8, device="cuda")

    def step():
        cache.call(q, lengths, out=out, workspace=workspace)
    step()
    graph = capture_graph(step)
    for new_lengths in ([7, 4095], [4096, 0], [1, 1]):
        lengths.copy_(torch.tensor(new_lengths, dtype=torch.int32))
        graph.replay()
        torch.cuda.synchronize()
        expected = cache.call(q, lengths, workspace=workspace)
        assert torch.equal(out, expected)
        check_against_reference(cache, q, out, None, lengths)


def test_decode_agrees_with_the_forward_path(monkeypatch):
    """The decode kernel and the forward kernel (FLASHGEN_FWD_BACKEND=sm80) on the same call."""
    from gpu_common import kernels
    fwd = {(s.dtype, s.head_dim_qk) for s in kernels(paged=True) if s.arch == "sm80" and not s.causal
           and s.head_dim_qk == s.head_dim_v}
    pairs = [s for s in BF16_CACHE if (s.dtype, s.head_dim_qk) in fwd]
    if not pairs:
        pytest.skip("no decode kernel whose paged sm80 forward kernel is built too")
    spec = pairs[0]
    monkeypatch.setenv("FLASHGEN_FWD_BACKEND", "decode")
    batch, hkv, h = 4, 2, 8
    cache = Cache(spec, batch, hkv, 2000, page_size=32)
    lengths = torch.tensor([1, 999, 2000, 64], dtype=torch.int32, device="cuda")
    q = _q(spec, batch, 1, h)
    decode = cache.call(q, lengths)
    monkeypatch.setenv("FLASHGEN_FWD_BACKEND", "sm80")
    forward = cache.call(q, lengths)
    torch.testing.assert_close(decode, forward, atol=2e-2, rtol=1e-2)
