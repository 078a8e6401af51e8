// A C++ consumer of flashgen's C API, built against the installed CMake package: forward
// attention (odd sequence lengths, GQA) and a paged decode (one query token, shuffled pages,
// a different cache length per sequence) on raw cudaMalloc buffers, each checked against a
// double-precision CPU reference.
//
//   flashgen_example [--dtype bf16|fp16] [--head-dim 64] [--no-paged]
//
// Exit codes: 0 all checks pass, 1 a result is wrong, 2 bad command line, 3 no usable CUDA
// device (or a CUDA error), 4 the needed kernel (or this GPU's arch) is not in the build.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include <cuda_runtime_api.h>

#include "flashgen/flashgen.h"
#include "host_reference.h"

namespace {

constexpr int kExitOk = 0, kExitMismatch = 1, kExitUsage = 2, kExitNoDevice = 3, kExitNotBuilt = 4;

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    std::fprintf(stderr, "CUDA error in %s: %s\n", what, cudaGetErrorString(err));
    std::exit(kExitNoDevice);
  }
}

// Owns one device allocation; the example's only resource.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes_ > 0) { check_cuda(cudaMalloc(&ptr_, bytes_), "cudaMalloc"); }
  }
  template <class T>
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size() * sizeof(T)) {
    check_cuda(cudaMemcpy(ptr_, host.data(), bytes_, cudaMemcpyHostToDevice), "cudaMemcpy to device");
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr_); }

  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  template <class T>
  std::vector<T> download() const {
    std::vector<T> host(bytes_ / sizeof(T));
    check_cuda(cudaMemcpy(host.data(), ptr_, bytes_, cudaMemcpyDeviceToHost), "cudaMemcpy to host");
    return host;
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_;
};

struct Tolerance {
  double atol, rtol;
};

// Error budget of one rounding of the output to the dtype plus the kernel's low-precision P @ V
// (about two ulps of the dtype, relative): a wrong mask, page or head gives errors of O(0.1-1).
Tolerance output_tolerance(flashgen_dtype_t dtype) {
  return dtype == FLASHGEN_DTYPE_BF16 ? Tolerance{1e-2, 2e-2} : Tolerance{2e-3, 4e-3};
}
constexpr Tolerance kLseTolerance{1e-3, 1e-4};  // lse is computed in float32 throughout

// Prints the worst error and returns whether every element is within tolerance (NaN fails).
template <class Load>
bool compare(const char* what, const std::vector<double>& ref, Load load, Tolerance tol) {
  double max_err = 0.0;
  size_t bad = 0, first_bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double got = load(i), err = std::fabs(got - ref[i]);
    const bool ok = (std::isinf(ref[i]) && got == ref[i]) || err <= tol.atol + tol.rtol * std::fabs(ref[i]);
    if (!ok && bad++ == 0) { first_bad = i; }
    if (!(err <= max_err)) { max_err = err; }  // keeps NaN
  }
  std::printf("  %-4s max abs error %.3g over %zu values (atol %.0e, rtol %.0e): %s\n", what, max_err, ref.size(),
              tol.atol, tol.rtol, bad == 0 ? "ok" : "MISMATCH");
  if (bad != 0) {
    std::printf("    %zu values out of tolerance; first at flat index %zu: got %.6g, expected %.6g\n", bad, first_bad,
                load(first_bad), ref[first_bad]);
  }
  return bad == 0;
}

// The status of a flashgen call as an exit code (kExitOk when it succeeded).
int status_exit_code(flashgen_status_t status, const char* what) {
  if (status == FLASHGEN_STATUS_OK) { return kExitOk; }
  std::fprintf(stderr, "%s failed (status %d): %s\n", what, int(status), flashgen_last_error());
  if (status == FLASHGEN_STATUS_NOT_BUILT || status == FLASHGEN_STATUS_UNSUPPORTED_DEVICE) { return kExitNotBuilt; }
  return status == FLASHGEN_STATUS_CUDA_ERROR ? kExitNoDevice : kExitMismatch;
}

