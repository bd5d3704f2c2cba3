// Host-side page bookkeeping of the paged KV cache. Every mutating call validates and counts the
// pages it needs first, and only then changes state, so an error never leaves a half-done update.
// Every public member function takes the object's mutex; private helpers assume it is held.
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

// Callers keep tokens <= the pool's capacity (< 2^40), so this cannot overflow.
std::int64_t pages_for(std::int64_t tokens, std::int64_t page_size) { return (tokens + page_size - 1) / page_size; }

}  // namespace

void validate_kv_layout(const KVCacheLayout& l, const char* op, const char* field_prefix) {
  const std::string pre = field_prefix ? field_prefix : "";
  auto field = [&](const char* name) { return pre + name; };
  detail::require(l.num_layers >= 1, op, field("num_layers").c_str(),
                  "must be >= 1, got " + std::to_string(l.num_layers));
  detail::require(l.num_pages >= 1 && l.num_pages <= std::numeric_limits<std::int32_t>::max(), op,
                  field("num_pages").c_str(), "must be in [1, 2^31), got " + std::to_string(l.num_pages));
  detail::require(is_pow2(l.page_size) && l.page_size >= 8 && l.page_size <= 256, op, field("page_size").c_str(),
                  "must be a power of two in [8, 256], got " + std::to_string(l.page_size));
  detail::require(l.num_kv_heads >= 1 && l.num_kv_heads <= 1024, op, field("num_kv_heads").c_str(),
                  "must be in [1, 1024], got " + std::to_string(l.num_kv_heads));
  detail::require(l.head_dim == 64 || l.head_dim == 128, op, field("head_dim").c_str(),
                  "must be 64 or 128, got " + std::to_string(l.head_dim));
  detail::require(l.dtype == DType::kFloat16 || l.dtype == DType::kBFloat16 || l.dtype == DType::kFloat8E4M3, op,
                  field("dtype").c_str(),
                  std::string("must be float16, bfloat16 or float8_e4m3fn, got ") + dtype_name(l.dtype));
  if (l.quantized()) {
    detail::require(l.activation_dtype == DType::kFloat16 || l.activation_dtype == DType::kBFloat16, op,
                    field("activation_dtype").c_str(),
                    std::string("must be float16 or bfloat16 for a float8 pool, got ") + dtype_name(l.activation_dtype));
  }
  // One layer is below 2^31 pages * 2^19 elements; the layer count is the only unbounded factor,
  // and every byte offset the kernels form must fit in int64.
  const std::int64_t layer_bytes = l.layer_elems() * static_cast<std::int64_t>(dtype_size(l.dtype));
  detail::require(l.num_layers <= std::numeric_limits<std::int64_t>::max() / layer_bytes, op,
                  field("num_layers").c_str(),
                  "is too large: the pool would exceed 2^63 bytes (" + std::to_string(l.num_layers) + " layers of " +
                      std::to_string(layer_bytes) + " bytes)");
}

void validate_kv_scales(const KVCacheLayout& l, const KVScales& s, const char* op) {
  for (auto [ptr, name] : {std::pair{s.k, "scales.k"}, std::pair{s.v, "scales.v"}}) {
    if (l.quantized()) {
      detail::require(ptr != nullptr && reinterpret_cast<std::uintptr_t>(ptr) % 4 == 0, op, name,
                      "must be a 4-byte aligned float32 device array [num_layers, num_kv_heads] for a float8 pool");
    } else {
      detail::require(ptr == nullptr, op, name,
                      std::string("must be null for a ") + dtype_name(l.dtype) + " pool (scales are for float8 pools)");
    }
  }
}

