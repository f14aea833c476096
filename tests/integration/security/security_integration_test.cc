// Transport security, authentication and limits of the public API with real processes on
// loopback: a secured `cpserve router` (TLS on the public API, mTLS towards its pool,
// bearer tokens, per-client stream limit, prompt-token limit, default deadline, message
// size limit) with a `cpserve decode` pool registered over mTLS, next to an insecure
// router + pool whose output the secured one must reproduce. Certificates are made at
// test time by scripts/make-certs.sh into a temporary directory.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "cpserve/v1/generation.grpc.pb.h"
#include "cpserve/v1/pool.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/common/process_probe.h"
#include "tests/common/subprocess.h"

namespace cpserve {
namespace {

using testing::BinaryPath;
using testing::HttpGetMetrics;
using testing::Subprocess;
using testing::WaitForLine;
using namespace std::chrono_literals;

constexpr char kToken1[] = "tok-alpha-0123456789";
constexpr char kToken2[] = "tok-beta-9876543210";
constexpr int kMaxPromptTokens = 64;
constexpr int kMaxStreams = 2;
constexpr int kMaxMessageBytes = 64 * 1024;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void Stop(Subprocess& p) {
  if (!p.Running()) return;
  p.Kill(SIGTERM);
  if (!p.Wait(15s)) p.Kill(SIGKILL);
}

// A router and its decode pool (one rank), secured or not.
struct Cluster {
  Subprocess router, pool;
  std::string address, internal_address;
  int metrics_port = -1;

  void Start(const std::vector<std::string>& router_flags,
             const std::vector<std::string>& pool_flags, bool mtls) {
    std::vector<std::string> argv = {BinaryPath("cpserve"), "router", "--port=0",
                                     "--metrics_port=0", "--long_prompt_tokens=1000000"};
    argv.insert(argv.end(), router_flags.begin(), router_flags.end());
    ASSERT_TRUE(router.Start(argv));
    address = WaitForLine(router, "listening on (\\S+)");
    ASSERT_FALSE(address.empty()) << router.Output();
    metrics_port = std::stoi(WaitForLine(router, "router metrics on port (\\d+)", 5s));
    internal_address = mtls ? WaitForLine(router, "internal \\(mTLS\\) on (\\S+)", 5s) : address;
    ASSERT_FALSE(internal_address.empty()) << router.Output();
    std::vector<std::string> pargv = {BinaryPath("cpserve"),
                                      "decode",
                                      "--pool=decode-0",
                                      "--rank=0",
                                      "--world_size=1",
                                      "--port=0",
                                      "--num_kv_blocks=1024",
                                      "--heartbeat_interval_ms=200",
                                      "--router=" + internal_address};
    pargv.insert(pargv.end(), pool_flags.begin(), pool_flags.end());
    ASSERT_TRUE(pool.Start(pargv));
    ASSERT_FALSE(WaitForLine(router, "pool (decode-0) .*registered").empty())
        << router.Output() << "\n---- pool ----\n"
        << pool.Output();
  }
  void StopAll() {
    Stop(pool);
    Stop(router);
  }
};

class SecurityTest : public ::testing::Test {
 protected:
  // The clusters start with the first test (a failure there fails every test, where a
  // failing SetUpTestSuite would only skip them) and stop after the last.
  void SetUp() override {
    static bool tried = false;
    if (!tried) {
      tried = true;
      StartClusters();
      ready_ = !HasFailure();
    }
    ASSERT_TRUE(ready_) << "the clusters did not start (see the first test's failure)";
  }

