// Paged KV cache: a pool of fixed-size pages on the device, host-side bookkeeping that hands pages
// to sequences as they grow (free list, reference counts, copy-on-write after fork), and the
// kernels that write into, read out of and attend over the pages where they lie.
//
// Pool layout (one device allocation per cache, all layers):
//   [num_layers, num_pages, 2 (K, V), num_kv_heads, page_size, head_dim]
// Head-major inside a page: the page_size x head_dim slab of one head is contiguous (>= 1 KiB), so
// decode attention (one CTA per KV head) and gather read long contiguous runs. A page id names the
// same slot in every layer, so one page table serves all layers.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "flashkernel/tensor.h"

namespace flashkernel {

// Geometry of a paged pool. page_size: a power of two in [8, 256]; head_dim: 64 or 128.
// dtype: the element type stored in the pool, float16, bfloat16 or float8_e4m3fn. A float16 /
// bfloat16 pool is read and written in its own dtype. A float8 pool (an FP8 KV cache) stores
// e4m3(x / scale) with a per-(layer, KV head) scale (KVScales) and is read and written in
// activation_dtype (float16 or bfloat16): the K/V given to append, gather's outputs, and decode's
// q and out. activation_dtype is not consulted for a 16-bit pool (io_dtype() is then dtype).
struct KVCacheLayout {
  std::int64_t num_layers = 0;
  std::int64_t num_pages = 0;
  std::int64_t page_size = 16;
  std::int64_t num_kv_heads = 0;
  std::int64_t head_dim = 0;
  DType dtype = DType::kFloat16;
  DType activation_dtype = DType::kFloat16;

  bool quantized() const { return dtype == DType::kFloat8E4M3; }
  // The dtype of the tensors the kernels exchange with the caller.
  DType io_dtype() const { return quantized() ? activation_dtype : dtype; }

  // Elements of one page of one layer (K and V, all heads).
  std::int64_t page_elems() const { return 2 * num_kv_heads * page_size * head_dim; }
  std::int64_t layer_elems() const { return num_pages * page_elems(); }
  std::int64_t total_elems() const { return num_layers * layer_elems(); }
  std::size_t bytes() const { return static_cast<std::size_t>(total_elems()) * dtype_size(dtype); }
};

// Throws ArgumentError (argument "<field_prefix><field>", e.g. "layout.num_kv_heads") unless the
// layout is one the kernels support and its total size fits in int64 bytes.
void validate_kv_layout(const KVCacheLayout& layout, const char* op, const char* field_prefix = "layout.");

// Dequantization scales of a float8 pool: float32 device arrays [num_layers, num_kv_heads]; the
// value of a stored K element of (layer, KV head h) is k[layer * num_kv_heads + h] * e4m3 value
// (V likewise). append stores e4m3(x / scale), rounded to nearest even and saturated to +-448
// (e4m3's largest finite value), so an outlier never becomes NaN. The caller chooses the scales
// (PagedKVCache: 1.0, set_scales, or calibrate = amax / 448) and must keep them fixed while a
// layer holds tokens written with them. Required (non-null, finite, > 0) for a float8 pool;
// must be null for a 16-bit pool.
struct KVScales {
  const float* k = nullptr;
  const float* v = nullptr;
};

// Throws ArgumentError (argument "scales.k" / "scales.v") unless the pointers are given (4-byte
// aligned) for a float8 pool and null for a 16-bit one. The values live on the device and are not
// checked: a zero or non-finite scale gives non-finite outputs.
void validate_kv_scales(const KVCacheLayout& layout, const KVScales& scales, const char* op);

// A copy-on-write page copy the caller must perform (all layers) before writing into `dst`.
struct PageCopy {
  std::int32_t src = 0;
  std::int32_t dst = 0;
};

// Where the tokens of one append go: slots[t] = page * page_size + offset for the t-th token (the
// tokens of seq_ids[0] first, then seq_ids[1], ...), and the page copies to do before writing.
// `id` names the plan for KVPageAllocator::cancel_append.
struct AppendPlan {
  std::vector<std::int64_t> slots;
  std::vector<PageCopy> copies;
  std::uint64_t id = 0;
};

struct KVMemoryStats {
  std::int64_t pages_total = 0;
  std::int64_t pages_used = 0;   // referenced by at least one sequence
  std::int64_t pages_free = 0;
  std::int64_t num_sequences = 0;
  std::int64_t token_slots_allocated = 0;  // pages_used * page_size
  std::int64_t tokens_stored = 0;          // distinct token slots holding data (shared prefixes once)
  std::int64_t fragmentation_tokens = 0;   // allocated but unused token slots
};

// Host-side page bookkeeping; touches no GPU memory (callers perform the returned page copies).
// Every mutating call is all-or-nothing: on an error (unknown sequence, out of pages) it throws
// before changing any state. Invariant after every call: free pages + referenced pages = all
// pages, and each page's reference count equals the number of sequences listing it.
//
// Threads: every public call locks the object's own mutex, so one allocator may be shared by
// several threads; each call is atomic, but a sequence of calls is not (another thread's calls
// may come in between). Accessors return copies, never references into the guarded state.
class KVPageAllocator {
 public:
  KVPageAllocator(std::int64_t num_pages, std::int64_t page_size, std::int64_t num_layers);

