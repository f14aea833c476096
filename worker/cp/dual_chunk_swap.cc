#include "worker/cp/dual_chunk_swap.h"

#include <algorithm>

namespace cpserve {

std::vector<TokenRange> DualChunks(int64_t n, int world_size) {
  const int64_t chunks = 2 * static_cast<int64_t>(world_size);
  std::vector<TokenRange> out(chunks);
  int64_t begin = 0;
  for (int64_t i = 0; i < chunks; ++i) {
    const int64_t size = n / chunks + (i < n % chunks ? 1 : 0);
    out[i] = {begin, begin + size};
    begin += size;
  }
  return out;
}

ChunkPair RankChunks(int64_t n, int world_size, int rank) {
  const std::vector<TokenRange> chunks = DualChunks(n, world_size);
  return {chunks[rank], chunks[2 * world_size - 1 - rank]};
}

int RankOfLastToken(int64_t n, int world_size) {
  if (n <= 0) return 0;
  const std::vector<TokenRange> chunks = DualChunks(n, world_size);
  for (int64_t i = static_cast<int64_t>(chunks.size()) - 1; i >= 0; --i) {
    if (chunks[i].size() > 0) {
      return static_cast<int>(i < world_size ? i : 2 * world_size - 1 - i);
    }
  }
  return 0;
}

int64_t RankTokens(const std::vector<int64_t>& lengths, int world_size, int rank) {
  int64_t total = 0;
  for (int64_t n : lengths) total += RankChunks(n, world_size, rank).size();
  return total;
}

int64_t PaddedShare(const std::vector<int64_t>& lengths, int world_size) {
  int64_t most = 0;
  for (int r = 0; r < world_size; ++r) most = std::max(most, RankTokens(lengths, world_size, r));
  return most;
}

std::vector<int64_t> RankTokenOrder(const std::vector<int64_t>& lengths, int world_size, int rank) {
  std::vector<int64_t> order;
  int64_t base = 0;
  for (int64_t n : lengths) {
    const ChunkPair pair = RankChunks(n, world_size, rank);
    for (const TokenRange& c : {pair.early, pair.late}) {
      for (int64_t t = c.begin; t < c.end; ++t) order.push_back(base + t);
    }
    base += n;
  }
  return order;
}

std::vector<int64_t> GatherIndex(const std::vector<int64_t>& lengths, int world_size) {
  int64_t total = 0;
  for (int64_t n : lengths) total += n;
  std::vector<int64_t> index(total, -1);
  const int64_t padded = PaddedShare(lengths, world_size);
  for (int r = 0; r < world_size; ++r) {
    const std::vector<int64_t> order = RankTokenOrder(lengths, world_size, r);
    for (size_t row = 0; row < order.size(); ++row) {
      index[order[row]] = r * padded + static_cast<int64_t>(row);
    }
  }
  return index;
}

}  // namespace cpserve
