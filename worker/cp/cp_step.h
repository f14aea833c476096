// Where every token of a context-parallel step lives (DESIGN §3, §4), as pure index
// arithmetic shared by the attention layer and the step runner.
//
// A step is a list of work items (requests). Item i computes global positions
// [context_len_i, context_len_i + n_i) of its sequence. A *partitioned* item (PCP
// prefill) is split across the group by DualChunkSwap: each rank computes only its
// two chunks. A *replicated* item (DCP decode, or a short prompt prefilled by the
// decode pool) is computed by every rank. "Global order" is request-major: item i's
// token t is row base_i + t, base_i = Σ_{j<i} n_j.
#pragma once

#include <cstdint>
#include <vector>

#include "worker/kv/cp_layout.h"

namespace cpserve {

struct CpWork {
  int64_t context_len = 0;  // positions already cached, sharded by the CP layout
  int64_t num_tokens = 0;   // n: new positions [context_len, context_len + n)
  bool partitioned = false;
};

struct CpStepLayout {
  int rank = 0;
  int world_size = 1;
  int64_t total_tokens = 0;              // N = Σ n_i
  std::vector<int64_t> base;             // [items] first global-order row of each item
  std::vector<int64_t> local_to_global;  // [T_r] this rank's rows in global order
  std::vector<int64_t> local_start;      // [items] first local row of each item
  // Partitioned tokens: rank q contributes gather_counts[q] rows (its chunks of the
  // partitioned items, item by item, early chunk first). partitioned_local_rows are
  // this rank's local rows of them, in that order.
  std::vector<int64_t> gather_counts;           // [world]
  std::vector<int64_t> partitioned_local_rows;  // [gather_counts[rank]]
  // Rows of [local rows (T_r)] ++ [all-gathered partitioned rows (Σ gather_counts)]
  // holding each global-order token: full_index[g], g in [0, N).
  std::vector<int64_t> full_index;
  bool any_partitioned = false;
  bool any_context = false;

  int64_t local_tokens() const { return static_cast<int64_t>(local_to_global.size()); }
  int64_t gathered_tokens() const;
};

CpStepLayout BuildCpStepLayout(const std::vector<CpWork>& works, int rank, int world_size);

// Local row of item i's last token on this rank, or -1 if another rank computes it
// (partitioned items: the DualChunkSwap holder of token n−1; replicated: every rank).
int64_t LastTokenLocalRow(const CpStepLayout& layout, const std::vector<CpWork>& works, int item);

}  // namespace cpserve
