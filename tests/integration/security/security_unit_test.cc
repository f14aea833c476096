// Pure parts of the public API's security: the token file parser, the constant-time
// compare (exhaustively against ==), bearer-token authentication, per-client stream
// counting (randomized against a reference map), peer addresses, the prompt-token limit
// and the TLS credential errors.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <random>

#include "router/auth_tokens.h"
#include "router/client_stream_limiter.h"
#include "router/request_validation.h"
#include "services/common/tls.h"

namespace cpserve {
namespace {

using router::AuthToken;
using router::ClientStreamLimiter;
using router::ConstantTimeEquals;
using router::ParseTokenFile;
using router::TokenAuthenticator;

TEST(TokenFileTest, ParsesTokensSkippingCommentsAndBlanks) {
  absl::StatusOr<std::vector<AuthToken>> t =
      ParseTokenFile("# header\n\nalpha\n  beta-2  \n\t#indented comment\r\ngamma_3\r\n");
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->size(), 3u);
  EXPECT_EQ((*t)[0].secret, "alpha");
  EXPECT_EQ((*t)[0].line, 3);
  EXPECT_EQ((*t)[1].secret, "beta-2");
  EXPECT_EQ((*t)[1].line, 4);
  EXPECT_EQ((*t)[2].secret, "gamma_3");
  EXPECT_EQ((*t)[2].line, 6);
  // No trailing newline.
  t = ParseTokenFile("only");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)[0].secret, "only");
}

TEST(TokenFileTest, Errors) {
  for (const char* text : {"", "\n\n", "# only a comment\n", "   \n#x\n"}) {
    absl::StatusOr<std::vector<AuthToken>> t = ParseTokenFile(text);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(t.status().message().find("no token"), absl::string_view::npos);
  }
  absl::StatusOr<std::vector<AuthToken>> t = ParseTokenFile("ok\ntwo words\n");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("line 2"), absl::string_view::npos) << t.status();
  t = ParseTokenFile("a\nb\na\n");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("line 3: the same token as line 1"), absl::string_view::npos)
      << t.status();
  t = ParseTokenFile(std::string("ab\x01z\n"));
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(router::LoadTokenFile("/nonexistent/tokens").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(TokenFileTest, LoadsAFile) {
  char path[] = "/tmp/cpserve-tokens-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << "# t\nsecret-1\n";
  absl::StatusOr<std::vector<AuthToken>> t = router::LoadTokenFile(path);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)[0].secret, "secret-1");
  std::ofstream(path) << "# nothing\n";
  t = router::LoadTokenFile(path);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find(path), absl::string_view::npos);
  unlink(path);
}

// Every pair of strings over {a, b, \0, \xff} of length <= 4 against ==.
TEST(ConstantTimeEqualsTest, ExhaustiveSmallAgainstEquality) {
  const char alphabet[] = {'a', 'b', '\0', '\xff'};
  std::vector<std::string> all = {""};
  for (size_t begin = 0, len = 1; len <= 4; ++len) {
    const size_t end = all.size();
    for (size_t i = begin; i < end; ++i) {
      for (char c : alphabet) all.push_back(all[i] + c);
    }
    begin = end;
  }
  ASSERT_EQ(all.size(), 1u + 4 + 16 + 64 + 256);
  for (const std::string& a : all) {
    for (const std::string& b : all) ASSERT_EQ(ConstantTimeEquals(a, b), a == b);
  }
}

TEST(ConstantTimeEqualsTest, RandomizedAgainstEquality) {
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    std::string a(rng() % 40, 'x');
    for (char& c : a) c = static_cast<char>('a' + rng() % 3);
    std::string b = a;
    switch (rng() % 4) {
      case 0:
        break;  // equal
      case 1:
        if (!b.empty()) b[rng() % b.size()] ^= static_cast<char>(1 + rng() % 255);
        break;
      case 2:
        b.push_back('a');
        break;
      default:
        b = b.substr(0, b.empty() ? 0 : rng() % b.size());
    }
    ASSERT_EQ(ConstantTimeEquals(a, b), a == b) << a << " / " << b;
  }
}

