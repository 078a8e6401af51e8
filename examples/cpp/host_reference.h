// Host-side helpers of the example: a deterministic generator, 16-bit float encoding and a
// double-precision attention reference. Nothing here uses the GPU.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "flashgen/flashgen.h"

namespace example {

// splitmix64: the same numbers on every machine and compiler, unlike std::normal_distribution.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}

  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double normal() {  // Box-Muller; attention tests use normal inputs like torch.randn
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  uint64_t state_;
};

// fp16/bf16 stored as raw 16-bit patterns, rounded to nearest even, so the example needs no
// CUDA half headers on the host. Inputs are finite and far from the overflow range.
inline uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof(x));
  x += 0x7fffu + ((x >> 16) & 1u);
  return uint16_t(x >> 16);
}

inline float bf16_to_float(uint16_t b) {
  const uint32_t x = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &x, sizeof(f));
  return f;
}

inline uint16_t float_to_fp16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof(x));
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int exp = int((x >> 23) & 0xffu) - 127 + 15;
  uint32_t mant = x & 0x7fffffu;
  if (exp >= 31) { return uint16_t(sign | 0x7c00u); }
  int shift = 13;
  uint32_t bits = (uint32_t(exp) << 10);
  if (exp <= 0) {  // subnormal: the implicit bit becomes explicit and the exponent field is 0
    if (exp < -10) { return uint16_t(sign); }
    mant |= 0x800000u;
    shift = 14 - exp;
    bits = 0;
  }
  uint32_t half = bits | (mant >> shift);
  const uint32_t rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
  if (rem > mid || (rem == mid && (half & 1u))) { ++half; }  // a carry rolls into the exponent
  return uint16_t(sign | half);
}

inline float fp16_to_float(uint16_t h) {
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  float v;
  if (exp == 0) {
    v = std::ldexp(float(mant), -24);
  } else if (exp == 31) {
    v = mant ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    v = std::ldexp(float(mant | 0x400u), int(exp) - 25);
  }
  return (h & 0x8000u) ? -v : v;
}

struct Codec {
  flashgen_dtype_t dtype;
  uint16_t encode(float f) const { return dtype == FLASHGEN_DTYPE_BF16 ? float_to_bf16(f) : float_to_fp16(f); }
  float decode(uint16_t b) const { return dtype == FLASHGEN_DTYPE_BF16 ? bf16_to_float(b) : fp16_to_float(b); }
};

// n values ~ N(0, scale^2), already rounded to the dtype: the reference sees exactly the
// kernel's inputs, so only the kernel's own rounding counts as error.
inline std::vector<uint16_t> random_tensor(size_t n, Rng& rng, const Codec& codec, double scale = 1.0) {
  std::vector<uint16_t> t(n);
  for (auto& x : t) { x = codec.encode(float(scale * rng.normal())); }
  return t;
}

// Rows of K and V are (num_heads_kv, head_dim) each, stored anywhere; key_row(b, j) is the row
// index of batch entry b's key j, which covers both a contiguous (batch, seqlen_k, ...) and a
// paged (num_pages, page_size, ...) cache.
struct AttentionShape {
  int batch, seqlen_q, num_heads_q, num_heads_kv, head_dim;
};

struct Reference {
  std::vector<double> out;  // (batch, seqlen_q, num_heads_q, head_dim)
  std::vector<double> lse;  // (batch, num_heads_q, seqlen_q)
};

// Non-causal softmax(q k^T / sqrt(d)) v over the first key_len(b) keys of each batch entry.
inline Reference reference_attention(const AttentionShape& s, const Codec& codec, const std::vector<uint16_t>& q,
                                     const std::vector<uint16_t>& k, const std::vector<uint16_t>& v,
                                     const std::function<int(int)>& key_len,
                                     const std::function<int64_t(int, int)>& key_row) {
  const int d = s.head_dim, group = s.num_heads_q / s.num_heads_kv;
  const double scale = 1.0 / std::sqrt(double(d));
  Reference ref{std::vector<double>(size_t(s.batch) * s.seqlen_q * s.num_heads_q * d),
                std::vector<double>(size_t(s.batch) * s.num_heads_q * s.seqlen_q)};
  std::vector<double> logits;
  for (int b = 0; b < s.batch; ++b) {
    const int n = key_len(b);
    logits.resize(n);
    for (int h = 0; h < s.num_heads_q; ++h) {
      const int hk = h / group;
      for (int i = 0; i < s.seqlen_q; ++i) {
        const uint16_t* qi = &q[((size_t(b) * s.seqlen_q + i) * s.num_heads_q + h) * d];
        double max_logit = -std::numeric_limits<double>::infinity();
        for (int j = 0; j < n; ++j) {
          const uint16_t* kj = &k[(size_t(key_row(b, j)) * s.num_heads_kv + hk) * d];
          double dot = 0.0;
          for (int c = 0; c < d; ++c) { dot += double(codec.decode(qi[c])) * codec.decode(kj[c]); }
          logits[j] = dot * scale;
          max_logit = std::max(max_logit, logits[j]);
        }
        double* o = &ref.out[((size_t(b) * s.seqlen_q + i) * s.num_heads_q + h) * d];
        double sum = 0.0;
        for (int j = 0; j < n; ++j) {
          const double p = std::exp(logits[j] - max_logit);
          sum += p;
          const uint16_t* vj = &v[(size_t(key_row(b, j)) * s.num_heads_kv + hk) * d];
          for (int c = 0; c < d; ++c) { o[c] += p * codec.decode(vj[c]); }
        }
        for (int c = 0; c < d; ++c) { o[c] = n > 0 ? o[c] / sum : 0.0; }
        ref.lse[(size_t(b) * s.num_heads_q + h) * s.seqlen_q + i] =
            n > 0 ? max_logit + std::log(sum) : std::numeric_limits<double>::infinity();
      }
    }
  }
  return ref;
}

}  // namespace example
