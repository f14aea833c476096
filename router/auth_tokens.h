// Bearer-token authentication of the public API (pure logic; the router reads the
// `authorization` metadata and the token file).
//
// Token file: one token per line; blank lines and lines starting with '#' are ignored;
// surrounding whitespace is trimmed; a token is printable ASCII without spaces.
// A client is known by "token-<line>" (the line of its token), never by the secret.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cpserve::router {

struct AuthToken {
  std::string secret;
  int line = 0;  // 1-based line in the file
};

// Parses the text of a token file; INVALID_ARGUMENT naming the line for a malformed
// token or a duplicate, and when the file holds no token at all.
absl::StatusOr<std::vector<AuthToken>> ParseTokenFile(absl::string_view text);
// Reads and parses `path` (NOT_FOUND / PERMISSION_DENIED when it cannot be opened).
absl::StatusOr<std::vector<AuthToken>> LoadTokenFile(const std::string& path);

// Equality whose running time depends only on the lengths of a and b, never on where
// they differ.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

class TokenAuthenticator {
 public:
  explicit TokenAuthenticator(std::vector<AuthToken> tokens) : tokens_(std::move(tokens)) {}

  // `authorization` is the metadata value, or nullptr when the call carried none.
  // Returns the client's identity ("token-<line>") or UNAUTHENTICATED saying what is
  // wrong. Every known token is compared (no early exit) so that the time taken does
  // not tell which token matched.
  absl::StatusOr<std::string> Authenticate(const absl::string_view* authorization) const;

  size_t size() const { return tokens_.size(); }

 private:
  std::vector<AuthToken> tokens_;
};

}  // namespace cpserve::router
