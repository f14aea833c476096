// `cpserve generate`: sends one prompt to a router and streams the answer. Text goes to
// standard output as it arrives; the finish reason and timings go to standard error.
// With --json, every streamed message is printed as one JSON object per line.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <iterator>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cpserve/v1/generation.grpc.pb.h"
#include "google/protobuf/util/json_util.h"
#include "services/cli/flags.h"
#include "services/common/grpc_status.h"
#include "services/common/tls.h"

namespace cpserve::cli {
namespace {

std::string Ms(int64_t us) { return absl::StrFormat("%.1f ms", static_cast<double>(us) / 1000); }

const char* CodeName(grpc::StatusCode code) { return service::GrpcCodeName(code); }

std::string FinishName(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_STOP_TOKEN:
      return "stop token";
    case v1::FINISH_REASON_STOP_STRING:
      return "stop string";
    case v1::FINISH_REASON_CONTEXT_LENGTH:
      return "context length";
    default:
      return "unspecified";
  }
}

}  // namespace

int RunGenerate(const std::vector<std::string>& args) {
  std::string prompt = absl::GetFlag(FLAGS_prompt);
  if (prompt == "-") {
    prompt.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else if (prompt.empty()) {
    prompt = absl::StrJoin(args, " ");
  } else if (!args.empty()) {
    std::cerr << "cpserve generate: unexpected argument '" << args[0] << "' (with --prompt)\n";
    return 2;
  }
  if (prompt.empty()) {
    std::cerr << "cpserve generate: give a prompt (--prompt=TEXT, --prompt=- or arguments)\n";
    return 2;
  }
  v1::GenerateRequest req;
  req.mutable_prompt()->set_text(prompt);
  v1::SamplingParams* s = req.mutable_sampling();
  s->set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
  s->set_temperature(static_cast<float>(absl::GetFlag(FLAGS_temperature)));
  s->set_top_k(absl::GetFlag(FLAGS_top_k));
  s->set_top_p(static_cast<float>(absl::GetFlag(FLAGS_top_p)));
  if (absl::GetFlag(FLAGS_seed) >= 0) s->set_seed(static_cast<uint64_t>(absl::GetFlag(FLAGS_seed)));

  // TLS when --tls_ca is given (plus a client certificate with --tls_cert/--tls_key).
  const service::TlsFiles tls{.cert = absl::GetFlag(FLAGS_tls_cert),
                              .key = absl::GetFlag(FLAGS_tls_key),
                              .ca = absl::GetFlag(FLAGS_tls_ca),
                              .cert_flag = "tls_cert",
                              .key_flag = "tls_key",
                              .ca_flag = "tls_ca"};
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds =
      service::ChannelCredentialsOrInsecure(tls);
  if (!creds.ok()) {
    std::cerr << "cpserve generate: " << creds.status() << "\n";
    return 2;
  }
  grpc::ChannelArguments channel_args;
  if (const int32_t max = absl::GetFlag(FLAGS_max_message_bytes); max > 0) {
    channel_args.SetMaxReceiveMessageSize(max);
    channel_args.SetMaxSendMessageSize(max);
  }
  auto channel = grpc::CreateCustomChannel(absl::GetFlag(FLAGS_address), *creds, channel_args);
  auto stub = v1::Generation::NewStub(channel);
  grpc::ClientContext ctx;
  std::string token = absl::GetFlag(FLAGS_token);
  if (token.empty()) {
    const char* env = std::getenv("CPSERVE_TOKEN");
    if (env != nullptr) token = env;
  }
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  if (const int32_t ms = absl::GetFlag(FLAGS_timeout_ms); ms > 0) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(ms));
  }
  const bool json = absl::GetFlag(FLAGS_json);
  google::protobuf::util::JsonPrintOptions json_options;
  json_options.preserve_proto_field_names = true;

  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = stub->Generate(&ctx, req);
  v1::GenerateResponse msg, last;
  bool printed_text = false;
  while (reader->Read(&msg)) {
    if (json) {
      std::string line;
      (void)google::protobuf::util::MessageToJsonString(msg, &line, json_options);
      std::cout << line << std::endl;
    } else {
      std::cout << msg.text() << std::flush;
      printed_text = printed_text || !msg.text().empty();
    }
    if (msg.finish_reason() != v1::FINISH_REASON_UNSPECIFIED || msg.has_timings()) last = msg;
  }
  const grpc::Status status = reader->Finish();
  if (printed_text) std::cout << std::endl;
  if (!status.ok()) {
    std::cerr << "cpserve generate: " << CodeName(status.error_code()) << ": "
              << status.error_message() << "\n";
    return 1;
  }
  if (!json) {
    const v1::Timings& t = last.timings();
    std::cerr << "[" << last.request_id() << "] finish: " << FinishName(last.finish_reason())
              << ", " << last.usage().completion_tokens() << " tokens (prompt "
              << last.usage().prompt_tokens() << "), path " << t.path() << " (prefill ranks "
              << t.prefill_ranks() << ", decode ranks " << t.decode_ranks() << ")\n"
              << "  time to first token " << Ms(t.time_to_first_token_us()) << ", total "
              << Ms(t.total_us()) << ", queue " << Ms(t.queue_us()) << ", prefill "
              << Ms(t.prefill_us()) << ", transfer " << Ms(t.transfer_us()) << ", mean inter-token "
              << Ms(t.mean_inter_token_us()) << "\n";
  }
  return 0;
}

}  // namespace cpserve::cli
