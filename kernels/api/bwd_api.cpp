// The backward C ABI: argument validation, kernel selection and the workspace layout.
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>


#include "api/device_info.h"
#include "api/fwd_args.h"
#include "api/launch_status.h"
#include "api/registry.h"
#include "flashgen/flashgen.h"
#include "sm80/sm80_bwd_tile.h"
#include "sm90/sm90_bwd_tile.h"

namespace flashgen {
namespace {

constexpr size_t kWorkspaceAlign = 256;

size_t align_up(size_t bytes) { return (bytes + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign; }

struct BwdPlan {
  const KernelEntry* entry;
  BwdParams params;
  size_t accum_bytes;  // dq_accum and the tail split's slots, then softmax_d, then the deterministic counters
  size_t d_bytes;
  size_t semaphore_bytes;
  size_t workspace_bytes() const { return accum_bytes + d_bytes + semaphore_bytes; }
};

flashgen_status_t validate_gradients(const flashgen_bwd_args_t& a) {
  const auto invalid = FLASHGEN_STATUS_INVALID_ARGUMENT;
  const flashgen_fwd_args_t& f = a.fwd;
  if (f.block_table != nullptr || f.kv_batch_idx != nullptr || f.seqused_k != nullptr) {
    return set_error(invalid, "the backward pass takes no paged cache, kv_batch_idx or seqused_k");
  }
  if (f.lse == nullptr) {
    return set_error(invalid, "the backward pass needs the forward pass's lse (run the forward with lse set)");
  }
  if (a.dout == nullptr || a.dq == nullptr || a.dk == nullptr || a.dv == nullptr) {
    return set_error(invalid, "dout, dq, dk and dv must be non-null");
  }
  if (!aligned16(a.dout) || !aligned16(a.dq) || !aligned16(a.dk) || !aligned16(a.dv)) {
    return set_error(invalid, "dout, dq, dk and dv must be 16-byte aligned");
  }
  if (reinterpret_cast<uintptr_t>(f.lse) % 4 != 0) { return set_error(invalid, "lse must be 4-byte aligned"); }
  if (!strides_aligned(a.dout_batch_stride, a.dout_row_stride, a.dout_head_stride) ||
      !strides_aligned(a.dq_batch_stride, a.dq_row_stride, a.dq_head_stride) ||
      !strides_aligned(a.dk_batch_stride, a.dk_row_stride, a.dk_head_stride) ||
      !strides_aligned(a.dv_batch_stride, a.dv_row_stride, a.dv_head_stride)) {
    return set_error(invalid, "gradient batch, row and head strides must be multiples of 8 elements (16 bytes)");
  }
  if (f.cu_seqlens_q != nullptr && (a.max_seqlen_k < 0 || a.max_seqlen_k > INT_MAX)) {
    return set_error(invalid, "max_seqlen_k must be in 0..2^31-1");
  }
  if (f.batch > 65535 || f.num_heads_kv > 65535) {
    return set_error(invalid, "the backward pass needs batch and num_heads_kv <= 65535");
  }
  return FLASHGEN_STATUS_OK;
}

// The Hopper keys-split backward's grid for a call whose key blocks are all equally long (fixed
// lengths, no mask that shortens blocks) in the default (non-deterministic) mode, where the sums'
// order may follow the pieces' finishing order: the tail split (common/bwd_tail_split.h) and the
// persistent grid (sm90_bwd_launch.hpp). Tuning knobs: FLASHGEN_BWD_TAIL_SPLIT=off keeps whole
// key blocks, an integer N >= 2 cuts the partial last wave's blocks into N pieces each instead of
// the model's plan; FLASHGEN_BWD_PERSISTENT=off keeps one CTA per key block (auto, the default,
// and on: persistent). Sets params.tail, params.grid_zero_bytes and params.persistent.
flashgen_status_t plan_bwd_grid(const KernelEntry& entry, int num_sms, BwdParams& p) {
  const char* env = std::getenv("FLASHGEN_BWD_TAIL_SPLIT");
  bool off = false;
  int forced_pieces = 0;
  if (env != nullptr && env[0] != '\0' && std::strcmp(env, "auto") != 0) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (std::strcmp(env, "off") == 0) {
      off = true;
    } else if (end != env && *end == '\0' && n >= 2 && n <= 1024) {
      forced_pieces = int(n);
    } else {
      return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT,
                       "FLASHGEN_BWD_TAIL_SPLIT='%s': expected auto, off or a piece count 2..1024", env);
    }
  }
  static const char* const kPersistentNames[] = {"on", "off"};
  static const int kPersistentValues[] = {1, 2};
  int persistent_choice = 0;  // auto (0) and on (1) are the same: persistent
  const flashgen_status_t status =
      env_choice("FLASHGEN_BWD_PERSISTENT", kPersistentNames, kPersistentValues, 2, &persistent_choice);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  const bool persistent = persistent_choice != 2;
  p.tail = TailSplit{};
  p.grid_zero_bytes = 0;
  p.persistent = false;
  const int qk = p.head_dim_qk, dv = p.head_dim_v;
  if (entry.key.family != KernelFamily::kSm90 || sm90::bwd_split_roles(qk, dv) || p.cu_seqlens_q != nullptr ||
      entry.key.causal || p.window_left >= 0 || p.window_right >= 0 || p.deterministic) {
    return FLASHGEN_STATUS_OK;
  }
  p.persistent = persistent;
  if (persistent) { p.grid_zero_bytes = 16; }  // the item counter (more below with a tail split)
  if (off) { return FLASHGEN_STATUS_OK; }
  const int block_m = sm90::bwd_block_m(qk, dv), block_n = sm90::bwd_block_n(qk, dv);
  const int64_t ctas = int64_t((p.seqlen_k + block_n - 1) / block_n) * p.num_heads_kv * p.batch;
  const int64_t steps = int64_t((p.seqlen_q + block_m - 1) / block_m) * p.group_size;
  if (steps > INT_MAX) { return FLASHGEN_STATUS_OK; }
  p.tail = plan_tail_split(ctas, int(steps), num_sms);
  if (forced_pieces > 0 && num_sms > 0 && ctas % num_sms != 0 && ctas < INT_MAX / 2) {
    p.tail.blocks = int(ctas % num_sms);
    p.tail.first = int(ctas) - p.tail.blocks;
    p.tail.pieces = forced_pieces < steps ? forced_pieces : int(steps);
  }
  if (p.tail.blocks > 0) {
    const int64_t counters = (int64_t(p.tail.blocks) + 3) / 4 * 4;  // whole 16-byte chunks
    p.grid_zero_bytes += (int64_t(p.tail.blocks) * 2 * block_n * qk + counters) * int64_t(sizeof(float));
  }
  return FLASHGEN_STATUS_OK;
}

flashgen_status_t make_bwd_plan(const flashgen_bwd_args_t* args, BwdPlan* plan) {
  clear_error();
  if (args == nullptr) { return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "args is NULL"); }
  if (args->struct_size != sizeof(flashgen_bwd_args_t) || args->fwd.struct_size != sizeof(flashgen_fwd_args_t)) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT,
                     "args->struct_size (%zu) or args->fwd.struct_size (%zu) differ from this library's (%zu, %zu): "
                     "call flashgen_bwd_args_init and build against the matching flashgen.h",
                     args->struct_size, args->fwd.struct_size, sizeof(flashgen_bwd_args_t),
                     sizeof(flashgen_fwd_args_t));
  }
  const flashgen_fwd_args_t& f = args->fwd;
  if (f.dtype == FLASHGEN_DTYPE_E4M3) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "FP8 (e4m3) attention has no backward pass");
  }
  flashgen_status_t status = validate_fwd_args(f);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  status = validate_gradients(*args);
  if (status != FLASHGEN_STATUS_OK) { return status; }

  DeviceInfo device;
  status = supported_device_info(&device);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  const KernelKey key{KernelFamily::kSm80, Direction::kBwd, f.dtype, int(f.head_dim_qk), int(f.head_dim_v),
                      f.causal != 0, /*softcap=*/f.softcap > 0.f, /*alibi=*/f.alibi_slopes != nullptr,
                      /*dropout=*/f.dropout_p > 0.f, /*paged=*/false};
  // FLASHGEN_BWD_BACKEND (auto, sm80, sm90), as FLASHGEN_FWD_BACKEND for the forward. Auto takes
  // the sm90 backward first on Hopper when a kernel for the call is built (H100: 1.2-1.6x the
  // sm80 kernel at head dim 128, 0.95-1.1x at 64; bench/RESULTS.md), else the sm80 one.
  int backend = 0;
  status = family_override("FLASHGEN_BWD_BACKEND", &backend);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  if (backend == kDecodeBackend) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "FLASHGEN_BWD_BACKEND=decode: decode kernels are forward only");
  }
  plan->entry = nullptr;
  KernelKey hopper = key;
  hopper.family = KernelFamily::kSm90;
  if (device.compute_capability == 90 && backend != 80) { plan->entry = find_kernel(hopper); }
  if (backend == 90 && plan->entry == nullptr) {
    return set_error(FLASHGEN_STATUS_NOT_BUILT,
                     "FLASHGEN_BWD_BACKEND=sm90: no sm90 backward kernel fits this call (it needs a compute "
                     "capability 9.0 GPU and a built bwd_sm90_* kernel for the call's head dims and features)");
  }
  if (plan->entry == nullptr) { plan->entry = find_kernel(key); }
  if (plan->entry == nullptr) {
    return set_error(FLASHGEN_STATUS_NOT_BUILT,
                     "no backward kernel was built for dtype=%s head_dim_qk=%d head_dim_v=%d causal=%d softcap=%d "
                     "alibi=%d dropout=%d; rebuild with FLASHGEN_DIRECTIONS including bwd and FLASHGEN_HEAD_DIMS / "
                     "FLASHGEN_DTYPES / FLASHGEN_VARIANTS / FLASHGEN_KERNELS selecting it",
                     dtype_name(f.dtype), key.head_dim_qk, key.head_dim_v, int(key.causal), int(key.softcap),
                     int(key.alibi), int(key.dropout));
  }

  BwdParams& p = plan->params;
  p = BwdParams{};
  static_cast<FwdParams&>(p) = to_fwd_params(f);
  p.max_seqlen_k = f.cu_seqlens_q != nullptr ? int(args->max_seqlen_k) : p.seqlen_k;
  p.num_sms = device.num_sms;  // the key blocks' section sizes (set_bwd_key_order)
  p.dout = args->dout;
  p.dout_batch_stride = args->dout_batch_stride;
  p.dout_row_stride = args->dout_row_stride;
  p.dout_head_stride = args->dout_head_stride;
  p.dq = args->dq;
  p.dq_batch_stride = args->dq_batch_stride;
  p.dq_row_stride = args->dq_row_stride;
  p.dq_head_stride = args->dq_head_stride;
  p.dk = args->dk;
  p.dk_batch_stride = args->dk_batch_stride;
  p.dk_row_stride = args->dk_row_stride;
  p.dk_head_stride = args->dk_head_stride;
  p.dv = args->dv;
  p.dv_batch_stride = args->dv_batch_stride;
  p.dv_row_stride = args->dv_row_stride;
  p.dv_head_stride = args->dv_head_stride;
  p.dsinks = args->dsinks;
  p.deterministic = args->deterministic != 0;
  p.dq_accum_dim = sm80::padded_head_dim(p.head_dim_qk);
  const sm80::BwdTile tile = sm80::bwd_tile(p.head_dim_qk, p.head_dim_v);
  // Deterministic-mode counters per query block: counted in 64-row blocks, enough for the sm80
  // tile and for the sm90 kernel's 64- or 128-row blocks alike.
  const int counter_rows = tile.block_m < 64 ? tile.block_m : 64;
  p.num_m_blocks = (p.seqlen_q + counter_rows - 1) / counter_rows;

  // Only the sm80 kernels keep dq_accum in per-block tiles that need the padding rows.
  const bool padded = plan->entry->key.family == KernelFamily::kSm80;
  p.dq_accum_rows = int64_t(p.total_q) + (padded ? int64_t(p.batch) * kDqAccumPadRows : 0);
  status = plan_bwd_grid(*plan->entry, device.num_sms, p);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  plan->accum_bytes =
      align_up(size_t(p.dq_accum_rows) * p.num_heads_q * p.dq_accum_dim * sizeof(float) + size_t(p.grid_zero_bytes));
  plan->d_bytes = align_up(size_t(p.num_heads_q) * p.total_q * sizeof(float));
  plan->semaphore_bytes = p.deterministic ? align_up(size_t(p.batch) * p.num_heads_q * p.num_m_blocks * sizeof(int)) : 0;
  return FLASHGEN_STATUS_OK;
}

}  // namespace
}  // namespace flashgen

