// DualChunkSwap partitioning of prefill tokens across a PCP group (DESIGN §4).
//
// n new tokens are split into 2P chunks of sizes ⌊n/2P⌋ + [i < n mod 2P]; rank r
// takes chunks r and 2P−1−r, so every rank holds one early and one late chunk and
// causal attention work is balanced. Empty chunks are allowed (tiny n); nothing is
// padded. Positions here are offsets within the step's new tokens [0, n); callers
// add the context length for global positions.
//
// For a step with several requests, each request is partitioned on its own; a
// rank's token list is the concatenation, request by request, of its two chunks.
// The all-gather of such lists needs equal sizes, so every rank's list is padded to
// the longest one (PaddedShare); GatherIndex maps the gathered buffer back to
// request-major global order. Pure functions: no state, no I/O.
#pragma once

#include <cstdint>
#include <vector>

namespace cpserve {

struct TokenRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  bool operator==(const TokenRange&) const = default;
};

// The 2P chunks of n tokens, in order; they tile [0, n).
std::vector<TokenRange> DualChunks(int64_t n, int world_size);

// Rank r's two chunks: {chunk r, chunk 2P−1−r} (the first is never later).
struct ChunkPair {
  TokenRange early;
  TokenRange late;
  int64_t size() const { return early.size() + late.size(); }
};
ChunkPair RankChunks(int64_t n, int world_size, int rank);

// The rank holding token n−1 (the one that samples the next token): rank 0 when
// n >= 2P, else the rank whose late or early chunk is the last non-empty chunk.
int RankOfLastToken(int64_t n, int world_size);

// Tokens of a multi-request step on rank r: Σ_i RankChunks(n_i, P, r).size().
int64_t RankTokens(const std::vector<int64_t>& lengths, int world_size, int rank);
// max_r RankTokens: the per-rank row count of an all-gather.
int64_t PaddedShare(const std::vector<int64_t>& lengths, int world_size);

// For a step with request lengths n_i: the local token list of rank r, as offsets
// into request-major global order (request i's token t is Σ_{j<i} n_j + t).
std::vector<int64_t> RankTokenOrder(const std::vector<int64_t>& lengths, int world_size, int rank);

// Row of the rank-major, padded all-gather buffer ([P][PaddedShare] rows) that holds
// each token of request-major global order: result[g] for g in [0, Σ n_i).
std::vector<int64_t> GatherIndex(const std::vector<int64_t>& lengths, int world_size);

}  // namespace cpserve
