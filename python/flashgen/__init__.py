"""flashgen: exact attention kernels generated from CuTe templates.

    import flashgen
    out = flashgen.flash_attn_func(q, k, v, causal=True)
"""

from ._library import built_kernels, cuda_archs
from .attention import flash_attn_func
from .errors import KernelNotBuiltError, UnsupportedDeviceError

__version__ = "0.1.0"

__all__ = [
    "KernelNotBuiltError",
    "UnsupportedDeviceError",
    "built_kernels",
    "cuda_archs",
    "flash_attn_func",
]
