#include "worker/engine/step_runner.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/sampling.h"
#include "kernels/status_macros.h"

namespace cpserve {

StepRunner::StepRunner(LlamaModel& model, Backend& backend, comm::CollectiveGroup* group,
                       const KvCacheView& cache, const CpLayout& kv_layout, int rank)
    : model_(model),
      backend_(backend),
      group_(group),
      kv_layout_(kv_layout),
      rank_(rank),
      attention_(backend, group, cache, kv_layout) {}

absl::StatusOr<StepOutput> StepRunner::Run(const v1::StepCommand& command) {
  const int world = kv_layout_.world_size;
  std::vector<CpWork> works;
  std::vector<std::vector<int32_t>> tables;
  for (const v1::StepWork& w : command.work()) {
    if (w.end() < w.start() || w.tokens_size() != w.end() - w.start() || w.blocks_size() != world) {
      return absl::InternalError(absl::StrCat("malformed step work for ", w.id()));
    }
    works.push_back({w.start(), w.end() - w.start(), w.partitioned()});
    const auto& ids = w.blocks(rank_).ids();
    tables.emplace_back(ids.begin(), ids.end());
  }
  CpStepLayout layout = BuildCpStepLayout(works, rank_, world);

  // This rank's tokens and positions; the slot of every global-order token.
  ForwardInput in;
  std::vector<int64_t> item_of(layout.total_tokens);
  for (size_t i = 0; i < works.size(); ++i) {
    for (int64_t t = 0; t < works[i].num_tokens; ++t) item_of[layout.base[i] + t] = i;
  }
  for (int64_t g : layout.local_to_global) {
    const int64_t i = item_of[g];
    const int64_t t = g - layout.base[i];
    in.tokens.push_back(command.work(i).tokens(t));
    in.positions.push_back(works[i].context_len + t);
  }
  std::vector<int64_t> slots;
  slots.reserve(layout.total_tokens);
  const int64_t b = kv_layout_.block_size;
  for (size_t i = 0; i < works.size(); ++i) {
    for (int64_t t = 0; t < works[i].num_tokens; ++t) {
      const int64_t p = works[i].context_len + t;
      if (kv_layout_.Owner(p) != rank_) {
        slots.push_back(-1);
        continue;
      }
      const int64_t l = kv_layout_.LocalIndex(p);
      if (l / b >= static_cast<int64_t>(tables[i].size())) {
        return absl::InternalError(absl::StrCat("no KV block for position ", p, " of ",
                                                command.work(i).id(), " on rank ", rank_));
      }
      slots.push_back(int64_t{tables[i][l / b]} * b + l % b);
    }
  }
  // Rows whose logits this rank samples: the last token of each sampling item,
  // on the rank computing it (rank 0 for replicated items).
  std::vector<int> sampling_items;  // index into works of each sampled row, in row order
  std::vector<int> sample_slot;     // position in the output of each sampled row
  int num_sampling = 0;
  for (size_t i = 0; i < works.size(); ++i) {
    if (!command.work(i).samples()) continue;
    const int64_t row = LastTokenLocalRow(layout, works, static_cast<int>(i));
    const bool mine = row >= 0 && (rank_ == 0 || (works[i].partitioned && world > 1));
    if (mine) {
      in.logit_rows.push_back(row);
      sampling_items.push_back(static_cast<int>(i));
      sample_slot.push_back(num_sampling);
    }
    ++num_sampling;
  }
  Tensor logits;
  if (accelerator_ != nullptr && IsAcceleratedDecodeStep(command, world, accelerator_->max_batch(),
                                                         accelerator_->max_context())) {
    // One rank, one sampled token per item: logits rows and slots are in plan order.
    DecodeBatch batch;
    for (const v1::StepWork& w : command.work()) {
      batch.tokens.push_back(w.tokens(0));
      batch.positions.push_back(w.start());
    }
    batch.slots = slots;
    for (const auto& t : tables) batch.block_tables.emplace_back(t);
    CPSERVE_ASSIGN_OR_RETURN(logits, accelerator_->Decode(batch));
    ++accelerated_steps_;
  } else {
    CPSERVE_RETURN_IF_ERROR(
        attention_.SetStep(std::move(works), std::move(layout), std::move(tables), slots));
    CPSERVE_ASSIGN_OR_RETURN(logits, model_.Forward(in, attention_));
  }

  const int64_t vocab = model_.config().vocab_size;
  const int64_t s = static_cast<int64_t>(sampling_items.size());
  std::vector<int32_t> tokens(num_sampling, 0);
  std::vector<float> host_logits;
  bool want_logits = false;
  for (const v1::StepWork& w : command.work()) want_logits |= w.samples() && w.return_logits();
  if (s > 0) {
    std::vector<SamplingParams> params;
    for (int i : sampling_items) {
      const v1::StepWork& w = command.work(i);
      params.push_back({w.temperature(), w.top_k(), w.top_p(), w.seed(), w.sample_index()});
    }
    CPSERVE_ASSIGN_OR_RETURN(Tensor ids, backend_.Alloc({s}, DType::kI32));
    CPSERVE_RETURN_IF_ERROR(backend_.Sample(logits, params, ids));
    std::vector<int32_t> mine(s);
    CPSERVE_RETURN_IF_ERROR(
        backend_.CopyToHost(ids, Tensor::Borrow(mine.data(), {s}, DType::kI32)));
    for (int64_t j = 0; j < s; ++j) tokens[sample_slot[j]] = mine[j];
    if (want_logits) {
      host_logits.assign(static_cast<size_t>(s * vocab), 0.0f);
      CPSERVE_RETURN_IF_ERROR(
          backend_.CopyToHost(logits, Tensor::Borrow(host_logits.data(), {s, vocab}, DType::kF32)));
    }
  }
  // Every sampled row has exactly one contributor: a sum shares them.
  if (world > 1 && num_sampling > 0) {
    Tensor t = Tensor::Borrow(tokens.data(), {num_sampling}, DType::kI32);
    CPSERVE_RETURN_IF_ERROR(group_->AllReduce(t));
  }
  StepOutput out;
  out.tokens = std::move(tokens);
  if (want_logits) {
    std::vector<float> all(static_cast<size_t>(num_sampling * vocab), 0.0f);
    for (int64_t j = 0; j < s; ++j) {
      std::copy_n(host_logits.begin() + j * vocab, vocab, all.begin() + sample_slot[j] * vocab);
    }
    if (world > 1) {
      Tensor t = Tensor::Borrow(all.data(), {num_sampling, vocab}, DType::kF32);
      CPSERVE_RETURN_IF_ERROR(group_->AllReduce(t));
    }
    int k = 0;
    for (const v1::StepWork& w : command.work()) {
      if (!w.samples()) continue;
      if (w.return_logits()) {
        out.logits.emplace_back(all.begin() + k * vocab, all.begin() + (k + 1) * vocab);
      }
      ++k;
    }
  }
  return out;
}

absl::Status SendStep(comm::CollectiveGroup& group, const v1::StepCommand& command) {
  std::string bytes = command.SerializeAsString();
  int64_t size = static_cast<int64_t>(bytes.size());
  Tensor header = Tensor::Borrow(&size, {1}, DType::kI64);
  CPSERVE_RETURN_IF_ERROR(group.Broadcast(header, 0));
  if (size == 0) return absl::OkStatus();
  Tensor body = Tensor::Borrow(bytes.data(), {size}, DType::kU8);
  return group.Broadcast(body, 0);
}

absl::StatusOr<v1::StepCommand> ReceiveStep(comm::CollectiveGroup& group) {
  int64_t size = 0;
  Tensor header = Tensor::Borrow(&size, {1}, DType::kI64);
  CPSERVE_RETURN_IF_ERROR(group.Broadcast(header, 0));
  std::string bytes(static_cast<size_t>(size), '\0');
  if (size > 0) {
    Tensor body = Tensor::Borrow(bytes.data(), {size}, DType::kU8);
    CPSERVE_RETURN_IF_ERROR(group.Broadcast(body, 0));
  }
  v1::StepCommand command;
  if (!command.ParseFromString(bytes)) return absl::InternalError("corrupt step command");
  return command;
}

}  // namespace cpserve
