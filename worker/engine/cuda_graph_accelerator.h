// The CUDA-graph decode accelerator (CudaGraphDecoder behind DecodeStepAccelerator)
// for the engine: pass the factory as EngineOptions::decode_accelerator. CUDA builds
// only (library cpserve_cuda_graph_decoder); this header itself needs no CUDA.
#pragma once

#include <cstdint>
#include <vector>

#include "worker/engine/decode_step_accelerator.h"

namespace cpserve {

struct CudaGraphAcceleratorOptions {
  std::vector<int64_t> batch_buckets = {1, 2, 4, 8, 16, 32, 64};  // ascending
  // Keys a sequence may attend (position + 1); steps with a longer context take the
  // normal path. Sizes each bucket's block-table arena.
  int64_t max_context = 4096;
};

// Makes a CudaGraphDecoder replaying captured graphs. Where the backend is not a
// CUDA one (its device is the CPU) the factory makes nothing (nullptr, OK).
DecodeAcceleratorFactory CudaGraphAcceleratorFactory(CudaGraphAcceleratorOptions options = {});

}  // namespace cpserve
