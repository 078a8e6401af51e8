"""Bad input raises a clear Python exception before any kernel runs (CPU tensors suffice)."""

import pytest
import torch

import flashgen
from flashgen._library import manifest
from flashgen.codegen.spec import KernelSpec
from flashgen.dispatch import arch_is_built


def built_spec(**fields):
    """The first plain (no dropout, no paging, not FP8) kernel of the build with these field
    values (e.g. arch="sm80"), or None."""
    specs = [KernelSpec.parse(k["name"]) for k in manifest()["kernels"]]
    return next((s for s in specs if not s.dropout and not s.paged and s.dtype != "e4m3"
                 and all(getattr(s, name) == value for name, value in fields.items())), None)


def qkv(b=2, sq=17, sk=19, h=4, hkv=4, d=None, dv=None, dtype=None, device="cpu"):
    spec = built_spec()
    d = d or spec.head_dim_qk
    dv = dv or spec.head_dim_v
    dtype = dtype or {"fp16": torch.float16, "bf16": torch.bfloat16}[spec.dtype]
    q = torch.randn(b, sq, h, d, dtype=dtype, device=device)
    k = torch.randn(b, sk, hkv, d, dtype=dtype, device=device)
    v = torch.randn(b, sk, hkv, dv, dtype=dtype, device=device)
    return q, k, v


def test_library_reports_the_manifest_kernels():
    names = [k["name"] for k in manifest()["kernels"]]
    assert list(flashgen.built_kernels()) == names
    assert list(flashgen.cuda_archs()) == manifest()["cuda_archs"]


def test_not_a_tensor():
    q, k, v = qkv()
    with pytest.raises(TypeError, match="q must be a torch.Tensor"):
        flashgen.flash_attn_func([1.0], k, v)


def test_wrong_rank():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="k must have 4 dimensions"):
        flashgen.flash_attn_func(q, k[0], v)


def test_wrong_dtype():
    q, k, v = qkv()
    with pytest.raises(TypeError, match="float16 and torch.bfloat16"):
        flashgen.flash_attn_func(q.float(), k.float(), v.float())
    other = torch.float16 if q.dtype == torch.bfloat16 else torch.bfloat16
    with pytest.raises(TypeError, match="must match"):
        flashgen.flash_attn_func(q, k.to(other), v)


def test_mismatched_shapes():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="shapes disagree"):
        flashgen.flash_attn_func(q, k, v[:, :-1])
    with pytest.raises(ValueError, match="shapes disagree"):
        flashgen.flash_attn_func(q, k[:1], v[:1])
    q2, k2, v2 = qkv(h=6, hkv=4)
    with pytest.raises(ValueError, match="multiple of nheads"):
        flashgen.flash_attn_func(q2, k2, v2)


def test_head_dim_checks():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="head dims differ"):
        flashgen.flash_attn_func(q, k[..., :-8], v)
    q, k, v = qkv(d=60, dv=60)
    with pytest.raises(ValueError, match="multiples of 8 up to 256"):
        flashgen.flash_attn_func(q, k, v)
    q, k, v = qkv(d=264, dv=264)
    with pytest.raises(ValueError, match="multiples of 8 up to 256"):
        flashgen.flash_attn_func(q, k, v)
    q, k, v = qkv(d=40, dv=40)
    if "fwd_sm80_%s_hdim40" % built_spec().dtype not in flashgen.built_kernels():
        with pytest.raises(flashgen.KernelNotBuiltError, match="FLASHGEN_HEAD_DIMS including 40"):
            flashgen.flash_attn_func(q, k, v)


def test_strides():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="contiguous in its last dimension"):
        flashgen.flash_attn_func(q.transpose(-1, -2).contiguous().transpose(-1, -2), k, v)
    d = q.shape[-1]
    wide = torch.randn(q.shape[0], q.shape[1], q.shape[2], d + 4, dtype=q.dtype)
    with pytest.raises(ValueError, match="not multiples of 8 elements"):
        flashgen.flash_attn_func(wide[..., :d], k, v)


