// Shared setup for attention tests: paged caches filled with random context,
// and the float64 reference evaluated segment by segment.
#pragma once

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "tests/reference/reference.h"
#include "tests/unit/kernels/test_util.h"

namespace cpserve::testutil {

// A paged cache holding, for each sequence, `lens[s]` random tokens in layer
// `layer`, in shuffled blocks. dense_k/v[s] are the same tokens as [len, Hkv, D].
struct FilledCache {
  Tensor tensor;
  KvCacheView view;
  std::vector<std::vector<int32_t>> tables;
  std::vector<Tensor> dense_k, dense_v;
};

inline FilledCache MakeFilledCache(Backend& be, std::mt19937_64& rng,
                                   const std::vector<int64_t>& lens, int64_t layers, int64_t layer,
                                   int64_t block_size, int64_t hkv, int64_t d) {
  FilledCache fc;
  int64_t need = 1;
  for (int64_t len : lens) need += (len + block_size - 1) / block_size;
  const int64_t num_blocks = need + 3;  // a few spare blocks never referenced
  fc.tensor = *be.AllocKvCache(num_blocks, layers, block_size, hkv, d);
  FillRandom(fc.tensor, rng, -5, 5);  // garbage outside the written slots
  fc.view = *KvCacheView::FromTensor(fc.tensor);
  std::vector<int32_t> ids(num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  size_t next = 0;
  for (int64_t len : lens) {
    std::vector<int32_t> table;
    for (int64_t b = 0; b < (len + block_size - 1) / block_size; ++b) table.push_back(ids[next++]);
    Tensor k = RandomTensor({len, hkv, d}, rng), v = RandomTensor({len, hkv, d}, rng);
    std::vector<int64_t> slots(len);
    for (int64_t p = 0; p < len; ++p)
      slots[p] = table[p / block_size] * block_size + p % block_size;
    EXPECT_TRUE(be.WriteKvCache(layer, k, v, IntTensor(slots, DType::kI64), fc.view).ok());
    fc.tables.push_back(table);
    fc.dense_k.push_back(k);
    fc.dense_v.push_back(v);
  }
  return fc;
}

// Rows [start, start + len) of a [T, H, D] tensor as doubles.
inline std::vector<double> RowsOf(const Tensor& t, int64_t start, int64_t len) {
  return ToDouble(t.Slice(0, start, start + len));
}

// Writes a segment's reference result into the global [Tq, Hq, D] / [Tq, Hq] arrays.
inline void Place(const reference::AttentionResult& r, int64_t q_start, int64_t hq, int64_t d,
                  reference::AttentionResult* global) {
  std::copy(r.o.begin(), r.o.end(), global->o.begin() + q_start * hq * d);
  std::copy(r.lse.begin(), r.lse.end(), global->lse.begin() + q_start * hq);
}

}  // namespace cpserve::testutil
