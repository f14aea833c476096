// KV cache view layout, WriteKvCache and GatherKvCache.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/unit/kernels/test_util.h"

namespace cpserve {
namespace {

using testutil::IntTensor;
using testutil::Poison;
using testutil::RandomTensor;

TEST(KvCacheViewTest, LayoutIsBlockMajorAndContiguousPerBlock) {
  auto be = MakeCpuBackend();
  auto t = be->AllocKvCache(7, 3, 4, 2, 5);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->shape(), (Shape{7, 3, 2, 4, 2, 5}));
  auto view = KvCacheView::FromTensor(*t);
  ASSERT_TRUE(view.ok());
  const KvCacheView c =
      KvCacheView::Contiguous(t->raw(), DType::kF32, Device::CPU(), 7, 3, 4, 2, 5);
  EXPECT_EQ(view->block_stride, c.block_stride);
  EXPECT_EQ(view->layer_stride, c.layer_stride);
  EXPECT_EQ(view->kv_stride, c.kv_stride);
  EXPECT_EQ(view->token_stride, c.token_stride);
  EXPECT_EQ(view->head_stride, c.head_stride);
  EXPECT_EQ(c.BlockBytes(), 3u * 2 * 4 * 2 * 5 * 4);
  EXPECT_EQ(static_cast<char*>(c.Address(1, 0, 0, 0, 0)) - static_cast<char*>(t->raw()),
            static_cast<ptrdiff_t>(c.BlockBytes()));
  // (block 2, layer 1, V, offset 3, head 1) in [7][3][2][4][2][5] row-major order.
  EXPECT_EQ(c.ElementOffset(2, 1, 1, 3, 1), ((((2 * 3 + 1) * 2 + 1) * 4 + 3) * 2 + 1) * 5);
  EXPECT_EQ(c.num_slots(), 28);
  EXPECT_FALSE(KvCacheView::FromTensor(Tensor::Zeros({7, 3, 3, 4, 2, 5}, DType::kF32)).ok());
  EXPECT_FALSE(KvCacheView::FromTensor(Tensor::Zeros({7, 3, 2, 4, 2}, DType::kF32)).ok());
}

TEST(WriteKvCacheTest, PlacesEveryTokenAtItsSlotAndSkipsNegativeSlots) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(31);
  const int64_t nb = 7, layers = 3, bs = 4, hkv = 2, d = 5, t = 19;
  Tensor cache_t = *be->AllocKvCache(nb, layers, bs, hkv, d);
  Poison(cache_t);
  const KvCacheView cache = *KvCacheView::FromTensor(cache_t);
  std::vector<int64_t> slots(nb * bs);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  slots.resize(t);
  for (int i = 0; i < t; i += 3) slots[i] = -1;  // not owned by this rank
  Tensor k = RandomTensor({t, hkv, d}, rng), v = RandomTensor({t, hkv, d}, rng);
  ASSERT_TRUE(be->WriteKvCache(1, k, v, IntTensor(slots, DType::kI64), cache).ok());
  int64_t written = 0;
  for (int64_t i = 0; i < t; ++i) {
    if (slots[i] < 0) continue;
    ++written;
    for (int64_t h = 0; h < hkv; ++h) {
      for (int64_t e = 0; e < d; ++e) {
        EXPECT_EQ(cache.Ptr<float>(slots[i] / bs, 1, 0, slots[i] % bs, h)[e],
                  k.data<float>()[(i * hkv + h) * d + e]);
        EXPECT_EQ(cache.Ptr<float>(slots[i] / bs, 1, 1, slots[i] % bs, h)[e],
                  v.data<float>()[(i * hkv + h) * d + e]);
      }
    }
  }
  // Nothing else was touched.
  int64_t finite = 0;
  for (float x : cache_t.span<float>()) finite += !std::isnan(x);
  EXPECT_EQ(finite, written * 2 * hkv * d);
}

TEST(WriteKvCacheTest, GatherReadsBackThroughBlockTable) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(32);
  const int64_t nb = 9, layers = 2, bs = 4, hkv = 3, d = 7, len = 17;
  Tensor cache_t = *be->AllocKvCache(nb, layers, bs, hkv, d);
  const KvCacheView cache = *KvCacheView::FromTensor(cache_t);
  std::vector<int32_t> table = {5, 2, 8, 0, 7};
  std::vector<int64_t> slots(len);
  for (int64_t p = 0; p < len; ++p) slots[p] = table[p / bs] * bs + p % bs;
  Tensor k = RandomTensor({len, hkv, d}, rng), v = RandomTensor({len, hkv, d}, rng);
  ASSERT_TRUE(be->WriteKvCache(0, k, v, IntTensor(slots, DType::kI64), cache).ok());
  Tensor k2 = Tensor::Zeros({len, hkv, d}, DType::kF32),
         v2 = Tensor::Zeros({len, hkv, d}, DType::kF32);
  Poison(k2);
  Poison(v2);
  ASSERT_TRUE(be->GatherKvCache(0, table, len, cache, k2, v2).ok());
  EXPECT_TRUE(std::equal(k.span<float>().begin(), k.span<float>().end(), k2.span<float>().begin()));
  EXPECT_TRUE(std::equal(v.span<float>().begin(), v.span<float>().end(), v2.span<float>().begin()));
  EXPECT_EQ(be->GatherKvCache(0, absl::MakeSpan(table).subspan(0, 4), len, cache, k2, v2).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(WriteKvCacheTest, RejectsBadInputsWithoutWriting) {
  auto be = MakeCpuBackend();
  std::mt19937_64 rng(33);
  Tensor cache_t = *be->AllocKvCache(2, 1, 4, 2, 5);
  Poison(cache_t);
  const KvCacheView cache = *KvCacheView::FromTensor(cache_t);
  Tensor k = RandomTensor({3, 2, 5}, rng), v = RandomTensor({3, 2, 5}, rng);
  EXPECT_EQ(be->WriteKvCache(0, k, v, IntTensor({0, 1, 8}, DType::kI64), cache).code(),
            absl::StatusCode::kInvalidArgument);  // slot 8 >= 2 * 4
  EXPECT_EQ(be->WriteKvCache(1, k, v, IntTensor({0, 1, 2}, DType::kI64), cache).code(),
            absl::StatusCode::kInvalidArgument);  // layer
  EXPECT_EQ(be->WriteKvCache(0, k, v, IntTensor({0, 1}, DType::kI64), cache).code(),
            absl::StatusCode::kInvalidArgument);  // slot count
  EXPECT_EQ(be->WriteKvCache(0, k, v, IntTensor({0, 1, 2}, DType::kI32), cache).code(),
            absl::StatusCode::kInvalidArgument);  // int64 slots only
  EXPECT_EQ(be->WriteKvCache(0, RandomTensor({3, 1, 5}, rng), RandomTensor({3, 1, 5}, rng),
                             IntTensor({0, 1, 2}, DType::kI64), cache)
                .code(),
            absl::StatusCode::kInvalidArgument);  // heads
  for (float x : cache_t.span<float>()) ASSERT_TRUE(std::isnan(x));
}

}  // namespace
}  // namespace cpserve