def test_bad_scalar_options():
    q, k, v = qkv()
    for scale in (-1.0, 0.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="softmax_scale"):
            flashgen.flash_attn_func(q, k, v, softmax_scale=scale)
    for p in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="dropout_p"):
            flashgen.flash_attn_func(q, k, v, dropout_p=p)
    for window in ((-2, 0), (1, 2, 3), "ab"):
        with pytest.raises(ValueError, match="window_size"):
            flashgen.flash_attn_func(q, k, v, window_size=window)
    with pytest.raises(ValueError, match="softcap"):
        flashgen.flash_attn_func(q, k, v, softcap=-1.0)
    with pytest.raises(ValueError, match="num_splits"):
        flashgen.flash_attn_func(q, k, v, num_splits=-1)


def test_bad_per_head_tensors():
    q, k, v = qkv(h=4, hkv=2)
    with pytest.raises(TypeError, match="alibi_slopes must be float32"):
        flashgen.flash_attn_func(q, k, v, alibi_slopes=torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="alibi_slopes must have shape"):
        flashgen.flash_attn_func(q, k, v, alibi_slopes=torch.ones(3))
    with pytest.raises(ValueError, match="sinks must have shape"):
        flashgen.flash_attn_func(q, k, v, sinks=torch.ones(2, 4))


def test_varlen_argument_checks():
    spec = built_spec()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[spec.dtype]
    q = torch.randn(12, 2, spec.head_dim_qk, dtype=dtype)
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    with pytest.raises(ValueError, match="q must have 3 dimensions"):
        flashgen.flash_attn_varlen_func(q[None], q, q, cu, cu, 7, 7)
    with pytest.raises(TypeError, match="cu_seqlens_k must be int32"):
        flashgen.flash_attn_varlen_func(q, q, q, cu, cu.long(), 7, 7)
    with pytest.raises(ValueError, match=r"cu_seqlens_k must have shape \(3,\)"):
        flashgen.flash_attn_varlen_func(q, q, q, cu, cu[:2], 7, 7)


def test_kvcache_argument_checks():
    spec = built_spec()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[spec.dtype]
    q = torch.randn(2, 1, 4, spec.head_dim_qk, dtype=dtype)
    cache = torch.randn(2, 64, 2, spec.head_dim_qk, dtype=dtype)
    with pytest.raises(ValueError, match="k and v come together"):
        flashgen.flash_attn_with_kvcache(q, cache, cache, k=cache[:, :1])
    with pytest.raises(NotImplementedError, match="cache_leftpad"):
        flashgen.flash_attn_with_kvcache(q, cache, cache, cache_leftpad=torch.zeros(2, dtype=torch.int32))
    with pytest.raises(TypeError, match="cache_seqlens must be int32"):
        flashgen.flash_attn_with_kvcache(q, cache, cache, cache_seqlens=torch.zeros(2))
    with pytest.raises(ValueError, match="block_table must be int32"):
        flashgen.flash_attn_with_kvcache(q, cache, cache, cache_seqlens=torch.zeros(2, dtype=torch.int32),
                                         block_table=torch.zeros(2, 4))


def test_kernel_not_built_names_the_kernel_and_the_filter():
    built = set(flashgen.built_kernels())
    missing = next((
        KernelSpec("sm80", "fwd", dtype, hdim, hdim, causal)
        for dtype in ("bf16", "fp16") for hdim in (32, 64, 96, 128, 192, 256) for causal in (False, True)
        if KernelSpec("sm80", "fwd", dtype, hdim, hdim, causal).name not in built
    ), None)
    if missing is None:
        pytest.skip("every default forward kernel is built")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[missing.dtype]
    q, k, v = qkv(d=missing.head_dim_qk, dv=missing.head_dim_v, dtype=dtype)
    with pytest.raises(flashgen.KernelNotBuiltError) as info:
        flashgen.flash_attn_func(q, k, v, causal=missing.causal)
    message = str(info.value)
    assert missing.name in message and "FLASHGEN_HEAD_DIMS" in message and "FLASHGEN_KERNELS" in message
    assert info.value.kernel_name == missing.name


