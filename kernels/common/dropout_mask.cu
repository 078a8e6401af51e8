#include "api/launch_status.h"
#include "common/aux_kernels.h"
#include "common/dropout.hpp"

namespace flashgen {
namespace {

__global__ void dropout_mask_kernel(uint64_t seed, uint64_t offset, uint32_t threshold, int num_heads, int seqlen_q,
                                    int seqlen_k, uint8_t* mask) {
  const int row = blockIdx.x;
  const int head = blockIdx.y;
  const int batch = blockIdx.z;
  const DropoutKey key(seed, offset, batch, num_heads, head, threshold);
  uint8_t* out = mask + ((int64_t(batch) * num_heads + head) * seqlen_q + row) * seqlen_k;
  for (int col = threadIdx.x; col < seqlen_k; col += blockDim.x) { out[col] = key.keep(row, col) ? 1 : 0; }
}

}  // namespace

flashgen_status_t launch_dropout_mask(uint64_t seed, uint64_t offset, uint32_t threshold, int batch, int num_heads,
                                      int seqlen_q, int seqlen_k, uint8_t* mask, cudaStream_t stream) {
  if (batch == 0 || num_heads == 0 || seqlen_q == 0 || seqlen_k == 0) { return FLASHGEN_STATUS_OK; }
  flashgen_status_t status = prepare_kernel(reinterpret_cast<const void*>(&dropout_mask_kernel), 0);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  dropout_mask_kernel<<<dim3(seqlen_q, num_heads, batch), 128, 0, stream>>>(seed, offset, threshold, num_heads,
                                                                            seqlen_q, seqlen_k, mask);
  return check_launch("dropout mask kernel");
}

}  // namespace flashgen
