// CUDA helpers for the collective check suite (built only with CUDA): a cudaMalloc
// allocator for Tensor::Empty on CUDA devices, and a DeviceIO that copies host
// tensors to and from one device.
#pragma once

#include "tests/unit/comm/collective_checks.h"

namespace cpserve::comm::testing {

// Installs a cudaMalloc/cudaFree allocator for DeviceType::kCUDA if none is set.
void InstallCudaTestAllocator();
// Number of CUDA devices, 0 when the runtime or driver is missing.
int CudaDeviceCount();
DeviceIO CudaDeviceIO(int device);

}  // namespace cpserve::comm::testing
