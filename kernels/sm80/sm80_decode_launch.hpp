// Host-side launch of the decode kernel (sm80 family: mma.sync + cp.async, runs on sm80 and
// newer). A generated translation unit includes this header and instantiates one run_decode.
#pragma once

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <utility>

#include <cuda_runtime_api.h>

#include "api/launch_status.h"
#include "common/fwd_combine.h"
#include "common/fwd_params.h"
#include "sm80/sm80_decode_fp8_kernel.hpp"
#include "sm80/sm80_decode_kernel.hpp"

namespace flashgen::sm80::decode {

// FLASHGEN_DECODE_COMBINE: how a split call combines its splits. kernel (the default: on an H200
// the cluster merge was never faster, and 16-50% slower at batch 1-8; bench/RESULTS.md,
// 2026-12-05): the combine kernel; auto: in a thread-block cluster where the call allows it,
// else by the combine kernel; cluster: in a cluster or an error saying why not.
enum class Combine { kKernel, kAuto, kCluster };

inline flashgen_status_t combine_setting(Combine* out) {
  const char* env = std::getenv("FLASHGEN_DECODE_COMBINE");
  *out = Combine::kKernel;
  if (env == nullptr || env[0] == '\0' || std::strcmp(env, "kernel") == 0) { return FLASHGEN_STATUS_OK; }
  if (std::strcmp(env, "auto") == 0) {
    *out = Combine::kAuto;
  } else if (std::strcmp(env, "cluster") == 0) {
    *out = Combine::kCluster;
  } else {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "FLASHGEN_DECODE_COMBINE='%s': expected kernel, auto or cluster",
                     env);
  }
  return FLASHGEN_STATUS_OK;
}

// A launch of `grid` whose x extent, the splits, is one thread-block cluster (one per row block).
template <class Traits>
struct ClusterLaunch {
  cudaLaunchAttribute attribute{};
  cudaLaunchConfig_t config{};
  ClusterLaunch(dim3 grid, int splits, cudaStream_t stream) {
    attribute.id = cudaLaunchAttributeClusterDimension;
    attribute.val.clusterDim.x = unsigned(splits);
    attribute.val.clusterDim.y = attribute.val.clusterDim.z = 1;
    config.gridDim = grid;
    config.blockDim = dim3(Traits::kThreads);
    config.dynamicSmemBytes = Traits::kSmemBytes;
    config.stream = stream;
    config.attrs = &attribute;
    config.numAttrs = 1;
  }
  ClusterLaunch(const ClusterLaunch&) = delete;  // config points at attribute
};

// Whether `kernel` runs on the current device as sm_90+ code: a build without sm_90 leaves its
// TMA and cluster code stubs, and a device without a matching image cannot load it. Asked once
// per kernel and device.
template <class Kernel>
bool sm90_code_on_device(Kernel* kernel) {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) { return false; }
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, bool> known;
  const auto key = std::make_pair(reinterpret_cast<const void*>(kernel), device);
  std::lock_guard<std::mutex> lock(mutex);
  auto it = known.find(key);
  if (it == known.end()) {
    cudaFuncAttributes attr{};
    const bool ok =
        cudaFuncGetAttributes(&attr, kernel) == cudaSuccess && attr.ptxVersion >= 90 && attr.binaryVersion >= 90;
    if (!ok) { (void)cudaGetLastError(); }
    it = known.emplace(key, ok).first;
  }
  return it->second;
}

// Why this split call's CTAs cannot form one cluster per row block and combine there (nullptr:
// they can): sm_90 code of the kernel (a build without sm_90 compiles the cluster combine out),
// at most kMaxClusterSplits splits, and a GPU that fits such a cluster of these CTAs (asked once
// per kernel, device and size; above 8 CTAs a cluster is a non-portable size, which the H100 /
// H200 allow).
template <class Traits, class Kernel>
const char* cluster_unusable_reason(Kernel* kernel, const FwdParams& p) {
  if (p.num_splits > kMaxClusterSplits) { return "at most 16 splits"; }
  constexpr const char* kNeeds = "a GPU of sm_90 or newer, a build for it and room for a cluster of num_splits CTAs";
  if (!sm90_code_on_device(kernel)) { return kNeeds; }
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) { return "a device this process can query"; }
  static std::mutex mutex;
  static std::map<std::tuple<const void*, int, int>, bool> usable;
  const auto key = std::make_tuple(reinterpret_cast<const void*>(kernel), device, p.num_splits);
  std::lock_guard<std::mutex> lock(mutex);
  auto known = usable.find(key);
  if (known == usable.end()) {
    bool ok = true;
    if (p.num_splits > 8) {
      ok = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess;
    }
    if (ok) {
      const ClusterLaunch<Traits> one(dim3(unsigned(p.num_splits)), p.num_splits, nullptr);
      int clusters = 0;
      ok = cudaOccupancyMaxActiveClusters(&clusters, kernel, &one.config) == cudaSuccess && clusters > 0;
    }
    if (!ok) { (void)cudaGetLastError(); }
    known = usable.emplace(key, ok).first;
  }
  return known->second ? nullptr : kNeeds;
}

