// The persistent decode step (src/models/gpt2/persistent_decode.cu): greedy tokens are the
// argmax of the teacher-forced prefill logits (an independent code path) for every batch size it
// serves and across several attention splits; it agrees with the graph path; batch > 8 falls back;
// it completes while other work holds the GPU; and a grid barrier that a block never reaches ends
// with an error naming the barrier, not a hang. Also the graph path with dependent launches
// (FLASHKERNEL_GPT2_DECODE=pdl) against the plain graph path, and the fused layers (=fused).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "common/cuda_check.h"
#include "flashkernel/models/gpt2.h"
#include "flashkernel/status.h"
#include "test_utils.h"

namespace flashkernel::models {
namespace {

using Prompts = std::vector<std::vector<std::int32_t>>;
using testing::DeviceBuffer;

constexpr std::int64_t kVocab = 1000;

GPT2Config config() {
  GPT2Config c;
  c.vocab_size = kVocab;
  c.n_positions = 320;
  c.n_embd = 256;
  c.n_layer = 3;
  c.n_head = 4;
  return c;
}

using testing::ScopedEnv;

Prompts random_prompts(const std::vector<int>& lens, std::uint64_t seed) {
  return testing::random_token_rows(lens, kVocab, seed);
}

// Every generated token is the argmax of the teacher-forced logits at its position, unless the
// top-1/top-2 margin there is below `tol` (16-bit rounding may flip it; the sequence then
// legitimately differs, so checking stops at that step).
void expect_greedy_matches_prefill(GPT2Engine& e, const Prompts& prompts, const Prompts& out, double tol) {
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    std::vector<std::int32_t> full = prompts[b];
    full.insert(full.end(), out[b].begin(), out[b].end() - 1);
    DeviceBuffer<float> logits(static_cast<std::int64_t>(full.size()) * kVocab);
    logits.poison();
    e.forward_logits({full}, logits.get());
    const auto host = logits.download();
    for (std::size_t i = 0; i < out[b].size(); ++i) {
      const float* row = host.data() + (prompts[b].size() - 1 + i) * kVocab;
      std::vector<float> sorted(row, row + kVocab);
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
      ASSERT_FALSE(std::isnan(sorted[0]));
      if (row[out[b][i]] == sorted[0]) continue;
      ASSERT_LT(sorted[0] - sorted[1], tol) << "sequence " << b << " step " << i << ": token " << out[b][i]
                                            << " is not the argmax; margin " << sorted[0] - sorted[1];
      break;
    }
  }
}

bool cooperative_launch_supported() {
  int device = 0, coop = 0;
  FK_CUDA_CHECK(cudaGetDevice(&device));
  FK_CUDA_CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device));
  return coop != 0;
}

TEST(ModelsGpt2Persistent, GreedyMatchesPrefillForEveryBatchSize) {
  FK_SKIP_WITHOUT_GPU();
  ScopedEnv mode("FLASHKERNEL_GPT2_DECODE", "persistent");
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    const auto seed = testing::fresh_seed();
    GPT2Engine e(config(), dtype);
    e.init_random(seed);
    // Batch 1 (one split per head is far from filling the GPU: several splits), 3, 8 (the largest
    // the kernel serves); odd prompt lengths; 200 + 40 tokens crosses several 64-token splits.
    for (const auto& lens : std::vector<std::vector<int>>{{200}, {1, 7, 127}, {1, 2, 3, 5, 8, 13, 21, 34}}) {
      SCOPED_TRACE("dtype=" + std::string(dtype_name(dtype)) + " seed=" + std::to_string(seed) +
                   " batch=" + std::to_string(lens.size()));
      const auto prompts = random_prompts(lens, seed + lens.size());
      GenerationOptions o;
      o.max_new_tokens = 40;
      GenerationStats st;
      const auto out = e.generate(prompts, o, &st);
      EXPECT_EQ(st.persistent_decode, cooperative_launch_supported());
      expect_greedy_matches_prefill(e, prompts, out, dtype == DType::kFloat16 ? 0.05 : 0.3);
    }
  }
}

TEST(ModelsGpt2Persistent, AgreesWithTheGraphPathAndBatchNineFallsBack) {
  FK_SKIP_WITHOUT_GPU();
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  const auto prompts = random_prompts({3, 60, 17, 1}, seed);
  GenerationOptions o;
  o.max_new_tokens = 32;
  std::vector<std::vector<std::int32_t>> graph_out, persistent_out;
  {
    ScopedEnv mode("FLASHKERNEL_GPT2_DECODE", "graph");
    GPT2Engine e(config(), DType::kFloat16);
    e.init_random(seed);
    GenerationStats st;
    graph_out = e.generate(prompts, o, &st);
    EXPECT_FALSE(st.persistent_decode);
  }
  ScopedEnv mode("FLASHKERNEL_GPT2_DECODE", "persistent");
  GPT2Engine e(config(), DType::kFloat16);
  e.init_random(seed);
  persistent_out = e.generate(prompts, o);
  // Both are greedy decodes of the same model: equal up to the first near-tie, which the
  // prefill check above covers; here at least the first tokens must agree.
  for (std::size_t b = 0; b < prompts.size(); ++b) EXPECT_EQ(persistent_out[b][0], graph_out[b][0]) << b;
  expect_greedy_matches_prefill(e, prompts, persistent_out, 0.05);
  // Batch 9: beyond the persistent kernel's 8 rows, the graph path runs it.
  GenerationStats st9;
  const auto nine = random_prompts({4, 4, 4, 4, 4, 4, 4, 4, 4}, seed);
  const auto out9 = e.generate(nine, o, &st9);
  EXPECT_FALSE(st9.persistent_decode);
  expect_greedy_matches_prefill(e, nine, out9, 0.05);
}

// Spins until *stop is set (or a 2 s safety limit), holding one block per SM.
__global__ void occupy_kernel(const volatile int* stop) {
  const long long start = clock64();
  while (*stop == 0 && clock64() - start < 4'000'000'000LL) {
  }
}

TEST(ModelsGpt2Persistent, CompletesWhileOtherWorkHoldsTheGpu) {
  FK_SKIP_WITHOUT_GPU();
  ScopedEnv mode("FLASHKERNEL_GPT2_DECODE", "persistent");
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  GPT2Engine e(config(), DType::kFloat16);
  e.init_random(seed);
  const auto prompts = random_prompts({5, 9}, seed);
  GenerationOptions o;
  o.max_new_tokens = 24;
  const auto alone = e.generate(prompts, o);

  int device = 0, sms = 0;
  FK_CUDA_CHECK(cudaGetDevice(&device));
  FK_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  DeviceBuffer<int> stop(1);
  FK_CUDA_CHECK(cudaMemset(stop.get(), 0, sizeof(int)));
  cudaStream_t other = nullptr;
  FK_CUDA_CHECK(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking));
  occupy_kernel<<<sms, 1024, 0, other>>>(stop.get());
  FK_CUDA_CHECK(cudaGetLastError());
  // The engine's blocks wait for SMs the spinning kernel holds; generate must still finish
  // (after the spinner's time limit at worst) with the same tokens.
  const auto busy = e.generate(prompts, o);
  const int one = 1;
  FK_CUDA_CHECK(cudaMemcpyAsync(stop.get(), &one, sizeof(int), cudaMemcpyHostToDevice, other));
  FK_CUDA_CHECK(cudaStreamSynchronize(other));
  FK_CUDA_CHECK(cudaStreamDestroy(other));
  EXPECT_EQ(busy, alone);
}

