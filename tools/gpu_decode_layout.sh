#!/usr/bin/env bash
# One device call (tests/test_decode.py's head-major and FP8 TMA tests first) on what bounds the FP8-cache decode at batch 1 (issue 7; session 38): builds
# the bf16 / e4m3 head-dim-128 decode kernels, then tools/decode_probe.py (graph-replayed TB/s)
#  1. token-major (nhd) against head-major (hnd) cache memory, bf16 and FP8, dense and pages of 16;
#  2. FLASHGEN_DECODE_FP8_DEEP=1 (six TMA stages, one CTA per SM) at batch 1, after checking
#     that it returns main's output bit for bit;
#  3. FLASHGEN_DECODE_TMA_L2 = none / 128 (the tensor maps' L2 promotion; default 256 bytes);
# then the sm90 bf16 forward's per-tile trace, head dim 128 and 64 causal (issue 5's 2k points; FWD_TRACE_SHAPES,
# empty to skip; FWD_TRACE_KERNELS= to leave those kernels out of the build). Forward trace only:
#   DECODE=0 DECODE_KERNELS= FWD_TRACE_KERNELS=fwd_sm90_bf16_hdim128 FWD_TRACE_SHAPES=2048:128:0,4096:128:0
# FWD_TRACE_FLAGS=0,1,2,4: each shape under those timing experiments (tools/fwd_trace.py --flags).
#   tools/gpu_decode_layout.sh   (carry .whl; $OUT/summary.txt, logs.tgz)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
S=$OUT/summary.txt
export FLASHGEN_CUDA_ARCHS=90a FLASHGEN_DTYPES="bf16;e4m3" FLASHGEN_HEAD_DIMS="64;128" FLASHGEN_DIRECTIONS="fwd;decode"
export FLASHGEN_KERNELS="${DECODE_KERNELS-decode_sm80_bf16_hdim128,decode_sm80_e4m3_hdim128,fwd_sm80_bf16_hdim128}${FWD_TRACE_KERNELS-,fwd_sm90_bf16_hdim128,fwd_sm90_bf16_hdim64_causal}"
# The sm90 forward with its per-tile trace compiled in (tools/fwd_trace.py, run at the end).
export CMAKE_ARGS="${CMAKE_ARGS:-} -DFLASHGEN_FWD_TRACE=ON"
# The experiment knobs (FLASHGEN_DECODE_FP8_DEEP, FLASHGEN_DECODE_TMA_L2) live in a patch.
git apply bench/experiments/fp8_decode_deep_stages_l2_promotion.patch 2>/dev/null || echo "patch not applied (already?)"
STEPS=build timeout 300 tools/gpu_check.sh > "$OUT/build.txt" 2>&1 || { tail -30 "$OUT/build.txt"; exit 1; }
{ grep -E "^build:" "$OUT/build.txt"; cat "$OUT/gpu.txt"; grep -i "decode_fp8" "$OUT/resources.txt" | head; } > "$S"
if [[ "${DECODE:-1}" != 0 ]]; then  # DECODE=0: the forward trace only
timeout 120 python3 -m pytest -q -x tests/test_decode.py -k "head_major or fp8_tma_loader_matches" > "$OUT/tests.log" 2>&1
echo "tests rc $?: $(tail -1 "$OUT/tests.log")" >> "$S"
grep -E "FAILED|Error" "$OUT/tests.log" | head -10 >> "$S"
SHAPES=${SHAPES:-1x4096,1x32768,8x8192}
echo "== layouts" >> "$S"
timeout 150 python3 tools/decode_probe.py --shapes "$SHAPES" --layouts nhd,hnd --quick >> "$S" 2>&1
echo "== deep: bitwise check" >> "$S"
timeout 60 python3 - >> "$S" 2>&1 <<'PY'
import os, torch, flashgen
from tools.decode_probe import cache
for batch, seqlen, page in ((1, 32768, 16), (1, 5000, 16), (2, 3001, 64), (1, 4096, 0)):
    q = torch.randn(batch, 1, 32, 128, device="cuda", dtype=torch.bfloat16)
    lengths = torch.full((batch,), seqlen, dtype=torch.int32, device="cuda")
    rows = page or seqlen
    entries = batch * ((seqlen + page - 1) // page) if page else batch
    k, v = cache(entries, rows, torch.float8_e4m3fn, "nhd"), cache(entries, rows, torch.float8_e4m3fn, "nhd")
    kw = dict(cache_seqlens=lengths)
    if page:
        kw["block_table"] = torch.randperm(entries, device="cuda").view(batch, -1).int()
    outs = []
    for deep in ("0", "1"):
        os.environ["FLASHGEN_DECODE_FP8_DEEP"] = deep
        outs.append(flashgen.flash_attn_with_kvcache(q, k, v, **kw))
    torch.cuda.synchronize()
    print(f"deep vs main {batch}x{seqlen} page {page}: equal={torch.equal(outs[0], outs[1])} "
          f"max diff {(outs[0].float() - outs[1].float()).abs().max().item():.3g}")
PY
echo "== deep" >> "$S"
FLASHGEN_DECODE_FP8_DEEP=1 timeout 100 python3 tools/decode_probe.py --shapes 1x4096,1x16384,1x32768 --layouts nhd,hnd --quick >> "$S" 2>&1
for l2 in ${L2_MODES-none}; do
  echo "== L2 promotion $l2" >> "$S"
  FLASHGEN_DECODE_TMA_L2=$l2 timeout 60 python3 tools/decode_probe.py --shapes 1x32768,8x8192 --layouts nhd --quick >> "$S" 2>&1
done
fi
if [[ -n "${FWD_TRACE_SHAPES-2048:128:0,4096:128:0,2048:64:1,4096:64:1}" ]]; then
  echo "== sm90 forward per-tile trace" >> "$S"
  timeout 150 python3 tools/fwd_trace.py --shapes "${FWD_TRACE_SHAPES-2048:128:0,4096:128:0,2048:64:1,4096:64:1}" \
    --flags "${FWD_TRACE_FLAGS:-0}" >> "$S" 2>&1
fi
OUT="$OUT" tools/pack_out.sh summary.txt
cat "$S"
