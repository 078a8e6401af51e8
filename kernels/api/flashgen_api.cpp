// The C ABI: argument validation, kernel selection and the registry queries.
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "api/launch_status.h"
#include "api/registry.h"
#include "flashgen/flashgen.h"

namespace flashgen {

const char* last_error();
void clear_error();

const KernelEntry* find_kernel(const KernelKey& key) {
  for (int i = 0; i < kNumKernels; ++i) {
    if (kKernelTable[i].key == key) { return &kKernelTable[i]; }
  }
  return nullptr;
}

namespace {

const char* dtype_name(flashgen_dtype_t dtype) {
  switch (dtype) {
    case FLASHGEN_DTYPE_FP16: return "fp16";
    case FLASHGEN_DTYPE_BF16: return "bf16";
  }
  return "unknown";
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// 16-byte vector accesses need every row to start on a 16-byte boundary.
bool strides_aligned(int64_t a, int64_t b, int64_t c, int64_t elems_per_16_bytes) {
  return a % elems_per_16_bytes == 0 && b % elems_per_16_bytes == 0 && c % elems_per_16_bytes == 0;
}

flashgen_status_t validate(const flashgen_fwd_args_t& a) {
  if (a.dtype != FLASHGEN_DTYPE_FP16 && a.dtype != FLASHGEN_DTYPE_BF16) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "unsupported dtype enum %d", int(a.dtype));
  }
  if (a.batch < 0 || a.seqlen_q < 0 || a.seqlen_k < 0) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "batch and sequence lengths must be >= 0");
  }
  if (a.num_heads_q <= 0 || a.num_heads_kv <= 0 || a.head_dim_qk <= 0 || a.head_dim_v <= 0) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "head counts and head dims must be > 0");
  }
  if (a.num_heads_q % a.num_heads_kv != 0) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT,
                     "num_heads_q (%lld) must be a multiple of num_heads_kv (%lld)",
                     (long long)a.num_heads_q, (long long)a.num_heads_kv);
  }
  if (a.seqlen_q > INT_MAX || a.seqlen_k > INT_MAX || a.batch > 65535 || a.num_heads_q > 65535) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT,
                     "sizes out of range: seqlen <= 2^31-1, batch <= 65535, num_heads <= 65535");
  }
  // An empty tensor may have a null data pointer; k and v are never read when seqlen_k == 0.
  const bool keys_present = a.seqlen_k > 0;
  if (a.q == nullptr || a.out == nullptr || (keys_present && (a.k == nullptr || a.v == nullptr))) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "q, k, v and out must be non-null");
  }
  if (!aligned16(a.q) || !aligned16(a.k) || !aligned16(a.v) || !aligned16(a.out)) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "q, k, v and out must be 16-byte aligned");
  }
  const int64_t vec = 8;  // 2-byte elements per 16 bytes
  if (!strides_aligned(a.q_batch_stride, a.q_row_stride, a.q_head_stride, vec) ||
      !strides_aligned(a.k_batch_stride, a.k_row_stride, a.k_head_stride, vec) ||
      !strides_aligned(a.v_batch_stride, a.v_row_stride, a.v_head_stride, vec) ||
      !strides_aligned(a.out_batch_stride, a.out_row_stride, a.out_head_stride, vec)) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT,
                     "batch, row and head strides must be multiples of 8 elements (16 bytes)");
  }
  if (!(a.softmax_scale >= 0.f) || std::isinf(a.softmax_scale)) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "softmax_scale must be finite and >= 0 (0 = default)");
  }
  return FLASHGEN_STATUS_OK;
}

