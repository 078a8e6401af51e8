// Per-element transforms of the raw scores S = Q K^T before the softmax: softcap and ALiBi.
// Scores stay in "raw" units; the softmax multiplies them by FwdParams::logit_scale.
#pragma once

#include "common/cute_utils.hpp"

namespace flashgen {

CUTE_DEVICE float fast_tanh(float x) {
  float y;
  asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// s <- tanh(s * softmax_scale / softcap); logit_scale = softcap completes softcap * tanh(.).
template <class Scores>
CUTE_DEVICE void apply_softcap(Scores& scores, float prescale) {
  CUTE_UNROLL
  for (int i = 0; i < size(scores); ++i) { scores(i) = fast_tanh(scores(i) * prescale); }
}

// logit += -slope * |i + d - j|, expressed in raw units (slope / logit_scale).
template <class Scores, class Coords>
CUTE_DEVICE void apply_alibi(Scores& scores, Coords const& coords, int row0_on_keys, int col0, float raw_slope) {
  CUTE_UNROLL
  for (int i = 0; i < size(scores); ++i) {
    const int distance = row0_on_keys + get<0>(coords(i)) - (col0 + get<1>(coords(i)));
    scores(i) -= raw_slope * fabsf(float(distance));
  }
}

}  // namespace flashgen
