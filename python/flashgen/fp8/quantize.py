"""FP8 (e4m3) quantization of attention operands: the pre-pass of the FP8 attention kernels.

    x8 = quantize(x)                          # per block of 128 rows, x's own layout
    v8 = quantize(v, layout="pv")             # keys contiguous, the layout P V reads
    x8, scale = quantize(x, granularity="head")

The real value is scale * e4m3: scale = amax / 448 over each group (1 where the group is all
zeros), e4m3 = saturate(x / scale) rounded to nearest even, exactly PyTorch's
(x.float() / scale).clamp(-448, 448).to(torch.float8_e4m3fn).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from .. import _checks, config
from .._library import lib
from .._prepare import cu_seqlens_checks
from ..dispatch import check_device_arch

E4M3_MAX = 448.0
FP8_DTYPE = torch.float8_e4m3fn
# The PV layout groups keys by 16 (one k-step of the FP8 P V GEMM).
PV_GROUP = 16
_GRANULARITIES = {"tensor": "FP8_PER_TENSOR", "head": "FP8_PER_HEAD", "block": "FP8_PER_BLOCK"}
_LAYOUTS = {"rows": "FP8_LAYOUT_ROWS", "pv": "FP8_LAYOUT_PV"}
_DTYPE_ENUM = {torch.float16: "DTYPE_FP16", torch.bfloat16: "DTYPE_BF16"}
# block_rows of a scale shared by all rows: a multiple of 128 (what the k and v scales need)
# larger than any sequence the C API accepts.
_WHOLE_SEQUENCE = 1 << 30
_MAX_HEAD_DIM = 256


def pv_key_of_column(c: int) -> int:
    """The key (within its group of 16) that column c of a PV-layout group holds."""
    return (c & 1) + 8 * ((c >> 1) & 1) + 2 * (c >> 2)


# The column of a group that holds key j: the inverse permutation.
_PV_COLUMN_OF_KEY = tuple(sorted(range(PV_GROUP), key=pv_key_of_column))


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def pv_columns(seqlen: int, batch: int, varlen: bool) -> int:
    """Key columns of a PV-layout tensor: roundup(seqlen, 16), or roundup(total, 16) + 16 * batch
    when varlen (seqlen is then the total)."""
    return _round_up(seqlen, PV_GROUP) + (PV_GROUP * batch if varlen else 0)


@dataclass(frozen=True, eq=False)
class Fp8Tensor:
    """An e4m3 tensor and its float32 dequantization scales (real value = scale * data).

    data: torch.float8_e4m3fn; layout "rows": like the input, (batch, seqlen, heads, dim) or
    varlen (total, heads, dim); layout "pv": (batch, heads, dim, roundup(seqlen, 16)) or varlen
    (heads, dim, roundup(total, 16) + 16 * batch), keys permuted within groups of 16 (flashgen.h).
    scale: float32; granularity "tensor": (1,), "head": (batch, heads), "block": (batch, heads,
    ceil(max_seqlen / block)) with blocks counted from each sequence's start.
    seqlen: the rows (keys) of the input: seqlen, or total when varlen.
    """

    data: torch.Tensor
    scale: torch.Tensor
    granularity: str
    block: int
    layout: str
    seqlen: int
    cu_seqlens: Optional[torch.Tensor] = None
    max_seqlen: Optional[int] = None

    def __iter__(self) -> Iterator[torch.Tensor]:
        yield self.data
        yield self.scale

    @property
    def varlen(self) -> bool:
        return self.cu_seqlens is not None

    @property
    def batch(self) -> int:
        if self.varlen:
            return self.cu_seqlens.numel() - 1
        return self.data.shape[0]

    @property
    def num_heads(self) -> int:
        if self.layout == "rows":
            return self.data.shape[-2]
        return self.data.shape[-3]

    @property
    def head_dim(self) -> int:
        return self.data.shape[-1] if self.layout == "rows" else self.data.shape[-2]

    def scale_arg(self) -> tuple[torch.Tensor, int, int, int, int]:
        """(scale, batch_stride, head_stride, block_stride, block_rows) as flashgen_fp8_scale_t
        reads them: scale[b * batch_stride + h * head_stride + (row // block_rows) * block_stride]."""
        s = self.scale
        if self.granularity == "tensor":
            return s, 0, 0, 0, _WHOLE_SEQUENCE
        if self.granularity == "head":
            return s, s.stride(0), s.stride(1), 0, _WHOLE_SEQUENCE
        return s, s.stride(0), s.stride(1), s.stride(2), self.block


def _check_options(granularity, block, layout) -> int:
    if granularity not in _GRANULARITIES:
        raise ValueError(f"granularity must be one of {sorted(_GRANULARITIES)}, got {granularity!r}")
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(_LAYOUTS)}, got {layout!r}")
    if isinstance(block, bool) or not isinstance(block, int):
        raise TypeError(f"block must be an int, got {type(block).__name__}")
    if granularity == "block":
        if not 0 < block <= _WHOLE_SEQUENCE:
            raise ValueError(f"block must be in 1..{_WHOLE_SEQUENCE} rows, got {block}")
        if layout == "pv" and block % PV_GROUP != 0:
            raise ValueError(f"layout='pv' needs block a multiple of {PV_GROUP} (its key groups), got {block}")
    return block


def _check_input(x, cu_seqlens, max_seqlen, rotation) -> Optional[int]:
    varlen = cu_seqlens is not None
    _checks.check_tensor("x", x, rank=3 if varlen else 4)
    if x.dtype not in _DTYPE_ENUM:
        raise TypeError(f"x has dtype {x.dtype}; FP8 quantize reads torch.float16 or torch.bfloat16")
    head_dim = x.shape[-1]
    if head_dim % 16 != 0 or not 16 <= head_dim <= _MAX_HEAD_DIM:
        raise ValueError(f"x's head_dim is {head_dim}; FP8 quantize needs a multiple of 16 up to {_MAX_HEAD_DIM}")
    if x.stride(-1) != 1:
        raise ValueError(f"x must be contiguous in its last dimension (stride {x.stride(-1)}); call .contiguous()")
    if varlen:
        if not isinstance(cu_seqlens, torch.Tensor):
            raise TypeError(f"cu_seqlens must be a torch.Tensor, got {type(cu_seqlens).__name__}")
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
            raise ValueError("cu_seqlens must be a 1-D int32 tensor of batch + 1 offsets")
        _checks.check_int32_vector("cu_seqlens", cu_seqlens, cu_seqlens.numel())
        if max_seqlen is not None:
            if isinstance(max_seqlen, bool) or not isinstance(max_seqlen, int) or max_seqlen < 0:
                raise ValueError(f"max_seqlen must be an int >= 0, got {max_seqlen!r}")
    elif max_seqlen is not None:
        raise ValueError("max_seqlen goes with cu_seqlens (varlen x)")
    if rotation is not None:
        _checks.check_tensor("rotation", rotation, rank=2)
        if tuple(rotation.shape) != (head_dim, head_dim) or not rotation.is_floating_point():
            raise ValueError(f"rotation must be a floating-point ({head_dim}, {head_dim}) matrix, got "
                             f"{rotation.dtype} {tuple(rotation.shape)}")
    return max_seqlen


def quantize(
    x: torch.Tensor,
    granularity: str = "block",
    block: int = 128,
    layout: str = "rows",
    cu_seqlens: Optional[torch.Tensor] = None,
    max_seqlen: Optional[int] = None,
    rotation: Optional[torch.Tensor] = None,
) -> Fp8Tensor:
    """Quantizes a float16/bfloat16 CUDA tensor to e4m3 with float32 dequantization scales.

    x: (batch, seqlen, heads, head_dim), or varlen (total, heads, head_dim) with cu_seqlens
    (int32, batch + 1) and max_seqlen (computed from cu_seqlens, with a synchronisation, when
    None); head_dim a multiple of 16 up to 256, the last dimension contiguous.
    granularity: "tensor" (one scale), "head" (per batch entry and head) or "block" (per batch
    entry, head and `block` rows counted from the sequence's start; blocks past the end of a
    shorter varlen sequence get scale 1).
    layout: "rows" (x's layout) or "pv" (the v operand of the FP8 attention; block a multiple
    of 16). Zero padding of the PV layout is written by the kernel.
    rotation: an optional (head_dim, head_dim) matrix applied first (x @ rotation in float32),
    e.g. hadamard_rotation(head_dim) on q and k, which leaves q k^T unchanged.
    Runs on the current CUDA stream.
    """
    varlen = cu_seqlens is not None
    block = _check_options(granularity, block, layout)
    max_seqlen = _check_input(x, cu_seqlens, max_seqlen, rotation)
    device = _checks.check_same_cuda_device(x=x, cu_seqlens=cu_seqlens, rotation=rotation)
    if rotation is not None:
        x = (x.float() @ rotation.to(torch.float32)).to(x.dtype)
    elif not _loadable(x):
        x = x.contiguous()

    heads, head_dim = x.shape[-2], x.shape[-1]
    if varlen:
        batch, total = cu_seqlens.numel() - 1, x.shape[0]
        if max_seqlen is None:
            max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max().clamp(min=0)) if batch > 0 else 0
        if config.check_device_inputs:
            _checks.raise_if_any(cu_seqlens_checks("cu_seqlens", cu_seqlens, total, max_seqlen))
        seqlen, rows = max_seqlen, total
    else:
        batch, seqlen = x.shape[0], x.shape[1]
        rows = seqlen

    if layout == "rows":
        out = torch.empty(x.shape, dtype=FP8_DTYPE, device=device)
    elif varlen:
        out = torch.empty((heads, head_dim, pv_columns(total, batch, True)), dtype=FP8_DTYPE, device=device)
    else:
        out = torch.empty((batch, heads, head_dim, pv_columns(seqlen, batch, False)), dtype=FP8_DTYPE, device=device)
    if granularity == "tensor":
        scale_shape = (1,)
    elif granularity == "head":
        scale_shape = (batch, heads)
    else:
        scale_shape = (batch, heads, -(-seqlen // block))
    scale = torch.empty(scale_shape, dtype=torch.float32, device=device)
    result = Fp8Tensor(out, scale, granularity, block, layout, rows, cu_seqlens, seqlen)
    if batch == 0 or heads == 0 or (not varlen and seqlen == 0):
        scale.fill_(1.0)  # nothing to quantize (a fixed-length PV layout has no columns either)
        return result

    check_device_arch(device)
    _C = lib()
    a = _C.Fp8QuantizeArgs()
    a.dtype = getattr(_C, _DTYPE_ENUM[x.dtype])
    a.x = x.data_ptr()
    a.batch, a.seqlen, a.num_heads, a.head_dim = batch, seqlen, heads, head_dim
    if varlen:
        a.x_batch_stride, a.x_row_stride, a.x_head_stride = 0, x.stride(0), x.stride(1)
        a.cu_seqlens = cu_seqlens.data_ptr()
        a.total = total
    else:
        a.x_batch_stride, a.x_row_stride, a.x_head_stride = x.stride(0), x.stride(1), x.stride(2)
    a.granularity = getattr(_C, _GRANULARITIES[granularity])
    a.block_rows = block if granularity == "block" else _WHOLE_SEQUENCE
    a.layout = getattr(_C, _LAYOUTS[layout])
    a.out = out.data_ptr()
    if layout == "rows" and varlen:
        a.out_batch_stride, a.out_row_stride, a.out_head_stride = 0, out.stride(0), out.stride(1)
    elif layout == "rows":
        a.out_batch_stride, a.out_row_stride, a.out_head_stride = out.stride(0), out.stride(1), out.stride(2)
    elif varlen:  # (heads, head_dim, columns)
        a.out_batch_stride, a.out_head_stride, a.out_row_stride = 0, out.stride(0), out.stride(1)
    else:  # (batch, heads, head_dim, columns)
        a.out_batch_stride, a.out_head_stride, a.out_row_stride = out.stride(0), out.stride(1), out.stride(2)
    a.scale = scale.data_ptr()
    with torch.cuda.device(device):
        workspace = None
        nbytes = _C.fp8_quantize_workspace(a)
        if nbytes:
            workspace = torch.empty(nbytes, dtype=torch.uint8, device=device)
            a.workspace, a.workspace_bytes = workspace.data_ptr(), nbytes
        _C.fp8_quantize(a, torch.cuda.current_stream(device).cuda_stream)
    return result


def _loadable(x: torch.Tensor) -> bool:
    elems = 16 // x.element_size()
    return all(s % elems == 0 for s in x.stride()[:-1]) and x.data_ptr() % 16 == 0


def _varlen_rows(cu_seqlens: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each packed row: its sequence, its position in the sequence, and whether it belongs
    to a sequence at all."""
    cu = cu_seqlens.to(torch.int64)
    batch = cu.numel() - 1
    row = torch.arange(total, device=cu.device)
    seq = torch.searchsorted(cu[1:], row, right=True)
    valid = (seq < batch) & (row >= cu[0])
    seq = seq.clamp(max=max(batch - 1, 0))
    return seq, row - cu[seq], valid


def _row_scales(t: Fp8Tensor, seq: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """float32 scale of each (row, head), rows given by sequence and position (any shape)."""
    heads = t.num_heads
    s = t.scale.float()
    shape = (*seq.shape, heads)
    if t.granularity == "tensor":
        return s.reshape(()).expand(shape)
    if t.granularity == "head":
        return s[seq]
    blocks = (pos // t.block).clamp(max=max(s.shape[2] - 1, 0))
    head = torch.arange(heads, device=s.device)
    return s[seq.unsqueeze(-1), head, blocks.unsqueeze(-1)]


def _pv_key_columns(pos: torch.Tensor) -> torch.Tensor:
    """Column, counted from the sequence's first column, of the key at position pos."""
    column_of_key = torch.tensor(_PV_COLUMN_OF_KEY, dtype=torch.int64, device=pos.device)
    return pos // PV_GROUP * PV_GROUP + column_of_key[pos % PV_GROUP]


def dequantize(t: Fp8Tensor) -> torch.Tensor:
    """float32 scale * data in the rows layout: (batch, seqlen, heads, head_dim), or varlen
    (total, heads, head_dim) (rows outside every sequence are 0). Pure PyTorch (a reference)."""
    data = t.data.float()
    device = data.device
    if not t.varlen:
        batch, seqlen = t.batch, t.seqlen
        pos = torch.arange(seqlen, device=device)
        if t.layout == "pv":  # (batch, heads, dim, columns) -> (batch, seqlen, heads, dim)
            data = data[..., _pv_key_columns(pos)].permute(0, 3, 1, 2)
        seq = torch.arange(batch, device=device).view(-1, 1).expand(batch, seqlen)
        return data * _row_scales(t, seq, pos.expand(batch, seqlen)).unsqueeze(-1)
    seq, pos, valid = _varlen_rows(t.cu_seqlens.to(device), t.seqlen)
    if t.layout == "pv":  # (heads, dim, columns) -> (total, heads, dim)
        starts = (t.cu_seqlens.to(device=device, dtype=torch.int64) + PV_GROUP - 1) // PV_GROUP * PV_GROUP
        first_column = starts[seq] + PV_GROUP * seq
        columns = torch.where(valid, first_column + _pv_key_columns(pos), 0)
        data = data[..., columns].permute(2, 0, 1)
    out = data * _row_scales(t, seq, pos).unsqueeze(-1)
    return torch.where(valid.view(-1, 1, 1), out, torch.zeros((), device=device))


def hadamard_rotation(head_dim: int, seed: int = 0, device: Optional[torch.device] = None) -> torch.Tensor:
    """A random orthogonal float32 (head_dim, head_dim) matrix diag(±1) · H / sqrt(n): H is
    block diagonal with Sylvester Hadamard blocks of n = the largest power of two dividing
    head_dim (96: three blocks of 32), the signs drawn from torch.Generator().manual_seed(seed).
    (q R)(k R)^T = q k^T; the rotation spreads outlier channels before quantization (QuaRot)."""
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim <= 0:
        raise ValueError(f"head_dim must be a positive int, got {head_dim!r}")
    n = head_dim & -head_dim
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], dim=1), torch.cat([h, -h], dim=1)], dim=0)
    blocks = torch.block_diag(*([h] * (head_dim // n))) / math.sqrt(n)
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (head_dim,), generator=generator).to(torch.float32) * 2 - 1
    return (signs.view(-1, 1) * blocks).to(device=device)
