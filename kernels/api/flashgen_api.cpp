// The forward C ABI: argument validation, kernel selection, split-KV planning.
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "api/device_info.h"
#include "api/fwd_args.h"
#include "api/launch_status.h"
#include "api/registry.h"
#include "api/split_heuristic.h"
#include "common/fwd_combine.h"
#include "flashgen/flashgen.h"
#include "sm80/sm80_decode_tile.h"
#include "sm80/sm80_fwd_tile.h"
#include "sm90/sm90_fwd_tile.h"

namespace flashgen {

const KernelEntry* find_kernel(const KernelKey& key) {
  for (int i = 0; i < kNumKernels; ++i) {
    if (kKernelTable[i].key == key) { return &kKernelTable[i]; }
  }
  return nullptr;
}

const char* dtype_name(flashgen_dtype_t dtype) {
  switch (dtype) {
    case FLASHGEN_DTYPE_FP16: return "fp16";
    case FLASHGEN_DTYPE_BF16: return "bf16";
    case FLASHGEN_DTYPE_E4M3: return "e4m3";
  }
  return "unknown";
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

bool strides_aligned(int64_t a, int64_t b, int64_t c, int64_t elems) {
  return a % elems == 0 && b % elems == 0 && c % elems == 0;
}

flashgen_status_t env_choice(const char* env_var, const char* const* names, const int* values, int count, int* out) {
  const char* value = std::getenv(env_var);
  *out = 0;
  if (value == nullptr || value[0] == '\0' || std::strcmp(value, "auto") == 0) { return FLASHGEN_STATUS_OK; }
  std::string expected = "auto";
  for (int i = 0; i < count; ++i) {
    if (std::strcmp(value, names[i]) == 0) {
      *out = values[i];
      return FLASHGEN_STATUS_OK;
    }
    expected += (i + 1 == count ? " or " : ", ") + std::string(names[i]);
  }
  return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "%s='%s': expected %s", env_var, value, expected.c_str());
}

flashgen_status_t family_override(const char* env_var, int* family) {
  static const char* const kNames[] = {"sm80", "sm90", "decode"};
  static const int kValues[] = {80, 90, kDecodeBackend};
  return env_choice(env_var, kNames, kValues, 3, family);
}

namespace {

bool fits_int(int64_t x) { return x >= 0 && x <= INT_MAX; }

// One dequantisation scale argument: a float-aligned pointer (or none), strides >= 0, and
// block_rows > 0 when blocks have their own scales.
flashgen_status_t validate_scale(const char* name, const flashgen_fp8_scale_t& s) {
  const auto invalid = FLASHGEN_STATUS_INVALID_ARGUMENT;
  if (s.scale == nullptr) { return FLASHGEN_STATUS_OK; }
  if (reinterpret_cast<uintptr_t>(s.scale) % alignof(float) != 0) {
    return set_error(invalid, "%s.scale must be float-aligned", name);
  }
  if (s.batch_stride < 0 || s.head_stride < 0 || s.block_stride < 0) {
    return set_error(invalid, "%s strides must be >= 0", name);
  }
  if (s.block_stride != 0 && (s.block_rows <= 0 || s.block_rows > INT_MAX)) {
    return set_error(invalid, "%s.block_rows must be > 0 when block_stride is set", name);
  }
  return FLASHGEN_STATUS_OK;
}

// The FP8 arguments: output type, the parts FP8 kernels lack, the dequantisation scales.
flashgen_status_t validate_fp8_args(const flashgen_fwd_args_t& a) {
  const auto invalid = FLASHGEN_STATUS_INVALID_ARGUMENT;
  if (a.out_dtype != FLASHGEN_DTYPE_FP16 && a.out_dtype != FLASHGEN_DTYPE_BF16) {
    return set_error(invalid, "FP8 attention writes fp16 or bf16: out_dtype is enum %d", int(a.out_dtype));
  }
  if (a.softcap > 0.f || a.alibi_slopes != nullptr || a.dropout_p > 0.f) {
    return set_error(invalid, "FP8 (e4m3) attention has no softcap, ALiBi or dropout variant");
  }
  const bool paged = a.block_table != nullptr;
  if (paged && (a.page_size % 16 != 0 || a.cu_seqlens_k != nullptr)) {
    return set_error(invalid, "a paged FP8 cache needs page_size a multiple of 16 (its PV groups) and no cu_seqlens");
  }
  if (a.v_row_stride % 16 != 0 || a.v_head_stride % 16 != 0 || a.v_batch_stride % 16 != 0) {
    return set_error(invalid, "FP8 v (PV layout) strides must be multiples of 16 elements");
  }
  // Keys per PV-layout entry: a page, a batch entry, or the packed varlen sequences.
  const int64_t cols = paged ? (a.page_size + 15) / 16 * 16
                             : (a.seqlen_k + 15) / 16 * 16 + (a.cu_seqlens_k != nullptr ? 16 * a.batch : 0);
  if (a.v_row_stride < cols || cols > INT_MAX) {
    return set_error(invalid, "FP8 v is in the PV layout: its channel (row) stride %lld must cover the %lld padded keys",
                     (long long)a.v_row_stride, (long long)cols);
  }
  const struct {
    const char* name;
    const flashgen_fp8_scale_t& s;
    bool keys;
  } scales[] = {{"q_scale", a.q_scale, false}, {"k_scale", a.k_scale, true}, {"v_scale", a.v_scale, true}};
  for (const auto& sc : scales) {
    const flashgen_status_t status = validate_scale(sc.name, sc.s);
    if (status != FLASHGEN_STATUS_OK) { return status; }
    if (sc.s.scale != nullptr && sc.keys && sc.s.block_stride != 0 && sc.s.block_rows % 128 != 0) {
      return set_error(invalid, "%s.block_rows (%lld) must be a multiple of 128: a key block shares one scale",
                       sc.name, (long long)sc.s.block_rows);
    }
  }
  return FLASHGEN_STATUS_OK;
}

// An FP8 KV cache read by the decode kernels with fp16/bf16 queries.
flashgen_status_t validate_fp8_cache_args(const flashgen_fwd_args_t& a) {
  const auto invalid = FLASHGEN_STATUS_INVALID_ARGUMENT;
  if (a.dtype != FLASHGEN_DTYPE_FP16 && a.dtype != FLASHGEN_DTYPE_BF16) {
    return set_error(invalid, "an FP8 KV cache (kv_cache_e4m3) is read with fp16 or bf16 queries, not %s",
                     dtype_name(a.dtype));
  }
  if (a.cu_seqlens_q != nullptr || a.dropout_p > 0.f || a.head_dim_qk != a.head_dim_v) {
    return set_error(invalid, "an FP8 KV cache is read by the decode kernels: no cu_seqlens, no dropout, and "
                              "head_dim_qk = head_dim_v");
  }
  const struct {
    const char* name;
    const flashgen_fp8_scale_t& s;
  } scales[] = {{"k_scale", a.k_scale}, {"v_scale", a.v_scale}};
  for (const auto& sc : scales) {
    const flashgen_status_t status = validate_scale(sc.name, sc.s);
    if (status != FLASHGEN_STATUS_OK) { return status; }
  }
  return FLASHGEN_STATUS_OK;
}

}  // namespace

flashgen_status_t validate_fwd_args(const flashgen_fwd_args_t& a) {
  const auto invalid = FLASHGEN_STATUS_INVALID_ARGUMENT;
  if (a.dtype != FLASHGEN_DTYPE_FP16 && a.dtype != FLASHGEN_DTYPE_BF16 && a.dtype != FLASHGEN_DTYPE_E4M3) {
    return set_error(invalid, "unsupported dtype enum %d", int(a.dtype));
  }
  const bool fp8 = a.dtype == FLASHGEN_DTYPE_E4M3;
  if (!fits_int(a.batch) || !fits_int(a.seqlen_q) || !fits_int(a.seqlen_k) || !fits_int(a.total_q)) {
    return set_error(invalid, "batch, sequence lengths and total_q must be in 0..2^31-1");
  }
  if (a.num_heads_q <= 0 || a.num_heads_kv <= 0 || a.head_dim_qk <= 0 || a.head_dim_v <= 0) {
    return set_error(invalid, "head counts and head dims must be > 0");
  }
  if (a.num_heads_q % a.num_heads_kv != 0) {
    return set_error(invalid, "num_heads_q (%lld) must be a multiple of num_heads_kv (%lld)",
                     (long long)a.num_heads_q, (long long)a.num_heads_kv);
  }
  if (a.num_heads_q > 65535) { return set_error(invalid, "num_heads_q must be <= 65535"); }
  const bool keys_present = a.seqlen_k > 0 || a.block_table != nullptr || a.cu_seqlens_k != nullptr;
  if (a.q == nullptr || a.out == nullptr || (keys_present && (a.k == nullptr || a.v == nullptr))) {
    return set_error(invalid, "q, k, v and out must be non-null");
  }
  if (!aligned16(a.q) || !aligned16(a.k) || !aligned16(a.v) || !aligned16(a.out)) {
    return set_error(invalid, "q, k, v and out must be 16-byte aligned");
  }
  // 16-byte rows: 8 elements of 16 bits, 16 of FP8 (out is 16-bit either way).
  const int64_t in_align = fp8 ? 16 : 8;
  const int64_t kv_align = a.kv_cache_e4m3 != 0 ? 16 : in_align;
  if (!strides_aligned(a.q_batch_stride, a.q_row_stride, a.q_head_stride, in_align) ||
      !strides_aligned(a.k_batch_stride, a.k_row_stride, a.k_head_stride, kv_align) ||
      !strides_aligned(a.v_batch_stride, a.v_row_stride, a.v_head_stride, kv_align) ||
      !strides_aligned(a.out_batch_stride, a.out_row_stride, a.out_head_stride)) {
    return set_error(invalid, "batch, row and head strides must be multiples of 16 bytes (%lld elements)",
                     (long long)in_align);
  }
  if (fp8) {
    const flashgen_status_t status = validate_fp8_args(a);
    if (status != FLASHGEN_STATUS_OK) { return status; }
  }
  if (a.kv_cache_e4m3 != 0) {
    const flashgen_status_t status = validate_fp8_cache_args(a);
    if (status != FLASHGEN_STATUS_OK) { return status; }
  }
  if (!(a.softmax_scale >= 0.f) || std::isinf(a.softmax_scale)) {
    return set_error(invalid, "softmax_scale must be finite and >= 0 (0 = default)");
  }
  if (!(a.softcap >= 0.f) || std::isinf(a.softcap)) { return set_error(invalid, "softcap must be finite and >= 0"); }
  if (!(a.dropout_p >= 0.f && a.dropout_p < 1.f)) { return set_error(invalid, "dropout_p must be in [0, 1)"); }
  if ((a.cu_seqlens_q == nullptr) != (a.cu_seqlens_k == nullptr)) {
    return set_error(invalid, "cu_seqlens_q and cu_seqlens_k come together");
  }
  if (a.block_table != nullptr) {
    if (a.page_size <= 0 || a.num_pages <= 0 || a.max_pages_per_seq <= 0 ||
        a.max_pages_per_seq * a.page_size > INT_MAX) {
      return set_error(invalid, "paged KV needs page_size, num_pages and max_pages_per_seq > 0");
    }
    if (a.kv_batch_idx != nullptr) { return set_error(invalid, "kv_batch_idx does not apply to a paged cache"); }
  }
  if (a.kv_batch_idx != nullptr && a.kv_batch_count <= 0) {
    return set_error(invalid, "kv_batch_idx needs kv_batch_count > 0");
  }
  if (a.num_splits < 0 || a.num_splits > kMaxSplits) {
    return set_error(invalid, "num_splits must be in 0..%d", kMaxSplits);
  }
  return FLASHGEN_STATUS_OK;
}

FwdParams to_fwd_params(const flashgen_fwd_args_t& a) {
  FwdParams p{};
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.out = a.out;
  p.lse = a.lse;
  const bool varlen = a.cu_seqlens_q != nullptr;
  p.batch = int(a.batch);
  p.seqlen_q = int(a.seqlen_q);
  p.seqlen_k = a.block_table != nullptr ? int(a.max_pages_per_seq * a.page_size) : int(a.seqlen_k);
  p.num_heads_q = int(a.num_heads_q);
  p.num_heads_kv = int(a.num_heads_kv);
  p.group_size = int(a.num_heads_q / a.num_heads_kv);
  p.head_dim_qk = int(a.head_dim_qk);
  p.head_dim_v = int(a.head_dim_v);
  p.total_q = varlen ? int(a.total_q) : int(a.batch * a.seqlen_q);
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
  p.lse_batch_stride = varlen ? 0 : a.num_heads_q * a.seqlen_q;
  p.lse_head_stride = varlen ? a.total_q : a.seqlen_q;
  p.cu_seqlens_q = a.cu_seqlens_q;
  p.cu_seqlens_k = a.cu_seqlens_k;
  p.seqused_k = a.seqused_k;
  p.seqused_k_add = int(a.seqused_k_add);
  p.kv_batch_idx = a.kv_batch_idx;
  p.kv_batch_count = int(a.kv_batch_count);
  p.block_table = a.block_table;
  p.block_table_batch_stride = a.block_table_batch_stride;
  p.page_size = int(a.page_size);
  p.num_pages = int(a.num_pages);

  p.softmax_scale = a.softmax_scale > 0.f ? a.softmax_scale : 1.f / std::sqrt(float(a.head_dim_qk));
  p.softcap = a.softcap;
  p.softcap_prescale = a.softcap > 0.f ? p.softmax_scale / a.softcap : 0.f;
  p.logit_scale = a.softcap > 0.f ? a.softcap : p.softmax_scale;
  p.logit_scale_log2 = p.logit_scale * float(M_LOG2E);
  p.window_left = a.window_left < 0 ? -1 : int(a.window_left > INT_MAX / 2 ? INT_MAX / 2 : a.window_left);
  p.window_right = a.window_right < 0 ? -1 : int(a.window_right > INT_MAX / 2 ? INT_MAX / 2 : a.window_right);
  p.alibi_slopes = a.alibi_slopes;
  p.alibi_batch_stride = a.alibi_batch_stride;
  p.sinks = a.sinks;

  p.dropout_p = a.dropout_p;
  p.dropout_scale = 1.f / (1.f - a.dropout_p);
  p.dropout_threshold = uint32_t(std::lround(double(a.dropout_p) * 65536.0));
  p.philox_seed = a.philox_seed;
  p.philox_offset = a.philox_offset;
  p.num_splits = 1;

  p.out_fp16 = a.out_dtype == FLASHGEN_DTYPE_FP16;
  p.v_cols = a.dtype != FLASHGEN_DTYPE_E4M3 ? 0
             : a.block_table != nullptr ? int((a.page_size + 15) / 16 * 16)
                                        : int((a.seqlen_k + 15) / 16 * 16 + (varlen ? 16 * a.batch : 0));
  auto scale = [](const flashgen_fp8_scale_t& s) {
    return Fp8Scale{s.scale, s.batch_stride, s.head_stride, s.block_stride, int(s.block_rows)};
  };
  p.q_scale = scale(a.q_scale);
  p.k_scale = scale(a.k_scale);
  p.v_scale = scale(a.v_scale);
  return p;
}

namespace {

constexpr size_t kTileCounterBytes = 16;

struct Plan {
  const KernelEntry* entry;
  FwdParams params;
  int num_splits;
  size_t workspace_bytes;
};

// The decode kernels serve calls whose packed rows (query tokens x GQA group) fit two 16-row
// tiles; longer queries take the forward kernels (FP8 caches, which only the decode kernels
// read, take them at any length, in blocks of rows).
constexpr int kDecodeMaxRows = 32;

int64_t packed_rows(const flashgen_fwd_args_t& a) { return a.seqlen_q * (a.num_heads_q / a.num_heads_kv); }

bool decode_fits(const flashgen_fwd_args_t& a) {
  return a.cu_seqlens_q == nullptr && a.dropout_p == 0.f && a.head_dim_qk == a.head_dim_v &&
         (a.dtype == FLASHGEN_DTYPE_FP16 || a.dtype == FLASHGEN_DTYPE_BF16);
}

KernelKey decode_key(const flashgen_fwd_args_t& a) {
  return KernelKey{KernelFamily::kSm80, Direction::kDecode,
                   a.kv_cache_e4m3 != 0 ? FLASHGEN_DTYPE_E4M3 : a.dtype, int(a.head_dim_qk), int(a.head_dim_v),
                   /*causal=*/false, /*softcap=*/false, /*alibi=*/false, /*dropout=*/false, /*paged=*/false};
}

// One CTA per (split, KV head, block of packed rows, batch entry). Splits fill the GPU when
// those are fewer than its CTA slots; each split keeps at least two stages.
flashgen_status_t make_decode_plan(const flashgen_fwd_args_t& a, const KernelEntry* entry, const DeviceInfo& device,
                                   bool workspace_available, Plan* plan) {
  plan->entry = entry;
  plan->params = to_fwd_params(a);
  FwdParams& p = plan->params;
  p.pack_gqa = true;
  if (a.kv_cache_e4m3 != 0) { p.out_fp16 = a.dtype == FLASHGEN_DTYPE_FP16; }
  // The decode kernels take causality as the window's right edge (the forward kernels have it
  // as a template flag).
  if (a.causal != 0) { p.window_right = 0; }
  const int d = p.head_dim_qk;
  const int rows = p.seqlen_q * p.group_size;
  const bool kv_e4m3 = a.kv_cache_e4m3 != 0;
  const int cta_rows = sm80::decode::plan_rows_per_cta(kv_e4m3, rows, d);
  const int row_blocks = (rows + cta_rows - 1) / cta_rows;
  if (int64_t(p.num_heads_kv) * row_blocks > 65535 || p.batch > 65535) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT,
                     "decode: batch and num_heads_kv x blocks of %d packed rows must be <= 65535", cta_rows);
  }
  const int block_n = sm80::decode::plan_block_n(kv_e4m3, d);
  const int tiles = (p.seqlen_k + block_n - 1) / block_n;
  // The wave to fill: one CTA per SM for a dense cache, two (what fits) for a paged one. Measured
  // on an H100 (bench/NOTES.md): dense caches ran 3-11% faster at batch 1-8 with the fewer
  // splits of a one-CTA wave (the partials' round trip and the CTAs' fixed latencies outweigh
  // the deeper overlap), while paged caches read with cp.async, whose scattered pages need more
  // requests in flight, lost up to 27% with them. Pages read by the TMA loader for at most
  // kTma16MaxStreams (sequence, kv head) pairs take one CTA per SM as well (H100, same-run A/B,
  // session 33: batch 1 x 4k / 32k, pages of 16 +4% / +4%, of 256 +18% / +4%, FP8 pages of 16
  // +0% / +9%); more pairs keep two (FP8 8 x 8k lost 2% with one). The guess ignores the
  // FLASHGEN_DECODE_TMA(_16BIT) overrides, so that `on` and `off` split alike (bitwise-equal
  // outputs, as tests/test_decode.py checks); a build without sm_90a code has no TMA loader.
  const bool paged = p.block_table != nullptr;
  const int64_t streams = int64_t(p.batch) * p.num_heads_kv;
  const bool few_streams = streams <= sm80::decode::kTma16MaxStreams;
  const bool few_tma_streams =
      paged && few_streams && std::strstr(kCudaArchs, "90a") != nullptr &&
      sm80::decode::plan_takes_tma(kv_e4m3, d, streams, device.compute_capability, p.page_size);
  const int64_t wave = int64_t(device.num_sms) * (paged && !few_tma_streams ? 2 : 1);
  // The launch order (cta_work): the KV heads of a (sequence, split) side by side (H100: FP8
  // pages of 16 at 8 x 32k +13%), except where at most kTma16MaxStreams pairs share the GPU,
  // which keep the order their split rule was tuned with (there the heads-first order measured
  // 0 to -2%, within the run-to-run noise of those ~10-20 us calls).
  p.decode_splits_in_x = few_streams;
  int splits = int(a.num_splits);
  if (splits == 0) {
    splits = workspace_available ? choose_decode_splits(int64_t(p.batch) * p.num_heads_kv * row_blocks,
                                                        tiles / 2 > 1 ? tiles / 2 : 1, wave)
                                 : 1;
  }
  splits = splits > tiles ? (tiles > 0 ? tiles : 1) : splits;
  plan->num_splits = splits;
  plan->workspace_bytes =
      splits > 1 ? size_t(splits) * p.num_heads_q * p.total_q * (size_t(p.head_dim_v) + 1) * sizeof(float) : 0;
  p.num_splits = splits;
  return FLASHGEN_STATUS_OK;
}

