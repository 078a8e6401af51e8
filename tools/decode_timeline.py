"""Where a decode call's time goes: kernel time against the gaps between kernels, from
torch.profiler's CUDA events (CUPTI) over graph replays. One graph holds LAYERS calls, each
over its own cache (as flashgen.bench's layers table); --layers 1 gives the one-call graphs of
the main decode table. Prints, per replay and per call: the wall time between the first
kernel's start and the last kernel's end, each kernel name's GPU time, and the rest (launch
gaps and idle time between kernels).

    python3 tools/decode_timeline.py                      # 1x4096, 8x8192; dense, paged16, fp8_paged16, sdpa_cudnn
    python3 tools/decode_timeline.py --shapes 1x32768 --layers 1 --caches fp8_paged16
"""

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

import flashgen
from flashgen.bench.decode import LAYER_NAMES, layers_step
from flashgen.bench.timing import capture_graph

REPLAYS = 5


def timeline(cache, batch, seqlen_k, layers):
    graph = capture_graph(layers_step(cache, batch, seqlen_k, layers))
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(REPLAYS):
            graph.replay()
        torch.cuda.synchronize()
    kernels = sorted((e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA),
                     key=lambda e: e.time_range.start)
    if not kernels:
        print(f"{cache} {batch}x{seqlen_k}: no CUDA events recorded")
        return
    per_name = defaultdict(float)
    for e in kernels:
        per_name[e.name[:70]] += e.time_range.elapsed_us()
    span = kernels[-1].time_range.end - kernels[0].time_range.start
    busy = sum(per_name.values())
    n = REPLAYS * layers
    print(f"== {cache} {batch}x{seqlen_k}, {layers} call(s) a graph: per call {span / n:.2f} us from the first "
          f"kernel's start to the last's end, kernels {busy / n:.2f} us, the rest {(span - busy) / n:.2f} us")
    for name, us in sorted(per_name.items(), key=lambda kv: -kv[1]):
        print(f"    {us / n:8.2f} us  {name}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", default="1x4096,8x8192", help="comma-separated BATCHxSEQLEN_K")
    parser.add_argument("--caches", default=",".join(LAYER_NAMES))
    parser.add_argument("--layers", type=int, default=16)
    args = parser.parse_args()
    flashgen.config.check_device_inputs = False
    for shape in args.shapes.split(","):
        batch, seqlen_k = (int(x) for x in shape.split("x"))
        for cache in args.caches.split(","):
            timeline(cache, batch, seqlen_k, args.layers)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
