// The paged KV cache's host-side allocator (no GPU): page accounting, copy-on-write after fork,
// all-or-nothing errors, and a randomized stress of 10^5 mixed operations that checks every
// invariant after each step and replays every plan on a simulated pool to check the contents.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "flashkernel/kv_cache.h"
#include "flashkernel/status.h"
#include "test_utils.h"

namespace flashkernel {
namespace {

// Everything observable about an allocator, for "nothing changed" checks.
struct Snapshot {
  std::vector<std::int32_t> free;
  std::vector<std::int32_t> refs;
  std::map<std::int64_t, std::pair<std::vector<std::int32_t>, std::vector<std::int64_t>>> seqs;
  bool operator==(const Snapshot&) const = default;
};

Snapshot snapshot(const KVPageAllocator& a) {
  Snapshot s;
  s.free = a.free_pages();
  for (std::int64_t p = 0; p < a.num_pages(); ++p) s.refs.push_back(a.refcount(p));
  for (std::int64_t id : a.sequence_ids()) {
    std::vector<std::int64_t> lens;
    for (std::int64_t l = 0; l < a.num_layers(); ++l) lens.push_back(a.length(id, l));
    s.seqs[id] = {a.pages(id), lens};
  }
  return s;
}

// The invariants recomputed from the public accessors only (independent of check_invariants).
void expect_accounting(const KVPageAllocator& a) {
  std::vector<int> owners(static_cast<std::size_t>(a.num_pages()), 0);
  for (std::int64_t id : a.sequence_ids()) {
    const auto& pages = a.pages(id);
    std::set<std::int32_t> unique(pages.begin(), pages.end());
    ASSERT_EQ(unique.size(), pages.size()) << "sequence " << id << " lists a page twice";
    for (std::int32_t p : pages) ++owners[p];
    ASSERT_GE(std::int64_t(pages.size()) * a.page_size(), a.length(id)) << "sequence " << id;
  }
  const std::vector<std::int32_t> free_list = a.free_pages();  // a copy: accessors never return references
  std::set<std::int32_t> free(free_list.begin(), free_list.end());
  ASSERT_EQ(free.size(), free_list.size()) << "a page is on the free list twice";
  std::int64_t referenced = 0;
  for (std::int64_t p = 0; p < a.num_pages(); ++p) {
    ASSERT_EQ(a.refcount(p), owners[p]) << "page " << p;
    ASSERT_EQ(free.count(std::int32_t(p)) == 1, owners[p] == 0) << "page " << p << " is lost or owned twice";
    referenced += owners[p] > 0;
  }
  ASSERT_EQ(referenced + std::int64_t(free.size()), a.num_pages());
}

using testing::expect_argument_error;

TEST(KVCacheAllocator, ReserveAllocatesCeilPagesAndFreeReturnsThem) {
  KVPageAllocator a(10, 16, 2);
  auto s = a.add_sequence();
  a.reserve(s, 1);
  EXPECT_EQ(a.pages(s).size(), 1u);
  a.reserve(s, 16);
  EXPECT_EQ(a.pages(s).size(), 1u);  // nothing appended yet: 16 tokens still fit one page
  a.reserve(s, 17);
  EXPECT_EQ(a.pages(s).size(), 2u);
  EXPECT_EQ(a.num_free_pages(), 8);
  a.free_sequence(s);
  EXPECT_EQ(a.num_free_pages(), 10);
  a.check_invariants();
  expect_accounting(a);
}

TEST(KVCacheAllocator, AppendSlotsFollowPagesAndLayersAreIndependent) {
  KVPageAllocator a(8, 8, 2);
  auto s = a.add_sequence();
  AppendPlan p0 = a.plan_append(0, {s}, {11});
  ASSERT_EQ(p0.slots.size(), 11u);
  const auto& pages = a.pages(s);
  ASSERT_EQ(pages.size(), 2u);
  for (std::int64_t t = 0; t < 11; ++t) EXPECT_EQ(p0.slots[t], pages[t / 8] * 8 + t % 8);
  EXPECT_EQ(a.length(s, 0), 11);
  EXPECT_EQ(a.length(s, 1), 0);
  AppendPlan p1 = a.plan_append(1, {s}, {11});  // layer 1 reuses the same pages
  EXPECT_EQ(p1.slots, p0.slots);
  EXPECT_EQ(a.pages(s).size(), 2u);
  EXPECT_TRUE(p1.copies.empty());
}

TEST(KVCacheAllocator, ForkSharesPagesAndFirstAppendCopiesThePartialPage) {
  KVPageAllocator a(16, 8, 1);
  auto s = a.add_sequence();
  a.plan_append(0, {s}, {20});  // pages 0,1 full, page 2 holds 4 tokens
  a.reserve(s, 30);             // pages reserved ahead stay with the parent
  auto f = a.fork(s);
  ASSERT_EQ(a.pages(f).size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(a.pages(f)[i], a.pages(s)[i]);
    EXPECT_EQ(a.refcount(a.pages(s)[i]), 2);
  }
  EXPECT_EQ(a.memory_stats().tokens_stored, 20);  // the shared prefix is stored once
  const std::int32_t shared_last = a.pages(s)[2];
  AppendPlan p = a.plan_append(0, {f}, {1});
  ASSERT_EQ(p.copies.size(), 1u);
  EXPECT_EQ(p.copies[0].src, shared_last);
  EXPECT_NE(p.copies[0].dst, shared_last);
  EXPECT_EQ(a.pages(f)[2], p.copies[0].dst);
  EXPECT_EQ(a.pages(s)[2], shared_last);
  EXPECT_EQ(a.refcount(shared_last), 1);
  EXPECT_EQ(a.refcount(a.pages(s)[0]), 2);  // full pages stay shared
  EXPECT_EQ(p.slots[0], p.copies[0].dst * 8 + 4);
  // The parent's next append writes its now-private page in place.
  AppendPlan q = a.plan_append(0, {s}, {1});
  EXPECT_TRUE(q.copies.empty());
  EXPECT_EQ(q.slots[0], shared_last * 8 + 4);
  a.check_invariants();
  expect_accounting(a);
}

TEST(KVCacheAllocator, ForkAtPageBoundaryCopiesNothing) {
  KVPageAllocator a(8, 8, 1);
  auto s = a.add_sequence();
  a.plan_append(0, {s}, {16});
  auto f = a.fork(s);
  AppendPlan p = a.plan_append(0, {f}, {3});
  EXPECT_TRUE(p.copies.empty());
  EXPECT_EQ(a.pages(f).size(), 3u);
  EXPECT_EQ(a.refcount(a.pages(f)[2]), 1);
}

TEST(KVCacheAllocator, OutOfPagesChangesNothing) {
  KVPageAllocator a(4, 8, 1);
  auto s = a.add_sequence(), t = a.add_sequence();
  a.plan_append(0, {s}, {20});  // 3 pages
  const Snapshot before = snapshot(a);
  EXPECT_THROW(a.reserve(t, 9), OutOfResourcesError);  // needs 2, 1 free
  EXPECT_EQ(snapshot(a), before);
  // A batch whose first sequence would fit but whose second would not: no half-done append.
  EXPECT_THROW(a.plan_append(0, {t, s}, {8, 10}), OutOfResourcesError);
  EXPECT_EQ(snapshot(a), before);
  try {
    a.reserve(t, 100);
  } catch (const OutOfResourcesError& e) {
    EXPECT_NE(std::string(e.what()).find("out of pages"), std::string::npos) << e.what();
  }
  a.plan_append(0, {t}, {8});  // exactly the last page
  EXPECT_EQ(a.num_free_pages(), 0);
  a.check_invariants();
}

TEST(KVCacheAllocator, CopyOnWriteNeedsAFreePage) {
  KVPageAllocator a(2, 8, 1);
  auto s = a.add_sequence();
  a.plan_append(0, {s}, {5});
  auto f = a.fork(s);
  a.reserve(s, 11);  // takes the last page
  const Snapshot before = snapshot(a);
  EXPECT_THROW(a.plan_append(0, {f}, {1}), OutOfResourcesError);
  EXPECT_EQ(snapshot(a), before);
}

TEST(KVCacheAllocator, UnknownOrFreedSequencesAndBadArgumentsRaise) {
  KVPageAllocator a(8, 8, 2);
  auto s = a.add_sequence();
  a.free_sequence(s);
  const Snapshot before = snapshot(a);
  expect_argument_error([&] { a.free_sequence(s); }, "seq_id");
  expect_argument_error([&] { a.reserve(s, 1); }, "seq_id");
  expect_argument_error([&] { a.fork(s); }, "seq_id");
  expect_argument_error([&] { a.plan_append(0, {s}, {1}); }, "seq_ids");
  expect_argument_error([&] { a.plan_append(0, {12345}, {1}); }, "seq_ids");
  auto t = a.add_sequence();
  const Snapshot live = snapshot(a);
  expect_argument_error([&] { a.plan_append(2, {t}, {1}); }, "layer");
  expect_argument_error([&] { a.plan_append(-1, {t}, {1}); }, "layer");
  expect_argument_error([&] { a.plan_append(0, {t, t}, {1, 1}); }, "seq_ids");
  expect_argument_error([&] { a.plan_append(0, {t}, {-1}); }, "counts");
  expect_argument_error([&] { a.plan_append(0, {t}, {1, 2}); }, "counts");
  expect_argument_error([&] { a.reserve(t, -3); }, "n_tokens");
  EXPECT_EQ(snapshot(a), live);
  expect_argument_error([] { KVPageAllocator(8, 12, 1); }, "page_size");
  expect_argument_error([] { KVPageAllocator(8, 512, 1); }, "page_size");
  expect_argument_error([] { KVPageAllocator(8, 4, 1); }, "page_size");
  expect_argument_error([] { KVPageAllocator(0, 16, 1); }, "num_pages");
  expect_argument_error([] { KVPageAllocator(8, 16, 0); }, "num_layers");
  (void)before;
}

TEST(KVCacheAllocator, MemoryStatsCountFragmentation) {
  KVPageAllocator a(32, 16, 1);
  std::vector<std::int64_t> lens = {1, 15, 16, 17, 100};
  std::int64_t pages = 0, tokens = 0;
  for (auto n : lens) {
    auto s = a.add_sequence();
    a.plan_append(0, {s}, {n});
    pages += (n + 15) / 16;
    tokens += n;
  }
  KVMemoryStats st = a.memory_stats();
  EXPECT_EQ(st.pages_used, pages);
  EXPECT_EQ(st.pages_free, 32 - pages);
  EXPECT_EQ(st.tokens_stored, tokens);
  EXPECT_EQ(st.fragmentation_tokens, pages * 16 - tokens);
  EXPECT_LT(st.fragmentation_tokens, std::int64_t(lens.size()) * 16);  // under one page per sequence
}

// Simulated pool: for each layer and slot, the id of the token stored there (-1: never written).
struct SimPool {
  std::int64_t page_size;
  std::vector<std::vector<std::int64_t>> slots;  // [layer][page * page_size + off]
  void apply(std::int64_t layer, const AppendPlan& plan, const std::vector<std::int64_t>& tokens) {
    for (const PageCopy& c : plan.copies) {
      for (auto& l : slots) {
        std::copy_n(l.begin() + c.src * page_size, page_size, l.begin() + c.dst * page_size);
      }
    }
    for (std::size_t i = 0; i < tokens.size(); ++i) slots[layer][plan.slots[i]] = tokens[i];
  }
};

TEST(KVCacheAllocator, RandomizedStressKeepsInvariantsAndContents) {
  const auto seed = testing::fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  constexpr std::int64_t kPages = 64, kPageSize = 8, kLayers = 2, kSteps = 100000;
  KVPageAllocator a(kPages, kPageSize, kLayers);
  SimPool pool{kPageSize, std::vector<std::vector<std::int64_t>>(kLayers, std::vector<std::int64_t>(kPages * kPageSize, -1))};
  std::map<std::int64_t, std::vector<std::vector<std::int64_t>>> expect;  // seq -> layer -> token ids
  std::int64_t next_token = 0;
  std::int64_t out_of_pages = 0, copies = 0, forks = 0;
  auto pick = [&]() -> std::int64_t {
    auto it = expect.begin();
    std::advance(it, std::uniform_int_distribution<std::size_t>(0, expect.size() - 1)(rng));
    return it->first;
  };
  auto verify_contents = [&](std::int64_t id) {
    const auto& pages = a.pages(id);
    for (std::int64_t l = 0; l < kLayers; ++l) {
      const auto& want = expect.at(id)[l];
      ASSERT_EQ(a.length(id, l), std::int64_t(want.size()));
      for (std::size_t t = 0; t < want.size(); ++t) {
        ASSERT_EQ(pool.slots[l][pages[t / kPageSize] * kPageSize + t % kPageSize], want[t])
            << "sequence " << id << " layer " << l << " token " << t;
      }
    }
  };
  for (std::int64_t step = 0; step < kSteps; ++step) {
    const int op = std::uniform_int_distribution<int>(0, 99)(rng);
    const Snapshot before = snapshot(a);
    std::vector<std::int64_t> touched;
    try {
      if (expect.empty() || (op < 10 && expect.size() < 24)) {
        auto id = a.add_sequence();
        expect[id] = std::vector<std::vector<std::int64_t>>(kLayers);
      } else if (op < 18) {
        auto id = pick();
        a.free_sequence(id);
        expect.erase(id);
      } else if (op < 26) {
        auto id = pick();
        auto child = a.fork(id);
        expect[child] = expect[id];
        touched = {id, child};
        ++forks;
      } else if (op < 34) {
        auto id = pick();
        a.reserve(id, std::uniform_int_distribution<std::int64_t>(0, 40)(rng));
        touched = {id};
      } else if (op < 38) {
        // Unknown ids raise and change nothing.
        std::int64_t bogus = 1000000 + step;
        EXPECT_THROW(a.free_sequence(bogus), ArgumentError);
        EXPECT_THROW(a.plan_append(0, {bogus}, {1}), ArgumentError);
      } else {
        const std::int64_t layer = std::uniform_int_distribution<std::int64_t>(0, kLayers - 1)(rng);
        std::vector<std::int64_t> ids, counts, tokens;
        const int n = std::uniform_int_distribution<int>(1, 3)(rng);
        for (int i = 0; i < n; ++i) {
          auto id = pick();
          if (std::find(ids.begin(), ids.end(), id) != ids.end()) continue;
          ids.push_back(id);
          counts.push_back(std::uniform_int_distribution<std::int64_t>(0, op < 90 ? 3 : 20)(rng));
        }
        AppendPlan plan = a.plan_append(layer, ids, counts);
        for (std::size_t i = 0; i < ids.size(); ++i) {
          for (std::int64_t c = 0; c < counts[i]; ++c) {
            tokens.push_back(next_token);
            expect[ids[i]][layer].push_back(next_token++);
          }
        }
        ASSERT_EQ(plan.slots.size(), tokens.size());
        pool.apply(layer, plan, tokens);
        copies += std::int64_t(plan.copies.size());
        touched = ids;
      }
    } catch (const OutOfResourcesError&) {
      ++out_of_pages;
      ASSERT_EQ(snapshot(a), before) << "out of pages changed the state at step " << step;
    }
    ASSERT_NO_THROW(a.check_invariants()) << "step " << step;
    expect_accounting(a);
    if (::testing::Test::HasFatalFailure()) return;
    for (auto id : touched) {
      if (expect.count(id)) verify_contents(id);
    }
    if (step % 1000 == 0) {
      for (const auto& kv : expect) verify_contents(kv.first);
    }
    if (::testing::Test::HasFatalFailure()) return;
  }
  // The mix must have exercised the interesting paths, or the test proves little.
  EXPECT_GT(out_of_pages, 100);
  EXPECT_GT(copies, 100);
  EXPECT_GT(forks, 1000);
}

// Counts near INT64_MAX used to overflow inside the checks (max_len + n_tokens), so reserve
// silently did nothing, or worse; they are now out-of-pages errors that change nothing.
TEST(KVCacheAllocator, HugeCountsAreOutOfPagesNotOverflow) {
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  KVPageAllocator a(8, 16, 2);
  auto s = a.add_sequence(), empty = a.add_sequence();
  a.plan_append(0, {s}, {5});
  const Snapshot before = snapshot(a);
  for (std::int64_t n : {kMax, kMax - 1, kMax - 15, kMax / 2, std::int64_t(8 * 16 - 5 + 1)}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    EXPECT_THROW(a.reserve(s, n), OutOfResourcesError);
    EXPECT_THROW(a.reserve(empty, n + (n < kMax)), OutOfResourcesError);
    EXPECT_THROW(a.plan_append(0, {s}, {n}), OutOfResourcesError);
    EXPECT_THROW(a.plan_append(1, {empty, s}, {1, n}), OutOfResourcesError);
    EXPECT_THROW(a.plan_append(1, {s, empty}, {n, n}), OutOfResourcesError);
    EXPECT_EQ(snapshot(a), before);
  }
  a.reserve(s, 8 * 16 - 5);  // exactly the whole pool still works
  EXPECT_EQ(a.num_free_pages(), 0);
  a.check_invariants();
}

// cancel_append undoes a plan exactly (new pages, copy-on-write copies, lengths, even the free
// list's order), and only the latest change can be cancelled.
TEST(KVCacheAllocator, CancelAppendRestoresTheExactState) {
  KVPageAllocator a(16, 8, 2);
  auto s = a.add_sequence(), t = a.add_sequence();
  a.plan_append(0, {s}, {13});
  a.plan_append(1, {s}, {13});
  auto f = a.fork(s);  // shares both pages; the second is partial
  a.reserve(t, 3);
  const Snapshot before = snapshot(a);
  // f: copy-on-write of its partial page plus two new pages; t: its reserved page plus a new one.
  AppendPlan plan = a.plan_append(1, {f, t}, {12, 9});
  EXPECT_EQ(plan.copies.size(), 1u);
  EXPECT_NE(snapshot(a), before);
  a.cancel_append(plan);
  EXPECT_EQ(snapshot(a), before);
  a.check_invariants();
  expect_accounting(a);
  EXPECT_THROW(a.cancel_append(plan), Error);  // already cancelled
  EXPECT_EQ(snapshot(a), before);
  // The same append again gives the same plan (the free list's order was restored too).
  AppendPlan again = a.plan_append(1, {f, t}, {12, 9});
  EXPECT_EQ(again.slots, plan.slots);
  ASSERT_EQ(again.copies.size(), 1u);
  EXPECT_EQ(again.copies[0].dst, plan.copies[0].dst);
  // Any later change makes the plan uncancellable, and the failed cancel changes nothing.
  auto u = a.add_sequence();
  const Snapshot after = snapshot(a);
  EXPECT_THROW(a.cancel_append(again), Error);
  EXPECT_EQ(snapshot(a), after);
  a.free_sequence(u);
  EXPECT_THROW(a.cancel_append(AppendPlan{}), Error);  // a plan this allocator never made
  a.check_invariants();
}

// Threading contract: one allocator shared by several threads (each public call is atomic). Each
// thread works on its own sequences and also reads the shared state; afterwards every invariant
// holds and every sequence has exactly the lengths its thread gave it.
TEST(KVCacheAllocator, ConcurrentCallsFromSeveralThreadsKeepInvariants) {
  constexpr int kThreads = 4, kSteps = 100000;
  constexpr std::int64_t kPageSize = 8;
  KVPageAllocator a(4096, kPageSize, 2);
  std::vector<std::map<std::int64_t, std::int64_t>> mine(kThreads);  // per thread: seq -> layer-0 length
  std::vector<std::string> errors(kThreads);
  auto work = [&](int t) {
    std::mt19937_64 rng(1234 + t);
    auto& seqs = mine[t];
    try {
      for (int step = 0; step < kSteps; ++step) {
        const int op = std::uniform_int_distribution<int>(0, 99)(rng);
        if (seqs.size() < 2 || op < 10) {
          seqs[a.add_sequence()] = 0;
        } else {
          auto it = seqs.begin();
          std::advance(it, std::uniform_int_distribution<std::size_t>(0, seqs.size() - 1)(rng));
          const std::int64_t id = it->first;
          if (op < 30) {
            a.free_sequence(id);
            seqs.erase(it);
          } else if (op < 35) {
            const std::int64_t child = a.fork(id);
            seqs[child] = it->second;
          } else if (op < 45) {
            a.reserve(id, std::uniform_int_distribution<std::int64_t>(0, 20)(rng));
          } else if (op < 60) {
            std::int64_t width = 0;
            (void)a.page_table({id}, &width);
            (void)a.memory_stats();
            (void)a.num_free_pages();
            (void)a.free_pages();
            if (a.length(id, 0) != it->second) throw Error("length of sequence " + std::to_string(id) + " changed");
          } else {
            const std::int64_t n = std::uniform_int_distribution<std::int64_t>(0, 5)(rng);
            AppendPlan plan = a.plan_append(0, {id}, {n});
            if (std::int64_t(plan.slots.size()) != n) throw Error("plan with the wrong number of slots");
            it->second += n;
          }
        }
      }
    } catch (const OutOfResourcesError&) {
      // The pool is large enough for this mix; running out would mean lost pages.
      errors[t] = "ran out of pages";
    } catch (const std::exception& e) {
      errors[t] = e.what();
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(work, t);
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(errors[t], "") << "thread " << t;
  ASSERT_NO_THROW(a.check_invariants());
  expect_accounting(a);
  std::size_t live = 0;
  for (const auto& seqs : mine) {
    live += seqs.size();
    for (const auto& [id, len] : seqs) EXPECT_EQ(a.length(id, 0), len) << "sequence " << id;
  }
  EXPECT_EQ(a.sequence_ids().size(), live);
}

TEST(KVCacheLayoutArguments, ValidateNamesTheField) {
  KVCacheLayout l{2, 16, 16, 8, 128, DType::kFloat16};
  EXPECT_NO_THROW(validate_kv_layout(l, "t"));
  auto bad = l;
  bad.head_dim = 96;
  expect_argument_error([&] { validate_kv_layout(bad, "t"); }, "layout.head_dim");
  bad = l;
  bad.page_size = 24;
  expect_argument_error([&] { validate_kv_layout(bad, "t"); }, "layout.page_size");
  bad = l;
  bad.dtype = DType::kFloat32;
  expect_argument_error([&] { validate_kv_layout(bad, "t"); }, "layout.dtype");
  bad = l;
  bad.num_kv_heads = 1025;
  expect_argument_error([&] { validate_kv_layout(bad, "t"); }, "layout.num_kv_heads");
  expect_argument_error([&] { validate_kv_layout(bad, "t", ""); }, "num_kv_heads");
  // A pool whose byte size overflows int64 (every kernel offset would wrap).
  bad = l;
  bad.num_layers = std::int64_t(1) << 40;
  bad.num_pages = std::int64_t(1) << 30;
  expect_argument_error([&] { validate_kv_layout(bad, "t"); }, "layout.num_layers");
}

// The host half of the device-side index checks: each fault bit names its argument.
TEST(KVCacheLayoutArguments, IndexFaultsNameTheArgument) {
  KVCacheLayout l{2, 16, 16, 8, 128, DType::kFloat16};
  EXPECT_NO_THROW(throw_kv_index_faults(0, l, "t"));
  expect_argument_error([&] { throw_kv_index_faults(kKVFaultSlots, l, "t"); }, "slots");
  expect_argument_error([&] { throw_kv_index_faults(kKVFaultCopySrc | kKVFaultCopyDst, l, "t"); }, "src");
  expect_argument_error([&] { throw_kv_index_faults(kKVFaultCopyDst, l, "t"); }, "dst");
  expect_argument_error([&] { throw_kv_index_faults(kKVFaultPages, l, "t"); }, "pages");
  expect_argument_error([&] { throw_kv_index_faults(kKVFaultPageTable, l, "t"); }, "page_table");
  expect_argument_error([&] { throw_kv_index_faults(kKVFaultSeqLens | kKVFaultPageTable, l, "t"); }, "seq_lens");
  try {
    throw_kv_index_faults(kKVFaultSlots, l, "op");
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("[0, num_pages * page_size = 256)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(throw_kv_index_faults(1 << 20, l, "t"), Error);
}

}  // namespace
}  // namespace flashkernel