// FLASHGEN_SM80_FWD_ROWS=wide|narrow forces the SM80 forward's tile at head dims above 128, and
// FLASHGEN_SM90_FWD_ROWS=tall|short the sm90 causal forward's at head dim 64, for A/B runs (auto:
// sm80::fwd_narrow_rows, sm90::fwd_tall_rows). Read on each call, as FLASHGEN_FWD_BACKEND is, so
// that one process (the tests) can run both tiles.
enum RowsChoice : int { kRowsAuto = 0, kSm80RowsWide = 1, kSm80RowsNarrow = 2, kSm90RowsTall = 3, kSm90RowsShort = 4 };

flashgen_status_t rows_overrides(int* sm80_rows, int* sm90_rows) {
  static const char* const kSm80Names[] = {"wide", "narrow"};
  static const int kSm80Values[] = {kSm80RowsWide, kSm80RowsNarrow};
  static const char* const kSm90Names[] = {"tall", "short"};
  static const int kSm90Values[] = {kSm90RowsTall, kSm90RowsShort};
  const flashgen_status_t status = env_choice("FLASHGEN_SM80_FWD_ROWS", kSm80Names, kSm80Values, 2, sm80_rows);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  return env_choice("FLASHGEN_SM90_FWD_ROWS", kSm90Names, kSm90Values, 2, sm90_rows);
}