  std::int64_t add_sequence();
  // Makes room for n_tokens more tokens after the sequence's longest layer (allocates pages only).
  // A count the pool could never hold (up to INT64_MAX) is an out-of-pages error, not an overflow.
  void reserve(std::int64_t seq_id, std::int64_t n_tokens);
  void free_sequence(std::int64_t seq_id);
  // A new sequence sharing every page that holds data (reference counted, no copy).
  std::int64_t fork(std::int64_t seq_id);
  // Plans writing counts[i] tokens of `layer` for seq_ids[i] (distinct ids): allocates missing
  // pages, replaces every shared page the write touches by a private copy (copy-on-write), and
  // advances that layer's lengths. Throws OutOfResourcesError (state unchanged) when the pool
  // cannot hold the whole batch.
  AppendPlan plan_append(std::int64_t layer, const std::vector<std::int64_t>& seq_ids,
                         const std::vector<std::int64_t>& counts);
  // Undoes plan_append's bookkeeping, for a caller whose page copies or writes failed after the
  // plan: pages, reference counts, free list and lengths return exactly to their state before
  // it. Only the most recent change can be undone: throws flashkernel::Error (changing nothing)
  // when any other mutating call came after `plan`, or when it was already cancelled.
  void cancel_append(const AppendPlan& plan);

  // Row-major int32 [seq_ids.size(), *max_pages] page table, rows padded with page 0 (never read:
  // kernels stop at the sequence length). *max_pages >= 1.
  std::vector<std::int32_t> page_table(const std::vector<std::int64_t>& seq_ids, std::int64_t* max_pages) const;
  // Tokens stored for `layer`; layer -1: the longest layer.
  std::int64_t length(std::int64_t seq_id, std::int64_t layer = -1) const;
  std::vector<std::int32_t> pages(std::int64_t seq_id) const;
  std::vector<std::int64_t> sequence_ids() const;
  bool has_sequence(std::int64_t seq_id) const;
  std::int32_t refcount(std::int64_t page) const;
  std::int64_t num_free_pages() const;
  std::vector<std::int32_t> free_pages() const;
  KVMemoryStats memory_stats() const;
  // Recomputes every invariant from scratch; throws flashkernel::Error describing a violation.
  void check_invariants() const;

  std::int64_t num_pages() const { return num_pages_; }
  std::int64_t page_size() const { return page_size_; }
  std::int64_t num_layers() const { return num_layers_; }

