#include "services/bench/bench_report.h"

#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace cpserve::bench {
namespace {

nlohmann::json SummaryJson(const Summary& s) {
  return {{"count", s.count}, {"mean", s.mean}, {"min", s.min}, {"p50", s.p50},
          {"p90", s.p90},     {"p99", s.p99},   {"max", s.max}};
}

std::string SummaryRow(const std::string& name, const Summary& s) {
  return absl::StrFormat("  %-26s %10.2f %10.2f %10.2f %10.2f %10.2f\n", name, s.mean, s.p50, s.p90,
                         s.p99, s.max);
}

}  // namespace

double MeanItlMs(const RequestRecord& r) {
  if (r.itl_ms.empty()) return 0;
  return std::accumulate(r.itl_ms.begin(), r.itl_ms.end(), 0.0) /
         static_cast<double>(r.itl_ms.size());
}

BenchReport BuildReport(const RunConfig& config, std::vector<RequestRecord> records,
                        double duration_s, int64_t peak_in_flight) {
  BenchReport rep;
  rep.config = config;
  rep.duration_s = duration_s;
  rep.peak_in_flight = peak_in_flight;
  rep.requests = static_cast<int64_t>(records.size());
  std::vector<double> ttft, itl, tpot, e2e, prefill, transfer, rate;
  std::vector<SloSample> slo;
  for (const RequestRecord& r : records) {
    ++rep.by_status[r.status];
    const bool ok = r.status == "OK";
    slo.push_back(SloSample{ok, r.ttft_ms, MeanItlMs(r)});
    if (!ok) continue;
    ++rep.ok;
    rep.output_tokens += r.output_tokens;
    rep.prompt_tokens += r.prompt_tokens;
    rep.output_length_mismatches += r.output_tokens != r.max_tokens;
    rep.prompt_length_mismatches +=
        r.server_prompt_tokens >= 0 && r.server_prompt_tokens != r.prompt_tokens;
    ttft.push_back(r.ttft_ms);
    e2e.push_back(r.e2e_ms);
    itl.insert(itl.end(), r.itl_ms.begin(), r.itl_ms.end());
    if (!r.itl_ms.empty()) tpot.push_back(MeanItlMs(r));
    if (r.transport.empty()) continue;
    ++rep.transports[r.transport];
    prefill.push_back(r.server_prefill_ms);
    transfer.push_back(r.transfer_ms);
    if (r.transfer_ms > 0)
      rate.push_back(static_cast<double>(r.transfer_bytes) / r.transfer_ms / 1e6);
  }
  rep.server_prefill_ms = Summarize(std::move(prefill));
  rep.transfer_ms = Summarize(std::move(transfer));
  rep.transfer_gb_per_s = Summarize(std::move(rate));
  rep.ttft_ms = Summarize(std::move(ttft));
  rep.itl_ms = Summarize(std::move(itl));
  rep.tpot_ms = Summarize(std::move(tpot));
  rep.e2e_ms = Summarize(std::move(e2e));
  if (duration_s > 0) {
    rep.requests_per_s = static_cast<double>(rep.requests) / duration_s;
    rep.output_tokens_per_s = static_cast<double>(rep.output_tokens) / duration_s;
  }
  rep.goodput = ComputeGoodput(slo, config.slo_ttft_ms, config.slo_itl_ms, duration_s);
  rep.records = std::move(records);
  return rep;
}

nlohmann::json ReportToJson(const BenchReport& rep, bool with_requests) {
  const RunConfig& c = rep.config;
  nlohmann::json j;
  j["config"] = {{"target", c.target},
                 {"address", c.address},
                 {"mode", c.mode},
                 {"concurrency", c.concurrency},
                 {"request_rate", c.request_rate},
                 {"num_requests", c.num_requests},
                 {"warmup_requests", c.warmup_requests},
                 {"prompt_tokens", c.prompt_tokens},
                 {"output_tokens", c.output_tokens},
                 {"prompt_kind", c.prompt_kind},
                 {"slo_ttft_ms", c.slo_ttft_ms},
                 {"slo_itl_ms", c.slo_itl_ms}};
  j["interrupted"] = rep.interrupted;
  j["duration_s"] = rep.duration_s;
  j["requests"] = rep.requests;
  j["ok"] = rep.ok;
  j["by_status"] = rep.by_status;
  j["peak_in_flight"] = rep.peak_in_flight;
  j["prompt_tokens"] = rep.prompt_tokens;
  j["output_tokens"] = rep.output_tokens;
  j["output_length_mismatches"] = rep.output_length_mismatches;
  j["prompt_length_mismatches"] = rep.prompt_length_mismatches;
  j["requests_per_s"] = rep.requests_per_s;
  j["output_tokens_per_s"] = rep.output_tokens_per_s;
  j["ttft_ms"] = SummaryJson(rep.ttft_ms);
  j["itl_ms"] = SummaryJson(rep.itl_ms);
  j["tpot_ms"] = SummaryJson(rep.tpot_ms);
  j["e2e_ms"] = SummaryJson(rep.e2e_ms);
  if (!rep.transports.empty()) {
    j["server_prefill_ms"] = SummaryJson(rep.server_prefill_ms);
    j["transfer_ms"] = SummaryJson(rep.transfer_ms);
    j["transfer_gb_per_s"] = SummaryJson(rep.transfer_gb_per_s);
    j["transports"] = rep.transports;
  }
  j["goodput"] = {{"met", rep.goodput.met},
                  {"total", rep.goodput.total},
                  {"fraction", rep.goodput.fraction},
                  {"requests_per_s", rep.goodput.rate}};
  if (with_requests) {
    nlohmann::json list = nlohmann::json::array();
    for (const RequestRecord& r : rep.records) {
      nlohmann::json item = {{"index", r.index},
                             {"status", r.status},
                             {"prompt_tokens", r.prompt_tokens},
                             {"max_tokens", r.max_tokens},
                             {"output_tokens", r.output_tokens},
                             {"start_s", r.start_s},
                             {"ttft_ms", r.ttft_ms},
                             {"e2e_ms", r.e2e_ms},
                             {"mean_itl_ms", MeanItlMs(r)}};
      if (r.server_prompt_tokens >= 0) item["server_prompt_tokens"] = r.server_prompt_tokens;
      if (!r.transport.empty()) {
        item["server_prefill_ms"] = r.server_prefill_ms;
        item["transfer_ms"] = r.transfer_ms;
        item["transfer_bytes"] = r.transfer_bytes;
        item["transport"] = r.transport;
      }
      if (!r.error.empty()) item["error"] = r.error;
      list.push_back(std::move(item));
    }
    j["request_records"] = std::move(list);
  }
  return j;
}

