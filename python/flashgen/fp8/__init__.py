"""FP8 (e4m3) attention on Hopper: quantization helpers and the forward kernel's entry point.

    from flashgen import fp8
    q8, k8 = fp8.quantize(q), fp8.quantize(k)          # per block of 128 rows by default
    v8 = fp8.quantize(v, layout="pv")                  # keys contiguous, as P V needs them
    out = fp8.flash_attn_fp8_func(q8, k8, v8, causal=True)
"""

from .attention import flash_attn_fp8_func
from .quantize import Fp8Tensor, dequantize, hadamard_rotation, quantize

__all__ = ["Fp8Tensor", "dequantize", "flash_attn_fp8_func", "hadamard_rotation", "quantize"]
