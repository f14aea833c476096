// Prefill (ragged, causal or not, with paged context) and paged attention on the
// CPU. Flash-style: for each segment, KV head and tile of query rows (all query
// heads of the KV head's group), scores of one key chunk come from one sgemm,
// an online softmax (running max in fp32, running sum in double) turns them into
// weights, and a second sgemm accumulates weights · V.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/common.h"
#include "kernels/cpu/cpu_backend.h"

namespace cpserve {
namespace {

constexpr int64_t kMaxTileRows = 64;  // query rows per tile (queries x group heads)
constexpr int64_t kDenseChunk = 128;  // new keys per chunk
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// A run of keys with equal strides: keys first .. first + n - 1 of the segment.
struct KeyChunk {
  const float* k;
  const float* v;
  int64_t ldk, ldv;  // elements between consecutive keys
  int64_t n;
  int64_t first;
};

struct Problem {
  cpu::Heads q, o;
  cpu::Rows lse;
  int64_t group;  // Hq / Hkv
  float scale;
};

// Attends queries [q_start, q_start + q_len) of the KV head `kvh` group to
// `chunks` (ascending key order). Query j may see keys 0 .. limit0 + j.
void AttendGroup(const Problem& p, int64_t kvh, int64_t q_start, int64_t q_len, int64_t limit0,
                 const std::vector<KeyChunk>& chunks) {
  const int64_t d = p.q.dim, g = p.group;
  const int64_t tile_q = std::max<int64_t>(1, kMaxTileRows / g);
  int64_t max_chunk = 1;
  for (const KeyChunk& c : chunks) max_chunk = std::max(max_chunk, c.n);
  std::vector<float> qp(tile_q * g * d), acc(tile_q * g * d), s(tile_q * g * max_chunk),
      m(tile_q * g);
  std::vector<double> l(tile_q * g);
  std::vector<int64_t> limit(tile_q * g);
  for (int64_t j0 = 0; j0 < q_len; j0 += tile_q) {
    const int64_t nq = std::min(tile_q, q_len - j0), rows = nq * g;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t j = j0 + r / g, h = kvh * g + r % g;
      std::memcpy(&qp[r * d], p.q.at(q_start + j, h), sizeof(float) * d);
      limit[r] = limit0 + j;
    }
    std::fill(acc.begin(), acc.begin() + rows * d, 0.0f);
    std::fill(m.begin(), m.begin() + rows, kNegInf);
    std::fill(l.begin(), l.begin() + rows, 0.0);
    const int64_t max_limit = limit0 + j0 + nq - 1;
    for (const KeyChunk& c : chunks) {
      if (c.first > max_limit) break;  // every later key is masked for the whole tile
      const int64_t n = c.n;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                  static_cast<int>(n), static_cast<int>(d), p.scale, qp.data(), static_cast<int>(d),
                  c.k, static_cast<int>(std::max(c.ldk, d)), 0.0f, s.data(), static_cast<int>(n));
      for (int64_t r = 0; r < rows; ++r) {
        float* row = &s[r * n];
        const int64_t nv = std::clamp<int64_t>(limit[r] - c.first + 1, 0, n);
        std::fill(row + nv, row + n, 0.0f);
        if (nv == 0) continue;
        float mx = row[0];
        for (int64_t i = 1; i < nv; ++i) mx = std::max(mx, row[i]);
        const float m_new = std::max(m[r], mx);
        const float alpha = std::exp(m[r] - m_new);  // 0 when m[r] = -inf
        double sum = 0.0;
        for (int64_t i = 0; i < nv; ++i) {
          row[i] = std::exp(row[i] - m_new);
          sum += row[i];
        }
        l[r] = l[r] * alpha + sum;
        if (alpha != 1.0f) {
          float* a = &acc[r * d];
          for (int64_t i = 0; i < d; ++i) a[i] *= alpha;
        }
        m[r] = m_new;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows),
                  static_cast<int>(d), static_cast<int>(n), 1.0f, s.data(), static_cast<int>(n),
                  c.v, static_cast<int>(std::max(c.ldv, d)), 1.0f, acc.data(), static_cast<int>(d));
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = q_start + j0 + r / g, h = kvh * g + r % g;
      float* out = p.o.at(t, h);
      if (l[r] == 0.0) {
        std::fill(out, out + d, 0.0f);
        p.lse.row(t)[h] = kNegInf;
        continue;
      }
      const float inv = static_cast<float>(1.0 / l[r]);
      for (int64_t i = 0; i < d; ++i) out[i] = acc[r * d + i] * inv;
      p.lse.row(t)[h] = static_cast<float>(m[r] + std::log(l[r]));
    }
  }
}

