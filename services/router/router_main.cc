// `cpserve router`: loads the model's config and tokenizer, serves Generation and
// PoolRegistry (plus health and reflection) until SIGTERM/SIGINT, then drains.
#include <glog/logging.h>

#include <filesystem>
#include <iostream>

#include "absl/flags/flag.h"
#include "services/cli/flags.h"
#include "services/common/grpc_server.h"
#include "services/router/router_service.h"
#include "worker/builtin/builtin_model.h"

namespace cpserve::cli {

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

  service::GrpcServer server({.host = absl::GetFlag(FLAGS_host),
                              .port = absl::GetFlag(FLAGS_port),
                              .metrics_port = absl::GetFlag(FLAGS_metrics_port),
                              .name = "router"});
  router::RouterCore core(options, *std::move(tok), *std::move(config), &server.metrics());
  router::GenerationService generation(&core);
  router::PoolRegistryService registry(&core);
  server.AddService(&generation, v1::Generation::service_full_name());
  server.AddService(&registry, v1::PoolRegistry::service_full_name());
  server.OnDrain([&core] { core.StartDraining(); });
  if (absl::Status s = server.Start(); !s.ok()) {
    std::cerr << "cpserve router: " << s << "\n";
    return 1;
  }
  // Scripts and tests read these lines.
  std::cout << "cpserve router listening on " << server.address() << std::endl;
  if (server.metrics().port() >= 0) {
    std::cout << "cpserve router metrics on port " << server.metrics().port() << std::endl;
  }
  server.RunUntilShutdownSignal();
  if (!core.WaitIdle(absl::Seconds(5))) LOG(WARNING) << "router: streams still ending at exit";
  return 0;
}

}  // namespace cpserve::cli
