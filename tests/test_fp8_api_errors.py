"""FP8 attention's argument errors, raised before any GPU work (CPU tensors and fake pointers
suffice): the Python checks of flash_attn_fp8_func and the C API's checks of e4m3 calls."""

import pytest
import torch

from flashgen import fp8
from flashgen._library import lib
from flashgen.fp8.quantize import Fp8Tensor


def _fp8(shape, layout="rows", seqlen=None):
    data = torch.zeros(shape, dtype=torch.float8_e4m3fn)
    return Fp8Tensor(data, torch.ones(1), "tensor", 128, layout, seqlen if seqlen is not None else shape[1])


def test_v_must_be_in_the_pv_layout():
    q, k, v = _fp8((1, 16, 2, 64)), _fp8((1, 16, 2, 64)), _fp8((1, 16, 2, 64))
    with pytest.raises(ValueError, match="layout='pv'"):
        fp8.flash_attn_fp8_func(q, k, v)


def test_operands_must_be_fp8_or_16_bit():
    q = torch.randn(1, 16, 2, 64)
    with pytest.raises(TypeError, match="Fp8Tensor"):
        fp8.flash_attn_fp8_func(q, q, q)


def test_cpu_operands_are_rejected():
    q, k = _fp8((1, 16, 2, 64)), _fp8((1, 16, 2, 64))
    v = _fp8((1, 2, 64, 16), layout="pv", seqlen=16)
    with pytest.raises(ValueError, match="CUDA"):
        fp8.flash_attn_fp8_func(q, k, v)


def test_varlen_needs_every_argument():
    q = _fp8((16, 2, 64))
    with pytest.raises(ValueError, match="cu_seqlens_q, cu_seqlens_k, max_seqlen_q"):
        fp8.flash_attn_fp8_func(q, q, q, cu_seqlens_q=torch.zeros(2, dtype=torch.int32))


def _e4m3_args(**changes):
    """A valid-looking e4m3 FwdArgs over fake, aligned addresses (never dereferenced)."""
    _C = lib()
    a = _C.FwdArgs()
    a.dtype = _C.DTYPE_E4M3
    a.q, a.k, a.v, a.out = 1 << 20, 2 << 20, 3 << 20, 4 << 20
    a.batch, a.seqlen_q, a.seqlen_k, a.total_q = 1, 16, 16, 16
    a.num_heads_q, a.num_heads_kv, a.head_dim_qk, a.head_dim_v = 2, 2, 64, 64
    a.q_batch_stride, a.q_row_stride, a.q_head_stride = 16 * 128, 128, 64
    a.k_batch_stride, a.k_row_stride, a.k_head_stride = 16 * 128, 128, 64
    a.v_batch_stride, a.v_head_stride, a.v_row_stride = 2 * 64 * 16, 64 * 16, 16  # PV layout
    a.out_batch_stride, a.out_row_stride, a.out_head_stride = 16 * 128, 128, 64
    return _apply(a, changes)


def _apply(a, changes):
    """Sets FwdArgs fields; "k_scale.block_rows"-style names reach into the nested scales."""
    for name, value in changes.items():
        target = a
        *scale, field = name.split(".")
        if scale:
            target = getattr(a, scale[0])
        setattr(target, field, value)
    return a


@pytest.mark.parametrize("changes, message", [
    ({"softcap": 30.0}, "no softcap"),
    ({"dropout_p": 0.1}, "no softcap, ALiBi or dropout"),
    ({"out_dtype": 2}, "writes fp16 or bf16"),
    ({"v_row_stride": 8}, "multiples of 16"),
    ({"seqlen_k": 40}, "PV layout"),
    ({"k_scale.scale": 1 << 12, "k_scale.block_stride": 1, "k_scale.block_rows": 64}, "multiple of 128"),
    ({"q_row_stride": 136}, "multiples of 16 bytes"),
])
def test_c_api_checks_fp8_arguments(changes, message):
    with pytest.raises(ValueError, match=message):
        lib().fwd(_e4m3_args(**changes), 0)


def test_fp8_has_no_backward():
    _C = lib()
    a = _C.BwdArgs()
    a.fwd.dtype = _C.DTYPE_E4M3
    with pytest.raises(ValueError, match="no backward"):
        _C.bwd(a, 0)


def _fp8_cache_args(**changes):
    """A bf16-query decode call over an e4m3 cache, at fake aligned addresses."""
    _C = lib()
    a = _e4m3_args()
    a.dtype = _C.DTYPE_BF16
    a.kv_cache_e4m3 = 1
    a.seqlen_q, a.total_q = 1, 1
    a.q_batch_stride, a.q_row_stride, a.q_head_stride = 128, 128, 64
    a.v_batch_stride, a.v_row_stride, a.v_head_stride = 16 * 128, 128, 64
    a.out_batch_stride, a.out_row_stride, a.out_head_stride = 128, 128, 64
    return _apply(a, changes)


@pytest.mark.parametrize("changes, message", [
    ({"dtype": 2}, "fp16 or bf16 queries"),
    ({"dropout_p": 0.1}, "no cu_seqlens, no dropout"),
    ({"head_dim_v": 32}, "head_dim_qk = head_dim_v"),
    ({"k_row_stride": 136}, "multiples of 16 bytes"),
    ({"v_scale.scale": (1 << 12) + 2}, "v_scale.scale must be float-aligned"),
    ({"k_scale.scale": 1 << 12, "k_scale.head_stride": -1}, "k_scale strides must be >= 0"),
    ({"k_scale.scale": 1 << 12, "k_scale.block_stride": 1}, "block_rows must be > 0"),
])
def test_c_api_checks_fp8_cache_arguments(changes, message):
    with pytest.raises(ValueError, match=message):
        lib().fwd(_fp8_cache_args(**changes), 0)
