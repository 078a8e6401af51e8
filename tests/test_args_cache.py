"""CPU tests of the launch-argument cache's keys (flashgen._args_cache): what makes two calls
one signature, and which calls never get one. The cached launches themselves are GPU tests
(test_forward.py / test_backward.py: test_repeated_signature_reuses_the_launch_arguments)."""

import torch

from flashgen._args_cache import ArgsCache
from flashgen.attention import _forward_key


def test_signature_follows_layout_dtype_alignment_and_environment(monkeypatch):
    cache = ArgsCache(("FLASHGEN_TEST_SETTING",), max_entries=3)
    monkeypatch.delenv("FLASHGEN_TEST_SETTING", raising=False)
    a = torch.randn(4, 8, 16)
    key = cache.signature((a, None), (1.0, True))
    assert key == cache.signature((torch.randn(4, 8, 16), None), (1.0, True))  # other data, same signature
    assert key != cache.signature((a.transpose(0, 1).contiguous().transpose(0, 1), None), (1.0, True))  # strides
    assert key != cache.signature((a.half(), None), (1.0, True))
    assert key != cache.signature((a.flatten()[1:].view(-1)[: a.numel() - 1], None), (1.0, True))
    assert key != cache.signature((a, a), (1.0, True))
    assert key != cache.signature((a, None), (1.0, False))
    misaligned = torch.randn(4 * 8 * 16 + 1)[1:].view(4, 8, 16)
    assert key != cache.signature((misaligned, None), (1.0, True))
    monkeypatch.setenv("FLASHGEN_TEST_SETTING", "other")
    assert key != cache.signature((a, None), (1.0, True))

    class Sub(torch.Tensor):
        pass

    assert cache.signature((a.as_subclass(Sub),), ()) is None
    assert cache.lookup(None) is None


def test_store_lookup_and_bounded_size():
    cache = ArgsCache((), max_entries=3)
    for i in range(3):
        cache.store((i,), f"entry {i}")
    assert len(cache) == 3 and cache.lookup((1,)) == "entry 1"
    cache.store((3,), "entry 3")  # past the bound: starts over rather than growing
    assert len(cache) == 1 and cache.lookup((0,)) is None and cache.lookup((3,)) == "entry 3"
    cache.store(None, "never")
    assert len(cache) == 1


def test_forward_key_only_for_plain_arguments():
    q, k, v = torch.randn(1, 5, 2, 64), torch.randn(1, 7, 2, 64), torch.randn(1, 7, 2, 64)
    plain = dict(softmax_scale=None, causal=True, window_size=(-1, -1), softcap=0.0, num_splits=0, return_lse=False)
    key = _forward_key(q, k, v, None, **plain)
    assert key is not None
    assert key == _forward_key(q, k, v, None, **{**plain, "window_size": [-1, -1]})
    assert key != _forward_key(q, k, v, None, **{**plain, "softmax_scale": 0.125})
    assert key != _forward_key(q, k, v, torch.empty(1, 5, 2, 64), **plain)
    # Values whose type the key cannot stand for: validated in full on every call.
    assert _forward_key(q, k, v, None, **{**plain, "softmax_scale": torch.tensor(0.1)}) is None
    assert _forward_key(q, k, v, None, **{**plain, "window_size": 3}) is None
    assert _forward_key(q, k, v, None, **{**plain, "causal": torch.tensor(True)}) is None
