// Table-variant instantiations with float32 cos/sin tables (q/k of any dtype).
#include "rope/rope_kernel.cuh"

namespace flashkernel::rope_detail {

void launch_table_f32(const Params& p, RopeStyle style, bool inplace, DType dtype, cudaStream_t stream) {
  dispatch_dtype(dtype, "rope", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch<T, float, false>(p, NoInvFreq{}, style, inplace, stream);
  });
}

}  // namespace flashkernel::rope_detail
