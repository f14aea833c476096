// `cpserve bench`: a load generator for the router's public API (or a decode pool's own
// Decode, to measure what the router adds). Flags of its own are defined here; the ones it
// shares with other subcommands (--address, --json, --timeout_ms) live in services/cli.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cpserve/v1/generation.grpc.pb.h"
#include "services/bench/bench_report.h"
#include "services/bench/channel.h"
#include "services/bench/length_spec.h"
#include "services/bench/load_generator.h"
#include "services/bench/workload.h"
#include "services/cli/flags.h"

ABSL_FLAG(std::string, target, "router",
          "Where requests go: router (cpserve.v1.Generation/Generate at --address) or pool "
          "(a decode pool leader's DecodePool/Decode with local prefill at --address: the "
          "same work without the router).");
ABSL_FLAG(int64_t, num_requests, 100, "Measured requests.");
ABSL_FLAG(int32_t, warmup_requests, 4,
          "Requests sent (closed loop) before the measured ones and left out of the results.");
ABSL_FLAG(int32_t, concurrency, 1,
          "Closed loop: this many clients, each sending its next request when the previous "
          "one ends (used when --request_rate is 0).");
ABSL_FLAG(double, request_rate, 0,
          "Open loop: send requests at this rate (requests/s, Poisson arrivals) whatever the "
          "number in flight; 0: closed loop.");
ABSL_FLAG(std::string, prompt_tokens, "128",
          "Prompt lengths in tokens: N, Nk (x1024), A-B (uniform), or weighted items "
          "'32-64@3,4k@1'.");
ABSL_FLAG(std::string, output_tokens, "128",
          "Output lengths (max_tokens) in tokens, same syntax as --prompt_tokens.");
ABSL_FLAG(std::string, prompt_kind, "ids",
          "ids: random token ids; text: random English words fitted to the exact length "
          "with the router's Tokenize (router target only).");
ABSL_FLAG(int32_t, vocab_size, 0,
          "Draw prompt ids from [0, N); 0: the router's vocabulary minus BOS/EOS (needed "
          "with --target=pool). Give the same N to both targets to send the same prompts.");
ABSL_FLAG(int64_t, workload_seed, 0, "Seed of the prompts, lengths and arrival times.");
ABSL_FLAG(bool, ignore_eos, true, "Generate exactly max_tokens tokens (ignore EOS).");
ABSL_FLAG(bool, stream_text, true, "Router target: ask for text deltas besides token ids.");
ABSL_FLAG(int32_t, num_channels, 4, "HTTP/2 connections to spread the streams over.");
ABSL_FLAG(double, slo_ttft_ms, 0,
          "Goodput objective: time to first token at most this (ms); 0: not checked.");
ABSL_FLAG(double, slo_itl_ms, 0,
          "Goodput objective: a request's mean inter-token latency at most this (ms); 0: "
          "not checked.");
ABSL_FLAG(std::string, json_out, "", "Also write the results as JSON to this file.");

namespace cpserve::cli {
namespace {

using bench::BenchReport;
using bench::LengthSpec;
using bench::PlannedRequest;

int Fail(const std::string& message, int code = 1) {
  std::cerr << "cpserve bench: " << message << "\n";
  return code;
}

// Progress on standard error: a bar redrawn in place on a terminal, else a line per 10%.
class ProgressPrinter {
 public:
  ProgressPrinter() : bar_(isatty(STDOUT_FILENO) && isatty(STDERR_FILENO)) {}
  void operator()(const bench::Progress& p) {
    if (p.total == 0) return;
    if (bar_) {
      constexpr int kWidth = 30;
      const int filled = static_cast<int>(kWidth * p.finished / p.total);
      std::cerr << absl::StrFormat("\r[%s%s] %d/%d done, %d in flight, %d failed, %.1f s",
                                   std::string(filled, '#'), std::string(kWidth - filled, '.'),
                                   p.finished, p.total, p.in_flight, p.finished - p.ok, p.elapsed_s)
                << (p.finished == p.total ? "\n" : "") << std::flush;
      return;
    }
    const int64_t decile = 10 * p.finished / p.total;
    if (decile > last_decile_) {
      last_decile_ = decile;
      std::cerr << absl::StrFormat("cpserve bench: %d/%d done, %d in flight, %d failed, %.1f s\n",
                                   p.finished, p.total, p.in_flight, p.finished - p.ok,
                                   p.elapsed_s);
    }
  }