void throw_kv_index_faults(std::int32_t faults, const KVCacheLayout& l, const char* op) {
  const std::string pages = "[0, num_pages = " + std::to_string(l.num_pages) + ")";
  if (faults & kKVFaultSlots) {
    throw ArgumentError(op, "slots",
                        "has entries outside [0, num_pages * page_size = " + std::to_string(l.num_pages * l.page_size) +
                            "); those tokens were not written (the others were)");
  }
  if (faults & kKVFaultCopySrc) {
    throw ArgumentError(op, "src", "has entries outside " + pages + "; those copies were skipped (the others were done)");
  }
  if (faults & kKVFaultCopyDst) {
    throw ArgumentError(op, "dst", "has entries outside " + pages + "; those copies were skipped (the others were done)");
  }
  if (faults & kKVFaultPages) {
    throw ArgumentError(op, "pages",
                        "has entries outside " + pages + " among the pages of the first 'length' tokens; those "
                        "tokens' outputs are NaN");
  }
  if (faults & kKVFaultSeqLens) {
    throw ArgumentError(op, "seq_lens",
                        "has entries outside [1, max_pages * page_size] (page_size " + std::to_string(l.page_size) +
                            ", max_pages the page table's width); those sequences' outputs are NaN");
  }
  if (faults & kKVFaultPageTable) {
    throw ArgumentError(op, "page_table",
                        "has entries outside " + pages + " among the pages of the first seq_lens[b] tokens of a "
                        "sequence; those sequences' outputs are NaN");
  }
  if (faults != 0) throw Error(std::string(op) + ": unknown index fault flags " + std::to_string(faults));
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

void KVPageAllocator::changed() {
  ++generation_;
  undo_plan_ = 0;
  undo_.clear();
}

std::int64_t KVPageAllocator::add_sequence() {
  std::lock_guard<std::mutex> lock(mutex_);
  Sequence s;
  s.lens.assign(static_cast<std::size_t>(num_layers_), 0);
  const std::int64_t id = next_id_;
  seqs_.emplace(id, std::move(s));
  ++next_id_;
  changed();
  return id;
}

void KVPageAllocator::reserve(std::int64_t seq_id, std::int64_t n_tokens) {
  constexpr const char* kOp = "KVPageAllocator.reserve";
  std::lock_guard<std::mutex> lock(mutex_);
  Sequence& s = get(seq_id, kOp, "seq_id");
  detail::require(n_tokens >= 0, kOp, "n_tokens", "must be >= 0, got " + std::to_string(n_tokens));
  auto out_of_pages = [&](const std::string& need) {
    return OutOfResourcesError("KVPageAllocator.reserve: out of pages: sequence " + std::to_string(seq_id) + " needs " +
                               need + " more page(s) for " + std::to_string(n_tokens) + " token(s) but only " +
                               std::to_string(free_count()) + " of " + std::to_string(num_pages_) + " are free");
  };
  // No sequence can hold more than the whole pool; comparing first keeps max_len + n_tokens
  // from overflowing for counts up to INT64_MAX.
  if (n_tokens > num_pages_ * page_size_ - s.max_len()) throw out_of_pages("more than the pool's");
  std::int64_t need = pages_for(s.max_len() + n_tokens, page_size_) - static_cast<std::int64_t>(s.pages.size());
  if (need <= 0) return;
  if (need > free_count()) throw out_of_pages(std::to_string(need));
  for (std::int64_t i = 0; i < need; ++i) s.pages.push_back(take_page());
  changed();
}

void KVPageAllocator::free_sequence(std::int64_t seq_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  Sequence& s = get(seq_id, "KVPageAllocator.free_sequence", "seq_id");
  for (std::int32_t p : s.pages) release_page(p);
  seqs_.erase(seq_id);
  changed();
}

std::int64_t KVPageAllocator::fork(std::int64_t seq_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  const Sequence& parent = get(seq_id, "KVPageAllocator.fork", "seq_id");
  // Only pages holding data are shared; pages the parent reserved ahead stay the parent's, so no
  // shared page is ever empty in every layer (writes into shared pages always go through a copy).
  Sequence child;
  child.lens = parent.lens;
  std::size_t used = static_cast<std::size_t>(pages_for(parent.max_len(), page_size_));
  child.pages.assign(parent.pages.begin(), parent.pages.begin() + static_cast<std::ptrdiff_t>(used));
  const std::int64_t id = next_id_;
  seqs_.emplace(id, std::move(child));
  for (std::int32_t p : seqs_.at(id).pages) ++refcount_[p];
  ++next_id_;
  changed();
  return id;
}

AppendPlan KVPageAllocator::plan_append(std::int64_t layer, const std::vector<std::int64_t>& seq_ids,
                                        const std::vector<std::int64_t>& counts) {
  constexpr const char* kOp = "KVPageAllocator.append";
  std::lock_guard<std::mutex> lock(mutex_);
  detail::require(layer >= 0 && layer < num_layers_, kOp, "layer",
                  "must be in [0, " + std::to_string(num_layers_) + "), got " + std::to_string(layer));
  detail::require(counts.size() == seq_ids.size(), kOp, "counts",
                  "must have one entry per sequence (" + std::to_string(seq_ids.size()) + "), got " +
                      std::to_string(counts.size()));
  // Pass 1: validate and count pages (new ones + private copies of shared ones). No state change.
  std::unordered_set<std::int64_t> seen;
  std::int64_t need = 0, total_tokens = 0;
  auto out_of_pages = [&](const std::string& what) {
    return OutOfResourcesError("KVPageAllocator.append: out of pages: " + what + " but only " +
                               std::to_string(free_count()) + " of " + std::to_string(num_pages_) + " are free");
  };
  for (std::size_t i = 0; i < seq_ids.size(); ++i) {
    const Sequence& s = get(seq_ids[i], kOp, "seq_ids");
    detail::require(seen.insert(seq_ids[i]).second, kOp, "seq_ids",
                    "lists sequence " + std::to_string(seq_ids[i]) + " more than once");
    detail::require(counts[i] >= 0, kOp, "counts", "must be >= 0, got " + std::to_string(counts[i]));
    if (counts[i] == 0) continue;
    const std::int64_t begin = s.lens[layer];
    // Checked before `begin + counts[i]`, which could overflow for counts near INT64_MAX.
    if (counts[i] > num_pages_ * page_size_ - begin) {
      throw out_of_pages("sequence " + std::to_string(seq_ids[i]) + " would hold more than the pool's " +
                         std::to_string(num_pages_ * page_size_) + " tokens");
    }
    const std::int64_t end = begin + counts[i];
    const std::int64_t have = static_cast<std::int64_t>(s.pages.size());
    const std::int64_t last_page = pages_for(end, page_size_);  // one past the last page touched
    need += std::max<std::int64_t>(0, last_page - have);
    for (std::int64_t pi = begin / page_size_; pi < std::min(last_page, have); ++pi) {
      if (refcount_[s.pages[pi]] > 1) ++need;
    }
    // Once the batch cannot fit, the exact counts no longer matter; capping them keeps both far
    // from overflowing however many sequences and tokens the call lists.
    need = std::min(need, free_count() + 1);
    if (need <= free_count()) total_tokens += counts[i];
  }
  if (need > free_count()) {
    throw out_of_pages("the append needs at least " + std::to_string(need) + " page(s)");
  }
  // Pass 2: commit, recording what changes so that cancel_append can undo it exactly.
  AppendPlan plan;
  plan.slots.reserve(static_cast<std::size_t>(total_tokens));
  std::vector<AppendUndo> undo;
  undo.reserve(seq_ids.size());
  for (std::size_t i = 0; i < seq_ids.size(); ++i) {
    if (counts[i] == 0) continue;
    Sequence& s = seqs_.at(seq_ids[i]);
    const std::int64_t begin = s.lens[layer], end = begin + counts[i];
    const std::int64_t last_page = pages_for(end, page_size_);
    undo.push_back({seq_ids[i], begin, s.pages.size(), begin / page_size_, last_page, {}});
    for (std::int64_t pi = begin / page_size_; pi < last_page; ++pi) {
      if (pi >= static_cast<std::int64_t>(s.pages.size())) {
        s.pages.push_back(take_page());
      } else if (refcount_[s.pages[pi]] > 1) {
        // Copy-on-write: the other owners keep the original; this sequence gets a copy.
        std::int32_t copy = take_page();
        plan.copies.push_back({s.pages[pi], copy});
        undo.back().cow.emplace_back(pi, s.pages[pi]);
        --refcount_[s.pages[pi]];
        s.pages[pi] = copy;
      }
    }
    for (std::int64_t t = begin; t < end; ++t) {
      plan.slots.push_back(std::int64_t(s.pages[t / page_size_]) * page_size_ + t % page_size_);
    }
    s.lens[layer] = end;
  }
  changed();
  plan.id = generation_;
  undo_plan_ = generation_;
  undo_layer_ = layer;
  undo_ = std::move(undo);
  return plan;
}

void KVPageAllocator::cancel_append(const AppendPlan& plan) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (plan.id == 0 || plan.id != undo_plan_) {
    throw Error("KVPageAllocator.cancel_append: the plan is not the allocator's latest change (another call "
                "changed it since, or the plan was already cancelled); nothing was undone");
  }
  // Exactly the reverse of plan_append's pass 2: pages go back onto the free stack in the
  // reverse of the order they were taken, so the free list is restored as it was.
  for (auto u = undo_.rbegin(); u != undo_.rend(); ++u) {
    Sequence& s = seqs_.at(u->seq_id);
    auto cow = u->cow.rbegin();
    for (std::int64_t pi = u->end_page - 1; pi >= u->first_page; --pi) {
      if (pi >= static_cast<std::int64_t>(u->old_num_pages)) {
        const std::int32_t page = s.pages.back();
        s.pages.pop_back();
        release_page(page);
      } else if (cow != u->cow.rend() && cow->first == pi) {
        const std::int32_t copy = s.pages[pi];
        s.pages[pi] = cow->second;
        ++refcount_[cow->second];
        release_page(copy);
        ++cow;
      }
    }
    s.lens[undo_layer_] = u->old_len;
  }
  changed();
}

