// Device queries: device_info() for users and benchmarks, and for launchers the cached SM count,
// the compute capability dispatch uses and the shared-memory limit configurations are chosen by.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#include "common/arg_check.h"
#include "common/cuda_check.h"
#include "common/launch.h"
#include "common/smem_budget.h"
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

// FLASHKERNEL_FORCE_ARCH (tests only): 75, 80, 86 or 89 makes the library dispatch as on that
// architecture (its compute capability and its shared-memory opt-in limit), so a Hopper GPU runs
// the T4 or Ada code paths; with a compute_75 PTX build the driver JIT-compiles that PTX, and the
// sm_75 instruction forms run too. Read once: a per-call environment lookup would make dispatch
// depend on when a variable was set. 0: no override.
int forced_arch() {
  // A bad value throws here on every call (a static's initializer that throws runs again next
  // time), so a typo fails loudly instead of silently testing the native path.
  static const int value = [] {
    const char* env = std::getenv("FLASHKERNEL_FORCE_ARCH");
    if (env == nullptr || *env == '\0') return 0;
    const std::string text(env);
    for (int sm : {75, 80, 86, 89}) {
      if (text == std::to_string(sm)) return sm;
    }
    throw Error("flashkernel: FLASHKERNEL_FORCE_ARCH must be 75, 80, 86 or 89 (or unset), got '" + text + "'");
  }();
  return value;
}

// The newest architecture of this build whose code the device `native` (10 * major + minor) runs:
// machine code for its exact capability ("90a"), or PTX / machine code of an older one, which the
// driver runs (JIT-compiling PTX). A compute_75-only build on an H100 thus dispatches as sm_75:
// its kernels hold only the sm_75 forms. `native` when the build list says nothing usable
// ("native", "all", or no list).
static int newest_built_arch_for(int native) {
#ifdef FLASHKERNEL_BUILT_ARCHS
  int best = 0;
  std::stringstream list(FLASHKERNEL_BUILT_ARCHS);  // "80,90a", "75-virtual", ...
  for (std::string arch; std::getline(list, arch, ',');) {
    int sm = 0, digits = 0;
    if (std::sscanf(arch.c_str(), "%d%n", &sm, &digits) != 1 || sm < 10) return native;
    const bool specific = arch[digits] == 'a';  // 90a: exactly compute capability 9.0
    if ((specific ? sm == native : sm <= native) && sm > best) best = sm;
  }
  return best > 0 ? best : native;
#else
  return native;
#endif
}

int current_compute_capability() {
  static PerDeviceCache cache;
  return cache.get([](int device) {
    const int native =
        10 * attribute(cudaDevAttrComputeCapabilityMajor, device) + attribute(cudaDevAttrComputeCapabilityMinor, device);
    const int built = newest_built_arch_for(native);
    const int forced = forced_arch();
    if (forced == 0) return built;
    // An override may name an older architecture than the built code this GPU runs, or a newer
    // one that would run the very same code (sm_86 from a compute_80 build: only the limits
    // differ), never one past the GPU itself.
    if (forced > native || (forced > built && newest_built_arch_for(forced) != built)) {
      throw Error("flashkernel: FLASHKERNEL_FORCE_ARCH=" + std::to_string(forced) +
                  " is newer than what this GPU runs from this build (sm_" + std::to_string(built) +
                  "): an override can only select an older architecture's path, or one that runs the same code");
    }
    return forced;
  });
}

int current_compute_major() { return current_compute_capability() / 10; }

int current_smem_optin_bytes() {
  static PerDeviceCache cache;
  return cache.get([](int device) {
    const int native = attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    const int forced = forced_arch();
    return forced == 0 ? native : std::min(native, arch_smem_optin_bytes(forced));
  });
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
  const int have = current_compute_capability();
  if (have >= 10 * major) return;
  throw Error(compute_capability_message(op, major, have / 10, have % 10));
}

void require_tensor_core_dtype(const char* op, DType dtype) {
  const int have = current_compute_capability();
  if (have < kMinTensorCoreArch) {
    throw Error(std::string(op) + ": needs a GPU of compute capability 7.5 or newer (mma.sync tensor cores); this GPU is " +
                std::to_string(have / 10) + "." + std::to_string(have % 10) +
                ". There FlashKernel runs vector_add, reduce, rope, add_layernorm, the KV cache copies and paged "
                "decode attention (CUDA-core kernels).");
  }
  require(dtype != DType::kBFloat16 || have >= 80, op, "dtype",
          "bfloat16 needs compute capability 8.0 or newer (bf16 tensor cores); this GPU runs as " +
              std::to_string(have / 10) + "." + std::to_string(have % 10) + ": use float16");
}

}  // namespace detail
}  // namespace flashkernel

namespace flashkernel::pdl {
namespace {
thread_local bool t_dependent_launches = false;
}  // namespace

bool dependent_launches() { return t_dependent_launches; }

DependentLaunches::DependentLaunches(bool on) : previous_(t_dependent_launches) { t_dependent_launches = on; }

DependentLaunches::~DependentLaunches() { t_dependent_launches = previous_; }

}  // namespace flashkernel::pdl