// A persistent step that cannot finish, because a test hook (`hook` = `value`) holds back one of
// its dependencies, ends generate with a CudaError whose message contains `names`, after one
// 50 ms watchdog period rather than a hang; the device and a new engine are fine afterwards.
void expect_stuck_step_is_an_error(const char* hook, const char* value, const std::vector<int>& lens, int new_tokens,
                                   const std::string& names) {
  const auto seed = testing::fresh_seed();
  const auto prompts = random_prompts(lens, seed);
  GenerationOptions o;
  o.max_new_tokens = new_tokens;
  {
    ScopedEnv mode("FLASHKERNEL_GPT2_DECODE", "persistent");
    ScopedEnv drop(hook, value);
    ScopedEnv timeout("FLASHKERNEL_GPT2_PERSISTENT_TIMEOUT_MS", "50");
    GPT2Engine e(config(), DType::kFloat16);
    e.init_random(seed);
    const auto t0 = std::chrono::steady_clock::now();
    try {
      e.generate(prompts, o);
      ADD_FAILURE() << "generate returned although " << hook << "=" << value << " held the step back";
    } catch (const CudaError& err) {
      EXPECT_NE(std::string(err.what()).find(names), std::string::npos) << err.what();
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(s, 30.0);  // one 50 ms timeout; the later steps stop at once
  }
  ScopedEnv mode("FLASHKERNEL_GPT2_DECODE", "persistent");
  GPT2Engine e(config(), DType::kFloat16);
  e.init_random(seed);
  const auto out = e.generate(prompts, o);
  expect_greedy_matches_prefill(e, prompts, out, 0.05);
}

// Block 0 never arrives at grid barrier 7 (layer 1, after S3).
TEST(ModelsGpt2Persistent, AMissingArrivalIsAnErrorNotAHang) {
  FK_SKIP_WITHOUT_GPU();
  if (!cooperative_launch_supported()) GTEST_SKIP() << "no cooperative launch: the graph path runs";
  expect_stuck_step_is_an_error("FLASHKERNEL_GPT2_PERSISTENT_DROP_BARRIER", "7", {6, 2}, 12,
                                "grid barrier 7 (layer 1, after stage S3)");
}

// The weight ring's waits are bounded too: block 0 announces the bytes of GEMV 6 (layer 1, the FC
// weights) on its mbarrier but never copies them; the error names the GEMV, not the barrier the
// other blocks then time out at.
TEST(ModelsGpt2Persistent, AMissingWeightCopyIsAnErrorNotAHang) {
  FK_SKIP_WITHOUT_GPU();
  if (!cooperative_launch_supported()) GTEST_SKIP() << "no cooperative launch: the graph path runs";
  expect_stuck_step_is_an_error("FLASHKERNEL_GPT2_PERSISTENT_DROP_COPY", "6", {5, 3}, 8,
                                "weight copy of GEMV 6 (layer 1)");
}

TEST(ModelsGpt2Persistent, TraceHasEveryBarrierInOrder) {
  FK_SKIP_WITHOUT_GPU();
  if (!cooperative_launch_supported()) GTEST_SKIP() << "no cooperative launch: the graph path runs";
  const std::string path = ::testing::TempDir() + "/fk_persistent_trace.csv";
  std::remove(path.c_str());
  ScopedEnv mode("FLASHKERNEL_GPT2_DECODE", "persistent");
  ScopedEnv trace("FLASHKERNEL_GPT2_PERSISTENT_TRACE", path.c_str());
  GPT2Engine e(config(), DType::kFloat16);
  e.init_random(testing::fresh_seed());
  GenerationOptions o;
  o.max_new_tokens = 4;
  e.generate(random_prompts({3}, 1), o);
  std::ifstream f(path);
  ASSERT_TRUE(f.good()) << path;
  std::string line;
  std::vector<std::string> lines;
  while (std::getline(f, line)) lines.push_back(line);
  // header, the measured step, 2 stamps per barrier (5 per layer), ln_f.
  ASSERT_EQ(lines.size(), 2 + 10 * std::size_t(config().n_layer) + 1);
  long long previous = 0;
  for (std::size_t i = 2; i < lines.size(); ++i) {
    const long long ns = std::stoll(lines[i].substr(lines[i].rfind(',') + 1));
    EXPECT_GE(ns, previous) << lines[i];
    previous = ns;
  }
  EXPECT_EQ(lines.back().rfind("ln_f_done", 0), 0u) << lines.back();
  std::remove(path.c_str());
}

// Prompt lengths of the decode-path tests: batch 1 across several attention splits (200
// tokens), 8 (the decode GEMV's and the fused kernels' largest) and 9 (cuBLAS projections).
const std::vector<std::vector<int>> kBatchLengths = {{200}, {1, 2, 3, 5, 8, 13, 21, 34}, {4, 9, 1, 4, 4, 70, 4, 4, 4}};

std::string batch_trace(DType dtype, std::uint64_t seed, const std::vector<int>& lens) {
  return "dtype=" + std::string(dtype_name(dtype)) + " seed=" + std::to_string(seed) +
         " batch=" + std::to_string(lens.size());
}

// The tokens of a fresh engine (random weights from `seed`) built with FLASHKERNEL_GPT2_DECODE =
// mode (nullptr: unset, the default).
Prompts generate_on_path(const char* mode, DType dtype, std::uint64_t seed, const Prompts& prompts,
                         const GenerationOptions& o, GenerationStats* stats = nullptr) {
  ScopedEnv env("FLASHKERNEL_GPT2_DECODE", mode);
  GPT2Engine e(config(), dtype);
  e.init_random(seed);
  return e.generate(prompts, o, stats);
}

// FLASHKERNEL_GPT2_DECODE=pdl: the graph path's kernels as programmatic dependents. Same kernels,
// same arithmetic, only the launch order relaxed: every token must equal the plain graph path's
// (a kernel that read its input before the previous one finished would change them), at batch 1,
// 8 (the decode GEMV's largest) and 9 (cuBLAS projections between dependent launches), fp16 and
// bf16, across several attention splits (a 200-token prompt).
TEST(ModelsGpt2EngineDependentLaunch, TokensEqualTheGraphPathForEveryBatchSize) {
  FK_SKIP_WITHOUT_GPU();
  const auto seed = testing::fresh_seed();
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    for (const auto& lens : kBatchLengths) {
      SCOPED_TRACE(batch_trace(dtype, seed, lens));
      const auto prompts = random_prompts(lens, seed + lens.size());
      GenerationOptions o;
      o.max_new_tokens = 40;
      const Prompts graph = generate_on_path("graph", dtype, seed, prompts, o);
      const Prompts dependent = generate_on_path("pdl", dtype, seed, prompts, o);
      ASSERT_EQ(dependent.size(), graph.size());
      for (std::size_t b = 0; b < graph.size(); ++b) EXPECT_EQ(dependent[b], graph[b]) << "sequence " << b;
    }
  }
}

