// Whether two strided views of device memory can share a byte: the host-side check ops use to
// reject outputs that alias another operand (their kernels read and write from different threads,
// so aliasing is a race, not an in-place update).
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

namespace flashkernel::detail {

// Bytes [0, run_bytes) at base + sum_j i_j * stride_bytes[j] for every 0 <= i_j < size[j].
struct StridedBytes {
  std::uintptr_t base = 0;
  std::int64_t run_bytes = 0;
  std::vector<std::int64_t> size, stride_bytes;
};

namespace overlap_detail {

struct Dim {
  std::int64_t stride, size_a, size_b;
};

constexpr std::int64_t floor_div(std::int64_t a, std::int64_t b) {  // b > 0
  return a / b - (a % b != 0 && a < 0 ? 1 : 0);
}

// Is r = sum_{j < level} k_j * dims[j].stride + (e_a - e_b) solvable, with
// k_j in [-(size_b - 1), size_a - 1] and e_a, e_b in [0, run)? Exact when the dims nest (each
// stride is at least the span of everything inside it): then only the two k nearest r / stride
// can leave a remainder the inner levels reach.
inline bool reachable(const std::vector<Dim>& dims, std::size_t level, std::int64_t r, std::int64_t run) {
  if (level == 0) return r > -run && r < run;
  const Dim& d = dims[level - 1];
  const std::int64_t k0 = floor_div(r, d.stride);
  for (std::int64_t k = k0; k <= k0 + 1; ++k) {
    if (k < -(d.size_b - 1) || k > d.size_a - 1) continue;
    if (reachable(dims, level - 1, r - k * d.stride, run)) return true;
  }
  return false;
}

// Size-1 and stride-0 dims dropped (they add no bytes), negative strides flipped into the base.
inline StridedBytes normalized(const StridedBytes& v) {
  StridedBytes n{v.base, v.run_bytes, {}, {}};
  for (std::size_t j = 0; j < v.size.size(); ++j) {
    if (v.size[j] <= 1 || v.stride_bytes[j] == 0) continue;
    std::int64_t s = v.stride_bytes[j];
    if (s < 0) {
      n.base = std::uintptr_t(std::intptr_t(n.base) + (v.size[j] - 1) * s);
      s = -s;
    }
    n.size.push_back(v.size[j]);
    n.stride_bytes.push_back(s);
  }
  return n;
}

inline bool empty(const StridedBytes& v) {
  if (v.run_bytes <= 0) return true;
  for (std::int64_t s : v.size) {
    if (s <= 0) return true;
  }
  return false;
}

}  // namespace overlap_detail

// False only when a and b provably share no byte. Exact for two views with the same strides in a
// nested layout (q and k as head slices of one fused qkv buffer, separate tensors of one shape);
// other views whose address ranges intersect count as overlapping.
inline bool may_overlap(const StridedBytes& a_in, const StridedBytes& b_in) {
  using namespace overlap_detail;
  if (empty(a_in) || empty(b_in)) return false;
  const StridedBytes a = normalized(a_in), b = normalized(b_in);
  auto range = [](const StridedBytes& v, std::intptr_t& lo, std::intptr_t& hi) {
    lo = std::intptr_t(v.base);
    hi = lo + v.run_bytes;
    for (std::size_t j = 0; j < v.size.size(); ++j) hi += (v.size[j] - 1) * v.stride_bytes[j];
  };
  std::intptr_t a_lo, a_hi, b_lo, b_hi;
  range(a, a_lo, a_hi);
  range(b, b_lo, b_hi);
  if (a_hi <= b_lo || b_hi <= a_lo) return false;
  if (a.run_bytes != b.run_bytes || a.size.size() != b.size.size()) return true;

  // Pair the dims by stride; the two views must have the same strides.
  std::vector<std::size_t> ia(a.size.size()), ib(b.size.size());
  for (std::size_t j = 0; j < ia.size(); ++j) ia[j] = ib[j] = j;
  std::sort(ia.begin(), ia.end(), [&](auto x, auto y) { return a.stride_bytes[x] < a.stride_bytes[y]; });
  std::sort(ib.begin(), ib.end(), [&](auto x, auto y) { return b.stride_bytes[x] < b.stride_bytes[y]; });
  std::vector<Dim> dims;
  std::int64_t span = a.run_bytes;  // bytes covered by the dims inside the current one
  for (std::size_t j = 0; j < ia.size(); ++j) {
    const Dim d{a.stride_bytes[ia[j]], a.size[ia[j]], b.size[ib[j]]};
    if (d.stride != b.stride_bytes[ib[j]] || d.stride < span) return true;  // not provably disjoint
    span = (std::max(d.size_a, d.size_b) - 1) * d.stride + span;
    dims.push_back(d);
  }
  return reachable(dims, dims.size(), std::int64_t(b.base) - std::int64_t(a.base), a.run_bytes);
}

}  // namespace flashkernel::detail
