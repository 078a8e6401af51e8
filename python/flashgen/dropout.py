"""Dropout randomness: Philox (seed, offset) drawn from torch's CUDA generator, and the mask."""

from __future__ import annotations

import torch

from ._library import lib

# torch's CUDA generator keeps its offset in multiples of 4.
_OFFSET_STEP = 4


def philox_seed_offset(device: torch.device) -> tuple[int, int]:
    """Reserves a fresh (seed, offset) from the device's default generator, so that
    torch.manual_seed makes flashgen's dropout reproducible and every call draws anew."""
    if torch.cuda.is_current_stream_capturing():
        raise RuntimeError("flashgen dropout cannot be captured in a CUDA graph yet")
    index = device.index if device.index is not None else torch.cuda.current_device()
    gen = torch.cuda.default_generators[index]
    seed = gen.initial_seed()
    offset = gen.get_offset()
    gen.set_offset(offset + _OFFSET_STEP)
    return seed, offset


def dropout_mask(seed: int, offset: int, dropout_p: float, batch: int, nheads: int, seqlen_q: int, seqlen_k: int,
                 device: torch.device) -> torch.Tensor:
    """The keep-mask (True = kept) the dropout kernels apply for (seed, offset): bool
    (batch, nheads, seqlen_q, seqlen_k). A test and debugging aid; O(seqlen_q * seqlen_k) memory."""
    mask = torch.empty((batch, nheads, seqlen_q, seqlen_k), dtype=torch.uint8, device=device)
    with torch.cuda.device(device):
        lib().dropout_mask(seed, offset, float(dropout_p), batch, nheads, seqlen_q, seqlen_k, mask.data_ptr(),
                           torch.cuda.current_stream(device).cuda_stream)
    return mask.bool()
