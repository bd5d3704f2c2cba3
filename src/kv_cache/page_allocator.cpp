// Host-side page bookkeeping of the paged KV cache. Every mutating call validates and counts the
// pages it needs first, and only then changes state, so an error never leaves a half-done update.
#include <algorithm>
#include <limits>
#include <string>
#include <unordered_set>

#include "common/arg_check.h"
#include "flashkernel/kv_cache.h"
#include "flashkernel/status.h"

namespace flashkernel {
namespace {

bool is_pow2(std::int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

std::int64_t pages_for(std::int64_t tokens, std::int64_t page_size) { return (tokens + page_size - 1) / page_size; }

}  // namespace

void validate_kv_layout(const KVCacheLayout& l, const char* op) {
  detail::require(l.num_layers >= 1, op, "layout.num_layers", "must be >= 1, got " + std::to_string(l.num_layers));
  detail::require(l.num_pages >= 1 && l.num_pages <= std::numeric_limits<std::int32_t>::max(), op,
                  "layout.num_pages", "must be in [1, 2^31), got " + std::to_string(l.num_pages));
  detail::require(is_pow2(l.page_size) && l.page_size >= 8 && l.page_size <= 256, op, "layout.page_size",
                  "must be a power of two in [8, 256], got " + std::to_string(l.page_size));
  detail::require(l.num_kv_heads >= 1 && l.num_kv_heads <= 1024, op, "layout.num_kv_heads",
                  "must be in [1, 1024], got " + std::to_string(l.num_kv_heads));
  detail::require(l.head_dim == 64 || l.head_dim == 128, op, "layout.head_dim",
                  "must be 64 or 128, got " + std::to_string(l.head_dim));
  detail::require(l.dtype == DType::kFloat16 || l.dtype == DType::kBFloat16, op, "layout.dtype",
                  std::string("must be float16 or bfloat16, got ") + dtype_name(l.dtype));
}

std::int64_t KVPageAllocator::Sequence::max_len() const {
  return lens.empty() ? 0 : *std::max_element(lens.begin(), lens.end());
}

KVPageAllocator::KVPageAllocator(std::int64_t num_pages, std::int64_t page_size, std::int64_t num_layers)
    : num_pages_(num_pages), page_size_(page_size), num_layers_(num_layers) {
  constexpr const char* kOp = "KVPageAllocator";
  detail::require(num_pages >= 1 && num_pages <= std::numeric_limits<std::int32_t>::max(), kOp, "num_pages",
                  "must be in [1, 2^31), got " + std::to_string(num_pages));
  detail::require(is_pow2(page_size) && page_size >= 8 && page_size <= 256, kOp, "page_size",
                  "must be a power of two in [8, 256], got " + std::to_string(page_size));
  detail::require(num_layers >= 1, kOp, "num_layers", "must be >= 1, got " + std::to_string(num_layers));
  refcount_.assign(static_cast<std::size_t>(num_pages), 0);
  free_.reserve(static_cast<std::size_t>(num_pages));
  // Stack order: page 0 is handed out first, so a fresh cache fills the pool from the front.
  for (std::int64_t p = num_pages - 1; p >= 0; --p) free_.push_back(static_cast<std::int32_t>(p));
}

KVPageAllocator::Sequence& KVPageAllocator::get(std::int64_t seq_id, const char* op, const char* argument) {
  auto it = seqs_.find(seq_id);
  detail::require(it != seqs_.end(), op, argument,
                  "is " + std::to_string(seq_id) + ", which is not a live sequence (never added, or freed)");
  return it->second;
}

const KVPageAllocator::Sequence& KVPageAllocator::get(std::int64_t seq_id, const char* op,
                                                      const char* argument) const {
  return const_cast<KVPageAllocator*>(this)->get(seq_id, op, argument);
}

std::int32_t KVPageAllocator::take_page() {
  // Callers have checked the count; an empty free list here is a bookkeeping bug.
  if (free_.empty()) throw Error("KVPageAllocator: internal error: free list empty after the page count check");
  std::int32_t p = free_.back();
  free_.pop_back();
  refcount_[p] = 1;
  return p;
}

void KVPageAllocator::release_page(std::int32_t page) {
  if (--refcount_[page] == 0) free_.push_back(page);
}

std::int64_t KVPageAllocator::add_sequence() {
  std::int64_t id = next_id_++;
  Sequence s;
  s.lens.assign(static_cast<std::size_t>(num_layers_), 0);
  seqs_.emplace(id, std::move(s));
  return id;
}

void KVPageAllocator::reserve(std::int64_t seq_id, std::int64_t n_tokens) {
  constexpr const char* kOp = "KVPageAllocator.reserve";
  Sequence& s = get(seq_id, kOp, "seq_id");
  detail::require(n_tokens >= 0, kOp, "n_tokens", "must be >= 0, got " + std::to_string(n_tokens));
  std::int64_t need = pages_for(s.max_len() + n_tokens, page_size_) - static_cast<std::int64_t>(s.pages.size());
  if (need <= 0) return;
  if (need > num_free_pages()) {
    throw OutOfResourcesError("KVPageAllocator.reserve: out of pages: sequence " + std::to_string(seq_id) +
                              " needs " + std::to_string(need) + " more page(s) for " + std::to_string(n_tokens) +
                              " token(s) but only " + std::to_string(num_free_pages()) + " of " +
                              std::to_string(num_pages_) + " are free");
  }
  for (std::int64_t i = 0; i < need; ++i) s.pages.push_back(take_page());
}

void KVPageAllocator::free_sequence(std::int64_t seq_id) {
  Sequence& s = get(seq_id, "KVPageAllocator.free_sequence", "seq_id");
  for (std::int32_t p : s.pages) release_page(p);
  seqs_.erase(seq_id);
}

std::int64_t KVPageAllocator::fork(std::int64_t seq_id) {
  const Sequence& parent = get(seq_id, "KVPageAllocator.fork", "seq_id");
  // Only pages holding data are shared; pages the parent reserved ahead stay the parent's, so no
  // shared page is ever empty in every layer (writes into shared pages always go through a copy).
  Sequence child;
  child.lens = parent.lens;
  std::size_t used = static_cast<std::size_t>(pages_for(parent.max_len(), page_size_));
  child.pages.assign(parent.pages.begin(), parent.pages.begin() + static_cast<std::ptrdiff_t>(used));
  for (std::int32_t p : child.pages) ++refcount_[p];
  std::int64_t id = next_id_++;
  seqs_.emplace(id, std::move(child));
  return id;
}

AppendPlan KVPageAllocator::plan_append(std::int64_t layer, const std::vector<std::int64_t>& seq_ids,
                                        const std::vector<std::int64_t>& counts) {
  constexpr const char* kOp = "KVPageAllocator.append";
  detail::require(layer >= 0 && layer < num_layers_, kOp, "layer",
                  "must be in [0, " + std::to_string(num_layers_) + "), got " + std::to_string(layer));
  detail::require(counts.size() == seq_ids.size(), kOp, "counts",
                  "must have one entry per sequence (" + std::to_string(seq_ids.size()) + "), got " +
                      std::to_string(counts.size()));
  // Pass 1: validate and count pages (new ones + private copies of shared ones). No state change.
  std::unordered_set<std::int64_t> seen;
  std::int64_t need = 0, total_tokens = 0;
  for (std::size_t i = 0; i < seq_ids.size(); ++i) {
    const Sequence& s = get(seq_ids[i], kOp, "seq_ids");
    detail::require(seen.insert(seq_ids[i]).second, kOp, "seq_ids",
                    "lists sequence " + std::to_string(seq_ids[i]) + " more than once");
    detail::require(counts[i] >= 0, kOp, "counts", "must be >= 0, got " + std::to_string(counts[i]));
    if (counts[i] == 0) continue;
    const std::int64_t begin = s.lens[layer], end = begin + counts[i];
    const std::int64_t have = static_cast<std::int64_t>(s.pages.size());
    const std::int64_t last_page = pages_for(end, page_size_);  // one past the last page touched
    need += std::max<std::int64_t>(0, last_page - have);
    for (std::int64_t pi = begin / page_size_; pi < std::min(last_page, have); ++pi) {
      if (refcount_[s.pages[pi]] > 1) ++need;
    }
    total_tokens += counts[i];
  }
  if (need > num_free_pages()) {
    throw OutOfResourcesError("KVPageAllocator.append: out of pages: appending " + std::to_string(total_tokens) +
                              " token(s) needs " + std::to_string(need) + " page(s) but only " +
                              std::to_string(num_free_pages()) + " of " + std::to_string(num_pages_) +
                              " are free");
  }
  // Pass 2: commit.
  AppendPlan plan;
  plan.slots.reserve(static_cast<std::size_t>(total_tokens));
  for (std::size_t i = 0; i < seq_ids.size(); ++i) {
    if (counts[i] == 0) continue;
    Sequence& s = seqs_.at(seq_ids[i]);
    const std::int64_t begin = s.lens[layer], end = begin + counts[i];
    const std::int64_t last_page = pages_for(end, page_size_);
    for (std::int64_t pi = begin / page_size_; pi < last_page; ++pi) {
      if (pi >= static_cast<std::int64_t>(s.pages.size())) {
        s.pages.push_back(take_page());
      } else if (refcount_[s.pages[pi]] > 1) {
        // Copy-on-write: the other owners keep the original; this sequence gets a copy.
        std::int32_t copy = take_page();
        plan.copies.push_back({s.pages[pi], copy});
        --refcount_[s.pages[pi]];
        s.pages[pi] = copy;
      }
    }
    for (std::int64_t t = begin; t < end; ++t) {
      plan.slots.push_back(std::int64_t(s.pages[t / page_size_]) * page_size_ + t % page_size_);
    }
    s.lens[layer] = end;
  }
  return plan;
}

std::vector<std::int32_t> KVPageAllocator::page_table(const std::vector<std::int64_t>& seq_ids,
                                                      std::int64_t* max_pages) const {
  std::int64_t width = 1;
  for (std::int64_t id : seq_ids) {
    width = std::max<std::int64_t>(width, get(id, "KVPageAllocator.page_table", "seq_ids").pages.size());
  }
  std::vector<std::int32_t> table(seq_ids.size() * static_cast<std::size_t>(width), 0);
  for (std::size_t b = 0; b < seq_ids.size(); ++b) {
    const auto& pages = seqs_.at(seq_ids[b]).pages;
    std::copy(pages.begin(), pages.end(), table.begin() + static_cast<std::ptrdiff_t>(b * width));
  }
  if (max_pages) *max_pages = width;
  return table;
}

std::int64_t KVPageAllocator::length(std::int64_t seq_id, std::int64_t layer) const {
  const Sequence& s = get(seq_id, "KVPageAllocator.length", "seq_id");
  if (layer < 0) return s.max_len();
  detail::require(layer < num_layers_, "KVPageAllocator.length", "layer",
                  "must be in [0, " + std::to_string(num_layers_) + "), got " + std::to_string(layer));
  return s.lens[layer];
}

const std::vector<std::int32_t>& KVPageAllocator::pages(std::int64_t seq_id) const {
  return get(seq_id, "KVPageAllocator.pages", "seq_id").pages;
}

std::vector<std::int64_t> KVPageAllocator::sequence_ids() const {
  std::vector<std::int64_t> ids;
  ids.reserve(seqs_.size());
  for (const auto& kv : seqs_) ids.push_back(kv.first);
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::int32_t KVPageAllocator::refcount(std::int64_t page) const {
  detail::require(page >= 0 && page < num_pages_, "KVPageAllocator.refcount", "page",
                  "must be in [0, " + std::to_string(num_pages_) + "), got " + std::to_string(page));
  return refcount_[page];
}

KVMemoryStats KVPageAllocator::memory_stats() const {
  KVMemoryStats st;
  st.pages_total = num_pages_;
  st.pages_free = num_free_pages();
  st.pages_used = num_pages_ - st.pages_free;
  st.num_sequences = static_cast<std::int64_t>(seqs_.size());
  st.token_slots_allocated = st.pages_used * page_size_;
  // A page's used slots: the most any of its owners (in any layer) stored in it.
  std::vector<std::int64_t> used(static_cast<std::size_t>(num_pages_), 0);
  for (const auto& kv : seqs_) {
    const std::int64_t len = kv.second.max_len();
    for (std::size_t i = 0; i < kv.second.pages.size(); ++i) {
      std::int64_t u = std::clamp<std::int64_t>(len - std::int64_t(i) * page_size_, 0, page_size_);
      used[kv.second.pages[i]] = std::max(used[kv.second.pages[i]], u);
    }
  }
  for (std::int64_t u : used) st.tokens_stored += u;
  st.fragmentation_tokens = st.token_slots_allocated - st.tokens_stored;
  return st;
}

void KVPageAllocator::check_invariants() const {
  auto fail = [](const std::string& what) { throw Error("KVPageAllocator: invariant violated: " + what); };
  std::vector<std::int32_t> refs(static_cast<std::size_t>(num_pages_), 0);
  for (const auto& kv : seqs_) {
    const Sequence& s = kv.second;
    if (static_cast<std::int64_t>(s.lens.size()) != num_layers_) fail("sequence with wrong layer count");
    if (pages_for(s.max_len(), page_size_) > static_cast<std::int64_t>(s.pages.size())) {
      fail("sequence " + std::to_string(kv.first) + " stores more tokens than its pages hold");
    }
    std::unordered_set<std::int32_t> own;
    for (std::int32_t p : s.pages) {
      if (p < 0 || p >= num_pages_) fail("page id out of range");
      if (!own.insert(p).second) fail("sequence " + std::to_string(kv.first) + " lists a page twice");
      ++refs[p];
    }
  }
  std::vector<char> is_free(static_cast<std::size_t>(num_pages_), 0);
  for (std::int32_t p : free_) {
    if (p < 0 || p >= num_pages_) fail("free page id out of range");
    if (is_free[p]) fail("page " + std::to_string(p) + " is on the free list twice");
    is_free[p] = 1;
  }
  std::int64_t referenced = 0;
  for (std::int64_t p = 0; p < num_pages_; ++p) {
    if (refs[p] != refcount_[p]) fail("page " + std::to_string(p) + " reference count disagrees with its owners");
    if (refs[p] > 0 && is_free[p]) fail("page " + std::to_string(p) + " is both free and owned");
    if (refs[p] == 0 && !is_free[p]) fail("page " + std::to_string(p) + " is lost (neither free nor owned)");
    referenced += refs[p] > 0;
  }
  if (referenced + num_free_pages() != num_pages_) fail("free + referenced pages != all pages");
}

}  // namespace flashkernel
