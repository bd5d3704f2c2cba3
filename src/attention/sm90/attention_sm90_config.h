// Tile configurations of the Hopper (sm_90a) attention kernel, host-callable so a CPU test can
// check their shared memory against sm_90's limit (the only architecture that runs them).
#pragma once

#include "common/smem_budget.h"

namespace flashkernel::attention::sm90 {

template <int kHeadDim_, int kBlockN_, int kStages_, bool kStageOutput_>
struct TileConfig {
  // Whether O goes out through shared memory and TMA stores (else 4-byte stores straight from the
  // accumulators). Measured on H100: +4-8% at d=128, -8 to -12% at d=64 (where a tile has half
  // the math to hide the staging's two block-wide barriers behind), so it is chosen per head_dim.
  static constexpr bool kStageOutput = kStageOutput_;
  static constexpr int kHeadDim = kHeadDim_;
  // Shared-memory rows are whole 64-element (128-byte) swizzle rows: head_dim 32 is padded to 64,
  // 80 and 96 to 128. TMA fills the padding columns with zeros (they are past the tensor's last
  // column), S = Q K^T stops at kHeadDim, and P V runs over the padded width (a wgmma N that is
  // a whole number of swizzle rows) into accumulators whose padding columns are never stored.
  static constexpr int kRowDim = kHeadDim <= 64 ? 64 : kHeadDim <= 128 ? 128 : 256;
  static constexpr int kBlockM = 128;  // two consumer warpgroups of 64 rows
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kStages = kStages_;
  static constexpr int kThreads = 384;
  static constexpr int kColBlocks = kRowDim / 64;  // 64-element (128-byte) swizzle column blocks
  static constexpr int kQElems = kBlockM * kRowDim;
  static constexpr int kKVElems = kBlockN * kRowDim;
  static constexpr int kTileBytes = (kQElems + 2 * kStages * kKVElems) * 2;
  static constexpr int kBarriers = 2 + 3 * kStages;
  static constexpr int kSmemBytes = kTileBytes + kBarriers * 8 + 1024;  // + alignment slack
  // Registers per thread after setmaxnreg. The three warpgroups can only trade the registers
  // the launch gave the block, 384 x 168 (the __launch_bounds__ cap) = 64512, so the counts must
  // add up to that exactly: 2 x 128 x 232 + 128 x 40 = 64512 (a sum above it never completes the
  // consumers' setmaxnreg.inc: a hang). The producer spills at 24.
  static constexpr int kConsumerRegs = 232;
  static constexpr int kProducerRegs = 40;
  static_assert(2 * 128 * kConsumerRegs + 128 * kProducerRegs == kThreads * 168, "registers of the block");
  static_assert(kHeadDim == 32 || kHeadDim == 64 || kHeadDim == 80 || kHeadDim == 96 || kHeadDim == 128 ||
                    kHeadDim == 256,
                "head_dim 32, 64, 80, 96, 128 or 256");
  static_assert(kBlockN == 64 || kBlockN == 128, "kBlockN is a wgmma N: 64 or 128");
};

// head_dim 128: 128 keys per tile, 3-stage K/V ring, O through shared memory (224 KiB + barriers).
using ConfigD128 = TileConfig<128, 128, 3, /*kStageOutput=*/true>;
// head_dim 64: 128 keys per tile, 3-stage K/V ring, O stored from registers (112 KiB + barriers).
using ConfigD64 = TileConfig<64, 128, 3, /*kStageOutput=*/false>;
// Varlen batches store O from registers at every head_dim (a TMA store cannot stop at a
// sequence's last row inside the packed tensor): head_dim 128's tiles without the staging.
using ConfigD128Varlen = TileConfig<128, 128, 3, /*kStageOutput=*/false>;
// head_dim 256: 64 keys per tile, 2-stage ring (Q 64 KiB + 2 x (K 32 KiB + V 32 KiB) = 192 KiB; a
// third stage would need 256 KiB), O from registers (its 128 fp32 per consumer thread leave room
// for S (32) and P (16) under the 232-register budget; 128-key tiles would not fit it).
using ConfigD256 = TileConfig<256, 64, 2, /*kStageOutput=*/false>;
// The padded head dims take the tiles of the width they are padded to: head_dim 32 those of 64
// (same shared memory, half the S = Q K^T k-steps), 80 and 96 those of 128 (5 and 6 of 8 k-steps;
// P V over 128 columns, of which 48 and 32 are zeros: 1.25x and 1.17x the useful tensor work).
using ConfigD32 = TileConfig<32, 128, 3, /*kStageOutput=*/false>;
using ConfigD80 = TileConfig<80, 128, 3, /*kStageOutput=*/true>;
using ConfigD80Varlen = TileConfig<80, 128, 3, /*kStageOutput=*/false>;
using ConfigD96 = TileConfig<96, 128, 3, /*kStageOutput=*/true>;
using ConfigD96Varlen = TileConfig<96, 128, 3, /*kStageOutput=*/false>;
static_assert(ConfigD128::kSmemBytes <= detail::arch_smem_optin_bytes(90), "d=128 tiles exceed sm_90's limit");
static_assert(ConfigD64::kSmemBytes <= detail::arch_smem_optin_bytes(90), "d=64 tiles exceed sm_90's limit");
static_assert(ConfigD256::kSmemBytes <= detail::arch_smem_optin_bytes(90), "d=256 tiles exceed sm_90's limit");

}  // namespace flashkernel::attention::sm90
