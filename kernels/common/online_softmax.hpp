// Online (streaming) softmax over key blocks, on (rows, cols) register views.
//
// Each thread owns kRows rows of the score tile, each row shared with the three other lanes
// of its quad. The running max is quad-reduced at every block so that the rescale factor is
// the same in all four lanes; the running sum stays a per-lane partial until finalize().
#pragma once

#include <cmath>

#include "common/cute_utils.hpp"

namespace flashgen {

template <int kRows>
struct OnlineSoftmax {
  float row_max[kRows];
  float row_sum[kRows];

  // scores: (kRows, cols) raw logits; turned in place into unnormalised probabilities.
  // acc_o:  (kRows, head_dim) output accumulator, rescaled when the running max grows.
  template <bool kIsFirst, class ScoresTensor, class AccTensor>
  CUTE_DEVICE void update(ScoresTensor& scores, AccTensor& acc_o, float scale_log2) {
    static_assert(decltype(size<0>(scores))::value == kRows);
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      float new_max = kIsFirst ? -INFINITY : row_max[r];
      CUTE_UNROLL
      for (int c = 0; c < size<1>(scores); ++c) { new_max = fmaxf(new_max, scores(r, c)); }
      new_max = quad_allreduce_max(new_max);
      // A row that has seen only masked keys keeps max = -inf; subtracting 0 instead keeps
      // exp2(-inf - x) = 0 and avoids (-inf) - (-inf) = NaN.
      const float max_scaled = new_max == -INFINITY ? 0.f : new_max * scale_log2;
      if constexpr (!kIsFirst) {
        const float correction = fast_exp2(row_max[r] * scale_log2 - max_scaled);
        row_sum[r] *= correction;
        CUTE_UNROLL
        for (int c = 0; c < size<1>(acc_o); ++c) { acc_o(r, c) *= correction; }
      }
      row_max[r] = new_max;
      float sum = 0.f;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(scores); ++c) {
        const float p = fast_exp2(scores(r, c) * scale_log2 - max_scaled);
        scores(r, c) = p;
        sum += p;
      }
      row_sum[r] = kIsFirst ? sum : row_sum[r] + sum;
    }
  }

  // Normalises acc_o by the row sums and returns the natural-log LSE of each row in lse[].
  // Rows that saw no key (sum 0) keep a zero output and get lse = +inf, as flash-attn does.
  template <class AccTensor>
  CUTE_DEVICE void finalize(AccTensor& acc_o, float softmax_scale, float (&lse)[kRows]) {
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      const float sum = quad_allreduce_sum(row_sum[r]);
      const bool empty = sum == 0.f || sum != sum;
      const float inv_sum = empty ? 1.f : 1.f / sum;
      lse[r] = empty ? INFINITY : row_max[r] * softmax_scale + __logf(sum);
      CUTE_UNROLL
      for (int c = 0; c < size<1>(acc_o); ++c) { acc_o(r, c) *= inv_sum; }
    }
  }
};

}  // namespace flashgen