 private:
  bool bar_;
  int64_t last_decile_ = 0;
};

// Set by the first SIGINT/SIGTERM of the measured run: stop sending, cancel what is in
// flight and report what finished. The handler then falls back to the default, so a
// second Ctrl-C ends the process at once.
std::atomic<bool> g_stop{false};

extern "C" void OnStopSignal(int sig) {
  g_stop.store(true);
  signal(sig, SIG_DFL);
}

// Installs OnStopSignal for SIGINT and SIGTERM while alive; restores the old handlers.
class StopSignals {
 public:
  StopSignals() {
    struct sigaction sa {};
    sa.sa_handler = OnStopSignal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

struct ModelFacts {
  int32_t vocab_size = 0;
  int32_t max_context = 0;
  std::vector<int32_t> special_ids;
};

absl::StatusOr<ModelFacts> GetModelFacts(const std::shared_ptr<grpc::Channel>& channel,
                                         const bench::ConnectionOptions& conn) {
  auto stub = v1::Generation::NewStub(channel);
  grpc::ClientContext ctx;
  bench::ApplyCallCredentials(conn, ctx);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::ModelInfo info;
  const grpc::Status s = stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
  if (!s.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                        absl::StrCat("GetModelInfo: ", s.error_message()));
  }
  ModelFacts f;
  f.vocab_size = info.vocab_size();
  f.max_context = info.max_context_tokens();
  f.special_ids.assign(info.eos_token_ids().begin(), info.eos_token_ids().end());
  f.special_ids.push_back(info.bos_token_id());
  return f;
}

bench::Tokenizer RouterTokenizer(const std::shared_ptr<grpc::Channel>& channel,
                                 const bench::ConnectionOptions& conn) {
  std::shared_ptr<v1::Generation::Stub> stub = v1::Generation::NewStub(channel);
  return [stub, conn](const std::string& text, bool add_bos) -> absl::StatusOr<bench::Tokenized> {
    grpc::ClientContext ctx;
    bench::ApplyCallCredentials(conn, ctx);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::TokenizeRequest req;
    req.set_text(text);
    req.set_add_bos(add_bos);
    v1::TokenizeResponse resp;
    const grpc::Status s = stub->Tokenize(&ctx, req, &resp);
    if (!s.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                          absl::StrCat("Tokenize: ", s.error_message()));
    }
    return bench::Tokenized{{resp.token_ids().begin(), resp.token_ids().end()},
                            {resp.pieces().begin(), resp.pieces().end()}};
  };
}

}  // namespace

int RunBench(const std::vector<std::string>& args) {
  if (!args.empty()) return Fail(absl::StrCat("unexpected argument '", args[0], "'"), 2);
  const std::string target = absl::GetFlag(FLAGS_target);
  const std::string kind = absl::GetFlag(FLAGS_prompt_kind);
  if (target != "router" && target != "pool") {
    return Fail("--target must be router or pool", 2);
  }
  if (kind != "ids" && kind != "text") return Fail("--prompt_kind must be ids or text", 2);
  if (target == "pool" && kind == "text") {
    return Fail("--target=pool takes token ids only (--prompt_kind=ids)", 2);
  }
  if (target == "pool" && absl::GetFlag(FLAGS_vocab_size) <= 0) {
    return Fail("--target=pool needs --vocab_size (a pool serves no GetModelInfo)", 2);
  }
  const double rate = absl::GetFlag(FLAGS_request_rate);
  if (!(rate >= 0) || std::isinf(rate)) return Fail("--request_rate must be >= 0", 2);
  if (absl::GetFlag(FLAGS_concurrency) < 1) return Fail("--concurrency must be >= 1", 2);
  if (absl::GetFlag(FLAGS_num_requests) < 1) return Fail("--num_requests must be >= 1", 2);
  absl::StatusOr<LengthSpec> prompt_spec = LengthSpec::Parse(absl::GetFlag(FLAGS_prompt_tokens));
  if (!prompt_spec.ok())
    return Fail(absl::StrCat("--prompt_tokens: ", prompt_spec.status().message()), 2);
  absl::StatusOr<LengthSpec> output_spec = LengthSpec::Parse(absl::GetFlag(FLAGS_output_tokens));
  if (!output_spec.ok())
    return Fail(absl::StrCat("--output_tokens: ", output_spec.status().message()), 2);

  bench::ConnectionOptions conn;
  conn.address = absl::GetFlag(FLAGS_address);
  conn.num_channels = std::max(1, absl::GetFlag(FLAGS_num_channels));
  conn.tls = {.cert = absl::GetFlag(FLAGS_tls_cert),
              .key = absl::GetFlag(FLAGS_tls_key),
              .ca = absl::GetFlag(FLAGS_tls_ca),
              .cert_flag = "tls_cert",
              .key_flag = "tls_key",
              .ca_flag = "tls_ca"};
  conn.token = absl::GetFlag(FLAGS_token);
  if (conn.token.empty()) {
    if (const char* env = std::getenv("CPSERVE_TOKEN"); env != nullptr) conn.token = env;
  }
  auto channels = bench::MakeChannels(conn);
  if (!channels.ok()) return Fail(channels.status().ToString());
  for (const auto& ch : *channels) {
    if (!ch->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
      return Fail(absl::StrCat("cannot connect to ", conn.address));
    }
  }

  bench::WorkloadOptions work;
  work.prompt_tokens = *prompt_spec;
  work.output_tokens = *output_spec;
  work.seed = static_cast<uint64_t>(absl::GetFlag(FLAGS_workload_seed));
  work.vocab_size = absl::GetFlag(FLAGS_vocab_size);
  if (target == "router") {
    absl::StatusOr<ModelFacts> facts = GetModelFacts(channels->front(), conn);
    if (!facts.ok()) return Fail(facts.status().ToString());
    if (prompt_spec->Max() + output_spec->Max() > facts->max_context) {
      return Fail(absl::StrCat("prompt + output up to ", prompt_spec->Max() + output_spec->Max(),
                               " tokens exceeds the model's context of ", facts->max_context),
                  2);
    }
    if (work.vocab_size <= 0) {
      work.vocab_size = facts->vocab_size;
      work.excluded_ids = facts->special_ids;
    }
  }

  const int64_t n = absl::GetFlag(FLAGS_num_requests);
  const int64_t warmup = std::max(0, absl::GetFlag(FLAGS_warmup_requests));
  constexpr int64_t kWarmupFirstIndex = int64_t{1} << 40;  // distinct from measured ones
  std::vector<PlannedRequest> requests, warmups;
  if (kind == "text") {
    const bench::Tokenizer tok = RouterTokenizer(channels->front(), conn);
    auto built = bench::BuildTextRequests(work, n, 0, tok);
    if (!built.ok()) return Fail(built.status().ToString());
    auto built_warm = bench::BuildTextRequests(work, warmup, kWarmupFirstIndex, tok);
    if (!built_warm.ok()) return Fail(built_warm.status().ToString());
    requests = std::move(*built);
    warmups = std::move(*built_warm);
  } else {
    requests = bench::BuildIdRequests(work, n, 0);
    warmups = bench::BuildIdRequests(work, warmup, kWarmupFirstIndex);
  }

  bench::LoadOptions load;
  load.target = target == "router" ? bench::Target::kRouter : bench::Target::kPool;
  load.concurrency = absl::GetFlag(FLAGS_concurrency);
  load.request_rate = rate;
  load.seed = work.seed;
  load.ignore_eos = absl::GetFlag(FLAGS_ignore_eos);
  load.stream_text = absl::GetFlag(FLAGS_stream_text);
  load.timeout_ms = absl::GetFlag(FLAGS_timeout_ms);
  std::random_device rd;
  load.request_id_prefix = absl::StrFormat("bench-%d-%08x", getpid(), rd());

  // Ctrl-C (or SIGTERM) from here on stops the run and reports what finished.
  StopSignals signals;
  load.stop = &g_stop;
  if (!warmups.empty()) {
    bench::LoadOptions w = load;
    w.request_rate = 0;
    w.concurrency = std::min<int64_t>(load.concurrency, warmup);
    w.request_id_prefix += "-warmup";
    const bench::LoadResult r = bench::RunLoad(*channels, conn, warmups, w, nullptr);
    if (r.stopped) return Fail("interrupted during the warm-up", 130);
    const auto failed =
        std::find_if(r.records.begin(), r.records.end(),
                     [](const bench::RequestRecord& x) { return x.status != "OK"; });
    if (failed != r.records.end()) {
      std::cerr << "cpserve bench: "
                << std::count_if(r.records.begin(), r.records.end(),
                                 [](const bench::RequestRecord& x) { return x.status != "OK"; })
                << " of " << warmup << " warm-up requests failed (first: " << failed->status << " "
                << failed->error << ")\n";
    }
  }

  ProgressPrinter progress;
  bench::LoadResult result = bench::RunLoad(*channels, conn, requests, load, std::ref(progress));
  if (result.stopped) {
    std::cerr << "\ncpserve bench: interrupted; reporting the " << result.records.size()
              << " requests sent\n";
  }

  bench::RunConfig config;
  config.target = target;
  config.address = conn.address;
  config.mode = rate > 0 ? "open" : "closed";
  config.concurrency = rate > 0 ? 0 : load.concurrency;
  config.request_rate = rate;
  config.num_requests = n;
  config.warmup_requests = warmup;
  config.prompt_tokens = prompt_spec->ToString();
  config.output_tokens = output_spec->ToString();
  config.prompt_kind = kind;
  config.slo_ttft_ms = absl::GetFlag(FLAGS_slo_ttft_ms);
  config.slo_itl_ms = absl::GetFlag(FLAGS_slo_itl_ms);
  BenchReport report = bench::BuildReport(config, std::move(result.records), result.duration_s,
                                          result.peak_in_flight);
  report.interrupted = result.stopped;
  const nlohmann::json json = bench::ReportToJson(report, /*with_requests=*/true);
  if (const std::string path = absl::GetFlag(FLAGS_json_out); !path.empty()) {
    std::ofstream out(path);
    out << json.dump(2) << "\n";
    if (!out) return Fail(absl::StrCat("cannot write ", path));
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << json.dump(2) << std::endl;
  } else {
    std::cout << bench::FormatReport(report) << std::flush;
  }
  return result.stopped ? 130 : 0;
}

}  // namespace cpserve::cli