// `kernel`, or for a split call `cluster_kernel` (its kCluster instantiation) where it can run.
template <class Traits, class Kernel, class... Extra>
flashgen_status_t launch(Kernel* kernel, Kernel* cluster_kernel, const FwdParams& p, cudaStream_t stream,
                         const char* what, const Extra&... extra) {
  const int row_blocks = (p.seqlen_q * p.group_size + Traits::kRows - 1) / Traits::kRows;
  // cta_work's two orders: splits in x (the cluster launch, whose clusters span the splits, and
  // p.decode_splits_in_x), or the KV heads x row blocks in x.
  const dim3 grid(p.num_splits, p.num_heads_kv * row_blocks, p.batch);
  flashgen_status_t status;
  if (p.num_splits > 1) {
    Combine combine;
    status = combine_setting(&combine);
    if (status != FLASHGEN_STATUS_OK) { return status; }
    const char* why = "";
    if (combine != Combine::kKernel) {
      status = prepare_kernel(reinterpret_cast<const void*>(cluster_kernel), Traits::kSmemBytes);
      if (status != FLASHGEN_STATUS_OK) { return status; }
      why = cluster_unusable_reason<Traits>(cluster_kernel, p);
    }
    if (why == nullptr) {
      const ClusterLaunch<Traits> cluster(grid, p.num_splits, stream);
      cudaLaunchKernelEx(&cluster.config, cluster_kernel, p, extra...);
      return check_launch(what);
    }
    if (combine == Combine::kCluster) {
      return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT,
                       "FLASHGEN_DECODE_COMBINE=cluster: combining %d splits in a cluster needs %s", p.num_splits, why);
    }
  }
  status = prepare_kernel(reinterpret_cast<const void*>(kernel), Traits::kSmemBytes);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  const dim3 heads_in_x(grid.y, grid.x, grid.z);
  kernel<<<p.decode_splits_in_x ? grid : heads_in_x, Traits::kThreads, Traits::kSmemBytes, stream>>>(p, extra...);
  status = check_launch(what);
  if (status != FLASHGEN_STATUS_OK || p.num_splits == 1) { return status; }
  constexpr flashgen_dtype_t kDtype =
      std::is_same_v<typename Traits::Element, cutlass::half_t> ? FLASHGEN_DTYPE_FP16 : FLASHGEN_DTYPE_BF16;
  return run_fwd_combine(p, kDtype, stream);
}

// A decode kernel with the TMA loader where the call allows it, else with cp.async. `env` holds
// auto (the default when unset: TMA where the call allows it and auto_takes says so), off
// (always cp.async) or on (TMA or an error saying why not). kernel_of(kTma, kCluster) names the
// instantiations (std::bool_constant arguments); kTmaLoads: whether this kernel has a TMA loader
// at all (its rows' layout).
template <class Traits, bool kTmaLoads, class KernelOf>
flashgen_status_t launch_with_loader(const char* env_name, bool auto_takes, KernelOf kernel_of, const FwdParams& p,
                                     cudaStream_t stream, const char* what, const char* what_tma) {
  using std::false_type, std::true_type;
  const char* env = std::getenv(env_name);
  const bool set = env != nullptr && env[0] != '\0';
  const bool on = set && std::strcmp(env, "on") == 0;
  const bool off = set && std::strcmp(env, "off") == 0;
  if (set && !off && !on && std::strcmp(env, "auto") != 0) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "%s='%s': expected auto, on or off", env_name, env);
  }
  DecodeTmaMaps maps{};
  if constexpr (kTmaLoads) {
    if (on || (!off && auto_takes)) {
      const char* why = !sm90_code_on_device(kernel_of(true_type{}, false_type{}))
                            ? "a GPU of sm_90 or newer and a build for it"
                            : sm90::decode_tma::unusable_reason(p, Traits::kRowBytes, Traits::kKvBytes);
      if (why == nullptr && !sm90::decode_tma::encode(p, Traits::kRowBytes, Traits::kKvBytes, Traits::kBlockN, &maps)) {
        why = "tensor maps the driver accepts";
      }
      if (why == nullptr) {
        return launch<Traits>(kernel_of(true_type{}, false_type{}), kernel_of(true_type{}, true_type{}), p, stream,
                              what_tma, maps);
      }
      if (on) {
        return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "%s=on: the decode's TMA loader needs %s", env_name, why);
      }
    }
  } else if (on) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "%s=on: the decode's TMA loader needs head dims 64 and 128 only",
                     env_name);
  }
  return launch<Traits>(kernel_of(false_type{}, false_type{}), kernel_of(false_type{}, true_type{}), p, stream, what,
                        maps);
}