def test_cpu_tensors_are_rejected():
    # CPU tensors resolve their kernel in the sm80 family (dispatch knows no GPU for them), then
    # fail the device check; a build without an sm80 forward kernel names the missing kernel.
    spec = built_spec(arch="sm80", direction="fwd")
    if spec is None:
        pytest.skip("this build has no plain sm80 forward kernel, which a CPU-tensor call resolves to")
    q, k, v = qkv(d=spec.head_dim_qk, dv=spec.head_dim_v,
                  dtype={"fp16": torch.float16, "bf16": torch.bfloat16}[spec.dtype])
    with pytest.raises(ValueError, match="CUDA tensors"):
        flashgen.flash_attn_func(q, k, v, causal=spec.causal)


def test_arch_compatibility_rule():
    assert arch_is_built((8, 0), ("80",))
    assert arch_is_built((8, 6), ("80",))
    assert not arch_is_built((9, 0), ("80",))
    assert arch_is_built((9, 0), ("80", "90a"))
    assert not arch_is_built((10, 0), ("90a",))
    assert not arch_is_built((8, 0), ("86",))


def test_fp8_cache_argument_checks():
    """An FP8 KV cache is read with fp16/bf16 queries, both halves FP8, scales of the right shape."""
    spec = built_spec()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[spec.dtype]
    d = spec.head_dim_qk
    q = torch.randn(2, 1, 4, d, dtype=dtype)
    cache = torch.randn(2, 64, 2, d, dtype=dtype)
    cache8 = cache.to(torch.float8_e4m3fn)
    lens = torch.full((2,), 64, dtype=torch.int32)
    with pytest.raises(TypeError, match="must both be float8_e4m3fn"):
        flashgen.flash_attn_with_kvcache(q, cache8, cache, cache_seqlens=lens)
    with pytest.raises(TypeError, match="float16 or bfloat16 queries"):
        flashgen.flash_attn_with_kvcache(q.float(), cache8, cache8, cache_seqlens=lens)
    with pytest.raises(ValueError, match="apply to an FP8"):
        flashgen.flash_attn_with_kvcache(q, cache, cache, cache_seqlens=lens, k_descale=torch.ones(2))
    with pytest.raises(ValueError, match="k_descale must have shape"):
        flashgen.flash_attn_with_kvcache(q, cache8, cache8, cache_seqlens=lens, k_descale=torch.ones(3))
    with pytest.raises(TypeError, match="v_descale must be float32"):
        flashgen.flash_attn_with_kvcache(q, cache8, cache8, cache_seqlens=lens,
                                         v_descale=torch.ones(2, dtype=torch.float16))


def test_decode_kernel_choice(monkeypatch):
    """Auto sends short rows to a built decode kernel; an FP8 cache needs one, and says which."""
    from flashgen import dispatch
    from flashgen.errors import KernelNotBuiltError

    monkeypatch.delenv("FLASHGEN_FWD_BACKEND", raising=False)
    built = dispatch._built_names()
    spec = dispatch.decode_spec(torch.bfloat16, 128)
    chosen = dispatch.decode_kernel_for(torch.bfloat16, torch.bfloat16, 128, 128, packed_rows=8)
    assert chosen == (spec if spec.name in built else None)
    assert dispatch.decode_kernel_for(torch.bfloat16, torch.bfloat16, 128, 128, packed_rows=33) is None
    assert dispatch.decode_kernel_for(torch.bfloat16, torch.bfloat16, 192, 128, packed_rows=8) is None
    monkeypatch.setattr(dispatch, "_built_names", lambda: frozenset())
    with pytest.raises(KernelNotBuiltError, match="decode_sm80_e4m3_hdim128.*FLASHGEN_DIRECTIONS including decode"):
        dispatch.decode_kernel_for(torch.bfloat16, torch.float8_e4m3fn, 128, 128, packed_rows=128)
    with pytest.raises(ValueError, match="no decode kernel.*multiples of 32"):
        dispatch.decode_kernel_for(torch.bfloat16, torch.float8_e4m3fn, 48, 48, packed_rows=1)
    monkeypatch.setenv("FLASHGEN_FWD_BACKEND", "sm80")
    assert dispatch.decode_kernel_for(torch.bfloat16, torch.bfloat16, 128, 128, packed_rows=8) is None
    with pytest.raises(ValueError, match="take no dropout"):
        dispatch.decode_kernel_for(torch.bfloat16, torch.float8_e4m3fn, 128, 128, packed_rows=8, dropout=True)