FwdParams to_params(const flashgen_fwd_args_t& a) {
  FwdParams p{};
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.out = a.out;
  p.lse = a.lse;
  p.batch = int(a.batch);
  p.seqlen_q = int(a.seqlen_q);
  p.seqlen_k = int(a.seqlen_k);
  p.num_heads_q = int(a.num_heads_q);
  p.num_heads_kv = int(a.num_heads_kv);
  p.group_size = int(a.num_heads_q / a.num_heads_kv);
  p.head_dim_qk = int(a.head_dim_qk);
  p.head_dim_v = int(a.head_dim_v);
  p.q_batch_stride = a.q_batch_stride;
  p.q_row_stride = a.q_row_stride;
  p.q_head_stride = a.q_head_stride;
  p.k_batch_stride = a.k_batch_stride;
  p.k_row_stride = a.k_row_stride;
  p.k_head_stride = a.k_head_stride;
  p.v_batch_stride = a.v_batch_stride;
  p.v_row_stride = a.v_row_stride;
  p.v_head_stride = a.v_head_stride;
  p.out_batch_stride = a.out_batch_stride;
  p.out_row_stride = a.out_row_stride;
  p.out_head_stride = a.out_head_stride;
  p.softmax_scale = a.softmax_scale > 0.f ? a.softmax_scale : 1.f / std::sqrt(float(a.head_dim_qk));
  p.softmax_scale_log2 = p.softmax_scale * float(M_LOG2E);
  p.causal = a.causal != 0;
  return p;
}

flashgen_status_t current_compute_capability(int* cc) {
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  int major = 0, minor = 0;
  if (err == cudaSuccess) { err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device); }
  if (err == cudaSuccess) { err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device); }
  if (err != cudaSuccess) {
    cudaGetLastError();
    return set_error(FLASHGEN_STATUS_CUDA_ERROR, "no usable CUDA device: %s", cudaGetErrorString(err));
  }
  *cc = major * 10 + minor;
  return FLASHGEN_STATUS_OK;
}

}  // namespace
}  // namespace flashgen

extern "C" {

void flashgen_fwd_args_init(flashgen_fwd_args_t* args) {
  if (args == nullptr) { return; }
  std::memset(args, 0, sizeof(*args));
  args->struct_size = sizeof(*args);
}

flashgen_status_t flashgen_fwd(const flashgen_fwd_args_t* args, cudaStream_t stream) {
  using namespace flashgen;
  clear_error();
  if (args == nullptr) { return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "args is NULL"); }
  if (args->struct_size != sizeof(flashgen_fwd_args_t)) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT,
                     "args->struct_size is %zu, this library expects %zu: call flashgen_fwd_args_init and "
                     "build against the matching flashgen.h",
                     args->struct_size, sizeof(flashgen_fwd_args_t));
  }
  flashgen_status_t status = validate(*args);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  if (args->batch == 0 || args->seqlen_q == 0) { return FLASHGEN_STATUS_OK; }

  int cc = 0;
  status = current_compute_capability(&cc);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  if (cc < 80) {
    return set_error(FLASHGEN_STATUS_UNSUPPORTED_DEVICE, "flashgen needs compute capability 8.0 or newer, got %d.%d",
                     cc / 10, cc % 10);
  }

  KernelKey key{KernelFamily::kSm80,       Direction::kFwd,      args->dtype,
                int(args->head_dim_qk),    int(args->head_dim_v), args->causal != 0,
                /*dropout=*/false,         /*paged=*/false};
  const KernelEntry* entry = nullptr;
  if (cc == 90) {
    KernelKey hopper = key;
    hopper.family = KernelFamily::kSm90;
    entry = find_kernel(hopper);
  }
  if (entry == nullptr) { entry = find_kernel(key); }
  if (entry == nullptr) {
    return set_error(FLASHGEN_STATUS_NOT_BUILT,
                     "no forward kernel was built for dtype=%s head_dim_qk=%d head_dim_v=%d causal=%d; "
                     "rebuild with FLASHGEN_HEAD_DIMS / FLASHGEN_DTYPES / FLASHGEN_KERNELS selecting it",
                     dtype_name(args->dtype), key.head_dim_qk, key.head_dim_v, int(key.causal));
  }
  return entry->fwd(to_params(*args), stream);
}

const char* flashgen_last_error(void) { return flashgen::last_error(); }

int flashgen_num_kernels(void) { return flashgen::kNumKernels; }

const char* flashgen_kernel_name(int index) {
  if (index < 0 || index >= flashgen::kNumKernels) { return nullptr; }
  return flashgen::kKernelTable[index].name;
}

const char* flashgen_cuda_archs(void) { return flashgen::kCudaArchs; }

const char* flashgen_version(void) { return FLASHGEN_VERSION_STRING; }

}  // extern "C"
