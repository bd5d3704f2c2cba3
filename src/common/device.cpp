// Device queries: device_info() for users and benchmarks, and a cached SM count for launchers.
#include <cuda_runtime_api.h>

#include <string>

#include "common/arg_check.h"
#include "common/cuda_check.h"
#include "common/launch.h"
#include "flashkernel/device_info.h"

namespace flashkernel {

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error so later calls are unaffected
    return 0;
  }
  return count;
}

static int attribute(cudaDeviceAttr attr, int device) {
  int value = 0;
  FK_CUDA_CHECK(cudaDeviceGetAttribute(&value, attr, device));
  return value;
}

DeviceInfo device_info(int device) {
  int count = device_count();
  if (device < 0) {
    detail::require(count > 0, "device_info", "device", "cannot be resolved: no CUDA device is visible");
    FK_CUDA_CHECK(cudaGetDevice(&device));
  }
  detail::require(device < count, "device_info", "device",
                  "is " + std::to_string(device) + " but only " + std::to_string(count) + " CUDA device(s) are visible");
  cudaDeviceProp prop{};
  FK_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  DeviceInfo info;
  info.device = device;
  info.name = prop.name;
  info.compute_major = prop.major;
  info.compute_minor = prop.minor;
  info.sm_count = prop.multiProcessorCount;
  info.total_memory_bytes = prop.totalGlobalMem;
  info.l2_cache_bytes = static_cast<std::size_t>(prop.l2CacheSize);
  info.shared_memory_per_block_optin = prop.sharedMemPerBlockOptin;
  // CUDA 13 removed the clock fields from cudaDeviceProp; the attributes still report them.
  info.peak_sm_clock_khz = attribute(cudaDevAttrClockRate, device);
  info.peak_memory_clock_khz = attribute(cudaDevAttrMemoryClockRate, device);
  info.memory_bus_width_bits = attribute(cudaDevAttrGlobalMemoryBusWidth, device);
  return info;
}

namespace detail {

int current_sm_count() {
  static PerDeviceCache cache;
  return cache.get([](int device) { return attribute(cudaDevAttrMultiProcessorCount, device); });
}

int current_compute_major() {
  static PerDeviceCache cache;
  return cache.get([](int device) { return attribute(cudaDevAttrComputeCapabilityMajor, device); });
}

int current_smem_optin_bytes() {
  static PerDeviceCache cache;
  return cache.get([](int device) { return attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, device); });
}

void require_smem_within_device_limit(int smem_bytes) {
  const int limit = current_smem_optin_bytes();
  if (smem_bytes > limit) {
    throw Error("flashkernel: a kernel configuration needs " + std::to_string(smem_bytes) +
                " bytes of shared memory per block, but this GPU allows at most " + std::to_string(limit) +
                " (cudaDevAttrMaxSharedMemoryPerBlockOptin)");
  }
}

std::string compute_capability_message(const char* op, int need_major, int have_major, int have_minor) {
  return std::string(op) + ": needs a GPU of compute capability " + std::to_string(need_major) +
         ".0 or newer (its kernels use sm_" + std::to_string(need_major) + "0 instructions); this GPU is " +
         std::to_string(have_major) + "." + std::to_string(have_minor) +
         ". There FlashKernel runs vector_add, reduce, rope, add_layernorm, the KV cache copies and paged decode "
         "attention (CUDA-core kernels).";
}

void require_compute_capability(const char* op, int major) {
  const int have = current_compute_major();
  if (have >= major) return;
  int device = 0;
  FK_CUDA_CHECK(cudaGetDevice(&device));
  throw Error(compute_capability_message(op, major, have, attribute(cudaDevAttrComputeCapabilityMinor, device)));
}

}  // namespace detail
}  // namespace flashkernel
