#!/usr/bin/env bash
# One device call: the Hopper backward sweep of tools/gpu_bwd_sweep.sh (head dims 64 / 128 / 256,
# causal and not, 2k-16k, against FA2 and cuDNN; test_backward.py -k sm90; memcheck of the
# persistent grid) plus, from the same build, test_fp8.py and the forward and FP8 forward sweeps.
# Run it from the tree to measure (main, or an ab_base/ copy: cp -r .whl ab_base/ && cd ab_base).
# Summary in $OUT/summary.txt, written as it goes: the forward and FP8 sweeps come last, so a
# 600 s limit cuts those first (estimated ~550-700 s in all; untimed so far).
set -uo pipefail
cd "$(dirname "$0")/.."
fp8=fwd_sm90_e4m3_hdim128,fwd_sm90_e4m3_hdim128_causal,fwd_sm90_e4m3_hdim128_paged
fp8+=,fwd_sm90_e4m3_hdim256,fwd_sm90_e4m3_hdim256_causal
seqlens=2048,4096,8192,16384
FAMILY=sm90 EXTRAS=0 SEQLENS=$seqlens \
  MEMCHECK_K="sm90 and (persistent or (hdim128 and (sq113 or gqa)))" \
  EXTRA_DTYPES=e4m3 EXTRA_KERNELS=$fp8 EXTRA_TESTS="tests/test_fp8.py" \
  EXTRA_BENCH="--mode fwd --head-dims 64,128,256 --seqlens $seqlens --causal both;--mode fp8 --head-dims 128,256 --seqlens $seqlens --causal both" \
  exec tools/gpu_bwd_sweep.sh
