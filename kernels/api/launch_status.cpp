#include "api/launch_status.h"

#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <set>
#include <string>
#include <utility>

#include "api/registry.h"

namespace flashgen {
namespace {
thread_local std::string g_last_error;
}  // namespace

const char* last_error() { return g_last_error.c_str(); }
void clear_error() { g_last_error.clear(); }

flashgen_status_t set_error(flashgen_status_t status, const char* format, ...) {
  char buffer[1024];
  va_list args;
  va_start(args, format);
  std::vsnprintf(buffer, sizeof(buffer), format, args);
  va_end(args);
  g_last_error = buffer;
  return status;
}

namespace {
// (kernel, device) pairs already checked and configured: the attribute calls cost
// microseconds, which matter for decode-sized launches.
std::mutex g_prepared_mutex;
std::set<std::pair<const void*, int>> g_prepared;
}  // namespace

flashgen_status_t prepare_kernel(const void* kernel, int smem_bytes) {
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) {
    return set_error(FLASHGEN_STATUS_CUDA_ERROR, "cudaGetDevice failed: %s", cudaGetErrorString(err));
  }
  {
    std::lock_guard<std::mutex> lock(g_prepared_mutex);
    if (g_prepared.count({kernel, device}) != 0) { return FLASHGEN_STATUS_OK; }
  }
  cudaFuncAttributes attributes;
  err = cudaFuncGetAttributes(&attributes, kernel);
  if (err != cudaSuccess) {
    cudaGetLastError();  // the failed query must not poison the caller's next launch check
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    return set_error(FLASHGEN_STATUS_UNSUPPORTED_DEVICE,
                     "libflashgen holds no machine code for this GPU (sm_%d%d); it was built for CUDA "
                     "archs \"%s\". Rebuild with FLASHGEN_CUDA_ARCHS including %d%d%s (%s)",
                     major, minor, kCudaArchs, major, minor, major == 9 ? "a" : "", cudaGetErrorString(err));
  }
  int max_smem = 0;
  cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (smem_bytes > max_smem) {
    return set_error(FLASHGEN_STATUS_UNSUPPORTED_DEVICE,
                     "the kernel needs %d bytes of shared memory per block, this GPU allows %d", smem_bytes,
                     max_smem);
  }
  if (smem_bytes > 48 * 1024) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
    if (err != cudaSuccess) {
      return set_error(FLASHGEN_STATUS_CUDA_ERROR, "cudaFuncSetAttribute(%d bytes) failed: %s", smem_bytes,
                       cudaGetErrorString(err));
    }
  }
  std::lock_guard<std::mutex> lock(g_prepared_mutex);
  g_prepared.insert({kernel, device});
  return FLASHGEN_STATUS_OK;
}

flashgen_status_t check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return set_error(FLASHGEN_STATUS_CUDA_ERROR, "launching the %s failed: %s", what, cudaGetErrorString(err));
  }
  return FLASHGEN_STATUS_OK;
}

}  // namespace flashgen