extern "C" {

void flashgen_bwd_args_init(flashgen_bwd_args_t* args) {
  if (args == nullptr) { return; }
  std::memset(args, 0, sizeof(*args));
  args->struct_size = sizeof(*args);
  flashgen_fwd_args_init(&args->fwd);
}

flashgen_status_t flashgen_bwd_workspace_size(const flashgen_bwd_args_t* args, size_t* bytes) {
  using namespace flashgen;
  BwdPlan plan{};
  const flashgen_status_t status = make_bwd_plan(args, &plan);
  if (status == FLASHGEN_STATUS_OK && bytes != nullptr) { *bytes = plan.workspace_bytes(); }
  return status;
}

flashgen_status_t flashgen_bwd(const flashgen_bwd_args_t* args, cudaStream_t stream) {
  using namespace flashgen;
  BwdPlan plan{};
  flashgen_status_t status = make_bwd_plan(args, &plan);
  if (status != FLASHGEN_STATUS_OK) { return status; }
  BwdParams& p = plan.params;
  if (args->workspace == nullptr || args->workspace_bytes < plan.workspace_bytes()) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT,
                     "the backward pass needs %zu bytes of workspace (flashgen_bwd_workspace_size), got %zu",
                     plan.workspace_bytes(), args->workspace_bytes);
  }
  if (reinterpret_cast<uintptr_t>(args->workspace) % 16 != 0) {
    return set_error(FLASHGEN_STATUS_INVALID_ARGUMENT, "workspace must be 16-byte aligned");
  }
  char* workspace = static_cast<char*>(args->workspace);
  p.dq_accum = reinterpret_cast<float*>(workspace);
  // plan_bwd_grid's zeroed workspace right after dq_accum: the tail slots, their counters, the
  // persistent grid's item counter (its last 16 bytes).
  float* grid_workspace = p.dq_accum + int64_t(p.dq_accum_rows) * p.num_heads_q * p.dq_accum_dim;
  if (p.tail.blocks > 0) {
    const int64_t slot_floats = 2 * int64_t(sm90::bwd_block_n(p.head_dim_qk, p.head_dim_v)) * p.head_dim_qk;
    p.tail_accum = grid_workspace;
    p.tail_counters = reinterpret_cast<int*>(p.tail_accum + p.tail.blocks * slot_floats);
  }
  if (p.persistent) {
    p.item_counter = reinterpret_cast<int*>(reinterpret_cast<char*>(grid_workspace) + p.grid_zero_bytes - 16);
  }
  p.softmax_d = reinterpret_cast<float*>(workspace + plan.accum_bytes);
  p.dq_semaphore = p.deterministic ? reinterpret_cast<int*>(workspace + plan.accum_bytes + plan.d_bytes) : nullptr;
  if (p.batch == 0) { return FLASHGEN_STATUS_OK; }
  return plan.entry->bwd(p, stream);
}

}  // extern "C"
