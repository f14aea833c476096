// `cpserve router`: loads the model's config and tokenizer, serves Generation and
// PoolRegistry (plus health and reflection) until SIGTERM/SIGINT, then drains.
#include <glog/logging.h>

#include <filesystem>
#include <iostream>

#include "absl/flags/flag.h"
#include "services/cli/flags.h"
#include "services/common/grpc_server.h"
#include "services/common/tls.h"
#include "services/router/router_service.h"
#include "worker/builtin/builtin_model.h"

namespace cpserve::cli {
namespace {

service::TlsFiles PublicTlsFiles() {
  return {.cert = absl::GetFlag(FLAGS_tls_cert),
          .key = absl::GetFlag(FLAGS_tls_key),
          .ca = absl::GetFlag(FLAGS_tls_client_ca),
          .cert_flag = "tls_cert",
          .key_flag = "tls_key",
          .ca_flag = "tls_client_ca"};
}

service::TlsFiles InternalTlsFiles() {
  return {.cert = absl::GetFlag(FLAGS_mtls_cert),
          .key = absl::GetFlag(FLAGS_mtls_key),
          .ca = absl::GetFlag(FLAGS_mtls_ca),
          .cert_flag = "mtls_cert",
          .key_flag = "mtls_key",
          .ca_flag = "mtls_ca"};
}

}  // namespace

int RunRouter(const std::vector<std::string>& args) {
  if (!args.empty()) {
    std::cerr << "cpserve router: unexpected argument '" << args[0] << "'\n";
    return 2;
  }
  service::InitLogging("cpserve-router", absl::GetFlag(FLAGS_verbosity));
  service::InstallShutdownSignalHandlers();
  const std::string model_flag = absl::GetFlag(FLAGS_model);
  absl::StatusOr<std::string> dir = ResolveModelDir(model_flag);
  if (!dir.ok()) {
    std::cerr << "cpserve router: " << dir.status() << "\n";
    return 1;
  }
  absl::StatusOr<ModelConfig> config = LoadModelConfig(*dir + "/config.json");
  if (!config.ok()) {
    std::cerr << "cpserve router: " << config.status() << "\n";
    return 1;
  }
  absl::StatusOr<tokenizer::Tokenizer> tok =
      tokenizer::Tokenizer::FromFile(*dir + "/tokenizer.json");
  if (!tok.ok()) {
    std::cerr << "cpserve router: " << tok.status() << "\n";
    return 1;
  }
  if (!config->eos_token_ids.empty())
    tok->set_eos_id(static_cast<int32_t>(config->eos_token_ids[0]));

  router::RouterOptions options;
  options.model_name = model_flag.empty()
                           ? std::string(kBuiltinModelName)
                           : std::filesystem::path(*dir).lexically_normal().filename().string();
  if (options.model_name.empty()) {
    options.model_name = std::filesystem::path(*dir).parent_path().filename().string();
  }
  options.long_prompt_tokens = absl::GetFlag(FLAGS_long_prompt_tokens);
  options.max_queued_requests = absl::GetFlag(FLAGS_max_queued_requests);
  options.heartbeat_timeout = absl::Milliseconds(absl::GetFlag(FLAGS_heartbeat_timeout_ms));
  options.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens);
  options.max_streams_per_client = absl::GetFlag(FLAGS_max_streams_per_client);
  options.default_deadline = absl::Milliseconds(absl::GetFlag(FLAGS_default_deadline_ms));
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);

  // Transport security: TLS on the public API, mTLS on the internal side (PoolRegistry on
  // its own port, router -> pool calls).
  const service::TlsFiles public_tls = PublicTlsFiles();
  const service::TlsFiles internal_tls = InternalTlsFiles();
  const bool mtls = !internal_tls.empty();
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> public_creds =
      service::ServerCredentialsOrInsecure(public_tls, public_tls.ca.empty()
                                                           ? service::ClientCertPolicy::kNone
                                                           : service::ClientCertPolicy::kRequire);
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> internal_creds =
      mtls ? service::MakeServerCredentials(internal_tls, service::ClientCertPolicy::kRequire)
           : absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>>(nullptr);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> pool_creds =
      service::ChannelCredentialsOrInsecure(internal_tls);
  for (const absl::Status& s :
       {public_creds.status(), internal_creds.status(), pool_creds.status()}) {
    if (!s.ok()) {
      std::cerr << "cpserve router: " << s << "\n";
      return 2;
    }
  }
  if (mtls) options.pool_credentials = *pool_creds;
  if (const std::string path = absl::GetFlag(FLAGS_auth_token_file); !path.empty()) {
    absl::StatusOr<std::vector<router::AuthToken>> tokens = router::LoadTokenFile(path);
    if (!tokens.ok()) {
      std::cerr << "cpserve router: " << tokens.status() << "\n";
      return 2;
    }
    LOG(INFO) << "router: bearer-token authentication on (" << tokens->size() << " tokens from "
              << path << ")";
    options.auth = std::make_shared<router::TokenAuthenticator>(*std::move(tokens));
  }
  std::vector<std::string> unprotected;
  if (public_tls.empty()) {
    unprotected.push_back("public API (cpserve.v1.Generation): plaintext, no --tls_cert");
  }
  if (options.auth == nullptr) {
    unprotected.push_back("public API: no client authentication, no --auth_token_file");
  } else if (public_tls.empty()) {
    unprotected.push_back("bearer tokens travel in plaintext (no --tls_cert)");
  }
  if (!mtls) {
    unprotected.push_back(
        "pool registry and router -> pool calls: plaintext, unauthenticated (no --mtls_*)");
  }
  service::WarnInsecure("router", unprotected);

  service::GrpcServer server({.host = absl::GetFlag(FLAGS_host),
                              .port = absl::GetFlag(FLAGS_port),
                              .metrics_port = absl::GetFlag(FLAGS_metrics_port),
                              .name = "router",
                              .credentials = *public_creds,
                              .max_message_bytes = options.max_message_bytes});
  // With mTLS the pools reach the registry on a second server that only accepts
  // certificates of the internal CA.
  std::unique_ptr<service::GrpcServer> internal;
  if (mtls) {
    internal = std::make_unique<service::GrpcServer>(
        service::ServerOptions{.host = absl::GetFlag(FLAGS_host),
                               .port = absl::GetFlag(FLAGS_internal_port),
                               .metrics_port = -1,
                               .name = "router (internal, mTLS)",
                               .credentials = *internal_creds,
                               .max_message_bytes = options.max_message_bytes});
  }
  router::RouterCore core(options, *std::move(tok), *std::move(config), &server.metrics());
  router::GenerationService generation(&core);
  router::PoolRegistryService registry(&core);
  server.AddService(&generation, v1::Generation::service_full_name());
  service::GrpcServer& registry_server = internal ? *internal : server;
  registry_server.AddService(&registry, v1::PoolRegistry::service_full_name());
  server.OnDrain([&core] { core.StartDraining(); });
  if (internal) {
    if (absl::Status s = internal->Start(); !s.ok()) {
      std::cerr << "cpserve router: " << s << "\n";
      return 1;
    }
  }
  if (absl::Status s = server.Start(); !s.ok()) {
    std::cerr << "cpserve router: " << s << "\n";
    return 1;
  }
  // Scripts and tests read these lines.
  std::cout << "cpserve router listening on " << server.address() << std::endl;
  if (internal) {
    std::cout << "cpserve router internal (mTLS) on " << internal->address() << std::endl;
  }
  if (server.metrics().port() >= 0) {
    std::cout << "cpserve router metrics on port " << server.metrics().port() << std::endl;
  }
  server.RunUntilShutdownSignal();
  if (internal) internal->Shutdown(absl::Milliseconds(500));
  if (!core.WaitIdle(absl::Seconds(5))) LOG(WARNING) << "router: streams still ending at exit";
  return 0;
}

}  // namespace cpserve::cli