struct Options {
  flashgen_dtype_t dtype = FLASHGEN_DTYPE_BF16;
  int head_dim = 64;
  bool paged = true;
};

// Contiguous (batch, seqlen, heads, head_dim) element strides, flash-attn's layout.
void set_strides(int64_t seqlen, int64_t heads, int64_t head_dim, int64_t* batch, int64_t* row, int64_t* head) {
  *head = head_dim;
  *row = heads * head_dim;
  *batch = seqlen * heads * head_dim;
}

bool check_outputs(const example::AttentionShape& s, const example::Codec& codec, const example::Reference& ref,
                   const DeviceBuffer& out, const DeviceBuffer& lse) {
  const auto out_host = out.download<uint16_t>();
  const auto lse_host = lse.download<float>();
  const bool out_ok = compare("out", ref.out, [&](size_t i) { return double(codec.decode(out_host[i])); },
                              output_tolerance(codec.dtype));
  const bool lse_ok = compare("lse", ref.lse, [&](size_t i) { return double(lse_host[i]); }, kLseTolerance);
  return out_ok && lse_ok;
}

// Forward: batch 2, seqlen_q 113 against seqlen_k 239, 6 query heads sharing 2 KV heads.
int run_forward(const Options& opt) {
  const example::AttentionShape s{/*batch=*/2, /*seqlen_q=*/113, /*num_heads_q=*/6, /*num_heads_kv=*/2, opt.head_dim};
  const int seqlen_k = 239;
  std::printf("forward: batch %d, seqlen_q %d, seqlen_k %d, heads %d/%d (GQA), head_dim %d\n", s.batch, s.seqlen_q,
              seqlen_k, s.num_heads_q, s.num_heads_kv, s.head_dim);
  const example::Codec codec{opt.dtype};
  example::Rng rng(/*seed=*/2024);
  const auto q = example::random_tensor(size_t(s.batch) * s.seqlen_q * s.num_heads_q * s.head_dim, rng, codec);
  const auto k = example::random_tensor(size_t(s.batch) * seqlen_k * s.num_heads_kv * s.head_dim, rng, codec);
  const auto v = example::random_tensor(k.size(), rng, codec);

  DeviceBuffer d_q(q), d_k(k), d_v(v);
  DeviceBuffer d_out(q.size() * sizeof(uint16_t));
  DeviceBuffer d_lse(size_t(s.batch) * s.num_heads_q * s.seqlen_q * sizeof(float));
  // All-ones bits are NaN in both dtypes: a row the kernel forgets to write cannot pass.
  check_cuda(cudaMemset(d_out.get(), 0xff, d_out.bytes()), "cudaMemset");

  flashgen_fwd_args_t args;
  flashgen_fwd_args_init(&args);
  args.dtype = opt.dtype;
  args.q = d_q.get();
  args.k = d_k.get();
  args.v = d_v.get();
  args.out = d_out.get();
  args.lse = static_cast<float*>(d_lse.get());
  args.batch = s.batch;
  args.seqlen_q = s.seqlen_q;
  args.seqlen_k = seqlen_k;
  args.num_heads_q = s.num_heads_q;
  args.num_heads_kv = s.num_heads_kv;
  args.head_dim_qk = args.head_dim_v = s.head_dim;
  set_strides(s.seqlen_q, s.num_heads_q, s.head_dim, &args.q_batch_stride, &args.q_row_stride, &args.q_head_stride);
  set_strides(seqlen_k, s.num_heads_kv, s.head_dim, &args.k_batch_stride, &args.k_row_stride, &args.k_head_stride);
  set_strides(seqlen_k, s.num_heads_kv, s.head_dim, &args.v_batch_stride, &args.v_row_stride, &args.v_head_stride);
  set_strides(s.seqlen_q, s.num_heads_q, s.head_dim, &args.out_batch_stride, &args.out_row_stride,
              &args.out_head_stride);

  int code = status_exit_code(flashgen_fwd(&args, /*stream=*/nullptr), "flashgen_fwd");
  if (code != kExitOk) { return code; }
  check_cuda(cudaDeviceSynchronize(), "the forward kernel");

  const auto ref = example::reference_attention(
      s, codec, q, k, v, [&](int) { return seqlen_k; }, [&](int b, int j) { return int64_t(b) * seqlen_k + j; });
  return check_outputs(s, codec, ref, d_out, d_lse) ? kExitOk : kExitMismatch;
}

