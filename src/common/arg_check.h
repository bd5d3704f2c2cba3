// Argument validation for the public C++ API: each check names the op and the argument.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "flashkernel/status.h"

namespace flashkernel::detail {

inline void require(bool ok, const char* op, const char* argument, const std::string& what) {
  if (!ok) throw ArgumentError(op, argument, what);
}

inline void require_device_pointer(const void* ptr, std::int64_t n, const char* op, const char* argument) {
  require(n == 0 || ptr != nullptr, op, argument, "must be a non-null device pointer");
}

// Every element access needs the element's own alignment: a misaligned load or store is a device
// fault that ends the CUDA context, so it is rejected here instead (null passes).
inline void require_element_aligned(const void* ptr, std::size_t element_bytes, const char* op, const char* argument) {
  require(reinterpret_cast<std::uintptr_t>(ptr) % element_bytes == 0, op, argument,
          "must be aligned to its " + std::to_string(element_bytes) + "-byte elements");
}

}  // namespace flashkernel::detail
