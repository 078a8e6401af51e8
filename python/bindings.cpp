// flashgen._C: a thin pybind11 layer over the C API. Tensors cross as raw pointers and
// strides, so the module links no libtorch and one build serves any torch version.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "flashgen/flashgen.h"

namespace py = pybind11;

namespace {

using Strides = std::array<int64_t, 3>;  // (batch, row, head) in elements

void raise_for(flashgen_status_t status) {
  if (status == FLASHGEN_STATUS_OK) { return; }
  const std::string message = flashgen_last_error();
  switch (status) {
    case FLASHGEN_STATUS_INVALID_ARGUMENT: throw py::value_error(message);
    case FLASHGEN_STATUS_NOT_BUILT: throw py::key_error(message);
    default: throw std::runtime_error(message);
  }
}

void fwd(int dtype, uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t out, uintptr_t lse, int64_t batch,
         int64_t seqlen_q, int64_t seqlen_k, int64_t num_heads_q, int64_t num_heads_kv, int64_t head_dim_qk,
         int64_t head_dim_v, Strides q_strides, Strides k_strides, Strides v_strides, Strides out_strides,
         float softmax_scale, bool causal, uintptr_t stream) {
  flashgen_fwd_args_t a;
  flashgen_fwd_args_init(&a);
  a.dtype = static_cast<flashgen_dtype_t>(dtype);
  a.q = reinterpret_cast<const void*>(q);
  a.k = reinterpret_cast<const void*>(k);
  a.v = reinterpret_cast<const void*>(v);
  a.out = reinterpret_cast<void*>(out);
  a.lse = reinterpret_cast<float*>(lse);
  a.batch = batch;
  a.seqlen_q = seqlen_q;
  a.seqlen_k = seqlen_k;
  a.num_heads_q = num_heads_q;
  a.num_heads_kv = num_heads_kv;
  a.head_dim_qk = head_dim_qk;
  a.head_dim_v = head_dim_v;
  a.q_batch_stride = q_strides[0];
  a.q_row_stride = q_strides[1];
  a.q_head_stride = q_strides[2];
  a.k_batch_stride = k_strides[0];
  a.k_row_stride = k_strides[1];
  a.k_head_stride = k_strides[2];
  a.v_batch_stride = v_strides[0];
  a.v_row_stride = v_strides[1];
  a.v_head_stride = v_strides[2];
  a.out_batch_stride = out_strides[0];
  a.out_row_stride = out_strides[1];
  a.out_head_stride = out_strides[2];
  a.softmax_scale = softmax_scale;
  a.causal = causal ? 1 : 0;
  flashgen_status_t status;
  {
    py::gil_scoped_release release;
    status = flashgen_fwd(&a, reinterpret_cast<cudaStream_t>(stream));
  }
  raise_for(status);
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
  m.def("fwd", &fwd, py::arg("dtype"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"),
        py::arg("batch"), py::arg("seqlen_q"), py::arg("seqlen_k"), py::arg("num_heads_q"), py::arg("num_heads_kv"),
        py::arg("head_dim_qk"), py::arg("head_dim_v"), py::arg("q_strides"), py::arg("k_strides"),
        py::arg("v_strides"), py::arg("out_strides"), py::arg("softmax_scale"), py::arg("causal"),
        py::arg("stream"));
  m.def("kernel_names", &kernel_names, "Canonical names of the compiled kernel instantiations");
  m.def("cuda_archs", [] { return std::string(flashgen_cuda_archs()); });
  m.def("version", [] { return std::string(flashgen_version()); });
}