// FLASHKERNEL_GPT2_DECODE=fused: 5 kernels per layer (LayerNorms, residual adds, GeLU and the KV
// append folded into the projections). Its LayerNorm sums in another order than add_layernorm,
// so tokens may part from the graph path's after a near-tie: the greedy tokens must be the argmax
// of the teacher-forced prefill logits (an independent path) up to the margin rule, at batch 1, 8
// (the fused kernels' largest) and 9 (the graph path's layers: the fallback).
TEST(ModelsGpt2EngineDependentLaunch, FusedLayersMatchPrefillForEveryBatchSize) {
  FK_SKIP_WITHOUT_GPU();
  ScopedEnv mode("FLASHKERNEL_GPT2_DECODE", "fused");
  const auto seed = testing::fresh_seed();
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    GPT2Engine e(config(), dtype);
    e.init_random(seed);
    for (const auto& lens : kBatchLengths) {
      SCOPED_TRACE(batch_trace(dtype, seed, lens));
      const auto prompts = random_prompts(lens, seed + lens.size());
      GenerationOptions o;
      o.max_new_tokens = 40;
      const auto out = e.generate(prompts, o);
      expect_greedy_matches_prefill(e, prompts, out, dtype == DType::kFloat16 ? 0.05 : 0.3);
    }
  }
}

// The default decode path (FLASHKERNEL_GPT2_DECODE unset or "auto") picks per batch: the fused
// layers up to kAutoFusedMaxBatch rows on a 9.x GPU, else the dependent-launch chain. Same kernels, same launch
// rules, so every token must equal the explicitly selected path's, and the stats must say which
// ran.
TEST(ModelsGpt2EngineDependentLaunch, TheDefaultPathIsFusedAtSmallBatchesElseDependentLaunches) {
  FK_SKIP_WITHOUT_GPU();
  const auto seed = testing::fresh_seed();
  int device = 0, major = 0;
  FK_CUDA_CHECK(cudaGetDevice(&device));
  FK_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  for (const auto& lens : std::vector<std::vector<int>>{{200}, {9, 40}, {1, 2, 3, 5, 8, 13, 21, 34}}) {
    SCOPED_TRACE("seed=" + std::to_string(seed) + " batch=" + std::to_string(lens.size()));
    const auto prompts = random_prompts(lens, seed + lens.size());
    GenerationOptions o;
    o.max_new_tokens = 24;
    const bool fused = std::int64_t(lens.size()) <= kAutoFusedMaxBatch && major >= 9;
    GenerationStats unset, automatic, chosen;
    const DType fp16 = DType::kFloat16;
    const Prompts by_default = generate_on_path(nullptr, fp16, seed, prompts, o, &unset);
    const Prompts by_auto = generate_on_path("auto", fp16, seed, prompts, o, &automatic);
    const Prompts expected = generate_on_path(fused ? "fused" : "pdl", fp16, seed, prompts, o, &chosen);
    EXPECT_EQ(unset.fused_decode, fused);
    EXPECT_EQ(automatic.fused_decode, fused);
    EXPECT_EQ(chosen.fused_decode, fused);
    EXPECT_FALSE(unset.persistent_decode);
    for (std::size_t b = 0; b < prompts.size(); ++b) {
      EXPECT_EQ(by_default[b], expected[b]) << "sequence " << b;
      EXPECT_EQ(by_auto[b], expected[b]) << "sequence " << b;
    }
  }
}

