// Element-wise reductions on raw buffers, one per (dtype, op): out[i] = a[i] (op) b[i].
// bf16/f16 compute in fp32 and round to nearest even. out may alias a or b.
// Used by the Gloo backend (as its reduce function) and by ReduceScatter's local sum.
#pragma once

#include <cstddef>

#include "kernels/tensor.h"
#include "worker/comm/collective_group.h"

namespace cpserve::comm {

using ReduceFn = void (*)(void* out, const void* a, const void* b, size_t n);

// Never null: every DType supports kSum and kMax.
ReduceFn GetReduceFn(DType dtype, ReduceOp op);

}  // namespace cpserve::comm
