#include "router/auth_tokens.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace cpserve::router {

absl::StatusOr<std::vector<AuthToken>> ParseTokenFile(absl::string_view text) {
  std::vector<AuthToken> tokens;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    for (char c : line) {
      if (c <= ' ' || c > '~') {
        return absl::InvalidArgumentError(
            absl::StrCat("token file line ", line_no,
                         ": a token must be printable ASCII without spaces (one token per line)"));
      }
    }
    for (const AuthToken& t : tokens) {
      if (t.secret == line) {
        return absl::InvalidArgumentError(
            absl::StrCat("token file line ", line_no, ": the same token as line ", t.line));
      }
    }
    tokens.push_back({std::string(line), line_no});
  }
  if (tokens.empty()) {
    return absl::InvalidArgumentError(
        "token file holds no token (one per line; '#' starts a comment line)");
  }
  return tokens;
}

absl::StatusOr<std::vector<AuthToken>> LoadTokenFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string what =
        absl::StrCat("--auth_token_file: cannot open '", path, "': ", strerror(err));
    if (err == ENOENT || err == ENOTDIR) return absl::NotFoundError(what);
    if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(what);
    return absl::UnavailableError(what);
  }
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) != 0) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      close(fd);
      return absl::UnavailableError(
          absl::StrCat("--auth_token_file: cannot read '", path, "': ", strerror(err)));
    }
    text.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  absl::StatusOr<std::vector<AuthToken>> tokens = ParseTokenFile(text);
  if (!tokens.ok()) {
    return absl::Status(tokens.status().code(), absl::StrCat("--auth_token_file '", path,
                                                             "': ", tokens.status().message()));
  }
  return tokens;
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  // Walks the longer length; the loop's work depends on the lengths only.
  const size_t n = std::max(a.size(), b.size());
  volatile unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff = diff | static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

absl::StatusOr<std::string> TokenAuthenticator::Authenticate(
    const absl::string_view* authorization) const {
  if (authorization == nullptr) {
    return absl::UnauthenticatedError(
        "missing credentials: this router requires 'authorization: Bearer <token>' metadata");
  }
  absl::string_view value = absl::StripAsciiWhitespace(*authorization);
  constexpr absl::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size() || !absl::StartsWithIgnoreCase(value, kScheme)) {
    return absl::UnauthenticatedError(
        "malformed authorization metadata: expected 'Bearer <token>'");
  }
  value.remove_prefix(kScheme.size());
  value = absl::StripLeadingAsciiWhitespace(value);
  int matched = 0;
  for (const AuthToken& t : tokens_) {
    if (ConstantTimeEquals(t.secret, value)) matched = t.line;  // no early exit
  }
  if (matched == 0) return absl::UnauthenticatedError("invalid bearer token");
  return absl::StrCat("token-", matched);
}

}  // namespace cpserve::router
