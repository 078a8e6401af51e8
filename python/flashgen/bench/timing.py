"""CUDA-event timing (median after warm-up) and the same-run hardware ceilings."""

from __future__ import annotations

import statistics
from typing import Callable

import torch


def median_ms(fn: Callable[[], object], warmup: int = 5, budget_ms: float = 300.0, reps: int = 15,
              min_burst: int = 1) -> float:
    """Median GPU time of one fn() call, in milliseconds.

    Each sample times a burst of back-to-back calls between two events, so the host-side cost
    of issuing a call overlaps the previous call's kernels as it does in a real model, instead
    of leaving the GPU idle inside the timed region (which would charge Python dispatch to the
    kernel). The burst length makes a sample last about budget_ms / reps, and is at least
    min_burst calls.
    """
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(3):
        fn()
    end.record()
    end.synchronize()
    estimate = max(start.elapsed_time(end) / 3, 1e-3)
    burst = max(min_burst, min(1000, int(budget_ms / reps / estimate)))
    samples = []
    for _ in range(reps):
        start.record()
        for _ in range(burst):
            fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / burst)
    return statistics.median(samples)


def matmul_tflops(n: int = 8192, dtype: torch.dtype = torch.bfloat16) -> float:
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    ms = median_ms(lambda: a @ b)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def copy_tbps(nbytes: int = 4 << 30) -> float:
    """Device-to-device copy rate, counting bytes read plus bytes written."""
    src = torch.randn(nbytes // 4, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src))
    return 2 * nbytes / (ms * 1e-3) / 1e12


def read_tbps(nbytes: int = 2 << 30) -> float:
    """Streaming-read rate: a float32 sum over nbytes (the reduction's output is negligible)."""
    src = torch.randn(nbytes // 4, device="cuda")
    ms = median_ms(lambda: src.sum())
    return nbytes / (ms * 1e-3) / 1e12


def capture_graph(fn: Callable[[], object]) -> torch.cuda.CUDAGraph:
    """fn run once on a side stream (allocations and lazy setup happen outside the capture), then
    captured into a CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph
