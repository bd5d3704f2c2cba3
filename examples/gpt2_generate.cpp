// gpt2_generate: greedy (or sampled) GPT-2 generation from token ids with FlashKernel's C++ engine.
//
//   gpt2_generate [--model DIR] [--tokens 464,3290,318] [--max-new-tokens N] [--batch B]
//                 [--bf16] [--sample --temperature T --top-k K --top-p P --seed S]
//
// Without --model the engine holds a randomly initialized GPT-2 124M (seed 0). Prints the new
// token ids of each sequence and the throughput.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "flashkernel/models/gpt2.h"
#include "flashkernel/status.h"

namespace fk = flashkernel;

// Says in one line why no GPU is usable and returns false; the engine's own error for this case is
// a CUDA status deep inside a constructor.
static bool cuda_device_usable() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaErrorNoDevice || (err == cudaSuccess && count == 0)) {
    std::fprintf(stderr, "gpt2_generate: no CUDA device is visible; the engine needs an NVIDIA GPU\n");
    return false;
  }
  if (err == cudaErrorInsufficientDriver) {
    std::fprintf(stderr, "gpt2_generate: no CUDA device: the NVIDIA driver is missing or older than this CUDA "
                 "runtime (%s)\n", cudaGetErrorString(err));
    return false;
  }
  if (err != cudaSuccess) {
    std::fprintf(stderr, "gpt2_generate: no CUDA device: cudaGetDeviceCount failed: %s\n", cudaGetErrorString(err));
    return false;
  }
  return true;
}

int main(int argc, char** argv) {
  std::string model_dir;
  std::vector<std::int32_t> prompt = {50256};
  fk::models::GenerationOptions opt;
  opt.max_new_tokens = 64;
  std::int64_t batch = 1;
  fk::DType dtype = fk::DType::kFloat16;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "gpt2_generate: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--model") {
      model_dir = next();
    } else if (a == "--tokens") {
      prompt.clear();
      std::stringstream ss(next());
      std::string t;
      while (std::getline(ss, t, ',')) prompt.push_back(static_cast<std::int32_t>(std::stol(t)));
    } else if (a == "--max-new-tokens") {
      opt.max_new_tokens = std::stoll(next());
    } else if (a == "--batch") {
      batch = std::stoll(next());
    } else if (a == "--bf16") {
      dtype = fk::DType::kBFloat16;
    } else if (a == "--sample") {
      opt.do_sample = true;
    } else if (a == "--temperature") {
      opt.temperature = std::stof(next());
    } else if (a == "--top-k") {
      opt.top_k = std::stoll(next());
    } else if (a == "--top-p") {
      opt.top_p = std::stof(next());
    } else if (a == "--seed") {
      opt.seed = std::stoull(next());
    } else {
      std::fprintf(stderr, "usage: %s [--model DIR] [--tokens IDS] [--max-new-tokens N] [--batch B] [--bf16] "
                   "[--sample --temperature T --top-k K --top-p P --seed S]\n", argv[0]);
      return 2;
    }
  }
  if (batch < 1) {
    std::fprintf(stderr, "gpt2_generate: --batch must be >= 1\n");
    return 2;
  }
  if (!cuda_device_usable()) return 2;  // after the argument checks, which need no GPU
  try {
    std::unique_ptr<fk::models::GPT2Engine> engine;
    if (model_dir.empty()) {
      engine = std::make_unique<fk::models::GPT2Engine>(fk::models::GPT2Config{}, dtype);
      engine->init_random(0);
    } else {
      engine = fk::models::GPT2Engine::from_pretrained(model_dir, dtype);
    }
    const std::vector<std::vector<std::int32_t>> prompts(static_cast<std::size_t>(batch), prompt);
    fk::models::GenerationOptions warm = opt;
    warm.max_new_tokens = 2;
    engine->generate(prompts, warm);  // captures the decode graph for this batch shape
    fk::models::GenerationStats st;
    const auto out = engine->generate(prompts, opt, &st);
    for (std::size_t b = 0; b < out.size(); ++b) {
      std::printf("[%zu]", b);
      for (auto t : out[b]) std::printf(" %d", t);
      std::printf("\n");
    }
    const double ms = st.prefill_ms + st.decode_ms;
    std::printf("prefill %.2f ms, decode %.2f ms (%lld steps): %.1f tokens/s\n", st.prefill_ms, st.decode_ms,
                static_cast<long long>(st.decode_steps), double(batch * opt.max_new_tokens) / (ms / 1e3));
  } catch (const fk::Error& e) {
    std::fprintf(stderr, "gpt2_generate: %s\n", e.what());
    return 1;
  }
  return 0;
}