 private:
  struct Sequence {
    std::vector<std::int32_t> pages;
    std::vector<std::int64_t> lens;  // per layer
    std::int64_t max_len() const;
  };
  // What the latest plan_append changed in one sequence, enough to undo it exactly.
  struct AppendUndo {
    std::int64_t seq_id, old_len;
    std::size_t old_num_pages;
    std::int64_t first_page, end_page;                         // page indices the plan touched
    std::vector<std::pair<std::int64_t, std::int32_t>> cow;  // (page index, page it replaced)
  };
  Sequence& get(std::int64_t seq_id, const char* op, const char* argument);
  const Sequence& get(std::int64_t seq_id, const char* op, const char* argument) const;
  std::int64_t free_count() const { return static_cast<std::int64_t>(free_.size()); }
  std::int32_t take_page();
  void release_page(std::int32_t page);
  // Called by every successful mutating call: the latest plan_append can no longer be cancelled.
  void changed();

  std::int64_t num_pages_, page_size_, num_layers_;
  std::vector<std::int32_t> free_;      // stack of free page ids
  std::vector<std::int32_t> refcount_;  // per page
  std::unordered_map<std::int64_t, Sequence> seqs_;
  std::int64_t next_id_ = 0;
  std::uint64_t generation_ = 0;  // count of successful mutating calls
  std::int64_t undo_layer_ = 0;
  std::uint64_t undo_plan_ = 0;   // id of the plan undo_ describes (0: none)
  std::vector<AppendUndo> undo_;
  mutable std::mutex mutex_;
};

// ----------------------------------------------------------------------------- kernels
// `pool` is a device array with `layout` (see top of file); all index arrays live on the device.
//
// Index faults. Slots, page ids and sequence lengths live on the device, where the host cannot
// check them before the launch, so the kernels check each one before using it as an address: an
// out-of-range entry never reads or writes outside the pool or the outputs. Instead it is skipped
// (append: that token is not written; copy_pages: that pair is not copied) or its output is NaN
// (gather: that token's rows; decode: that sequence's heads), and, when `error_flag` is given (a
// device int32 the caller zeroed), the KVIndexFault bit naming the argument is OR-ed into it. The
// other entries of the same call are processed as usual. To raise, read the flag once the stream
// has passed the launch and call throw_kv_index_faults.
enum KVIndexFault : std::int32_t {
  kKVFaultSlots = 1 << 0,      // append: slots[t] outside [0, num_pages * page_size)
  kKVFaultCopySrc = 1 << 1,    // copy_pages: src[i] outside [0, num_pages)
  kKVFaultCopyDst = 1 << 2,    // copy_pages: dst[i] outside [0, num_pages)
  kKVFaultPages = 1 << 3,      // gather: one of the first ceil(length / page_size) pages outside [0, num_pages)
  kKVFaultPageTable = 1 << 4,  // decode: a page_table entry within seq_lens[b] outside [0, num_pages)
  kKVFaultSeqLens = 1 << 5,    // decode: seq_lens[b] outside [1, max_pages * page_size]
};

// Throws ArgumentError naming the argument of the first fault in `faults` (a flag's value); does
// nothing for 0. `op` prefixes the message.
void throw_kv_index_faults(std::int32_t faults, const KVCacheLayout& layout, const char* op);

// Writes num_tokens rows of K and V ([num_tokens, num_kv_heads, head_dim], contiguous, in
// layout.io_dtype()) of `layer` into the slots of an AppendPlan (int64 slot = page * page_size +
// offset); a float8 pool stores them quantized with `scales` (see KVScales).
void kv_cache_append(void* pool, const KVCacheLayout& layout, std::int64_t layer, const std::int64_t* slots,
                     std::int64_t num_tokens, const void* k, const void* v, cudaStream_t stream = nullptr,
                     std::int32_t* error_flag = nullptr, KVScales scales = {});

// Copies whole pages (every layer, K and V), byte for byte: pool[:, dst[i]] = pool[:, src[i]].
void kv_cache_copy_pages(void* pool, const KVCacheLayout& layout, const std::int32_t* src, const std::int32_t* dst,
                         std::int64_t num_copies, cudaStream_t stream = nullptr, std::int32_t* error_flag = nullptr);

// Contiguous copies of one sequence's K and V of `layer`: k_out, v_out [num_kv_heads, length,
// head_dim] in layout.io_dtype() (a float8 pool's values dequantized: scale * e4m3 value, rounded
// once). `pages` lists the sequence's pages in order (at least ceil(length / page_size)).
void kv_cache_gather(const void* pool, const KVCacheLayout& layout, std::int64_t layer, const std::int32_t* pages,
                     std::int64_t length, void* k_out, void* v_out, cudaStream_t stream = nullptr,
                     std::int32_t* error_flag = nullptr, KVScales scales = {});

// Decode attention straight from the pages: out[b, h] = softmax(scale * q[b, h] . K_b^T) V_b for
// one query token per sequence, K_b/V_b the first seq_lens[b] tokens of the KV head h / group.
// q, out: [batch, num_q_heads, head_dim] contiguous; page_table: int32 [batch, max_pages];
// seq_lens: int32 [batch], each in [1, max_pages * page_size]; max_seq_len >= every seq_lens[b]
// (it sizes the split-KV grid; a larger value only costs idle blocks). Long contexts are split
// across blocks whose partial results are merged by their log-sum-exps; the workspace holds them.
// error_flag: see "Index faults" above (kKVFaultSeqLens, kKVFaultPageTable).
// The kernel loop paged_decode_attention runs, for A/B measurements and tests; kAuto chooses
// kTensorCoreRing (every group size) on compute capability 8.0+ and kCudaCore below.
// kTensorCore applies to groups of 4-8 (smaller groups run kCudaCore); the tensor-core variants
// need 7.5+ (fp16 only below 8.0). A float8 pool is read by the ring variants only (any other
// variant is an ArgumentError naming `variant`) and needs 8.0+: q and out are in
// layout.activation_dtype, the FP8 rows are converted to it in registers (exactly: every e4m3
// value is a float16 and a bfloat16 value), k scale is folded into the softmax scale and v scale
// into the output, and every product accumulates in fp32.
enum class PagedDecodeVariant : int {
  kAuto = -1,
  kCudaCore = 0,           // 4 rows per lane per iteration, loads then math
  kCudaCorePrefetch2 = 1,  // 2 rows, the next tile's loads prefetched
  kCudaCorePrefetch4 = 2,  // 4 rows, prefetched
  kTensorCore = 3,         // mma.sync for groups of 4-8 heads, K/V loaded into registers
  kTensorCoreRing = 4,     // mma.sync for every group size, K/V through a cp.async shared-memory ring
  kTensorCoreRing2 = 5,    // the same with a 2-stage ring (less shared memory, more CTAs per SM)
};

struct PagedDecodeArgs {
  const void* q = nullptr;
  void* out = nullptr;
  std::int64_t batch = 0;
  std::int64_t num_q_heads = 0;
  const void* pool = nullptr;
  KVCacheLayout layout;
  std::int64_t layer = 0;
  const std::int32_t* page_table = nullptr;
  std::int64_t max_pages = 0;
  const std::int32_t* seq_lens = nullptr;
  std::int64_t max_seq_len = 0;
  float scale = 0.f;
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  std::int32_t* error_flag = nullptr;
  PagedDecodeVariant variant = PagedDecodeVariant::kAuto;
  KVScales scales;  // float8 pools only (see KVScales)
};

// The number of KV splits and the workspace the call will use (0 bytes when it does not split).
std::int64_t paged_decode_num_splits(const PagedDecodeArgs& args);
std::size_t paged_decode_workspace_bytes(const PagedDecodeArgs& args);
void paged_decode_attention(const PagedDecodeArgs& args, cudaStream_t stream = nullptr);

}  // namespace flashkernel
