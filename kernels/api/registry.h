// The table of compiled kernel instantiations, generated from the build manifest
// (templates/registry.cpp.j2). Keys mirror the codegen KernelSpec axes.
#pragma once

#include <cuda_runtime_api.h>

#include "common/bwd_params.h"
#include "flashgen/flashgen.h"

namespace flashgen {

enum class KernelFamily { kSm80 = 80, kSm90 = 90 };
enum class Direction { kFwd = 0, kBwd = 1, kDecode = 2 };

struct KernelKey {
  KernelFamily family;
  Direction direction;
  flashgen_dtype_t dtype;
  int head_dim_qk;
  int head_dim_v;
  bool causal;
  bool softcap;
  bool alibi;
  bool dropout;
  bool paged;

  bool operator==(const KernelKey& o) const {
    return family == o.family && direction == o.direction && dtype == o.dtype &&
           head_dim_qk == o.head_dim_qk && head_dim_v == o.head_dim_v && causal == o.causal &&
           softcap == o.softcap && alibi == o.alibi && dropout == o.dropout && paged == o.paged;
  }
};

using FwdLauncher = flashgen_status_t (*)(const FwdParams&, cudaStream_t);
using BwdLauncher = flashgen_status_t (*)(const BwdParams&, cudaStream_t);

struct KernelEntry {
  KernelKey key;
  const char* name;  // the canonical KernelSpec.name
  FwdLauncher fwd;  // set for forward and decode kernels
  BwdLauncher bwd;  // set for backward kernels
};

extern const KernelEntry kKernelTable[];
extern const int kNumKernels;
extern const char* const kCudaArchs;  // e.g. "80;90a"

const KernelEntry* find_kernel(const KernelKey& key);

}  // namespace flashgen
