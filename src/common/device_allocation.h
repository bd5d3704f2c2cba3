// DeviceAllocation: one cudaMalloc'd block owned by a long-lived object (an engine's activations,
// a cache's pool), grown on demand. The point of having one type for it is the failure path: a
// failed growth (out of memory) must leave the owner in a state where its next call either works
// or raises, never one that still points at freed memory.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>
#include <utility>

#include "common/cuda_check.h"

namespace flashkernel::detail {

class DeviceAllocation {
 public:
  DeviceAllocation() = default;
  ~DeviceAllocation() { reset(); }
  DeviceAllocation(const DeviceAllocation&) = delete;
  DeviceAllocation& operator=(const DeviceAllocation&) = delete;
  DeviceAllocation(DeviceAllocation&& other) noexcept
      : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  DeviceAllocation& operator=(DeviceAllocation&& other) noexcept {
    if (this != &other) {
      reset();
      ptr_ = std::exchange(other.ptr_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }

  // Makes the block at least `bytes` long. Returns false if it already was (nothing changes),
  // true if it was reallocated: the contents are then undefined and every pointer derived from
  // the old block is dangling, so the owner must drop those BEFORE calling (see the engine's
  // ensure_* functions). The old block is freed before the new one is allocated, so the peak is
  // the new size, not old + new (a KV pool can be most of the GPU). If the allocation fails, the
  // block is left empty (get() == nullptr, bytes() == 0) and CudaError names `what` and the size.
  bool grow(std::size_t bytes, const char* what) {
    if (bytes <= bytes_) return false;
    reset();
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err != cudaSuccess) {
      // Not sticky, but it stays the thread's last error: consume it (see cuda_check.h).
      (void)cudaGetLastError();
      throw CudaError(std::string(what) + ": could not allocate " + std::to_string(bytes) +
                      " bytes of device memory (CUDA error '" + cudaGetErrorString(err) + "')");
    }
    ptr_ = p;
    bytes_ = bytes;
    return true;
  }

  // Frees the block (no-op when empty). Never throws: it runs in destructors and error paths,
  // where a failing cudaFree (a device already in an error state) must not hide the real error.
  void reset() noexcept {
    if (ptr_ != nullptr) discard_cuda_error(cudaFree(ptr_));
    ptr_ = nullptr;
    bytes_ = 0;
  }

  void* get() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }
  template <typename T>
  T* as(std::size_t byte_offset = 0) const {
    return reinterpret_cast<T*>(static_cast<char*>(ptr_) + byte_offset);
  }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

}  // namespace flashkernel::detail
