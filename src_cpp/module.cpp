// The pybind11 side of the extension: helpers that are not tensor ops.
#include <ATen/Parallel.h>
#include <pybind11/pybind11.h>

#include "blas.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "torchrec_ascend C++ extension (ops are registered under torch.ops.torchrec_ascend)";
  m.def("parallel_info", []() { return at::get_parallel_info(); },
        "ATen's description of the thread pools this extension runs on.");
  m.def("have_fast_blas", &torchrec_ascend::have_fast_blas,
        "Whether the CPU kernels found an optimised BLAS in the loaded torch.");
  m.def("num_threads", []() { return at::get_num_threads(); });
}
