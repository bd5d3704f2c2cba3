// Launch-shape helpers shared by the elementwise / memory-bound kernels.
#pragma once
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include "common/cuda_check.h"
#include "flashkernel/tensor.h"

namespace flashkernel::detail {

constexpr std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// Grid for a grid-stride loop over `work_items`: enough blocks to fill the GPU several times
// over, never more than the work needs, never above the launch limit.
inline unsigned grid_for(std::int64_t work_items, int threads_per_block, int sm_count, int blocks_per_sm = 16) {
  std::int64_t needed = ceil_div(work_items, threads_per_block);
  std::int64_t cap = std::int64_t(sm_count) * blocks_per_sm;
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min(needed, cap)));
}

// A value computed once per device and then reused: device queries (properties, occupancy) are
// slow and their answers never change. Each call site keeps its own static instance.
class PerDeviceCache {
 public:
  // compute(device) runs the first time the current device asks (and for devices >= 64, always).
  template <typename Compute>
  int get(Compute&& compute) {
    int device = 0;
    FK_CUDA_CHECK(cudaGetDevice(&device));
    if (device >= kMaxDevices) return compute(device);
    std::lock_guard<std::mutex> lock(mutex_);
    if (values_[device] == 0) values_[device] = compute(device);
    return values_[device];
  }

 private:
  static constexpr int kMaxDevices = 64;
  std::array<int, kMaxDevices> values_{};
  std::mutex mutex_;
};

// SM count of the current device, cached per device.
int current_sm_count();

// The compute capability dispatch uses on the current device, as 10 * major + minor, cached per
// device: the device's own, lowered to the newest architecture this build has code for that the
// device runs (a compute_75-only build dispatches as sm_75 on any GPU), or to FLASHKERNEL_FORCE_ARCH
// (forced_arch()). Launchers choose kernels by this, never by the GPU's name.
int current_compute_capability();
// Its major part (9 = Hopper).
int current_compute_major();

// FLASHKERNEL_FORCE_ARCH (75, 80, 86 or 89; 0 when unset), read once per process: a test-only
// override under which the library dispatches as on that architecture, with that architecture's
// shared-memory limit (kArchSmemLimits). Throws flashkernel::Error for any other value.
int forced_arch();

// Shared memory one block of the current device may opt in to
// (cudaDevAttrMaxSharedMemoryPerBlockOptin, capped at the forced architecture's limit), cached per
// device. Kernel configurations are chosen against it, never against a card's name.
int current_smem_optin_bytes();

// Throws flashkernel::Error when `smem_bytes` exceeds the current device's opt-in limit: a clear
// message instead of a rejected launch. Launchers pick configurations that fit, so this firing
// means a configuration table lacks an entry for this device.
void require_smem_within_device_limit(int smem_bytes);

// Throws flashkernel::Error naming `op` when the current device's compute capability is below
// `major`.0. The message (below) says what does run there.
void require_compute_capability(const char* op, int major);
std::string compute_capability_message(const char* op, int need_major, int have_major, int have_minor);

// The tensor-core (mma.sync) kernels run from sm_75 on: fp16 everywhere (on sm_75 as mma.sync
// m16n8k8 and synchronous copies, common/mma_sm80.cuh and cp_async.cuh), bf16 from sm_80 (sm_75
// has no bf16 mma). Throws flashkernel::Error below 7.5, and ArgumentError naming `dtype` for
// bfloat16 below 8.0.
inline constexpr int kMinTensorCoreArch = 75;
void require_tensor_core_dtype(const char* op, DType dtype);

// Opts `kernel` in to `smem_bytes` of dynamic shared memory (needed above 48 KiB), once per kernel
// and device, after checking the device allows that much. `kernel` is a template argument so that
// every kernel gets its own flag (kernels sharing a function-pointer type would otherwise share it
// and skip the opt-in).
template <auto kernel>
void ensure_smem_opt_in(int smem_bytes) {
  // One bit per device ordinal; setting the attribute twice is harmless, so a race only repeats it.
  static std::atomic<std::uint64_t> configured{0};
  int device = 0;
  FK_CUDA_CHECK(cudaGetDevice(&device));
  const std::uint64_t bit = device < 64 ? (std::uint64_t(1) << device) : 0;
  if (bit != 0 && (configured.load(std::memory_order_relaxed) & bit)) return;
  require_smem_within_device_limit(smem_bytes);
  FK_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes));
  configured.fetch_or(bit, std::memory_order_relaxed);
}

// Whether `kernel`'s loaded binary is sm_90 machine code. Kernels using sm_90a instructions
// (wgmma, setmaxnreg) compile to a trap for other targets; a build without 90a in its
// architectures only has that (e.g. JIT-compiled from sm_80 PTX), and must not launch them.
template <auto kernel>
bool kernel_has_sm90a_code() {
  static const bool value = [] {
    cudaFuncAttributes attr{};
    if (cudaFuncGetAttributes(&attr, kernel) != cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
    return attr.binaryVersion == 90;
  }();
  return value;
}

// Whether the sm_90a `kernel` can run here with `smem_bytes` of shared memory per block: its sm_90a
// code is in the build and the current device lets a block opt in to that much (a device with less
// shared memory per block than sm_90's takes the op's portable kernels instead).
template <auto kernel>
bool sm90a_kernel_can_run(int smem_bytes) {
  return kernel_has_sm90a_code<kernel>() && smem_bytes <= current_smem_optin_bytes();
}

}  // namespace flashkernel::detail

namespace flashkernel::pdl {

// Whether pdl::launch() on this thread launches programmatic dependents (a DependentLaunches
// scope is open; see common/dependent_launch.cuh). Defined in device.cpp.
bool dependent_launches();

// Opens (and on destruction restores) dependent launching for the calling thread.
class DependentLaunches {
 public:
  explicit DependentLaunches(bool on = true);
  ~DependentLaunches();
  DependentLaunches(const DependentLaunches&) = delete;
  DependentLaunches& operator=(const DependentLaunches&) = delete;

 private:
  bool previous_;
};

}  // namespace flashkernel::pdl
