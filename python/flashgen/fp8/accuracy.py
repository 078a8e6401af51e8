"""FP8 attention accuracy against the float64 attention of the unquantized inputs, per scale
granularity, with and without the Hadamard rotation, for several input distributions.

    python -m flashgen.fp8.accuracy [--head-dim 128] [--seqlen 2048]

Distributions (q, k, v of N(0, 1) entries unless said):
  normal        as is
  token-v R     1% of v's tokens scaled by R (massive activations reach ~1e3-1e4 x the median)
  channel-qk M  4 channels of q and k scaled by M for every token (outlier channels shared by
                q and k, as after the projections of real models)
  mixed         token-v 3000 and channel-qk 20 together
The softmax scale keeps the logits' spread at about 2 whatever the distribution, so that the
comparison measures quantization error, not the conditioning of a saturated softmax.
"""

from __future__ import annotations

import argparse
import math

import torch

from .attention import flash_attn_fp8_func
from .quantize import hadamard_rotation, quantize


def token_outliers(x, gen, ratio, fraction=0.01):
    rows = x.shape[1]
    idx = torch.randperm(rows, generator=gen)[: max(1, int(rows * fraction))]
    x = x.clone()
    x[:, idx] *= ratio
    return x


def channel_outliers(x, channels, magnitude):
    x = x.clone()
    x[..., channels] *= magnitude
    return x


def make_inputs(kind: str, b, s, h, d, gen):
    q, k, v = (torch.randn(b, s, h, d, generator=gen) for _ in range(3))
    chans = torch.randperm(d, generator=gen)[:4]
    if kind.startswith("token-v"):
        v = token_outliers(v, gen, float(kind.split()[1]))
    elif kind.startswith("channel-qk"):
        m = float(kind.split()[1])
        q, k = channel_outliers(q, chans, m), channel_outliers(k, chans, m)
    elif kind == "mixed":
        v = token_outliers(v, gen, 3000.0)
        q, k = channel_outliers(q, chans, 20.0), channel_outliers(k, chans, 20.0)
    return q, k, v


def reference(q, k, v, scale):
    qh, kh, vh = (t.transpose(1, 2).double() for t in (q, k, v))
    p = torch.softmax(qh @ kh.transpose(-1, -2) * scale, dim=-1)
    return (p @ vh).transpose(1, 2)


def errors(q, k, v, scale, granularity, rotate, block=128):
    rot = hadamard_rotation(q.shape[-1], seed=1, device=q.device) if rotate else None
    q8 = quantize(q, granularity=granularity, block=block, rotation=rot)
    k8 = quantize(k, granularity=granularity, block=block, rotation=rot)
    v8 = quantize(v, granularity=granularity, block=block, layout="pv")
    out = flash_attn_fp8_func(q8, k8, v8, softmax_scale=scale).double()
    ref = reference(q, k, v, scale)
    diff = out - ref
    rmse = (diff.pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()).item()
    # Per (row, head) relative error, median: not dominated by the rows the outliers inflate.
    row_rel = diff.norm(dim=-1) / ref.norm(dim=-1).clamp_min(1e-30)
    return rmse, row_rel.median().item(), diff.abs().max().item()


def table(kinds, b=2, s=2048, h=4, d=128, seed=0, print_fn=print):
    gen = torch.Generator().manual_seed(seed)
    results = {}
    for kind in kinds:
        q, k, v = (t.to("cuda", torch.bfloat16) for t in make_inputs(kind, b, s, h, d, gen))
        raw = (q.float().transpose(1, 2) @ k.float().transpose(1, 2).transpose(-1, -2))
        scale = 2.0 / raw.std().item()
        for granularity, rotate in (("tensor", False), ("head", False), ("block", False), ("block", True)):
            results[kind, granularity, rotate] = errors(q, k, v, scale, granularity, rotate)
            rmse, med, mx = results[kind, granularity, rotate]
            print_fn(f"| {kind} | {granularity}{' + Hadamard' if rotate else ''} | {rmse:.2e} | {med:.2e} | {mx:.2e} |")
    return results


KINDS = ("normal", "token-v 1000", "token-v 10000", "channel-qk 10", "channel-qk 30", "mixed")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--seqlen", type=int, default=2048)
    args = parser.parse_args()
    print(f"FP8 accuracy, head dim {args.head_dim}, b=2 s={args.seqlen} h=4, vs float64 of the unquantized bf16 inputs")
    print("| inputs | scales | relative RMSE | median row relative error | max abs error |")
    print("| --- | --- | --- | --- | --- |")
    table(KINDS, s=args.seqlen, d=args.head_dim)
