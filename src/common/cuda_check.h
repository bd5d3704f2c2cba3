// Host-side error checking: every CUDA API call and every kernel launch goes through these so a
// failure becomes a flashkernel::CudaError naming the call site, never a silent wrong result.
#pragma once
#include <cuda_runtime_api.h>

#include <string>

#include "flashkernel/status.h"

namespace flashkernel::detail {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line) {
  throw CudaError(std::string("CUDA error '") + cudaGetErrorString(err) + "' (" + cudaGetErrorName(err) +
                  ") at " + file + ":" + std::to_string(line) + " in " + expr);
}

}  // namespace flashkernel::detail

#define FK_CUDA_CHECK(expr)                                                          \
  do {                                                                               \
    cudaError_t fk_err_ = (expr);                                                    \
    if (fk_err_ != cudaSuccess) {                                                    \
      ::flashkernel::detail::throw_cuda_error(fk_err_, #expr, __FILE__, __LINE__);   \
    }                                                                                \
  } while (0)

// After a <<<...>>> launch: catches bad configurations (too much shared memory, ...) at once.
#define FK_CHECK_LAUNCH() FK_CUDA_CHECK(cudaPeekAtLastError())
