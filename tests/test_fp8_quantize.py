"""The FP8 (e4m3) quantization pre-pass, flashgen.fp8.quantize.

CPU: the Hadamard rotation, dequantize of hand-packed PV-layout data, the Python argument
checks, and (when the library is built with the pre-pass) the C API's own checks. GPU: the
kernel against a pure-PyTorch reference, bitwise (scales and e4m3 values), for every
granularity and layout, fixed length and varlen with odd lengths.
"""

import math

import pytest
import torch

from conftest import requires_gpu

fq = pytest.importorskip("flashgen.fp8.quantize")

E4M3 = torch.float8_e4m3fn
DTYPES = [torch.bfloat16, torch.float16]
LENGTHS = [1, 17, 113, 0, 239, 64]


# ---- the reference (pure PyTorch, a loop over sequences) ----

def _column_of_key():
    """Inverse of flashgen.h's PV rule: column c of a 16-group holds key (c&1) + 8((c>>1)&1) + 2(c>>2)."""
    inverse = [None] * 16
    for c in range(16):
        inverse[(c & 1) + 8 * ((c >> 1) & 1) + 2 * (c >> 2)] = c
    return inverse


COLUMN_OF_KEY = _column_of_key()


def _scale_of(amax):
    # Tensor divisors keep PyTorch on true division (a CPU scalar divisor becomes a multiply).
    return torch.where(amax > 0, amax / torch.full_like(amax, 448.0), torch.ones_like(amax))


def _e4m3(x, scale):
    return (x / scale).clamp(-448.0, 448.0).to(E4M3)


