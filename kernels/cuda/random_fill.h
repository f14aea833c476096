// Deterministic weight initialisation from a seed (synthetic benchmark models):
// element i of a tensor with key k gets
//   offset + scale * (2u − 1),  u = top 24 bits of splitmix64(k + (i + 1)·φ) / 2^24,
// i.e. a uniform value in [offset − scale, offset + scale) with 24-bit resolution.
// The same function runs on the host (the CPU reference and CPU backends) and in
// the CUDA kernel, bit for bit: integer hashing, then one multiply and one add that
// the device performs with explicit round-to-nearest (no FMA contraction).
// Plain C++17, no CUDA headers: host code of CPU-only builds includes it too.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define CPSERVE_HOST_DEVICE __host__ __device__
#else
#define CPSERVE_HOST_DEVICE
#endif

namespace cpserve {

CPSERVE_HOST_DEVICE inline uint64_t SplitMix64(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Key of one tensor: mixes the model seed with a hash of the tensor's name.
CPSERVE_HOST_DEVICE inline uint64_t RandomFillKey(uint64_t seed, uint64_t name_hash) {
  return SplitMix64(SplitMix64(seed + 0x9E3779B97F4A7C15ull) ^ name_hash);
}

CPSERVE_HOST_DEVICE inline float RandomFillValue(uint64_t key, uint64_t index, float scale,
                                                 float offset) {
  const uint64_t h = SplitMix64(key + (index + 1) * 0x9E3779B97F4A7C15ull);
  const float u = static_cast<float>(h >> 40) * (1.0f / 16777216.0f);  // exact
  const float v = 2.0f * u - 1.0f;                                     // exact
#if defined(__CUDA_ARCH__)
  return __fadd_rn(__fmul_rn(scale, v), offset);
#else
  return scale * v + offset;
#endif
}

namespace cuda {

// Fills `n` bf16 elements (raw uint16 bit patterns) at `out` with
// bf16(RandomFillValue(key, i, scale, offset)) on `stream` (a cudaStream_t; null =
// the legacy default stream). Returns the launch's cudaError_t as an int (0 = OK).
// Defined in random_fill.cu (CUDA builds only).
int LaunchRandomFillBf16(uint16_t* out, int64_t n, uint64_t key, float scale, float offset,
                         void* stream);

}  // namespace cuda
}  // namespace cpserve
