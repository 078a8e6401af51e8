"""CPU tests of the autograd and torch.compile layer (flashgen.ops); no GPU needed.

The fake implementations are checked under FakeTensorMode. The op plumbing (register_autograd,
opcheck, torch.compile without graph breaks, `deterministic` reaching the backward) runs with a
float32 stand-in for the CUDA kernels, registered for CPU tensors for the duration of a test:
it checks the wiring, not the kernels, which test_backward.py checks on the GPU.
"""

import math

import pytest
import torch

ops = pytest.importorskip("flashgen.ops")

import flashgen  # noqa: E402
from flashgen._library import manifest  # noqa: E402
from flashgen.codegen.spec import KernelSpec  # noqa: E402

from reference import reference_grads  # noqa: E402

BF16 = torch.bfloat16


def _probs(q, k, scale, causal, left, right, sinks, lse=None):
    """float32 (b, h, sq, sk) probabilities and the lse, as the kernels define them."""
    h, hkv = q.shape[2], k.shape[2]
    qh = q.float().transpose(1, 2)
    kh = k.float().transpose(1, 2).repeat_interleave(h // hkv, dim=1)
    s = qh @ kh.transpose(-1, -2) * scale
    sq, sk = q.shape[1], k.shape[1]
    rows = torch.arange(sq).view(-1, 1) + (sk - sq)
    cols = torch.arange(sk).view(1, -1)
    right = 0 if causal else right
    masked = torch.zeros(sq, sk, dtype=torch.bool)
    if right >= 0:
        masked |= cols > rows + right
    if left >= 0:
        masked |= cols < rows - left
    s = s.masked_fill(masked, float("-inf"))
    if lse is None:
        full = s if sinks is None else torch.cat([s, sinks.view(1, h, 1, 1).expand(*s.shape[:3], 1)], dim=-1)
        lse = torch.logsumexp(full, dim=-1)
        lse = lse.masked_fill(torch.isneginf(lse), float("inf"))  # a row without keys: p = 0
    return torch.exp(s - lse.unsqueeze(-1)), lse


def stand_in_fwd(q, k, v, cu_q, cu_k, max_q, max_k, block_table, scale, causal, left, right, softcap, alibi, sinks,
                 dropout_p, num_splits, deterministic, needs_backward):
    assert cu_q is None and softcap == 0.0 and alibi is None and dropout_p == 0.0, "the stand-in is plain attention"
    h, hkv = q.shape[2], k.shape[2]
    p, lse = _probs(q, k, scale, causal, left, right, sinks)
    vh = v.float().transpose(1, 2).repeat_interleave(h // hkv, dim=1)
    out = (p @ vh).transpose(1, 2).to(q.dtype).contiguous()
    return out, lse.contiguous(), torch.empty(0, dtype=torch.int64)


def stand_in_bwd(calls, dout, q, k, v, out, lse, cu_q, cu_k, max_q, max_k, scale, causal, left, right, softcap, alibi,
                 sinks, dropout_p, rng_state, deterministic):
    calls.append(deterministic)
    b, sq, h, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    p, _ = _probs(q, k, scale, causal, left, right, sinks, lse=lse)
    do = dout.float().transpose(1, 2)
    qh = q.float().transpose(1, 2)
    kh = k.float().transpose(1, 2).repeat_interleave(h // hkv, dim=1)
    vh = v.float().transpose(1, 2).repeat_interleave(h // hkv, dim=1)
    delta = (do * out.float().transpose(1, 2)).sum(-1)  # (b, h, sq)
    ds = p * (do @ vh.transpose(-1, -2) - delta.unsqueeze(-1))
    dq = (ds @ kh * scale).transpose(1, 2)
    dk = (ds.transpose(-1, -2) @ qh * scale).view(b, hkv, h // hkv, sk, d).sum(2).transpose(1, 2)
    dv = (p.transpose(-1, -2) @ do).view(b, hkv, h // hkv, sk, -1).sum(2).transpose(1, 2)
    dsinks = torch.zeros(0)
    if sinks is not None:
        dsinks = -(torch.exp(sinks.view(1, h, 1) - lse) * delta).sum(dim=(0, 2))
    return (dq.to(q.dtype).contiguous(), dk.to(k.dtype).contiguous(), dv.to(v.dtype).contiguous(),
            dsinks.float().contiguous())


@pytest.fixture
def stand_in():
    """Registers the stand-in for CPU tensors; yields the `deterministic` flags the backward saw."""
    calls = []
    lib = torch.library.Library("flashgen", "IMPL")
    lib.impl("attn_fwd", stand_in_fwd, "CPU")
    lib.impl("attn_bwd", lambda *args: stand_in_bwd(calls, *args), "CPU")
    try:
        yield calls
    finally:
        lib._destroy()


def make(b=2, sq=13, sk=9, h=4, hkv=2, d=16, dv=16, requires_grad=True):
    torch.manual_seed(0)
    q = torch.randn(b, sq, h, d, dtype=BF16)
    k = torch.randn(b, sk, hkv, d, dtype=BF16)
    v = torch.randn(b, sk, hkv, dv, dtype=BF16)
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


def fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode
    return FakeTensorMode()


def fwd_args(q, k, v, cu_q=None, cu_k=None, sinks=None, dropout_p=0.0):
    max_q = max_k = 0
    return (q, k, v, cu_q, cu_k, max_q, max_k, None, 1 / math.sqrt(q.shape[-1]), True, -1, -1, 0.0, None, sinks,
            dropout_p, 0, False, False)


def test_fake_forward_shapes_fixed_and_varlen():
    with fake_mode():
        q, k, v = (torch.empty(s, dtype=BF16) for s in ((2, 17, 6, 64), (2, 5, 2, 64), (2, 5, 2, 32)))
        out, lse, rng = torch.ops.flashgen.attn_fwd(*fwd_args(q, k, v, dropout_p=0.1))
        assert out.shape == (2, 17, 6, 32) and out.dtype == BF16 and out.is_contiguous()
        assert lse.shape == (2, 6, 17) and lse.dtype == torch.float32
        assert rng.shape == (2,) and rng.dtype == torch.int64 and rng.device.type == "cpu"
        assert torch.ops.flashgen.attn_fwd(*fwd_args(q, k, v))[2].shape == (0,)
        qp, kp, vp = (torch.empty(s, dtype=BF16) for s in ((40, 6, 64), (31, 2, 64), (31, 2, 32)))
        cu = torch.empty(4, dtype=torch.int32)
        out, lse, _ = torch.ops.flashgen.attn_fwd(*fwd_args(qp, kp, vp, cu, cu))
        assert out.shape == (40, 6, 32) and lse.shape == (6, 40)


def test_fake_backward_shapes():
    with fake_mode():
        q, k, v = (torch.empty(s, dtype=BF16) for s in ((2, 17, 6, 64), (2, 5, 2, 64), (2, 5, 2, 32)))
        out, dout = torch.empty(2, 17, 6, 32, dtype=BF16), torch.empty(2, 17, 6, 32, dtype=BF16)
        lse = torch.empty(2, 6, 17)
        for sinks, n in ((None, 0), (torch.empty(6), 6)):
            dq, dk, dv, dsinks = torch.ops.flashgen.attn_bwd(dout, q, k, v, out, lse, None, None, 0, 0, 0.1, False, -1,
                                                             -1, 0.0, None, sinks, 0.0, torch.empty(0, dtype=torch.int64),
                                                             True)
            assert (dq.shape, dk.shape, dv.shape) == (q.shape, k.shape, v.shape)
            assert dq.dtype == BF16 and dsinks.shape == (n,) and dsinks.dtype == torch.float32


def test_philox_state_round_trips_a_full_uint64_seed():
    for seed, offset in ((0, 0), (1234, 8), ((1 << 64) - 5, 1 << 40)):
        state = ops.pack_philox(seed, offset)
        assert state.dtype == torch.int64 and state.device.type == "cpu"
        assert ops.unpack_philox(state) == (seed, offset)
    with pytest.raises(ValueError, match="seed, offset"):
        ops.unpack_philox(torch.empty(0, dtype=torch.int64))


def test_gradients_reach_q_k_v_and_sinks(stand_in):
    q, k, v = make()
    sinks = torch.randn(4, requires_grad=True)
    out, lse = flashgen.flash_attn_func(q, k, v, causal=True, sinks=sinks, return_lse=True)
    assert out.requires_grad and not lse.requires_grad
    dout = torch.randn_like(out)
    out.backward(dout)
    ref = reference_grads(q, k, v, dout, sinks=sinks, causal=True)
    for got, want in zip((q.grad, k.grad, v.grad, sinks.grad), ref):
        assert got.shape == want.shape and got.dtype in (BF16, torch.float32)
        torch.testing.assert_close(got.float(), want.float(), atol=3e-2, rtol=3e-2)


def test_grad_only_for_tensors_that_require_it(stand_in):
    q, k, v = make(requires_grad=False)
    q.requires_grad_()
    flashgen.flash_attn_func(q, k, v, window_size=(3, 2)).sum().backward()  # dout is an expanded (stride 0) tensor
    assert q.grad is not None and k.grad is None and v.grad is None


def test_deterministic_reaches_the_backward(stand_in):
    q, k, v = make()
    flashgen.flash_attn_func(q, k, v).sum().backward()
    flashgen.flash_attn_func(q, k, v, deterministic=True).sum().backward()
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        flashgen.flash_attn_func(q, k, v).sum().backward()
    finally:
        torch.use_deterministic_algorithms(previous)
    assert stand_in == [False, True, True]


def test_opcheck(stand_in):
    q, k, v = make()
    sinks = torch.randn(4, requires_grad=True)
    torch.library.opcheck(torch.ops.flashgen.attn_fwd.default, fwd_args(q, k, v, sinks=sinks))
    out, lse, rng = torch.ops.flashgen.attn_fwd(*fwd_args(q.detach(), k.detach(), v.detach(), sinks=sinks.detach()))
    bwd_args = (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out, lse, None, None, 0, 0, 0.25, True, -1,
                -1, 0.0, None, sinks.detach(), 0.0, rng, True)
    torch.library.opcheck(torch.ops.flashgen.attn_bwd.default, bwd_args)


def test_compile_fullgraph_forward_and_backward(stand_in):
    torch._dynamo.reset()

    def step(q, k, v, sinks):
        out = flashgen.flash_attn_func(q, k, v, causal=True, sinks=sinks, softmax_scale=0.3, window_size=(7, -1))
        return (out.float() ** 2).sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (step, compiled):
        q, k, v = make()
        sinks = torch.randn(4, requires_grad=True)
        loss = fn(q, k, v, sinks)
        loss.backward()
        results.append((loss.detach(), q.grad, k.grad, v.grad, sinks.grad))
    for eager, comp in zip(*results):
        torch.testing.assert_close(comp, eager)


def test_compile_fullgraph_inference(stand_in):
    torch._dynamo.reset()
    q, k, v = make(requires_grad=False)
    fn = torch.compile(lambda q, k, v: flashgen.flash_attn_func(q, k, v, return_lse=True), fullgraph=True,
                       backend="aot_eager")
    out, lse = fn(q, k, v)
    ref_out, ref_lse = flashgen.flash_attn_func(*make(requires_grad=True), return_lse=True)
    torch.testing.assert_close(out, ref_out.detach())
    torch.testing.assert_close(lse, ref_lse)


def test_paged_cache_with_grad_is_rejected():
    q = torch.randn(5, 2, 64, dtype=BF16, requires_grad=True)
    k_cache = torch.randn(4, 16, 2, 64, dtype=BF16)
    cu = torch.tensor([0, 5], dtype=torch.int32)
    with pytest.raises(ValueError, match="paged KV cache"):
        flashgen.flash_attn_varlen_func(q, k_cache, k_cache, cu, cu, 5, 5,
                                        block_table=torch.zeros(1, 1, dtype=torch.int32))


def test_missing_backward_kernel_is_reported_before_the_forward():
    # CPU tensors resolve their kernels in the sm80 family (dispatch knows no GPU for them).
    specs = [KernelSpec.parse(k["name"]) for k in manifest()["kernels"]]
    spec = next((s for s in specs if s.direction == "fwd" and s.arch == "sm80" and s.dtype != "e4m3"
                 and not (s.dropout or s.paged or s.softcap or s.alibi)), None)
    if spec is None:
        pytest.skip("this build has no plain sm80 forward kernel, which a CPU-tensor call resolves to")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[spec.dtype]
    q = torch.randn(1, 3, 2, spec.head_dim_qk, dtype=dtype, requires_grad=True)
    k = torch.randn(1, 3, 2, spec.head_dim_qk, dtype=dtype)
    v = torch.randn(1, 3, 2, spec.head_dim_v, dtype=dtype)
    bwd_name = "bwd" + spec.name[3:]
    if bwd_name in flashgen.built_kernels():
        with pytest.raises(ValueError, match="CUDA"):  # the kernel exists: only the CPU device is wrong
            flashgen.flash_attn_func(q, k, v, causal=spec.causal)
    else:
        with pytest.raises(flashgen.KernelNotBuiltError, match=bwd_name):
            flashgen.flash_attn_func(q, k, v, causal=spec.causal)
    with torch.no_grad():  # no gradient needed: the forward kernel alone decides
        with pytest.raises(ValueError, match="CUDA"):
            flashgen.flash_attn_func(q, k, v, causal=spec.causal)
