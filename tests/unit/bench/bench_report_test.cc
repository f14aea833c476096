#include "services/bench/bench_report.h"

#include <random>

#include "gtest/gtest.h"

namespace cpserve::bench {
namespace {

RequestRecord Record(int64_t index, const std::string& status, double ttft, std::vector<double> itl,
                     int64_t max_tokens) {
  RequestRecord r;
  r.index = index;
  r.status = status;
  r.prompt_tokens = 10 + index;
  r.max_tokens = max_tokens;
  r.ttft_ms = status == "OK" ? ttft : -1;
  r.itl_ms = std::move(itl);
  r.output_tokens = status == "OK" ? static_cast<int64_t>(r.itl_ms.size()) + 1 : 0;
  double e2e = ttft;
  for (double x : r.itl_ms) e2e += x;
  r.e2e_ms = e2e;
  return r;
}

TEST(BenchReportTest, AggregatesCountsLatenciesAndGoodput) {
  RunConfig c;
  c.target = "router";
  c.mode = "closed";
  c.concurrency = 2;
  c.slo_ttft_ms = 50;
  c.slo_itl_ms = 5;
  std::vector<RequestRecord> recs = {
      Record(0, "OK", 10, {2, 4}, 3),             // meets both
      Record(1, "OK", 60, {1, 1}, 3),             // TTFT too slow
      Record(2, "OK", 20, {6, 6}, 4),             // ITL too slow; one token short
      Record(3, "RESOURCE_EXHAUSTED", 0, {}, 3),  // failed
      Record(4, "OK", 50, {}, 1),                 // one token: no ITL, meets both
  };
  recs[2].server_prompt_tokens = 99;  // differs from the 12 sent
  const BenchReport rep = BuildReport(c, recs, 2.0, 2);
  EXPECT_EQ(rep.requests, 5);
  EXPECT_EQ(rep.ok, 4);
  EXPECT_EQ(rep.by_status.at("OK"), 4);
  EXPECT_EQ(rep.by_status.at("RESOURCE_EXHAUSTED"), 1);
  EXPECT_EQ(rep.output_tokens, 3 + 3 + 3 + 1);
  EXPECT_EQ(rep.output_length_mismatches, 1);
  EXPECT_EQ(rep.prompt_length_mismatches, 1);
  EXPECT_EQ(rep.ttft_ms.count, 4);
  EXPECT_DOUBLE_EQ(rep.ttft_ms.mean, (10 + 60 + 20 + 50) / 4.0);
  EXPECT_DOUBLE_EQ(rep.ttft_ms.p50, 35);  // sorted 10 20 50 60
  EXPECT_EQ(rep.itl_ms.count, 6);         // pooled gaps
  EXPECT_DOUBLE_EQ(rep.itl_ms.mean, (2 + 4 + 1 + 1 + 6 + 6) / 6.0);
  EXPECT_EQ(rep.tpot_ms.count, 3);  // requests with at least two tokens
  EXPECT_DOUBLE_EQ(rep.tpot_ms.mean, (3 + 1 + 6) / 3.0);
  EXPECT_DOUBLE_EQ(rep.e2e_ms.max, 60 + 2);
  EXPECT_DOUBLE_EQ(rep.requests_per_s, 2.5);
  EXPECT_DOUBLE_EQ(rep.output_tokens_per_s, 5);
  EXPECT_EQ(rep.goodput.met, 2);
  EXPECT_EQ(rep.goodput.total, 5);
  EXPECT_DOUBLE_EQ(rep.goodput.fraction, 0.4);
  EXPECT_DOUBLE_EQ(rep.goodput.rate, 1);

  const nlohmann::json j = ReportToJson(rep, true);
  EXPECT_EQ(j["requests"], 5);
  EXPECT_EQ(j["ok"], 4);
  EXPECT_EQ(j["by_status"]["RESOURCE_EXHAUSTED"], 1);
  EXPECT_EQ(j["ttft_ms"]["p50"], 35.0);
  EXPECT_EQ(j["goodput"]["met"], 2);
  EXPECT_EQ(j["config"]["slo_itl_ms"], 5.0);
  ASSERT_EQ(j["request_records"].size(), 5u);
  EXPECT_EQ(j["request_records"][3]["status"], "RESOURCE_EXHAUSTED");
  EXPECT_EQ(j["request_records"][2]["server_prompt_tokens"], 99);
  EXPECT_DOUBLE_EQ(j["request_records"][0]["mean_itl_ms"].get<double>(), 3.0);
  EXPECT_FALSE(ReportToJson(rep, false).contains("request_records"));

  const std::string table = FormatReport(rep);
  EXPECT_NE(table.find("requests 5 (OK 4, RESOURCE_EXHAUSTED 1)"), std::string::npos) << table;
  EXPECT_NE(table.find("time to first token"), std::string::npos);
  EXPECT_NE(table.find("goodput (TTFT <= 50 ms, ITL <= 5 ms): 2 of 5 (40.0%)"), std::string::npos)
      << table;
  EXPECT_NE(table.find("WARNING"), std::string::npos);
}

// Disaggregated requests carry the router's prefill / transfer timings: summarised
// over OK requests that report a transport, rate = bytes / transfer time; a run without
// them has no such section.
TEST(BenchReportTest, TransferTimingsOfDisaggregatedRequests) {
  RunConfig c;
  std::vector<RequestRecord> recs = {Record(0, "OK", 10, {1}, 2), Record(1, "OK", 20, {1}, 2),
                                     Record(2, "OK", 30, {1}, 2),
                                     Record(3, "UNAVAILABLE", 0, {}, 2)};
  const auto disaggregated = [](RequestRecord& r, double prefill, double ms, int64_t bytes,
                                const std::string& transport) {
    r.server_prefill_ms = prefill;
    r.transfer_ms = ms;
    r.transfer_bytes = bytes;
    r.transport = transport;
  };
  disaggregated(recs[0], 8, 2, int64_t{4} << 20, "cuda-ipc");    // 2.097152 GB/s
  disaggregated(recs[1], 16, 4, int64_t{16} << 20, "cuda-ipc");  // 4.194304 GB/s
  disaggregated(recs[3], 1, 1, 1, "ucx-pinned-staging");         // failed: not counted
  const BenchReport rep = BuildReport(c, recs, 1.0, 1);          // recs[2]: local path
  EXPECT_EQ(rep.transports.size(), 1u);
  EXPECT_EQ(rep.transports.at("cuda-ipc"), 2);
  EXPECT_EQ(rep.transfer_ms.count, 2);
  EXPECT_DOUBLE_EQ(rep.transfer_ms.mean, 3);
  EXPECT_DOUBLE_EQ(rep.server_prefill_ms.max, 16);
  EXPECT_DOUBLE_EQ(rep.transfer_gb_per_s.min, 4194304 / 2.0 / 1e6);
  EXPECT_DOUBLE_EQ(rep.transfer_gb_per_s.max, 16777216 / 4.0 / 1e6);
  const nlohmann::json j = ReportToJson(rep, true);
  EXPECT_EQ(j["transports"]["cuda-ipc"], 2);
  EXPECT_DOUBLE_EQ(j["transfer_ms"]["mean"].get<double>(), 3.0);
  EXPECT_EQ(j["request_records"][0]["transport"], "cuda-ipc");
  EXPECT_FALSE(j["request_records"][2].contains("transport"));
  const std::string table = FormatReport(rep);
  EXPECT_NE(table.find("KV transfer GB/s"), std::string::npos) << table;
  EXPECT_NE(table.find("KV transports: cuda-ipc x2"), std::string::npos) << table;

  recs.pop_back();
  for (RequestRecord& r : recs) r.transport.clear();
  const BenchReport local = BuildReport(c, recs, 1.0, 1);
  EXPECT_TRUE(local.transports.empty());
  EXPECT_FALSE(ReportToJson(local, false).contains("transfer_ms"));
  EXPECT_EQ(FormatReport(local).find("KV transfer"), std::string::npos);
}

TEST(BenchReportTest, RandomRecordsMatchAPooledReference) {
  std::mt19937_64 rng(12);
  std::uniform_real_distribution<double> ms(0.1, 30);
  RunConfig c;
  std::vector<RequestRecord> recs;
  std::vector<double> ttft, itl;
  int64_t ok = 0, tokens = 0;
  for (int i = 0; i < 200; ++i) {
    const bool good = rng() % 7 != 0;
    std::vector<double> gaps(rng() % 10);
    for (double& g : gaps) g = ms(rng);
    recs.push_back(Record(i, good ? "OK" : "UNAVAILABLE", ms(rng), gaps, gaps.size() + 1));
    if (!good) continue;
    ++ok;
    tokens += recs.back().output_tokens;
    ttft.push_back(recs.back().ttft_ms);
    itl.insert(itl.end(), gaps.begin(), gaps.end());
  }
  const BenchReport rep = BuildReport(c, recs, 4.0, 7);
  EXPECT_EQ(rep.ok, ok);
  EXPECT_EQ(rep.output_tokens, tokens);
  EXPECT_EQ(rep.output_length_mismatches, 0);
  EXPECT_EQ(rep.peak_in_flight, 7);
  EXPECT_DOUBLE_EQ(rep.ttft_ms.p99, Percentile(ttft, 99));
  EXPECT_DOUBLE_EQ(rep.itl_ms.p90, Percentile(itl, 90));
  EXPECT_EQ(rep.goodput.met, ok);  // no objective: every OK request counts
}

}  // namespace
}  // namespace cpserve::bench
