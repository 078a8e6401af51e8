"""The fixed-length backward's filled launch arguments, reused by later calls of one signature.

A training loop runs the backward with the same shapes, strides, dtypes and options every step.
Validating them (prepare_fixed, the out / dout / lse checks, the library's plan for the workspace
size) and filling BwdArgs' ~60 fields cost ~0.1 ms of host time a call, which lands on the GPU's
critical path whenever the backward starts on an idle GPU (the benchmark's timer starts long calls
so; bench/NOTES.md, session 23). The first call of a signature takes the full path and leaves its
BwdArgs here; later calls copy it and set the data pointers (and dropout's Philox) only.

The signature holds every input the full path's checks read: each tensor's type, shape, strides,
dtype, device and 16-byte alignment, the scalar options, and the environment settings the library
reads (FLASHGEN_BWD_BACKEND, FLASHGEN_BWD_TAIL_SPLIT, FLASHGEN_BWD_PERSISTENT). Calls with ALiBi slopes or sinks (tensors
of their own) and varlen calls always take the full path.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

_ENV = ("FLASHGEN_BWD_BACKEND", "FLASHGEN_BWD_TAIL_SPLIT", "FLASHGEN_BWD_PERSISTENT")
_MAX_ENTRIES = 64
_entries: dict = {}


def signature(tensors, scalars: tuple) -> Optional[tuple]:
    """The key of a call over `tensors` (dout, q, k, v, out, lse) with these scalar options, or
    None when a tensor is not a plain torch.Tensor (subclasses take the full path)."""
    key = [os.environ.get(name) for name in _ENV]
    for t in tensors:
        if type(t) is not torch.Tensor:
            return None
        key.append((t.shape, t.stride(), t.dtype, t.device, t.data_ptr() % 16 == 0))
    key.append(scalars)
    return tuple(key)


def lookup(key: Optional[tuple]):
    """(BwdArgs template, workspace bytes) of an earlier call with this key, or None."""
    return None if key is None else _entries.get(key)


def store(key: Optional[tuple], args, workspace_bytes: int) -> None:
    if key is None:
        return
    if len(_entries) >= _MAX_ENTRIES:
        _entries.clear()
    _entries[key] = (args, workspace_bytes)


def clear() -> None:
    _entries.clear()
