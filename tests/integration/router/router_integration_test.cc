// A real `cpserve router` process on loopback: health, reflection, Tokenize and
// GetModelInfo against the built-in model read here independently, bad requests,
// admission, the PoolRegistry cycle, metrics; and the Generate happy path through a real
// `cpserve decode` pool (and the disaggregated path with `cpserve prefill`) when the
// binary provides them.
#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "cpserve/v1/generation.grpc.pb.h"
#include "cpserve/v1/pool.grpc.pb.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tests/common/process_probe.h"
#include "tests/common/subprocess.h"
#include "worker/builtin/builtin_model.h"
#include "worker/model/model_config.h"
#include "worker/tokenizer/tokenizer.h"

namespace cpserve {
namespace {

using testing::BinaryPath;
using testing::HttpGetMetrics;
using testing::Subprocess;
using testing::WaitForLine;
using namespace std::chrono_literals;

class Router {
 public:
  explicit Router(std::vector<std::string> flags = {}) {
    std::vector<std::string> argv = {BinaryPath("cpserve"), "router", "--port=0",
                                     "--metrics_port=0"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    EXPECT_TRUE(proc_.Start(argv));
    address_ = WaitForLine(proc_, "listening on (\\S+)");
    EXPECT_FALSE(address_.empty()) << proc_.Output();
    const std::string mp = WaitForLine(proc_, "router metrics on port (\\d+)", 5s);
    metrics_port_ = mp.empty() ? -1 : std::stoi(mp);
    channel_ = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
    generation_ = v1::Generation::NewStub(channel_);
    registry_ = v1::PoolRegistry::NewStub(channel_);
  }
  // Drops the test's connection (a server's shutdown waits a few seconds for idle
  // connections that nobody polls, like those of an idle synchronous client).
  void CloseChannel() {
    generation_.reset();
    registry_.reset();
    channel_.reset();
  }
  ~Router() {
    CloseChannel();
    if (proc_.Running()) {
      proc_.Kill(SIGTERM);
      if (!proc_.Wait(10s)) proc_.Kill(SIGKILL);
    }
    if (::testing::Test::HasFailure() || getenv("CPSERVE_TEST_VERBOSE") != nullptr) {
      std::cerr << "---- router output ----\n" << proc_.Output() << "----\n";
    }
  }

  const std::string& address() const { return address_; }
  Subprocess& proc() { return proc_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }
  v1::Generation::Stub& generation() { return *generation_; }
  v1::PoolRegistry::Stub& registry() { return *registry_; }
  std::string Metrics() { return HttpGetMetrics(metrics_port_); }

  v1::ModelInfo Info() {
    grpc::ClientContext ctx;
    v1::ModelInfo info;
    EXPECT_TRUE(generation_->GetModelInfo(&ctx, {}, &info).ok());
    return info;
  }

  struct Result {
    grpc::Status status;
    std::vector<v1::GenerateResponse> messages;
    std::vector<int32_t> tokens;
    std::string text;
  };
  Result Generate(const v1::GenerateRequest& req, std::chrono::milliseconds deadline = 60s) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + deadline);
    Result r;
    auto reader = generation_->Generate(&ctx, req);
    v1::GenerateResponse msg;
    while (reader->Read(&msg)) {
      r.messages.push_back(msg);
      r.tokens.insert(r.tokens.end(), msg.token_ids().begin(), msg.token_ids().end());
      r.text += msg.text();
    }
    r.status = reader->Finish();
    return r;
  }

