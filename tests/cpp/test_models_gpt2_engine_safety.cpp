// GPT-2 engine under misuse and failure: out of device memory in the middle of a call (the engine
// must stay valid and give the same tokens afterwards), several threads sharing one engine,
// forward_logits ordered after the caller's default-stream work, weights passed as device memory
// that is not, and arguments whose checks could overflow.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "flashkernel/device_info.h"
#include "flashkernel/models/gpt2.h"
#include "flashkernel/status.h"
#include "test_utils.h"

namespace flashkernel::models {
namespace {

using Prompts = std::vector<std::vector<std::int32_t>>;
using testing::DeviceBuffer;
using testing::expect_argument_error;

constexpr std::int64_t kVocab = 1000, kPositions = 256, kEmbd = 256, kLayers = 3, kHeads = 4;

GPT2Config tiny_config() {
  return GPT2Config{
      .vocab_size = kVocab, .n_positions = kPositions, .n_embd = kEmbd, .n_layer = kLayers, .n_head = kHeads};
}

Prompts prompts_of(const std::vector<int>& lengths, std::uint64_t seed) {
  return testing::random_token_rows(lengths, kVocab, seed);
}

std::vector<float> logits_of(GPT2Engine& e, const Prompts& prompts) {
  std::int64_t tokens = 0;
  for (const auto& p : prompts) tokens += static_cast<std::int64_t>(p.size());
  DeviceBuffer<float> out(tokens * kVocab);
  out.poison();
  e.forward_logits(prompts, out.get());
  return out.download();
}

// Enough sequences that one buffer of the engine needs twice the GPU's memory, whatever the GPU:
// bytes_per_sequence is a lower bound on what the buffer needs for each.
std::int64_t sequences_exceeding_memory(std::size_t bytes_per_sequence) {
  std::size_t free_bytes = 0, total_bytes = 0;
  FK_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return static_cast<std::int64_t>(2 * total_bytes / bytes_per_sequence + 1);
}

TEST(ModelsGpt2EngineSafety, OutOfMemoryLeavesTheEngineUsable) {
  FK_SKIP_WITHOUT_GPU();
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  GPT2Engine e(tiny_config(), DType::kFloat16);
  e.init_random(seed);
  const Prompts prompts = prompts_of({5, 40, 17}, seed);
  GenerationOptions o;
  o.max_new_tokens = 24;
  const auto tokens = e.generate(prompts, o);
  const auto logits = logits_of(e, prompts);

  auto expect_recovered = [&](const char* what) {
    SCOPED_TRACE(what);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "the allocation failure must not linger";
    EXPECT_EQ(e.generate(prompts, o), tokens);
    EXPECT_EQ(logits_of(e, prompts), logits);
    EXPECT_EQ(e.generate(prompts, o), tokens);  // again, with the graph captured after recovery
  };

  {
    // Activations: 128-token prompts, each needing at least 15 * n_embd fp16 values per token.
    const Prompts huge(sequences_exceeding_memory(128 * 15 * kEmbd * 2), std::vector<std::int32_t>(128, 1));
    GenerationOptions one = o;
    one.max_new_tokens = 1;
    EXPECT_THROW(e.generate(huge, one), CudaError);
  }
  expect_recovered("after running out of memory for activations");

  {
    // KV pool: 1-token prompts generating up to n_positions, each needing pages for 256 positions
    // (K and V, every layer); their activations and decode state are far smaller and fit.
    const Prompts huge(sequences_exceeding_memory(kPositions * kLayers * 2 * kEmbd * 2),
                       std::vector<std::int32_t>{1});
    GenerationOptions longest = o;
    longest.max_new_tokens = kPositions - 1;
    EXPECT_THROW(e.generate(huge, longest), CudaError);
  }
  expect_recovered("after running out of memory for the KV pool");

  {
    const Prompts huge(sequences_exceeding_memory(128 * 15 * kEmbd * 2), std::vector<std::int32_t>(128, 1));
    DeviceBuffer<float> small(1);  // never written: the activations fail to allocate first
    EXPECT_THROW(e.forward_logits(huge, small.get()), CudaError);
  }
  expect_recovered("after forward_logits ran out of memory");
}

TEST(ModelsGpt2EngineSafety, ThreadsSharingOneEngineGetTheirOwnResults) {
  FK_SKIP_WITHOUT_GPU();
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  GPT2Engine e(tiny_config(), DType::kFloat16);
  e.init_random(seed);
  // Different batch sizes (9 > the initial 8 slots of decode state) and lengths, so that calls from
  // the two threads grow buffers and capture graphs that the other thread's calls would use.
  const Prompts a = prompts_of({3, 30}, seed), b = prompts_of({7, 1, 64, 12, 5, 9, 2, 33, 20}, seed + 1);
  GenerationOptions o;
  o.max_new_tokens = 40;
  const auto expect_a = e.generate(a, o);
  const auto logits_b = logits_of(e, b);
  GenerationOptions ob = o;
  ob.max_new_tokens = 17;
  const auto expect_b = e.generate(b, ob);

  std::atomic<int> mismatches{0}, errors{0};
  std::string first_error;
  std::atomic<bool> error_recorded{false};
  auto record = [&](const std::exception& ex) {
    ++errors;
    if (!error_recorded.exchange(true)) first_error = ex.what();
  };
  std::thread ta([&] {
    for (int i = 0; i < 8; ++i) {
      try {
        if (e.generate(a, o) != expect_a) ++mismatches;
      } catch (const std::exception& ex) {
        record(ex);
      }
    }
  });
  std::thread tb([&] {
    for (int i = 0; i < 8; ++i) {
      try {
        if (e.generate(b, ob) != expect_b) ++mismatches;
        if (logits_of(e, b) != logits_b) ++mismatches;
        (void)e.device_bytes();
      } catch (const std::exception& ex) {
        record(ex);
      }
    }
  });
  ta.join();
  tb.join();
  EXPECT_EQ(errors.load(), 0) << "first error: " << first_error;
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(ModelsGpt2EngineSafety, ForwardLogitsWaitsForTheDefaultStream) {
  FK_SKIP_WITHOUT_GPU();
  const auto seed = testing::fresh_seed();
  GPT2Engine e(tiny_config(), DType::kFloat16);
  e.init_random(seed);
  const Prompts prompts = prompts_of({33, 9}, seed);
  const auto expected = logits_of(e, prompts);
  DeviceBuffer<float> out(42 * kVocab);
  // Work the caller queued on the legacy default stream that still writes `out`: a host function
  // holds the stream for a while, then a NaN fill. The engine must write its logits after both.
  FK_CUDA_CHECK(cudaLaunchHostFunc(
      nullptr, [](void*) { std::this_thread::sleep_for(std::chrono::milliseconds(300)); }, nullptr));
  FK_CUDA_CHECK(cudaMemsetAsync(out.get(), 0xFF, out.bytes(), nullptr));
  e.forward_logits(prompts, out.get(), /*stream=*/nullptr);
  EXPECT_EQ(out.download(), expected);
}

TEST(ModelsGpt2EngineSafety, DeviceWeightsMustBeOnTheEnginesDevice) {
  FK_SKIP_WITHOUT_GPU();
  GPT2Engine e(tiny_config(), DType::kFloat16);
  const std::vector<float> host(kEmbd, 1.f);
  // Host memory passed as device memory: named, not read by a kernel.
  expect_argument_error([&] { e.load_tensor("h.0.ln_1.weight", host.data(), DType::kFloat32, {kEmbd}, true); },
                        "h.0.ln_1.weight");
  DeviceBuffer<float> dev(host);
  EXPECT_NO_THROW(e.load_tensor("h.0.ln_1.weight", dev.get(), DType::kFloat32, {kEmbd}, true));
  if (device_count() >= 2) {
    FK_CUDA_CHECK(cudaSetDevice(1));
    DeviceBuffer<float> other(host);
    FK_CUDA_CHECK(cudaSetDevice(0));
    expect_argument_error([&] { e.load_tensor("h.0.ln_1.weight", other.get(), DType::kFloat32, {kEmbd}, true); },
                          "h.0.ln_1.weight");
    // The engine makes its device current only while a call runs.
    GPT2Engine on1(tiny_config(), DType::kFloat16, 1);
    on1.init_random(1);
    (void)on1.generate({{1, 2, 3}}, GenerationOptions{});
    int current = -1;
    FK_CUDA_CHECK(cudaGetDevice(&current));
    EXPECT_EQ(current, 0);
  }
  expect_argument_error([] { GPT2Engine(tiny_config(), DType::kFloat16, device_count()); }, "device");
}

TEST(ModelsGpt2EngineSafety, ChecksDoNotOverflow) {
  FK_SKIP_WITHOUT_GPU();
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  GPT2Engine e(tiny_config(), DType::kFloat16);
  e.init_random(seed);
  GenerationOptions o;
  for (std::int64_t n : {std::numeric_limits<std::int64_t>::max(), std::numeric_limits<std::int64_t>::max() - 2,
                         std::int64_t(1) << 62, kPositions}) {
    o.max_new_tokens = n;
    expect_argument_error([&] { e.generate({{1, 2, 3}}, o); }, "max_new_tokens");
  }
  // A negative EOS id means "none", whatever its value: one that wraps to a real token id when
  // narrowed to 32 bits must not stop generation at that token. The wrapped id is the first
  // generated token, so stopping there would pad the rest with it; a run of that one token
  // repeated could not tell, so the prompt is chosen to avoid it.
  o.max_new_tokens = 20;
  o.eos_token_id = -1;
  Prompts prompts;
  std::vector<std::vector<std::int32_t>> free_run;
  for (std::uint64_t s = seed; free_run.empty() || std::all_of(free_run[0].begin(), free_run[0].end(),
                                                                [&](std::int32_t t) { return t == free_run[0][0]; });
       ++s) {
    ASSERT_LT(s, seed + 16) << "every greedy run repeats one token";
    prompts = prompts_of({9}, s);
    free_run = e.generate(prompts, o);
  }
  o.eos_token_id = static_cast<std::int64_t>(free_run[0][0]) - (std::int64_t(1) << 32);
  EXPECT_EQ(e.generate(prompts, o), free_run);
}

}  // namespace
}  // namespace flashkernel::models