std::vector<std::int32_t> KVPageAllocator::page_table(const std::vector<std::int64_t>& seq_ids,
                                                      std::int64_t* max_pages) const {
  std::lock_guard<std::mutex> lock(mutex_);
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
  std::lock_guard<std::mutex> lock(mutex_);
  const Sequence& s = get(seq_id, "KVPageAllocator.length", "seq_id");
  if (layer < 0) return s.max_len();
  detail::require(layer < num_layers_, "KVPageAllocator.length", "layer",
                  "must be in [0, " + std::to_string(num_layers_) + "), got " + std::to_string(layer));
  return s.lens[layer];
}

std::vector<std::int32_t> KVPageAllocator::pages(std::int64_t seq_id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return get(seq_id, "KVPageAllocator.pages", "seq_id").pages;
}

bool KVPageAllocator::has_sequence(std::int64_t seq_id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return seqs_.count(seq_id) != 0;
}

std::int64_t KVPageAllocator::num_free_pages() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return free_count();
}

std::vector<std::int32_t> KVPageAllocator::free_pages() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return free_;
}

std::vector<std::int64_t> KVPageAllocator::sequence_ids() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::int64_t> ids;
  ids.reserve(seqs_.size());
  for (const auto& kv : seqs_) ids.push_back(kv.first);
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::int32_t KVPageAllocator::refcount(std::int64_t page) const {
  std::lock_guard<std::mutex> lock(mutex_);
  detail::require(page >= 0 && page < num_pages_, "KVPageAllocator.refcount", "page",
                  "must be in [0, " + std::to_string(num_pages_) + "), got " + std::to_string(page));
  return refcount_[page];
}

KVMemoryStats KVPageAllocator::memory_stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  KVMemoryStats st;
  st.pages_total = num_pages_;
  st.pages_free = free_count();
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
  std::lock_guard<std::mutex> lock(mutex_);
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
  if (referenced + free_count() != num_pages_) fail("free + referenced pages != all pages");
}

}  // namespace flashkernel
