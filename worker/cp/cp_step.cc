#include "worker/cp/cp_step.h"

#include "worker/cp/dual_chunk_swap.h"

namespace cpserve {

int64_t CpStepLayout::gathered_tokens() const {
  int64_t g = 0;
  for (int64_t c : gather_counts) g += c;
  return g;
}

CpStepLayout BuildCpStepLayout(const std::vector<CpWork>& works, int rank, int world_size) {
  CpStepLayout l;
  l.rank = rank;
  l.world_size = world_size;
  l.gather_counts.assign(world_size, 0);
  for (const CpWork& w : works) {
    l.base.push_back(l.total_tokens);
    l.total_tokens += w.num_tokens;
    l.any_partitioned |= w.partitioned && world_size > 1;
    l.any_context |= w.context_len > 0;
  }
  // This rank's rows.
  for (size_t i = 0; i < works.size(); ++i) {
    const CpWork& w = works[i];
    l.local_start.push_back(l.local_tokens());
    if (w.partitioned && world_size > 1) {
      const ChunkPair pair = RankChunks(w.num_tokens, world_size, rank);
      for (const TokenRange& c : {pair.early, pair.late}) {
        for (int64_t t = c.begin; t < c.end; ++t) {
          l.partitioned_local_rows.push_back(l.local_tokens());
          l.local_to_global.push_back(l.base[i] + t);
        }
      }
    } else {
      for (int64_t t = 0; t < w.num_tokens; ++t) l.local_to_global.push_back(l.base[i] + t);
    }
  }
  // Where each global token is found: replicated ones in the local rows, partitioned
  // ones in the gathered block after them.
  l.full_index.assign(l.total_tokens, -1);
  for (int64_t row = 0; row < l.local_tokens(); ++row) {
    const int64_t g = l.local_to_global[row];
    l.full_index[g] = row;  // overwritten below for partitioned tokens when gathering
  }
  if (l.any_partitioned) {
    int64_t offset = l.local_tokens();
    for (int q = 0; q < world_size; ++q) {
      for (size_t i = 0; i < works.size(); ++i) {
        const CpWork& w = works[i];
        if (!w.partitioned) continue;
        const ChunkPair pair = RankChunks(w.num_tokens, world_size, q);
        for (const TokenRange& c : {pair.early, pair.late}) {
          for (int64_t t = c.begin; t < c.end; ++t) {
            l.full_index[l.base[i] + t] = offset++;
            ++l.gather_counts[q];
          }
        }
      }
    }
  }
  return l;
}

int64_t LastTokenLocalRow(const CpStepLayout& l, const std::vector<CpWork>& works, int item) {
  const CpWork& w = works[item];
  if (w.num_tokens == 0) return -1;
  const int64_t last_global = l.base[item] + w.num_tokens - 1;
  const int64_t begin = l.local_start[item];
  const int64_t end =
      item + 1 < static_cast<int>(works.size()) ? l.local_start[item + 1] : l.local_tokens();
  for (int64_t row = end - 1; row >= begin; --row) {
    if (l.local_to_global[row] == last_global) return row;
  }
  return -1;
}

}  // namespace cpserve
