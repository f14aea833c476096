// The table of subcommands. Each subcommand's implementation lives beside the
// service it starts; this file only wires names, help and flags to them.
#include "services/cli/subcommand.h"

namespace cpserve::cli {

int RunMakeModel(const std::vector<std::string>& args);  // make_model.cc
int RunRouter(const std::vector<std::string>& args);     // services/router/router_main.cc
int RunGenerate(const std::vector<std::string>& args);   // services/client/generate_client.cc
int RunPrefill(const std::vector<std::string>& args);    // services/pool/pool_main.cc
int RunDecode(const std::vector<std::string>& args);     // services/pool/pool_main.cc
int RunUp(const std::vector<std::string>& args);         // services/up/up.cc
int RunBench(const std::vector<std::string>& args);      // services/bench/bench_main.cc

// The flags of one pool rank (`prefill` and `decode` take the same).
const std::vector<std::string> kPoolFlags = {"model",
                                             "host",
                                             "port",
                                             "metrics_port",
                                             "verbosity",
                                             "pool",
                                             "rank",
                                             "world_size",
                                             "leader",
                                             "router",
                                             "device",
                                             "cuda_graphs",
                                             "kv_direct",
                                             "block_size",
                                             "interleave",
                                             "num_kv_blocks",
                                             "max_batch_tokens",
                                             "max_running_requests",
                                             "collective_timeout_ms",
                                             "advertise_host",
                                             "heartbeat_interval_ms",
                                             "drain_timeout_ms",
                                             "mtls_cert",
                                             "mtls_key",
                                             "mtls_ca",
                                             "rendezvous_port",
                                             "max_message_bytes"};

const std::vector<Subcommand>& Subcommands() {
  static const std::vector<Subcommand> kSubcommands = {
      {"router",
       "Run the router: public gRPC API, pool registry, routing.",
       "Serves the public cpserve.v1.Generation API, grpc.health.v1 and server reflection. "
       "Pools register with it and heartbeat their load; prompts of at least "
       "--long_prompt_tokens tokens go to a prefill pool (PCP prefill, then KV transfer), "
       "shorter ones are prefilled by a decode pool.",
       {"model",
        "host",
        "port",
        "metrics_port",
        "verbosity",
        "long_prompt_tokens",
        "max_queued_requests",
        "heartbeat_timeout_ms",
        "tls_cert",
        "tls_key",
        "tls_client_ca",
        "mtls_cert",
        "mtls_key",
        "mtls_ca",
        "internal_port",
        "auth_token_file",
        "max_prompt_tokens",
        "max_streams_per_client",
        "max_message_bytes",
        "default_deadline_ms"},
       RunRouter,
       ""},
      {"prefill", "Run one rank of a prefill pool (prefill context parallelism).",
       "Starts rank --rank of a prefill pool of --world_size ranks. Rank 0 (the leader) "
       "serves the pool's gRPC API, hosts the rendezvous store and registers with the "
       "router; every rank computes its DualChunkSwap share of each prompt and pushes the KV "
       "it owns to the decode pool over UCX.",
       kPoolFlags, RunPrefill, ""},
      {"decode", "Run one rank of a decode pool (decode context parallelism).",
       "Starts rank --rank of a decode pool of --world_size ranks. Each rank keeps an "
       "interleaved slice of every sequence's KV; attention over the slices is merged by "
       "log-sum-exp. Rank 0 serves the pool's gRPC API, runs the continuous-batching "
       "scheduler and registers with the router.",
       kPoolFlags, RunDecode, ""},
      {"up",
       "Start a local cluster: router + prefill pool + decode pool.",
       "Starts the router, a prefill pool of --prefill_ranks ranks and a decode pool of "
       "--decode_ranks ranks as separate processes on loopback, waits until all are healthy, "
       "prints the router's address, and stops them all on Ctrl-C or SIGTERM.",
       {"model",
        "host",
        "port",
        "metrics_port",
        "verbosity",
        "prefill_ranks",
        "decode_ranks",
        "long_prompt_tokens",
        "device",
        "prefill_device",
        "decode_device",
        "block_size",
        "interleave",
        "num_kv_blocks",
        "max_batch_tokens",
        "max_running_requests",
        "cuda_graphs",
        "kv_direct",
        "cluster_log_dir",
        "startup_timeout_ms",
        "drain_timeout_ms",
        "tls_cert",
        "tls_key",
        "tls_ca",
        "mtls_cert",
        "mtls_key",
        "mtls_ca",
        "auth_token_file",
        "max_prompt_tokens",
        "max_streams_per_client",
        "max_message_bytes",
        "default_deadline_ms"},
       RunUp,
       ""},
      {"generate",
       "Send a prompt to a router and stream the answer.",
       "Calls cpserve.v1.Generation/Generate on --address and streams the generated text to "
       "standard output, then the finish reason and timings to standard error. With --json, "
       "prints one JSON object per streamed message.",
       {"address", "prompt", "max_tokens", "temperature", "top_k", "top_p", "seed", "json",
        "timeout_ms", "verbosity", "tls_ca", "tls_cert", "tls_key", "token", "max_message_bytes"},
       RunGenerate,
       ""},
      {"bench",
       "Load-test a router (or a decode pool directly) and report latency and throughput.",
       "Sends --num_requests streaming requests to --address, closed loop (--concurrency "
       "clients) or open loop (--request_rate, Poisson arrivals), after --warmup_requests "
       "left out, with prompt and output lengths from --prompt_tokens / --output_tokens. "
       "Reports requests by status, time to first token, inter-token and end-to-end latency "
       "(mean, p50, p90, p99), tokens/s, requests/s and goodput under --slo_ttft_ms / "
       "--slo_itl_ms, as a table or JSON. --target=pool sends the same requests to a decode "
       "pool leader's DecodePool/Decode, to measure what the router adds.",
       {"address",     "target",       "num_requests",  "warmup_requests",
        "concurrency", "request_rate", "prompt_tokens", "output_tokens",
        "prompt_kind", "vocab_size",   "workload_seed", "ignore_eos",
        "stream_text", "num_channels", "timeout_ms",    "slo_ttft_ms",
        "slo_itl_ms",  "json",         "json_out",      "verbosity",
        "tls_ca",      "tls_cert",     "tls_key",       "token"},
       RunBench,
       ""},
      {"make-model",
       "Write the synthetic model (Hugging Face format) to a directory.",
       "Writes config.json, model.safetensors and tokenizer.json of a small Llama-family "
       "model with deterministic weights drawn from --seed (-1 means 0), and loads it back to "
       "check it. It is the built-in model of the demo and the tests.",
       {"out", "preset", "seed", "verbosity"},
       RunMakeModel,
       ""},
  };
  return kSubcommands;
}

}  // namespace cpserve::cli