  static void StartClusters() {
    char templ[] = "/tmp/cpserve-security-XXXXXX";
    ASSERT_NE(mkdtemp(templ), nullptr);
    dir_ = new std::string(templ);
    const char* src = getenv("CPSERVE_SOURCE_DIR");
    ASSERT_NE(src, nullptr) << "CPSERVE_SOURCE_DIR is set by CTest";
    const testing::RunResult certs = testing::RunCommand(
        {"/bin/bash", absl::StrCat(src, "/scripts/make-certs.sh"), *dir_ + "/certs"}, 60s);
    ASSERT_EQ(certs.exit_code, 0) << certs.output;
    std::ofstream(*dir_ + "/tokens") << "# accepted tokens\n"
                                     << kToken1 << "\n\n  " << kToken2 << "  \n";

    secure_ = new Cluster();
    secure_->Start(
        {"--tls_cert=" + Cert("server.pem"), "--tls_key=" + Cert("server.key"),
         "--mtls_cert=" + Cert("server.pem"), "--mtls_key=" + Cert("server.key"),
         "--mtls_ca=" + Cert("ca.pem"), "--internal_port=0",
         "--auth_token_file=" + *dir_ + "/tokens",
         absl::StrCat("--max_prompt_tokens=", kMaxPromptTokens),
         absl::StrCat("--max_streams_per_client=", kMaxStreams),
         absl::StrCat("--max_message_bytes=", kMaxMessageBytes), "--default_deadline_ms=300"},
        {"--mtls_cert=" + Cert("server.pem"), "--mtls_key=" + Cert("server.key"),
         "--mtls_ca=" + Cert("ca.pem")},
        /*mtls=*/true);
    insecure_ = new Cluster();
    insecure_->Start({}, {}, /*mtls=*/false);
  }

  static void TearDownTestSuite() {
    for (Cluster* c : {secure_, insecure_}) {
      if (c == nullptr) continue;
      c->StopAll();
      if (::testing::Test::HasFailure() || getenv("CPSERVE_TEST_VERBOSE") != nullptr) {
        std::cerr << "---- router ----\n"
                  << c->router.Output() << "---- pool ----\n"
                  << c->pool.Output() << "----\n";
      }
      delete c;
    }
    secure_ = insecure_ = nullptr;
    if (dir_ != nullptr) {
      (void)testing::RunCommand({"/bin/rm", "-rf", *dir_}, 20s);
      delete dir_;
      dir_ = nullptr;
    }
  }

  static std::string Cert(const std::string& name) { return *dir_ + "/certs/" + name; }

  static std::shared_ptr<grpc::ChannelCredentials> Tls(const std::string& ca,
                                                       const std::string& cert = "",
                                                       const std::string& key = "") {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = ReadFile(Cert(ca));
    if (!cert.empty()) {
      o.pem_cert_chain = ReadFile(Cert(cert));
      o.pem_private_key = ReadFile(Cert(key));
    }
    return grpc::SslCredentials(o);
  }

  static std::unique_ptr<v1::Generation::Stub> SecureStub(const std::string& ca = "ca.pem") {
    return v1::Generation::NewStub(grpc::CreateChannel(secure_->address, Tls(ca)));
  }

  static v1::GenerateRequest Request(int prompt_tokens, int max_tokens) {
    v1::GenerateRequest req;
    for (int i = 0; i < prompt_tokens; ++i) {
      req.mutable_prompt()->mutable_token_ids()->add_ids(i == 0 ? 256 : 40 + i % 50);
    }
    req.mutable_sampling()->set_max_tokens(max_tokens);
    req.mutable_sampling()->set_ignore_eos(true);
    return req;
  }

  struct Result {
    grpc::Status status;
    std::vector<int32_t> tokens;
  };
  // One Generate call; `token` empty: no authorization metadata.
  static Result Generate(v1::Generation::Stub& stub, const v1::GenerateRequest& req,
                         const std::string& token,
                         std::optional<std::chrono::milliseconds> deadline = 60s) {
    grpc::ClientContext ctx;
    if (deadline) ctx.set_deadline(std::chrono::system_clock::now() + *deadline);
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    Result r;
    auto reader = stub.Generate(&ctx, req);
    v1::GenerateResponse msg;
    while (reader->Read(&msg))
      r.tokens.insert(r.tokens.end(), msg.token_ids().begin(), msg.token_ids().end());
    r.status = reader->Finish();
    return r;
  }