 private:
  Subprocess proc_;
  std::string address_;
  int metrics_port_ = -1;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Generation::Stub> generation_;
  std::unique_ptr<v1::PoolRegistry::Stub> registry_;
};

v1::GenerateRequest TokenRequest(std::vector<int32_t> ids, int max_tokens) {
  v1::GenerateRequest req;
  for (int32_t id : ids) req.mutable_prompt()->mutable_token_ids()->add_ids(id);
  req.mutable_sampling()->set_max_tokens(max_tokens);
  req.mutable_sampling()->set_ignore_eos(true);
  return req;
}

struct Model {
  ModelConfig config;
  std::optional<tokenizer::Tokenizer> tokenizer;
};
const Model& BuiltinModel() {
  static const Model* model = [] {
    auto* m = new Model;
    absl::StatusOr<std::string> dir = ResolveModelDir("");
    CHECK(dir.ok()) << dir.status();
    m->config = *LoadModelConfig(*dir + "/config.json");
    m->tokenizer.emplace(*tokenizer::Tokenizer::FromFile(*dir + "/tokenizer.json"));
    return m;
  }();
  return *model;
}

TEST(RouterIntegrationTest, HealthServingThenGracefulShutdown) {
  Router router;
  auto health = grpc::health::v1::Health::NewStub(router.channel());
  for (const char* service : {"", "cpserve.v1.Generation", "cpserve.v1.PoolRegistry"}) {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, req, &resp).ok()) << service;
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
  {
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service("no.such.Service");
    grpc::health::v1::HealthCheckResponse resp;
    EXPECT_EQ(health->Check(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  health.reset();
  router.CloseChannel();
  router.proc().Kill(SIGTERM);
  const std::optional<int> code = router.proc().Wait(30s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0) << router.proc().Output();
  EXPECT_NE(router.proc().Output().find("draining"), std::string::npos);
}

TEST(RouterIntegrationTest, ReflectionListsAndDescribesGeneration) {
  Router router;
  auto stub = grpc::reflection::v1alpha::ServerReflection::NewStub(router.channel());
  grpc::ClientContext ctx;
  auto stream = stub->ServerReflectionInfo(&ctx);
  grpc::reflection::v1alpha::ServerReflectionRequest req;
  grpc::reflection::v1alpha::ServerReflectionResponse resp;
  req.set_list_services("*");
  ASSERT_TRUE(stream->Write(req));
  ASSERT_TRUE(stream->Read(&resp));
  std::set<std::string> services;
  for (const auto& s : resp.list_services_response().service()) services.insert(s.name());
  EXPECT_TRUE(services.count("cpserve.v1.Generation"));
  EXPECT_TRUE(services.count("cpserve.v1.PoolRegistry"));
  EXPECT_TRUE(services.count("grpc.health.v1.Health"));

  req.set_file_containing_symbol("cpserve.v1.Generation");
  ASSERT_TRUE(stream->Write(req));
  ASSERT_TRUE(stream->Read(&resp));
  ASSERT_TRUE(resp.has_file_descriptor_response()) << resp.DebugString();
  bool found = false;
  for (const std::string& bytes : resp.file_descriptor_response().file_descriptor_proto()) {
    google::protobuf::FileDescriptorProto file;
    ASSERT_TRUE(file.ParseFromString(bytes));
    if (file.name() != "cpserve/v1/generation.proto") continue;
    EXPECT_EQ(file.package(), "cpserve.v1");
    for (const auto& svc : file.service()) {
      if (svc.name() != "Generation") continue;
      found = true;
      std::map<std::string, const google::protobuf::MethodDescriptorProto*> methods;
      for (const auto& m : svc.method()) methods[m.name()] = &m;
      ASSERT_EQ(methods.size(), 3u);
      EXPECT_TRUE(methods.at("Generate")->server_streaming());
      EXPECT_EQ(methods.at("Generate")->input_type(), ".cpserve.v1.GenerateRequest");
      EXPECT_EQ(methods.at("Generate")->output_type(), ".cpserve.v1.GenerateResponse");
      EXPECT_FALSE(methods.at("Tokenize")->server_streaming());
      EXPECT_EQ(methods.at("GetModelInfo")->output_type(), ".cpserve.v1.ModelInfo");
    }
  }
  EXPECT_TRUE(found);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST(RouterIntegrationTest, TokenizeAndModelInfoMatchTheBuiltinModel) {
  const Model& model = BuiltinModel();
  Router router({"--long_prompt_tokens=77"});
  for (const std::string text : {"Hello, world!", "the quick brown fox", "", "ünïcödé 😀"}) {
    for (bool add_bos : {false, true}) {
      grpc::ClientContext ctx;
      v1::TokenizeRequest req;
      req.set_text(text);
      req.set_add_bos(add_bos);
      v1::TokenizeResponse resp;
      ASSERT_TRUE(router.generation().Tokenize(&ctx, req, &resp).ok());
      std::vector<int32_t> want = model.tokenizer->Encode(text, /*add_special=*/false);
      if (add_bos) want.insert(want.begin(), *model.tokenizer->bos_id());
      EXPECT_EQ(std::vector<int32_t>(resp.token_ids().begin(), resp.token_ids().end()), want);
      ASSERT_EQ(resp.pieces_size(), static_cast<int>(want.size()));
      for (size_t i = 0; i < want.size(); ++i) {
        EXPECT_EQ(resp.pieces(i), *model.tokenizer->Decode({want[i]}));
      }
    }
  }
  const v1::ModelInfo info = router.Info();
  EXPECT_EQ(info.name(), kBuiltinModelName);
  EXPECT_EQ(info.architecture(), model.config.architecture);
  EXPECT_EQ(info.vocab_size(), model.config.vocab_size);
  EXPECT_EQ(info.max_context_tokens(), model.config.max_position_embeddings);
  EXPECT_EQ(info.num_layers(), model.config.num_hidden_layers);
  EXPECT_EQ(info.hidden_size(), model.config.hidden_size);
  EXPECT_EQ(info.num_attention_heads(), model.config.num_attention_heads);
  EXPECT_EQ(info.num_kv_heads(), model.config.num_key_value_heads);
  EXPECT_EQ(info.head_dim(), model.config.head_dim);
  EXPECT_EQ(info.bos_token_id(), 256);
  ASSERT_GE(info.eos_token_ids_size(), 1);
  EXPECT_EQ(info.eos_token_ids(0), 257);
  EXPECT_EQ(info.long_prompt_tokens(), 77);
  EXPECT_EQ(info.pools_size(), 0);
}

TEST(RouterIntegrationTest, BadRequestsAreInvalidArgumentNamingTheField) {
  const Model& model = BuiltinModel();
  Router router;
  const int vocab = static_cast<int>(model.config.vocab_size);
  const int context = static_cast<int>(model.config.max_position_embeddings);
  struct Case {
    std::string field;
    v1::GenerateRequest req;
  };
  std::vector<Case> cases;
  cases.push_back({"prompt", v1::GenerateRequest()});
  {
    v1::GenerateRequest r;
    r.mutable_prompt()->set_text("");
    cases.push_back({"prompt", r});
  }
  cases.push_back({"prompt.token_ids", TokenRequest({1, vocab}, 4)});
  cases.push_back({"prompt.token_ids", TokenRequest({-3}, 4)});
  cases.push_back({"sampling.max_tokens", TokenRequest({1, 2}, context - 1)});
  cases.push_back({"sampling.max_tokens", TokenRequest({1, 2}, -1)});
  auto with = [](std::function<void(v1::SamplingParams*)> f) {
    v1::GenerateRequest r = TokenRequest({1, 2, 3}, 4);
    f(r.mutable_sampling());
    return r;
  };
  cases.push_back({"sampling.temperature", with([](auto* s) { s->set_temperature(-1); })});
  cases.push_back({"sampling.top_p", with([](auto* s) { s->set_top_p(1.5f); })});
  cases.push_back({"sampling.top_p", with([](auto* s) { s->set_top_p(-0.1f); })});
  cases.push_back({"sampling.top_k", with([](auto* s) { s->set_top_k(-2); })});
  cases.push_back(
      {"sampling.stop_token_ids", with([&](auto* s) { s->add_stop_token_ids(vocab); })});
  cases.push_back({"sampling.stop", with([](auto* s) {
                     for (int i = 0; i < 17; ++i) s->add_stop("x");
                   })});
  for (const Case& c : cases) {
    const Router::Result r = router.Generate(c.req);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field;
    EXPECT_EQ(r.status.error_message().rfind(c.field + ":", 0), 0u)
        << c.field << " / " << r.status.error_message();
    EXPECT_TRUE(r.messages.empty());
  }
  // A valid request with no pool: UNAVAILABLE.
  const Router::Result none = router.Generate(TokenRequest({1, 2, 3}, 4));
  EXPECT_EQ(none.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  // The same through the client binary: the status printed, exit code 1.
  const testing::RunResult cli = testing::RunCommand(
      {BinaryPath("cpserve"), "generate", "--address=" + router.address(), "--prompt=hi"});
  EXPECT_EQ(cli.exit_code, 1) << cli.output;
  EXPECT_NE(cli.output.find("UNAVAILABLE"), std::string::npos) << cli.output;
  const std::string metrics = router.Metrics();
  EXPECT_NE(metrics.find(absl::StrCat("cpserve_router_requests_total{code=\"INVALID_ARGUMENT\","
                                      "path=\"none\"} ",
                                      cases.size())),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("cpserve_router_requests_total{code=\"UNAVAILABLE\",path=\"none\"} 2"),
            std::string::npos)
      << metrics;
}

TEST(RouterIntegrationTest, AdmissionRefusesBeyondTheBound) {
  Router router({"--max_queued_requests=0"});
  const Router::Result r = router.Generate(TokenRequest({1, 2, 3}, 4));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(r.status.error_message().find("max_queued_requests"), std::string::npos);
}

bool PoolHealthy(Router& router, const std::string& name, bool want,
                 std::chrono::milliseconds limit = 20s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  do {
    const v1::ModelInfo info = router.Info();
    for (const auto& p : info.pools()) {
      if (p.name() == name && p.healthy() == want) return true;
    }
    std::this_thread::sleep_for(20ms);
  } while (std::chrono::steady_clock::now() < end);
  return false;
}

TEST(RouterIntegrationTest, PoolRegistryRegisterHeartbeatExpiryCycle) {
  Router router({"--heartbeat_timeout_ms=300"});
  auto reg = [&](const std::string& name, v1::PoolRole role, uint64_t epoch, int world,
                 grpc::Status* status = nullptr) {
    grpc::ClientContext ctx;
    v1::RegisterPoolRequest req;
    req.set_pool(name);
    req.set_role(role);
    req.set_address("127.0.0.1:1");
    req.set_world_size(world);
    req.set_epoch(epoch);
    req.set_heartbeat_interval_ms(100);
    v1::RegisterPoolResponse resp;
    const grpc::Status s = router.registry().Register(&ctx, req, &resp);
    if (status) *status = s;
    return resp.registration_id();
  };
  auto beat = [&](const std::string& id) {
    grpc::ClientContext ctx;
    v1::HeartbeatRequest req;
    req.set_registration_id(id);
    req.mutable_load()->set_free_kv_blocks(90);
    req.mutable_load()->set_total_kv_blocks(100);
    v1::HeartbeatResponse resp;
    EXPECT_TRUE(router.registry().Heartbeat(&ctx, req, &resp).ok());
    return resp.known();
  };
  grpc::Status bad;
  reg("x", v1::POOL_ROLE_UNSPECIFIED, 1, 1, &bad);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  reg("x", v1::POOL_ROLE_DECODE, 1, 0, &bad);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  const std::string id1 = reg("decode-a", v1::POOL_ROLE_DECODE, 1, 2);
  ASSERT_FALSE(id1.empty());
  const std::string pid = reg("prefill-a", v1::POOL_ROLE_PREFILL, 5, 4);
  v1::ModelInfo info = router.Info();
  ASSERT_EQ(info.pools_size(), 2);
  EXPECT_EQ(info.pools(0).name(), "decode-a");
  EXPECT_EQ(info.pools(0).role(), "decode");
  EXPECT_EQ(info.pools(0).world_size(), 2);
  EXPECT_EQ(info.pools(1).name(), "prefill-a");
  EXPECT_EQ(info.pools(1).role(), "prefill");
  EXPECT_EQ(info.pools(1).world_size(), 4);
  EXPECT_TRUE(beat(id1));
  EXPECT_FALSE(beat("bogus"));
  // No more heartbeats: both go down.
  EXPECT_TRUE(PoolHealthy(router, "decode-a", false));
  EXPECT_TRUE(PoolHealthy(router, "prefill-a", false));
  EXPECT_EQ(router.Generate(TokenRequest({1, 2}, 2)).status.error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // A heartbeat revives it.
  EXPECT_TRUE(beat(id1));
  EXPECT_TRUE(PoolHealthy(router, "decode-a", true, 0ms));
  // A restart (new epoch) replaces the registration: the old id is unknown.
  const std::string id2 = reg("decode-a", v1::POOL_ROLE_DECODE, 2, 2);
  EXPECT_NE(id1, id2);
  EXPECT_FALSE(beat(id1));
  EXPECT_TRUE(beat(id2));
  EXPECT_EQ(router.Info().pools_size(), 2);
  // The KV gauges come from the heartbeats.
  EXPECT_NE(router.Metrics().find("cpserve_router_pool_free_kv_blocks{pool=\"decode-a\","
                                  "role=\"decode\"} 90"),
            std::string::npos);
  (void)pid;
}

TEST(RouterIntegrationTest, DeadDecodePoolGivesUnavailableAndIsMarkedDown) {
  Router router({"--heartbeat_timeout_ms=60000"});
  grpc::ClientContext ctx;
  v1::RegisterPoolRequest req;
  req.set_pool("decode-dead");
  req.set_role(v1::POOL_ROLE_DECODE);
  req.set_address("127.0.0.1:1");  // nothing listens there
  req.set_world_size(1);
  v1::RegisterPoolResponse resp;
  ASSERT_TRUE(router.registry().Register(&ctx, req, &resp).ok());
  const Router::Result r = router.Generate(TokenRequest({1, 2, 3}, 4));
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(r.status.error_message().find("decode pool decode-dead"), std::string::npos)
      << r.status.error_message();
  EXPECT_TRUE(PoolHealthy(router, "decode-dead", false, 0ms));
}

// ---- With real pools (when `cpserve decode` / `cpserve prefill` are built). ----

// The binary that runs the pools: $CPSERVE_POOL_BINARY if set (to test this router
// against another build's pools), else the built cpserve.
std::string PoolBinary() {
  const char* env = getenv("CPSERVE_POOL_BINARY");
  return env != nullptr && *env != 0 ? env : BinaryPath("cpserve");
}

bool SubcommandAvailable(const std::string& name) {
  const testing::RunResult r = testing::RunCommand({PoolBinary(), name, "--help"}, 20s);
  return r.exit_code == 0 && r.output.find("Not yet available") == std::string::npos;
}

Subprocess StartPool(const std::string& role, const std::string& name, const std::string& router) {
  Subprocess p;
  EXPECT_TRUE(p.Start({PoolBinary(), role, "--pool=" + name, "--rank=0", "--world_size=1",
                       "--port=0", "--router=" + router, "--num_kv_blocks=256"}));
  return p;
}

TEST(RouterIntegrationTest, GenerateThroughARealDecodePool) {
  if (!SubcommandAvailable("decode")) {
    GTEST_SKIP() << "`cpserve decode` is not available in this build (pool services pending)";
  }
  const Model& model = BuiltinModel();
  Router router({"--long_prompt_tokens=1000000"});
  Subprocess decode = StartPool("decode", "decode-0", router.address());
  ASSERT_TRUE(PoolHealthy(router, "decode-0", true, 60s)) << decode.Output();

  const std::vector<int32_t> prompt = {256, 72, 101, 108, 108, 111, 44, 32, 119};
  const Router::Result a = router.Generate(TokenRequest(prompt, 8));
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  ASSERT_EQ(a.tokens.size(), 8u);
  const v1::GenerateResponse& last = a.messages.back();
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(last.usage().prompt_tokens(), static_cast<int>(prompt.size()));
  EXPECT_EQ(last.usage().completion_tokens(), 8);
  EXPECT_EQ(last.timings().path(), "local");
  EXPECT_EQ(last.timings().decode_ranks(), 1);
  EXPECT_GT(last.timings().time_to_first_token_us(), 0);
  EXPECT_GE(last.timings().total_us(), last.timings().time_to_first_token_us());
  EXPECT_FALSE(last.request_id().empty());
  EXPECT_EQ(a.text, *model.tokenizer->Decode(a.tokens, /*skip_special=*/true));
  // Greedy: the same tokens again.
  const Router::Result b = router.Generate(TokenRequest(prompt, 8));
  ASSERT_TRUE(b.status.ok());
  EXPECT_EQ(a.tokens, b.tokens);

  // A stop string taken from the middle of that text cuts it there.
  if (a.text.size() >= 4) {
    const std::string stop = a.text.substr(a.text.size() / 2, 2);
    v1::GenerateRequest req = TokenRequest(prompt, 8);
    req.mutable_sampling()->add_stop(stop);
    const Router::Result c = router.Generate(req);
    ASSERT_TRUE(c.status.ok()) << c.status.error_message();
    EXPECT_EQ(c.text, a.text.substr(0, a.text.find(stop)));
    EXPECT_EQ(c.messages.back().finish_reason(), v1::FINISH_REASON_STOP_STRING);
  }

  // A deadline expiring mid-stream and a client cancel after the first token: the
  // statuses, and the decode pool's KV back to all free (as its heartbeats report).
  const int long_run = std::min<int>(400, static_cast<int>(model.config.max_position_embeddings) -
                                              static_cast<int>(prompt.size()));
  const Router::Result e = router.Generate(TokenRequest(prompt, long_run), 50ms);
  EXPECT_EQ(e.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  {
    grpc::ClientContext ctx;
    auto reader = router.generation().Generate(&ctx, TokenRequest(prompt, long_run));
    v1::GenerateResponse first;
    EXPECT_TRUE(reader->Read(&first));
    ctx.TryCancel();
    while (reader->Read(&first)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  const std::string all_free =
      "cpserve_router_pool_free_kv_blocks{pool=\"decode-0\",role=\"decode\"} 256";
  bool freed = false;
  for (int i = 0; i < 1000 && !freed; ++i) {
    freed = router.Metrics().find(all_free) != std::string::npos;
    if (!freed) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(freed) << router.Metrics();

  // The client binary streams the text of a text prompt.
  const testing::RunResult cli =
      testing::RunCommand({BinaryPath("cpserve"), "generate", "--address=" + router.address(),
                           "--prompt=Hello", "--max_tokens=4"});
  EXPECT_EQ(cli.exit_code, 0) << cli.output;
  EXPECT_NE(cli.output.find("path local"), std::string::npos) << cli.output;

  // Disaggregated path with a real prefill pool: the same greedy tokens.
  if (SubcommandAvailable("prefill")) {
    Router router2({"--long_prompt_tokens=4"});
    Subprocess decode2 = StartPool("decode", "decode-1", router2.address());
    Subprocess prefill = StartPool("prefill", "prefill-1", router2.address());
    ASSERT_TRUE(PoolHealthy(router2, "decode-1", true, 60s)) << decode2.Output();
    ASSERT_TRUE(PoolHealthy(router2, "prefill-1", true, 60s)) << prefill.Output();
    const Router::Result d = router2.Generate(TokenRequest(prompt, 8));
    ASSERT_TRUE(d.status.ok()) << d.status.error_message() << prefill.Output();
    EXPECT_EQ(d.tokens, a.tokens);
    if (d.messages.back().timings().path() == "local") {
      // The router falls back to local prefill when the decode pool cannot reserve KV
      // for a transfer; the tokens are still right.
      GTEST_SKIP() << "the pools fell back to local prefill (no KV transfer in this build): "
                   << router2.proc().Output();
    }
    EXPECT_EQ(d.messages.back().timings().path(), "disaggregated");
    EXPECT_EQ(d.messages.back().timings().prefill_ranks(), 1);
  }
}

}  // namespace
}  // namespace cpserve