// Paged decode: one new query token per sequence against a paged KV cache (page_size 16) whose
// pages are scattered in shuffled order, with a different cache length per sequence.
int run_paged_decode(const Options& opt) {
  const example::AttentionShape s{/*batch=*/3, /*seqlen_q=*/1, /*num_heads_q=*/8, /*num_heads_kv=*/2, opt.head_dim};
  const int page_size = 16;
  const std::vector<int32_t> cache_lens = {1, 37, 200};
  const int max_pages = (200 + page_size - 1) / page_size;
  const int spare_pages = 7;
  int used_pages = 0;
  for (int len : cache_lens) { used_pages += (len + page_size - 1) / page_size; }
  const int num_pages = used_pages + spare_pages;
  std::printf("paged decode: batch %d, cache lengths %d/%d/%d, page_size %d, %d pages (shuffled), heads %d/%d, "
              "head_dim %d\n", s.batch, cache_lens[0], cache_lens[1], cache_lens[2], page_size, num_pages,
              s.num_heads_q, s.num_heads_kv, s.head_dim);

  const example::Codec codec{opt.dtype};
  example::Rng rng(/*seed=*/7);
  std::vector<int32_t> pages(num_pages);
  std::iota(pages.begin(), pages.end(), 0);
  for (int i = num_pages - 1; i > 0; --i) { std::swap(pages[i], pages[rng.next() % uint64_t(i + 1)]); }
  // Slots past a sequence's last page point at spare pages: valid indices whose rows must not count.
  std::vector<int32_t> block_table(size_t(s.batch) * max_pages);
  int next_used = 0, next_spare = 0;
  for (int b = 0; b < s.batch; ++b) {
    const int pages_b = (cache_lens[b] + page_size - 1) / page_size;
    for (int p = 0; p < max_pages; ++p) {
      block_table[size_t(b) * max_pages + p] =
          p < pages_b ? pages[next_used++] : pages[used_pages + next_spare++ % spare_pages];
    }
  }
  auto key_row = [&](int b, int j) {
    return int64_t(block_table[size_t(b) * max_pages + j / page_size]) * page_size + j % page_size;
  };

  const size_t cache_elems = size_t(num_pages) * page_size * s.num_heads_kv * s.head_dim;
  const auto q = example::random_tensor(size_t(s.batch) * s.num_heads_q * s.head_dim, rng, codec);
  // Everything outside the sequences (spare pages, the tail of each last page) is large garbage,
  // so attending to a row it should not would show up as a large error.
  auto k_cache = example::random_tensor(cache_elems, rng, codec, /*scale=*/8.0);
  auto v_cache = example::random_tensor(cache_elems, rng, codec, /*scale=*/8.0);
  const size_t row_elems = size_t(s.num_heads_kv) * s.head_dim;
  for (int b = 0; b < s.batch; ++b) {
    for (int j = 0; j < cache_lens[b]; ++j) {
      const size_t row = size_t(key_row(b, j)) * row_elems;
      for (size_t c = 0; c < row_elems; ++c) {
        k_cache[row + c] = codec.encode(float(rng.normal()));
        v_cache[row + c] = codec.encode(float(rng.normal()));
      }
    }
  }

  DeviceBuffer d_q(q), d_k(k_cache), d_v(v_cache), d_table(block_table), d_lens(cache_lens);
  DeviceBuffer d_out(q.size() * sizeof(uint16_t));
  DeviceBuffer d_lse(size_t(s.batch) * s.num_heads_q * sizeof(float));
  check_cuda(cudaMemset(d_out.get(), 0xff, d_out.bytes()), "cudaMemset");

  flashgen_fwd_args_t args;
  flashgen_fwd_args_init(&args);
  args.dtype = opt.dtype;
  args.q = d_q.get();
  args.k = d_k.get();
  args.v = d_v.get();
  args.out = d_out.get();
  args.lse = static_cast<float*>(d_lse.get());
  args.batch = s.batch;
  args.seqlen_q = 1;
  args.num_heads_q = s.num_heads_q;
  args.num_heads_kv = s.num_heads_kv;
  args.head_dim_qk = args.head_dim_v = s.head_dim;
  set_strides(1, s.num_heads_q, s.head_dim, &args.q_batch_stride, &args.q_row_stride, &args.q_head_stride);
  set_strides(1, s.num_heads_q, s.head_dim, &args.out_batch_stride, &args.out_row_stride, &args.out_head_stride);
  // Paged: the k/v "batch" stride is the page stride of the (num_pages, page_size, heads, dim) cache.
  set_strides(page_size, s.num_heads_kv, s.head_dim, &args.k_batch_stride, &args.k_row_stride, &args.k_head_stride);
  set_strides(page_size, s.num_heads_kv, s.head_dim, &args.v_batch_stride, &args.v_row_stride, &args.v_head_stride);
  args.block_table = static_cast<const int32_t*>(d_table.get());
  args.block_table_batch_stride = max_pages;
  args.max_pages_per_seq = max_pages;
  args.page_size = page_size;
  args.num_pages = num_pages;
  args.seqused_k = static_cast<const int32_t*>(d_lens.get());

  // Decode has few query rows, so flashgen may split the keys across CTAs (flash-decoding);
  // that needs a workspace, sized by the library for exactly these arguments.
  size_t workspace_bytes = 0;
  int64_t num_splits = 0;
  int code = status_exit_code(flashgen_fwd_workspace_size(&args, &workspace_bytes, &num_splits),
                              "flashgen_fwd_workspace_size");
  if (code != kExitOk) { return code; }
  DeviceBuffer workspace(workspace_bytes);
  args.workspace = workspace.get();
  args.workspace_bytes = workspace.bytes();
  std::printf("  %lld split(s), %zu bytes of workspace\n", (long long)num_splits, workspace_bytes);

  code = status_exit_code(flashgen_fwd(&args, /*stream=*/nullptr), "flashgen_fwd (paged)");
  if (code != kExitOk) { return code; }
  check_cuda(cudaDeviceSynchronize(), "the paged decode kernel");

  const auto ref = example::reference_attention(s, codec, q, k_cache, v_cache, [&](int b) { return cache_lens[b]; },
                                                key_row);
  return check_outputs(s, codec, ref, d_out, d_lse) ? kExitOk : kExitMismatch;
}