// FLASHGEN_SM90_FP8_KEYS=128|192: the key block of the FP8 head-dim-128 forward
// (sm90_fwd_tile.h); 192 is taken where the K and V scales give each 192-key block one scale
// (per tensor, per head, or blocks of a multiple of 192 rows) and pages hold whole 192-key
// blocks, else 128. auto takes 192 from kFp8LongKeysFrom keys: H200, per-tensor scales, 192 against
// 128 in the same run (bench/RESULTS.md, 2026-12-05): +3.9% / +5.2% at 16k (non-causal / causal),
// +2.7% / +1.6% at 4k, +0.1% / -1.4% at 2k, where the partial last block wastes 3% of the keys.
enum Fp8KeysChoice : int { kFp8KeysAuto = 0, kFp8Keys128 = 1, kFp8Keys192 = 2 };
constexpr int kFp8LongKeysFrom = 4096;

// FLASHGEN_SM90_PACK_GQA=on|off: whether the Hopper forward packs a GQA group's query heads
// into its tiles' rows (sm90_fwd_tile.h, fwd_pack_gqa decides in auto); never with ALiBi or
// dropout, whose slopes and streams are per head.
enum PackChoice : int { kPackAuto = 0, kPackOn = 1, kPackOff = 2 };

flashgen_status_t pack_gqa_override(int* choice) {
  static const char* const kNames[] = {"on", "off"};
  static const int kValues[] = {kPackOn, kPackOff};
  return env_choice("FLASHGEN_SM90_PACK_GQA", kNames, kValues, 2, choice);
}