def test_forward_backend_override(monkeypatch):
    from flashgen import dispatch

    monkeypatch.delenv("FLASHGEN_FWD_BACKEND", raising=False)
    assert dispatch.forward_backend() == "auto"
    assert dispatch._families_for(None) == ["sm80"]
    monkeypatch.setenv("FLASHGEN_FWD_BACKEND", "sm90")
    assert dispatch._families_for(None) == ["sm90"]
    assert dispatch._families_for(None, "bwd") == ["sm80"]  # the override is for the forward only
    monkeypatch.setenv("FLASHGEN_FWD_BACKEND", "hopper")
    with pytest.raises(ValueError, match="expected one of auto, sm80, sm90, decode"):
        dispatch.forward_backend()


def test_backward_backend_override(monkeypatch):
    from flashgen import dispatch

    monkeypatch.delenv("FLASHGEN_BWD_BACKEND", raising=False)
    monkeypatch.delenv("FLASHGEN_FWD_BACKEND", raising=False)
    assert dispatch.backward_backend() == "auto"
    monkeypatch.setenv("FLASHGEN_BWD_BACKEND", "sm90")
    assert dispatch._families_for(None, "bwd") == ["sm90"]
    assert dispatch._families_for(None) == ["sm80"]  # the forward keeps its own setting
    monkeypatch.setenv("FLASHGEN_BWD_BACKEND", "hopper")
    with pytest.raises(ValueError, match="FLASHGEN_BWD_BACKEND='hopper'"):
        dispatch.backward_backend()


def test_sm90_kernel_not_built_names_it(monkeypatch):
    from flashgen import dispatch
    from flashgen.errors import KernelNotBuiltError

    monkeypatch.setenv("FLASHGEN_FWD_BACKEND", "sm90")
    if any(s.startswith("fwd_sm90_bf16_hdim112") for s in dispatch._built_names()):
        pytest.skip("this build has the kernel")
    with pytest.raises(KernelNotBuiltError, match="fwd_sm90_bf16_hdim112"):
        dispatch.select_kernel("fwd", torch.bfloat16, 112, 112, False)
    # A combination the sm90 family does not implement says so.
    with pytest.raises(ValueError, match="no softcap, ALiBi or dropout variant"):
        dispatch.select_kernel("fwd", torch.float8_e4m3fn, 128, 128, False, softcap=True)
    monkeypatch.setenv("FLASHGEN_BWD_BACKEND", "sm90")
    with pytest.raises(ValueError, match="multiples of 16"):
        dispatch.select_kernel("bwd", torch.bfloat16, 88, 88, False)


def test_auto_family_order_on_hopper(monkeypatch):
    # Auto on a 9.0 GPU tries the sm90 family first in both directions (the C library then falls
    # back to sm80 for calls the sm90 backward does not run); elsewhere sm80 only.
    from flashgen import dispatch

    monkeypatch.delenv("FLASHGEN_BWD_BACKEND", raising=False)
    monkeypatch.delenv("FLASHGEN_FWD_BACKEND", raising=False)
    monkeypatch.setattr(dispatch, "_capability", lambda index: (9, 0))
    hopper = torch.device("cuda", 0)
    assert dispatch._families_for(hopper, "fwd") == ["sm90", "sm80"]
    assert dispatch._families_for(hopper, "bwd") == ["sm90", "sm80"]
    monkeypatch.setattr(dispatch, "_capability", lambda index: (8, 0))
    assert dispatch._families_for(hopper, "bwd") == ["sm80"]