def _pv_place(dst, q, first_column):
    """dst (heads, dim, columns) uint8 <- q (len, heads, dim) uint8 keys, permuted in 16-groups."""
    n = q.shape[0]
    if n == 0:
        return
    cols = torch.tensor([first_column + 16 * (j // 16) + COLUMN_OF_KEY[j % 16] for j in range(n)], device=q.device)
    dst[:, :, cols] = q.permute(1, 2, 0)


def ref_quantize(x, granularity="block", block=128, layout="rows", cu_seqlens=None, max_seqlen=None):
    """(data, scale) as the pre-pass must write them, padding zeros included."""
    xf = x.float()
    heads, dim = x.shape[-2], x.shape[-1]
    dev = x.device
    if cu_seqlens is None:
        cu = [i * x.shape[1] for i in range(x.shape[0] + 1)]
        seqs = [xf[b] for b in range(x.shape[0])]
        max_len = x.shape[1]
    else:
        cu = cu_seqlens.tolist()
        seqs = [xf[cu[b]:cu[b + 1]] for b in range(len(cu) - 1)]
        max_len = max_seqlen if max_seqlen is not None else max(len(s) for s in seqs)
    batch = len(seqs)

    def amax_rows(rows):  # (heads,)
        return rows.abs().amax(dim=(0, 2)) if rows.shape[0] else torch.zeros(heads, device=dev)

    if granularity == "tensor":
        scale = _scale_of(torch.stack([amax_rows(s).amax() for s in seqs]).amax().reshape(1))
        row_scales = [scale.view(1, 1).expand(len(s), heads) for s in seqs]
    elif granularity == "head":
        scale = _scale_of(torch.stack([amax_rows(s) for s in seqs]))
        row_scales = [scale[b].view(1, heads).expand(len(s), heads) for b, s in enumerate(seqs)]
    else:
        nblk = -(-max_len // block)
        amax = torch.zeros(batch, heads, nblk, device=dev)
        for b, s in enumerate(seqs):
            for k in range(-(-len(s) // block)):
                amax[b, :, k] = amax_rows(s[k * block:(k + 1) * block])
        scale = _scale_of(amax)
        row_scales = [scale[b][:, torch.arange(len(s), device=dev) // block].t() for b, s in enumerate(seqs)]
    q = [_e4m3(s, rs.unsqueeze(-1)).view(torch.uint8) for s, rs in zip(seqs, row_scales)]

    if layout == "rows":
        if cu_seqlens is None:
            data = torch.stack(q)
        else:
            data = torch.zeros(x.shape, dtype=torch.uint8, device=dev)
            for b, qb in enumerate(q):
                data[cu[b]:cu[b + 1]] = qb
    elif cu_seqlens is None:
        data = torch.zeros(batch, heads, dim, 16 * (-(-max_len // 16)), dtype=torch.uint8, device=dev)
        for b, qb in enumerate(q):
            _pv_place(data[b], qb, 0)
    else:
        total = x.shape[0]
        data = torch.zeros(heads, dim, 16 * (-(-total // 16)) + 16 * batch, dtype=torch.uint8, device=dev)
        for b, qb in enumerate(q):
            _pv_place(data, qb, 16 * (-(-cu[b] // 16)) + 16 * b)
    return data.view(E4M3), scale


def _fp8_tensor(x, granularity, block, layout, cu_seqlens=None, max_seqlen=None):
    """The reference's result wrapped as quantize() returns it."""
    data, scale = ref_quantize(x, granularity, block, layout, cu_seqlens, max_seqlen)
    if cu_seqlens is None:
        return fq.Fp8Tensor(data, scale, granularity, block, layout, x.shape[1], None, x.shape[1])
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    return fq.Fp8Tensor(data, scale, granularity, block, layout, x.shape[0], cu_seqlens,
                        max_seqlen if max_seqlen is not None else max(lengths))


def _packed(lengths, heads, dim, dtype, device):
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    return torch.randn(sum(lengths), heads, dim, dtype=dtype, device=device), cu.to(device)


def _error_bound(x, deq, row_scale):
    """e4m3 keeps 3 mantissa bits: |error| <= 2^-4 |x| (normals) + scale 2^-10 (subnormals)."""
    bound = x.float().abs() * (2.0 ** -4) * (1 + 1e-5) + row_scale * (2.0 ** -10) * (1 + 1e-5)
    excess = (deq - x.float()).abs() - bound
    assert excess.max().item() <= 0, f"dequantize(quantize(x)) off by {excess.max().item():.3e} beyond the e4m3 bound"


# ---- CPU: the rotation ----

@pytest.mark.parametrize("head_dim,block", [(16, 16), (64, 64), (80, 16), (96, 32), (128, 128), (192, 64), (256, 256)])
def test_hadamard_rotation_is_orthogonal_block_hadamard(head_dim, block):
    r = fq.hadamard_rotation(head_dim, seed=5)
    assert r.dtype == torch.float32 and r.shape == (head_dim, head_dim)
    torch.testing.assert_close(r @ r.t(), torch.eye(head_dim), atol=1e-6, rtol=0)
    mask = torch.block_diag(*([torch.ones(block, block)] * (head_dim // block))).bool()
    assert torch.all(r[~mask] == 0)
    torch.testing.assert_close(r[mask].abs(), torch.full_like(r[mask], 1 / math.sqrt(block)))


def test_hadamard_rotation_keeps_qk_and_depends_on_the_seed():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(33, 96, generator=g, dtype=torch.float64)
    k = torch.randn(17, 96, generator=g, dtype=torch.float64)
    r = fq.hadamard_rotation(96, seed=1).double()
    torch.testing.assert_close((q @ r) @ (k @ r).t(), q @ k.t(), atol=1e-5, rtol=1e-5)
    assert torch.equal(fq.hadamard_rotation(96, seed=1), fq.hadamard_rotation(96, seed=1))
    assert not torch.equal(fq.hadamard_rotation(96, seed=1), fq.hadamard_rotation(96, seed=2))


def test_hadamard_rotation_spreads_an_outlier_channel():
    x = torch.zeros(1, 128)
    x[0, 7] = 100.0
    y = x @ fq.hadamard_rotation(128)
    assert torch.allclose(y.abs(), torch.full_like(y, 100.0 / math.sqrt(128)))


@pytest.mark.parametrize("bad", [0, -16, 2.5, True])
def test_hadamard_rotation_rejects_bad_head_dims(bad):
    with pytest.raises(ValueError, match="head_dim"):
        fq.hadamard_rotation(bad)


# ---- CPU: the layout rule, the reference and dequantize ----

def test_pv_column_rule_matches_the_header():
    assert [fq.pv_key_of_column(c) for c in range(16)] == [0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15]
    assert [COLUMN_OF_KEY[fq.pv_key_of_column(c)] for c in range(16)] == list(range(16))
    assert fq.pv_columns(17, 3, varlen=False) == 32
    assert fq.pv_columns(70, 3, varlen=True) == 80 + 48


def test_reference_scales_and_bounds():
    torch.manual_seed(0)
    x = torch.randn(2, 100, 3, 32, dtype=torch.bfloat16)
    x[1, :, 2] = 0  # an all-zero (batch entry, head): scale 1, zeros
    data, scale = ref_quantize(x, "head")
    amax = x.float().abs().amax(dim=(1, 3))
    assert torch.equal(scale[0], (amax[0].double() / 448).float())
    assert scale[1, 2].item() == 1.0 and torch.all(data[1, :, 2].view(torch.uint8) == 0)
    assert data.float().abs().max().item() == 448.0
    deq = fq.dequantize(_fp8_tensor(x, "head", 128, "rows"))
    _error_bound(x, deq, scale.view(2, 1, 3, 1).expand(2, 100, 3, 32))


@pytest.mark.parametrize("granularity,block", [("tensor", 128), ("head", 128), ("block", 32), ("block", 48)])
@pytest.mark.parametrize("seqlen", [1, 17, 40])
def test_dequantize_undoes_the_pv_layout_fixed_length(granularity, block, seqlen):
    torch.manual_seed(seqlen)
    x = torch.randn(2, seqlen, 3, 32, dtype=torch.float16)
    rows = _fp8_tensor(x, granularity, block, "rows")
    pv = _fp8_tensor(x, granularity, block, "pv")
    assert pv.data.shape == (2, 3, 32, 16 * (-(-seqlen // 16)))
    assert (pv.num_heads, pv.head_dim, pv.batch) == (3, 32, 2)
    deq = fq.dequantize(rows)
    assert deq.dtype == torch.float32 and deq.shape == x.shape
    assert torch.equal(fq.dequantize(pv), deq)
    _error_bound(x, deq, _row_scales_fixed(rows))


def _row_scales_fixed(t):
    b, s, h = t.batch, t.seqlen, t.num_heads
    if t.granularity == "tensor":
        rs = t.scale.view(1, 1, 1).expand(b, s, h)
    elif t.granularity == "head":
        rs = t.scale.view(b, 1, h).expand(b, s, h)
    else:
        rs = t.scale[:, :, torch.arange(s) // t.block].transpose(1, 2)
    return rs.unsqueeze(-1)


@pytest.mark.parametrize("granularity,block", [("tensor", 128), ("head", 128), ("block", 16), ("block", 64)])
def test_dequantize_undoes_the_pv_layout_varlen(granularity, block):
    torch.manual_seed(1)
    x, cu = _packed(LENGTHS, 2, 16, torch.bfloat16, "cpu")
    rows = _fp8_tensor(x, granularity, block, "rows", cu)
    pv = _fp8_tensor(x, granularity, block, "pv", cu, max_seqlen=max(LENGTHS))
    assert pv.data.shape == (2, 16, 16 * (-(-x.shape[0] // 16)) + 16 * len(LENGTHS))
    deq = fq.dequantize(rows)
    assert deq.shape == x.shape
    assert torch.equal(fq.dequantize(pv), deq)
    for b, n in enumerate(LENGTHS):
        seq = x[cu[b]:cu[b + 1]].unsqueeze(0)
        part = _fp8_tensor(seq, granularity, block, "rows")
        if granularity != "tensor":  # a per-tensor scale spans every sequence
            assert torch.equal(fq.dequantize(part)[0], deq[cu[b]:cu[b + 1]])


def test_dequantize_varlen_pv_ignores_padding_and_gaps():
    """Columns outside the sequences' keys never reach dequantize's output."""
    x, cu = _packed([3, 20], 1, 16, torch.bfloat16, "cpu")
    t = _fp8_tensor(x, "tensor", 128, "pv", cu)
    poisoned = t.data.view(torch.uint8).clone()
    used = torch.zeros(poisoned.shape[-1], dtype=torch.bool)
    for b, start in enumerate([0, 3]):
        first = 16 * (-(-start // 16)) + 16 * b
        for j in range(int(cu[b + 1] - cu[b])):
            used[first + 16 * (j // 16) + COLUMN_OF_KEY[j % 16]] = True
    assert int(used.sum()) == 23
    poisoned[..., ~used] = 0x7F  # e4m3 NaN
    again = fq.Fp8Tensor(poisoned.view(E4M3), t.scale, "tensor", 128, "pv", t.seqlen, cu, t.max_seqlen)
    assert torch.equal(fq.dequantize(again), fq.dequantize(t))


def test_fp8_tensor_unpacks_and_describes_its_scales():
    x = torch.randn(2, 40, 3, 32, dtype=torch.bfloat16)
    t = _fp8_tensor(x, "block", 16, "rows")
    data, scale = t
    assert data is t.data and scale is t.scale and scale.shape == (2, 3, 3)
    arg = t.scale_arg()
    assert arg[0] is t.scale and arg[1:] == (9, 3, 1, 16)
    s, bs, hs, ks, rows = _fp8_tensor(x, "head", 16, "rows").scale_arg()
    assert (bs, hs, ks) == (3, 1, 0) and rows % 128 == 0 and rows >= 1 << 20
    s, bs, hs, ks, rows = _fp8_tensor(x, "tensor", 16, "rows").scale_arg()
    assert s.shape == (1,) and (bs, hs, ks) == (0, 0, 0) and rows % 128 == 0
    with pytest.raises(AttributeError):
        t.layout = "pv"  # frozen


# ---- CPU: argument checks raised before the library ----

def _x(*shape, dtype=torch.bfloat16):
    return torch.randn(*shape).to(dtype)


@pytest.mark.parametrize("call,error,match", [
    (lambda: fq.quantize([1.0]), TypeError, "x must be a torch.Tensor"),
    (lambda: fq.quantize(_x(2, 4, 64)), ValueError, "x must have 4 dimensions"),
    (lambda: fq.quantize(_x(2, 3, 4, 64), cu_seqlens=torch.tensor([0, 2], dtype=torch.int32)), ValueError,
     "x must have 3 dimensions"),
    (lambda: fq.quantize(_x(2, 3, 4, 64, dtype=torch.float32)), TypeError, "float16 or torch.bfloat16"),
    (lambda: fq.quantize(_x(2, 3, 4, 40)), ValueError, "multiple of 16"),
    (lambda: fq.quantize(_x(2, 3, 4, 512)), ValueError, "multiple of 16 up to 256"),
    (lambda: fq.quantize(_x(2, 3, 64, 4).transpose(2, 3)), ValueError, "contiguous in its last dimension"),
    (lambda: fq.quantize(_x(2, 3, 4, 64), granularity="row"), ValueError, "granularity must be one of"),
    (lambda: fq.quantize(_x(2, 3, 4, 64), layout="cols"), ValueError, "layout must be one of"),
    (lambda: fq.quantize(_x(2, 3, 4, 64), block=0), ValueError, "block must be in"),
    (lambda: fq.quantize(_x(2, 3, 4, 64), block=2.0), TypeError, "block must be an int"),
    (lambda: fq.quantize(_x(2, 3, 4, 64), block=100, layout="pv"), ValueError, "multiple of 16"),
    (lambda: fq.quantize(_x(5, 4, 64), cu_seqlens=torch.tensor([0, 5])), TypeError, "cu_seqlens must be int32"),
    (lambda: fq.quantize(_x(5, 4, 64), cu_seqlens=torch.tensor([5], dtype=torch.int32)), ValueError,
     "batch \\+ 1 offsets"),
    (lambda: fq.quantize(_x(5, 4, 64), cu_seqlens=torch.tensor([0, 5], dtype=torch.int32), max_seqlen=-1),
     ValueError, "max_seqlen"),
    (lambda: fq.quantize(_x(2, 3, 4, 64), max_seqlen=3), ValueError, "max_seqlen goes with cu_seqlens"),
    (lambda: fq.quantize(_x(2, 3, 4, 64), rotation=torch.eye(32)), ValueError, "rotation must be"),
    (lambda: fq.quantize(_x(2, 3, 4, 64)), ValueError, "on cpu; flashgen runs on CUDA"),
])
def test_quantize_rejects_bad_arguments_before_the_library(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---- CPU: the C API's checks (the library is needed, not a GPU) ----

def _c_module():
    try:
        from flashgen._library import lib

        c = lib()
    except ImportError as err:
        pytest.skip(f"flashgen's library is not built: {err}")
    if not hasattr(c, "fp8_quantize"):
        pytest.skip("this build of flashgen._C has no fp8_quantize")
    return c


def _c_args(c, **changes):
    a = c.Fp8QuantizeArgs()
    a.x, a.out, a.scale, a.workspace = 1 << 20, 2 << 20, 3 << 20, 4 << 20
    a.batch, a.seqlen, a.num_heads, a.head_dim = 2, 100, 4, 64
    a.x_batch_stride, a.x_row_stride, a.x_head_stride = 100 * 256, 256, 64
    a.out_batch_stride, a.out_row_stride, a.out_head_stride = 100 * 256, 256, 64
    for name, value in changes.items():
        setattr(a, name, value)
    return a


def test_c_api_defaults_and_workspace():
    c = _c_module()
    a = c.Fp8QuantizeArgs()
    assert (a.dtype, a.granularity, a.block_rows, a.layout) == (c.DTYPE_BF16, c.FP8_PER_BLOCK, 128, c.FP8_LAYOUT_ROWS)
    assert c.fp8_quantize_workspace(a) == 0
    a.granularity = c.FP8_PER_HEAD
    assert c.fp8_quantize_workspace(a) == 0
    a.granularity = c.FP8_PER_TENSOR
    assert c.fp8_quantize_workspace(a) > 0
    assert c.DTYPE_E4M3 == 2 and c.FP8_LAYOUT_PV == 1


@pytest.mark.parametrize("changes,match", [
    (dict(dtype=2), "FP16 or BF16"),
    (dict(head_dim=40), "head_dim a multiple of 16"),
    (dict(head_dim=272, x_row_stride=272 * 4, x_head_stride=272), "head_dim a multiple of 16"),
    (dict(batch=0), "batch and num_heads"),
    (dict(num_heads=0), "batch and num_heads"),
    (dict(seqlen=-1), "seqlen"),
    (dict(x=0), "x is NULL"),
    (dict(out=0), "out is NULL"),
    (dict(scale=0), "scale is NULL"),
    (dict(x=(1 << 20) + 8), "16-byte aligned"),
    (dict(x_row_stride=260), "multiples of 8 elements"),
    (dict(out_head_stride=4), "multiples of 8"),
    (dict(block_rows=0), "block_rows in 1"),
    (dict(layout=1, block_rows=100, out_row_stride=112), "multiple of 16"),
    (dict(layout=1, out_row_stride=64, out_head_stride=64 * 112, out_batch_stride=4 * 64 * 112),
     "out_row_stride \\(64\\) must hold its 112 key columns"),
    (dict(layout=1, out_row_stride=120), "multiples of 16"),
    (dict(granularity=0, workspace=0), "workspace"),
    (dict(granularity=0, workspace_bytes=2), "workspace"),
    (dict(granularity=7), "granularity"),
    (dict(layout=3), "layout"),
])
def test_c_api_rejects_bad_arguments(changes, match):
    c = _c_module()
    a = _c_args(c, **changes)
    if a.granularity == c.FP8_PER_TENSOR and "workspace_bytes" not in changes:
        a.workspace_bytes = c.fp8_quantize_workspace(a)
    with pytest.raises(ValueError, match=match):
        c.fp8_quantize(a, 0)


# ---- GPU: the kernel against the reference ----

def _assert_same(t, ref_data, ref_scale):
    assert t.scale.shape == ref_scale.shape, (t.scale.shape, ref_scale.shape)
    assert torch.equal(t.scale, ref_scale), f"scales differ: {(t.scale != ref_scale).sum().item()} of {t.scale.numel()}"
    got, want = t.data.view(torch.uint8), ref_data.view(torch.uint8)
    assert got.shape == want.shape, (got.shape, want.shape)
    bad = (got != want).nonzero()
    assert bad.numel() == 0, (f"{bad.shape[0]} of {got.numel()} e4m3 bytes differ, first at {tuple(bad[0].tolist())}: "
                              f"{got[tuple(bad[0])].item():#x} vs {want[tuple(bad[0])].item():#x}")


def _poison_allocator(nbytes):
    """Leaves garbage (0x7f, an e4m3 NaN) in the caching allocator's next block of this size, so
    that unwritten output bytes show."""
    torch.empty(nbytes, dtype=torch.uint8, device="cuda").fill_(0x7F)


def _granularity_cases():
    cases = [("tensor", 128), ("head", 128)]
    return cases + [("block", 64), ("block", 128)]


@requires_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("granularity,block", _granularity_cases())
@pytest.mark.parametrize("layout", ["rows", "pv"])
def test_fixed_length_matches_reference(dtype, head_dim, granularity, block, layout):
    torch.manual_seed(0)
    for seqlen in (239, 1, 17, 113):
        x = torch.randn(3, seqlen, 4, head_dim, device="cuda", dtype=dtype) * 3
        x[1, :, 2] *= 50  # one (batch entry, head) with a wider range
        ref_data, ref_scale = ref_quantize(x, granularity, block, layout)
        _poison_allocator(ref_data.numel())
        t = fq.quantize(x, granularity=granularity, block=block, layout=layout)
        assert (t.layout, t.granularity, t.seqlen, t.data.dtype) == (layout, granularity, seqlen, E4M3)
        _assert_same(t, ref_data, ref_scale)


@requires_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("granularity,block", _granularity_cases())
@pytest.mark.parametrize("layout", ["rows", "pv"])
def test_varlen_matches_reference(dtype, head_dim, granularity, block, layout):
    torch.manual_seed(1)
    x, cu = _packed(LENGTHS, 4, head_dim, dtype, "cuda")
    ref_data, ref_scale = ref_quantize(x, granularity, block, layout, cu, max(LENGTHS))
    _poison_allocator(ref_data.numel())
    t = fq.quantize(x, granularity=granularity, block=block, layout=layout, cu_seqlens=cu, max_seqlen=max(LENGTHS))
    assert t.seqlen == x.shape[0] and t.max_seqlen == max(LENGTHS)
    _assert_same(t, ref_data, ref_scale)
    # max_seqlen larger than the longest sequence: more scale blocks, all past the ends scale 1.
    t = fq.quantize(x, granularity=granularity, block=block, layout=layout, cu_seqlens=cu, max_seqlen=300)
    _assert_same(t, *ref_quantize(x, granularity, block, layout, cu, 300))


@requires_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("head_dim", [16, 48, 96, 256])
@pytest.mark.parametrize("granularity,block", [("tensor", 128), ("head", 128), ("block", 16), ("block", 128),
                                               ("block", 512)])
@pytest.mark.parametrize("layout", ["rows", "pv"])
def test_other_head_dims_and_tile_shapes(head_dim, granularity, block, layout):
    """Head dims whose rows do not divide the CTA evenly, and blocks spanning several tiles."""
    torch.manual_seed(2)
    x = torch.randn(2, 1000, 3, head_dim, device="cuda", dtype=torch.bfloat16)
    _assert_same(fq.quantize(x, granularity=granularity, block=block, layout=layout),
                 *ref_quantize(x, granularity, block, layout))
    xv, cu = _packed([700, 3, 0, 301], 3, head_dim, torch.float16, "cuda")
    _assert_same(fq.quantize(xv, granularity=granularity, block=block, layout=layout, cu_seqlens=cu),
                 *ref_quantize(xv, granularity, block, layout, cu))


@requires_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["rows", "pv"])
def test_strided_input_and_zero_groups(layout):
    torch.manual_seed(3)
    qkv = torch.randn(2, 150, 3, 4, 64, device="cuda", dtype=torch.bfloat16)
    x = qkv[:, :, 1]  # (batch, seqlen, heads, dim) with row stride 3 * heads * dim
    x[0, 64:128] = 0  # one all-zero block per head: scale 1
    x[1, :, 3] = 0  # one all-zero head
    for granularity in ("tensor", "head", "block"):
        t = fq.quantize(x, granularity=granularity, block=64, layout=layout)
        _assert_same(t, *ref_quantize(x, granularity, 64, layout))
    assert fq.quantize(x, granularity="head").scale[1, 3].item() == 1.0
    assert torch.all(fq.quantize(x, granularity="block", block=64).scale[0, :, 1] == 1.0)
    zeros = fq.quantize(torch.zeros_like(x), granularity="tensor", layout=layout)
    assert zeros.scale.item() == 1.0 and torch.all(zeros.data.view(torch.uint8) == 0)


@requires_gpu
@pytest.mark.gpu
def test_per_tensor_workspace_is_reset_between_calls():
    big = torch.randn(2, 50, 2, 64, device="cuda", dtype=torch.float16) * 100
    small = big / 1000
    fq.quantize(big, granularity="tensor")
    t = fq.quantize(small, granularity="tensor")
    _assert_same(t, *ref_quantize(small, "tensor"))


@requires_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["rows", "pv"])
@pytest.mark.parametrize("granularity", ["tensor", "head", "block"])
def test_dequantize_roundtrip_error(layout, granularity):
    torch.manual_seed(4)
    x = torch.randn(2, 239, 4, 128, device="cuda", dtype=torch.bfloat16)
    x[:, 5, 1, 7] = 80.0  # an outlier
    t = fq.quantize(x, granularity=granularity, layout=layout)
    deq = fq.dequantize(t)
    assert deq.shape == x.shape and deq.dtype == torch.float32
    rows = fq.quantize(x, granularity=granularity, layout="rows")
    _error_bound(x, deq, _row_scales_fixed(rows))
    rel = ((deq - x.float()).norm() / x.float().norm()).item()
    assert rel < 0.05, rel
    xv, cu = _packed(LENGTHS, 2, 64, torch.float16, "cuda")
    deq = fq.dequantize(fq.quantize(xv, granularity=granularity, layout=layout, cu_seqlens=cu))
    rel = ((deq - xv.float()).norm() / xv.float().norm()).item()
    assert deq.shape == xv.shape and rel < 0.05, rel


@requires_gpu
@pytest.mark.gpu
def test_rotation_is_applied_first():
    torch.manual_seed(5)
    x = torch.randn(2, 77, 2, 96, device="cuda", dtype=torch.bfloat16)
    r = fq.hadamard_rotation(96, seed=3, device="cuda")
    t = fq.quantize(x, rotation=r, layout="pv")
    rotated = (x.float() @ r).to(torch.bfloat16)
    _assert_same(t, *ref_quantize(rotated, "block", 128, "pv"))


@requires_gpu
@pytest.mark.gpu
def test_empty_inputs():
    x = torch.randn(2, 0, 3, 64, device="cuda", dtype=torch.bfloat16)
    assert fq.quantize(x, granularity="block").scale.shape == (2, 3, 0)
    assert torch.all(fq.quantize(x, granularity="head").scale == 1)
    assert fq.quantize(x, granularity="tensor").scale.item() == 1.0
    assert fq.quantize(x, layout="pv").data.shape == (2, 3, 64, 0)
    xv, cu = _packed([0, 0], 3, 64, torch.float16, "cuda")
    t = fq.quantize(xv, layout="pv", cu_seqlens=cu)
    assert t.data.shape == (3, 64, 32) and torch.all(t.data.view(torch.uint8) == 0)


@requires_gpu
@pytest.mark.gpu
def test_quantize_bandwidth_report():
    """Not a pass/fail check: prints the pre-pass's effective bandwidth (read x, write e4m3)."""
    x = torch.randn(4, 8192, 16, 128, device="cuda", dtype=torch.bfloat16)
    nbytes = x.numel() * 3
    print()
    for granularity, layout in (("block", "rows"), ("block", "pv"), ("head", "rows"), ("tensor", "rows"),
                                ("tensor", "pv")):
        for _ in range(3):
            fq.quantize(x, granularity=granularity, layout=layout)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(20):
            fq.quantize(x, granularity=granularity, layout=layout)
        end.record()
        end.synchronize()
        ms = start.elapsed_time(end) / 20
        print(f"  quantize {granularity:6s} {layout:4s} {tuple(x.shape)}: {ms:.3f} ms, {nbytes / ms / 1e6:.0f} GB/s")
