// Shared-memory limits of the GPUs the library supports, and the arithmetic kernel configurations
// use to size their pipelines against them. Host-only and constexpr, so a CPU test can check every
// configuration of every op against every architecture without a GPU.
#pragma once

namespace flashkernel::detail {

// cudaDevAttrMaxSharedMemoryPerBlockOptin (dynamic + static shared memory one block may opt in to).
struct ArchSmemLimit {
  int sm;           // compute capability, 10 * major + minor
  int optin_bytes;  // the per-block opt-in limit
};
inline constexpr ArchSmemLimit kArchSmemLimits[] = {
    {75, 65536},   // T4, RTX 20xx (64 KiB): fp16 only on the tensor-core ops
    {80, 166912},  // A100 (163 KiB)
    {86, 101376},  // A10, RTX 30xx (99 KiB)
    {89, 101376},  // L4, L40, RTX 4090 (99 KiB)
    {90, 232448},  // H100, H200 (227 KiB)
};

// The opt-in limit of compute capability `sm` (0 if it is not in the table).
constexpr int arch_smem_optin_bytes(int sm) {
  for (const ArchSmemLimit& a : kArchSmemLimits) {
    if (a.sm == sm) return a.optin_bytes;
  }
  return 0;
}

// The smallest opt-in limit from sm_80 on (99 KiB, sm_86/89): the sm_80 kernels' main
// configurations fit it, so they run unchanged on every Ampere, Ada and Hopper GPU. sm_75's
// 64 KiB is below it: there each op picks a smaller configuration by the queried limit.
inline constexpr int kMinSmemOptinBytes = [] {
  int m = arch_smem_optin_bytes(80);
  for (const ArchSmemLimit& a : kArchSmemLimits) m = a.sm >= 80 && a.optin_bytes < m ? a.optin_bytes : m;
  return m;
}();

// Dynamic shared memory a launch gets without opting in (the same on every architecture).
inline constexpr int kDefaultSmemBytes = 48 * 1024;

// The deepest ring of `stage_bytes` stages, at most `max_stages`, that fits `budget_bytes`.
constexpr int stages_within(int budget_bytes, int stage_bytes, int max_stages) {
  const int fit = budget_bytes / stage_bytes;
  return fit < max_stages ? fit : max_stages;
}

}  // namespace flashkernel::detail
