// The per-architecture dispatch: which configuration each tensor-core op picks for sm_75's 64 KiB
// (CPU, through the launchers' own decisions), and, on a GPU, the dtypes the dispatch architecture
// accepts. Run natively these check the GPU's own path; scripts/gpu_check.sh also runs them with
// FLASHKERNEL_FORCE_ARCH=75 on a compute_75 PTX build (the T4 path, JIT-compiled on Hopper) and
// with FLASHKERNEL_FORCE_ARCH=86 (Ada's 99 KiB), where the bf16 refusal below is what they assert.
#include <gtest/gtest.h>

#include <string>

#include "attention/sm80/attention_sm80_config.h"
#include "common/launch.h"
#include "common/smem_budget.h"
#include "flashkernel/attention.h"
#include "flashkernel/gelu_linear.h"
#include "flashkernel/models/gpt2.h"
#include "gelu_linear/gelu_linear_config.h"
#include "test_utils.h"

namespace flashkernel {
namespace {

using detail::arch_smem_optin_bytes;

TEST(ArchDispatch, Sm75ConfigurationsFit64KiB) {
  const int limit = arch_smem_optin_bytes(75);
  EXPECT_EQ(limit, 64 * 1024);
  EXPECT_FALSE(attention::sm80::uses_main_config<attention::sm80::ConfigD64>(limit));
  EXPECT_FALSE(attention::sm80::uses_main_config<attention::sm80::ConfigD128>(limit));
  EXPECT_LE(attention::sm80::ConfigD64Compact::kSmemBytes, limit);
  EXPECT_LE(attention::sm80::ConfigD128Compact::kSmemBytes, limit);
  EXPECT_FALSE(gelu_linear_detail::tiled_large_fits(limit));
  EXPECT_LE(gelu_linear_detail::TiledSmall::SMEM_BYTES, limit);
  // M <= 32 streams weights with the 64 KiB rings; M = 33-64 fits no ring and takes TiledSmall.
  using gelu_linear_detail::small_m_smem_bytes;
  EXPECT_EQ((small_m_smem_bytes<1, 1>(limit)), 5 * 24 * 512);
  EXPECT_EQ((small_m_smem_bytes<1, 4>(limit)), 2 * 48 * 512);
  EXPECT_EQ((small_m_smem_bytes<2, 1>(limit)), 3 * 40 * 512);
  EXPECT_EQ((small_m_smem_bytes<2, 4>(limit)), 2 * 64 * 512);
  EXPECT_EQ((small_m_smem_bytes<4, 1>(limit)), 0);
  EXPECT_EQ((small_m_smem_bytes<4, 4>(limit)), 0);
}

// From sm_80 on every op keeps the configuration it was tuned with.
TEST(ArchDispatch, MainConfigurationsFromSm80On) {
  for (int sm : {80, 86, 89, 90}) {
    const int limit = arch_smem_optin_bytes(sm);
    SCOPED_TRACE("sm_" + std::to_string(sm));
    EXPECT_TRUE(attention::sm80::uses_main_config<attention::sm80::ConfigD64>(limit));
    EXPECT_TRUE(attention::sm80::uses_main_config<attention::sm80::ConfigD128>(limit));
    EXPECT_TRUE(gelu_linear_detail::tiled_large_fits(limit));
    EXPECT_GT((gelu_linear_detail::small_m_smem_bytes<4, 1>(limit)), 0);
  }
}

// The error a T4 user gets for bf16 on a tensor-core op: an ArgumentError naming dtype.
template <typename Call>
void expect_dtype_refused(Call&& call, const char* op) {
  try {
    call();
    ADD_FAILURE() << op << ": bfloat16 ran below compute capability 8.0";
  } catch (const ArgumentError& e) {
    EXPECT_EQ(e.argument(), "dtype") << e.what();
    EXPECT_NE(std::string(e.what()).find("float16"), std::string::npos) << e.what();
  }
}

TEST(ArchDispatch, Bf16OnTensorCoreOpsFollowsTheDispatchArchitecture) {
  FK_SKIP_WITHOUT_GPU();
  const bool bf16_tensor_cores = detail::current_compute_capability() >= 80;
  constexpr std::int64_t n = 64, d = 64;
  testing::DeviceBuffer<__nv_bfloat16> q(n * d), k(n * d), v(n * d), o(n * d);
  FK_CUDA_CHECK(cudaMemset(q.get(), 0, n * d * 2));
  FK_CUDA_CHECK(cudaMemset(k.get(), 0, n * d * 2));
  FK_CUDA_CHECK(cudaMemset(v.get(), 0, n * d * 2));
  AttentionShape s;
  s.batch = 1, s.heads_q = 1, s.heads_kv = 1, s.seq_q = n, s.seq_k = n, s.head_dim = d;
  for (auto* st : {s.q_stride, s.k_stride, s.v_stride, s.o_stride}) st[0] = n * d, st[1] = n * d, st[2] = d;
  auto attention = [&] { flash_attention(q.get(), k.get(), v.get(), o.get(), nullptr, s, DType::kBFloat16, false, 0.125f); };
  // x [n, d] times weight [d, d]: M = 64.
  auto gelu = [&] { gelu_linear(q.get(), k.get(), nullptr, o.get(), n, d, d, DType::kBFloat16); };
  auto engine = [&] {
    models::GPT2Config c;
    c.vocab_size = 64, c.n_positions = 64, c.n_embd = 64, c.n_layer = 1, c.n_head = 1;
    models::GPT2Engine e(c, DType::kBFloat16);
  };
  if (bf16_tensor_cores) {
    EXPECT_NO_THROW(attention());
    EXPECT_NO_THROW(gelu());
    FK_CUDA_CHECK(cudaDeviceSynchronize());
  } else {
    expect_dtype_refused(attention, "flash_attention");
    expect_dtype_refused(gelu, "gelu_linear");
    expect_dtype_refused(engine, "GPT2Engine");
  }
}

// FLASHKERNEL_FORCE_ARCH lowers what dispatch sees and caps shared memory at that architecture's
// limit; unset, the build's newest architecture this GPU runs.
TEST(ArchDispatch, ForcedArchitectureIsWhatDispatchSees) {
  FK_SKIP_WITHOUT_GPU();
  const DeviceInfo info = device_info();
  const int native = 10 * info.compute_major + info.compute_minor;
  const int forced = detail::forced_arch();
  EXPECT_LE(detail::current_compute_capability(), native);
  EXPECT_LE(detail::current_smem_optin_bytes(), int(info.shared_memory_per_block_optin));
  if (forced != 0) {
    EXPECT_EQ(detail::current_compute_capability(), forced);
    EXPECT_EQ(detail::current_smem_optin_bytes(), arch_smem_optin_bytes(forced));
  }
}

}  // namespace
}  // namespace flashkernel
