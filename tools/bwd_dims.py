"""Backward TFLOP/s at head dims outside the standard sweep (192, 192x128) beside SDPA's
backends where they accept the shape: python tools/bwd_dims.py [seqlen ...]."""

import sys
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import flashgen
from flashgen.bench.timing import median_ms


def tflops(ms, b, h, s, dqk, dv, causal):
    fwd = 2 * b * h * s * s * (dqk + dv) / (2 if causal else 1)
    return 2.5 * fwd / (ms * 1e-3) / 1e12


def main():
    seqlens = [int(x) for x in sys.argv[1:]] or [2048, 8192]
    for dqk, dv in ((192, 192), (192, 128)):
        for s in seqlens:
            for causal in (False, True):
                b, h = 16384 // s, 16
                q = torch.randn(b, s, h, dqk, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                k = torch.randn(b, s, h, dqk, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                v = torch.randn(b, s, h, dv, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                row = [f"{dqk}x{dv}", str(s), "yes" if causal else "no"]
                out = flashgen.flash_attn_func(q, k, v, causal=causal)
                do = torch.randn_like(out)
                ms = median_ms(lambda: torch.autograd.grad(out, (q, k, v), do, retain_graph=True))
                row.append(f"{tflops(ms, b, h, s, dqk, dv, causal):.0f}")
                for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION):
                    try:
                        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
                        with sdpa_kernel(backend):
                            o2 = F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
                            do2 = torch.randn_like(o2)
                            ms2 = median_ms(lambda: torch.autograd.grad(o2, (q, k, v), do2, retain_graph=True))
                        row.append(f"{tflops(ms2, b, h, s, dqk, dv, causal):.0f}")
                    except RuntimeError as err:
                        row.append("n/a")
                print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    print("| hdim | seqlen | causal | flashgen | FA2 | cuDNN |")
    main()
