// flashgen._C: a thin pybind11 layer over the C API. Tensors cross as raw pointers and
// strides, so the module links no libtorch and one build serves any torch version.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "flashgen/flashgen.h"

namespace py = pybind11;

namespace {

void raise_for(flashgen_status_t status) {
  if (status == FLASHGEN_STATUS_OK) { return; }
  const std::string message = flashgen_last_error();
  switch (status) {
    case FLASHGEN_STATUS_INVALID_ARGUMENT: throw py::value_error(message);
    case FLASHGEN_STATUS_NOT_BUILT: throw py::key_error(message);
    default: throw std::runtime_error(message);
  }
}

cudaStream_t as_stream(uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

// Pointer fields cross as Python ints.
#define FG_POINTER(cls, Struct, field, Type)                                                                 \
  cls.def_property(                                                                                          \
      #field, [](const Struct& s) { return reinterpret_cast<uintptr_t>(s.field); },                         \
      [](Struct& s, uintptr_t value) { s.field = reinterpret_cast<Type>(value); })
#define FG_FIELD(cls, Struct, field) cls.def_readwrite(#field, &Struct::field)
// A nested flashgen_fp8_scale_t, by reference like BwdArgs.fwd: `args.k_scale.scale = ptr` fills it.
#define FG_SCALE(cls, Struct, field)                                                                     \
  cls.def_property_readonly(                                                                             \
      #field, [](Struct& s) -> flashgen_fp8_scale_t& { return s.field; }, py::return_value_policy::reference_internal)
// The (batch, row, head) element strides of one tensor: prefix_batch_stride, ...
#define FG_STRIDES(cls, Struct, prefix)   \
  FG_FIELD(cls, Struct, prefix##_batch_stride); \
  FG_FIELD(cls, Struct, prefix##_row_stride);   \
  FG_FIELD(cls, Struct, prefix##_head_stride)

void bind_fwd_args(py::module_& m) {
  using S = flashgen_fwd_args_t;
  py::class_<S> c(m, "FwdArgs");
  c.def(py::init([] {
    S s;
    flashgen_fwd_args_init(&s);
    return s;
  }));
  // copy.copy(args): a filled struct reused as a template (flashgen._args_cache).
  c.def("__copy__", [](const S& s) { return S(s); });
  c.def_property(
      "dtype", [](const S& s) { return int(s.dtype); }, [](S& s, int v) { s.dtype = flashgen_dtype_t(v); });
  FG_POINTER(c, S, q, const void*);
  FG_POINTER(c, S, k, const void*);
  FG_POINTER(c, S, v, const void*);
  FG_POINTER(c, S, out, void*);
  FG_POINTER(c, S, lse, float*);
  FG_FIELD(c, S, batch);
  FG_FIELD(c, S, seqlen_q);
  FG_FIELD(c, S, seqlen_k);
  FG_FIELD(c, S, num_heads_q);
  FG_FIELD(c, S, num_heads_kv);
  FG_FIELD(c, S, head_dim_qk);
  FG_FIELD(c, S, head_dim_v);
  FG_STRIDES(c, S, q);
  FG_STRIDES(c, S, k);
  FG_STRIDES(c, S, v);
  FG_STRIDES(c, S, out);
  FG_POINTER(c, S, cu_seqlens_q, const int32_t*);
  FG_POINTER(c, S, cu_seqlens_k, const int32_t*);
  FG_FIELD(c, S, total_q);
  FG_POINTER(c, S, seqused_k, const int32_t*);
  FG_FIELD(c, S, seqused_k_add);
  FG_POINTER(c, S, kv_batch_idx, const int32_t*);
  FG_FIELD(c, S, kv_batch_count);
  FG_POINTER(c, S, block_table, const int32_t*);
  FG_FIELD(c, S, block_table_batch_stride);
  FG_FIELD(c, S, max_pages_per_seq);
  FG_FIELD(c, S, page_size);
  FG_FIELD(c, S, num_pages);
  FG_FIELD(c, S, softmax_scale);
  FG_FIELD(c, S, causal);
  FG_FIELD(c, S, window_left);
  FG_FIELD(c, S, window_right);
  FG_FIELD(c, S, softcap);
  FG_POINTER(c, S, alibi_slopes, const float*);
  FG_FIELD(c, S, alibi_batch_stride);
  FG_POINTER(c, S, sinks, const float*);
  FG_FIELD(c, S, dropout_p);
  FG_FIELD(c, S, philox_seed);
  FG_FIELD(c, S, philox_offset);
  FG_FIELD(c, S, num_splits);
  FG_FIELD(c, S, kv_cache_e4m3);
  FG_POINTER(c, S, workspace, void*);
  FG_FIELD(c, S, workspace_bytes);
  c.def_property(
      "out_dtype", [](const S& s) { return int(s.out_dtype); },
      [](S& s, int v) { s.out_dtype = flashgen_dtype_t(v); });
  FG_SCALE(c, S, q_scale);
  FG_SCALE(c, S, k_scale);
  FG_SCALE(c, S, v_scale);
}

void bind_fp8_scale(py::module_& m) {
  using S = flashgen_fp8_scale_t;
  py::class_<S> c(m, "Fp8Scale");
  FG_POINTER(c, S, scale, const float*);
  FG_FIELD(c, S, batch_stride);
  FG_FIELD(c, S, head_stride);
  FG_FIELD(c, S, block_stride);
  FG_FIELD(c, S, block_rows);
}

void bind_bwd_args(py::module_& m) {
  using S = flashgen_bwd_args_t;
  py::class_<S> c(m, "BwdArgs");
  c.def(py::init([] {
    S s;
    flashgen_bwd_args_init(&s);
    return s;
  }));
  // copy.copy(args): a filled struct reused as a template (flashgen._args_cache).
  c.def("__copy__", [](const S& s) { return S(s); });
  // By reference, so that `args.fwd.q = ...` fills the nested struct rather than a copy; the
  // returned FwdArgs keeps its BwdArgs alive.
  c.def_property_readonly(
      "fwd", [](S& s) -> flashgen_fwd_args_t& { return s.fwd; }, py::return_value_policy::reference_internal);
  FG_FIELD(c, S, max_seqlen_k);
  FG_POINTER(c, S, dout, const void*);
  FG_STRIDES(c, S, dout);
  FG_POINTER(c, S, dq, void*);
  FG_STRIDES(c, S, dq);
  FG_POINTER(c, S, dk, void*);
  FG_STRIDES(c, S, dk);
  FG_POINTER(c, S, dv, void*);
  FG_STRIDES(c, S, dv);
  FG_POINTER(c, S, dsinks, float*);
  FG_FIELD(c, S, deterministic);
  FG_POINTER(c, S, workspace, void*);
  FG_FIELD(c, S, workspace_bytes);
}

void bind_kv_append_args(py::module_& m) {
  using S = flashgen_kv_append_args_t;
  py::class_<S> c(m, "KvAppendArgs");
  c.def(py::init([] {
    S s;
    flashgen_kv_append_args_init(&s);
    return s;
  }));
  c.def_property(
      "dtype", [](const S& s) { return int(s.dtype); }, [](S& s, int v) { s.dtype = flashgen_dtype_t(v); });
  FG_FIELD(c, S, batch);
  FG_FIELD(c, S, seqlen_new);
  FG_FIELD(c, S, num_heads_kv);
  FG_FIELD(c, S, head_dim_qk);
  FG_FIELD(c, S, head_dim_v);
  FG_POINTER(c, S, k_new, const void*);
  FG_POINTER(c, S, v_new, const void*);
  FG_STRIDES(c, S, k_new);
  FG_STRIDES(c, S, v_new);
  FG_POINTER(c, S, k_cache, void*);
  FG_POINTER(c, S, v_cache, void*);
  FG_STRIDES(c, S, k_cache);
  FG_STRIDES(c, S, v_cache);
  FG_POINTER(c, S, cache_seqlens, const int32_t*);
  FG_FIELD(c, S, capacity);
  FG_POINTER(c, S, kv_batch_idx, const int32_t*);
  FG_FIELD(c, S, kv_batch_count);
  FG_POINTER(c, S, block_table, const int32_t*);
  FG_FIELD(c, S, block_table_batch_stride);
  FG_FIELD(c, S, page_size);
  FG_FIELD(c, S, num_pages);
  FG_POINTER(c, S, rotary_cos, const void*);
  FG_POINTER(c, S, rotary_sin, const void*);
  FG_FIELD(c, S, rotary_dim);
  FG_FIELD(c, S, rotary_seqlen);
  FG_FIELD(c, S, rotary_interleaved);
  FG_POINTER(c, S, q, const void*);
  FG_POINTER(c, S, q_out, void*);
  FG_FIELD(c, S, seqlen_q);
  FG_FIELD(c, S, num_heads_q);
  FG_STRIDES(c, S, q);
  FG_STRIDES(c, S, q_out);
  FG_FIELD(c, S, q_positions_per_row);
  FG_FIELD(c, S, cache_e4m3);
  FG_SCALE(c, S, k_scale);
  FG_SCALE(c, S, v_scale);
}

void bind_fp8_quantize_args(py::module_& m) {
  using S = flashgen_fp8_quantize_args_t;
  py::class_<S> c(m, "Fp8QuantizeArgs");
  c.def(py::init([] {
    S s;
    flashgen_fp8_quantize_args_init(&s);
    return s;
  }));
  c.def_property(
      "dtype", [](const S& s) { return int(s.dtype); }, [](S& s, int v) { s.dtype = flashgen_dtype_t(v); });
  FG_POINTER(c, S, x, const void*);
  FG_FIELD(c, S, batch);
  FG_FIELD(c, S, seqlen);
  FG_FIELD(c, S, num_heads);
  FG_FIELD(c, S, head_dim);
  FG_STRIDES(c, S, x);
  FG_POINTER(c, S, cu_seqlens, const int32_t*);
  FG_FIELD(c, S, total);
  c.def_property(
      "granularity", [](const S& s) { return int(s.granularity); },
      [](S& s, int v) { s.granularity = flashgen_fp8_granularity_t(v); });
  FG_FIELD(c, S, block_rows);
  c.def_property(
      "layout", [](const S& s) { return int(s.layout); }, [](S& s, int v) { s.layout = flashgen_fp8_layout_t(v); });
  FG_POINTER(c, S, out, void*);
  FG_STRIDES(c, S, out);
  FG_POINTER(c, S, scale, float*);
  FG_POINTER(c, S, workspace, void*);
  FG_FIELD(c, S, workspace_bytes);
}

std::vector<std::string> kernel_names() {
  std::vector<std::string> names;
  for (int i = 0; i < flashgen_num_kernels(); ++i) { names.emplace_back(flashgen_kernel_name(i)); }
  return names;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "flashgen C API bindings (raw pointers; use the flashgen package functions)";
  m.attr("DTYPE_FP16") = int(FLASHGEN_DTYPE_FP16);
  m.attr("DTYPE_BF16") = int(FLASHGEN_DTYPE_BF16);
  m.attr("DTYPE_E4M3") = int(FLASHGEN_DTYPE_E4M3);
  m.attr("FP8_PER_TENSOR") = int(FLASHGEN_FP8_PER_TENSOR);
  m.attr("FP8_PER_HEAD") = int(FLASHGEN_FP8_PER_HEAD);
  m.attr("FP8_PER_BLOCK") = int(FLASHGEN_FP8_PER_BLOCK);
  m.attr("FP8_LAYOUT_ROWS") = int(FLASHGEN_FP8_LAYOUT_ROWS);
  m.attr("FP8_LAYOUT_PV") = int(FLASHGEN_FP8_LAYOUT_PV);
  bind_fp8_scale(m);
  bind_fwd_args(m);
  bind_bwd_args(m);
  bind_kv_append_args(m);
  bind_fp8_quantize_args(m);
  m.def("fwd", [](const flashgen_fwd_args_t& args, uintptr_t stream) {
    flashgen_status_t status;
    {
      py::gil_scoped_release release;
      status = flashgen_fwd(&args, as_stream(stream));
    }
    raise_for(status);
  });
  m.def("fwd_workspace", [](const flashgen_fwd_args_t& args) {
    size_t bytes = 0;
    int64_t splits = 0;
    raise_for(flashgen_fwd_workspace_size(&args, &bytes, &splits));
    return py::make_tuple(bytes, splits);
  });
  m.def("bwd", [](const flashgen_bwd_args_t& args, uintptr_t stream) {
    flashgen_status_t status;
    {
      py::gil_scoped_release release;
      status = flashgen_bwd(&args, as_stream(stream));
    }
    raise_for(status);
  });
  m.def("bwd_workspace", [](const flashgen_bwd_args_t& args) {
    size_t bytes = 0;
    raise_for(flashgen_bwd_workspace_size(&args, &bytes));
    return bytes;
  });
  m.def("kv_append", [](const flashgen_kv_append_args_t& args, uintptr_t stream) {
    raise_for(flashgen_kv_append(&args, as_stream(stream)));
  });
  m.def("fp8_quantize", [](const flashgen_fp8_quantize_args_t& args, uintptr_t stream) {
    flashgen_status_t status;
    {
      py::gil_scoped_release release;
      status = flashgen_fp8_quantize(&args, as_stream(stream));
    }
    raise_for(status);
  });
  m.def("fp8_quantize_workspace",
        [](const flashgen_fp8_quantize_args_t& args) { return flashgen_fp8_quantize_workspace_size(&args); });
  m.def("dropout_mask", [](uint64_t seed, uint64_t offset, float p, int64_t batch, int64_t heads, int64_t seqlen_q,
                           int64_t seqlen_k, uintptr_t mask, uintptr_t stream) {
    raise_for(flashgen_dropout_mask(seed, offset, p, batch, heads, seqlen_q, seqlen_k, reinterpret_cast<uint8_t*>(mask),
                                    as_stream(stream)));
  });
  m.def("kernel_names", &kernel_names, "Canonical names of the compiled kernel instantiations");
  m.def("cuda_archs", [] { return std::string(flashgen_cuda_archs()); });
  m.def("version", [] { return std::string(flashgen_version()); });
}