// Appends the first `len` cached keys of a sequence (layer, KV head) as one chunk per block.
void AppendCachedChunks(const KvCacheView& cache, int64_t layer, int64_t kvh,
                        absl::Span<const int32_t> table, int64_t len,
                        std::vector<KeyChunk>* chunks) {
  for (int64_t first = 0; first < len; first += cache.block_size) {
    const int64_t block = table[first / cache.block_size];
    chunks->push_back({cache.Ptr<float>(block, layer, 0, 0, kvh),
                       cache.Ptr<float>(block, layer, 1, 0, kvh), cache.token_stride,
                       cache.token_stride, std::min(cache.block_size, len - first), first});
  }
}

absl::Status CheckCacheFor(const KvCacheView* cache, int64_t layer, int64_t hkv, int64_t d,
                           absl::Span<const int32_t> table, int64_t len, const char* op) {
  if (cache == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": cached context but no cache"));
  }
  if (absl::Status s = cache->Validate(); !s.ok()) return s;
  if (cache->dtype != DType::kF32 || !cache->device.is_cpu() || layer < 0 ||
      layer >= cache->num_layers || cache->num_kv_heads != hkv || cache->head_dim != d) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, ": cache (fp32 CPU, ", cache->num_layers, " layers, ", cache->num_kv_heads,
                     " kv heads, head dim ", cache->head_dim, ") does not fit layer ", layer, ", ",
                     hkv, " kv heads, head dim ", d));
  }
  CPSERVE_RETURN_IF_ERROR(cache->CheckBlockTable(table, len, op));
  return absl::OkStatus();
}

absl::StatusOr<Problem> MakeProblem(const Tensor& q, const Tensor& o, const Tensor& lse,
                                    int64_t hkv, int64_t d, const AttentionOptions& options,
                                    const char* op) {
  Problem p;
  CPSERVE_ASSIGN_OR_RETURN(auto qh, cpu::AsHeads(q, "attention q"));
  CPSERVE_ASSIGN_OR_RETURN(auto oh, cpu::AsHeads(o, "attention o"));
  CPSERVE_ASSIGN_OR_RETURN(auto lr, cpu::AsLse(lse, "attention lse"));
  if (qh.dim != d || qh.dim == 0 || hkv == 0 || qh.heads % hkv != 0 || o.shape() != q.shape() ||
      lr.rows != qh.tokens || lr.cols != qh.heads) {
    return absl::InvalidArgumentError(absl::StrCat(
        op, ": q ", q.DebugString(), ", o ", o.DebugString(), ", lse ", lse.DebugString(),
        " do not fit ", hkv, " kv heads of dim ", d, " (want o = q shape, lse [Tq, Hq])"));
  }
  p.q = qh;
  p.o = oh;
  p.lse = lr;
  p.group = qh.heads / hkv;
  p.scale = options.scale != 0.0f ? options.scale
                                  : static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  return p;
}