  static inline bool ready_ = false;
  static std::string* dir_;
  static Cluster* secure_;
  static Cluster* insecure_;
};

std::string* SecurityTest::dir_ = nullptr;
Cluster* SecurityTest::secure_ = nullptr;
Cluster* SecurityTest::insecure_ = nullptr;

TEST_F(SecurityTest, TlsGenerateWithTokenEqualsTheInsecureRun) {
  auto secure = SecureStub();
  auto plain = v1::Generation::NewStub(
      grpc::CreateChannel(insecure_->address, grpc::InsecureChannelCredentials()));
  for (int prompt : {1, 9, kMaxPromptTokens}) {
    const v1::GenerateRequest req = Request(prompt, 12);
    const Result a = Generate(*secure, req, kToken1);
    const Result b = Generate(*plain, req, "");
    ASSERT_TRUE(a.status.ok()) << a.status.error_message();
    ASSERT_TRUE(b.status.ok()) << b.status.error_message();
    EXPECT_EQ(a.tokens.size(), 12u);
    EXPECT_EQ(a.tokens, b.tokens) << "prompt of " << prompt << " tokens";
  }
  // The second token of the file works too (it was indented and followed by spaces).
  EXPECT_TRUE(Generate(*secure, Request(3, 2), kToken2).status.ok());
}

TEST_F(SecurityTest, ClientTrustingAnotherCaCannotConnect) {
  auto stub = SecureStub("other-ca.pem");
  const Result r = Generate(*stub, Request(3, 2), kToken1, 20s);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE) << r.status.error_message();
  // Plaintext against the TLS port fails as well.
  auto plain = v1::Generation::NewStub(
      grpc::CreateChannel(secure_->address, grpc::InsecureChannelCredentials()));
  EXPECT_EQ(Generate(*plain, Request(3, 2), kToken1, 20s).status.error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(SecurityTest, MissingOrBadTokenIsUnauthenticatedButHealthStaysOpen) {
  auto stub = SecureStub();
  const Result none = Generate(*stub, Request(3, 2), "");
  EXPECT_EQ(none.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(none.status.error_message().find("Bearer"), std::string::npos)
      << none.status.error_message();
  for (const std::string bad :
       {"tok-alpha-012345678", "tok-alpha-01234567890", "x", "# accepted"}) {
    const Result r = Generate(*stub, Request(3, 2), bad);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << bad;
    EXPECT_EQ(r.status.error_message(), "invalid bearer token");
  }
  {  // Not "Bearer": malformed.
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", std::string("Basic ") + kToken1);
    v1::ModelInfo info;
    const grpc::Status s = stub->GetModelInfo(&ctx, {}, &info);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_NE(s.error_message().find("expected 'Bearer <token>'"), std::string::npos);
  }
  {  // Unary methods are protected too.
    grpc::ClientContext ctx;
    v1::TokenizeRequest req;
    req.set_text("hi");
    v1::TokenizeResponse resp;
    EXPECT_EQ(stub->Tokenize(&ctx, req, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {  // Health: no token needed.
    auto health =
        grpc::health::v1::Health::NewStub(grpc::CreateChannel(secure_->address, Tls("ca.pem")));
    grpc::ClientContext ctx;
    grpc::health::v1::HealthCheckRequest req;
    req.set_service("cpserve.v1.Generation");
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
  EXPECT_NE(HttpGetMetrics(secure_->metrics_port)
                .find("cpserve_router_rejections_total{reason=\"unauthenticated\"}"),
            std::string::npos);
}

TEST_F(SecurityTest, PoolWithCertificateOfAnotherCaCannotRegister) {
  auto registry_with = [&](const std::string& ca, const std::string& cert, const std::string& key) {
    return v1::PoolRegistry::NewStub(
        grpc::CreateChannel(secure_->internal_address, Tls(ca, cert, key)));
  };
  v1::RegisterPoolRequest req;
  req.set_pool("rogue-0");
  req.set_role(v1::POOL_ROLE_PREFILL);
  req.set_address("127.0.0.1:1");
  req.set_world_size(1);
  req.set_epoch(1);
  v1::RegisterPoolResponse resp;
  {  // A certificate of the other CA (trusting the right one): refused in the handshake.
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 20s);
    const grpc::Status s =
        registry_with("ca.pem", "other-server.pem", "other-server.key")->Register(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  }
  {  // No certificate at all.
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 20s);
    const grpc::Status s =
        v1::PoolRegistry::NewStub(grpc::CreateChannel(secure_->internal_address, Tls("ca.pem")))
            ->Register(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  }
  {  // The public port does not serve the registry at all.
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 20s);
    const grpc::Status s =
        v1::PoolRegistry::NewStub(
            grpc::CreateChannel(secure_->address, Tls("ca.pem", "client.pem", "client.key")))
            ->Register(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED) << s.error_message();
  }
  // A real pool process with the other CA's certificate: it keeps failing to register.
  Subprocess rogue;
  ASSERT_TRUE(rogue.Start(
      {BinaryPath("cpserve"), "decode", "--pool=rogue-1", "--port=0", "--num_kv_blocks=64",
       "--heartbeat_interval_ms=100", "--router=" + secure_->internal_address,
       "--mtls_cert=" + Cert("other-server.pem"), "--mtls_key=" + Cert("other-server.key"),
       "--mtls_ca=" + Cert("ca.pem")}));
  EXPECT_FALSE(WaitForLine(rogue, "(cannot register with router)").empty()) << rogue.Output();
  Stop(rogue);
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", std::string("Bearer ") + kToken1);
  v1::ModelInfo info;
  ASSERT_TRUE(SecureStub()->GetModelInfo(&ctx, {}, &info).ok());
  ASSERT_EQ(info.pools_size(), 1);
  EXPECT_EQ(info.pools(0).name(), "decode-0");
  EXPECT_EQ(secure_->router.Output().find("rogue"), std::string::npos);
}

// A stream that has produced its first message (so it is admitted and running).
struct OpenStream {
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader;
  v1::GenerateResponse first;
  bool admitted = false;

  // deadline nullopt: the call carries none.
  OpenStream(v1::Generation::Stub& stub, const std::string& token, int max_tokens,
             std::optional<std::chrono::milliseconds> deadline) {
    if (deadline) ctx.set_deadline(std::chrono::system_clock::now() + *deadline);
    ctx.AddMetadata("authorization", "Bearer " + token);
    v1::GenerateRequest req;
    req.mutable_prompt()->mutable_token_ids()->add_ids(256);
    req.mutable_sampling()->set_max_tokens(max_tokens);
    req.mutable_sampling()->set_ignore_eos(true);
    reader = stub.Generate(&ctx, req);
    admitted = reader->Read(&first);
  }
  grpc::Status Drain() {
    v1::GenerateResponse msg;
    while (reader->Read(&msg)) {
    }
    return reader->Finish();
  }
};

TEST_F(SecurityTest, PerClientStreamLimitIsReleasedOnEveryEnd) {
  auto stub = SecureStub();
  constexpr int kLong = 4000;  // seconds of decoding: the streams stay open
  auto a = std::make_unique<OpenStream>(*stub, kToken1, kLong, 60s);
  auto b = std::make_unique<OpenStream>(*stub, kToken1, kLong, 60s);
  ASSERT_TRUE(a->admitted) << a->Drain().error_message();
  ASSERT_TRUE(b->admitted) << b->Drain().error_message();
  {  // N+1th stream of the same client.
    const Result r = Generate(*stub, Request(2, 2), kToken1);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_NE(r.status.error_message().find("max_streams_per_client=2"), std::string::npos)
        << r.status.error_message();
    EXPECT_EQ(r.status.error_message().find(kToken1), std::string::npos)
        << "the message must not reveal the token";
  }
  // Another client (token) is not affected.
  EXPECT_TRUE(Generate(*stub, Request(2, 2), kToken2).status.ok());

  // End both by client cancellation (the default-deadline test covers the deadline path).
  a->ctx.TryCancel();
  EXPECT_EQ(a->Drain().error_code(), grpc::StatusCode::CANCELLED);
  b->ctx.TryCancel();
  EXPECT_EQ(b->Drain().error_code(), grpc::StatusCode::CANCELLED);
  a.reset();
  b.reset();
  // The server releases a cancelled stream when it sees the cancellation: poll until two
  // concurrent streams are admitted again.
  bool admitted_again = false;
  for (int attempt = 0; attempt < 200 && !admitted_again; ++attempt) {
    OpenStream c(*stub, kToken1, 4, 60s);
    OpenStream d(*stub, kToken1, 4, 60s);
    const grpc::Status sc = c.Drain(), sd = d.Drain();
    admitted_again = c.admitted && d.admitted && sc.ok() && sd.ok();
    if (!admitted_again) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(admitted_again);
  // Streams that end normally release at once: sequential streams never exceed the limit.
  for (int i = 0; i < 2 * kMaxStreams + 1; ++i) {
    EXPECT_TRUE(Generate(*stub, Request(2, 2), kToken1).status.ok()) << i;
  }
  EXPECT_NE(HttpGetMetrics(secure_->metrics_port)
                .find("cpserve_router_rejections_total{reason=\"client_stream_limit\"}"),
            std::string::npos);
}

TEST_F(SecurityTest, StreamLimitSlotIsReleasedAfterTheDefaultDeadline) {
  auto stub = SecureStub();
  // No client deadline: the router's default (300 ms) ends the long streams.
  for (int round = 0; round < 2; ++round) {
    OpenStream a(*stub, kToken2, 4000, std::nullopt);
    OpenStream b(*stub, kToken2, 4000, std::nullopt);
    ASSERT_TRUE(a.admitted && b.admitted) << round;
    for (OpenStream* s : {&a, &b}) {
      const grpc::Status st = s->Drain();
      EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << st.error_message();
      EXPECT_NE(st.error_message().find("default_deadline_ms"), std::string::npos)
          << st.error_message();
    }
  }
  // A client deadline longer than the default one wins.
  OpenStream c(*stub, kToken2, 1000, 60s);
  ASSERT_TRUE(c.admitted);
  EXPECT_TRUE(c.Drain().ok());
  EXPECT_NE(HttpGetMetrics(secure_->metrics_port)
                .find("cpserve_router_rejections_total{reason=\"default_deadline\"}"),
            std::string::npos);
}

TEST_F(SecurityTest, PromptTokenLimit) {
  auto stub = SecureStub();
  EXPECT_TRUE(Generate(*stub, Request(kMaxPromptTokens, 2), kToken1).status.ok());
  const Result r = Generate(*stub, Request(kMaxPromptTokens + 1, 2), kToken1);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(r.status.error_message(),
            absl::StrCat("prompt: ", kMaxPromptTokens + 1, " tokens exceed the limit of ",
                         kMaxPromptTokens, " (max_prompt_tokens)"));
  // Text prompts are counted after tokenization.
  v1::GenerateRequest text;
  text.mutable_prompt()->set_text(std::string(500, 'a'));
  text.mutable_sampling()->set_max_tokens(2);
  const Result t = Generate(*stub, text, kToken1);
  EXPECT_EQ(t.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(t.status.error_message().find("(max_prompt_tokens)"), std::string::npos);
  EXPECT_NE(HttpGetMetrics(secure_->metrics_port)
                .find("cpserve_router_rejections_total{reason=\"prompt_too_long\"} 2"),
            std::string::npos);
}

TEST_F(SecurityTest, InsecureModeSaysSoLoudly) {
  const std::string plain = insecure_->router.Output();
  EXPECT_NE(plain.find("INSECURE MODE"), std::string::npos);
  EXPECT_NE(plain.find("public API (cpserve.v1.Generation): plaintext"), std::string::npos);
  EXPECT_NE(plain.find("no client authentication"), std::string::npos);
  EXPECT_NE(insecure_->pool.Output().find("INSECURE MODE"), std::string::npos);
  EXPECT_EQ(secure_->router.Output().find("INSECURE MODE"), std::string::npos);
  EXPECT_EQ(secure_->pool.Output().find("INSECURE MODE"), std::string::npos);
}

// The `cpserve generate` binary: --tls_ca and --token (or $CPSERVE_TOKEN).
TEST_F(SecurityTest, GenerateCommandWithTlsAndToken) {
  auto run = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = {
        BinaryPath("cpserve"), "generate", "--address=" + secure_->address,
        "--max_tokens=5",      "--json",   "--timeout_ms=60000"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back("hello there");
    return testing::RunCommand(argv, 60s);
  };
  const testing::RunResult ok =
      run({"--tls_ca=" + Cert("ca.pem"), std::string("--token=") + kToken1});
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("FINISH_REASON_LENGTH"), std::string::npos) << ok.output;
  const testing::RunResult no_token = run({"--tls_ca=" + Cert("ca.pem")});
  EXPECT_EQ(no_token.exit_code, 1);
  EXPECT_NE(no_token.output.find("UNAUTHENTICATED"), std::string::npos) << no_token.output;
  const testing::RunResult wrong_ca =
      run({"--tls_ca=" + Cert("other-ca.pem"), std::string("--token=") + kToken1});
  EXPECT_EQ(wrong_ca.exit_code, 1);
  EXPECT_NE(wrong_ca.output.find("UNAVAILABLE"), std::string::npos) << wrong_ca.output;
  const testing::RunResult missing = run({"--tls_ca=/nonexistent/ca.pem"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.output.find("--tls_ca: cannot open '/nonexistent/ca.pem'"), std::string::npos)
      << missing.output;
}

// --tls_client_ca: the public API also requires a client certificate.
TEST_F(SecurityTest, RouterRequiringClientCertificates) {
  Subprocess router;
  ASSERT_TRUE(
      router.Start({BinaryPath("cpserve"), "router", "--port=0", "--tls_cert=" + Cert("server.pem"),
                    "--tls_key=" + Cert("server.key"), "--tls_client_ca=" + Cert("ca.pem")}));
  const std::string address = WaitForLine(router, "listening on (\\S+)");
  ASSERT_FALSE(address.empty()) << router.Output();
  auto info = [&](std::shared_ptr<grpc::ChannelCredentials> creds) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 20s);
    v1::ModelInfo resp;
    return v1::Generation::NewStub(grpc::CreateChannel(address, creds))
        ->GetModelInfo(&ctx, {}, &resp)
        .error_code();
  };
  EXPECT_EQ(info(Tls("ca.pem", "client.pem", "client.key")), grpc::StatusCode::OK);
  EXPECT_EQ(info(Tls("ca.pem")), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(info(Tls("ca.pem", "other-server.pem", "other-server.key")),
            grpc::StatusCode::UNAVAILABLE);
  // `cpserve generate` presents --tls_cert/--tls_key: the handshake passes and the call
  // reaches the router (which has no pool).
  const testing::RunResult r =
      testing::RunCommand({BinaryPath("cpserve"), "generate", "--address=" + address,
                           "--tls_ca=" + Cert("ca.pem"), "--tls_cert=" + Cert("client.pem"),
                           "--tls_key=" + Cert("client.key"), "--timeout_ms=20000", "hi"},
                          60s);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("no live decode pool"), std::string::npos) << r.output;
  Stop(router);
}

TEST_F(SecurityTest, MessageSizeLimit) {
  auto stub = SecureStub();
  v1::GenerateRequest big;
  big.mutable_prompt()->set_text(std::string(kMaxMessageBytes + 1000, 'a'));
  big.mutable_sampling()->set_max_tokens(2);
  const Result r = Generate(*stub, big, kToken1);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << r.status.error_message();
  // Just below the limit passes the transport (and is then too long a prompt).
  big.mutable_prompt()->set_text(std::string(kMaxMessageBytes - 1000, 'a'));
  EXPECT_EQ(Generate(*stub, big, kToken1).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace cpserve