TEST(TokenAuthenticatorTest, IdentitiesAndErrors) {
  TokenAuthenticator auth(*ParseTokenFile("# x\none\ntwo\n"));
  auto check = [&](const char* header) {
    if (header == nullptr) return auth.Authenticate(nullptr);
    const absl::string_view v(header);
    return auth.Authenticate(&v);
  };
  EXPECT_EQ(*check("Bearer one"), "token-2");
  EXPECT_EQ(*check("Bearer two"), "token-3");
  EXPECT_EQ(*check("bearer two"), "token-3");  // the scheme is case-insensitive
  EXPECT_EQ(*check("  Bearer   one "), "token-2");
  for (const char* bad : {"Bearer on", "Bearer one1", "Bearer One", "Bearer # x"}) {
    EXPECT_EQ(check(bad).status().code(), absl::StatusCode::kUnauthenticated) << bad;
    EXPECT_EQ(check(bad).status().message(), "invalid bearer token") << bad;
  }
  for (const char* bad : {"one", "Bearer", "Bearer ", "Basic one", ""}) {
    EXPECT_EQ(check(bad).status().code(), absl::StatusCode::kUnauthenticated) << bad;
    EXPECT_NE(check(bad).status().message().find("expected 'Bearer <token>'"),
              absl::string_view::npos)
        << bad;
  }
  EXPECT_EQ(check(nullptr).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(check(nullptr).status().message().find("missing"), absl::string_view::npos);
}

TEST(ClientStreamLimiterTest, RandomizedAgainstReferenceCounts) {
  for (int max : {1, 2, 3}) {
    ClientStreamLimiter lim(max);
    std::map<std::string, int> ref;
    std::mt19937 rng(max);
    for (int i = 0; i < 5000; ++i) {
      const std::string client = "c" + std::to_string(rng() % 4);
      if (rng() % 2 == 0) {
        const absl::Status s = lim.TryAcquire(client);
        if (ref[client] < max) {
          ASSERT_TRUE(s.ok());
          ++ref[client];
        } else {
          ASSERT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
          ASSERT_NE(s.message().find("max_streams_per_client=" + std::to_string(max)),
                    absl::string_view::npos);
        }
      } else if (ref[client] > 0) {
        lim.Release(client);
        --ref[client];
      }
      size_t open_clients = 0;
      for (const auto& [c, n] : ref) {
        ASSERT_EQ(lim.open_streams(c), n);
        open_clients += n > 0;
      }
      ASSERT_EQ(lim.num_clients(), open_clients);  // idle clients are forgotten
    }
  }
  ClientStreamLimiter unlimited(0);
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(unlimited.TryAcquire("x").ok());
}

TEST(PeerHostTest, StripsThePort) {
  EXPECT_EQ(router::PeerHost("ipv4:127.0.0.1:54321"), "127.0.0.1");
  EXPECT_EQ(router::PeerHost("ipv6:[::1]:443"), "::1");
  EXPECT_EQ(router::PeerHost("ipv6:%5B::1%5D:443"), "%5B::1%5D:443");
  EXPECT_EQ(router::PeerHost("unix:/tmp/s"), "unix:/tmp/s");
}

TEST(PromptLimitTest, ExactBoundary) {
  router::ValidationLimits limits;
  limits.vocab_size = 10;
  limits.max_context_tokens = 100;
  for (int64_t max : {0, 1, 5}) {
    limits.max_prompt_tokens = max;
    for (int64_t n = 1; n <= 8; ++n) {
      const absl::Status s = router::CheckPromptTokens(n, limits);
      const std::vector<int32_t> prompt(static_cast<size_t>(n), 1);
      const absl::StatusOr<int32_t> v = router::ValidateRequest(prompt, {}, limits);
      if (max == 0 || n <= max) {
        EXPECT_TRUE(s.ok());
        EXPECT_TRUE(v.ok());
      } else {
        EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
        EXPECT_EQ(s.message(), "prompt: " + std::to_string(n) + " tokens exceed the limit of " +
                                   std::to_string(max) + " (max_prompt_tokens)");
        EXPECT_EQ(v.status(), s);
      }
    }
  }
}

TEST(TlsFilesTest, ClearErrorsForMissingAndBadFiles) {
  using service::ClientCertPolicy;
  using service::TlsFiles;
  TlsFiles f;
  f.cert_flag = "tls_cert";
  f.key_flag = "tls_key";
  f.ca_flag = "tls_ca";
  // Missing flags.
  auto s = service::MakeServerCredentials(f, ClientCertPolicy::kNone).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--tls_cert is required"), absl::string_view::npos) << s;
  s = service::MakeChannelCredentials(f).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--tls_ca is required"), absl::string_view::npos) << s;
  // Missing file.
  f.cert = "/nonexistent/cert.pem";
  f.key = "/nonexistent/key.pem";
  s = service::MakeServerCredentials(f, ClientCertPolicy::kNone).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("--tls_cert: cannot open '/nonexistent/cert.pem'"),
            absl::string_view::npos)
      << s;
  // mTLS needs the CA.
  s = service::MakeServerCredentials(f, ClientCertPolicy::kRequire).status();
  EXPECT_NE(s.message().find("--tls_ca is required"), absl::string_view::npos) << s;
  // Not PEM.
  char path[] = "/tmp/cpserve-notpem-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << "hello\n";
  s = service::ReadPemFile(path, "tls_ca").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("not a PEM file"), absl::string_view::npos) << s;
  // Unreadable (root reads everything: only checked for other users).
  if (geteuid() != 0) {
    std::ofstream(path) << "-----BEGIN CERTIFICATE-----\n";
    chmod(path, 0);
    EXPECT_EQ(service::ReadPemFile(path, "tls_ca").status().code(),
              absl::StatusCode::kPermissionDenied);
  }
  unlink(path);
  // Client cert without key.
  TlsFiles c;
  c.ca = "/nonexistent/ca.pem";
  c.cert = "/nonexistent/c.pem";
  EXPECT_EQ(service::MakeChannelCredentials(c).status().code(), absl::StatusCode::kInvalidArgument);
  // Empty files: plaintext (null server credentials, insecure channel ones), no error.
  auto plain = service::ServerCredentialsOrInsecure({}, ClientCertPolicy::kRequire);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(*plain, nullptr);
  EXPECT_TRUE(service::ChannelCredentialsOrInsecure({}).ok());
}

}  // namespace
}  // namespace cpserve
