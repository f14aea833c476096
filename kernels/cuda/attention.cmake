# CUDA attention kernels (prefill flash attention, paged / split-KV attention).
# Included by kernels/cuda/CMakeLists.txt when CPSERVE_HAVE_CUDA.
cpserve_library(cpserve_cuda_attention
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/attention_prefill.cc ${CMAKE_CURRENT_LIST_DIR}/attention_paged.cc
          ${CMAKE_CURRENT_LIST_DIR}/attention_launch.cc ${CMAKE_CURRENT_LIST_DIR}/attention_kernels.cu
          ${CMAKE_CURRENT_LIST_DIR}/attention_hopper.cu
          ${CMAKE_CURRENT_LIST_DIR}/attention_decode_plan.cc ${CMAKE_CURRENT_LIST_DIR}/attention_decode.cu
          ${CMAKE_CURRENT_LIST_DIR}/attention_decode_arena.cc
  PUBLIC_DEPS cpserve_kernels cpserve_tensor CUDA::cudart absl::status absl::span
  DEPS absl::strings)
target_compile_options(cpserve_cuda_attention PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-lineinfo --expt-relaxed-constexpr -Xptxas=-warn-spills>)
# CMake 3.25 does not know nvcc 13's C++20 flag; the .cu files include only C++17
# headers (attention_params.h, not kernels/tensor.h).
set_target_properties(cpserve_cuda_attention PROPERTIES CUDA_STANDARD 17)