bool parse_options(int argc, char** argv, Options* opt) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--dtype" && has_value) {
      const std::string value = argv[++i];
      if (value != "bf16" && value != "fp16") { return false; }
      opt->dtype = value == "bf16" ? FLASHGEN_DTYPE_BF16 : FLASHGEN_DTYPE_FP16;
    } else if (arg == "--head-dim" && has_value) {
      opt->head_dim = std::atoi(argv[++i]);
      if (opt->head_dim <= 0) { return false; }
    } else if (arg == "--no-paged") {
      opt->paged = false;
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  if (!parse_options(argc, argv, &opt)) {
    std::fprintf(stderr, "usage: %s [--dtype bf16|fp16] [--head-dim N] [--no-paged]\n", argv[0]);
    return kExitUsage;
  }
  std::printf("flashgen %s, CUDA archs %s, %d kernel(s); dtype %s, head_dim %d\n", flashgen_version(),
              flashgen_cuda_archs(), flashgen_num_kernels(), opt.dtype == FLASHGEN_DTYPE_BF16 ? "bf16" : "fp16",
              opt.head_dim);

  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "no usable CUDA device\n");
    return kExitNoDevice;
  }
  cudaDeviceProp prop;
  check_cuda(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::printf("device 0: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);

  int code = run_forward(opt);
  if (code == kExitOk && opt.paged) { code = run_paged_decode(opt); }
  std::printf("%s\n", code == kExitOk ? "PASSED" : "FAILED");
  return code;
}