// The decode path set on the engine (no environment variable): the stats follow it, the graphs
// captured on the old path are dropped (pdl after graph must give the graph's tokens, captured
// again), and a value outside the enum is refused naming `path`.
TEST(ModelsGpt2EngineDependentLaunch, SetDecodePathSwitchesThePath) {
  FK_SKIP_WITHOUT_GPU();
  const auto seed = testing::fresh_seed();
  ScopedEnv unset("FLASHKERNEL_GPT2_DECODE", nullptr);
  GPT2Engine e(config(), DType::kFloat16);
  e.init_random(seed);
  EXPECT_EQ(e.decode_path(), DecodePath::kAuto);
  const auto prompts = random_prompts({37}, seed + 1);
  GenerationOptions o;
  o.max_new_tokens = 16;
  GenerationStats st;
  e.set_decode_path(DecodePath::kGraph);
  const Prompts graph = e.generate(prompts, o, &st);
  EXPECT_FALSE(st.fused_decode);
  EXPECT_FALSE(st.persistent_decode);
  e.set_decode_path(DecodePath::kPdl);
  EXPECT_EQ(e.decode_path(), DecodePath::kPdl);
  const Prompts dependent = e.generate(prompts, o, &st);
  EXPECT_EQ(st.graph_captures, 1) << "the graph path's capture must not be reused";
  EXPECT_EQ(dependent, graph);
  e.set_decode_path(DecodePath::kFused);
  const Prompts fused = e.generate(prompts, o, &st);
  EXPECT_TRUE(st.fused_decode);
  expect_greedy_matches_prefill(e, prompts, fused, 0.05);
  try {
    e.set_decode_path(static_cast<DecodePath>(42));
    ADD_FAILURE() << "DecodePath 42 accepted";
  } catch (const ArgumentError& err) {
    EXPECT_EQ(err.argument(), "path");
  }
  EXPECT_EQ(e.decode_path(), DecodePath::kFused);
}

TEST(ModelsGpt2Persistent, DecodePathNamesRoundTrip) {
  for (DecodePath p :
       {DecodePath::kAuto, DecodePath::kGraph, DecodePath::kPdl, DecodePath::kFused, DecodePath::kPersistent}) {
    EXPECT_EQ(decode_path_from_name(decode_path_name(p)), p) << decode_path_name(p);
  }
  EXPECT_STREQ(decode_path_name(DecodePath::kFused), "fused");
  for (const char* bad : {"", "Fused", "fast", "graph "}) {
    try {
      decode_path_from_name(bad);
      ADD_FAILURE() << "'" << bad << "' accepted";
    } catch (const ArgumentError& err) {
      EXPECT_EQ(err.argument(), "decode_path");
      EXPECT_NE(std::string(err.what()).find("'auto', 'graph', 'pdl', 'fused' or 'persistent'"), std::string::npos)
          << err.what();
    }
  }
}

TEST(ModelsGpt2Persistent, UnknownDecodeModeIsAnArgumentError) {
  ScopedEnv mode("FLASHKERNEL_GPT2_DECODE", "fast");
  EXPECT_THROW(GPT2Engine(config(), DType::kFloat16), ArgumentError);
}

}  // namespace
}  // namespace flashkernel::models