// The kernel for a cache kind and a CTA row count (plan_rows_per_cta's choices). FP8 caches take
// the TMA loader wherever they can (FLASHGEN_DECODE_TMA); 16-bit ones where at most
// kTma16MaxStreams (sequence, kv head) pairs share the GPU (FLASHGEN_DECODE_TMA_16BIT): H200,
// GQA 32/8, head dim 128, against cp.async in the same run (bench/RESULTS.md, 2026-12-05): batch
// 1-2 from 1k to 16k keys +5-14% dense, -1% to +11% in pages of 16; from batch 4 -1% to +2%, and
// -2% to -5% at batch 32-64, where the cp.async warps keep more bytes in flight
// (kTma16MaxStreams, sm80_decode_tile.h).
template <bool kFp8, class Element, int kHeadDim, int kRows>
flashgen_status_t launch_rows(const FwdParams& p, cudaStream_t stream) {
  if constexpr (kFp8) {
    using Traits = Fp8DecodeTraits<Element, kHeadDim, kRows / 8>;
    constexpr bool kTmaLoads = Traits::kRowBytes == 64 || Traits::kRowBytes == 128;
    auto kernel_of = [](auto tma, auto cluster) {
      return &decode_fp8_kernel<Traits, decltype(tma)::value, decltype(cluster)::value>;
    };
    return launch_with_loader<Traits, kTmaLoads>("FLASHGEN_DECODE_TMA", /*auto_takes=*/true, kernel_of, p, stream,
                                                 "sm80 decode kernel (FP8 cache)",
                                                 "sm80 decode kernel (FP8 cache, TMA)");
  } else {
    using Traits = DecodeTraits<Element, kHeadDim, kRows / 16>;
    constexpr bool kTmaLoads = Traits::kRowBytes == 128 || Traits::kRowBytes == 256;
    auto kernel_of = [](auto tma, auto cluster) {
      return &decode_kernel<Traits, decltype(tma)::value, decltype(cluster)::value>;
    };
    const bool few_streams = int64_t(p.batch) * p.num_heads_kv <= kTma16MaxStreams;
    return launch_with_loader<Traits, kTmaLoads>("FLASHGEN_DECODE_TMA_16BIT", few_streams, kernel_of, p, stream,
                                                 "sm80 decode kernel", "sm80 decode kernel (TMA)");
  }
}

// Rows per CTA by the host plan's rule (the fewer when the packed rows fit them).
template <bool kFp8, class Element, int kHeadDim>
flashgen_status_t run_decode_rows(const FwdParams& p, cudaStream_t stream) {
  constexpr int kFew = plan_rows_per_cta(kFp8, /*packed_rows=*/1, kHeadDim);
  constexpr int kMany = plan_rows_per_cta(kFp8, /*packed_rows=*/1 << 20, kHeadDim);
  if constexpr (kFew == kMany) {
    return launch_rows<kFp8, Element, kHeadDim, kFew>(p, stream);
  } else {
    return plan_rows_per_cta(kFp8, p.seqlen_q * p.group_size, kHeadDim) == kFew
               ? launch_rows<kFp8, Element, kHeadDim, kFew>(p, stream)
               : launch_rows<kFp8, Element, kHeadDim, kMany>(p, stream);
  }
}

// Element: q, out and the cache (fp16 or bf16), or cutlass::float_e4m3_t for an FP8 cache read
// with fp16 (p.out_fp16) or bf16 queries.
template <class Element, int kHeadDim>
flashgen_status_t run_decode(const FwdParams& p, cudaStream_t stream) {
  if constexpr (std::is_same_v<Element, cutlass::float_e4m3_t>) {
    return p.out_fp16 ? run_decode_rows<true, cutlass::half_t, kHeadDim>(p, stream)
                      : run_decode_rows<true, cutlass::bfloat16_t, kHeadDim>(p, stream);
  } else {
    return run_decode_rows<false, Element, kHeadDim>(p, stream);
  }
}

}  // namespace flashgen::sm80::decode
