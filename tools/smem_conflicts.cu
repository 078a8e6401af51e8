// Shared-memory wavefronts of the SM80-path backward's shared-memory copies, computed on the
// host from the kernel's own CuTe layouts and tiled copies (no GPU): for each ldmatrix, each of
// its 8x8 matrices takes one wavefront per 16-byte chunk position that two of its 8 row
// addresses share within the 128-byte bank period; for 32-bit stores, one per extra word that
// falls in an already used bank (different words). ncu counted 10x FA2's ldmatrix bank
// conflicts on this kernel (bench/NOTES.md, bwd v3); this says which copy they come from.
//
//   nvcc -std=c++17 --expt-relaxed-constexpr -x cu -I kernels -I include -isystem $CUTLASS/include \
//        tools/smem_conflicts.cu -o /tmp/smem_conflicts && /tmp/smem_conflicts
#include <cstdio>
#include <map>
#include <set>

#include <cute/tensor.hpp>

#include "sm80/sm80_bwd_traits.hpp"

using namespace cute;

// Byte offset of an element of a tensor built on a null shared-memory pointer.
template <class T>
long offset_of(T const& ref, void const* base) {
  return long(reinterpret_cast<char const*>(&ref) - reinterpret_cast<char const*>(base));
}

// ldmatrix (x4) from `smem` through `copy`: wavefronts per instruction and warp, against the 4
// a conflict-free one takes.
template <int kThreads, class TiledCopy, class Smem>
void ldmatrix_report(char const* name, TiledCopy const& copy, Smem const& smem) {
  long total = 0, ideal = 0;
  const auto probe = copy.get_thread_slice(0).partition_S(smem);
  for (int m = 0; m < size<1>(probe); ++m) {
    for (int k = 0; k < size<2>(probe); ++k) {
      for (int warp = 0; warp < kThreads / 32; ++warp) {
        for (int mat = 0; mat < 4; ++mat) {
          std::map<long, int> chunks;  // 16-byte chunk position in the 128-byte period -> rows
          std::set<long> rows;
          for (int r = 0; r < 8; ++r) {
            const int t = warp * 32 + mat * 8 + r;
            const auto part = copy.get_thread_slice(t).partition_S(smem);
            const long addr = offset_of(part(0, m, k), smem.data().get());
            if (rows.insert(addr / 16).second) { ++chunks[(addr / 16) % 8]; }
          }
          int worst = 0;
          for (auto const& [pos, n] : chunks) { worst = n > worst ? n : worst; }
          total += worst;
          ideal += 1;
        }
      }
    }
  }
  std::printf("%-34s ldmatrix: %ld wavefronts, %ld conflict-free (%.2fx)\n", name, total, ideal,
              double(total) / double(ideal));
}

// 32-bit stores (UniversalCopy<uint32_t>) of an accumulator into `smem` through `copy`.
template <int kThreads, class TiledCopy, class Smem>
void store_report(char const* name, TiledCopy const& copy, Smem const& smem) {
  long total = 0, ideal = 0;
  const auto probe = copy.get_thread_slice(0).partition_D(smem);
  for (int i = 0; i < size(probe) / 2; ++i) {  // two 16-bit elements per store
    for (int warp = 0; warp < kThreads / 32; ++warp) {
      std::map<long, std::set<long>> banks;  // bank -> distinct words
      for (int lane = 0; lane < 32; ++lane) {
        const auto part = copy.get_thread_slice(warp * 32 + lane).partition_D(smem);
        const long addr = offset_of(part(2 * i), smem.data().get());
        banks[(addr / 4) % 32].insert(addr / 4);
      }
      int worst = 0;
      for (auto const& [bank, words] : banks) { worst = int(words.size()) > worst ? int(words.size()) : worst; }
      total += worst;
      ideal += 1;
    }
  }
  std::printf("%-34s st.shared.b32: %ld wavefronts, %ld conflict-free (%.2fx)\n", name, total, ideal,
              double(total) / double(ideal));
}

template <class Element, int kDim>
void report() {
  using Traits = flashgen::sm80::BwdTraits<Element, kDim, kDim>;
  constexpr int kThreads = Traits::kNumThreads;
  std::printf("== bwd sm80 hdim %d: block_m %d, block_n %d, warps sdp %dx%d, dkv %dx%d, dq %dx%d\n", kDim,
              Traits::kBlockM, Traits::kBlockN, Traits::kTile.sdp_warps_m, Traits::kNumWarps / Traits::kTile.sdp_warps_m,
              Traits::kTile.dkv_warps_m, Traits::kNumWarps / Traits::kTile.dkv_warps_m, Traits::kTile.dq_warps_m,
              Traits::kNumWarps / Traits::kTile.dq_warps_m);
  static Element pool[1];
  auto smem = [&](auto layout) { return make_tensor(make_smem_ptr(pool), layout); };
  typename Traits::TiledMmaSdP mma_sdp;
  typename Traits::TiledMmadKV mma_dkv;
  typename Traits::TiledMmadQ mma_dq;
  auto copy_sdp_a = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, mma_sdp);
  auto copy_sdp_b = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, mma_sdp);
  auto copy_dkv_a = make_tiled_copy_A(typename Traits::SmemCopyAtomTransposed{}, mma_dkv);
  auto copy_dkv_b = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, mma_dkv);
  auto copy_dq_a = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, mma_dq);
  auto copy_dq_b = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, mma_dq);
  auto copy_p = make_tiled_copy_C(typename Traits::SmemCopyAtomStore{}, mma_sdp);
  ldmatrix_report<kThreads>("S = Q K^T: Q", copy_sdp_a, smem(typename Traits::SmemLayoutQ{}));
  ldmatrix_report<kThreads>("S = Q K^T: K", copy_sdp_b, smem(typename Traits::SmemLayoutK{}));
  ldmatrix_report<kThreads>("dP = dO V^T: dO", copy_sdp_a, smem(typename Traits::SmemLayoutdO{}));
  ldmatrix_report<kThreads>("dP = dO V^T: V", copy_sdp_b, smem(typename Traits::SmemLayoutV{}));
  ldmatrix_report<kThreads>("dV += P^T dO: P^T", copy_dkv_a, smem(typename Traits::SmemLayoutPt{}));
  ldmatrix_report<kThreads>("dV += P^T dO: dO^T", copy_dkv_b, smem(typename Traits::SmemLayoutdOt{}));
  ldmatrix_report<kThreads>("dK += dS^T Q: Q^T", copy_dkv_b, smem(typename Traits::SmemLayoutQt{}));
  ldmatrix_report<kThreads>("dQ = dS K: dS", copy_dq_a, smem(typename Traits::SmemLayoutP{}));
  ldmatrix_report<kThreads>("dQ = dS K: K^T", copy_dq_b, smem(typename Traits::SmemLayoutKt{}));
  store_report<kThreads>("P / dS stores", copy_p, smem(typename Traits::SmemLayoutP{}));
}

int main() {
  report<cutlass::bfloat16_t, 64>();
  report<cutlass::bfloat16_t, 128>();
  report<cutlass::bfloat16_t, 256>();
  return 0;
}
