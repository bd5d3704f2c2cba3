// Hopper (sm_90a) warpgroup tensor-core primitives: `wgmma.mma_async` with both operands in shared
// memory, the shared-memory matrix descriptors it reads them through, and the fences that order it
// against ordinary (generic-proxy) shared-memory writes such as cp.async.
//
// Only compiled into sm_90a code: every function body is guarded by FK_WGMMA_AVAILABLE (other
// targets get a trap, and a host must not launch a kernel using these there; see
// kernel_has_sm90a_code).
//
// Layout these descriptors describe: a K-major tile of 16-bit elements whose rows are exactly 64
// elements (128 bytes), stored with the "128-byte swizzle" - 16-byte chunk c of row r at chunk
// c ^ (r % 8), i.e. SwizzledTile<64> from mma_sm80.cuh - and whose base is 1024-byte aligned (one
// 8-row swizzle atom). Eight-row groups are 1024 bytes apart (the stride byte offset); the leading
// byte offset is unused for swizzled K-major layouts. Stepping K by 16 elements inside the 128-byte
// row is +32 bytes on the start address (the hardware applies the swizzle to the final address).
//
// Accumulator fragment of m64nNk16 (fp32, per thread of the 128-thread warpgroup; w = warp % 4,
// g = lane / 4, t = lane % 4): d[4j + 0..1] = (row 16w + g, cols 8j + 2t, +1),
// d[4j + 2..3] = (row 16w + g + 8, same cols) - the mma.sync C layout, repeated over N / 8 blocks.
#pragma once
#include <cstdint>

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FK_WGMMA_AVAILABLE 1
#else
#define FK_WGMMA_AVAILABLE 0
#endif

namespace flashkernel {

// Descriptor of a 128-byte-swizzled, K-major tile at `smem` (1024-byte aligned; see above).
__device__ __forceinline__ std::uint64_t wgmma_desc_sw128(const void* smem) {
  const std::uint32_t addr = static_cast<std::uint32_t>(__cvta_generic_to_shared(smem));
  std::uint64_t desc = 0;
  desc |= std::uint64_t((addr & 0x3FFFF) >> 4);  // start address, 16-byte units
  desc |= std::uint64_t(1) << 16;                // leading byte offset (unused when swizzled)
  desc |= std::uint64_t(1024 >> 4) << 32;        // stride byte offset: 8 rows x 128 bytes
  desc |= std::uint64_t(1) << 62;                // 128-byte swizzle
  return desc;
}

// Adds `bytes` (a multiple of 16) to a descriptor's start address: the next K16 slice of a tile.
__device__ __forceinline__ std::uint64_t wgmma_desc_advance(std::uint64_t desc, int bytes) {
  return desc + std::uint64_t(bytes >> 4);
}

// Orders the register accumulators before the first wgmma of a batch (required by the ISA).
__device__ __forceinline__ void wgmma_fence() {
#if FK_WGMMA_AVAILABLE
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void wgmma_commit_group() {
#if FK_WGMMA_AVAILABLE
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

// Waits until at most kPending committed wgmma groups of this warpgroup are still running.
template <int kPending>
__device__ __forceinline__ void wgmma_wait_group() {
#if FK_WGMMA_AVAILABLE
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#endif
}

// Makes this thread's completed generic-proxy shared-memory writes (st.shared, cp.async after its
// wait) visible to the async proxy that wgmma reads through. Follow with a barrier.
__device__ __forceinline__ void fence_proxy_async_shared() {
#if FK_WGMMA_AVAILABLE
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// d (64 fp32 per thread) = A(64x16, K-major smem) * B(16x128, K-major smem: W rows) + (accumulate ? d : 0).
// T is __half or __nv_bfloat16 (selected by the caller through IsBf16).
template <bool IsBf16>
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], std::uint64_t desc_a, std::uint64_t desc_b,
                                                 bool accumulate) {
#if FK_WGMMA_AVAILABLE
  if constexpr (!IsBf16) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "%64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(desc_a), "l"(desc_b), "r"(int(accumulate)));
  } else {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "%64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(desc_a), "l"(desc_b), "r"(int(accumulate)));
  }
#else
  __trap();
#endif
}

}  // namespace flashkernel