std::string FormatReport(const BenchReport& rep) {
  const RunConfig& c = rep.config;
  std::string out = absl::StrFormat(
      "cpserve bench: %s %s, %s loop (%s), prompt %s tokens (%s), output %s tokens\n", c.target,
      c.address, c.mode,
      c.mode == "open" ? absl::StrFormat("%.2f req/s Poisson", c.request_rate)
                       : absl::StrFormat("%d clients", c.concurrency),
      c.prompt_tokens, c.prompt_kind, c.output_tokens);
  if (rep.interrupted) {
    absl::StrAppend(&out, absl::StrFormat("  INTERRUPTED: %d of %d requests sent; streams in "
                                          "flight were cancelled\n",
                                          rep.requests, c.num_requests));
  }
  std::string statuses;
  for (const auto& [code, n] : rep.by_status) {
    absl::StrAppend(&statuses, statuses.empty() ? "" : ", ", code, " ", n);
  }
  absl::StrAppend(&out,
                  absl::StrFormat("  requests %d (%s), %d warm-up excluded, peak in flight %d\n",
                                  rep.requests, statuses, c.warmup_requests, rep.peak_in_flight));
  absl::StrAppend(&out, absl::StrFormat("  duration %.2f s, %.2f req/s, %.1f output tokens/s "
                                        "(%d output, %d prompt tokens)\n",
                                        rep.duration_s, rep.requests_per_s, rep.output_tokens_per_s,
                                        rep.output_tokens, rep.prompt_tokens));
  if (rep.output_length_mismatches > 0 || rep.prompt_length_mismatches > 0) {
    absl::StrAppend(&out,
                    absl::StrFormat("  WARNING: %d outputs shorter/longer than max_tokens, "
                                    "%d prompts of another length on the server\n",
                                    rep.output_length_mismatches, rep.prompt_length_mismatches));
  }
  absl::StrAppend(&out, absl::StrFormat("  %-26s %10s %10s %10s %10s %10s\n", "latency (ms)",
                                        "mean", "p50", "p90", "p99", "max"));
  absl::StrAppend(&out, SummaryRow("time to first token", rep.ttft_ms));
  absl::StrAppend(&out, SummaryRow("inter-token latency", rep.itl_ms));
  absl::StrAppend(&out, SummaryRow("time per output token", rep.tpot_ms));
  absl::StrAppend(&out, SummaryRow("end-to-end", rep.e2e_ms));
  if (!rep.transports.empty()) {
    absl::StrAppend(&out, SummaryRow("prefill (prefill pool)", rep.server_prefill_ms));
    absl::StrAppend(&out, SummaryRow("KV transfer", rep.transfer_ms));
    absl::StrAppend(&out, SummaryRow("KV transfer GB/s", rep.transfer_gb_per_s));
    std::string names;
    for (const auto& [name, n] : rep.transports) absl::StrAppend(&names, " ", name, " x", n);
    absl::StrAppend(&out, "  KV transports:", names, "\n");
  }
  absl::StrAppend(
      &out, absl::StrFormat("  goodput (TTFT <= %s, ITL <= %s): %d of %d (%.1f%%), %.2f req/s\n",
                            c.slo_ttft_ms > 0 ? absl::StrFormat("%g ms", c.slo_ttft_ms) : "any",
                            c.slo_itl_ms > 0 ? absl::StrFormat("%g ms", c.slo_itl_ms) : "any",
                            rep.goodput.met, rep.goodput.total, 100 * rep.goodput.fraction,
                            rep.goodput.rate));
  return out;
}

}  // namespace cpserve::bench