flashgen_status_t fp8_keys_override(int* choice) {
  static const char* const kNames[] = {"128", "192"};
  static const int kValues[] = {kFp8Keys128, kFp8Keys192};
  return env_choice("FLASHGEN_SM90_FP8_KEYS", kNames, kValues, 2, choice);
}

bool one_scale_per_block(const flashgen_fp8_scale_t& s, int block_n) {
  return s.scale == nullptr || s.block_stride == 0 || s.block_rows % block_n == 0;
}

// workspace_available: whether an automatic split count may ask for workspace.
flashgen_status_t make_plan(const flashgen_fwd_args_t* args, bool workspace_available, Plan* plan) {
  clear_error();
  if (args == nullptr) { return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "args is NULL"); }
  if (args->struct_size != sizeof(flashgen_fwd_args_t)) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT,
                     "args->struct_size is %zu, this library expects %zu: call flashgen_fwd_args_init and "
                     "build against the matching flashgen.h",
                     args->struct_size, sizeof(flashgen_fwd_args_t));
  }
  flashgen_status_t status = validate_fwd_args(*args);
  if (status != FLASHGEN_STATUS_OK) { return status; }

  DeviceInfo device;
  status = supported_device_info(&device);
  if (status != FLASHGEN_STATUS_OK) { return status; }

  KernelKey key{KernelFamily::kSm80,         Direction::kFwd,
                args->dtype,                int(args->head_dim_qk),
                int(args->head_dim_v),      args->causal != 0,
                /*softcap=*/args->softcap > 0.f, /*alibi=*/args->alibi_slopes != nullptr,
                /*dropout=*/args->dropout_p > 0.f, /*paged=*/args->block_table != nullptr};
  int backend = 0;
  status = family_override("FLASHGEN_FWD_BACKEND", &backend);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  int sm80_rows = kRowsAuto, sm90_rows = kRowsAuto, fp8_keys = kFp8KeysAuto;
  status = rows_overrides(&sm80_rows, &sm90_rows);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  status = fp8_keys_override(&fp8_keys);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  int pack90_choice = kPackAuto;
  status = pack_gqa_override(&pack90_choice);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  if (args->dtype == FLASHGEN_DTYPE_E4M3 && (device.compute_capability != 90 || backend == 80)) {
    return set_error(FLASHGEN_STATUS_UNSUPPORTED_DEVICE,
                     "FP8 (e4m3) attention runs on the sm90 kernels only: it needs a compute capability 9.0 GPU "
                     "(this one is sm_%d) and FLASHGEN_FWD_BACKEND other than sm80",
                     device.compute_capability);
  }
  if (backend == 90 && device.compute_capability != 90) {
    return set_error(FLASHGEN_STATUS_UNSUPPORTED_DEVICE,
                     "FLASHGEN_FWD_BACKEND=sm90 needs a compute capability 9.0 GPU (this one is sm_%d)",
                     device.compute_capability);
  }
  // Decode kernels: required for an FP8 cache or when forced, else taken for short calls.
  const bool decode_required = args->kv_cache_e4m3 != 0 || backend == kDecodeBackend;
  const bool fits = decode_fits(*args);
  if (decode_required || (backend == 0 && fits && packed_rows(*args) <= kDecodeMaxRows)) {
    const KernelKey dkey = decode_key(*args);
    const KernelEntry* decode_entry = fits ? find_kernel(dkey) : nullptr;
    if (decode_entry != nullptr) { return make_decode_plan(*args, decode_entry, device, workspace_available, plan); }
    if (decode_required && !fits) {
      return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT,
                       "the decode kernels (FLASHGEN_FWD_BACKEND=decode, or an FP8 KV cache) take no dropout, no "
                       "cu_seqlens and head_dim_qk = head_dim_v");
    }
    if (decode_required) {
      return set_error(FLASHGEN_STATUS_NOT_BUILT,
                       "the decode kernel decode_sm80_%s_hdim%d was not built; rebuild with FLASHGEN_DIRECTIONS "
                       "including decode, FLASHGEN_DTYPES including %s and FLASHGEN_HEAD_DIMS including %d",
                       dtype_name(dkey.dtype), dkey.head_dim_qk, dtype_name(dkey.dtype), dkey.head_dim_qk);
    }
  }
  const KernelEntry* entry = nullptr;
  if (device.compute_capability == 90 && backend != 80) {
    KernelKey hopper = key;
    hopper.family = KernelFamily::kSm90;
    entry = find_kernel(hopper);
  }
  if (entry == nullptr && backend != 90) { entry = find_kernel(key); }
  if (entry == nullptr) {
    return set_error(FLASHGEN_STATUS_NOT_BUILT,
                     "no %sforward kernel was built for dtype=%s head_dim_qk=%d head_dim_v=%d causal=%d softcap=%d "
                     "alibi=%d dropout=%d paged=%d; rebuild with FLASHGEN_HEAD_DIMS / FLASHGEN_DTYPES / "
                     "FLASHGEN_VARIANTS / FLASHGEN_KERNELS selecting it",
                     backend == 90 ? "sm90 " : "", dtype_name(args->dtype), key.head_dim_qk, key.head_dim_v,
                     int(key.causal), int(key.softcap), int(key.alibi), int(key.dropout), int(key.paged));
  }

  plan->params = to_fwd_params(*args);
  FwdParams& p = plan->params;

  // The SM80-path plan: its tile (two above head dim 128, chosen by the device's shared memory),
  // packed GQA rows and split-KV for short queries, both sized with that tile.
  p.sm80_narrow = sm80_rows == kRowsAuto
                      ? sm80::fwd_narrow_rows(p.head_dim_qk, p.head_dim_v, /*element_bytes=*/2, device.smem_per_sm,
                                              device.smem_per_block_optin)
                      : sm80_rows == kSm80RowsNarrow && sm80::fwd_has_narrow_tile(p.head_dim_qk, p.head_dim_v);
  const sm80::FwdTile tile = sm80::fwd_tile(p.head_dim_qk, p.head_dim_v, p.sm80_narrow);
  // Short queries under GQA: the query heads of a group share one tile and one read of K/V.
  // ALiBi slopes and dropout streams are per head, so those kernels keep one head per tile.
  p.pack_gqa = p.group_size > 1 && p.seqlen_q * p.group_size <= 2 * tile.block_m && !key.alibi && !key.dropout;
  const int rows = p.seqlen_q * (p.pack_gqa ? p.group_size : 1);
  const int m_blocks = (rows + tile.block_m - 1) / tile.block_m;
  const int heads = p.pack_gqa ? p.num_heads_kv : p.num_heads_q;
  const int n_blocks = (p.seqlen_k + tile.block_n - 1) / tile.block_n;
  int splits = int(args->num_splits);
  if (splits == 0) {
    splits = workspace_available ? choose_num_splits(int64_t(p.batch) * heads * m_blocks, n_blocks, device.num_sms) : 1;
  }
  splits = splits > n_blocks ? (n_blocks > 0 ? n_blocks : 1) : splits;

  // The sm90 paged kernel loads each key block from one page with one TMA copy, so the pages
  // must hold whole blocks; other page sizes take the SM80 path.
  const int element_bytes = args->dtype == FLASHGEN_DTYPE_E4M3 ? 1 : 2;
  p.sm90_tall = sm90_rows == kRowsAuto ? sm90::fwd_tall_rows(key.causal, p.seqlen_q)
                                       : sm90_rows == kSm90RowsTall || !key.causal;
  const bool wide90 = sm90::fwd_wide_keys(key.causal, key.paged, key.dropout, element_bytes);
  const bool long_keys_fit = sm90::fwd_has_long_keys(p.head_dim_qk, p.head_dim_v, element_bytes, wide90) &&
                             one_scale_per_block(args->k_scale, sm90::kFp8LongKeys) &&
                             one_scale_per_block(args->v_scale, sm90::kFp8LongKeys) &&
                             (!key.paged || p.page_size % sm90::kFp8LongKeys == 0);
  p.sm90_long_keys = long_keys_fit && (fp8_keys == kFp8Keys192 ||
                                       (fp8_keys == kFp8KeysAuto && p.seqlen_k >= kFp8LongKeysFrom));
  // Packed GQA rows (fwd_pack_gqa, with the packed kernel's own tile; FLASHGEN_SM90_PACK_GQA).
  const sm90::FwdTile packed90 = sm90::fwd_tile(p.head_dim_qk, p.head_dim_v, element_bytes, wide90,
                                                sm90::fwd_packed_tall(key.causal), /*long_keys=*/false);
  const bool pack90 = p.group_size > 1 && !key.alibi && !key.dropout && pack90_choice != kPackOff &&
                      (pack90_choice == kPackOn || sm90::fwd_pack_gqa(p.group_size, p.seqlen_q, packed90.block_m));
  if (pack90) {
    p.sm90_tall = sm90::fwd_packed_tall(key.causal);
    p.sm90_long_keys = false;
  }
  const sm90::FwdTile t90 =
      sm90::fwd_tile(p.head_dim_qk, p.head_dim_v, element_bytes, wide90, p.sm90_tall, p.sm90_long_keys);
  const bool sm90_pages_fit = !key.paged || p.page_size % t90.block_n == 0;
  if (entry->key.family == KernelFamily::kSm90 && backend == 0 &&
      (!sm90_pages_fit || (!pack90 && (p.pack_gqa || splits > 1)))) {
    // Pages that do not hold whole key blocks, and short queries the Hopper kernel does not
    // pack but the SM80 path packs or splits (which of the two is faster there is not
    // measured): the SM80 path when it is built.
    const KernelEntry* sm80_entry = find_kernel(key);
    if (sm80_entry != nullptr) { entry = sm80_entry; }
  }
  if (entry->key.family == KernelFamily::kSm90 && !sm90_pages_fit) {
    // Forced sm90: the call itself is what cannot run. Otherwise the build lacks the SM80-path
    // kernel of the same spec, which serves any page size: name it.
    std::string sm80_name(entry->name);
    sm80_name.replace(sm80_name.find("_sm90_"), 6, "_sm80_");
    return set_error(backend == 90 ? FLASHGEN_STATUS_INVALID_ARGUMENT : FLASHGEN_STATUS_NOT_BUILT,
                     "the sm90 paged kernel needs page_size to be a multiple of %d for head dim %d (got %d); other "
                     "page sizes run on the sm80 kernel %s %s",
                     t90.block_n, key.head_dim_qk, p.page_size, sm80_name.c_str(),
                     backend == 90 ? "(FLASHGEN_FWD_BACKEND=sm90 forbids it)"
                                   : "(not built: rebuild with FLASHGEN_KERNELS selecting it)");
  }
  plan->entry = entry;
  const bool hopper = entry->key.family == KernelFamily::kSm90;
  if (hopper) {
    // Packed GQA rows where they fill the tiles better (fwd_pack_gqa), else one head per tile.
    // Its persistent grid balances tiles through a counter in the workspace (without one it
    // keeps a fixed round-robin order, slower under a causal mask). Split-KV uses the SM80
    // path's heuristic over the sm90 tiles; FP8 keeps one split.
    p.pack_gqa = pack90;
    p.num_sms = device.num_sms;
    const int group90 = p.pack_gqa ? p.group_size : 1;
    const int heads90 = p.pack_gqa ? p.num_heads_kv : p.num_heads_q;
    const int m90 = int((int64_t(p.seqlen_q) * group90 + t90.block_m - 1) / t90.block_m);
    const int n90 = (p.seqlen_k + t90.block_n - 1) / t90.block_n;
    if (args->dtype == FLASHGEN_DTYPE_E4M3 || n90 <= 1) {
      splits = 1;
    } else if (args->num_splits > 0) {
      splits = int(args->num_splits) < n90 ? int(args->num_splits) : n90;
    } else {
      splits = workspace_available ? choose_num_splits(int64_t(p.batch) * heads90 * m90, n90, device.num_sms) : 1;
    }
  }
  if (int64_t(p.batch) * splits > 65535) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "batch * num_splits must be <= 65535");
  }
  plan->num_splits = splits;
  const size_t accum_bytes =
      splits > 1 ? size_t(splits) * p.num_heads_q * p.total_q * (size_t(p.head_dim_v) + 1) * sizeof(float) : 0;
  // sm90: the tile counter, then the split partials.
  plan->workspace_bytes = hopper ? kTileCounterBytes + accum_bytes : accum_bytes;
  p.num_splits = splits;
  return FLASHGEN_STATUS_OK;
}

}  // namespace
}  // namespace flashgen

