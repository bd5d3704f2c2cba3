// Warp-level tensor-core primitives of sm_80 (also valid on sm_86/89/90; fp16 also on sm_75, where
// mma_m16n8k16 is two m16n8k8): `mma.sync` m16n8k16 with fp32 accumulators, `ldmatrix` shared->register fragment loads, and the fragment layouts they
// imply. Kernels build GEMM tiles out of these; nothing here knows about a particular op.
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, t = lane % 4), 16-bit inputs packed 2 per u32:
//   A (16x16, row-major)  a[0]: (row g,   cols 2t..2t+1)   a[1]: (row g+8, cols 2t..2t+1)
//                         a[2]: (row g,   cols 2t+8..+9)   a[3]: (row g+8, cols 2t+8..+9)
//   B (16x8, "col": k-contiguous per column n)
//                         b[0]: (k 2t..2t+1,  col g)       b[1]: (k 2t+8..+9, col g)
//   C/D (16x8 fp32)       c[0..1]: (row g, cols 2t, 2t+1)  c[2..3]: (row g+8, cols 2t, 2t+1)
// A C fragment pair covering cols [16j, 16j+16) has exactly the A layout of k-step j once packed to
// 16 bits (pack_rows_to_a), which is how a GEMM's output feeds the next GEMM without shared memory.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "common/cp_async.cuh"

namespace flashkernel {

// D = A * B + C on one 16x8x16 tile. T is __half or __nv_bfloat16.
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>, "mma_m16n8k16: 16-bit inputs only");
#if !FK_SM80_AVAILABLE
  // sm_75 has m16n8k8 for fp16 only. By the layouts above, k-half 0 of this tile is A {a0, a1}
  // with B b0 and k-half 1 is A {a2, a3} with b1, each in m16n8k8's own A/B/C layouts (PTX ISA,
  // "Matrix Fragments for mma.m16n8k8"), so two of them accumulate the same D. bf16 needs sm_80:
  // the host refuses it below 8.0 (detail::require_tensor_core_dtype), so it stays a trap.
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(b[0]));
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[2]), "r"(a[3]), "r"(b[1]));
  } else {
    __trap();
  }
#else
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#endif
}

// Zeroes a tile of mma accumulators (fully unrolled: it stays in registers).
template <int M, int N, int E>
__device__ __forceinline__ void zero_accumulators(float (&acc)[M][N][E]) {
#pragma unroll
  for (int i = 0; i < M; ++i)
#pragma unroll
    for (int j = 0; j < N; ++j)
#pragma unroll
      for (int e = 0; e < E; ++e) acc[i][j][e] = 0.f;
}

// Four 8x8 16-bit matrices from shared memory; lanes 8i..8i+7 give the row addresses of matrix i,
// and every lane receives (row lane/4, cols 2*(lane%4)..+1) of matrix i in r[i].
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t smem_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr));
}
__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* smem_row) {
  ldmatrix_x4(r, smem_address(smem_row));
}

// Same, transposed: lane receives (rows 2*(lane%4)..+1, col lane/4) of matrix i. Loads a B operand
// stored n-contiguous (row-major [k][n]) in the "col" layout mma expects.
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], std::uint32_t smem_addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* smem_row) {
  ldmatrix_x4_trans(r, smem_address(smem_row));
}

// Two fp32 values -> one u32 holding two T (lo in the low half), round to nearest.
template <typename T>
__device__ __forceinline__ std::uint32_t pack_float2(float lo, float hi) {
  if constexpr (std::is_same_v<T, __half>) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<std::uint32_t*>(&h);
  } else {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<std::uint32_t*>(&h);
  }
}

// Two C fragments (n-blocks 2j and 2j+1 of one 16-row tile) -> the A fragment of k-step j.
template <typename T>
__device__ __forceinline__ void pack_rows_to_a(std::uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = pack_float2<T>(c0[0], c0[1]);
  a[1] = pack_float2<T>(c0[2], c0[3]);
  a[2] = pack_float2<T>(c1[0], c1[1]);
  a[3] = pack_float2<T>(c1[2], c1[3]);
}

// Shared-memory tiles of 16-bit rows stored in 16-byte chunks, chunk c of row r kept at chunk
// c ^ (r % 8): the 8 rows one ldmatrix phase reads then hit 8 different bank groups instead of
// one (an 8-way conflict unswizzled). Needs rows of at least 8 chunks (64 elements).
template <int kRowElems>
struct SwizzledTile {
  static_assert(kRowElems % 64 == 0, "SwizzledTile: rows must hold a multiple of 64 16-bit elements");
  static constexpr int kChunks = kRowElems / 8;
  // Element offset of (row, col); col must be a multiple of 8 (one 16-byte chunk).
  __device__ __forceinline__ static int offset(int row, int col) {
    return row * kRowElems + (((col >> 3) ^ (row & 7)) << 3);
  }
};

// The in-row byte offsets of one lane's ldmatrix reads along a SwizzledTile row, precomputed once
// per kernel. A lane reading rows r (r % 8 fixed: tile rows start at multiples of 8) at chunk
// 2 * kk + c of k-step kk (c = 0 or 1, fixed per lane) finds it at byte 16 * ((2kk + c) ^ (r % 8)).
// Only bits 0-2 of the chunk are swizzled, so with kk = 4 * hi + lo that is
//   16 * ((2 lo + c) ^ (r % 8)) + 128 * hi,
// four per-lane values plus a constant the compiler folds into the ldmatrix's immediate offset.
// Computing the XOR per read instead cost ~6 integer instructions per ldmatrix: next to the
// mma.sync they feed, that made an attention tile issue-bound (DEVELOPMENT_LOG.md).
struct SwizzledChunkOffsets {
  std::uint32_t lo[4];
  __device__ __forceinline__ SwizzledChunkOffsets(int row_mod8, int c) {
#pragma unroll
    for (int j = 0; j < 4; ++j) lo[j] = std::uint32_t(((2 * j + c) ^ row_mod8) * 16);
  }
  // Byte offset of k-step kk (chunks 2kk + c) within the row.
  __device__ __forceinline__ std::uint32_t operator()(int kk) const { return lo[kk % 4] + 128u * (kk / 4); }
};

}  // namespace flashkernel
