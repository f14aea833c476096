#include "services/cli/flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, model, "",
          "Hugging Face model directory (config.json, *.safetensors, tokenizer.json). Empty: "
          "the built-in synthetic model, written on first use under $XDG_CACHE_HOME/cpserve.");
ABSL_FLAG(std::string, host, "127.0.0.1", "Address to listen on (0.0.0.0 for all interfaces).");
ABSL_FLAG(int32_t, port, 0, "gRPC port to listen on; 0 picks a free port (printed at start).");
ABSL_FLAG(int32_t, metrics_port, -1,
          "Port of the Prometheus /metrics endpoint; -1 disables it, 0 picks a free port.");
ABSL_FLAG(int32_t, verbosity, 0, "Log verbosity (glog VLOG level); 0 logs INFO and above.");

ABSL_FLAG(int32_t, long_prompt_tokens, 256,
          "Prompts with at least this many tokens are prefilled by a prefill pool (PCP) and "
          "their KV transferred; shorter ones are prefilled by the decode pool.");
ABSL_FLAG(int32_t, max_queued_requests, 256,
          "Requests the router holds before answering RESOURCE_EXHAUSTED.");
ABSL_FLAG(int32_t, heartbeat_timeout_ms, 3000,
          "A pool whose heartbeat is this late is marked down.");

ABSL_FLAG(std::string, pool, "", "Name of this rank's pool, e.g. prefill-0 (unique per cluster).");
ABSL_FLAG(int32_t, rank, 0, "This process's rank in its pool, in [0, world_size).");
ABSL_FLAG(int32_t, world_size, 1, "Ranks in the pool (the context-parallel degree P or D).");
ABSL_FLAG(std::string, leader, "",
          "host:port of rank 0 of the pool (its rendezvous store); empty on rank 0 itself.");
ABSL_FLAG(std::string, router, "", "host:port of the router to register with; empty: none.");
ABSL_FLAG(std::string, device, "cpu",
          "Backend: cpu (fp32) or, bf16 on GPUs, cuda (rank r on GPU r), cuda:B (rank r on GPU "
          "B + r) or cuda:a,b,... (rank r on the r-th listed GPU). `up`: the default for both "
          "pools.");
ABSL_FLAG(bool, cuda_graphs, true,
          "CUDA ranks of one-rank pools run decode steps through CUDA graphs (false: op by op).");
ABSL_FLAG(bool, kv_direct, true,
          "GPU ranks move KV to decode ranks on the same host GPU to GPU (CUDA IPC); false: "
          "always through host staging over UCX.");
ABSL_FLAG(std::string, prefill_device, "",
          "up: --device of the prefill pool's ranks (empty: --device), e.g. cuda:0");
ABSL_FLAG(std::string, decode_device, "",
          "up: --device of the decode pool's ranks (empty: --device), e.g. cuda:2");
ABSL_FLAG(int32_t, block_size, 16, "KV block size B in tokens.");
ABSL_FLAG(int32_t, interleave, 0,
          "KV interleave size I in tokens (divides block_size); 0 means I = block_size.");
ABSL_FLAG(int64_t, num_kv_blocks, 0,
          "KV blocks per rank (each holds block_size tokens of every layer); 0: 4096.");
ABSL_FLAG(int32_t, max_batch_tokens, 2048, "Token budget of one engine step (chunked prefill).");
ABSL_FLAG(int32_t, max_running_requests, 64, "Requests decoded together at most.");
ABSL_FLAG(int32_t, collective_timeout_ms, 30000,
          "A collective or rendezvous that waits longer fails the step and marks the pool "
          "unhealthy.");

ABSL_FLAG(int32_t, prefill_ranks, 2, "Ranks of the local prefill pool (P); 0: no prefill pool.");
ABSL_FLAG(int32_t, decode_ranks, 2, "Ranks of the local decode pool (D).");

ABSL_FLAG(std::string, address, "127.0.0.1:50051", "host:port of the router.");
ABSL_FLAG(std::string, prompt, "", "Prompt text; '-' reads it from standard input.");
ABSL_FLAG(int32_t, max_tokens, 64, "Most tokens to generate.");
ABSL_FLAG(double, temperature, 0.0, "Sampling temperature; 0 is greedy.");
ABSL_FLAG(int32_t, top_k, 0, "Sample among the k most likely tokens; 0: all.");
ABSL_FLAG(double, top_p, 1.0, "Nucleus sampling threshold in (0, 1].");
ABSL_FLAG(int64_t, seed, -1, "Sampling seed; -1: chosen by the server.");
ABSL_FLAG(bool, json, false, "Print one JSON object per streamed message instead of text.");
ABSL_FLAG(int32_t, timeout_ms, 0, "Deadline of the request in milliseconds; 0: none.");

