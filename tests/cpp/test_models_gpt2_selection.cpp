// The GPT-2 engine's token selection (select_tokens, src/models/gpt2/kernels.cu) on its own, on
// fresh random logits of odd vocabulary sizes: greedy is the CPU argmax, a draw with top-k stays
// inside the k largest logits, top_k = 1 is greedy, and the decode bookkeeping (the recorded
// token, the next input, the position) is written. Small enough for racecheck/synccheck, which
// cannot afford a whole generate (scripts/gpu_check.sh).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "common/cuda_check.h"
#include "models/gpt2/kernels.cuh"
#include "test_utils.h"

namespace flashkernel::models::gpt2_detail {
namespace {

using testing::DeviceBuffer;

// One sequence per row; each row's prompt has `prompt_len` tokens and the step generates token
// number 0 of `max_new`.
struct Selection {
  std::int64_t batch, vocab;
  DeviceBuffer<float> logits;
  DeviceBuffer<SampleParams> params{1};
  DeviceBuffer<std::int32_t> tokens, positions, prompt_lens, finished, out_tokens;
  static constexpr std::int32_t kPromptLen = 5, kMaxNew = 3;

  Selection(const std::vector<float>& host_logits, std::int64_t b, std::int64_t v)
      : batch(b), vocab(v), logits(host_logits), tokens(b), positions(b), prompt_lens(b), finished(b),
        out_tokens(b * kMaxNew) {}

  // Runs one selection; returns the token recorded for each row.
  std::vector<std::int32_t> run(SampleParams p) {
    p.max_new = kMaxNew;
    params.upload({p});
    tokens.poison();
    out_tokens.poison();
    positions.upload(std::vector<std::int32_t>(batch, kPromptLen - 1));
    prompt_lens.upload(std::vector<std::int32_t>(batch, kPromptLen));
    finished.upload(std::vector<std::int32_t>(batch, 0));
    DecodeState st;
    st.tokens = tokens.get();
    st.positions = positions.get();
    st.prompt_lens = prompt_lens.get();
    st.finished = finished.get();
    st.out_tokens = out_tokens.get();
    st.out_stride = kMaxNew;
    select_tokens(logits.get(), batch, vocab, params.get(), st, nullptr);
    FK_CUDA_CHECK(cudaDeviceSynchronize());
    const auto out = out_tokens.download(), next = tokens.download(), pos = positions.download();
    std::vector<std::int32_t> picked(batch);
    for (std::int64_t b = 0; b < batch; ++b) {
      picked[b] = out[b * kMaxNew];
      EXPECT_EQ(next[b], picked[b]) << "row " << b << ": the next step's input is the recorded token";
      EXPECT_EQ(pos[b], kPromptLen) << "row " << b << ": the position advances by one";
      EXPECT_EQ(out[b * kMaxNew + 1], -1) << "row " << b << ": only generated token 0 is written";
    }
    return picked;
  }
};

TEST(ModelsGpt2TokenSelection, GreedyIsTheArgmaxAndDrawsStayInTheTopK) {
  FK_SKIP_WITHOUT_GPU();
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  constexpr std::int64_t kBatch = 3;
  for (const std::int64_t vocab : {1, 7, 127, 1000, 50257}) {
    SCOPED_TRACE("vocab " + std::to_string(vocab));
    const auto host = testing::random_vector<float>(kBatch * vocab, seed + vocab, -4.f, 4.f);
    Selection sel(host, kBatch, vocab);
    // The k largest logits of each row (ties are improbable in continuous random values).
    auto top = [&](std::int64_t b, std::int64_t k) {
      std::vector<std::int32_t> idx(vocab);
      std::iota(idx.begin(), idx.end(), 0);
      const float* row = host.data() + b * vocab;
      std::stable_sort(idx.begin(), idx.end(), [&](int x, int y) { return row[x] > row[y]; });
      idx.resize(k);
      return idx;
    };

    const auto greedy = sel.run(SampleParams{});
    for (std::int64_t b = 0; b < kBatch; ++b) EXPECT_EQ(greedy[b], top(b, 1)[0]) << "greedy, row " << b;

    SampleParams p;
    p.do_sample = 1;
    p.temperature = 0.7f;
    p.top_k = 1;
    p.seed = seed;
    EXPECT_EQ(sel.run(p), greedy) << "top_k = 1 is greedy";

    p.top_k = static_cast<std::int32_t>(std::min<std::int64_t>(5, vocab));
    for (int draw = 0; draw < 16; ++draw) {
      p.seed = seed * 31 + draw;
      const auto picked = sel.run(p);
      for (std::int64_t b = 0; b < kBatch; ++b) {
        const auto allowed = top(b, p.top_k);
        EXPECT_NE(std::find(allowed.begin(), allowed.end(), picked[b]), allowed.end())
            << "draw " << draw << ", row " << b << " picked " << picked[b] << ", outside the top " << p.top_k;
      }
    }
  }
}

}  // namespace
}  // namespace flashkernel::models::gpt2_detail
