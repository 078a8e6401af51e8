// Per-tile timestamps of the Hopper forward kernel, for finding where a tile's time goes
// (tools/fwd_trace.py). Compiled in only by a build with -DFLASHGEN_FWD_TRACE=ON (CMake option);
// the launch then reads the trace buffer's device address from FLASHGEN_FWD_TRACE (a decimal
// integer; unset or 0: no trace). Production builds hold none of this.
//
// Buffer: int64, (gridDim.x, kTraceTiles, kTraceSlots) SM clock64() values per CTA and tile
// index k (the k-th tile the CTA took, with or without work; tiles past kTraceTiles are not
// recorded), then (gridDim.x, 2) kernel start / end per CTA. Slots: consumer c's events at
// c * kTraceEvents + e (TraceEvent), the producer's at kTraceProducer + e, and the tile's key
// block count at kTraceBlocks (a count, not a clock). Unwritten slots keep what the caller put
// there (zeros).
#pragma once

#include <cstdint>

namespace flashgen::sm90 {

constexpr int kTraceTiles = 64;
constexpr int kTraceSlots = 32;
constexpr int kTraceEvents = 8;
constexpr int kTraceProducer = 24;
constexpr int kTraceBlocks = 30;

// Timing experiments of a trace build (FLASHGEN_FWD_TRACE_FLAGS, a decimal bit set): what a
// tile would cost with free loads (wrong results: timing only), and the paths main had before,
// as a same-build baseline for A/B runs (tools/gpu_fwd_order_ab.sh).
enum TraceFlag : int {
  kTraceSkipKV = 1,     // K/V loads past each pipeline slot's first complete without a TMA (stale data)
  kTraceLateClaim = 2,  // main before session 39: the first K before Q, the next tile claimed after the loads
  kTraceSkipQ = 4,      // Q loads past each Q buffer's first complete without a TMA (stale data)
  kTraceThreadStores = 8,  // the output stored by the consumer threads, not by TMA (before session 39)
};

enum TraceEvent : int {
  kTraceTileTaken = 0,      // consumer: the tile's coordinates read; producer: published
  kTraceQReady = 1,         // consumer: Q landed; producer: every load of the tile issued
  kTraceFirstIssued = 2,    // consumer: the tile's first S wgmma issued (its turn came)
  kTraceKeysDone = 3,       // consumer: the tile's last O += P V complete
  kTraceEpilogueDone = 4,   // consumer: output and LSE stored
  kTraceFinalized = 5,      // consumer: the epilogue's softmax normalisation done
  kTraceOStaged = 6,        // consumer: its output rows in shared memory, before the global stores
};

#ifdef FLASHGEN_FWD_TRACE
__device__ __forceinline__ void trace_put(unsigned long long* trace, int k, int slot, unsigned long long value) {
  if (trace != nullptr && k < kTraceTiles) {
    trace[(int64_t(blockIdx.x) * kTraceTiles + k) * kTraceSlots + slot] = value;
  }
}
__device__ __forceinline__ void trace_clock(unsigned long long* trace, int k, int slot) {
  trace_put(trace, k, slot, static_cast<unsigned long long>(clock64()));
}
__device__ __forceinline__ void trace_kernel_edge(unsigned long long* trace, int which) {
  if (trace != nullptr) {
    trace[int64_t(gridDim.x) * kTraceTiles * kTraceSlots + 2 * blockIdx.x + which] =
        static_cast<unsigned long long>(clock64());
  }
}
#define FLASHGEN_TRACE(stmt) stmt
#else
#define FLASHGEN_TRACE(stmt)
#endif

}  // namespace flashgen::sm90
