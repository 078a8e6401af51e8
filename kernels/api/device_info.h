// Properties of the current CUDA device that host heuristics need, cached per device.
#pragma once

#include "flashgen/flashgen.h"

namespace flashgen {

struct DeviceInfo {
  int device;
  int compute_capability;  // major * 10 + minor
  int num_sms;
  int smem_per_sm;           // bytes, cudaDevAttrMaxSharedMemoryPerMultiprocessor
  int smem_per_block_optin;  // bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin
};

flashgen_status_t current_device_info(DeviceInfo* info);

// current_device_info, failing with FLASHGEN_STATUS_UNSUPPORTED_DEVICE below sm80.
flashgen_status_t supported_device_info(DeviceInfo* info);

}  // namespace flashgen
