// Table-variant instantiations with 16-bit cos/sin tables of q's own dtype (half the table bytes).
#include "rope/rope_kernel.cuh"

namespace flashkernel::rope_detail {

void launch_table_same(const Params& p, RopeStyle style, bool inplace, DType dtype, cudaStream_t stream) {
  // float32 tables of float32 q are handled by launch_table_f32.
  dispatch_half_dtype(dtype, "rope", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch<T, T, false>(p, NoInvFreq{}, style, inplace, stream);
  });
}

}  // namespace flashkernel::rope_detail