absl::Status CheckRange(int64_t start, int64_t len, int64_t total, const char* what, size_t seg) {
  if (start < 0 || len < 0 || start + len > total) {
    return absl::InvalidArgumentError(absl::StrCat("segment ", seg, ": ", what, " [", start, ", ",
                                                   start + len, ") outside [0, ", total, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CpuBackend::PrefillAttention(const Tensor& q, const Tensor& k, const Tensor& v,
                                          absl::Span<const PrefillSegment> segments,
                                          const KvCacheView* cache, int64_t layer,
                                          const AttentionOptions& options, const Tensor& o,
                                          const Tensor& lse) {
  CPSERVE_ASSIGN_OR_RETURN(auto kh, cpu::AsHeads(k, "PrefillAttention k"));
  CPSERVE_ASSIGN_OR_RETURN(auto vh, cpu::AsHeads(v, "PrefillAttention v"));
  if (k.shape() != v.shape()) {
    return absl::InvalidArgumentError(absl::StrCat("PrefillAttention: k ", k.DebugString(),
                                                   " and v ", v.DebugString(), " differ"));
  }
  CPSERVE_ASSIGN_OR_RETURN(auto p,
                           MakeProblem(q, o, lse, kh.heads, kh.dim, options, "PrefillAttention"));
  for (size_t i = 0; i < segments.size(); ++i) {
    const PrefillSegment& s = segments[i];
    if (absl::Status st = CheckRange(s.q_start, s.q_len, p.q.tokens, "q", i); !st.ok()) return st;
    if (absl::Status st = CheckRange(s.k_start, s.k_len, kh.tokens, "k", i); !st.ok()) return st;
    if (s.ctx_len < 0) return absl::InvalidArgumentError("PrefillAttention: negative ctx_len");
    if (s.ctx_len > 0) {
      if (absl::Status st = CheckCacheFor(cache, layer, kh.heads, kh.dim, s.block_table, s.ctx_len,
                                          "PrefillAttention");
          !st.ok()) {
        return st;
      }
    }
  }
  std::vector<KeyChunk> chunks;
  for (const PrefillSegment& s : segments) {
    if (s.q_len == 0) continue;
    const int64_t total = s.ctx_len + s.k_len;
    const int64_t limit0 = options.causal ? total - s.q_len : total - 1;
    for (int64_t kvh = 0; kvh < kh.heads; ++kvh) {
      chunks.clear();
      if (s.ctx_len > 0) {
        AppendCachedChunks(*cache, layer, kvh, s.block_table, s.ctx_len, &chunks);
      }
      for (int64_t i = 0; i < s.k_len; i += kDenseChunk) {
        chunks.push_back({kh.at(s.k_start + i, kvh), vh.at(s.k_start + i, kvh), kh.token_stride,
                          vh.token_stride, std::min(kDenseChunk, s.k_len - i), s.ctx_len + i});
      }
      AttendGroup(p, kvh, s.q_start, s.q_len, limit0, chunks);
    }
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::PagedAttention(const Tensor& q, absl::Span<const PagedSegment> segments,
                                        const KvCacheView& cache, int64_t layer,
                                        const AttentionOptions& options, const Tensor& o,
                                        const Tensor& lse) {
  if (absl::Status st = cache.Validate(); !st.ok()) return st;
  CPSERVE_ASSIGN_OR_RETURN(auto p, MakeProblem(q, o, lse, cache.num_kv_heads, cache.head_dim,
                                               options, "PagedAttention"));
  for (size_t i = 0; i < segments.size(); ++i) {
    const PagedSegment& s = segments[i];
    if (absl::Status st = CheckRange(s.q_start, s.q_len, p.q.tokens, "q", i); !st.ok()) return st;
    if (s.kv_len < 0) return absl::InvalidArgumentError("PagedAttention: negative kv_len");
    if (absl::Status st = CheckCacheFor(&cache, layer, cache.num_kv_heads, cache.head_dim,
                                        s.block_table, s.kv_len, "PagedAttention");
        !st.ok()) {
      return st;
    }
  }
  std::vector<KeyChunk> chunks;
  for (const PagedSegment& s : segments) {
    if (s.q_len == 0) continue;
    for (int64_t kvh = 0; kvh < cache.num_kv_heads; ++kvh) {
      chunks.clear();
      AppendCachedChunks(cache, layer, kvh, s.block_table, s.kv_len, &chunks);
      // No mask: every query sees keys 0 .. kv_len - 1.
      AttendGroup(p, kvh, s.q_start, s.q_len, s.kv_len - 1, chunks);
    }
  }
  return absl::OkStatus();
}

}  // namespace cpserve
