// Host-side error checking: every CUDA API call and every kernel launch goes through these so a
// failure becomes a flashkernel::CudaError naming the call site, never a silent wrong result.
#pragma once
#include <cuda_runtime_api.h>

#include <string>

#include "flashkernel/status.h"

namespace flashkernel::detail {

// The runtime also keeps every failure as the calling thread's "last error", which the next
// cudaGetLastError() returns. Whoever reports an error consumes it there, so that one failure (an
// allocation, a rejected launch configuration) is reported once, where it happened, and not again
// by the next unrelated launch check. (Sticky errors, a kernel fault, cannot be cleared: every
// later call then fails, which is right.)
[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line) {
  (void)cudaGetLastError();
  throw CudaError(std::string("CUDA error '") + cudaGetErrorString(err) + "' (" + cudaGetErrorName(err) +
                  ") at " + file + ":" + std::to_string(line) + " in " + expr);
}

// For calls whose failure cannot be reported (cleanup in destructors and on error paths, where a
// second exception must not replace the first): consume the error so it does not linger.
inline void discard_cuda_error(cudaError_t err) noexcept {
  if (err != cudaSuccess) (void)cudaGetLastError();
}

}  // namespace flashkernel::detail

#define FK_CUDA_CHECK(expr)                                                          \
  do {                                                                               \
    cudaError_t fk_err_ = (expr);                                                    \
    if (fk_err_ != cudaSuccess) {                                                    \
      ::flashkernel::detail::throw_cuda_error(fk_err_, #expr, __FILE__, __LINE__);   \
    }                                                                                \
  } while (0)

// After a <<<...>>> launch: catches bad configurations (too much shared memory, ...) at once. It
// takes (clears) the last error rather than peeking at it: a peeked error stays set, and every
// later launch check on this thread would throw it again, blaming an op that did nothing wrong.
#define FK_CHECK_LAUNCH() FK_CUDA_CHECK(cudaGetLastError())
