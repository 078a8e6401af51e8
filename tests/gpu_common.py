"""Shared helpers of the GPU tests: the built kernels, by feature, and random inputs."""

import torch

from flashgen._library import manifest
from flashgen.codegen.spec import KernelSpec

from reference import TORCH_DTYPES

_ALL_FWD = [KernelSpec.parse(k["name"]) for k in manifest()["kernels"] if k["direction"] == "fwd"]
# The 16-bit forward kernels (flash_attn_func & co.); the FP8 ones have their own entry point.
FWD_KERNELS = [s for s in _ALL_FWD if s.dtype != "e4m3"]
FP8_KERNELS = [s for s in _ALL_FWD if s.dtype == "e4m3"]


def kernels(dropout=False, paged=False, causal=None, softcap=False, alibi=False):
    """Built forward kernels with exactly these features (causal=None: either)."""
    return [s for s in FWD_KERNELS
            if (s.dropout, s.paged, s.softcap, s.alibi) == (dropout, paged, softcap, alibi)
            and (causal is None or s.causal == causal)]


def one_per_head_dims(specs):
    """The first kernel of each (dtype, head dims): keeps option sweeps short."""
    seen, chosen = set(), []
    for s in specs:
        key = (s.dtype, s.head_dim_qk, s.head_dim_v, s.causal)
        if key not in seen:
            seen.add(key)
            chosen.append(s)
    return chosen


def make_qkv(spec, b, sq, sk, h, hkv):
    """Fresh random inputs on every call (never zeros)."""
    dtype = TORCH_DTYPES[spec.dtype]
    q = torch.randn(b, sq, h, spec.head_dim_qk, device="cuda", dtype=dtype)
    k = torch.randn(b, sk, hkv, spec.head_dim_qk, device="cuda", dtype=dtype)
    v = torch.randn(b, sk, hkv, spec.head_dim_v, device="cuda", dtype=dtype)
    return q, k, v


def ramped_keys(k, top):
    """Keys (batch, keys, heads, dim) scaled from 1 (the last key) up to `top` (the first): the
    kernels walk the key blocks from the last to the first, so every block's max can exceed the
    rows' running max."""
    sk = k.shape[1]
    ramp = 1 + (top - 1) * torch.arange(sk, 0, -1, device=k.device, dtype=torch.float32) / sk
    return (k.float() * ramp[None, :, None, None]).to(k.dtype)


def ids(spec):
    return spec.name


BWD_KERNELS = [KernelSpec.parse(k["name"]) for k in manifest()["kernels"] if k.get("direction") == "bwd"]


def bwd_kernels(dropout=False, causal=None, softcap=False, alibi=False):
    """Built backward kernels with exactly these features (causal=None: either)."""
    return [s for s in BWD_KERNELS
            if (s.dropout, s.softcap, s.alibi) == (dropout, softcap, alibi) and (causal is None or s.causal == causal)]


def one_per_head_dim_pair(specs):
    """The first kernel of each (head_dim_qk, head_dim_v), whatever its dtype or causality:
    option sweeps of the backward pass stay short."""
    seen, chosen = set(), []
    for s in specs:
        if (s.head_dim_qk, s.head_dim_v) not in seen:
            seen.add((s.head_dim_qk, s.head_dim_v))
            chosen.append(s)
    return chosen


def cache_rows(k, v, b, n, batch_idx=None, block_table=None, page_size=None):
    """Keys and values 0..n-1 of batch entry b of a KV cache: entry batch_idx[b] of a dense
    (entries, capacity, heads, dim) cache, or the pages block_table[b] of a paged one."""
    if block_table is None:
        entry = int(batch_idx[b])
        return k[entry, :n], v[entry, :n]
    r = torch.arange(n, device=k.device)
    pages = block_table[b, r // page_size].long()
    return k[pages, r % page_size], v[pages, r % page_size]


def record_calls(monkeypatch, module, names):
    """Replaces module.<name> for each name by a wrapper that appends the name to the returned
    list before calling the original: which launch path each call took."""
    calls = []
    for name in names:
        def counted(*args, _name=name, _fn=getattr(module, name), **kwargs):
            calls.append(_name)
            return _fn(*args, **kwargs)
        monkeypatch.setattr(module, name, counted)
    return calls
