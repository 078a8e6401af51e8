#include "api/device_info.h"

#include <cuda_runtime_api.h>

#include <mutex>
#include <unordered_map>

#include "api/launch_status.h"

namespace flashgen {

flashgen_status_t current_device_info(DeviceInfo* info) {
  static std::mutex mutex;
  static std::unordered_map<int, DeviceInfo> cache;
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(device);
    if (it != cache.end()) {
      *info = it->second;
      return FLASHGEN_STATUS_OK;
    }
    int major = 0, minor = 0, sms = 0, smem_sm = 0, smem_block = 0;
    err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    if (err == cudaSuccess) { err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device); }
    if (err == cudaSuccess) { err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device); }
    if (err == cudaSuccess) {
      err = cudaDeviceGetAttribute(&smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device);
    }
    if (err == cudaSuccess) {
      err = cudaDeviceGetAttribute(&smem_block, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    }
    if (err == cudaSuccess) {
      *info = DeviceInfo{device, major * 10 + minor, sms, smem_sm, smem_block};
      cache[device] = *info;
      return FLASHGEN_STATUS_OK;
    }
  }
  cudaGetLastError();
  return set_error(FLASHGEN_STATUS_CUDA_ERROR, "no usable CUDA device: %s", cudaGetErrorString(err));
}

flashgen_status_t supported_device_info(DeviceInfo* info) {
  const flashgen_status_t status = current_device_info(info);
  if (status != FLASHGEN_STATUS_OK || info->compute_capability >= 80) { return status; }
  return set_error(FLASHGEN_STATUS_UNSUPPORTED_DEVICE, "flashgen needs compute capability 8.0 or newer, got %d.%d",
                   info->compute_capability / 10, info->compute_capability % 10);
}

}  // namespace flashgen
