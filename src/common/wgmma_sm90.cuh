// Hopper (sm_90a) warpgroup tensor-core primitives: `wgmma.mma_async` with A in shared memory or
// in registers and B in shared memory (K- or MN-major), the shared-memory matrix descriptors it
// reads them through, and the fences that order it against ordinary (generic-proxy) shared-memory
// writes such as cp.async.
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

#include "common/shared_memory.cuh"

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FK_WGMMA_AVAILABLE 1
#else
#define FK_WGMMA_AVAILABLE 0
#endif

namespace flashkernel {

// Descriptor of a 128-byte-swizzled tile at `smem` (1024-byte aligned; see above), PTX ISA
// "Matrix Descriptor Format" (wgmma section). K-major operands (rows of 64 K-elements): the stride
// byte offset is the 1024 bytes between 8-row groups and the leading byte offset is unused.
// MN-major operands (kTransB below; rows of 64 N-elements, one row per k): the stride byte offset
// is the 1024 bytes between groups of 8 k-rows and `leading_bytes` the distance between the
// 64-wide column blocks of N (canonical layout ((8,8,n),(8,k)) : ((1,8,LBO),(64,SBO)) in elements).
__device__ __forceinline__ std::uint64_t wgmma_desc_sw128(const void* smem, std::uint32_t leading_bytes = 16) {
  const std::uint32_t addr = smem_address(smem);
  std::uint64_t desc = 0;
  desc |= std::uint64_t((addr & 0x3FFFF) >> 4);                 // start address, 16-byte units
  desc |= std::uint64_t((leading_bytes & 0x3FFFF) >> 4) << 16;  // leading byte offset
  desc |= std::uint64_t(1024 >> 4) << 32;                       // stride byte offset: 8 rows x 128 bytes
  desc |= std::uint64_t(1) << 62;                               // 128-byte swizzle
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

// Operand lists of the accumulator fragment of an m64nN tile: N/2 fp32 registers per thread.
#define FK_WGMMA_D32_REGS "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define FK_WGMMA_D32_OPS(d) "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define FK_WGMMA_D64_REGS "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define FK_WGMMA_D64_OPS(d) "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
#define FK_WGMMA_D96_REGS "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95}"
#define FK_WGMMA_D96_OPS(d) "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])

// d (N/2 fp32 per thread) = A(64x16) * B(16xN) + (accumulate ? d : 0), PTX ISA
// "wgmma.mma_async". wgmma_ss reads A from shared memory (desc_a, K-major); wgmma_rs from
// registers: this warp's 16 rows as the m16n8k16 A fragment (pack_rows_to_a builds it from an
// accumulator, which is how P = softmax(S) feeds P V without shared memory). B is in shared memory,
// K-major (rows of K, like a weight W[n][k]) or, with kTransB, MN-major (rows of N, like V[key][d]
// in P V). N is 64 or 128 (wgmma_ss also 192); the 16-bit type is fp16 or bf16 (IsBf16).
// kNegateA (wgmma_ss) sets the instruction's imm-scale-a to -1: d = -A * B + d. Issue
// between wgmma_fence() and wgmma_commit_group().
template <int N, bool IsBf16, bool kTransB = false, bool kNegateA = false>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], std::uint64_t desc_a, std::uint64_t desc_b,
                                         bool accumulate) {
  static_assert(N == 64 || N == 128 || N == 192, "wgmma_ss: N must be 64, 128 or 192");
#if FK_WGMMA_AVAILABLE
  if constexpr (N == 64 && !IsBf16) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 " FK_WGMMA_D32_REGS ", %32, %33, p, %36, 1, 0, %35;\n}\n"
                 : FK_WGMMA_D32_OPS(d)
                 : "l"(desc_a), "l"(desc_b), "r"(int(accumulate)), "n"(int(kTransB)), "n"(kNegateA ? -1 : 1));
  } else if constexpr (N == 64 && IsBf16) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " FK_WGMMA_D32_REGS ", %32, %33, p, %36, 1, 0, %35;\n}\n"
                 : FK_WGMMA_D32_OPS(d)
                 : "l"(desc_a), "l"(desc_b), "r"(int(accumulate)), "n"(int(kTransB)), "n"(kNegateA ? -1 : 1));
  } else if constexpr (N == 128 && !IsBf16) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " FK_WGMMA_D64_REGS ", %64, %65, p, %68, 1, 0, %67;\n}\n"
                 : FK_WGMMA_D64_OPS(d)
                 : "l"(desc_a), "l"(desc_b), "r"(int(accumulate)), "n"(int(kTransB)), "n"(kNegateA ? -1 : 1));
  } else if constexpr (N == 128 && IsBf16) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " FK_WGMMA_D64_REGS ", %64, %65, p, %68, 1, 0, %67;\n}\n"
                 : FK_WGMMA_D64_OPS(d)
                 : "l"(desc_a), "l"(desc_b), "r"(int(accumulate)), "n"(int(kTransB)), "n"(kNegateA ? -1 : 1));
  } else if constexpr (N == 192 && !IsBf16) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %98, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n192k16.f32.f16.f16 " FK_WGMMA_D96_REGS ", %96, %97, p, %100, 1, 0, %99;\n}\n"
                 : FK_WGMMA_D96_OPS(d)
                 : "l"(desc_a), "l"(desc_b), "r"(int(accumulate)), "n"(int(kTransB)), "n"(kNegateA ? -1 : 1));
  } else if constexpr (N == 192 && IsBf16) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %98, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n192k16.f32.bf16.bf16 " FK_WGMMA_D96_REGS ", %96, %97, p, %100, 1, 0, %99;\n}\n"
                 : FK_WGMMA_D96_OPS(d)
                 : "l"(desc_a), "l"(desc_b), "r"(int(accumulate)), "n"(int(kTransB)), "n"(kNegateA ? -1 : 1));
  }
#else
  __trap();
#endif
}

template <int N, bool IsBf16, bool kTransB = false>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const std::uint32_t (&a)[4], std::uint64_t desc_b,
                                         bool accumulate) {
  static_assert(N == 64 || N == 128, "wgmma_rs: N must be 64 or 128");
#if FK_WGMMA_AVAILABLE
  if constexpr (N == 64 && !IsBf16) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 " FK_WGMMA_D32_REGS ", {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
                 : FK_WGMMA_D32_OPS(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(int(accumulate)), "n"(int(kTransB)));
  } else if constexpr (N == 64 && IsBf16) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " FK_WGMMA_D32_REGS ", {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
                 : FK_WGMMA_D32_OPS(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(int(accumulate)), "n"(int(kTransB)));
  } else if constexpr (N == 128 && !IsBf16) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " FK_WGMMA_D64_REGS ", {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"
                 : FK_WGMMA_D64_OPS(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(int(accumulate)), "n"(int(kTransB)));
  } else if constexpr (N == 128 && IsBf16) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " FK_WGMMA_D64_REGS ", {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"
                 : FK_WGMMA_D64_OPS(d)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(int(accumulate)), "n"(int(kTransB)));
  }
#else
  __trap();
#endif
}

}  // namespace flashkernel