ABSL_FLAG(std::string, out, "", "Directory to write the model into (created if missing).");
ABSL_FLAG(std::string, preset, "tiny",
          "Synthetic model shape: tiny (4 layers, hidden 256, 8 heads, 2 KV heads).");

ABSL_FLAG(std::string, advertise_host, "",
          "Address other processes use to reach this rank (announced to the router and the "
          "pool's ranks); empty: --host, or this machine's hostname when --host is 0.0.0.0 "
          "or ::. Set it to the pod IP in Kubernetes.");
ABSL_FLAG(int32_t, heartbeat_interval_ms, 1000,
          "How often a pool leader reports its load to the router.");
ABSL_FLAG(int32_t, drain_timeout_ms, 30000,
          "On SIGTERM, how long running requests may finish before they are ended with "
          "UNAVAILABLE.");
ABSL_FLAG(std::string, cluster_log_dir, "",
          "Directory of the children's logs (created if missing); empty: a new directory "
          "under $TMPDIR (or /tmp).");
ABSL_FLAG(int32_t, startup_timeout_ms, 180000,
          "How long `up` waits for every process to report healthy.");

ABSL_FLAG(std::string, tls_cert, "",
          "Public API TLS: PEM certificate chain. router/up: the router serves "
          "cpserve.v1.Generation over TLS with it (needs --tls_key); generate: client "
          "certificate to present (with --tls_key) when the router asks for one. Empty: "
          "plaintext.");
ABSL_FLAG(std::string, tls_key, "", "Private key (PEM) of --tls_cert.");
ABSL_FLAG(std::string, tls_ca, "",
          "Public API TLS: PEM CA bundle that the router's certificate must chain to "
          "(generate: setting it turns TLS on; up: used to check the router's health).");
ABSL_FLAG(std::string, tls_client_ca, "",
          "router: require public clients to present a certificate chaining to this PEM CA "
          "bundle; empty: clients present none.");
ABSL_FLAG(std::string, mtls_cert, "",
          "Internal mutual TLS (router <-> pools): PEM certificate this process presents, as a "
          "server and as a client. Setting --mtls_cert, --mtls_key and --mtls_ca turns mTLS on; "
          "on the router the PoolRegistry then moves to --internal_port.");
ABSL_FLAG(std::string, mtls_key, "", "Private key (PEM) of --mtls_cert.");
ABSL_FLAG(std::string, mtls_ca, "",
          "Internal mutual TLS: PEM CA bundle every peer's certificate must chain to.");
ABSL_FLAG(int32_t, internal_port, 0,
          "router with mTLS: port of the internal PoolRegistry server (mTLS only, pools "
          "register there); 0 picks a free port (printed at start). Without mTLS the "
          "PoolRegistry is served on --port.");
ABSL_FLAG(int32_t, rendezvous_port, -1,
          "Pool rank 0: serve the pool's rendezvous store on this separate plaintext port (0 "
          "picks one, printed at start) instead of --port; then the other ranks' --leader "
          "must name it. Required with mTLS on a pool of several ranks (the store does not "
          "speak TLS yet).");
ABSL_FLAG(std::string, auth_token_file, "",
          "router: require 'authorization: Bearer <token>' metadata on the public API; the "
          "file lists the accepted tokens, one per line ('#' starts a comment line). Health "
          "checks stay open. Empty: no authentication.");
ABSL_FLAG(std::string, token, "",
          "generate: bearer token sent as 'authorization: Bearer <token>'; empty: "
          "$CPSERVE_TOKEN, if set.");
ABSL_FLAG(int32_t, max_prompt_tokens, 0,
          "router: prompts longer than this many tokens are rejected with INVALID_ARGUMENT; "
          "0: only the model's context limits.");
ABSL_FLAG(int32_t, max_streams_per_client, 0,
          "router: concurrent Generate streams one client may hold (client = its token with "
          "--auth_token_file, else its IP address); more get RESOURCE_EXHAUSTED. 0: no limit.");
ABSL_FLAG(int32_t, max_message_bytes, 0,
          "Largest gRPC message a server receives or sends, and the client channels too; "
          "larger ones end the call with RESOURCE_EXHAUSTED. 0: gRPC's default (4 MiB in).");
ABSL_FLAG(int32_t, default_deadline_ms, 0,
          "router: deadline of Generate calls that carry none; such a call then ends with "
          "DEADLINE_EXCEEDED. 0: none.");