extern "C" {

void flashgen_fwd_args_init(flashgen_fwd_args_t* args) {
  if (args == nullptr) { return; }
  std::memset(args, 0, sizeof(*args));
  args->struct_size = sizeof(*args);
  args->window_left = -1;
  args->window_right = -1;
  args->out_dtype = FLASHGEN_DTYPE_BF16;
}

flashgen_status_t flashgen_fwd_workspace_size(const flashgen_fwd_args_t* args, size_t* bytes, int64_t* num_splits) {
  using namespace flashgen;
  Plan plan{};
  flashgen_status_t status = make_plan(args, /*workspace_available=*/true, &plan);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  if (bytes != nullptr) { *bytes = plan.workspace_bytes; }
  if (num_splits != nullptr) { *num_splits = plan.num_splits; }
  return FLASHGEN_STATUS_OK;
}

flashgen_status_t flashgen_fwd(const flashgen_fwd_args_t* args, cudaStream_t stream) {
  using namespace flashgen;
  Plan plan{};
  flashgen_status_t status = make_plan(args, args != nullptr && args->workspace != nullptr, &plan);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  if (args->batch == 0 || plan.params.total_q == 0) { return FLASHGEN_STATUS_OK; }
  FwdParams& p = plan.params;
  const bool hopper = plan.entry->key.family == KernelFamily::kSm90;
  if (hopper && plan.num_splits == 1) {
    if (args->workspace != nullptr && args->workspace_bytes >= kTileCounterBytes &&
        reinterpret_cast<uintptr_t>(args->workspace) % 16 == 0) {
      p.tile_counter = static_cast<int*>(args->workspace);
    }
  } else if (plan.num_splits > 1) {
    if (args->workspace == nullptr || args->workspace_bytes < plan.workspace_bytes) {
      return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT,
                       "num_splits=%d needs %zu bytes of workspace (flashgen_fwd_workspace_size), got %zu",
                       plan.num_splits, plan.workspace_bytes, args->workspace_bytes);
    }
    if (reinterpret_cast<uintptr_t>(args->workspace) % 16 != 0) {
      return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "workspace must be 16-byte aligned");
    }
    char* accum = static_cast<char*>(args->workspace);
    if (hopper) {
      p.tile_counter = static_cast<int*>(args->workspace);
      accum += kTileCounterBytes;
    }
    p.out_accum = reinterpret_cast<float*>(accum);
    p.lse_accum = p.out_accum + size_t(plan.num_splits) * p.num_heads_q * p.total_q * p.head_dim_v;
  }
  return plan.entry->fwd(p, stream);
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
