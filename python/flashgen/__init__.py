"""flashgen: exact attention kernels generated from CuTe templates.

    import flashgen
    out = flashgen.flash_attn_func(q, k, v, causal=True)
"""

from . import config
from ._library import built_kernels, cuda_archs
from .attention import flash_attn_func, flash_attn_varlen_func
from .dropout import dropout_mask
from .errors import KernelNotBuiltError, UnsupportedDeviceError
from .kvcache import flash_attn_with_kvcache
from .merge import merge_attention_states
from .paths import cmake_prefix_path

__version__ = "0.1.0"

__all__ = [
    "KernelNotBuiltError",
    "UnsupportedDeviceError",
    "built_kernels",
    "config",
    "cuda_archs",
    "dropout_mask",
    "flash_attn_func",
    "flash_attn_varlen_func",
    "flash_attn_with_kvcache",
    "merge_attention_states",
]
