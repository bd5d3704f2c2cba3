// Argument validation for the public C++ API: each check names the op and the argument.
#pragma once
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

}  // namespace flashkernel::detail
