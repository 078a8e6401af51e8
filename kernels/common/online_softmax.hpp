// Online (streaming) softmax over key blocks, on (rows, cols) register views.
//
// Each thread owns kRows rows of the score tile, each row shared with the three other lanes
// of its quad. The running max is quad-reduced at every block so that the rescale factor is
// the same in all four lanes; the running sum stays a per-lane partial until finalize().
#pragma once

#include <cmath>

#include "common/cute_utils.hpp"

namespace flashgen {

// A row's running max moves only when a block's max exceeds it by more than this (log2 units),
// so unnormalised probabilities stay below 2^8, well inside 16-bit P (and fp32 sums).
constexpr float kRescaleSlackLog2 = 8.f;

template <int kRows>
struct OnlineSoftmax {
  float row_max[kRows];
  float row_sum[kRows];

  CUTE_DEVICE OnlineSoftmax() {
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      row_max[r] = -INFINITY;
      row_sum[r] = 0.f;
    }
  }

  // scores: (kRows, cols) raw scores; turned in place into unnormalised probabilities
  // exp(logit_scale * (s - max)). acc_o: (kRows, head_dim), rescaled when the max grows;
  // kIsFirst skips that rescale (of a zero accumulator).
  // slack_log2 as in update_scores; with a slack, a warp whose corrections are all 1 (almost
  // every block after the first few) skips the rescale.
  template <bool kIsFirst, class ScoresTensor, class AccTensor>
  CUTE_DEVICE void update(ScoresTensor& scores, AccTensor& acc_o, float scale_log2, float slack_log2 = 0.f) {
    float correction[kRows];
    update_scores<kIsFirst>(scores, scale_log2, correction, slack_log2);
    if constexpr (!kIsFirst) {
      if (slack_log2 == 0.f || warp_needs_rescale(correction)) { rescale(acc_o, correction); }
    }
  }

  // Whether any row of the warp has a correction other than 1 (warp-uniform; every lane of
  // the warp must call it).
  CUTE_DEVICE static bool warp_needs_rescale(float const (&correction)[kRows]) {
    bool any = false;
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) { any |= correction[r] != 1.f; }
    return __any_sync(0xffffffffu, any);
  }

  // The two halves of update(), for kernels whose acc_o is still being written by an
  // asynchronous MMA while the scores are processed: correction[r] is the factor row r of
  // acc_o must be multiplied by (left unset when kIsFirst).
  // slack_log2 > 0: a row keeps its max while the block's max exceeds it by at most that much
  // (in log2 units of the probabilities), so its correction is exactly 1 and its probabilities
  // may reach 2^slack_log2; rows rarely need a rescale after the first blocks, and a caller can
  // skip acc_o's rescale where every correction is 1. The result is the same softmax.
  template <bool kIsFirst, class ScoresTensor>
  CUTE_DEVICE void update_scores(ScoresTensor& scores, float scale_log2, float (&correction)[kRows],
                                 float slack_log2 = 0.f) {
    static_assert(decltype(size<0>(scores))::value == kRows);
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      float new_max = row_max[r];
      CUTE_UNROLL
      for (int c = 0; c < size<1>(scores); ++c) { new_max = fmaxf(new_max, scores(r, c)); }
      new_max = quad_allreduce_max(new_max);
      // (-inf) - (-inf) is NaN: a row without keys so far takes the update path, as before.
      const bool keep = !kIsFirst && slack_log2 > 0.f && (new_max - row_max[r]) * scale_log2 <= slack_log2;
      if (keep) { new_max = row_max[r]; }
      // A row that has seen only masked keys keeps max = -inf; subtracting 0 instead keeps
      // exp2(-inf - x) = 0 and avoids (-inf) - (-inf) = NaN.
      const float max_scaled = new_max == -INFINITY ? 0.f : new_max * scale_log2;
      if constexpr (!kIsFirst) {
        correction[r] = keep ? 1.f : fast_exp2(row_max[r] * scale_log2 - max_scaled);
        row_sum[r] *= correction[r];
      }
      row_max[r] = new_max;
      float sum = 0.f;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(scores); ++c) {
        const float p = fast_exp2(scores(r, c) * scale_log2 - max_scaled);
        scores(r, c) = p;
        sum += p;
      }
      row_sum[r] += sum;
    }
  }

  // FP8: the same with a scale per row that may change from block to block (the dequantisation
  // scales of the row's Q block and of the key block, times logit_scale_log2). row_max is then
  // kept in scaled log2 units (finalize's logit_scale is ln 2), and the probabilities come out
  // multiplied by 2^exp2_offset (which lifts them into e4m3's normal range, and may carry a
  // factor meant for the P V product only); the row sums add them times sum_weight.
  // slack_log2 as in update_scores.
  template <bool kIsFirst, class ScoresTensor>
  CUTE_DEVICE void update_scores_scaled(ScoresTensor& scores, float const (&scale_log2)[kRows], float exp2_offset,
                                        float sum_weight, float (&correction)[kRows], float slack_log2 = 0.f) {
    static_assert(decltype(size<0>(scores))::value == kRows);
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      float raw_max = -INFINITY;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(scores); ++c) { raw_max = fmaxf(raw_max, scores(r, c)); }
      raw_max = quad_allreduce_max(raw_max);
      float new_max = fmaxf(row_max[r], raw_max * scale_log2[r]);
      const bool keep = !kIsFirst && slack_log2 > 0.f && new_max - row_max[r] <= slack_log2;
      if (keep) { new_max = row_max[r]; }
      const float max_used = new_max == -INFINITY ? 0.f : new_max;
      if constexpr (!kIsFirst) {
        correction[r] = keep ? 1.f : fast_exp2(row_max[r] - max_used);
        row_sum[r] *= correction[r];
      }
      row_max[r] = new_max;
      const float shift = max_used - exp2_offset;
      float sum = 0.f;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(scores); ++c) {
        const float p = fast_exp2(scores(r, c) * scale_log2[r] - shift);
        scores(r, c) = p;
        sum += p;
      }
      row_sum[r] += sum * sum_weight;
    }
  }

  template <class AccTensor>
  CUTE_DEVICE void rescale(AccTensor& acc_o, float const (&correction)[kRows]) const {
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      CUTE_UNROLL
      for (int c = 0; c < size<1>(acc_o); ++c) { acc_o(r, c) *= correction[r]; }
    }
  }

  // Normalises acc_o (times out_scale, the dropout rescale) and returns each row's
  // natural-log LSE. sink[r] is an extra logit in row r's denominator (-inf: none). A row whose
  // denominator is empty keeps a zero output and gets lse = empty_lse.
  template <class AccTensor>
  CUTE_DEVICE void finalize(AccTensor& acc_o, float logit_scale, float const (&sink)[kRows], float out_scale,
                            float empty_lse, float (&lse)[kRows]) {
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      float sum = quad_allreduce_sum(row_sum[r]);
      float max_logit = row_max[r] == -INFINITY ? -INFINITY : row_max[r] * logit_scale;
      float out_factor = 1.f;
      if (sink[r] != -INFINITY) {
        const float m = fmaxf(max_logit, sink[r]);
        const float rescale = max_logit == -INFINITY ? 0.f : __expf(max_logit - m);
        sum = sum * rescale + __expf(sink[r] - m);
        out_factor = rescale;
        max_logit = m;
      }
      const bool empty = sum == 0.f || sum != sum;
      lse[r] = empty ? empty_lse : max_logit + __logf(sum);
      const float factor = empty ? 0.f : out_factor * out_scale / sum;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(acc_o); ++c) { acc_o(r, c) *= factor; }
    }
  }
};

}  // namespace flashgen
