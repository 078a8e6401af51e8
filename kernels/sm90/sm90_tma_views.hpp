// Global tensors as the Hopper kernels' TMA descriptors see them.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>

namespace flashgen::sm90 {

using namespace cute;

// A (batch, row, head, dim) tensor with the last dim contiguous, as (rows, dim, heads, batches).
template <class Element>
CUTE_HOST auto tma_rows_view(Element const* ptr, int rows, int dim, int heads, int batches, int64_t row_stride,
                             int64_t head_stride, int64_t batch_stride) {
  return make_tensor(make_gmem_ptr(ptr), make_shape(rows, dim, heads, batches),
                     make_stride(row_stride, _1{}, head_stride, batch_stride));
}

// The batch stride of that view: a single addressed entry (packed varlen rows, or a broadcast
// stride of 0) still needs a valid, non-zero, 16-byte multiple one: the entry's size.
inline int64_t tma_batch_stride(bool single_entry, int64_t stride, int64_t row_stride, int rows) {
  return (single_entry || stride == 0) ? row_stride * rows : stride;
}

}  // namespace flashgen::sm90
