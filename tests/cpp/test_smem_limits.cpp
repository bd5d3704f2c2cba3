// Every kernel configuration that uses dynamic shared memory, checked on the CPU against the
// per-block opt-in limit of each architecture the library supports (sm_75, sm_80, sm_86, sm_89, sm_90),
// through the same host-side choice the launchers make. Kernels with only static shared memory
// (paged decode, reduce, rope, the GPT-2 helpers) are held under 48 KiB by the compiler itself.
#include <gtest/gtest.h>

#include <string>

#include "attention/sm80/attention_sm80_config.h"
#include "attention/sm90/attention_sm90_config.h"
#include "common/smem_budget.h"
#include "gelu_linear/gelu_linear_config.h"
#include "layernorm/add_layernorm_config.h"

namespace flashkernel {
namespace {

using detail::arch_smem_optin_bytes;
using detail::kArchSmemLimits;

TEST(SmemLimits, ArchitectureTable) {
  EXPECT_EQ(arch_smem_optin_bytes(75), 64 * 1024);
  EXPECT_EQ(arch_smem_optin_bytes(80), 163 * 1024);
  EXPECT_EQ(arch_smem_optin_bytes(86), 99 * 1024);
  EXPECT_EQ(arch_smem_optin_bytes(89), 99 * 1024);
  EXPECT_EQ(arch_smem_optin_bytes(90), 227 * 1024);
  EXPECT_EQ(detail::kMinSmemOptinBytes, 99 * 1024);
}

// The small-M gelu_linear tile (MT, NT) on every architecture: what its launch would ask for fits.
template <int MT, int NT>
void check_small_m_fits_everywhere() {
  for (const auto& arch : kArchSmemLimits) {
    // 0: no ring of this tile fits (sm_75 and M > 32), and gelu_linear takes the tiled kernel.
    const int bytes = gelu_linear_detail::small_m_smem_bytes<MT, NT>(arch.optin_bytes);
    EXPECT_LE(bytes, arch.optin_bytes) << "small_m MT=" << MT << " NT=" << NT << " on sm_" << arch.sm;
    EXPECT_TRUE(bytes > 0 || (arch.sm == 75 && MT == 4)) << "small_m MT=" << MT << " NT=" << NT << " on sm_" << arch.sm;
  }
}

TEST(SmemLimits, GeluLinearSmallMFitsEveryArchitecture) {
  check_small_m_fits_everywhere<1, 1>();
  check_small_m_fits_everywhere<2, 1>();
  check_small_m_fits_everywhere<4, 1>();
  check_small_m_fits_everywhere<1, 4>();
  check_small_m_fits_everywhere<2, 4>();
  check_small_m_fits_everywhere<4, 4>();
}

// Why the compact ring exists: the deep rings of the M = 17-32 and 33-64 tiles with one n tile per
// CTA (the GPT-2 prefill shapes) need 100 and 108 KiB, above the 99 KiB of sm_86/sm_89; those two
// tiles get a shallower ring there, and only there.
TEST(SmemLimits, GeluLinearSmallMCompactRingOnlyWhereNeeded) {
  using gelu_linear_detail::SmallMConfig;
  using gelu_linear_detail::small_m_uses_deep_ring;
  EXPECT_GT((SmallMConfig<2, 1>::SMEM_BYTES), arch_smem_optin_bytes(86));
  EXPECT_GT((SmallMConfig<4, 1>::SMEM_BYTES), arch_smem_optin_bytes(89));
  EXPECT_FALSE((small_m_uses_deep_ring<2, 1>(arch_smem_optin_bytes(86))));
  EXPECT_FALSE((small_m_uses_deep_ring<4, 1>(arch_smem_optin_bytes(89))));
  EXPECT_TRUE((small_m_uses_deep_ring<1, 1>(arch_smem_optin_bytes(86))));
  EXPECT_TRUE((small_m_uses_deep_ring<1, 4>(arch_smem_optin_bytes(89))));
  EXPECT_TRUE((small_m_uses_deep_ring<2, 4>(arch_smem_optin_bytes(89))));
  EXPECT_TRUE((small_m_uses_deep_ring<4, 4>(arch_smem_optin_bytes(86))));
  EXPECT_EQ((SmallMConfig<2, 1, gelu_linear_detail::kSmallMCompactBudget>::STAGES), 4);
  EXPECT_EQ((SmallMConfig<4, 1, gelu_linear_detail::kSmallMCompactBudget>::STAGES), 2);
}

// On sm_80 and sm_90 every tile keeps the ring it was tuned with (H100/H200 measurements hold).
TEST(SmemLimits, GeluLinearSmallMUnchangedOnSm80AndSm90) {
  using gelu_linear_detail::SmallMConfig;
  using gelu_linear_detail::small_m_smem_bytes;
  for (int sm : {80, 90}) {
    const int limit = arch_smem_optin_bytes(sm);
    SCOPED_TRACE("sm_" + std::to_string(sm));
    EXPECT_EQ((small_m_smem_bytes<1, 1>(limit)), 6 * 24 * 512);
    EXPECT_EQ((small_m_smem_bytes<1, 4>(limit)), 4 * 48 * 512);
    EXPECT_EQ((small_m_smem_bytes<2, 1>(limit)), 5 * 40 * 512);
    EXPECT_EQ((small_m_smem_bytes<2, 4>(limit)), 3 * 64 * 512);
    EXPECT_EQ((small_m_smem_bytes<4, 1>(limit)), 3 * 72 * 512);
    EXPECT_EQ((small_m_smem_bytes<4, 4>(limit)), 2 * 96 * 512);
  }
  EXPECT_EQ((SmallMConfig<1, 1>::STAGES), 6);
  EXPECT_EQ((SmallMConfig<2, 1>::STAGES), 5);
  EXPECT_EQ((SmallMConfig<4, 1>::STAGES), 3);
}

TEST(SmemLimits, GeluLinearTiledFitsEveryArchitecture) {
  for (const auto& arch : kArchSmemLimits) {
    if (gelu_linear_detail::tiled_large_fits(arch.optin_bytes)) {
      EXPECT_LE(gelu_linear_detail::TiledLarge::SMEM_BYTES, arch.optin_bytes) << "sm_" << arch.sm;
    }
    EXPECT_LE(gelu_linear_detail::TiledSmall::SMEM_BYTES, arch.optin_bytes) << "sm_" << arch.sm;
  }
  EXPECT_EQ(gelu_linear_detail::TiledLarge::SMEM_BYTES, 96 * 1024);
  EXPECT_EQ(gelu_linear_detail::TiledSmall::SMEM_BYTES, 64 * 1024);
}

// The warp-specialized kernels run only on sm_90 (their launcher also declines a device with less).
TEST(SmemLimits, GeluLinearHopperFitsSm90) {
  const int limit = arch_smem_optin_bytes(90);
  EXPECT_LE(gelu_linear_detail::WsWide::kSmemBytes, limit);
  EXPECT_LE(gelu_linear_detail::WsMid::kSmemBytes, limit);
  EXPECT_LE(gelu_linear_detail::WsNarrow::kSmemBytes, limit);
  EXPECT_LE(gelu_linear_detail::WsPingPong::kSmemBytes, limit);
}

// The configuration the launcher picks (main, else compact) fits every architecture.
template <typename Main, typename Compact>
int attention_sm80_smem(int limit) {
  return attention::sm80::uses_main_config<Main>(limit) ? Main::kSmemBytes : Compact::kSmemBytes;
}

TEST(SmemLimits, AttentionSm80FitsEveryArchitecture) {
  using namespace attention::sm80;
  for (const auto& arch : kArchSmemLimits) {
    EXPECT_LE((attention_sm80_smem<ConfigD64, ConfigD64Compact>(arch.optin_bytes)), arch.optin_bytes) << "sm_" << arch.sm;
    EXPECT_LE((attention_sm80_smem<ConfigD128, ConfigD128Compact>(arch.optin_bytes)), arch.optin_bytes)
        << "sm_" << arch.sm;
  }
  EXPECT_EQ(attention::sm80::ConfigD64::kSmemBytes, 80 * 1024);
  EXPECT_EQ(attention::sm80::ConfigD128::kSmemBytes, 96 * 1024);
}

TEST(SmemLimits, AttentionSm90FitsSm90) {
  const int limit = arch_smem_optin_bytes(90);
  EXPECT_LE(attention::sm90::ConfigD64::kSmemBytes, limit);
  EXPECT_LE(attention::sm90::ConfigD128::kSmemBytes, limit);
  EXPECT_EQ(attention::sm90::ConfigD128::kStages, 3);
  EXPECT_EQ(attention::sm90::ConfigD64::kStages, 3);
}

// The row kernel's fp32 row copy never needs an opt-in.
TEST(SmemLimits, LayerNormWithinTheDefaultLimit) {
  EXPECT_LE(layernorm_detail::row_kernel_dynamic_smem_bytes(layernorm_detail::kMaxCols) +
                layernorm_detail::kStaticSmemBytes,
            detail::kDefaultSmemBytes);
}

}  // namespace
}  // namespace flashkernel
