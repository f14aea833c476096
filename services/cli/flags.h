// Every command-line flag of the `cpserve` binary. Each subcommand names the
// flags it accepts (subcommands.cc); a flag given to a subcommand that does not
// take it is an error, so deployment manifests can be checked against --help.
#pragma once

#include <cstdint>
#include <string>

#include "absl/flags/declare.h"

// Shared by the services.
ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, host);
ABSL_DECLARE_FLAG(int32_t, port);
ABSL_DECLARE_FLAG(int32_t, metrics_port);
ABSL_DECLARE_FLAG(int32_t, verbosity);
// Router.
ABSL_DECLARE_FLAG(int32_t, long_prompt_tokens);
ABSL_DECLARE_FLAG(int32_t, max_queued_requests);
ABSL_DECLARE_FLAG(int32_t, heartbeat_timeout_ms);
// Pools.
ABSL_DECLARE_FLAG(std::string, pool);
ABSL_DECLARE_FLAG(int32_t, rank);
ABSL_DECLARE_FLAG(int32_t, world_size);
ABSL_DECLARE_FLAG(std::string, leader);
ABSL_DECLARE_FLAG(std::string, router);
ABSL_DECLARE_FLAG(std::string, device);
ABSL_DECLARE_FLAG(bool, cuda_graphs);
ABSL_DECLARE_FLAG(bool, kv_direct);
ABSL_DECLARE_FLAG(std::string, prefill_device);
ABSL_DECLARE_FLAG(std::string, decode_device);
ABSL_DECLARE_FLAG(int32_t, block_size);
ABSL_DECLARE_FLAG(int32_t, interleave);
ABSL_DECLARE_FLAG(int64_t, num_kv_blocks);
ABSL_DECLARE_FLAG(int32_t, max_batch_tokens);
ABSL_DECLARE_FLAG(int32_t, max_running_requests);
ABSL_DECLARE_FLAG(int32_t, collective_timeout_ms);
// up.
ABSL_DECLARE_FLAG(int32_t, prefill_ranks);
ABSL_DECLARE_FLAG(int32_t, decode_ranks);
// generate.
ABSL_DECLARE_FLAG(std::string, address);
ABSL_DECLARE_FLAG(std::string, prompt);
ABSL_DECLARE_FLAG(int32_t, max_tokens);
ABSL_DECLARE_FLAG(double, temperature);
ABSL_DECLARE_FLAG(int32_t, top_k);
ABSL_DECLARE_FLAG(double, top_p);
ABSL_DECLARE_FLAG(int64_t, seed);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(int32_t, timeout_ms);
// make-model.
ABSL_DECLARE_FLAG(std::string, out);
ABSL_DECLARE_FLAG(std::string, preset);
// Pools (appended by the serving-path pools).
ABSL_DECLARE_FLAG(std::string, advertise_host);
ABSL_DECLARE_FLAG(int32_t, heartbeat_interval_ms);
ABSL_DECLARE_FLAG(int32_t, drain_timeout_ms);
// up (appended).
ABSL_DECLARE_FLAG(std::string, cluster_log_dir);
ABSL_DECLARE_FLAG(int32_t, startup_timeout_ms);
// Transport security, authentication and limits (issue #10).
ABSL_DECLARE_FLAG(std::string, tls_cert);
ABSL_DECLARE_FLAG(std::string, tls_key);
ABSL_DECLARE_FLAG(std::string, tls_ca);
ABSL_DECLARE_FLAG(std::string, tls_client_ca);
ABSL_DECLARE_FLAG(std::string, mtls_cert);
ABSL_DECLARE_FLAG(std::string, mtls_key);
ABSL_DECLARE_FLAG(std::string, mtls_ca);
ABSL_DECLARE_FLAG(int32_t, internal_port);
ABSL_DECLARE_FLAG(int32_t, rendezvous_port);
ABSL_DECLARE_FLAG(std::string, auth_token_file);
ABSL_DECLARE_FLAG(std::string, token);
ABSL_DECLARE_FLAG(int32_t, max_prompt_tokens);
ABSL_DECLARE_FLAG(int32_t, max_streams_per_client);
ABSL_DECLARE_FLAG(int32_t, max_message_bytes);
ABSL_DECLARE_FLAG(int32_t, default_deadline_ms);
